// SPDX-License-Identifier: MIT
// tether/detail/platform/fence.hpp - the platform seam for asymmetric fences.
//
// The parker handshake (see parker.hpp) is Dekker's: the notifier stores its condition and
// then loads the waiter count; the waiter stores its announcement and then loads the
// condition. Both sides need a full fence between their store and their load. The
// notifier runs on every push, the waiter only when it is about to sleep, so tether moves
// the cost to the waiter: light_fence() is a compiler barrier, and heavy_fence() asks the
// kernel (Linux membarrier, private expedited) to run a full fence on every thread of the
// process. A pushing thread then pays no locked instruction for the handshake.
// Measured in bench/README.md: a seq_cst publish halved single-producer throughput.
//
// Where membarrier is missing or refused (other systems, old kernels, seccomp filters), both
// functions fall back to std::atomic_thread_fence(seq_cst), which is always correct.
//
// After folly's asymmetricLightBarrier / asymmetricHeavyBarrier.
#pragma once

#include <atomic>

#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace tether::detail {

enum fence_mode_value : int { fence_unknown = 0, fence_membarrier = 1, fence_full = 2 };

// Written once (unknown -> membarrier or full) by the first heavy_fence(); read by all.
inline std::atomic<int> fence_mode{fence_unknown};

inline void full_fence() noexcept {
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wtsan"
#endif
  std::atomic_thread_fence(std::memory_order_seq_cst);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}

inline int init_fence_mode() noexcept {
  int mode = fence_full;
#if defined(__linux__) && defined(SYS_membarrier)
  const long supported = ::syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  if (supported > 0 && (supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
      ::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
    mode = fence_membarrier;
#endif
  int expected = fence_unknown;
  // acq_rel: a thread that sees fence_membarrier also sees the registration done.
  if (!fence_mode.compare_exchange_strong(expected, mode, std::memory_order_acq_rel))
    mode = expected;
  return mode;
}

// The notifier's side: between publishing a condition and loading the waiter count.
// The first call in the process registers for membarrier (one system call or two): a
// process whose consumers never sleep would otherwise pay a full fence on every push.
inline void light_fence() noexcept {
  // relaxed: a stale "unknown" or "full" only makes us take the (always correct) full fence.
  int mode = fence_mode.load(std::memory_order_relaxed);
  if (mode == fence_unknown) [[unlikely]]
    mode = init_fence_mode();
  if (mode == fence_membarrier)
    std::atomic_signal_fence(std::memory_order_seq_cst);  // keep the compiler from reordering
  else
    full_fence();
}

// The waiter's side: between announcing itself and re-checking the condition.
inline void heavy_fence() noexcept {
  int mode = fence_mode.load(std::memory_order_acquire);  // acquire: pairs with init_fence_mode()
  if (mode == fence_unknown) mode = init_fence_mode();
#if defined(__linux__) && defined(SYS_membarrier)
  if (mode == fence_membarrier) {
    ::syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    return;
  }
#endif
  full_fence();
}

}  // namespace tether::detail
