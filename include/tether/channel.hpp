// SPDX-License-Identifier: MIT
// tether/channel.hpp - in-process channels: two connected endpoints, each sends and receives.
//
//   auto [left, right] = tether::make_channel<request, reply>();  // unbounded
//   auto [a, b] = tether::make_channel<message>(64);              // bounded: backpressure
//
// make_channel<A, B>() returns {endpoint<A, B>, endpoint<B, A>}: the first sends A and
// receives B, the second the reverse. Each direction is one single-consumer queue
// (mpsc_queue, or bounded_mpsc_queue when a capacity is given): nothing is locked.
//
// Who may call what (per endpoint): send* / try_send / close / is_closed / capacity - any
// thread, concurrently; recv* / try_recv - one thread at a time (a translation unit built
// without NDEBUG throws std::logic_error when two threads receive at once); move and
// destroy - not concurrently with any other call on that endpoint.
//
// Outcomes: sends return push_result - ok, full (try_send, bounded), timeout (send_for /
// send_until, bounded), cancelled (the std::stop_token forms, bounded) or closed, and on
// every outcome but ok the message is untouched. Receives return pop_result<Recv> - the
// message, or empty / timeout / cancelled / closed; a throwing move of a message leaves it
// queued. close() on either endpoint, or destroying it, closes both directions: each side
// still receives what was sent to it before, then sees closed; blocked senders and receivers
// wake. Messages never received are destroyed with the last
// owner of the pair (both endpoints, and any poller watching one).
//
// Memory ordering: a send happens-before the receive that returns its message; a close
// happens-before a receive or send that reports closed.
//
// After ZeroMQ's inproc PAIR sockets and crossbeam-channel's disconnect rules.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <stop_token>
#include <utility>

#include "detail/platform/futex.hpp"
#include "detail/channel/direction.hpp"
#include "detail/select/source_access.hpp"
#include "result.hpp"

namespace tether {

namespace detail {

// Both directions of one pair; shared by its two endpoints (and pollers watching them).
template <class A, class B>
struct pair_state {
  pair_state() = default;
  explicit pair_state(std::size_t capacity) : a_to_b(capacity), b_to_a(capacity) {}
  channel_direction<A> a_to_b;
  channel_direction<B> b_to_a;
};

}  // namespace detail

template <class Send, class Recv>
class endpoint;

template <class A, class B = A>
std::pair<endpoint<A, B>, endpoint<B, A>> make_channel();
template <class A, class B = A>
std::pair<endpoint<A, B>, endpoint<B, A>> make_channel(std::size_t capacity);

// One end of a pair: sends Send to the peer, receives Recv from it.
template <class Send, class Recv>
class endpoint {
 public:
  using send_type = Send;
  using recv_type = Recv;

  endpoint(endpoint&& other) noexcept
      : state_(std::move(other.state_)),
        tx_(std::exchange(other.tx_, nullptr)),
        rx_(std::exchange(other.rx_, nullptr)) {}
  // Closes the pair this endpoint held (if any), then takes other's.
  endpoint& operator=(endpoint&& other) noexcept {
    if (this != &other) {
      (void)close();
      state_ = std::move(other.state_);
      tx_ = std::exchange(other.tx_, nullptr);
      rx_ = std::exchange(other.rx_, nullptr);
    }
    return *this;
  }
  endpoint(const endpoint&) = delete;
  endpoint& operator=(const endpoint&) = delete;

  // Closes the pair (see close()). Messages sent to this endpoint and never received are
  // destroyed with the last owner of the pair.
  ~endpoint() { (void)close(); }

  // ---- sending (any thread) --------------------------------------------------------------

  // Sends v; blocks while a bounded pair is full. ok, or closed with v untouched (not moved
  // from). Thread-safe.
  push_result send(Send&& v) { return tx_->push_until(std::move(v), detail::no_deadline); }
  push_result send(const Send& v) { return tx_->push_until(v, detail::no_deadline); }

  // Sends v if there is room; never blocks. ok, full or closed; on full or closed v is
  // untouched. Thread-safe.
  push_result try_send(Send&& v) { return tx_->try_push(std::move(v)); }
  push_result try_send(const Send& v) { return tx_->try_push(v); }

  // As send(), giving up at the deadline: ok, timeout or closed; on timeout or closed v is
  // untouched. Only a bounded pair can time out. Zero or negative tries once; a huge timeout
  // (duration::max()) waits like send(). Thread-safe.
  template <class Rep, class Period>
  push_result send_for(Send&& v, const std::chrono::duration<Rep, Period>& timeout) {
    return tx_->push_until(std::move(v), detail::deadline_after(timeout));
  }
  template <class Rep, class Period>
  push_result send_for(const Send& v, const std::chrono::duration<Rep, Period>& timeout) {
    return tx_->push_until(v, detail::deadline_after(timeout));
  }
  template <class Clock, class Duration>
  push_result send_until(Send&& v, const std::chrono::time_point<Clock, Duration>& deadline) {
    return tx_->push_until(std::move(v), detail::to_steady(deadline));
  }
  template <class Clock, class Duration>
  push_result send_until(const Send& v, const std::chrono::time_point<Clock, Duration>& deadline) {
    return tx_->push_until(v, detail::to_steady(deadline));
  }

  // The cancellable sends: as send / send_for / send_until, and cancelled (v untouched) once
  // st's stop is requested while a bounded pair's inbox is full. An unbounded send never
  // waits, so it never reports cancelled. Thread-safe.
  push_result send(Send&& v, std::stop_token st) {
    return tx_->push_until(std::move(v), detail::no_deadline, std::move(st));
  }
  push_result send(const Send& v, std::stop_token st) { return tx_->push_until(v, detail::no_deadline, std::move(st)); }
  template <class Rep, class Period>
  push_result send_for(Send&& v, const std::chrono::duration<Rep, Period>& timeout, std::stop_token st) {
    return tx_->push_until(std::move(v), detail::deadline_after(timeout), std::move(st));
  }
  template <class Rep, class Period>
  push_result send_for(const Send& v, const std::chrono::duration<Rep, Period>& timeout, std::stop_token st) {
    return tx_->push_until(v, detail::deadline_after(timeout), std::move(st));
  }
  template <class Clock, class Duration>
  push_result send_until(Send&& v, const std::chrono::time_point<Clock, Duration>& deadline, std::stop_token st) {
    return tx_->push_until(std::move(v), detail::to_steady(deadline), std::move(st));
  }
  template <class Clock, class Duration>
  push_result send_until(const Send& v, const std::chrono::time_point<Clock, Duration>& deadline,
                         std::stop_token st) {
    return tx_->push_until(v, detail::to_steady(deadline), std::move(st));
  }

  // ---- receiving (one thread at a time) --------------------------------------------------

  // Takes the oldest message the peer sent, blocking (spin briefly, then park) until there is
  // one: ok, or closed once the pair is closed and everything sent before was received. If
  // the message's move throws, the exception propagates and the message stays queued, the
  // next to receive (it is moved exactly once, straight into the result).
  pop_result<Recv> recv() { return rx_->pop_until(detail::no_deadline); }

  // Never blocks: ok, empty or closed (closed only once everything sent was received). As
  // recv() if the move throws.
  pop_result<Recv> try_recv() { return rx_->try_pop(); }

  // As recv(), giving up at the deadline: ok, timeout or closed. A zero or negative timeout
  // (a deadline already past) tries once; a huge one (duration::max()) waits like recv().
  template <class Rep, class Period>
  pop_result<Recv> recv_for(const std::chrono::duration<Rep, Period>& timeout) {
    return rx_->pop_until(detail::deadline_after(timeout));
  }
  template <class Clock, class Duration>
  pop_result<Recv> recv_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return rx_->pop_until(detail::to_steady(deadline));
  }

  // The cancellable receives: as recv / recv_for / recv_until, and cancelled once st's stop
  // is requested (the wait wakes at once; a message ready by then is still received).
  pop_result<Recv> recv(std::stop_token st) { return rx_->pop_until(detail::no_deadline, st); }
  template <class Rep, class Period>
  pop_result<Recv> recv_for(const std::chrono::duration<Rep, Period>& timeout, std::stop_token st) {
    return rx_->pop_until(detail::deadline_after(timeout), st);
  }
  template <class Clock, class Duration>
  pop_result<Recv> recv_until(const std::chrono::time_point<Clock, Duration>& deadline, std::stop_token st) {
    return rx_->pop_until(detail::to_steady(deadline), st);
  }

  // ---- both sides ------------------------------------------------------------------------

  // Closes both directions: see the banner. Returns true for the one call (on either
  // endpoint) that closed the pair, false if it was already closed or this endpoint was moved
  // from. Never blocks. Thread-safe.
  bool close() noexcept {
    if (tx_ == nullptr) return false;  // moved from
    // Both endpoints close the same two directions in the same order (by address): whoever
    // closes the first one closed the pair. Every call has closed both when it returns.
    const bool tx_first = std::less<const void*>{}(tx_, rx_);
    const bool closed_now = tx_first ? tx_->close() : rx_->close();
    (void)(tx_first ? rx_->close() : tx_->close());
    return closed_now;
  }

  // True once either endpoint closed the pair. Thread-safe.
  bool is_closed() const noexcept { return rx_->is_closed(); }

  // Messages each direction holds at least (0: unbounded). Thread-safe.
  std::size_t capacity() const noexcept { return rx_->capacity(); }

  // Messages sent to this endpoint and not yet received; stale as soon as it returns.
  std::size_t pending_approx() const noexcept { return rx_->size_approx(); }

 private:
  template <class A, class B>
  friend std::pair<endpoint<A, B>, endpoint<B, A>> make_channel();
  template <class A, class B>
  friend std::pair<endpoint<A, B>, endpoint<B, A>> make_channel(std::size_t);
  friend struct detail::source_access;

  endpoint(std::shared_ptr<void> state, detail::channel_direction<Send>& tx, detail::channel_direction<Recv>& rx) noexcept
      : state_(std::move(state)), tx_(&tx), rx_(&rx) {}

  detail::channel_direction<Recv>& rx_direction() const noexcept { return *rx_; }

  std::shared_ptr<void> state_;       // keeps both directions alive
  detail::channel_direction<Send>* tx_ = nullptr;  // the peer receives from it
  detail::channel_direction<Recv>* rx_ = nullptr;  // this endpoint receives from it
};

// Two connected endpoints, unbounded in both directions: the first sends A and receives B,
// the second sends B and receives A. Sends never block.
template <class A, class B>
std::pair<endpoint<A, B>, endpoint<B, A>> make_channel() {
  auto state = std::make_shared<detail::pair_state<A, B>>();
  auto& s = *state;
  return {endpoint<A, B>(state, s.a_to_b, s.b_to_a), endpoint<B, A>(state, s.b_to_a, s.a_to_b)};
}

// As make_channel(), bounded: each direction holds at least `capacity` messages (rounded up to
// a power of two; capacity() says how many), and send() blocks while the peer's inbox is
// full. Throws std::invalid_argument for 0.
template <class A, class B>
std::pair<endpoint<A, B>, endpoint<B, A>> make_channel(std::size_t capacity) {
  auto state = std::make_shared<detail::pair_state<A, B>>(capacity);
  auto& s = *state;
  return {endpoint<A, B>(state, s.a_to_b, s.b_to_a), endpoint<B, A>(state, s.b_to_a, s.a_to_b)};
}

}  // namespace tether
