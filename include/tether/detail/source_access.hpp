// tether/detail/source_access.hpp - a poller's view of the things it can watch.
//
// A poller (select.hpp) needs three things from a source that are no part of the source's
// public API: the parker its consumer sleeps on (to hang a listener there), the parker's
// condition (an item is ready, or closed and drained), and for channel endpoints the
// receiving lane and the shared state that keeps it alive. The sources befriend this one
// struct instead of exposing those to every user.
//
// Who may call what: watched_ready() is a consumer-side call (the thread that receives from
// the source); the others only read members that never change after construction.
//
// Memory ordering: watched_ready() is the queue's own parker condition (seq_cst loads, the
// re-check half of the parker handshake); nothing else here touches shared state.
#pragma once

#include <memory>

#include "consumer_ops.hpp"
#include "parker.hpp"

namespace tether::detail {

struct source_access {
  // ---- the single-consumer queues (their consumer half is consumer_ops) ----
  template <class Queue, class T>
  static parker& watched_parker(consumer_ops<Queue, T>& q) noexcept {
    return q.watched_parker();
  }
  template <class Queue, class T>
  static bool watched_ready(consumer_ops<Queue, T>& q) {
    return q.watched_ready();
  }

  // ---- channel endpoints (channel.hpp) ----
  template <class Endpoint>
  static auto& rx_lane(Endpoint& e) noexcept {
    return e.rx_lane();
  }
  template <class Endpoint>
  static std::shared_ptr<void> shared_state(const Endpoint& e) noexcept {
    return e.state_;
  }
};

}  // namespace tether::detail
