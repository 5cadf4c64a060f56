// SPDX-License-Identifier: MIT
// tether/detail/queue/consumer_ops.hpp - the consumer half shared by both single-consumer queues.
//
// mpsc_queue and bounded_mpsc_queue differ in how producers claim slots, not in how their
// one consumer takes items out, waits and sees the end. This CRTP base gives both the same
// consumer API on top of four primitives the queue provides:
//   head_state probe()              - is the head item ready, empty, in flight or closed?
//   std::optional<T> take()         - take the ready head item (nullopt: a skipped slot)
//   size_t take_ready(max, sink)    - take up to max ready items, calling sink(T&&)
//   bool head_ready()               - the parker condition (seq_cst loads)
// plus a parker `consumer_wait_` and a consumer_check `check_`.
//
// Every method here: consumer thread only (one thread at a time).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
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
  // Pops the oldest ready item without blocking. status::empty when nothing is ready (an
  // item whose producer is mid-push is not ready yet); status::closed once closed and
  // drained. Consumer thread only.
  pop_result<T> try_pop() {
    consumer_check::scope scope(q().check_);
    for (;;) {
      switch (q().probe()) {
        case head_state::ready:
          if (auto v = q().take()) return pop_result<T>(std::in_place, std::move(*v));
          continue;  // a slot skipped because its producer's constructor threw
        case head_state::closed: return status::closed;
        default: return status::empty;
      }
    }
  }

  // Blocks (spins briefly, then parks) until an item arrives or the queue is closed and
  // drained; an empty optional means closed and drained. Consumer thread only.
  std::optional<T> pop() { return pop_until_steady(no_deadline).take(); }

  // As pop(), giving up at the deadline: status ok, timeout or closed. Consumer thread only.
  template <class Rep, class Period>
  pop_result<T> pop_for(const std::chrono::duration<Rep, Period>& timeout) {
    return pop_until_steady(deadline_after(timeout));
  }
  template <class Clock, class Duration>
  pop_result<T> pop_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return pop_until_steady(to_steady(deadline));
  }

  // Moves up to max ready items to out, oldest first; never blocks. Returns how many. If an
  // assignment to out throws, the items before it are popped and that one stays queued (as
  // the throwing move left it). out must not use this queue (drain() may). Consumer thread
  // only.
  template <class OutputIt>
  std::size_t try_pop_bulk(OutputIt out, std::size_t max) {
    consumer_check::scope scope(q().check_);
    return q().take_ready(max, output_sink<OutputIt>{out});
  }

  // Blocks until at least one item is ready, then moves up to max ready items to out.
  // Returns how many; 0 only when closed and drained (or max == 0). As try_pop_bulk if an
  // assignment to out throws. Consumer thread only.
  template <class OutputIt>
  std::size_t pop_bulk(OutputIt out, std::size_t max) {
    consumer_check::scope scope(q().check_);
    if (max == 0) return 0;
    for (;;) {
      const head_state hs = q().probe();
      if (hs == head_state::closed) return 0;
      if (hs == head_state::ready) {
        const std::size_t n = q().take_ready(max, output_sink<OutputIt>{out});
        if (n != 0) return n;
        continue;  // only skipped slots
      }
      wait_for_head(no_deadline);
    }
  }

  // Calls f(T&&) for up to max ready items, oldest first; never blocks. Returns how many.
  // An item handed to f counts as delivered even if f throws. Consumer thread only.
  template <class F>
  std::size_t drain(F&& f, std::size_t max = SIZE_MAX) {
    consumer_check::scope scope(q().check_);
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
    consumer_check::scope scope(q().check_);
    return q().head_ready();
  }

  bool wait_for_head(steady_time deadline) {
    return park_until(q().consumer_wait_, [this] { return q().head_ready(); }, deadline);
  }

  pop_result<T> pop_until_steady(steady_time deadline) {
    consumer_check::scope scope(q().check_);
    for (;;) {
      switch (q().probe()) {
        case head_state::ready:
          if (auto v = q().take()) return pop_result<T>(std::in_place, std::move(*v));
          continue;
        case head_state::closed: return status::closed;
        default: break;
      }
      if (!wait_for_head(deadline)) return status::timeout;
    }
  }
};

}  // namespace tether::detail
