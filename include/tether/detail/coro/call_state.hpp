// SPDX-License-Identifier: MIT
// tether/detail/coro/call_state.hpp - an awaited call on another executor: co_call / co_with.
//
// The callable, its result and the outcome live in one heap block shared by the awaiting
// frame and the job queued on the target executor: a stop request may resume the frame while
// the job still waits in the queue, so the job must not point into the frame.
//
// One outcome per call, decided by one compare-and-swap out of `pending`:
//   running -> done   the owner ran f (a stop request is no longer seen: captures by
//                     reference stay valid because the frame waits for the result);
//   refused           the target refused the job or destroyed it unrun (executor_stopped);
//   cancelled         a stop request came first; the job, when the owner reaches it, skips f.
// The frame resumes when both the outcome is decided and await_suspend() has finished
// (`arrivals`): whichever comes second resumes it (await_suspend by not suspending at all).
//
// Who may call what: the job - the target's owner; cancel() - the stop callback, any thread;
// the awaiter - the awaiting frame.
// Memory ordering: [CA1] the acq_rel CAS out of pending picks one outcome; [CA2] the release
// store of done publishes the result to [CA3], the awaiter's acquire load; [CA4] acq_rel on
// arrivals orders the outcome before the resumption (and await_suspend's setup before it);
// [CA5] acq_rel on the reference count orders every use before the delete.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "../../errors.hpp"
#include "../wait/call_slot.hpp"
#include "chain.hpp"

namespace tether::detail {

enum class call_phase : std::uint8_t { pending, running, done, refused, cancelled };

template <class F, class R>
struct call_state {
  template <class G>
  explicit call_state(G&& g) : fn(std::forward<G>(g)) {}

  // The one outcome out of pending; false if another came first.
  bool decide(call_phase to) noexcept {
    call_phase from = call_phase::pending;
    return phase.compare_exchange_strong(from, to, std::memory_order_acq_rel);  // [CA1]
  }

  // Called once by the outcome and once by await_suspend; the second resumes the frame.
  // Returns true for the second.
  bool arrive() noexcept { return arrivals.fetch_add(1, std::memory_order_acq_rel) == 1; }  // [CA4]

  void finish() noexcept {
    if (arrive()) resume_on(*chain, frame, true, home);
  }

  void unref() noexcept {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;  // [CA5]
  }

  void run() noexcept {
    out.run(std::move(fn));
    phase.store(call_phase::done, std::memory_order_release);  // [CA2]
  }

  // The awaiter, after resuming: the value, or the exception.
  R take() {
    switch (phase.load(std::memory_order_acquire)) {  // [CA3]
      case call_phase::cancelled:
        throw operation_cancelled(std::string("tether: co_call() on executor '") + target_name +
                                  "' was cancelled by its stop token before it ran; it will not run");
      case call_phase::refused:
        if (out.failed()) return out.take();  // rethrows: out of memory before it was queued
        throw executor_stopped(std::string("tether: co_call() on executor '") + target_name +
                               "': the executor stopped before the call ran");
      default:
        return out.take();
    }
  }

  std::atomic<call_phase> phase{call_phase::pending};
  std::atomic<std::uint8_t> arrivals{0};
  std::atomic<std::uint8_t> refs{2};  // the awaiter and the job
  const char* target_name = "";       // the target's name, for messages (outlives the call)
  std::coroutine_handle<> frame;
  coro_chain* chain = nullptr;
  // The chain's home gate, copied here by the awaiter: the thread that decides the outcome
  // then reads nothing of the awaiting frame, whose lines its own thread keeps writing.
  coro_access::gate* home = nullptr;
  F fn;
  call_outcome<R> out;
};

// What the target executor queues. Destroyed unrun (refused post, stop(cancel)): the call
// reports executor_stopped.
template <class F, class R>
struct call_job {
  explicit call_job(call_state<F, R>* s) noexcept : state(s) {}
  call_job(call_job&& o) noexcept : state(std::exchange(o.state, nullptr)) {}
  call_job& operator=(call_job&&) = delete;
  void operator()() {
    call_state<F, R>* s = std::exchange(state, nullptr);
    if (s->decide(call_phase::running)) {
      s->run();
      s->finish();
    }
    s->unref();
  }
  ~call_job() {
    if (state == nullptr) return;
    if (state->decide(call_phase::refused)) state->finish();
    state->unref();
  }
  call_state<F, R>* state;
};

// The stop hook of an awaited call (stop_hook::fire): abandons it if it has not started.
template <class F, class R>
struct call_canceller {
  static void fire(stop_hook& h) noexcept {
    auto* state = static_cast<call_state<F, R>*>(h.target);
    if (state->decide(call_phase::cancelled)) state->finish();
  }
};

}  // namespace tether::detail
