// SPDX-License-Identifier: MIT
// tether/fd_source.hpp - a file descriptor as a poller source: wait on sockets, pipes and
// foreign event fds in the same place as on tether's queues, channels and executors.
//
//   tether::fd_source shell{zmq_fd_of(shell_socket)};        // readable interest
//   tether::poller p;
//   p.on(shell, [&](tether::fd_events) { drain(shell_socket); })
//    .on(router.replies(), [&](reply r) { send(shell_socket, r); });
//   while (running) p.run_one();                              // zero CPU while idle
//
// A poller that watches at least one fd_source waits in ppoll(2) instead of its futex: on the
// watched descriptors and on a wake descriptor of its own, which a push to any other watched
// source signals (once per sleep, not once per push). Ready events are level-triggered as
// poll(2) reports them: a descriptor that stays readable is reported again at the next wait.
// The handler (or try_pop()) receives the events that are pending: readable, writable,
// error, hangup as poll(2) saw them, and notified for a notify() call.
//
// Edge-triggered descriptors (ZeroMQ's ZMQ_FD, which says "look at ZMQ_EVENTS" rather than
// "a message is waiting"): after any send or receive on such a socket, read its pending
// events (ZMQ_EVENTS) and, if work is left, call notify(): the poller then serves the source
// at its next turn even though the descriptor itself stays quiet (the lost wake-up of
// ipykernel #1554 is exactly a missing re-check here).
//
// Who may call what: notify(), fd(), interest() - any thread. try_pop() / ready() - the thread
// that waits on the poller (or, unwatched, the one thread that polls it). Construct and
// destroy: no poller may watch it (remove() it first; a poller never closes the descriptor,
// and after remove() returns it never touches either the descriptor or this object).
// Neither copyable nor movable (a poller refers to it).
//
// Memory ordering: [F1] notify()'s and the waiter's fetch_or (release) publish the events and
// what the notifying thread did before; [F2] try_pop()'s exchange (acquire) takes them. The
// wake-up itself is the parker's handshake (detail/wait/parker.hpp): the events are stored
// before the parker is notified, and a poller re-checks ready() after attaching.
//
// After epoll's ready list and libuv's uv_poll_t (one loop waits on descriptors and on an
// async wake-up handle), with ZeroMQ's documented ZMQ_FD / ZMQ_EVENTS protocol.
#pragma once

#include <atomic>
#include <cstdint>

#include "detail/wait/parker.hpp"
#include "result.hpp"

namespace tether {

// What a descriptor is watched for, and what the poller found. A bit set.
enum class fd_events : std::uint8_t {
  none = 0,
  readable = 1,   // POLLIN
  writable = 2,   // POLLOUT
  error = 4,      // POLLERR or POLLNVAL (a closed descriptor: remove the source)
  hangup = 8,     // POLLHUP (the peer closed; reading returns the rest, then end of file)
  notified = 16,  // fd_source::notify() was called
};
constexpr fd_events operator|(fd_events a, fd_events b) noexcept {
  return static_cast<fd_events>(static_cast<std::uint8_t>(a) | static_cast<std::uint8_t>(b));
}
constexpr fd_events operator&(fd_events a, fd_events b) noexcept {
  return static_cast<fd_events>(static_cast<std::uint8_t>(a) & static_cast<std::uint8_t>(b));
}
constexpr fd_events& operator|=(fd_events& a, fd_events b) noexcept { return a = a | b; }
// True when e holds any of the events in which.
constexpr bool has(fd_events e, fd_events which) noexcept { return (e & which) != fd_events::none; }

class fd_source;

namespace detail {
struct fd_access;
}  // namespace detail

class fd_source {
 public:
  // Watches fd for interest (readable, writable or both; error and hangup are always
  // reported). The descriptor stays the caller's: it is never read, written or closed here.
  explicit fd_source(int fd, fd_events interest = fd_events::readable) noexcept : fd_(fd), interest_(interest) {}
  fd_source(const fd_source&) = delete;
  fd_source& operator=(const fd_source&) = delete;

  int fd() const noexcept { return fd_; }
  fd_events interest() const noexcept { return interest_; }

  // Marks the source ready as if its descriptor had reported an event: the waiting thread
  // calls its handler at its next turn, with fd_events::notified among the events. Several
  // calls before that turn are one. Never blocks. Thread-safe, also from handlers.
  void notify() noexcept { deliver(static_cast<std::uint8_t>(fd_events::notified)); }

  // The events pending since the last call (ok), or empty. Never closed: a descriptor has no
  // end here (hangup and error are events; remove the source for good). Waiting thread only.
  pop_result<fd_events> try_pop() noexcept {
    // [F2] acquire: pairs with [F1]; what the notifier did before is visible to the caller.
    const std::uint8_t e = pending_.exchange(0, std::memory_order_acquire);
    if (e == 0) return status::empty;
    return pop_result<fd_events>(std::in_place, static_cast<fd_events>(e));
  }

  // Whether events are pending (try_pop() would return ok). seq_cst: the re-check half of
  // the parker handshake. Waiting thread only.
  bool ready() const noexcept { return pending_.load(std::memory_order_seq_cst) != 0; }

 private:
  friend struct detail::fd_access;

  // Adds events and wakes whoever watches: notify(), or the poller's waiter after ppoll().
  void deliver(std::uint8_t events) noexcept {
    // [F1] release: pairs with [F2]. seq_cst: ordered before the notify's handshake.
    pending_.fetch_or(events, std::memory_order_seq_cst);
    parker_.notify_all();
  }

  const int fd_;
  const fd_events interest_;
  // Events reported and not yet taken: written by notify() (any thread) and the poller's
  // waiter; taken by try_pop() (the waiter).
  std::atomic<std::uint8_t> pending_{0};
  // Where a poller hangs its listener (one poller at a time), as on a queue's consumer parker.
  detail::parker parker_;
};

namespace detail {

// What the poller's core (detail/select/poller_core.hpp) needs from an fd_source.
struct fd_access {
  static parker& watched_parker(fd_source& s) noexcept { return s.parker_; }
  static void deliver(fd_source& s, fd_events e) noexcept { s.deliver(static_cast<std::uint8_t>(e)); }
};

// A poller source (see detail/select/sources.hpp): itself, named by its address, woken through
// its parker, ready while events are pending.
inline fd_source& rx_of(fd_source& s) noexcept { return s; }
inline const void* identity_of(const fd_source& s) noexcept { return &s; }
inline parker& rx_parker(fd_source& s) noexcept { return fd_access::watched_parker(s); }
inline bool rx_ready(fd_source& s) noexcept { return s.ready(); }

}  // namespace detail

}  // namespace tether
