// SPDX-License-Identifier: MIT
// tether/detail/executor/timer_heap.hpp - the owner's min-heap of delayed tasks.
//
// post_at() from any thread allocates a timer_state (shared with the caller's handle) and
// pushes one internal task through the executor's queue; that task, run by the owner,
// inserts the state here. So the heap is owner-only (no lock), a delayed post costs one
// queue push, and the owner parks until the earliest deadline (no polling tick).
//
// Cancellation is lazy: cancel() flips the state to cancelled, and the owner throws the entry
// away (destroying its callable on the owner thread) when its deadline comes up.
//
// Who may call what: timer_heap - the owner thread only. timer_state::phase - any thread
// (try_cancel), the owner (try_start / finish / drop).
//
// Memory ordering: phase transitions are compare-exchanges from `pending`; exactly one of
// cancel (any thread) and start / drop (owner) wins. They publish no data (the callable is
// owner-only), so acq_rel is only for readers of status() that then look at their own state.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "../platform/futex.hpp"
#include "task.hpp"

namespace tether::detail {

enum class timer_phase : std::uint8_t { pending, running, ran, cancelled, stopped };

struct timer_state {
  timer_state(steady_time at, task f) : when(at), fn(std::move(f)) {}

  bool try_transition(timer_phase to) noexcept {
    timer_phase expected = timer_phase::pending;
    return phase.compare_exchange_strong(expected, to, std::memory_order_acq_rel);  // acq_rel: pairs with status()'s acquire
  }

  // Written by cancel() (any thread) and by the owner; read by any thread.
  std::atomic<timer_phase> phase{timer_phase::pending};
  const steady_time when;
  std::uint64_t seq = 0;  // owner only: FIFO among equal deadlines
  task fn;                // owner only once queued
};

class timer_heap {
 public:
  void push(std::shared_ptr<timer_state> t) {
    t->seq = next_seq_++;
    heap_.push_back(std::move(t));
    std::push_heap(heap_.begin(), heap_.end(), later);
  }

  bool empty() const noexcept { return heap_.empty(); }
  std::size_t size() const noexcept { return heap_.size(); }

  steady_time next_deadline() const noexcept { return heap_.empty() ? no_deadline : heap_.front()->when; }

  // Removes and returns the earliest entry if it is due at `now`; else nullptr.
  std::shared_ptr<timer_state> pop_due(steady_time now) {
    if (heap_.empty() || heap_.front()->when > now) return nullptr;
    std::pop_heap(heap_.begin(), heap_.end(), later);
    std::shared_ptr<timer_state> t = std::move(heap_.back());
    heap_.pop_back();
    return t;
  }

  // Removes and returns every entry, earliest first.
  std::vector<std::shared_ptr<timer_state>> take_all() {
    std::sort_heap(heap_.begin(), heap_.end(), later);  // ascending by `later`: latest first
    std::reverse(heap_.begin(), heap_.end());
    return std::exchange(heap_, {});
  }

 private:
  static bool later(const std::shared_ptr<timer_state>& a, const std::shared_ptr<timer_state>& b) noexcept {
    return a->when != b->when ? a->when > b->when : a->seq > b->seq;
  }

  std::vector<std::shared_ptr<timer_state>> heap_;
  std::uint64_t next_seq_ = 0;
};

}  // namespace tether::detail
