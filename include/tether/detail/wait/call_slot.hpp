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
// completer's last touch of the slot (counted_ included) before the caller's acquire load,
// after which the caller may destroy it.
//
// Woken callers: a slot given a counter (count_wakes_in) adds one to it when its completion
// had to wake a sleeping caller, and that caller takes it off once it runs again. The owner
// reads the count as the number of callers it answered that still wait for a core (see
// executor_core::pace_callers).
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

// The value or exception a call produced, kept until its caller takes it: call_slot,
// abandonable_call and the coroutines' call_state all store their outcome here. A reference
// result is kept as a pointer. One writer, then one reader, ordered by whoever holds it.
template <class R>
class call_outcome {
 public:
  // Runs f; stores its result, or the exception it threw.
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
  }
  void fail(std::exception_ptr e) noexcept { error_ = std::move(e); }
  bool failed() const noexcept { return static_cast<bool>(error_); }

  // The result, or rethrows the exception.
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
  using storage = std::conditional_t<std::is_void_v<R>, char,
                                     std::conditional_t<std::is_reference_v<R>,
                                                        std::remove_reference_t<R>*,
                                                        std::optional<R>>>;
  storage value_{};
  std::exception_ptr error_;
};

template <class R>
class call_slot {
 public:
  call_slot() = default;
  call_slot(const call_slot&) = delete;
  call_slot& operator=(const call_slot&) = delete;

  // Completer: runs f and stores its result or exception, then completes.
  template <class F>
  void run(F&& f) noexcept {
    out_.run(std::forward<F>(f));
    complete();
  }

  // Completer: completes with an exception instead of running.
  void fail(std::exception_ptr e) noexcept {
    out_.fail(std::move(e));
    complete();
  }

  // Caller, before the call is queued: count a wake-up of this caller in `woken`.
  void count_wakes_in(std::atomic<std::uint32_t>& woken) noexcept { woken_ = &woken; }

  // Caller: blocks until completed. spin: spin briefly before parking (the answer is
  // expected soon); else park at once (parker.hpp).
  void wait(bool spin) noexcept {
    park(parker_, [this] { return state_.load(std::memory_order_seq_cst) != pending; }, no_deadline, spin);
    backoff b;
    // After `released`, nothing else touches the slot.
    while (state_.load(std::memory_order_acquire) != released) b.snooze();  // acquire: pairs with [CS2]
    if (counted_) woken_->fetch_sub(1, std::memory_order_relaxed);  // relaxed: a count for a hint, publishes nothing
  }

  // Caller, after wait(): the result, or rethrows the exception.
  R take() { return out_.take(); }

 private:
  static constexpr std::uint32_t pending = 0;
  static constexpr std::uint32_t done = 1;
  static constexpr std::uint32_t released = 2;

  void complete() noexcept {
    state_.store(done, std::memory_order_release);  // [CS1] release: publishes out_
    if (parker_.notify_one() && woken_ != nullptr) {
      woken_->fetch_add(1, std::memory_order_relaxed);  // relaxed: as in wait(); before [CS2], so never below 0
      counted_ = true;
    }
    state_.store(released, std::memory_order_release);  // [CS2] release: the completer's last touch
  }

  call_outcome<R> out_;
  std::atomic<std::uint32_t>* woken_ = nullptr;  // set by the caller before queueing
  bool counted_ = false;                          // written by the completer before [CS2]
  // Written by the completer (pending -> done -> released); read by the caller.
  std::atomic<std::uint32_t> state_{pending};
  // One wait per call, one notify per call: full fences on both sides beat a membarrier.
  parker parker_{fences::symmetric};
};

// A call() that a stop token may abandon: the caller may return before the owner reaches the
// job, so the outcome lives on the heap, shared by the caller and the job (two references).
// One compare-and-swap out of `pending` decides: the owner claims it (running, then done, with
// the value or exception - executor_stopped when the job is destroyed unrun), or the stop
// callback abandons it (cancelled: the job, when reached, runs nothing). A claimed call is
// waited for: its callable is the caller's, used in place.
//
// Memory ordering: [AC1] the acq_rel CAS picks one outcome; [AC2] the release store of done
// publishes the result to the caller's acquire load [AC3]; [AC4] acq_rel on the count orders
// each side's last touch before the delete.
template <class R>
class abandonable_call {
 public:
  enum class phase : std::uint8_t { pending, running, done, cancelled };

  bool claim() noexcept { return decide(phase::running); }
  // Stop callback: abandons the call if the owner has not claimed it, and wakes the caller.
  void cancel() noexcept {
    if (decide(phase::cancelled)) parker_.notify_one();
  }

  // Owner, after claim(): runs f into the state and completes.
  template <class F>
  void run(F&& f) noexcept {
    out_.run(std::forward<F>(f));
    complete();
  }
  // Whoever destroys the unrun job, after claim(): completes with executor_stopped (e).
  void fail_refused(std::exception_ptr e) noexcept {
    refused_ = true;
    out_.fail(std::move(e));
    complete();
  }

  // Caller: blocks until done or cancelled, or the deadline; then the phase (pending or
  // running only at the deadline).
  phase wait_until(steady_time deadline) noexcept {
    park(parker_, [this] {
      const phase p = state_.load(std::memory_order_acquire);  // [AC3] acquire: pairs with [AC2]
      return p == phase::done || p == phase::cancelled;
    }, deadline, false);
    return state_.load(std::memory_order_acquire);  // [AC3]
  }
  // Caller, at its deadline: abandons the call if the owner has not claimed it.
  bool abandon() noexcept { return decide(phase::cancelled); }

  // After done: the job was destroyed unrun (the executor stopped with cancel).
  bool refused() const noexcept { return refused_; }

  // Caller, after wait() returned false: the result, or rethrows the exception.
  R take() { return out_.take(); }

  void unref() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;  // [AC4]
  }

 private:
  bool decide(phase to) noexcept {
    phase from = phase::pending;
    return state_.compare_exchange_strong(from, to, std::memory_order_acq_rel);  // [AC1]
  }
  void complete() noexcept {
    state_.store(phase::done, std::memory_order_release);  // [AC2]
    parker_.notify_one();
  }

  call_outcome<R> out_;
  bool refused_ = false;  // written before [AC2]
  std::atomic<phase> state_{phase::pending};
  std::atomic<std::uint8_t> refs_{2};  // the caller and the job
  parker parker_{fences::symmetric};
};

// The stop callback of an abandonable call.
template <class R>
struct abandon_on_stop {
  abandonable_call<R>* state;
  void operator()() const noexcept { state->cancel(); }
};

}  // namespace tether::detail
