// SPDX-License-Identifier: MIT
// tether/detail/wait/call_slot.hpp - where a blocking call() waits for its result, on its own stack.
//
// A std::promise / std::future round trip allocates a shared state and, when the waiter has
// gone to sleep, costs a futex wake-up. call() needs neither: the caller owns a call_slot on
// its stack, the owner thread writes the result (or exception) into it and completes it, and
// the caller waits with the one wait strategy (the parker: spin briefly when the answer is
// expected soon, then park).
//
// The slot lives on the caller's stack, so the caller must not return while the completer
// still touches it. Completion is two stores around the wake-up: `done` (the result is
// there; the caller may stop waiting) and, after notifying, `released` (the completer is
// finished with the slot). A caller that saw `done` backs off until `released`: a few
// instructions, or one futex wake system call if the caller had parked - the point where a
// preempted completer makes the caller wait.
//
// Who may call what: complete()/set_*() - the one completer (the owner thread, or whoever
// destroys the unrun task); wait()/take() - the caller that owns the slot.
//
// Memory ordering: [CS1] the release store of `done` publishes the result to the caller's
// acquire/seq_cst loads in wait(); [CS2] the release store of `released` orders the
// completer's last touch of the slot before the caller's acquire load, after which the
// caller may destroy it.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "../platform/futex.hpp"
#include "parker.hpp"

namespace tether::detail {

template <class R>
class call_slot {
 public:
  call_slot() = default;
  call_slot(const call_slot&) = delete;
  call_slot& operator=(const call_slot&) = delete;

  // Completer: runs f and stores its result or exception, then completes.
  template <class F>
  void run(F&& f) noexcept {
    try {
      if constexpr (std::is_void_v<R>) {
        std::invoke(std::forward<F>(f));
      } else if constexpr (std::is_reference_v<R>) {
        value_ = std::addressof(std::invoke(std::forward<F>(f)));
      } else {
        value_.emplace(std::invoke(std::forward<F>(f)));
      }
    } catch (...) {
      error_ = std::current_exception();
    }
    complete();
  }

  // Completer: completes with an exception instead of running.
  void fail(std::exception_ptr e) noexcept {
    error_ = std::move(e);
    complete();
  }

  // Caller: blocks until completed. spin: spin briefly before parking (the answer is
  // expected soon); else park at once (parker.hpp).
  void wait(bool spin) noexcept {
    park(parker_, [this] { return state_.load(std::memory_order_seq_cst) != pending; }, no_deadline, spin);
    backoff b;
    // After `released`, nothing else touches the slot.
    while (state_.load(std::memory_order_acquire) != released) b.snooze();  // acquire: pairs with [CS2]
  }

  // Caller, after wait(): the result, or rethrows the exception.
  R take() {
    if (error_) std::rethrow_exception(error_);
    if constexpr (std::is_void_v<R>) {
      return;
    } else if constexpr (std::is_reference_v<R>) {
      return static_cast<R>(*value_);
    } else {
      return std::move(*value_);
    }
  }

 private:
  static constexpr std::uint32_t pending = 0;
  static constexpr std::uint32_t done = 1;
  static constexpr std::uint32_t released = 2;

  void complete() noexcept {
    state_.store(done, std::memory_order_release);  // [CS1] release: publishes value_ / error_
    parker_.notify_one();
    state_.store(released, std::memory_order_release);  // [CS2] release: the completer's last touch
  }

  using storage = std::conditional_t<std::is_void_v<R>, char,
                                     std::conditional_t<std::is_reference_v<R>,
                                                        std::remove_reference_t<R>*,
                                                        std::optional<R>>>;
  storage value_{};
  std::exception_ptr error_;
  // Written by the completer (pending -> done -> released); read by the caller.
  std::atomic<std::uint32_t> state_{pending};
  // One wait per call, one notify per call: full fences on both sides beat a membarrier.
  parker parker_{fences::symmetric};
};

}  // namespace tether::detail
