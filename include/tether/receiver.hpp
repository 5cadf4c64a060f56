// SPDX-License-Identifier: MIT
// tether/receiver.hpp - a receive-only view of an mpsc_queue's consumer side.
//
//   tether::mpsc_queue<reply> q;
//   tether::receiver<reply> replies(q);       // hand this out: it can pop, not push or close
//   if (auto r = replies.pop_for(10ms)) use(*r);
//
// receiver<T> holds a pointer to an mpsc_queue<T>: it is cheap to copy, and every copy is the
// same view. It offers the queue's pop family (try_pop, pop, pop_for, pop_until,
// try_pop_bulk, pop_bulk, pop_bulk_for, pop_bulk_until, try_pop_each; the waits also with a
// std::stop_token) with exactly the queue's outcomes (see mpsc_queue.hpp), plus is_closed
// and size_approx - no push, no close. A poller or select accepts it like the queue itself.
//
// Who may call what: the pop family - the queue's one consumer thread at a time (all copies
// of a receiver and the queue itself share that one consumer); is_closed / size_approx - any
// thread. The queue must outlive every receiver viewing it.
//
// Memory ordering: the queue's (a push happens-before the pop that returns its item).
//
// Library hook: detail::receiver_queue(r) returns the viewed queue, for the parts of tether
// that watch or wrap a receiver (select, router); not for users.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stop_token>
#include <utility>

#include "mpsc_queue.hpp"
#include "result.hpp"

namespace tether {

template <class T>
class receiver;

namespace detail {
template <class T>
mpsc_queue<T>& receiver_queue(const receiver<T>& r) noexcept;
}  // namespace detail

template <class T>
class receiver {
 public:
  using value_type = T;

  // A view of q's consumer side. q must outlive the receiver (and its copies).
  explicit receiver(mpsc_queue<T>& q) noexcept : q_(&q) {}

  // ---- consumer (the queue's one consumer thread at a time) ------------------------------

  // As mpsc_queue::try_pop: ok, empty or closed; never blocks.
  pop_result<T> try_pop() { return q_->try_pop(); }
  // As mpsc_queue::pop: ok, or closed once closed and every item taken.
  pop_result<T> pop() { return q_->pop(); }
  // As mpsc_queue::pop_for / pop_until: ok, timeout or closed.
  template <class Rep, class Period>
  pop_result<T> pop_for(const std::chrono::duration<Rep, Period>& timeout) {
    return q_->pop_for(timeout);
  }
  template <class Clock, class Duration>
  pop_result<T> pop_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return q_->pop_until(deadline);
  }

  // As mpsc_queue::try_pop_bulk / pop_bulk / pop_bulk_for / pop_bulk_until: how many items
  // were moved to out.
  template <class OutputIt>
  std::size_t try_pop_bulk(OutputIt out, std::size_t max) {
    return q_->try_pop_bulk(std::move(out), max);
  }
  template <class OutputIt>
  std::size_t pop_bulk(OutputIt out, std::size_t max) {
    return q_->pop_bulk(std::move(out), max);
  }
  template <class OutputIt, class Rep, class Period>
  std::size_t pop_bulk_for(OutputIt out, std::size_t max, const std::chrono::duration<Rep, Period>& timeout) {
    return q_->pop_bulk_for(std::move(out), max, timeout);
  }
  template <class OutputIt, class Clock, class Duration>
  std::size_t pop_bulk_until(OutputIt out, std::size_t max, const std::chrono::time_point<Clock, Duration>& deadline) {
    return q_->pop_bulk_until(std::move(out), max, deadline);
  }

  // The std::stop_token forms, as mpsc_queue's: cancelled (bulk: 0) once a stop is requested.
  pop_result<T> pop(std::stop_token st) { return q_->pop(std::move(st)); }
  template <class Rep, class Period>
  pop_result<T> pop_for(const std::chrono::duration<Rep, Period>& timeout, std::stop_token st) {
    return q_->pop_for(timeout, std::move(st));
  }
  template <class Clock, class Duration>
  pop_result<T> pop_until(const std::chrono::time_point<Clock, Duration>& deadline, std::stop_token st) {
    return q_->pop_until(deadline, std::move(st));
  }
  template <class OutputIt>
  std::size_t pop_bulk(OutputIt out, std::size_t max, std::stop_token st) {
    return q_->pop_bulk(std::move(out), max, std::move(st));
  }
  template <class OutputIt, class Rep, class Period>
  std::size_t pop_bulk_for(OutputIt out, std::size_t max, const std::chrono::duration<Rep, Period>& timeout,
                           std::stop_token st) {
    return q_->pop_bulk_for(std::move(out), max, timeout, std::move(st));
  }
  template <class OutputIt, class Clock, class Duration>
  std::size_t pop_bulk_until(OutputIt out, std::size_t max, const std::chrono::time_point<Clock, Duration>& deadline,
                             std::stop_token st) {
    return q_->pop_bulk_until(std::move(out), max, deadline, std::move(st));
  }

  // As mpsc_queue::try_pop_each: calls f(T&&) for up to max ready items; how many.
  template <class F>
  std::size_t try_pop_each(F&& f, std::size_t max = SIZE_MAX) {
    return q_->try_pop_each(std::forward<F>(f), max);
  }

  // ---- any thread ------------------------------------------------------------------------

  // True once the queue was closed (items may still be waiting). Thread-safe.
  bool is_closed() const noexcept { return q_->is_closed(); }
  // Items pushed and not yet popped; stale as soon as it returns. Thread-safe.
  std::size_t size_approx() const noexcept { return q_->size_approx(); }

  // Two receivers are equal when they view the same queue.
  friend bool operator==(const receiver& a, const receiver& b) noexcept { return a.q_ == b.q_; }

 private:
  friend mpsc_queue<T>& detail::receiver_queue<T>(const receiver<T>& r) noexcept;

  mpsc_queue<T>* q_;
};

namespace detail {
// The queue a receiver views (see the banner: for select and router).
template <class T>
mpsc_queue<T>& receiver_queue(const receiver<T>& r) noexcept {
  return *r.q_;
}
}  // namespace detail

}  // namespace tether
