// SPDX-License-Identifier: MIT
// tether/detail/select/source_access.hpp - a poller's view of the things it can watch.
//
// A poller (select.hpp) needs three things from a source that are no part of the source's
// public API: the parker its consumer sleeps on (to hang a listener there), the parker's
// condition (an item is ready, or closed and drained), and for channel endpoints the
// receiving direction and the shared state that keeps it alive. For an adopting executor it also
// needs the task queue (whose consumer is the owner), the earliest delayed-task deadline and
// a bounded try_run(). A coroutine that awaits room in a bounded queue (coroutine.hpp) needs
// the producers' parker, the list of suspended producers and their condition, and for channel
// endpoints the sending direction. The sources befriend this one struct instead of exposing
// those to every user.
//
// Who may call what: room_ready() - any producer; watched_ready() is a consumer-side call (the thread that receives from
// the source); executor_next_deadline() and executor_poll() - the executor's owner thread
// only (its timer heap is owner-only); the others only read members that never change after
// construction.
//
// Memory ordering: watched_ready() is the queue's own parker condition (seq_cst loads, the
// re-check half of the parker handshake); nothing else here touches shared state (the timer
// heap is owner-only, and executor_poll() is the executor's own try_run()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "../queue/consumer_ops.hpp"
#include "../platform/futex.hpp"
#include "../wait/parker.hpp"
#include "../wait/waiter_list.hpp"

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

  // ---- room in a bounded queue, for producers that await it (coroutine.hpp) ----
  // The parker producers wait on, the list of suspended ones hung on it, and their condition
  // (the tail slot is free, or closed: seq_cst loads, the re-check half of the handshake).
  template <class Queue>
  static parker& room_parker(Queue& q) noexcept {
    return q.space_wait_;
  }
  template <class Queue>
  static waiter_list& room_waiters(Queue& q) noexcept {
    return q.room_waiters_;
  }
  template <class Queue>
  static bool room_ready(const Queue& q) noexcept {
    return q.tail_ready();
  }

  // ---- channel endpoints (channel.hpp) ----
  template <class Endpoint>
  static auto& rx_direction(Endpoint& e) noexcept {
    return e.rx_direction();
  }
  template <class Endpoint>
  static auto& tx_direction(Endpoint& e) noexcept {
    return *e.tx_;
  }
  template <class Endpoint>
  static std::shared_ptr<void> shared_state(const Endpoint& e) noexcept {
    return e.state_;
  }

  // ---- adopting executors (executor.hpp; templates, so this header needs not include it) ----
  template <class Executor>
  static auto& executor_queue(Executor& ex) noexcept {
    return ex.queue_;  // an mpsc_queue<task>: producers are the posters, the consumer the owner
  }
  template <class Executor>
  static bool executor_runs_own_thread(const Executor& ex) noexcept {
    return ex.own_thread_;
  }
  // The earliest delayed-task deadline (no_deadline: none). Owner thread only.
  template <class Executor>
  static steady_time executor_next_deadline(const Executor& ex) noexcept {
    return ex.timers_.next_deadline();
  }
  // As ex.try_run(), running at most max tasks (due delayed tasks first, then ready ones); once
  // the queue is closed and drained, finishes the stop. Owner thread only (else wrong_thread).
  template <class Executor>
  static std::size_t executor_poll(Executor& ex, std::size_t max) {
    return ex.drive(max, no_deadline, false, nullptr);  // ex.try_run(), bounded
  }
  // Whether running it from the calling thread (its owner) would be refused: it runs its own
  // thread, or the caller is inside one of its tasks (a run is already going on).
  template <class Executor>
  static bool executor_in_run(const Executor& ex) noexcept {
    return ex.own_thread_ || ex.in_run_;
  }
  // Who owns it, for a poller's wrong_thread message (set once by the constructor).
  template <class Executor>
  static auto* executor_owner_record(const Executor& ex) noexcept {
    return ex.owner_record_;
  }
  template <class Executor>
  static std::uint64_t executor_owner_serial(const Executor& ex) noexcept {
    return ex.owner_serial_;
  }
};

}  // namespace tether::detail
