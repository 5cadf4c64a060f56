// SPDX-License-Identifier: MIT
// tether/detail/select/sources.hpp - what a poller needs from each kind of source it watches.
//
// A poller (select.hpp) treats every source alike through four questions, answered here by
// overloads per kind: which object receives (rx_of), which address names it (identity_of:
// the same for an endpoint and whatever it is moved into, and for a receiver and the queue
// it views), what keeps it alive while watched (keep_alive_of: a channel pair's state), and
// the parker its consumer sleeps on with that parker's condition (rx_parker, rx_ready).
// Adopting executors add the earliest delayed-task deadline (rx_deadline), which only their
// owner may read. Nothing here is public API.
//
// Who may call what: rx_ready / rx_deadline - the thread that receives from the source (for
// an executor: its owner, else wrong_thread); the others only read what never changes after
// construction.
// Memory ordering: rx_ready is the queue's own parker condition (seq_cst loads); nothing
// else here touches shared state.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "../../bounded_mpsc_queue.hpp"
#include "../../channel.hpp"
#include "../../errors.hpp"
#include "../../executor.hpp"
#include "../../fd_source.hpp"
#include "../../mpsc_queue.hpp"
#include "../../receiver.hpp"
#include "../channel/direction.hpp"
#include "../platform/futex.hpp"
#include "../platform/thread_record.hpp"
#include "../queue/consumer_ops.hpp"
#include "../wait/parker.hpp"
#include "source_access.hpp"

namespace tether::detail {

// The receiving object: the queue itself (also for a receiver), or the endpoint's receiving
// direction.
template <class T>
mpsc_queue<T>& rx_of(mpsc_queue<T>& q) noexcept { return q; }
template <class T>
bounded_mpsc_queue<T>& rx_of(bounded_mpsc_queue<T>& q) noexcept { return q; }
template <class S, class R>
channel_direction<R>& rx_of(const endpoint<S, R>& e) noexcept { return source_access::rx_direction(e); }
template <class T>
mpsc_queue<T>& rx_of(const receiver<T>& r) noexcept { return receiver_queue(r); }

template <class T>
const void* identity_of(const mpsc_queue<T>& q) noexcept { return &q; }
template <class T>
const void* identity_of(const bounded_mpsc_queue<T>& q) noexcept { return &q; }
template <class S, class R>
const void* identity_of(const endpoint<S, R>& e) noexcept { return &source_access::rx_direction(e); }
template <class T>  // the queue it views: a receiver and its queue are one source
const void* identity_of(const receiver<T>& r) noexcept { return &receiver_queue(r); }

template <class Source>
std::shared_ptr<void> keep_alive_of(const Source&) noexcept { return nullptr; }
template <class S, class R>
std::shared_ptr<void> keep_alive_of(const endpoint<S, R>& e) noexcept { return source_access::shared_state(e); }

template <class Queue, class T>
parker& rx_parker(consumer_ops<Queue, T>& q) noexcept { return source_access::watched_parker(q); }
template <class T>
parker& rx_parker(channel_direction<T>& l) noexcept { return l.watched_parker(); }

template <class Queue, class T>
bool rx_ready(consumer_ops<Queue, T>& q) { return source_access::watched_ready(q); }
template <class T>
bool rx_ready(channel_direction<T>& l) { return l.watched_ready(); }

// An adopting executor: its task queue (a push notifies the queue's consumer parker, a close
// too) and its delayed tasks (no notify when one falls due: the waiter parks until the
// earliest, see poller_core::next_ready()). Its owner is the queue's consumer and the only
// thread that may read the timer heap, so only the owner may wait on a poller that watches it.
inline executor& rx_of(executor& ex) noexcept { return ex; }
inline const void* identity_of(const executor& ex) noexcept { return &ex; }
inline parker& rx_parker(executor& ex) noexcept {
  return source_access::watched_parker(source_access::executor_queue(ex));
}

[[noreturn]] inline void throw_wrong_waiter(const executor& ex) {
  const std::string name = ex.name().empty() ? "(unnamed)" : ex.name();
  throw wrong_thread(wrong_thread_message(
      "executor '" + name + "' (watched by a tether::poller)", source_access::executor_owner_record(ex),
      source_access::executor_owner_serial(ex),
      "a poller that watches an executor must be waited on (wait*, run_one*, select) by that executor's owner thread"));
}

// The earliest delayed-task deadline (no_deadline: none). Throws wrong_thread off the owner.
inline steady_time rx_deadline(executor& ex) {
  if (!ex.running_in_this_thread()) throw_wrong_waiter(ex);
  return source_access::executor_next_deadline(ex);
}

// A delayed task is due, a task is ready, or the queue is closed and drained. Owner only.
inline bool rx_ready(executor& ex) {
  const steady_time next = rx_deadline(ex);
  if (next != no_deadline && std::chrono::steady_clock::now() >= next) return true;
  return source_access::watched_ready(source_access::executor_queue(ex));
}

// How many tasks run_one*() runs per call on an executor registered with on(): a busy
// executor takes its turn like any other source, it does not starve them.
inline constexpr std::size_t executor_batch = 64;

}  // namespace tether::detail
