// SPDX-License-Identifier: MIT
// tether/detail/select/poller_core.hpp - the engine behind tether::poller: the registered
// entries, the candidate FIFO and the one deadline loop every wait*() and run_one*() uses.
//
// select.hpp holds the contract (what add/remove/wait promise); this holds how. Nothing here
// is public API.
//
// How a source becomes ready: each watched source's consumer parker carries a listener (an
// entry, detail/wait/parker.hpp). A push to the source publishes, then notifies its parker;
// the parker calls the listener, which flips the entry's `signalled` flag and, if that was
// false, pushes the entry onto the ready list and wakes the waiting thread (ready_list.hpp).
// A burst of pushes therefore costs one ready-list push, and the waiter looks only at entries
// that were signalled, never at every registered one. The waiter keeps its candidates in a
// FIFO: it takes one off the front, probes it, returns it and puts it at the back if ready
// (it may hold more), or drops it. Only when none is ready does it park on the ready list.
// Fairness follows: sources that stay ready are served in turn, and one that turns ready
// joins the back of the line.
//
// Executors: the listener hangs on the consumer parker of the executor's task queue. A
// delayed task falling due notifies nobody, so watched executors are "timed" entries: the
// waiter parks until min(its caller's deadline, the earliest delayed-task deadline of the
// watched executors) - read from the owner-only timer heap, which is why the waiter must be
// the owner - and when it wakes at that deadline it puts the executor among the candidates
// and reports it, not a timeout. No polling tick.
//
// Lifetime of an entry: created by add(), owned by the core. remove() takes it out of the
// registry under the mutex, detaches its listener (waiting out notifiers inside it) and
// waits for a message the waiter may be moving out of the source at that moment (the
// `receiving` window), never for a handler. It is freed, under the mutex, once nothing holds
// it: not on the ready list (`signalled`) and no run_one*() running its handler
// (`dispatching`). The waiter reads an entry only under the mutex, except while it
// dispatches that entry's handler (pinned by `dispatching`), so a removed entry is never
// touched after it is freed.
//
// Who may call what: add / remove / contains / size - any thread; next_ready - one waiting
// thread at a time (consumer_check in debug builds); destructor - no call running.
//
// Memory ordering: [W1]/[N1] - the waiter clears `signalled` with an acq_rel exchange [W1]
// before it probes; the notifier's acq_rel exchange [N1] (ready_list.hpp) follows its
// publish. Either [N1] comes first, so [W1] reads it and the probe sees the publish, or [W1]
// comes first, so [N1] reads false and pushes the entry again: a message is never missed. A
// new listener is covered by the parker handshake: the waiter takes heavy_fence() after
// attaching and before the source's first probe, pairing with the light fence before the
// notifier's listener load. Registration state (entry lists and flags) is under one mutex,
// taken by add/remove and by the waiter while it probes; never while a handler runs or the
// waiter parks, and never by a notifier.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <poll.h>
#include <time.h>

#include "../../executor.hpp"
#include "../../fd_source.hpp"
#include "../../result.hpp"
#include "../platform/fence.hpp"
#include "../platform/futex.hpp"
#include "../platform/wake_fd.hpp"
#include "../queue/consumer_check.hpp"
#include "../wait/parker.hpp"
#include "ready_list.hpp"
#include "source_access.hpp"
#include "sources.hpp"

namespace tether::detail {

// A registered source. The poller owns it; notifiers reach it through the source's parker
// until detach() (see poller_core::remove()).
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
  parker* receive_done = nullptr;         // the core's; fixed at creation
  fd_source* fd = nullptr;                // an fd_source's entry (its descriptor is polled); fixed at creation
  std::shared_ptr<void> keep_alive;       // a channel pair's state, so it outlives the entry
  // True while the waiting thread takes a message from the source outside the mutex: set
  // under the mutex, cleared by end_receive(); remove() waits for false.
  std::atomic<bool> receiving{false};

  // Guarded by the poller's mutex.
  bool pending = false;  // in the candidate FIFO
  bool removed = false;  // out of the registry, waiting to be freed
  bool fresh = true;     // not probed since its listener was attached
  int dispatching = 0;   // run_one calls running its handler (they hold the entry)
};

template <class Rx>
struct watch_entry : poll_entry {
  explicit watch_entry(Rx& r) : rx(&r) {
    source_parker = &rx_parker(r);
    if constexpr (std::is_same_v<Rx, fd_source>) fd = &r;
  }
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
    // Nothing is taken outside the mutex here - the owner's run takes the tasks - so the
    // window ends at once: a task that calls remove() on its own executor must not wait for
    // the very run that runs it.
    end_receive();
    source_access::executor_poll(*ex, executor_batch);  // due delayed tasks, ready tasks, the stop
    return ex->is_finished() ? status::closed : status::ok;
  }
  void call_on_closed() override { std::invoke(on_closed); }

  OnClosed on_closed;
};

// Only an executor whose owner is a thread that drives it can be waited on by that thread.
inline void check_adopting(const executor& ex, const char* what) {
  if (source_access::executor_runs_own_thread(ex))
    throw std::logic_error(std::string("tether::poller::") + what + ": executor '" +
                           (ex.name().empty() ? "(unnamed)" : ex.name()) +
                           "' runs its own thread, which waits for its tasks itself; a poller can only watch an "
                           "executor constructed with adopt_current_thread (whose owner then waits on the poller)");
}

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

// poll(2)'s bits for an fd_source's interest, and fd_events for what poll(2) reported.
inline short poll_mask(fd_events interest) noexcept {
  short m = 0;
  if (has(interest, fd_events::readable)) m |= POLLIN;
  if (has(interest, fd_events::writable)) m |= POLLOUT;
  return m;
}
inline fd_events events_of(short revents) noexcept {
  fd_events e = fd_events::none;
  if ((revents & POLLIN) != 0) e |= fd_events::readable;
  if ((revents & POLLOUT) != 0) e |= fd_events::writable;
  if ((revents & (POLLERR | POLLNVAL)) != 0) e |= fd_events::error;
  if ((revents & POLLHUP) != 0) e |= fd_events::hangup;
  return e;
}

// How a poller that watches descriptors is woken from ppoll(): a listener on the ready
// list's parker - every push to the ready list notifies that parker - signals a wake
// descriptor the waiter polls beside the watched ones. Once per sleep: only the notifier
// that finds `armed` set (and clears it) writes.
struct fd_wake final : parker_listener {
  fd_wake() { on_notify = &signal_if_armed; }
  static void signal_if_armed(parker_listener& l) noexcept {
    auto& w = static_cast<fd_wake&>(l);
    // [FW2] seq_cst: the notifier's half of [FW1]; the ready list's push came first.
    if (w.armed.exchange(false, std::memory_order_seq_cst)) w.fd.signal();
  }
  void poke() noexcept { signal_if_armed(*this); }
  wake_fd fd;
  // Set by the waiter just before it sleeps in ppoll(); cleared by the waiter when it wakes
  // and by the one notifier that signals.
  std::atomic<bool> armed{false};
};

// After this many turns that found a ready source without looking at the descriptors, the
// waiter polls them once without blocking: busy queues cannot starve a descriptor.
inline constexpr int fd_fairness_turns = 16;

class poller_core {
 public:
  poller_core() = default;
  poller_core(const poller_core&) = delete;
  poller_core& operator=(const poller_core&) = delete;

  // Detaches every source. No call may be running.
  ~poller_core() {
    std::lock_guard lock(mutex_);
    if (wake_) ready_.wake.detach(*wake_);
    for (poll_entry* e : entries_) e->source_parker->detach(*e);
    for (poll_node* n = ready_.take_all(); n != nullptr;) {
      auto* e = static_cast<poll_entry*>(n);
      n = n->next_ready;
      if (e->removed) delete e;  // removed while signalled: freed here instead of by a scan
    }
    for (poll_entry* e : entries_) delete e;
  }

  // Registers e under id. Throws std::logic_error if the source already has a listener (one
  // poller per source), having changed nothing.
  void add(std::unique_ptr<poll_entry> e, const void* id, std::shared_ptr<void> keep_alive) {
    e->id = id;
    e->keep_alive = std::move(keep_alive);
    e->list = &ready_;
    e->receive_done = &receive_done_;
    // Signalled before attach: the first notifier must not push it (add() does, below).
    e->signalled.store(true, std::memory_order_relaxed);  // relaxed: attach()'s seq_cst CAS publishes it
    std::lock_guard lock(mutex_);
    entries_.reserve(entries_.size() + 1);  // all allocation before attach: nothing to undo
    pending_.reserve(entries_.size() + 1);
    if (e->timed) timed_.reserve(timed_.size() + 1);
    if (e->fd != nullptr) {
      fds_.reserve(fds_.size() + 1);
      if (!wake_) {  // the first descriptor: from now on the waiter sleeps in ppoll()
        auto w = std::make_unique<fd_wake>();
        (void)ready_.wake.attach(*w);  // nothing else listens on the core's own parker
        wake_ = std::move(w);
      }
    }
    if (!e->source_parker->attach(*e))
      throw std::logic_error(
          "tether::poller::add: this source is already watched by a poller; a source can be "
          "watched by one poller at a time (remove it from the other one first)");
    entries_.push_back(e.get());
    if (e->timed) timed_.push_back(e.get());
    if (e->fd != nullptr) fds_.push_back(e.get());
    // The source may hold messages already: the waiter probes it once (after heavy_fence()).
    ready_.push(*e.release());
  }

  // Unregisters id; false if it was not registered. On return nothing here touches the
  // source again (see the banner).
  bool remove(const void* id) {
    std::lock_guard lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if ((*it)->id != id) continue;
      poll_entry* e = *it;
      entries_.erase(it);
      remove_locked(e);
      return true;
    }
    return false;
  }

  bool contains(const void* id) const {
    std::lock_guard lock(mutex_);
    for (const poll_entry* e : entries_)
      if (e->id == id) return true;
    return false;
  }

  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
  }

  // For an awaiting frame (coroutine.hpp): the parker every newly ready source notifies, its
  // condition, and whether the poller watches something that parker does not cover - a
  // descriptor (its wake-up hangs on that parker already) or an executor (a delayed task
  // falling due notifies nobody).
  parker& ready_parker() noexcept { return ready_.wake; }
  bool has_ready() const noexcept { return ready_.has_work(); }
  bool watches_fds_or_executors() const {
    std::lock_guard lock(mutex_);
    return !fds_.empty() || !timed_.empty();
  }

  // The one deadline loop behind every wait*() and run_one*(): the id of a ready source; ok,
  // or empty (!block) or timeout. dispatch: also run the handler of an entry that has one.
  //
  // Outline:
  //   1. under the mutex: collect signalled entries and timed ones that are due, probe
  //      candidates round-robin; found one: copy its id (the entry may be removed and freed
  //      once the mutex is released) and, to run its handler, pin it (`dispatching`); none
  //      ready: note the earliest timed deadline;
  //   2. found one: return its id, after (run_one, with a handler) receiving and calling the
  //      handler outside the lock;
  //   3. none: park on the ready list (spin briefly first) until the caller's deadline or
  //      the earliest timed one, whichever comes first; woken, or past a timed deadline
  //      (that source is due: not a timeout), go to 1.
  //
  // With descriptors watched (fd_source), step 3 sleeps in ppoll() on them and on the wake
  // descriptor instead (see poll_fds()), and a non-blocking call looks at them once before
  // it reports empty; every fd_fairness_turns found sources, they are looked at anyway.
  // token (may be null): a stop request ends a blocking wait with cancelled; a source ready
  // at that moment is still reported (the stop callback notifies the ready list's parker,
  // which also pokes a waiter in ppoll()).
  pop_result<const void*> next_ready(steady_time deadline, bool block, bool dispatch,
                                     const std::stop_token* token = nullptr) {
    consumer_scope scope(check_);
    bool looked = false;  // !block: the descriptors were polled once already
    stop_wake stop(token);
    for (;;) {
      if (fd_turns_ >= fd_fairness_turns) poll_fds(no_deadline, false);
      poll_entry* pinned = nullptr;  // only set while the entry is held by `dispatching`
      const void* id = nullptr;
      steady_time due = no_deadline;  // the earliest timed deadline
      bool with_fds = false;
      {
        std::lock_guard lock(mutex_);
        with_fds = !fds_.empty();
        if (poll_entry* found = next_candidate_locked(); found != nullptr) {
          if (with_fds) ++fd_turns_;
          id = found->id;
          if (dispatch && found->has_handler()) {
            pinned = found;
            ++found->dispatching;
            found->receiving.store(true, std::memory_order_relaxed);  // relaxed: read under the mutex or after end_receive()
          }
        } else if (block) {
          due = earliest_deadline_locked();
        }
      }
      if (id != nullptr) {
        if (pinned != nullptr) dispatch_one(*pinned);
        return pop_result<const void*>(std::in_place, id);
      }
      if (block && stop.requested()) return status::cancelled;
      if (block) stop.arm(ready_.wake);
      if (with_fds) {
        if (!block) {
          if (looked) return status::empty;
          looked = true;
          poll_fds(no_deadline, false);
          continue;
        }
        const steady_time until = std::min(deadline, due);
        poll_fds(until, true, &stop);
        if (!ready_.has_work() && std::chrono::steady_clock::now() >= until) {
          if (due <= deadline) continue;  // a timed source is due: step 1 reports it
          return status::timeout;
        }
        continue;
      }
      if (!block) return status::empty;
      if (!park_until(ready_.wake, [&] { return ready_.has_work() || stop.requested(); }, std::min(deadline, due))) {
        if (due <= deadline) continue;  // a timed source is due: step 1 reports it
        return status::timeout;
      }
    }
  }

 private:
  // Precondition: e is out of entries_. Detaches it and frees it unless still held.
  void remove_locked(poll_entry* e) {
    e->source_parker->detach(*e);  // no notifier is inside e's listener after this
    e->removed = true;
    if (e->timed) std::erase(timed_, e);
    if (e->fd != nullptr) {
      std::erase(fds_, e);
      wake_->poke();  // a waiter in ppoll() stops watching the descriptor (it never reports it)
    }
    if (e->pending) {
      pending_.erase(e);
      e->pending = false;
    }
    // The waiter may be taking a message from the source outside the mutex right now.
    park_until(receive_done_, [e] { return !e->receiving.load(std::memory_order_seq_cst); }, no_deadline);
    retire_locked(e);
  }

  // Frees a removed entry once neither the ready list nor a running handler holds it.
  void retire_locked(poll_entry* e) noexcept {
    // relaxed: after detach() only this core writes it, under the mutex.
    if (e->dispatching == 0 && !e->signalled.load(std::memory_order_relaxed)) delete e;
  }

  // Moves the signalled entries to the back of the candidate FIFO, oldest signal first.
  void collect_locked() {
    poll_node* newest = ready_.take_all();
    poll_node* list = nullptr;
    while (newest != nullptr) {  // reverse: the list is a stack
      poll_node* next = newest->next_ready;
      newest->next_ready = list;
      list = newest;
      newest = next;
    }
    bool fence = false;
    while (list != nullptr) {
      auto* e = static_cast<poll_entry*>(list);
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
    if (fence) heavy_fence();
  }

  // Adds the timed entries whose deadline has come to the candidates: nothing notifies when
  // a delayed task falls due. Asks every timed entry (pending or not), so that a poller
  // watching an executor throws wrong_thread on any thread but its owner, every time.
  void collect_due_locked() {
    steady_time now{};  // read once, and only if some entry has a deadline
    for (poll_entry* e : timed_) {
      const steady_time due = e->next_deadline();
      if (e->pending || due == no_deadline) continue;
      if (now == steady_time{}) now = std::chrono::steady_clock::now();
      if (due <= now) {
        e->pending = true;
        pending_.push_back(e);  // room reserved in add()
      }
    }
  }

  // The earliest deadline of the timed entries (no_deadline: none): the waiter parks no
  // longer than that.
  steady_time earliest_deadline_locked() {
    steady_time earliest = no_deadline;
    for (poll_entry* e : timed_) earliest = std::min(earliest, e->next_deadline());
    return earliest;
  }

  // The next ready candidate, kept at the back of the FIFO (it may hold more); drops the
  // candidates that are not ready. nullptr when none is.
  poll_entry* next_candidate_locked() {
    collect_locked();
    collect_due_locked();
    for (std::size_t n = pending_.size(); n != 0; --n) {
      poll_entry* e = pending_.front();
      pending_.pop_front();
      pending_.push_back(e);
      if (e->ready()) return e;
      pending_.pop_back();
      e->pending = false;
    }
    return nullptr;
  }

  // The waiter: polls the watched descriptors (blocking: until `until`, or until the wake
  // descriptor fires; else not at all) and hands what poll(2) reported to each fd_source,
  // which pushes its entry on the ready list for step 1 of next_ready().
  //
  // Outline:
  //   1. under the mutex: copy each fd entry's descriptor and interest, and pin the entry
  //      (`dispatching`: it is not freed while this call may still name it);
  //   2. blocking: arm the wake-up [FW1], heavy_fence(), re-check the ready list: a push
  //      before the fence is seen here (no sleep), one after it finds `armed` and signals;
  //   3. ppoll() (a signal, EINTR, counts as a wake-up: the caller loops);
  //   4. disarm; reset the wake descriptor if it fired;
  //   5. under the mutex: deliver the reported events to entries not removed meanwhile,
  //      unpin, free the entries removed meanwhile. A removed entry's descriptor may have been
  //      in the ppoll() that just returned; it is never reported.
  void poll_fds(steady_time until, bool block, const stop_wake* stop = nullptr) {
    fd_turns_ = 0;
    {
      std::lock_guard lock(mutex_);
      poll_set_.reserve(fds_.size() + 1);  // may throw: before anything is pinned
      pinned_.reserve(fds_.size());
      poll_set_.clear();
      pinned_.clear();
      for (poll_entry* e : fds_) {
        poll_set_.push_back(pollfd{e->fd->fd(), poll_mask(e->fd->interest()), 0});
        pinned_.push_back(e);
        ++e->dispatching;
      }
      poll_set_.push_back(pollfd{wake_->fd.fd(), POLLIN, 0});
    }
    timespec zero{0, 0}, left{0, 0};
    const timespec* timeout = &zero;
    if (block) {
      if (until != no_deadline) {
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(until - std::chrono::steady_clock::now()).count();
        if (ns > 0) {
          left.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
          left.tv_nsec = static_cast<long>(ns % 1'000'000'000);
        }
        timeout = &left;
      } else {
        timeout = nullptr;
      }
      // [FW1] seq_cst, then the heavy fence: pairs with the notifier's push, light fence and
      // [FW2] (the parker's handshake, with `armed` as the waiter's announcement).
      wake_->armed.store(true, std::memory_order_seq_cst);
      heavy_fence();
      if (ready_.has_work() || (stop != nullptr && stop->requested())) timeout = &zero;
    }
    const int n = sleep_in_poll(timeout);
    if (block) wake_->armed.store(false, std::memory_order_seq_cst);
    if (n > 0 && poll_set_.back().revents != 0) wake_->fd.arm(no_deadline);  // forget the signal
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < pinned_.size(); ++i) {
      poll_entry* e = pinned_[i];
      if (n > 0 && !e->removed && poll_set_[i].revents != 0) fd_access::deliver(*e->fd, events_of(poll_set_[i].revents));
      if (--e->dispatching == 0 && e->removed) retire_locked(e);
    }
    pinned_.clear();
  }

  // ppoll() on Linux (nanosecond timeouts); poll() rounded up to milliseconds elsewhere.
  int sleep_in_poll(const timespec* timeout) noexcept {
#if defined(__linux__)
    return ::ppoll(poll_set_.data(), static_cast<nfds_t>(poll_set_.size()), timeout, nullptr);
#else
    int ms = -1;
    if (timeout != nullptr) {
      const long long total = static_cast<long long>(timeout->tv_sec) * 1000 + (timeout->tv_nsec + 999'999) / 1'000'000;
      ms = total > 2'000'000'000LL ? 2'000'000'000 : static_cast<int>(total);
    }
    return ::poll(poll_set_.data(), static_cast<nfds_t>(poll_set_.size()), ms);
#endif
  }

  // Runs the handler of a pinned entry; closed and drained: unregisters it, then on_closed.
  // Unpins it at the end (freeing it if it was removed meanwhile).
  void dispatch_one(poll_entry& e) {
    struct unpin {
      poller_core& core;
      poll_entry& e;
      ~unpin() {
        std::lock_guard lock(core.mutex_);
        if (--e.dispatching == 0 && e.removed) core.retire_locked(&e);
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
  std::vector<poll_entry*> entries_;  // registered; guarded by mutex_
  std::vector<poll_entry*> timed_;    // the registered entries that are timed; guarded by mutex_
  entry_fifo pending_;                // the waiter's candidates; guarded by mutex_
  std::vector<poll_entry*> fds_;      // the registered fd_source entries; guarded by mutex_
  std::unique_ptr<fd_wake> wake_;     // made with the first fd entry (under mutex_), then fixed
  // The waiter's: the ppoll() set and the entries it names (filled under mutex_), and the
  // turns since it last looked at the descriptors.
  std::vector<pollfd> poll_set_;
  std::vector<poll_entry*> pinned_;
  int fd_turns_ = 0;
  ready_list ready_;                  // signalled entries, and the waiter's parker
  parker receive_done_;               // remove() waits here for end_receive()
  consumer_check check_;              // one waiting thread at a time (debug builds)
};

}  // namespace tether::detail
