// SPDX-License-Identifier: MIT
// tether/detail/coro/readable.hpp - suspend a frame until a queue or channel has something to take.
//
// The queues' consumer parker can carry one listener (detail/wait/parker.hpp), which a poller
// uses to watch many sources from one thread; an awaiting frame uses the same hook. It hangs
// itself on the source's parker, re-checks (the parker handshake: heavy_fence() between the
// attach and the re-check, against the notifier's fence between its publish and the listener
// load), and suspends. The first notify after that - a push, or the close - resumes the frame
// on its home (resume_on); so does a stop request. The frame then detaches, which waits out
// a notifier still inside the listener, and takes what is there.
//
// One listener per parker: a source a poller watches, or that another frame awaits, cannot be
// awaited (std::logic_error) - a queue has one consumer anyway.
//
// Who may call what: the awaiter - the awaiting frame (the source's one consumer); fire() -
// any notifier, and the stop callback.
// Memory ordering: [RD1] the acq_rel exchange on `fired` lets exactly one of the notifiers
// and the stop callback resume the frame; the resumption is an executor hand-over.
#pragma once

#include <atomic>
#include <coroutine>
#include <optional>
#include <stdexcept>
#include <stop_token>

#include "../platform/fence.hpp"
#include "../select/poller_core.hpp"
#include "../select/sources.hpp"
#include "../wait/parker.hpp"
#include "chain.hpp"

namespace tether::detail {

// A poller's engine as an awaited source: its ready list's parker and condition.
inline parker& rx_parker(poller_core& c) noexcept { return c.ready_parker(); }
inline bool rx_ready(poller_core& c) noexcept { return c.has_ready(); }

template <class Rx>
class readable : parker_listener {
 public:
  explicit readable(Rx& rx) noexcept : rx_(rx) { on_notify = &notified; }
  readable(const readable&) = delete;
  readable& operator=(const readable&) = delete;
  ~readable() { let_go(); }

  bool await_ready() const noexcept { return false; }

  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    static_assert(is_chained<P>, "tether: co_await this inside a tether::task");
    chain_ = h.promise().chain;
    frame_ = h;
    if (!rx_parker(rx_).attach(*this))
      throw std::logic_error(
          "tether: co_pop / co_recv / co_wait on a source that is already watched (by a poller, or another "
          "awaiting frame; a poller watching descriptors keeps its own wake-up there); a source has one consumer");
    attached_ = true;
    heavy_fence();  // the waiter's half of the handshake: the re-check below sees any publish we missed
    if (rx_ready(rx_)) {
      fired_.store(true, std::memory_order_relaxed);  // relaxed: only this frame reads it from now on
      return false;
    }
    // Called at once when stop is already requested: the resumption queues behind this task.
    if (chain_->token.stop_possible()) stop_.emplace(chain_->token, stop_fire{this});
    return true;
  }

  void await_resume() noexcept { let_go(); }

 private:
  struct stop_fire {
    readable* self;
    void operator()() noexcept { self->fire(); }
  };

  static void notified(parker_listener& l) noexcept { static_cast<readable&>(l).fire(); }

  void fire() noexcept {
    // Not destroyed here when the home is gone: this may be a notifier inside our listener,
    // which the frame's destruction would wait for (resume_on, destroy_orphan).
    if (!fired_.exchange(true, std::memory_order_acq_rel)) resume_on(*chain_, frame_, false);  // [RD1]
  }

  void let_go() noexcept {
    stop_.reset();  // waits out a stop callback running elsewhere
    if (attached_) {
      attached_ = false;
      rx_parker(rx_).detach(*this);  // waits out a notifier inside the listener
    }
  }

  Rx& rx_;
  coro_chain* chain_ = nullptr;
  std::coroutine_handle<> frame_;
  std::atomic<bool> fired_{false};
  bool attached_ = false;
  std::optional<std::stop_callback<stop_fire>> stop_;
};

}  // namespace tether::detail
