// SPDX-License-Identifier: MIT
// tether/detail/executor/owner_counter.hpp - counters that one thread writes and any reads.
//
// An executor's statistics and metrics are written only by its owner thread, so an update is
// a load and a store, never a read-modify-write (no locked instruction on the owner's path).
//
// Who may call what: owner_add / owner_raise - the one writer thread; plain loads - any thread.
// Memory ordering: relaxed everywhere - a statistic that publishes nothing; a reader sees some
// recent value of each counter, never a torn one.
#pragma once

#include <atomic>

namespace tether::detail {

// c += v. Writer thread only.
template <class T>
void owner_add(std::atomic<T>& c, T v) noexcept {
  c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);  // relaxed: single-writer statistic
}

// c = max(c, v); stores only when it grows (readers' lines stay clean). Writer thread only.
template <class T>
void owner_raise(std::atomic<T>& c, T v) noexcept {
  if (v > c.load(std::memory_order_relaxed)) c.store(v, std::memory_order_relaxed);  // relaxed: single-writer statistic
}

}  // namespace tether::detail
