// SPDX-License-Identifier: MIT
// tether/detail/wait/parker.hpp - spin briefly, then sleep until notified: the one wait strategy.
//
// parker is an event count (after Dekker's handshake as used by folly's EventCount and
// Vyukov's eventcount): waiters announce themselves before their final re-check of the
// condition, and notifiers look for waiters only after publishing the condition. Either the
// waiter sees the condition, or the notifier sees the waiter; a wake-up cannot be lost.
// notify_*() costs one load when nobody waits, so producers pay no system call in the
// common case.
//
// Who may call what: any number of threads may wait and notify, concurrently.
//
// A queue's one consumer waits through park_until_streaming: a consumer that keeps catching up
// with a streaming producer pauses before it re-checks, instead of pulling the producer's line
// for every item.
//
// Memory ordering: the handshake needs a full fence between the waiter's announcement and
// its re-check, and between the notifier's publish and its waiters_ load. The waiter takes
// heavy_fence(), the notifier light_fence() (see detail/platform/fence.hpp): publishing stays
// a plain release store. The waiter's sleep/wake on epoch_ is ordered by the epoch bump
// [PK1] and the waiter's acquire load [PK2].
//
// Listener: a parker can carry one parker_listener, called by every notify_*() after it has
// woken its own waiters. A poller (select.hpp) hangs one on each watched queue's consumer
// parker so that one thread can sleep on many queues. The listener load shares the
// notifier's light_fence(): whoever attaches a listener and then takes heavy_fence() before
// re-checking the condition cannot miss a publish. Without a listener a notify pays one extra
// load, on the cache line it already reads. detach() waits out notifiers still inside the
// listener, so the listener may be destroyed as soon as it returns.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <stop_token>
#include <thread>

#include "../platform/config.hpp"
#include "../platform/fence.hpp"
#include "../platform/futex.hpp"

namespace tether::detail {

// How long (in CPU pauses) a waiter re-checks its condition before it sleeps. A hand-off
// between two running threads is far cheaper than a futex sleep and wake (plus a membarrier
// on the sleeping side): a short spin catches the first case and bounds the CPU spent in the
// second (the numbers: docs/design/queue_measurements.md).
inline constexpr int spin_limit = 1000;
// Then how many times it yields its core before it sleeps.
inline constexpr int spin_yields = 4;
// A sleep this long means the waiter was idle, not between two hand-offs: its next wait
// skips the spin (see park_until).
inline constexpr std::chrono::microseconds long_wait{100};
// After a spin that failed although the wait was short (the condition came while the waiter
// yielded or slept: the thread it waited for needed its core), this many waits sleep at once
// before one probes with a spin again; each failed probe doubles the count, up to the most.
inline constexpr std::uint16_t first_spin_skips = 1;
inline constexpr std::uint16_t max_spin_skips = 1024;
// The skip count after one more failed spin, given the last one set (0: the last spin caught).
inline constexpr std::uint16_t next_spin_skips(std::uint16_t last) noexcept {
  return last == 0 ? first_spin_skips : static_cast<std::uint16_t>(last < max_spin_skips / 2 ? last * 2 : max_spin_skips);
}
// Pauses between the first two re-checks, and the most between any two.
inline constexpr int spin_pause_first = 4;
inline constexpr int spin_pause_max = 8;
// Pauses before the first re-check of a consumer that keeps catching up with a streaming
// producer, and how many waits in a row must end at their first re-check before it counts
// as streaming: see park_until_streaming.
inline constexpr int stream_pause = 64;
inline constexpr std::uint8_t stream_quick_waits = 8;

class parker;

// What a parker calls on every notify while the listener is attached (see attach()).
// on_notify must not block and must not throw; it may run on any notifying thread.
struct parker_listener {
  void (*on_notify)(parker_listener& self) noexcept = nullptr;
};

// Which side pays for the handshake's fences (see fence.hpp).
enum class fences : std::uint8_t {
  // Notifier: compiler barrier; waiter: process-wide membarrier. For parkers notified far
  // more often than waited on: a queue's consumer side.
  asymmetric,
  // A full fence on both sides. For parkers waited on about as often as notified (a caller
  // waiting for its call's result): a membarrier per wait would cost more than it saves.
  symmetric,
};

class parker {
 public:
  parker() noexcept = default;
  explicit parker(fences f) noexcept : symmetric_(f == fences::symmetric) {}

  // Announces a waiter; returns the key to pass to wait(). The caller must re-check its
  // condition after this call and then either cancel_wait() or wait().
  std::uint32_t prepare_wait() noexcept {
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    // The waiter's half of the handshake (see fence.hpp).
    if (symmetric_) full_fence(); else heavy_fence();
    return epoch_.load(std::memory_order_seq_cst);
  }

  void cancel_wait() noexcept {
    // relaxed: only counts; a stale non-zero count costs a notifier one extra wake.
    waiters_.fetch_sub(1, std::memory_order_relaxed);
  }

  // Sleeps until notified after prepare_wait() (or spuriously). Returns false when the
  // deadline passed. Always retires the waiter announced by prepare_wait().
  bool wait(std::uint32_t key, steady_time deadline) noexcept {
    bool in_time = true;
    while (epoch_.load(std::memory_order_acquire) == key) {  // [PK2] acquire: pairs with [PK1] in notify()
      if (deadline != no_deadline && std::chrono::steady_clock::now() >= deadline) {
        in_time = false;
        break;
      }
      if (!futex_wait(epoch_, key, deadline)) {
        in_time = false;
        break;
      }
    }
    waiters_.fetch_sub(1, std::memory_order_relaxed);  // relaxed: see cancel_wait()
    return in_time;
  }

  // Wakes one waiter (or all). Call after publishing the condition (any release store).
  // Returns true if a waiter was asleep or about to sleep (a wake-up system call was made).
  bool notify_one() noexcept { return notify(1); }
  bool notify_all() noexcept { return notify(INT32_MAX); }

  bool has_waiters() const noexcept { return waiters_.load(std::memory_order_seq_cst) != 0; }

  // Whether the next park_until() spins first: the last wait was short, and no spin failed
  // lately (see after_sleep). relaxed, here and below: a hint that orders nothing; waiters may
  // race on it harmlessly. Written only when it changes, as it shares the line notifiers read.
  bool spin_hint() const noexcept {
    return spin_hint_.load(std::memory_order_relaxed) && spin_skips_.load(std::memory_order_relaxed) == 0;
  }
  void set_spin_hint(bool on) noexcept { store_if_changed(spin_hint_, on); }
  // A spin caught the condition in its pause phase: spinning pays here.
  void spin_caught() noexcept { store_if_changed(spin_skip_step_, std::uint16_t{0}); }
  // After a sleep: short - it was shorter than long_wait; spin_failed - a spin came before it
  // (or ended in its yields). A short wait that a spin did not catch means the thread we wait
  // for needed our core: the next first_spin_skips waits sleep at once (doubling for each
  // failed probe, up to max_spin_skips). A wait that skipped its spin counts one off.
  void after_sleep(bool short_wait, bool spun, bool spin_failed) noexcept {
    set_spin_hint(short_wait);
    if (spin_failed && short_wait) {
      const std::uint16_t next = next_spin_skips(spin_skip_step_.load(std::memory_order_relaxed));
      spin_skip_step_.store(next, std::memory_order_relaxed);
      spin_skips_.store(next, std::memory_order_relaxed);
    } else if (!spun) {
      if (const std::uint16_t left = spin_skips_.load(std::memory_order_relaxed); left > 0)
        spin_skips_.store(static_cast<std::uint16_t>(left - 1), std::memory_order_relaxed);
    }
  }

  // Attaches l: from now on every notify_*() also calls l.on_notify. Returns false (and
  // attaches nothing) when another listener is attached. A caller that then re-checks the
  // condition must take heavy_fence() first (the handshake). Any thread.
  bool attach(parker_listener& l) noexcept {
    parker_listener* expected = nullptr;
    return listener_.compare_exchange_strong(expected, &l, std::memory_order_seq_cst);
  }

  // Detaches l (if attached) and waits until no notifier is inside l.on_notify; after it
  // returns l is never called again and may be destroyed. Waits only for notifiers already
  // past their listener load (a few instructions each). Any thread; must not be called from
  // inside on_notify.
  void detach(parker_listener& l) noexcept;

 private:
  bool notify(int count) noexcept {
    // The notifier's half of the handshake (see fence.hpp).
    if (symmetric_) full_fence(); else light_fence();
    const bool waiting = waiters_.load(std::memory_order_seq_cst) != 0;
    if (waiting) {
      epoch_.fetch_add(1, std::memory_order_seq_cst);  // [PK1] seq_cst (a release, too): pairs with [PK2] in wait()
      futex_wake(epoch_, count);
    }
    // The one extra load without a listener; ordered after the publish by the same fence.
    if (listener_.load(std::memory_order_seq_cst) != nullptr) [[unlikely]]
      call_listener();
    return waiting;
  }

  void call_listener() noexcept;

  template <class V>
  static void store_if_changed(std::atomic<V>& a, V v) noexcept {
    if (a.load(std::memory_order_relaxed) != v) a.store(v, std::memory_order_relaxed);  // relaxed: hints
  }

  // Written by waiters (announce / retire), read by every notifier.
  std::atomic<std::uint32_t> waiters_{0};
  // Bumped by notifiers that found a waiter; the futex word waiters sleep on.
  std::atomic<std::uint32_t> epoch_{0};
  // Notifiers inside call_listener(): raised and lowered by notifiers, read by detach().
  std::atomic<std::uint32_t> listener_calls_{0};
  // Written by attach() / detach(), read by every notifier.
  std::atomic<parker_listener*> listener_{nullptr};
  const bool symmetric_ = false;  // fences::symmetric
  std::atomic<bool> spin_hint_{true};  // see spin_hint()
  std::atomic<std::uint16_t> spin_skips_{0};      // waits left that skip the spin (after_sleep)
  std::atomic<std::uint16_t> spin_skip_step_{0};  // the last count set; 0: the last spin caught
};

// park_until without the spin, for waits known to be long (a caller with tasks queued
// ahead of it; an owner whose recent idle periods outlasted the spin): on a machine with
// more runnable threads than cores, a spinning waiter takes the core the other side needs.
// Announce, re-check (the handshake), sleep until notified or the deadline; a spurious or
// stale wake-up goes round again. Returns ready()'s verdict.
template <class Ready>
bool park_now(parker& p, Ready&& ready, steady_time deadline) {
  for (;;) {
    const std::uint32_t key = p.prepare_wait();
    if (ready()) {
      p.cancel_wait();
      return true;
    }
    if (!p.wait(key, deadline)) return ready();
    if (ready()) return true;
  }
}

// The spin phase's pause loop (below), one step per re-check.
inline constexpr int next_spin_pause(int pause) noexcept { return pause < spin_pause_max ? pause * 2 : pause; }

// How many times spin_phase() checks its condition in its pause phase (it then yields a few
// times, checking again, before it parks).
constexpr int park_spin_checks() {
  int n = 0;
  for (int i = 0, pause = spin_pause_first; i < spin_limit; i += pause, pause = next_spin_pause(pause)) ++n;
  return n;
}

// What the spin phase of a wait ended with: ready in its pause phase, ready only once it
// yielded its core (the thread we waited for needed it), the deadline, or go to sleep.
enum class spun : std::uint8_t { ready, ready_after_yield, timeout, sleep };

// The spin phase: re-check ready() with CPU pauses (exponential backoff; most hand-offs end
// here), then yield the core a few times (a preempted peer may be waiting for it).
template <class Ready>
spun spin_phase(Ready& ready, steady_time deadline) {
  const bool timed = deadline != no_deadline;
  // Re-checks back off exponentially: each check may pull a cache line the other side is
  // writing, so polling it flat out would slow down the very producer we wait for.
  for (int i = 0, pause = spin_pause_first; i < spin_limit; i += pause, pause = next_spin_pause(pause)) {
    if (ready()) return spun::ready;
    if (timed && std::chrono::steady_clock::now() >= deadline) return spun::timeout;
    for (int k = 0; k < pause; ++k) cpu_relax();
  }
  // On an oversubscribed machine the thread we wait for may be runnable but not running:
  // offer it our core a few times before paying for a sleep.
  for (int i = 0; i < spin_yields; ++i) {
    if (ready()) return spun::ready_after_yield;
    if (timed && std::chrono::steady_clock::now() >= deadline) return spun::timeout;
    std::this_thread::yield();
  }
  return spun::sleep;
}

// Spin, then park_now(): the wait for callers that decide themselves whether to spin (see
// park()). ready() is called the same number of times in every spin phase, which the
// executor's idle wait counts on (detail/executor/executor_core.hpp). Returns ready()'s verdict.
template <class Ready>
bool park_spinning(parker& p, Ready&& ready, steady_time deadline) {
  switch (spin_phase(ready, deadline)) {
    case spun::ready:
    case spun::ready_after_yield: return true;
    case spun::timeout: return false;
    default: return park_now(p, ready, deadline);
  }
}

// Steps 2 and 3 of park_until (below): sleep, and set the spin hint from how long it took
// and whether a spin came first (spun).
template <class Ready>
bool park_after_spin(parker& p, Ready& ready, steady_time deadline, bool spun_first) {
  const auto t0 = std::chrono::steady_clock::now();
  const bool r = park_now(p, ready, deadline);
  p.after_sleep(std::chrono::steady_clock::now() - t0 < long_wait, spun_first, spun_first && r);
  return r;
}

// A spin phase that ended ready: in its pause phase the spin paid (the hint stays on); only
// after yielding, it failed (after_sleep, as if it had slept a short while).
inline void note_spin_ready(parker& p, spun s) noexcept {
  if (s == spun::ready) p.spin_caught();
  else p.after_sleep(true, true, true);
}

// The single deadline loop behind every blocking call. Returns ready()'s verdict: true as
// soon as it holds, false only when the deadline passed first.
//
// Outline:
//   1. spin (spin_phase) - unless the parker's last wait outlasted the spin by far: a waiter
//      that is mostly idle gains nothing from spinning, and on virtual machines a thread
//      that spins before each sleep also wakes slower (docs/design/queue_measurements.md) -
//      or a spin failed lately (see parker::after_sleep);
//   2. park_now(): prepare_wait(), re-check (the handshake), sleep until notified or the
//      deadline; woken: re-check; a spurious or stale wake-up goes round again;
//   3. a sleep shorter than long_wait turns the spin (back) on, a longer one off; a short
//      one after a spin, or a spin that ended only after yielding, skips the next spins.
template <class Ready>
bool park_until(parker& p, Ready&& ready, steady_time deadline) {
  const bool spin = p.spin_hint();
  if (spin) {
    switch (const spun s = spin_phase(ready, deadline)) {
      case spun::ready:
      case spun::ready_after_yield: note_spin_ready(p, s); return true;
      case spun::timeout: return false;
      default: break;
    }
  }
  return park_after_spin(p, ready, deadline, spin);
}

// What a queue's one consumer remembers between its waits to tell a stream from a
// ping-pong, and the policy itself (described at park_until_streaming), kept here so that an
// executor's owner, which waits through its own park, follows the same one. Consumer only:
// it lives on the consumer's line.
struct stream_watch {
  std::uint32_t taken_at_wait = 0;  // the consumer's count of items taken, at its last wait
  std::uint8_t quick_waits = 0;     // waits in a row that ended at their first re-check
  std::uint8_t since_probe = 0;     // waits outside a stream since the last probe (wraps)
  bool streaming = false;
  bool probing = false;             // this wait pauses as a probe (see before_wait)

  // Before a wait, given the items taken so far: true if it should pause() before its first
  // re-check. A wait that follows a single item ends the stream (a ping-pong).
  //
  // Every 256th wait outside a stream pauses too, as a probe. A consumer and a producer that
  // hand items over one at a time can each be slow because the other keeps pulling the line
  // it writes: the consumer then finds one item per wait, which keeps it out of a stream, and
  // the pair stays slow. A probe whose pause let work in enters the stream (a real ping-pong
  // leaves it again at the next wait); the probe costs one pause per 256 waits.
  bool before_wait(std::uint32_t taken) noexcept {
    if (streaming && taken - taken_at_wait < 2) streaming = false;
    taken_at_wait = taken;
    probing = !streaming && ++since_probe == 0;
    return streaming || probing;
  }
  static void pause() noexcept {
    for (int k = 0; k < stream_pause; ++k) cpu_relax();
  }
  // After a wait that spun: did it end at its first re-check?
  void after_wait(bool ended_at_first_check) noexcept {
    if (!ended_at_first_check) {
      quick_waits = 0;
      streaming = false;
    } else if (probing || (!streaming && ++quick_waits >= stream_quick_waits)) {
      streaming = true;
      quick_waits = 0;
    }
    probing = false;
  }
};

// park_until for a queue's one consumer waiting for its producers; taken counts the items it
// has taken so far (wrapping is fine). A consumer that keeps catching up with a streaming
// producer finds the queue empty after nearly every item, and re-checking at once pulls the
// line the producer is writing: the two hand one line back and forth per item, at a fraction
// of either side's speed. Once stream_quick_waits waits in a row ended at their first
// re-check (a producer in the middle of a push), the consumer counts as streaming: its waits
// pause stream_pause before re-checking, the producer fills lines ahead meanwhile, and the
// consumer takes a batch per line transfer. It stops streaming when a wait follows a single
// item (the pause bought no batch: a ping-pong, whose every reply answers one message) or
// when the pause was not enough for the next item to arrive.
template <class Ready>
bool park_until_streaming(parker& p, Ready&& ready, steady_time deadline, stream_watch& w, std::uint32_t taken) {
  const bool pause_first = w.before_wait(taken);
  if (!p.spin_hint()) {
    w.quick_waits = 0;
    return park_after_spin(p, ready, deadline, false);
  }
  if (pause_first && (deadline == no_deadline || std::chrono::steady_clock::now() < deadline)) stream_watch::pause();
  const bool at_first_check = ready();
  w.after_wait(at_first_check);
  if (at_first_check) return true;
  switch (const spun s = spin_phase(ready, deadline)) {
    case spun::ready:
    case spun::ready_after_yield: note_spin_ready(p, s); return true;
    case spun::timeout: return false;
    default: return park_after_spin(p, ready, deadline, true);
  }
}

// park_spinning when spin is true, park_now otherwise: no adaptation, the caller decides.
template <class Ready>
bool park(parker& p, Ready&& ready, steady_time deadline, bool spin) {
  return spin ? park_spinning(p, ready, deadline) : park_now(p, ready, deadline);
}

// Parkers picked by an object's address, for waits on an object that the last one to leave
// may no longer touch: static, so a leaver may notify after the object is gone. Two objects
// sharing a slot only cost a waiter a re-check. detach() waits here for call_listener() to
// finish; so does an executor's reply gate for its last poster (executor.hpp).
struct alignas(cache_line) exit_slot {
  parker exited;
};
inline exit_slot exit_slots[16];

inline parker& exit_parker_for(const void* object) noexcept {
  return exit_slots[(reinterpret_cast<std::uintptr_t>(object) / alignof(std::max_align_t)) % 16].exited;
}

inline parker& listener_exit_parker(const parker* p) noexcept { return exit_parker_for(p); }

// Outline: count in, re-load the listener, call it, count out, wake a waiting detach().
// detach() stores null and then waits for the count to drop to zero: a notifier that
// re-loads the old listener counted in before that store (both are seq_cst), so detach()
// sees its count.
inline void parker::call_listener() noexcept {
  listener_calls_.fetch_add(1, std::memory_order_seq_cst);
  if (parker_listener* l = listener_.load(std::memory_order_seq_cst)) l->on_notify(*l);
  // seq_cst: releases our use of the listener to detach()'s load of the count.
  if (listener_calls_.fetch_sub(1, std::memory_order_seq_cst) == 1) listener_exit_parker(this).notify_all();
}

inline void parker::detach(parker_listener& l) noexcept {
  parker_listener* expected = &l;
  listener_.compare_exchange_strong(expected, nullptr, std::memory_order_seq_cst);
  park_until(listener_exit_parker(this),
             [this] { return listener_calls_.load(std::memory_order_seq_cst) == 0; }, no_deadline);
}

// Cancellable waits: a std::stop_callback whose callable wakes a parker's waiters, so that a
// stop request ends a wait at once. The waiter adds `stop requested` to its condition; the
// stop state's flag is published before the callback runs, and the callback notifies like any
// other publisher (the same handshake). Built lazily, only by a wait that is about to block:
// registering costs a lock in the stop state.
struct notify_on_stop {
  parker* p;
  void operator()() const noexcept { p->notify_all(); }
};

class stop_wake {
 public:
  // st: null for the overloads without a token (then nothing is registered, nothing stops).
  explicit stop_wake(const std::stop_token* st) noexcept : st_(st) {}
  stop_wake(const stop_wake&) = delete;
  stop_wake& operator=(const stop_wake&) = delete;
  ~stop_wake() {
    if (cb_ != nullptr) cb_->~callback();
  }
  bool requested() const noexcept { return st_ != nullptr && st_->stop_requested(); }
  // Call before each wait on p: the first call registers the callback.
  void arm(parker& p) {
    if (st_ != nullptr && cb_ == nullptr) cb_ = ::new (static_cast<void*>(storage_)) callback(*st_, notify_on_stop{&p});
  }

 private:
  using callback = std::stop_callback<notify_on_stop>;
  const std::stop_token* st_;
  // In place, not a std::optional: g++ 12 with -fsanitize=address warns (maybe-uninitialized)
  // about an optional stop_callback it cannot see is disengaged.
  callback* cb_ = nullptr;
  alignas(callback) unsigned char storage_[sizeof(callback)];
};

// Short backoff for a thread that must let another finish a few instructions (a producer
// waiting for another to link the next block of mpsc_queue's ring): pause, then give the
// core away. Never sleeps.
class backoff {
 public:
  void snooze() noexcept {
    if (step_ < 6) {
      for (int i = 0; i < (1 << step_); ++i) cpu_relax();
      ++step_;
    } else {
      std::this_thread::yield();
    }
  }

 private:
  int step_ = 0;
};

}  // namespace tether::detail
