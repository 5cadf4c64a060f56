// SPDX-License-Identifier: MIT
// tether/detail/queue/consumer_ops.hpp - the consumer half shared by both single-consumer queues.
//
// mpsc_queue and bounded_mpsc_queue differ in how producers claim slots, not in how their
// one consumer takes items out, waits and sees the end. This CRTP base gives both the same
// consumer API (documented per method in mpsc_queue.hpp and bounded_mpsc_queue.hpp, which
// re-declare it) on top of five primitives the queue provides:
//   head_state probe()              - is the head item ready, empty, in flight or closed?
//   bool skip_abandoned()           - after ready: if the head slot's producer's constructor
//                                     threw, move past it and say so
//   pop_result<T> take()            - take the ready head item, moving it out exactly once
//                                     (pop_result's take_from_slot constructor)
//   size_t take_ready(max, sink)    - take up to max ready items, calling sink(T&&)
//   bool head_ready()               - the parker condition (seq_cst loads)
// plus a parker `consumer_wait_`, a consumer_check `check_`, the consumer's position `head_`
// (counts the items taken, give or take skipped slots) and a stream_watch `stream_`.
//
// Every pop_result travels out as a prvalue (take() -> the loop below -> the public call ->
// the caller), so an item is moved once on its way out and a throwing move leaves it queued.
//
// One private deadline loop per shape: pop_until_steady for one item, pop_bulk_until_steady
// for many; the blocking, try_ and _for / _until forms wrap them.
//
// Every method here: consumer thread only (one thread at a time).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stop_token>
#include <utility>

#include "consumer_check.hpp"
#include "../platform/futex.hpp"
#include "../wait/parker.hpp"
#include "sink.hpp"
#include "../../result.hpp"

namespace tether::detail {

// What the consumer finds at the head: an item, nothing (yet), an item still being written
// after close, or the end (closed and drained).
enum class head_state { ready, empty, in_flight, closed };

struct source_access;  // a poller's view of a consumer (detail/select/source_access.hpp)

template <class Queue, class T>
class consumer_ops {
 public:
  pop_result<T> try_pop() {
    consumer_scope scope(q().check_);
    for (;;) {
      switch (q().probe()) {
        case head_state::ready:
          if (q().skip_abandoned()) continue;
          return q().take();
        case head_state::closed: return status::closed;
        default: return status::empty;
      }
    }
  }

  pop_result<T> pop() { return pop_until_steady(no_deadline, nullptr); }

  template <class Rep, class Period>
  pop_result<T> pop_for(const std::chrono::duration<Rep, Period>& timeout) {
    return pop_until_steady(deadline_after(timeout), nullptr);
  }
  template <class Clock, class Duration>
  pop_result<T> pop_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return pop_until_steady(to_steady(deadline), nullptr);
  }

  // The cancellable forms: as above, and cancelled once st's stop is requested (an item
  // ready by then is still taken: a stop already requested tries once).
  pop_result<T> pop(std::stop_token st) { return pop_until_steady(no_deadline, &st); }
  template <class Rep, class Period>
  pop_result<T> pop_for(const std::chrono::duration<Rep, Period>& timeout, std::stop_token st) {
    return pop_until_steady(deadline_after(timeout), &st);
  }
  template <class Clock, class Duration>
  pop_result<T> pop_until(const std::chrono::time_point<Clock, Duration>& deadline, std::stop_token st) {
    return pop_until_steady(to_steady(deadline), &st);
  }

  template <class OutputIt>
  std::size_t try_pop_bulk(OutputIt out, std::size_t max) {
    consumer_scope scope(q().check_);
    return q().take_ready(max, output_sink<OutputIt>{out});
  }

  template <class OutputIt>
  std::size_t pop_bulk(OutputIt out, std::size_t max) {
    return pop_bulk_until_steady(out, max, no_deadline, nullptr);
  }
  template <class OutputIt, class Rep, class Period>
  std::size_t pop_bulk_for(OutputIt out, std::size_t max, const std::chrono::duration<Rep, Period>& timeout) {
    return pop_bulk_until_steady(out, max, deadline_after(timeout), nullptr);
  }
  template <class OutputIt, class Clock, class Duration>
  std::size_t pop_bulk_until(OutputIt out, std::size_t max, const std::chrono::time_point<Clock, Duration>& deadline) {
    return pop_bulk_until_steady(out, max, to_steady(deadline), nullptr);
  }
  template <class OutputIt>
  std::size_t pop_bulk(OutputIt out, std::size_t max, std::stop_token st) {
    return pop_bulk_until_steady(out, max, no_deadline, &st);
  }
  template <class OutputIt, class Rep, class Period>
  std::size_t pop_bulk_for(OutputIt out, std::size_t max, const std::chrono::duration<Rep, Period>& timeout,
                           std::stop_token st) {
    return pop_bulk_until_steady(out, max, deadline_after(timeout), &st);
  }
  template <class OutputIt, class Clock, class Duration>
  std::size_t pop_bulk_until(OutputIt out, std::size_t max, const std::chrono::time_point<Clock, Duration>& deadline,
                             std::stop_token st) {
    return pop_bulk_until_steady(out, max, to_steady(deadline), &st);
  }

  template <class F>
  std::size_t try_pop_each(F&& f, std::size_t max = SIZE_MAX) {
    consumer_scope scope(q().check_);
    return q().take_ready(max, f);
  }

 protected:
  consumer_ops() = default;

 private:
  friend struct source_access;

  Queue& q() noexcept { return static_cast<Queue&>(*this); }

  // For a poller watching this queue (select.hpp): the parker it hangs its listener on, and
  // the parker's condition (an item is ready, or closed and drained). Consumer thread only.
  parker& watched_parker() noexcept { return q().consumer_wait_; }
  bool watched_ready() {
    consumer_scope scope(q().check_);
    return q().head_ready();
  }

  // Waits until the head is ready, the deadline passes (false) or stop is requested.
  bool wait_for_head(steady_time deadline, stop_wake& stop) {
    stop.arm(q().consumer_wait_);
    return park_until_streaming(
        q().consumer_wait_, [this, &stop] { return q().head_ready() || stop.requested(); }, deadline, q().stream_,
        static_cast<std::uint32_t>(q().head_));
  }

  // The deadline loop of the single-item pops. A deadline already past (or a stop already
  // requested) still takes a ready item (try once).
  pop_result<T> pop_until_steady(steady_time deadline, const std::stop_token* st) {
    consumer_scope scope(q().check_);
    stop_wake stop(st);
    for (;;) {
      switch (q().probe()) {
        case head_state::ready:
          if (q().skip_abandoned()) continue;
          return q().take();  // a prvalue: see the banner
        case head_state::closed: return status::closed;
        default: break;
      }
      if (stop.requested()) return status::cancelled;
      if (!wait_for_head(deadline, stop)) return status::timeout;
    }
  }

  // The deadline loop of the bulk pops: waits for the first item until the deadline (or a
  // stop request), then takes what is ready. 0 when closed and drained, timed out,
  // cancelled, or max == 0.
  template <class OutputIt>
  std::size_t pop_bulk_until_steady(OutputIt out, std::size_t max, steady_time deadline, const std::stop_token* st) {
    consumer_scope scope(q().check_);
    if (max == 0) return 0;
    stop_wake stop(st);
    for (;;) {
      const head_state hs = q().probe();
      if (hs == head_state::closed) return 0;
      if (hs == head_state::ready) {
        const std::size_t n = q().take_ready(max, output_sink<OutputIt>{out});
        if (n != 0) return n;
        continue;  // only skipped slots
      }
      if (stop.requested()) return 0;
      if (!wait_for_head(deadline, stop)) return 0;
    }
  }
};

}  // namespace tether::detail
