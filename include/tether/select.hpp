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
// A source is a channel endpoint (its receiving side), a tether::mpsc_queue or a
// tether::bounded_mpsc_queue. It is ready when a message is waiting or when it is closed and
// drained (so the receiver sees closed; remove it then, or it stays ready). A source can also
// be a tether::executor constructed with adopt_current_thread: ready when a posted task is
// waiting, when a delayed task (post_at / post_after) is due, or once it is stopped and
// drained; its owner thread is then the one that waits on the poller, and runs the tasks
// (ex.poll(), or run_one*() for on(ex)).
//
// Who may call what:
//   add / on / remove / contains / size                 - any thread, also while another
//                                                          thread waits, and from handlers;
//   try_wait / wait* / try_run_one / run_one*            - one thread at a time (debug builds
//     throw std::logic_error otherwise). While a source is in a poller, that thread is the
//     only one that receives from it. While an executor is in a poller, that thread must be
//     the executor's owner (wrong_thread otherwise, in every build: it reads the owner-only
//     timer heap).
//   destroy                                              - no call may be running.
// A source must outlive its registration: after remove() returns the poller never touches it
// again (an executor too: remove it before destroying it, or let on() remove it once it has
// finished). A channel endpoint may be destroyed while watched (the poller keeps the pair alive;
// the endpoint's destructor closes it, so the source turns ready with closed).
//
// Design: zero CPU while idle - one park for the waiting thread, no polling, no thread per
// source. Each watched source's consumer parker carries a listener (detail/wait/parker.hpp). A
// push to the source publishes, then notifies its parker; the parker calls the listener,
// which flips the source's `signalled` flag and, if that was false, pushes the source onto
// the poller's ready list and wakes the waiting thread (detail/select/ready_list.hpp). A burst of
// pushes therefore costs one ready-list push, and the waiter looks only at sources that were
// signalled, never at all 1,000. The waiter keeps its candidates in a FIFO: it takes one off
// the front, probes it, returns it and puts it at the back if ready (it may hold more), or
// drops it. Only when none is ready does it park on the ready list.
//
// Executors: the listener hangs on the consumer parker of the executor's task queue (every
// post, submit, call, post_at / post_after and stop pushes to or closes that queue, which
// notifies it). A delayed task
// falling due notifies nobody, so watched executors are "timed" entries: the waiter parks
// until min(its caller's deadline, the earliest next delayed-task deadline of the watched
// executors) - read from the owner-only timer heap, which is why the waiter must be the
// owner - and when it wakes at that deadline it puts the executor among the candidates and
// reports it, not a timeout. No polling tick: an idle loop with a timer an hour away sleeps
// an hour. run_one*() on an on(ex) executor runs up to 64 tasks (a bounded ex.poll()), so a
// busy executor takes its turn like any other source.
//
// Fairness: round-robin. Sources that stay ready are served in turn, and a source that turns
// ready joins the back of the line: with k ready sources each is served at least once every
// k calls, however busy the others are.
//
// Memory ordering: the waiter clears `signalled` with an acq_rel exchange [W1] before it
// probes; the notifier's acq_rel exchange [N1] follows its publish. Either [N1]
// comes first, so [W1] reads it and the probe sees the publish, or [W1] comes first, so [N1]
// reads false and pushes the source again: a message is never missed. A new listener is
// covered by the parker handshake: the waiter takes heavy_fence() after attaching and before
// the source's first probe, pairing with the light fence before the notifier's listener
// load. Registration state (entry lists and flags) is under one mutex, taken by add/remove
// and by the waiter while it probes; never while a handler runs or the waiter parks, and
// never by a notifier. Executors add no atomics: their timer heap is read by the waiter,
// which is their owner (the heap's only user), and their queue is probed like any other.
//
// Removal: remove() detaches the listener (waiting out notifiers inside it, a few
// instructions each), then waits only for a message the waiter may be taking from that
// source at that very moment - never for a handler (nor for an executor's tasks: they run on
// its owner, which removing from a task must not wait for). Tasks still queued in a removed
// executor stay there for its next poll() / run().
//
// After Go's select (one-shot form, randomised start) and crossbeam-channel's Select
// (register, park once, one wake-up), with epoll's ready list for the persistent form and
// libuv's loop (park until the earliest timer) for executors' delayed tasks.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "bounded_mpsc_queue.hpp"
#include "channel.hpp"
#include "detail/queue/consumer_check.hpp"
#include "detail/queue/consumer_ops.hpp"
#include "detail/platform/fence.hpp"
#include "detail/platform/futex.hpp"
#include "detail/channel/direction.hpp"
#include "detail/wait/parker.hpp"
#include "detail/select/ready_list.hpp"
#include "detail/select/source_access.hpp"
#include "detail/platform/thread_record.hpp"
#include "errors.hpp"
#include "executor.hpp"
#include "mpsc_queue.hpp"
#include "result.hpp"

namespace tether {

namespace detail {

// ---- what a poller needs from each kind of source ----------------------------------------

// The receiving object: the queue itself, or the endpoint's receiving direction.
template <class T>
mpsc_queue<T>& rx_of(mpsc_queue<T>& q) noexcept { return q; }
template <class T>
bounded_mpsc_queue<T>& rx_of(bounded_mpsc_queue<T>& q) noexcept { return q; }
template <class S, class R>
channel_direction<R>& rx_of(const endpoint<S, R>& e) noexcept { return source_access::rx_direction(e); }

template <class T>
const void* identity_of(const mpsc_queue<T>& q) noexcept { return &q; }
template <class T>
const void* identity_of(const bounded_mpsc_queue<T>& q) noexcept { return &q; }
template <class S, class R>
const void* identity_of(const endpoint<S, R>& e) noexcept { return &source_access::rx_direction(e); }

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
// earliest, see poller::poll()). Its owner is the queue's consumer and the only thread that
// may read the timer heap, so only the owner may wait on a poller that watches it.
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

}  // namespace detail

// Something a poller can watch: a channel endpoint, an mpsc_queue, a bounded_mpsc_queue or
// an executor constructed with adopt_current_thread (its tasks and delayed tasks).
template <class Source>
concept watchable = requires(Source& s) {
  detail::rx_of(s);
  detail::identity_of(s);
};

// Names a watched source: equal for the same queue or executor, or for an endpoint and
// whatever it is moved into. Valid while the source is registered; may be reused after.
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

namespace detail {

// A registered source. The poller owns it; notifiers reach it through the source's parker
// until detach() (see remove()).
struct poll_entry : poll_node {
  poll_entry() { on_notify = &notify_poller; }
  poll_entry(const poll_entry&) = delete;
  poll_entry& operator=(const poll_entry&) = delete;
  virtual ~poll_entry() = default;

  // Is a message (or the end) waiting? The waiting thread, under the poller's mutex.
  virtual bool ready() = 0;
  // When ready() turns true with no notify (a watched executor's next delayed task), or
  // no_deadline. Asked only of entries created `timed`. The waiting thread, under the mutex.
  virtual steady_time next_deadline() { return no_deadline; }
  virtual bool has_handler() const noexcept { return false; }
  // Receives one message, ends the receive window, then calls the value handler. ok, empty
  // (nothing after all) or closed. The waiting thread, no lock held.
  virtual status dispatch() { return status::empty; }
  virtual void call_on_closed() {}

  void end_receive() noexcept {
    receiving.store(false, std::memory_order_seq_cst);
    receive_done->notify_all();
  }

  const void* id = nullptr;               // fixed at creation
  bool timed = false;                     // has a next_deadline(); fixed at creation
  parker* source_parker = nullptr;        // fixed at creation
  parker* receive_done = nullptr;         // the poller's; fixed at creation
  std::shared_ptr<void> keep_alive;       // a channel pair's state, so it outlives the entry
  // True while the waiting thread takes a message from the source outside the mutex: set
  // under the mutex, cleared by end_receive(); remove() waits for false.
  std::atomic<bool> receiving{false};

  // Guarded by the poller's mutex.
  bool pending = false;  // in the candidate FIFO
  bool removed = false;  // out of the registry, waiting to be freed
  bool fresh = true;     // not probed since its listener was attached
  int dispatching = 0;   // run_one calls running its handler
};

template <class Rx>
struct watch_entry : poll_entry {
  explicit watch_entry(Rx& r) : rx(&r) { source_parker = &rx_parker(r); }
  bool ready() override { return rx_ready(*rx); }
  Rx* rx;
};

struct ignore_closed {
  void operator()() const noexcept {}
};

template <class Rx, class OnValue, class OnClosed>
struct handler_entry final : watch_entry<Rx> {
  handler_entry(Rx& r, OnValue v, OnClosed c)
      : watch_entry<Rx>(r), on_value(std::move(v)), on_closed(std::move(c)) {}

  bool has_handler() const noexcept override { return true; }

  status dispatch() override {
    auto r = [this] {
      struct window_end {
        poll_entry& e;
        ~window_end() { e.end_receive(); }
      } end{*this};
      return this->rx->try_pop();
    }();
    if (!r) return r.status();
    std::invoke(on_value, std::move(*r));
    return status::ok;
  }
  void call_on_closed() override { std::invoke(on_closed); }

  OnValue on_value;
  OnClosed on_closed;
};

// A watched adopting executor (add()): ready when a task is, when a delayed task is due, or
// once closed and drained.
struct executor_entry : poll_entry {
  explicit executor_entry(executor& e) : ex(&e) {
    source_parker = &rx_parker(e);
    timed = true;
  }
  bool ready() override { return rx_ready(*ex); }
  steady_time next_deadline() override { return rx_deadline(*ex); }
  executor* ex;
};

// on(executor): run_one*() runs up to a batch of its tasks; closed once it has finished.
template <class OnClosed>
struct executor_handler_entry final : executor_entry {
  executor_handler_entry(executor& e, OnClosed c) : executor_entry(e), on_closed(std::move(c)) {}

  bool has_handler() const noexcept override { return true; }

  status dispatch() override {
    // Nothing is taken outside the mutex here - the owner's poll() takes the tasks - so the
    // window ends at once: a task that calls remove() on its own executor must not wait for
    // the very poll() that runs it.
    end_receive();
    source_access::executor_poll(*ex, executor_batch);  // due delayed tasks, ready tasks, the stop
    return ex->is_finished() ? status::closed : status::ok;
  }
  void call_on_closed() override { std::invoke(on_closed); }

  OnClosed on_closed;
};

// The waiting thread's candidates, oldest first. Room is made in add() (under the mutex,
// before anything is attached), so the waiter's push_back never allocates or throws.
class entry_fifo {
 public:
  std::size_t size() const noexcept { return count_; }
  void reserve(std::size_t n) {
    if (n <= ring_.size()) return;
    std::vector<poll_entry*> bigger(n < 2 * ring_.size() ? 2 * ring_.size() : n);
    for (std::size_t i = 0; i < count_; ++i) bigger[i] = at(i);
    ring_.swap(bigger);
    head_ = 0;
  }
  poll_entry* front() const noexcept { return ring_[head_]; }
  void push_back(poll_entry* e) noexcept {
    ring_[(head_ + count_) % ring_.size()] = e;
    ++count_;
  }
  void pop_front() noexcept {
    head_ = (head_ + 1) % ring_.size();
    --count_;
  }
  void pop_back() noexcept { --count_; }
  void erase(poll_entry* e) noexcept {
    std::size_t out = 0;
    for (std::size_t i = 0; i < count_; ++i)
      if (at(i) != e) ring_[(head_ + out++) % ring_.size()] = at(i);
    count_ = out;
  }

 private:
  poll_entry* at(std::size_t i) const noexcept { return ring_[(head_ + i) % ring_.size()]; }
  std::vector<poll_entry*> ring_;
  std::size_t head_ = 0;
  std::size_t count_ = 0;
};

}  // namespace detail

class poller {
 public:
  poller() = default;
  poller(const poller&) = delete;
  poller& operator=(const poller&) = delete;

  // Detaches every source. No call on this poller may be running.
  ~poller() {
    std::lock_guard lock(mutex_);
    for (detail::poll_entry* e : entries_) e->source_parker->detach(*e);
    for (detail::poll_node* n = ready_.take_all(); n != nullptr;) {
      auto* e = static_cast<detail::poll_entry*>(n);
      n = n->next_ready;
      if (e->removed) delete e;  // removed while signalled: freed here instead of by a scan
    }
    for (detail::poll_entry* e : entries_) delete e;
  }

  // ---- registration (any thread) ---------------------------------------------------------

  // Watches src: wait*() reports it when ready. Throws std::logic_error if src is already
  // watched (by this or another poller: one poller per source). Returns *this. Thread-safe.
  template <watchable Source>
  poller& add(Source& src) {
    using rx_type = std::remove_reference_t<decltype(detail::rx_of(src))>;
    register_entry(std::make_unique<detail::watch_entry<rx_type>>(detail::rx_of(src)), src);
    return *this;
  }

  // Watches an executor constructed with adopt_current_thread: wait*() reports it when a
  // task is ready, when a delayed task (post_at / post_after) is due - the waiter parks until
  // the earliest one, no polling - and once it is stopped and drained; call ex.poll() then
  // (once finished it stays ready: remove it). Only the executor's owner thread may wait on
  // this poller from now on (wait*() elsewhere throws wrong_thread). Throws std::logic_error
  // for an executor that runs its own thread, or one already watched. Returns *this.
  // Thread-safe.
  poller& add(executor& ex) {
    check_adopting(ex, "add");
    register_entry(std::make_unique<detail::executor_entry>(ex), ex);
    return *this;
  }

  // As add(ex), with run_one*() driving it: it runs up to a batch (64) of the tasks that are
  // ready and delayed tasks that are due - ex.poll(), bounded so that a busy executor takes
  // its turn with the other sources - with no lock held, and returns its id (also when that
  // ran nothing, e.g. only registered a delayed task). Once stopped and drained (every
  // accepted task ran or was cancelled, on_stop ran) run_one*() removes it and calls
  // on_closed(). Exceptions from tasks go to the executor's on_error as in ex.poll().
  // Thread-safe.
  template <class OnClosed = detail::ignore_closed>
  poller& on(executor& ex, OnClosed on_closed = {}) {
    static_assert(std::is_invocable_v<OnClosed&>, "tether::poller::on: on_closed must be callable with no argument");
    check_adopting(ex, "on");
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

  // Stops watching; false if it was not watched. When it returns the poller no longer
  // touches the source: it waits out a message being taken from it at that moment (a move
  // of one message), never a handler. Messages still queued stay in the source, for
  // whoever receives from it next. Called from another thread, a handler may still be
  // running for a message taken just before: the handler object (and what it refers to)
  // must stay valid until that call returns; it is destroyed by whichever finishes last.
  // Thread-safe, also from a handler (its own source included).
  bool remove(source_id id) {
    std::lock_guard lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if ((*it)->id != id.address()) continue;
      detail::poll_entry* e = *it;
      entries_.erase(it);
      remove_locked(e);
      return true;
    }
    return false;
  }
  template <watchable Source>
  bool remove(const Source& src) {
    return remove(source_id::of(src));
  }

  bool contains(source_id id) const {
    std::lock_guard lock(mutex_);
    for (const detail::poll_entry* e : entries_)
      if (e->id == id.address()) return true;
    return false;
  }
  template <watchable Source>
  bool contains(const Source& src) const {
    return contains(source_id::of(src));
  }

  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
  }

  // ---- waiting (one thread at a time) ----------------------------------------------------

  // A ready source, if any; never blocks: ok or empty.
  pop_result<source_id> try_wait() { return poll(detail::no_deadline, false, false); }

  // Blocks (spin briefly, then park) until a source is ready; returns it. With no sources it
  // waits for one to be added.
  source_id wait() { return *poll(detail::no_deadline, true, false); }

  // As wait(), giving up at the deadline: ok or timeout.
  template <class Rep, class Period>
  pop_result<source_id> wait_for(const std::chrono::duration<Rep, Period>& timeout) {
    return poll(detail::deadline_after(timeout), true, false);
  }
  template <class Clock, class Duration>
  pop_result<source_id> wait_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return poll(detail::to_steady(deadline), true, false);
  }

  // As the wait*() family; when the ready source was registered with on(), also receives
  // one message from it and calls its handler (or, closed and drained, removes it and calls
  // on_closed) before returning its id. Exceptions from handlers propagate; the message
  // counts as delivered.
  pop_result<source_id> try_run_one() { return poll(detail::no_deadline, false, true); }
  source_id run_one() { return *poll(detail::no_deadline, true, true); }
  template <class Rep, class Period>
  pop_result<source_id> run_one_for(const std::chrono::duration<Rep, Period>& timeout) {
    return poll(detail::deadline_after(timeout), true, true);
  }
  template <class Clock, class Duration>
  pop_result<source_id> run_one_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return poll(detail::to_steady(deadline), true, true);
  }

 private:
  template <class Source>
  void register_entry(std::unique_ptr<detail::poll_entry> e, const Source& src) {
    e->id = detail::identity_of(src);
    e->keep_alive = detail::keep_alive_of(src);
    e->list = &ready_;
    e->receive_done = &receive_done_;
    // Signalled before attach: the first notifier must not push it (add() does, below).
    e->signalled.store(true, std::memory_order_relaxed);  // relaxed: attach()'s seq_cst CAS publishes it
    std::lock_guard lock(mutex_);
    entries_.reserve(entries_.size() + 1);  // all allocation before attach: nothing to undo
    pending_.reserve(entries_.size() + 1);
    if (e->timed) timed_.reserve(timed_.size() + 1);
    if (!e->source_parker->attach(*e))
      throw std::logic_error(
          "tether::poller::add: this source is already watched by a poller; a source can be "
          "watched by one poller at a time (remove it from the other one first)");
    entries_.push_back(e.get());
    if (e->timed) timed_.push_back(e.get());
    // The source may hold messages already: the waiter probes it once (after heavy_fence()).
    ready_.push(*e.release());
  }

  // Precondition: e is out of entries_. Detaches it and frees it unless still referenced.
  void remove_locked(detail::poll_entry* e) {
    e->source_parker->detach(*e);  // no notifier is inside e's listener after this
    e->removed = true;
    if (e->timed) std::erase(timed_, e);
    if (e->pending) {
      pending_.erase(e);
      e->pending = false;
    }
    // The waiter may be taking a message from the source outside the mutex right now.
    detail::park_until(receive_done_, [e] { return !e->receiving.load(std::memory_order_seq_cst); },
                       detail::no_deadline);
    retire_locked(e);
  }

  // Frees a removed entry once neither the ready list nor a running handler holds it.
  void retire_locked(detail::poll_entry* e) noexcept {
    // relaxed: after detach() only this poller writes it, under the mutex.
    if (e->dispatching == 0 && !e->signalled.load(std::memory_order_relaxed)) delete e;
  }

  // Moves the signalled entries to the back of the candidate FIFO, oldest signal first.
  void collect_locked() {
    detail::poll_node* newest = ready_.take_all();
    detail::poll_node* list = nullptr;
    while (newest != nullptr) {  // reverse: the list is a stack
      detail::poll_node* next = newest->next_ready;
      newest->next_ready = list;
      list = newest;
      newest = next;
    }
    bool fence = false;
    while (list != nullptr) {
      auto* e = static_cast<detail::poll_entry*>(list);
      list = list->next_ready;  // read before clearing signalled: a notifier may push e again
      if (e->removed) {
        e->signalled.store(false, std::memory_order_relaxed);  // relaxed: no notifier after detach()
        retire_locked(e);
        continue;
      }
      // [W1] acq_rel, pairs with [N1] in notify_poller(). Acquire: the publish that signalled
      // e is visible to e->ready() below. Release: a notifier that reads our false (and so
      // pushes e again) sees that we are done with e->next_ready.
      e->signalled.exchange(false, std::memory_order_acq_rel);
      if (e->fresh) {
        e->fresh = false;
        fence = true;
      }
      if (!e->pending) {
        e->pending = true;
        pending_.push_back(e);
      }
    }
    // The waiter's half of the attach handshake (see the banner), once per batch.
    if (fence) detail::heavy_fence();
  }

  // Adds the timed entries whose deadline has come to the candidates: nothing notifies when
  // a delayed task falls due. Asks every timed entry (pending or not), so that a poller
  // watching an executor throws wrong_thread on any thread but its owner, every time.
  void collect_due_locked() {
    detail::steady_time now{};  // read once, and only if some entry has a deadline
    for (detail::poll_entry* e : timed_) {
      const detail::steady_time due = e->next_deadline();
      if (e->pending || due == detail::no_deadline) continue;
      if (now == detail::steady_time{}) now = std::chrono::steady_clock::now();
      if (due <= now) {
        e->pending = true;
        pending_.push_back(e);  // room reserved in add()
      }
    }
  }

  // The earliest deadline of the timed entries (no_deadline: none): the waiter parks no
  // longer than that.
  detail::steady_time earliest_deadline_locked() {
    detail::steady_time earliest = detail::no_deadline;
    for (detail::poll_entry* e : timed_) earliest = std::min(earliest, e->next_deadline());
    return earliest;
  }

  // The next ready candidate, kept at the back of the FIFO (it may hold more); drops the
  // candidates that are not ready. nullptr when none is.
  detail::poll_entry* next_ready_locked() {
    collect_locked();
    collect_due_locked();
    for (std::size_t n = pending_.size(); n != 0; --n) {
      detail::poll_entry* e = pending_.front();
      pending_.pop_front();
      pending_.push_back(e);
      if (e->ready()) return e;
      pending_.pop_back();
      e->pending = false;
    }
    return nullptr;
  }

  // The one deadline loop behind every wait*() and run_one*().
  //
  // Outline:
  //   1. under the mutex: collect signalled sources and timed ones that are due, probe
  //      candidates round-robin; none ready: note the earliest timed deadline;
  //   2. found one: return it, or (run_one, with handlers) receive and call outside the lock;
  //   3. none: park on the ready list (spin briefly first) until the caller's deadline or
  //      the earliest timed one, whichever comes first; woken, or past a timed deadline
  //      (that source is due: not a timeout), go to 1.
  pop_result<source_id> poll(detail::steady_time deadline, bool block, bool dispatch) {
    detail::consumer_check::scope scope(check_);
    for (;;) {
      detail::poll_entry* found = nullptr;
      bool run_handler = false;
      detail::steady_time due = detail::no_deadline;  // the earliest timed deadline
      {
        std::lock_guard lock(mutex_);
        found = next_ready_locked();
        if (found != nullptr && dispatch && found->has_handler()) {
          run_handler = true;
          ++found->dispatching;
          found->receiving.store(true, std::memory_order_relaxed);  // relaxed: read under the mutex or after end_receive()
        } else if (found == nullptr && block) {
          due = earliest_deadline_locked();
        }
      }
      if (found != nullptr) {
        const source_id id(found->id);
        if (run_handler) dispatch_one(*found);
        return pop_result<source_id>(std::in_place, id);
      }
      if (!block) return status::empty;
      if (!detail::park_until(ready_.wake, [this] { return ready_.has_work(); }, std::min(deadline, due))) {
        if (due <= deadline) continue;  // a timed source is due: step 1 reports it
        return status::timeout;
      }
    }
  }

  // Only an executor whose owner is a thread that drives it can be waited on by that thread.
  static void check_adopting(const executor& ex, const char* what) {
    if (detail::source_access::executor_runs_own_thread(ex))
      throw std::logic_error(std::string("tether::poller::") + what + ": executor '" +
                             (ex.name().empty() ? "(unnamed)" : ex.name()) +
                             "' runs its own thread, which waits for its tasks itself; a poller can only watch an "
                             "executor constructed with adopt_current_thread (whose owner then waits on the poller)");
  }

  void dispatch_one(detail::poll_entry& e) {
    struct finish {
      poller& p;
      detail::poll_entry& e;
      ~finish() {
        std::lock_guard lock(p.mutex_);
        if (--e.dispatching == 0 && e.removed) p.retire_locked(&e);
      }
    } guard{*this, e};
    if (e.dispatch() != status::closed) return;
    {
      std::lock_guard lock(mutex_);
      if (!e.removed) {
        std::erase(entries_, &e);
        remove_locked(&e);
      }
    }
    e.call_on_closed();
  }

  mutable std::mutex mutex_;
  std::vector<detail::poll_entry*> entries_;  // registered; guarded by mutex_
  std::vector<detail::poll_entry*> timed_;    // the registered entries that are timed; guarded by mutex_
  detail::entry_fifo pending_;                // the waiter's candidates; guarded by mutex_
  detail::ready_list ready_;                  // signalled entries, and the waiter's parker
  detail::parker receive_done_;               // remove() waits here for end_receive()
  detail::consumer_check check_;              // one waiting thread at a time (debug builds)
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
// returns its position in the argument list; when several are, the first from a start that
// moves on with every call. Receive from it yourself. Attaches to the sources only when none
// is ready at once; a source already in a poller cannot take part (std::logic_error).
// For a loop over the same sources, a poller is cheaper. The calling thread must be the only
// one receiving from these sources (and the owner of an executor among them: it is ready when
// a task is, or a delayed task is due; run ex.poll() then).
template <watchable... Sources>
std::size_t select(Sources&... sources) {
  return *detail::select_until(detail::no_deadline, true, sources...);
}

// As select(), never blocking: ok (the position) or empty.
template <watchable... Sources>
pop_result<std::size_t> try_select(Sources&... sources) {
  return detail::select_until(detail::no_deadline, false, sources...);
}

// As select(), giving up at the deadline: ok (the position) or timeout.
template <class Rep, class Period, watchable... Sources>
pop_result<std::size_t> select_for(const std::chrono::duration<Rep, Period>& timeout, Sources&... sources) {
  return detail::select_until(detail::deadline_after(timeout), true, sources...);
}
template <class Clock, class Duration, watchable... Sources>
pop_result<std::size_t> select_until(const std::chrono::time_point<Clock, Duration>& deadline, Sources&... sources) {
  return detail::select_until(detail::to_steady(deadline), true, sources...);
}

}  // namespace tether
