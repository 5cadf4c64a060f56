// SPDX-License-Identifier: MIT
// tether/select.hpp - wait on many receivers at once: tether::poller and tether::select.
//
//   tether::poller p;
//   p.on(commands, [&](command c) { handle(c); })
//    .on(replies, [&](reply r) { forward(r); }, [&] { /* replies closed and drained */ });
//   while (running) p.run_one_for(100ms);          // handlers run with no lock held
//
//   switch (tether::select(a, b)) { case 0: ...; case 1: ...; }   // one-shot: which is ready
//
//   tether::executor main_ex{tether::adopt_current_thread};   // this thread owns it
//   p.on(main_ex);                                   // one loop: messages, tasks, timers
//   while (!main_ex.is_finished()) p.run_one();
//
// A source is a channel endpoint (its receiving side), a tether::mpsc_queue, a
// tether::bounded_mpsc_queue, or a tether::receiver (watched as the queue it views). It is
// ready when a message is waiting or when it is closed and drained (so the receiver sees
// closed; remove it then, or it stays ready). A source can also be a tether::executor
// constructed with adopt_current_thread: ready when a posted task is waiting, when a delayed
// task is due, or once it is stopped and drained; its owner thread is then the one that
// waits on the poller and runs the tasks (run_one*() for on(ex)).
//
// Who may call what:
//   add / on / remove / contains / size    - any thread, also while another thread waits,
//                                            and from handlers;
//   try_wait / wait* / try_run_one / run_one* - one thread at a time (debug builds throw
//     std::logic_error otherwise); while a source is in a poller, that thread is the only one
//     that receives from it; with an executor in the poller, it must be the executor's owner
//     (wrong_thread otherwise, in every build);
//   destroy                                - no call may be running.
// A source must outlive its registration: after remove() returns the poller never touches
// it again. A channel endpoint may be destroyed while watched (the poller keeps the pair
// alive; the endpoint's destructor closes it, so the source turns ready with closed).
//
// Guarantees: zero CPU while idle (one park, no polling, no thread per source; a delayed
// task wakes the waiter when due); a burst of messages costs one wake-up; round-robin: with k
// ready sources each is served at least once every k calls; a message is never missed.
//
// Memory ordering: a source's publish happens before the probe that reports it ([W1]/[N1],
// detail/select/poller_core.hpp, where the algorithm is described).
//
// After Go's select (one-shot form, randomised start) and crossbeam-channel's Select
// (register, park once, one wake-up), with epoll's ready list for the persistent form and
// libuv's loop (park until the earliest timer) for executors' delayed tasks.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <memory>
#include <stop_token>
#include <type_traits>
#include <utility>

#include "bounded_mpsc_queue.hpp"
#include "channel.hpp"
#include "detail/platform/futex.hpp"
#include "detail/select/poller_core.hpp"
#include "detail/select/sources.hpp"
#include "executor.hpp"
#include "fd_source.hpp"
#include "mpsc_queue.hpp"
#include "receiver.hpp"
#include "result.hpp"

namespace tether {

// Something a poller can watch: a channel endpoint, an mpsc_queue, a bounded_mpsc_queue, a
// receiver or an executor constructed with adopt_current_thread.
template <class Source>
concept watchable = requires(Source& s) {
  detail::rx_of(s);
  detail::identity_of(s);
};

// Names a watched source: equal for the same queue or executor, for a receiver and the queue
// it views, and for an endpoint and whatever it is moved into. Valid while the source is
// registered; may be reused after.
class source_id {
 public:
  constexpr source_id() noexcept = default;

  template <watchable Source>
  static source_id of(const Source& s) noexcept {
    return source_id(detail::identity_of(s));
  }
  template <watchable Source>
  bool is(const Source& s) const noexcept {
    return *this == of(s);
  }
  const void* address() const noexcept { return p_; }
  friend bool operator==(source_id, source_id) noexcept = default;

 private:
  friend class poller;
  explicit source_id(const void* p) noexcept : p_(p) {}
  const void* p_ = nullptr;
};

class poller {
 public:
  poller() = default;
  poller(const poller&) = delete;
  poller& operator=(const poller&) = delete;

  // Detaches every source. No call on this poller may be running.
  ~poller() = default;

  // ---- registration (any thread) ---------------------------------------------------------

  // Watches src: wait*() reports it when ready. Throws std::logic_error if src is already
  // watched (by this or another poller: one poller per source). Returns *this. Thread-safe.
  template <watchable Source>
  poller& add(Source& src) {
    using rx_type = std::remove_reference_t<decltype(detail::rx_of(src))>;
    register_entry(std::make_unique<detail::watch_entry<rx_type>>(detail::rx_of(src)), src);
    return *this;
  }

  // A receiver (often a temporary, e.g. router::replies()) is watched as the queue it views.
  template <class T>
  poller& add(const receiver<T>& r) {
    return add(detail::receiver_queue(r));
  }

  // Watches an executor constructed with adopt_current_thread: wait*() reports it when a
  // task is ready, when a delayed task (post_at / post_after) is due - the waiter parks until
  // the earliest one, no polling - and once it is stopped and drained; call ex.try_run() then
  // (once finished it stays ready: remove it). Only the executor's owner thread may wait on
  // this poller from now on (wait*() elsewhere throws wrong_thread). Throws std::logic_error
  // for an executor that runs its own thread, or one already watched. Returns *this.
  // Thread-safe.
  poller& add(executor& ex) {
    detail::check_adopting(ex, "add");
    register_entry(std::make_unique<detail::executor_entry>(ex), ex);
    return *this;
  }

  // As add(ex), with run_one*() driving it: it runs up to a batch (64) of the tasks that are
  // ready and delayed tasks that are due - ex.try_run(), bounded so that a busy executor takes
  // its turn with the other sources - with no lock held, and returns its id (also when that
  // ran nothing, e.g. only registered a delayed task). Once stopped and drained (every
  // accepted task ran or was cancelled, on_stop ran) run_one*() removes it and calls
  // on_closed(). Exceptions from tasks go to the executor's on_error as in ex.try_run().
  // Thread-safe.
  template <class OnClosed = detail::ignore_closed>
  poller& on(executor& ex, OnClosed on_closed = {}) {
    static_assert(std::is_invocable_v<OnClosed&>, "tether::poller::on: on_closed must be callable with no argument");
    detail::check_adopting(ex, "on");
    register_entry(std::make_unique<detail::executor_handler_entry<OnClosed>>(ex, std::move(on_closed)), ex);
    return *this;
  }

  // Watches src with handlers: run_one*() receives one message from it and calls
  // on_value(message&&); once src is closed and drained, run_one*() removes it and calls
  // on_closed(). Handlers run on the waiting thread with no lock held; they may call
  // add/remove. As add() otherwise.
  template <watchable Source, class OnValue, class OnClosed = detail::ignore_closed>
    requires requires(Source& s) { detail::rx_of(s).try_pop(); }  // has messages (not an executor)
  poller& on(Source& src, OnValue on_value, OnClosed on_closed = {}) {
    using rx_type = std::remove_reference_t<decltype(detail::rx_of(src))>;
    using value_type = std::remove_cvref_t<decltype(*detail::rx_of(src).try_pop())>;
    static_assert(std::is_invocable_v<OnValue&, value_type&&>,
                  "tether::poller::on: on_value must be callable with the source's message (T&&)");
    static_assert(std::is_invocable_v<OnClosed&>, "tether::poller::on: on_closed must be callable with no argument");
    register_entry(std::make_unique<detail::handler_entry<rx_type, OnValue, OnClosed>>(
                       detail::rx_of(src), std::move(on_value), std::move(on_closed)),
                   src);
    return *this;
  }

  template <class T, class OnValue, class OnClosed = detail::ignore_closed>
  poller& on(const receiver<T>& r, OnValue on_value, OnClosed on_closed = {}) {
    return on(detail::receiver_queue(r), std::move(on_value), std::move(on_closed));
  }

  // Stops watching; false if it was not watched. When it returns the poller no longer
  // touches the source: it waits out a message being taken from it at that moment (a move
  // of one message), never a handler. Messages still queued stay in the source, for
  // whoever receives from it next. Called from another thread, a handler may still be
  // running for a message taken just before: the handler object (and what it refers to)
  // must stay valid until that call returns; it is destroyed by whichever finishes last.
  // Thread-safe, also from a handler (its own source included).
  bool remove(source_id id) { return core_.remove(id.address()); }
  template <watchable Source>
  bool remove(const Source& src) {
    return remove(source_id::of(src));
  }

  bool contains(source_id id) const { return core_.contains(id.address()); }
  template <watchable Source>
  bool contains(const Source& src) const {
    return contains(source_id::of(src));
  }

  std::size_t size() const { return core_.size(); }

  // ---- waiting (one thread at a time) ----------------------------------------------------

  // A ready source, if any; never blocks: ok or empty.
  pop_result<source_id> try_wait() { return next_ready(detail::no_deadline, false, false); }

  // Blocks (spin briefly, then park) until a source is ready; returns it. With no sources it
  // waits for one to be added.
  source_id wait() { return *next_ready(detail::no_deadline, true, false); }

  // As wait(), giving up at the deadline: ok or timeout.
  template <class Rep, class Period>
  pop_result<source_id> wait_for(const std::chrono::duration<Rep, Period>& timeout) {
    return next_ready(detail::deadline_after(timeout), true, false);
  }
  template <class Clock, class Duration>
  pop_result<source_id> wait_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return next_ready(detail::to_steady(deadline), true, false);
  }

  // With a std::stop_token last: a stop request ends the wait at once with cancelled (a
  // source ready at that moment is still reported; a stop already requested looks once).
  pop_result<source_id> wait(std::stop_token token) { return next_ready(detail::no_deadline, true, false, &token); }
  template <class Rep, class Period>
  pop_result<source_id> wait_for(const std::chrono::duration<Rep, Period>& timeout, std::stop_token token) {
    return next_ready(detail::deadline_after(timeout), true, false, &token);
  }
  template <class Clock, class Duration>
  pop_result<source_id> wait_until(const std::chrono::time_point<Clock, Duration>& deadline, std::stop_token token) {
    return next_ready(detail::to_steady(deadline), true, false, &token);
  }

  // As the wait*() family; when the ready source was registered with on(), also receives
  // one message from it and calls its handler (or, closed and drained, removes it and calls
  // on_closed) before returning its id. Exceptions from handlers propagate; the message
  // counts as delivered.
  pop_result<source_id> try_run_one() { return next_ready(detail::no_deadline, false, true); }
  source_id run_one() { return *next_ready(detail::no_deadline, true, true); }
  template <class Rep, class Period>
  pop_result<source_id> run_one_for(const std::chrono::duration<Rep, Period>& timeout) {
    return next_ready(detail::deadline_after(timeout), true, true);
  }
  template <class Clock, class Duration>
  pop_result<source_id> run_one_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return next_ready(detail::to_steady(deadline), true, true);
  }
  // With a std::stop_token last, as wait(token).
  pop_result<source_id> run_one(std::stop_token token) { return next_ready(detail::no_deadline, true, true, &token); }
  template <class Rep, class Period>
  pop_result<source_id> run_one_for(const std::chrono::duration<Rep, Period>& timeout, std::stop_token token) {
    return next_ready(detail::deadline_after(timeout), true, true, &token);
  }
  template <class Clock, class Duration>
  pop_result<source_id> run_one_until(const std::chrono::time_point<Clock, Duration>& deadline, std::stop_token token) {
    return next_ready(detail::to_steady(deadline), true, true, &token);
  }

 private:
  template <class Source>
  void register_entry(std::unique_ptr<detail::poll_entry> e, const Source& src) {
    core_.add(std::move(e), detail::identity_of(src), detail::keep_alive_of(src));
  }

  pop_result<source_id> next_ready(detail::steady_time deadline, bool block, bool dispatch,
                                   const std::stop_token* token = nullptr) {
    pop_result<const void*> r = core_.next_ready(deadline, block, dispatch, token);
    if (!r) return r.status();
    return pop_result<source_id>(std::in_place, source_id(*r));
  }

  friend struct detail::coro_access;  // co_wait / co_run_one (coroutine.hpp) wait on core_
  detail::poller_core core_;
};

// ---- one-shot select --------------------------------------------------------------------

namespace detail {

// Which source to probe first: moves on with every call, so no position is favoured.
inline std::size_t select_start() noexcept {
  thread_local std::size_t next = 0;
  return next++;
}

template <class... Sources>
pop_result<std::size_t> select_until(steady_time deadline, bool block, Sources&... sources) {
  constexpr std::size_t n = sizeof...(Sources);
  static_assert(n > 0, "tether::select needs at least one source");
  // Fast path: a source is ready already; nothing is attached.
  const std::array<bool, n> ready_now{rx_ready(rx_of(sources))...};
  const std::size_t start = select_start() % n;
  for (std::size_t i = 0; i < n; ++i)
    if (ready_now[(start + i) % n]) return pop_result<std::size_t>(std::in_place, (start + i) % n);
  if (!block) return status::empty;
  poller p;
  (p.add(sources), ...);
  const std::array<source_id, n> ids{source_id::of(sources)...};
  auto r = p.wait_until(deadline);
  if (!r) return r.status();
  for (std::size_t i = 0; i < n; ++i)
    if (ids[i] == *r) return pop_result<std::size_t>(std::in_place, i);
  return status::empty;  // unreachable: the poller only watches these
}

}  // namespace detail

// Blocks until one of the sources is ready (a message waiting, or closed and drained) and
// returns its position in the argument list (a receiver may be passed as a temporary); when several are, the first from a start that
// moves on with every call. Receive from it yourself. Attaches to the sources only when none
// is ready at once; a source already in a poller cannot take part (std::logic_error).
// For a loop over the same sources, a poller is cheaper. The calling thread must be the only
// one receiving from these sources (and the owner of an executor among them: it is ready when
// a task is, or a delayed task is due; run ex.try_run() then).
template <class... Sources>
  requires(watchable<std::remove_reference_t<Sources>> && ...)
std::size_t select(Sources&&... sources) {
  return *detail::select_until(detail::no_deadline, true, sources...);
}

// As select(), never blocking: ok (the position) or empty.
template <class... Sources>
  requires(watchable<std::remove_reference_t<Sources>> && ...)
pop_result<std::size_t> try_select(Sources&&... sources) {
  return detail::select_until(detail::no_deadline, false, sources...);
}

// As select(), giving up at the deadline: ok (the position) or timeout.
template <class Rep, class Period, class... Sources>
  requires(watchable<std::remove_reference_t<Sources>> && ...)
pop_result<std::size_t> select_for(const std::chrono::duration<Rep, Period>& timeout, Sources&&... sources) {
  return detail::select_until(detail::deadline_after(timeout), true, sources...);
}
template <class Clock, class Duration, class... Sources>
  requires(watchable<std::remove_reference_t<Sources>> && ...)
pop_result<std::size_t> select_until(const std::chrono::time_point<Clock, Duration>& deadline, Sources&&... sources) {
  return detail::select_until(detail::to_steady(deadline), true, sources...);
}

}  // namespace tether
