// SPDX-License-Identifier: MIT
// tether/detail/coro/room.hpp - suspend a frame until a bounded queue has room for a push.
//
// Producers are many, so an awaiting producer cannot take the parker's one listener slot as
// an awaiting consumer does (readable.hpp): it links itself into the queue's waiter_list
// (detail/wait/waiter_list.hpp), which hangs on the producers' parker. The consumer's next
// wake of producers (it freed a batch of slots, or found the queue empty) or the close takes
// the whole list and resumes every frame on its home (resume_on); each tries its push again
// and waits again if another producer took the room first. A stop request unlinks the frame
// and resumes it.
//
// Exactly once: whoever unlinks the frame resumes it - a notifier, the stop callback, or the
// frame itself when its re-check after linking already finds room (then it does not suspend).
//
// Who may call what: the awaiter - the awaiting frame (any number of them on one queue);
// woken() - a notifier; the stop callback - whoever requests the stop.
// Memory ordering: the waiter_list's lock decides who unlinks (and so resumes) the frame; the
// resumption is an executor hand-over. The link and re-check are the parker handshake
// (heavy_fence() here, the notifier's fence in notify_*()).
#pragma once

#include <coroutine>
#include <optional>
#include <stdexcept>
#include <stop_token>

#include "../platform/fence.hpp"
#include "../select/source_access.hpp"
#include "../wait/waiter_list.hpp"
#include "chain.hpp"

namespace tether::detail {

template <class Queue>
class room_in : list_waiter {
 public:
  explicit room_in(Queue& q) noexcept : q_(q) { wake = &woken; }
  room_in(const room_in&) = delete;
  room_in& operator=(const room_in&) = delete;
  ~room_in() { let_go(); }

  bool await_ready() const noexcept { return false; }

  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    static_assert(is_chained<P>, "tether: co_await this inside a tether::task");
    chain_ = h.promise().chain;
    frame_ = h;
    waiting_ = true;
    waiter_list& list = source_access::room_waiters(q_);
    if (!list.add(source_access::room_parker(q_), *this)) {
      waiting_ = false;
      throw std::logic_error("tether: co_push / co_send: the queue's producer parker carries another listener");
    }
    heavy_fence();  // the waiter's half of the handshake: the re-check below sees any room we missed
    if (source_access::room_ready(q_)) return !list.remove(*this);  // not removed: a notifier resumes us
    // Called at once when stop is already requested: the resumption queues behind this task.
    if (chain_->token.stop_possible()) stop_.emplace(chain_->token, stop_fire{this});
    return true;
  }

  void await_resume() noexcept { let_go(); }

 private:
  struct stop_fire {
    room_in* self;
    void operator()() noexcept {
      if (source_access::room_waiters(self->q_).remove(*self)) resume_on(*self->chain_, self->frame_, false);
    }
  };

  // A notifier took us off the list: ours alone to resume. Not destroyed here when the home is
  // gone (resume_on, destroy_orphan): this runs inside the consumer's push or pop.
  static void woken(list_waiter& w) noexcept {
    auto& self = static_cast<room_in&>(w);
    resume_on(*self.chain_, self.frame_, false);
  }

  void let_go() noexcept {
    stop_.reset();  // waits out a stop callback running elsewhere
    // Resumed, so unlinked already; still linked only if the frame is destroyed while it waits.
    if (waiting_) {
      waiting_ = false;
      source_access::room_waiters(q_).remove(*this);
    }
  }

  Queue& q_;
  coro_chain* chain_ = nullptr;
  std::coroutine_handle<> frame_;
  bool waiting_ = false;  // between await_suspend and let_go: the frame's own
  std::optional<std::stop_callback<stop_fire>> stop_;
};

}  // namespace tether::detail
