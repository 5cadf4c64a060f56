// SPDX-License-Identifier: MIT
// tether/detail/executor/timer_heap.hpp - the owner's min-heap of delayed tasks.
//
// post_at() from any thread allocates a timer_state (shared with the caller's handle) and
// pushes one internal task, carrying the callable, through the executor's queue; that task,
// run by the owner, stores the callable in the state and inserts the state here. So the heap is owner-only (no lock), a delayed post costs one
// queue push, and the owner parks until the earliest deadline (no polling tick).
//
// Cancellation is lazy: timer_handle::cancel() flips the state to cancelled, and the owner
// throws the entry away (destroying its callable on the owner thread) when its deadline comes
// up, or earlier in a sweep: push() sweeps the cancelled entries out whenever the heap has
// doubled since its last sweep (or its low-water mark), so a stream of post_after + cancel
// keeps memory proportional to the live timers, at an amortized O(1) per push.
//
// Who may call what: timer_heap - the owner thread only. timer_state::try_transition - any
// thread (cancel) and the owner (start, stop, fail); timer_state::phase - read by any thread.
//
// Memory ordering: phase transitions are compare-exchanges from `pending`; exactly one of
// cancel (any thread) and start / stop / fail (owner) wins. They publish no data (the
// callable is owner-only), so acq_rel is only for readers of status() that then look at
// their own state.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "../platform/futex.hpp"
#include "task.hpp"

namespace tether::detail {

// Mirrors tether::timer_status (executor_options.hpp), value for value.
enum class timer_phase : std::uint8_t { pending, running, ran, cancelled, stopped, failed };

struct timer_state {
  explicit timer_state(steady_time at) noexcept : when(at) {}

  bool try_transition(timer_phase to) noexcept {
    timer_phase expected = timer_phase::pending;
    return phase.compare_exchange_strong(expected, to, std::memory_order_acq_rel);  // [ET1] acq_rel: pairs with [ET2] in timer_handle::status()
  }

  // Written by cancel() (any thread) and by the owner; read by any thread.
  std::atomic<timer_phase> phase{timer_phase::pending};
  const steady_time when;
  std::uint64_t seq = 0;  // owner only: FIFO among equal deadlines
  task fn;                // owner only: set when the owner registers the timer
};

class timer_heap {
 public:
  // Inserts t; may throw std::bad_alloc (the vector grows), leaving the heap unchanged.
  void push(std::shared_ptr<timer_state> t) {
    if (heap_.size() >= sweep_at_) sweep_cancelled();
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
    sweep_at_ = std::min(sweep_at_, std::max(min_sweep, 2 * heap_.size()));  // the low-water mark
    return t;
  }

  // Removes and returns every entry, earliest first.
  std::vector<std::shared_ptr<timer_state>> take_all() {
    std::sort_heap(heap_.begin(), heap_.end(), later);  // ascending by `later`: latest first
    std::reverse(heap_.begin(), heap_.end());
    sweep_at_ = min_sweep;
    return std::exchange(heap_, {});
  }

 private:
  static constexpr std::size_t min_sweep = 64;

  static bool later(const std::shared_ptr<timer_state>& a, const std::shared_ptr<timer_state>& b) noexcept {
    return a->when != b->when ? a->when > b->when : a->seq > b->seq;
  }

  // Drops the cancelled entries (their callables are destroyed here, on the owner) and
  // rebuilds the heap. Allocates nothing.
  void sweep_cancelled() noexcept {
    const auto dead = [](std::shared_ptr<timer_state>& t) {
      if (t->phase.load(std::memory_order_acquire) != timer_phase::cancelled) return false;  // [ET3] acquire: pairs with [ET1]
      t->fn.reset();
      return true;
    };
    heap_.erase(std::remove_if(heap_.begin(), heap_.end(), dead), heap_.end());
    std::make_heap(heap_.begin(), heap_.end(), later);
    sweep_at_ = std::max(min_sweep, 2 * heap_.size());
  }

  std::vector<std::shared_ptr<timer_state>> heap_;
  std::uint64_t next_seq_ = 0;
  std::size_t sweep_at_ = min_sweep;  // push() sweeps when the heap reaches this size
};

}  // namespace tether::detail
