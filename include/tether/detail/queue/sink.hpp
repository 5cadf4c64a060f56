// SPDX-License-Identifier: MIT
// tether/detail/queue/sink.hpp - how a consumer hands an item over to whoever takes it.
//
// Two kinds of taker: a try_pop_each() callback, which may pop from the same queue, so the item
// must have left the queue before the callback sees it; and the output iterator of
// try_pop_bulk / pop_bulk, which never uses the queue, so the item can go to it straight
// from its slot and leave the queue only once it is there - if the assignment throws, the
// item stays queued instead of being lost.
#pragma once

#include <type_traits>
#include <utility>

namespace tether::detail {

// The sink of try_pop_bulk / pop_bulk: moves each item to an output iterator.
template <class OutputIt>
struct output_sink {
  static constexpr bool reenters = false;
  OutputIt& out;
  template <class T>
  void operator()(T&& v) {
    *out = std::move(v);
    ++out;
  }
};

// Sinks that say they never call back into the queue.
template <class Sink>
concept non_reentrant_sink = requires { requires !std::remove_cvref_t<Sink>::reenters; };

// Moves the item at p into sink, destroys it, then leave() moves the queue past its slot.
// If sink throws, leave() does not run: the item stays queued (in whatever state the throwing
// move left it). Every non-re-entrant hand-over goes this way (single-item pops use
// pop_result's take_from_slot constructor, which does the same).
template <class T, class Sink, class Leave>
void move_out(T* p, Sink&& sink, Leave&& leave) {
  sink(std::move(*p));
  p->~T();
  leave();
}

// Hands the item at p to sink and destroys it; leave() moves the queue past its slot. For a
// non-re-entrant sink leave() runs after the sink (move_out: a throwing sink leaves the item
// queued); for any other, before (the sink may pop from the same queue): then the item is
// first moved into a local - if that move throws, the item stays queued - and the sink gets
// an rvalue reference to it. A sink that takes its parameter by value moves it once more; if
// that move throws, the item has already left the queue and is destroyed (it counts as
// delivered, as everything handed to the callback).
template <class T, class Sink, class Leave>
void hand_over(T* p, Sink& sink, Leave&& leave) {
  if constexpr (non_reentrant_sink<Sink>) {
    move_out(p, sink, leave);
  } else {
    T v(std::move(*p));
    p->~T();
    leave();
    sink(std::move(v));
  }
}

}  // namespace tether::detail
