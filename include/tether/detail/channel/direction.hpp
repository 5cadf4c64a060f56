// SPDX-License-Identifier: MIT
// tether/detail/channel/direction.hpp - one direction of a channel: an unbounded or a bounded queue,
// chosen at run time.
//
// A channel pair is unbounded or bounded as its creator asks, so each direction holds one of
// the two single-consumer queues and forwards every call to it; the branch on which one is
// a predictable compare on a byte that never changes.
//
// Who may call what: try_push / push_until / close / is_closed / capacity - any thread;
// try_pop / pop_until / watched_ready - one consumer thread at a time (the queue checks it in
// debug builds). watched_parker only reads a member that never changes.
//
// Memory ordering: nothing of its own; all ordering is the queues' (see their banners).
#pragma once

#include <chrono>
#include <cstddef>
#include <stop_token>
#include <utility>
#include <variant>

#include "../../bounded_mpsc_queue.hpp"
#include "../../mpsc_queue.hpp"
#include "../../result.hpp"
#include "../platform/futex.hpp"
#include "../wait/parker.hpp"
#include "../select/source_access.hpp"

namespace tether::detail {

template <class T>
class channel_direction {
 public:
  // Unbounded.
  channel_direction() : q_(std::in_place_index<0>) {}
  // Bounded: holds at least `capacity` items (the queue rounds up to a power of two).
  explicit channel_direction(std::size_t capacity) : q_(std::in_place_index<1>, capacity) {}

  channel_direction(const channel_direction&) = delete;
  channel_direction& operator=(const channel_direction&) = delete;

  // ok, full or closed; v untouched unless ok.
  template <class U>
  push_result try_push(U&& v) {
    if (auto* q = std::get_if<0>(&q_)) return q->push(std::forward<U>(v));
    return std::get_if<1>(&q_)->try_push(std::forward<U>(v));
  }

  // ok, timeout or closed; v untouched unless ok. Blocks only when bounded and full.
  template <class U>
  push_result push_until(U&& v, steady_time deadline) {
    if (auto* q = std::get_if<0>(&q_)) return q->push(std::forward<U>(v));
    // The queue's own deadline loop does the waiting (a steady deadline passes through
    // unchanged; no_deadline waits until room or close; a past one still tries once).
    return std::get_if<1>(&q_)->push_until(std::forward<U>(v), deadline);
  }

  // As push_until; a stop request while bounded and full ends the wait: cancelled.
  template <class U>
  push_result push_until(U&& v, steady_time deadline, std::stop_token st) {
    if (auto* q = std::get_if<0>(&q_)) return q->push(std::forward<U>(v));
    return std::get_if<1>(&q_)->push_until(std::forward<U>(v), deadline, std::move(st));
  }

  // Every pop_result below is returned as a prvalue straight from the queue (no move of T
  // on the way: a throwing move leaves the message queued, see result.hpp).
  pop_result<T> try_pop() {
    return with_queue([](auto& q) { return q.try_pop(); });
  }

  // ok, timeout or closed (closed only once every message was received).
  pop_result<T> pop_until(steady_time deadline) {
    return with_queue([deadline](auto& q) { return q.pop_until(deadline); });
  }
  // As pop_until; a stop request ends the wait: cancelled.
  pop_result<T> pop_until(steady_time deadline, const std::stop_token& st) {
    return with_queue([deadline, &st](auto& q) { return q.pop_until(deadline, st); });
  }

  // True for the call that closed it.
  bool close() noexcept {
    return with_queue([](auto& q) { return q.close(); });
  }
  bool is_closed() const noexcept {
    if (auto* q = std::get_if<0>(&q_)) return q->is_closed();
    return std::get_if<1>(&q_)->is_closed();
  }
  // 0 when unbounded.
  std::size_t capacity() const noexcept {
    if (auto* q = std::get_if<1>(&q_)) return q->capacity();
    return 0;
  }
  std::size_t size_approx() const noexcept {
    if (auto* q = std::get_if<0>(&q_)) return q->size_approx();
    return std::get_if<1>(&q_)->size_approx();
  }

  // The bounded queue, or null when unbounded (a push never waits then): for a producer that
  // awaits room (coroutine.hpp).
  bounded_mpsc_queue<T>* bounded() noexcept { return std::get_if<1>(&q_); }

  // For a poller (select.hpp): see detail/select/source_access.hpp.
  parker& watched_parker() noexcept {
    return with_queue([](auto& q) -> parker& { return source_access::watched_parker(q); });
  }
  bool watched_ready() {
    return with_queue([](auto& q) { return source_access::watched_ready(q); });
  }

 private:
  template <class F>
  decltype(auto) with_queue(F&& f) {
    if (auto* q = std::get_if<0>(&q_)) return f(*q);
    return f(*std::get_if<1>(&q_));
  }

  std::variant<mpsc_queue<T>, bounded_mpsc_queue<T>> q_;
};

}  // namespace tether::detail
