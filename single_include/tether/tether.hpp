// SPDX-License-Identifier: MIT
// tether - single-header edition, generated from include/ by scripts/make_single_header.py.
// Do not edit: change the headers under include/ and regenerate.
#pragma once

// ---- tether/version.hpp -----------------------------------------------------
// tether/version.hpp - the library version (CMakeLists.txt reads it from here).

#define TETHER_VERSION_MAJOR 0
#define TETHER_VERSION_MINOR 1
#define TETHER_VERSION_PATCH 0
// One number for comparisons: major * 10000 + minor * 100 + patch.
#define TETHER_VERSION (TETHER_VERSION_MAJOR * 10000 + TETHER_VERSION_MINOR * 100 + TETHER_VERSION_PATCH)

// ---- tether/detail/platform/config.hpp --------------------------------------
// tether/detail/platform/config.hpp - cache-line size, CPU pause and the annotation seam.
//
// Nothing here changes what a header means: the macros below only add attributes that
// clang's -Wthread-safety understands and that other compilers never see.

#include <cstddef>
#include <new>


#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

// Clang thread-safety capability attributes (empty on other compilers).
#if defined(__clang__)
#define TETHER_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define TETHER_THREAD_ANNOTATION(x)
#endif
#define TETHER_CAPABILITY(name) TETHER_THREAD_ANNOTATION(capability(name))
#define TETHER_REQUIRES(...) TETHER_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define TETHER_ASSERT_CAPABILITY(x) TETHER_THREAD_ANNOTATION(assert_capability(x))
#define TETHER_GUARDED_BY(x) TETHER_THREAD_ANNOTATION(guarded_by(x))

namespace tether::detail {

// 64 bytes on every x86-64 and most AArch64 parts. std::hardware_destructive_interference_size
// is not used: g++ warns that its value may change between compiler versions (ABI hazard).
inline constexpr std::size_t cache_line = 64;

// One iteration of a spin-wait: tells the CPU we are spinning (saves power, frees the
// sibling hyper-thread) without giving up the time slice.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Asks for the cache line at p in a writable state ahead of a store: a line this core still
// holds shared (written earlier, read since by another core) is otherwise upgraded on the
// store itself, one round trip at a time, where no hardware prefetcher helps. A hint only.
inline void prefetch_for_write(const void* p) noexcept {
#if defined(__x86_64__)
  // prefetchw: every x86-64 decodes it (a no-op on CPUs without it); the builtin would emit it
  // only when the translation unit is compiled for a CPU that has it.
  asm volatile("prefetchw %0" ::"m"(*static_cast<const char*>(p)));
#elif defined(__GNUC__)
  __builtin_prefetch(p, 1, 3);
#endif
}

}  // namespace tether::detail

// ---- tether/detail/queue/consumer_check.hpp ---------------------------------
// tether/detail/queue/consumer_check.hpp - catches two threads consuming one queue at once.
//
// Single-consumer queues are only correct with one consumer at a time. In debug builds
// (NDEBUG not defined) every consumer call holds a consumer_scope; a second thread entering
// while another is inside throws std::logic_error naming both threads. In release builds the
// scope is empty and costs nothing.

#include <atomic>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace tether::detail {

#ifndef NDEBUG
class consumer_check {
 public:
  class scope {
   public:
    explicit scope(consumer_check& c) : check_(c) {
      const auto me = std::this_thread::get_id();
      std::thread::id expected{};
      // acq_rel: entering orders this consumer after the previous one's exit (release in ~scope).
      if (check_.owner_.compare_exchange_strong(expected, me, std::memory_order_acq_rel)) {
        outermost_ = true;
      } else if (expected != me) {
        std::ostringstream msg;
        msg << "tether: two threads consume one single-consumer queue at once (thread " << me
            << " entered while thread " << expected
            << " was consuming); consume from one thread at a time";
        throw std::logic_error(msg.str());
      }
    }
    ~scope() {
      // release: pairs with the acq_rel compare_exchange of the next consumer to enter.
      if (outermost_) check_.owner_.store(std::thread::id{}, std::memory_order_release);
    }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

   private:
    consumer_check& check_;
    bool outermost_ = false;
  };

 private:
  std::atomic<std::thread::id> owner_{};  // the thread inside a consumer call, if any
};
#else
class consumer_check {
 public:
  class scope {
   public:
    explicit scope(consumer_check&) noexcept {}
  };
};
#endif

}  // namespace tether::detail

// ---- tether/detail/platform/futex.hpp ---------------------------------------
// tether/detail/platform/futex.hpp - the platform seam: sleep on a 32-bit word until it changes.
//
// std::atomic<T>::wait has no timed form in C++20, and every blocking call in tether has a
// timed variant, so the parker needs "wait while *word == expected, until a deadline".
// On Linux that is the futex system call (FUTEX_WAIT_BITSET takes an absolute
// CLOCK_MONOTONIC deadline, which is what std::chrono::steady_clock reads on Linux).
// Elsewhere a small striped table of mutex + condition_variable does the same job.
//
// Contract (both implementations): futex_wait may return spuriously; callers re-check.

#include <chrono>
#include <cstdint>
#include <type_traits>

#if defined(__linux__)
#include <cerrno>
#include <ctime>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#include <condition_variable>
#include <functional>
#include <mutex>
#endif

namespace tether::detail {

using steady_time = std::chrono::steady_clock::time_point;

// "No deadline": wait until woken.
inline constexpr steady_time no_deadline = steady_time::max();

#if defined(__linux__)

// Sleeps while word == expected, until woken or the deadline passes.
// Returns false only when the deadline has passed.
inline bool futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       steady_time deadline) noexcept {
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  timespec ts{};
  timespec* tsp = nullptr;
  if (deadline != no_deadline) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
    if (ns < 0) ns = 0;
    ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    tsp = &ts;
  }
  long rc = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word),
                      FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, expected, tsp, nullptr,
                      FUTEX_BITSET_MATCH_ANY);
  return !(rc == -1 && errno == ETIMEDOUT);
}

inline void futex_wake(std::atomic<std::uint32_t>& word, int count) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE | FUTEX_PRIVATE_FLAG,
            count, nullptr, nullptr, 0);
}

#else  // portable fallback

struct futex_bucket {
  std::mutex mutex;
  std::condition_variable cv;
};

inline futex_bucket& bucket_for(const void* address) noexcept {
  static futex_bucket buckets[64];
  return buckets[std::hash<const void*>{}(address) % 64];
}

inline bool futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       steady_time deadline) noexcept {
  auto& b = bucket_for(&word);
  std::unique_lock lock(b.mutex);
  // The waker bumps the word before taking the bucket lock, so checking under the lock
  // cannot miss a wake-up.
  if (word.load(std::memory_order_seq_cst) != expected) return true;
  if (deadline == no_deadline) {
    b.cv.wait(lock);
    return true;
  }
  return b.cv.wait_until(lock, deadline) == std::cv_status::no_timeout;
}

inline void futex_wake(std::atomic<std::uint32_t>& word, int) noexcept {
  auto& b = bucket_for(&word);
  { std::lock_guard lock(b.mutex); }
  b.cv.notify_all();
}

#endif

// Converts any clock's time point to a steady_clock deadline (other clocks' deadlines are
// honoured as "this much time from now"). Saturates instead of overflowing: a deadline in
// the past is "now", one centuries away is no_deadline.
template <class Clock, class Duration>
steady_time to_steady(const std::chrono::time_point<Clock, Duration>& t) {
  using namespace std::chrono;
  if constexpr (std::is_same_v<Clock, steady_clock> && std::is_same_v<Duration, steady_clock::duration>) {
    return t;
  } else {
    const auto now = Clock::now();
    // Decide in floating point, where no time point can overflow.
    const double ahead = duration<double>(t.time_since_epoch()).count() -
                         duration<double>(now.time_since_epoch()).count();
    const auto steady_now = steady_clock::now();
    if (ahead <= 0) return steady_now;
    if (ahead > 3e9) return no_deadline;  // about 95 years
    return steady_now + ceil<steady_clock::duration>(t - now);  // |t - now| is small here
  }
}

// Converts a relative timeout to a deadline, saturating instead of overflowing.
template <class Rep, class Period>
steady_time deadline_after(const std::chrono::duration<Rep, Period>& d) {
  auto now = std::chrono::steady_clock::now();
  if (d <= d.zero()) return now;
  if (d >= std::chrono::hours(24 * 365 * 100)) return no_deadline;
  return now + std::chrono::ceil<std::chrono::steady_clock::duration>(d);
}

}  // namespace tether::detail

// ---- tether/detail/platform/fence.hpp ---------------------------------------
// tether/detail/platform/fence.hpp - the platform seam for asymmetric fences.
//
// The parker handshake (see parker.hpp) is Dekker's: the notifier stores its condition and
// then loads the waiter count; the waiter stores its announcement and then loads the
// condition. Both sides need a full fence between their store and their load. The
// notifier runs on every push, the waiter only when it is about to sleep, so tether moves
// the cost to the waiter: light_fence() is a compiler barrier, and heavy_fence() asks the
// kernel (Linux membarrier, private expedited) to run a full fence on every thread of the
// process. A pushing thread then pays no locked instruction for the handshake.
// Measured in bench/README.md: a seq_cst publish halved single-producer throughput.
//
// Where membarrier is missing or refused (other systems, old kernels, seccomp filters), both
// functions fall back to std::atomic_thread_fence(seq_cst), which is always correct.
//
// After folly's asymmetricLightBarrier / asymmetricHeavyBarrier.


#if defined(__linux__)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace tether::detail {

enum fence_mode_value : int { fence_unknown = 0, fence_membarrier = 1, fence_full = 2 };

// Written once (unknown -> membarrier or full) by the first heavy_fence(); read by all.
inline std::atomic<int> fence_mode{fence_unknown};

inline void full_fence() noexcept {
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wtsan"
#endif
  std::atomic_thread_fence(std::memory_order_seq_cst);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}

inline int init_fence_mode() noexcept {
  int mode = fence_full;
#if defined(__linux__) && defined(SYS_membarrier)
  const long supported = ::syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  if (supported > 0 && (supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
      ::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
    mode = fence_membarrier;
#endif
  int expected = fence_unknown;
  // acq_rel: a thread that sees fence_membarrier also sees the registration done.
  if (!fence_mode.compare_exchange_strong(expected, mode, std::memory_order_acq_rel))
    mode = expected;
  return mode;
}

// The notifier's side: between publishing a condition and loading the waiter count.
// The first call in the process registers for membarrier (one system call or two): a
// process whose consumers never sleep would otherwise pay a full fence on every push.
inline void light_fence() noexcept {
  // relaxed: a stale "unknown" or "full" only makes us take the (always correct) full fence.
  int mode = fence_mode.load(std::memory_order_relaxed);
  if (mode == fence_unknown) [[unlikely]]
    mode = init_fence_mode();
  if (mode == fence_membarrier)
    std::atomic_signal_fence(std::memory_order_seq_cst);  // keep the compiler from reordering
  else
    full_fence();
}

// The waiter's side: between announcing itself and re-checking the condition.
inline void heavy_fence() noexcept {
  int mode = fence_mode.load(std::memory_order_acquire);  // acquire: pairs with init_fence_mode()
  if (mode == fence_unknown) mode = init_fence_mode();
#if defined(__linux__) && defined(SYS_membarrier)
  if (mode == fence_membarrier) {
    ::syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    return;
  }
#endif
  full_fence();
}

}  // namespace tether::detail

// ---- tether/detail/wait/parker.hpp ------------------------------------------
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
// Memory ordering: the handshake needs a full fence between the waiter's announcement and
// its re-check, and between the notifier's publish and its waiters_ load. The waiter takes
// heavy_fence(), the notifier light_fence() (see fence.hpp): publishing stays a plain release
// store. The waiter's sleep/wake on epoch_ is release/acquire through the epoch bump.
//
// Listener: a parker can carry one parker_listener, called by every notify_*() after it has
// woken its own waiters. A poller (select.hpp) hangs one on each watched queue's consumer
// parker so that one thread can sleep on many queues. The listener load shares the
// notifier's light_fence(): whoever attaches a listener and then takes heavy_fence() before
// re-checking the condition cannot miss a publish. Without a listener a notify pays one extra
// load, on the cache line it already reads. detach() waits out notifiers still inside the
// listener, so the listener may be destroyed as soon as it returns.



namespace tether::detail {

// How long (in CPU pauses) a waiter re-checks its condition before it sleeps. A hand-off
// between two running threads takes about a microsecond; a futex sleep and wake costs tens
// of microseconds on virtual machines, plus a membarrier on the sleeping side. Spinning
// about 20-40 us catches the first case and bounds the CPU spent in the second.
inline constexpr int spin_limit = 1000;
// Then how many times it yields its core before it sleeps.
inline constexpr int spin_yields = 4;
// A sleep this long means the waiter was idle, not between two hand-offs: its next wait
// skips the spin (see park_until).
inline constexpr std::chrono::microseconds long_wait{100};
// Pauses between the first two re-checks, and the most between any two.
inline constexpr int spin_pause_first = 4;
inline constexpr int spin_pause_max = 8;

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
    while (epoch_.load(std::memory_order_acquire) == key) {  // acquire: pairs with the release of notify's epoch bump
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

  // Whether the next park_until() spins first (the last wait was short). relaxed: a hint that
  // orders nothing; waiters may race on it harmlessly. Written only when it changes, as it
  // shares the line notifiers read.
  bool spin_hint() const noexcept { return spin_hint_.load(std::memory_order_relaxed); }
  void set_spin_hint(bool on) noexcept {
    if (spin_hint_.load(std::memory_order_relaxed) != on) spin_hint_.store(on, std::memory_order_relaxed);
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
      epoch_.fetch_add(1, std::memory_order_seq_cst);
      futex_wake(epoch_, count);
    }
    // The one extra load without a listener; ordered after the publish by the same fence.
    if (listener_.load(std::memory_order_seq_cst) != nullptr) [[unlikely]]
      call_listener();
    return waiting;
  }

  void call_listener() noexcept;

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

// What the spin phase of a wait ended with.
enum class spun : std::uint8_t { ready, timeout, sleep };

// The spin phase: re-check ready() with CPU pauses (exponential backoff; most hand-offs end
// here), then yield the core a few times (a preempted peer may be waiting for it).
template <class Ready>
spun spin_phase(Ready& ready, steady_time deadline) {
  const bool timed = deadline != no_deadline;
  // Re-checks back off exponentially: each check may pull a cache line the other side is
  // writing, so polling it flat out would slow down the very producer we wait for.
  for (int i = 0, pause = spin_pause_first; i < spin_limit;
       i += pause, pause = pause < spin_pause_max ? pause * 2 : pause) {
    if (ready()) return spun::ready;
    if (timed && std::chrono::steady_clock::now() >= deadline) return spun::timeout;
    for (int k = 0; k < pause; ++k) cpu_relax();
  }
  // On an oversubscribed machine the thread we wait for may be runnable but not running:
  // offer it our core a few times before paying for a sleep.
  for (int i = 0; i < spin_yields; ++i) {
    if (ready()) return spun::ready;
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
    case spun::ready: return true;
    case spun::timeout: return false;
    default: return park_now(p, ready, deadline);
  }
}

// The single deadline loop behind every blocking call. Returns ready()'s verdict: true as
// soon as it holds, false only when the deadline passed first.
//
// Outline:
//   1. spin (spin_phase) - unless the parker's last wait outlasted the spin by far: a waiter
//      that is mostly idle gains nothing from spinning, and on virtual machines a thread
//      that spins before each sleep also wakes slower (measured in bench/README.md);
//   2. park_now(): prepare_wait(), re-check (the handshake), sleep until notified or the
//      deadline; woken: re-check; a spurious or stale wake-up goes round again;
//   3. a sleep shorter than long_wait turns the spin (back) on, a longer one off.
template <class Ready>
bool park_until(parker& p, Ready&& ready, steady_time deadline) {
  if (p.spin_hint()) {
    switch (spin_phase(ready, deadline)) {
      case spun::ready: return true;
      case spun::timeout: return false;
      default: break;
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  const bool r = park_now(p, ready, deadline);
  p.set_spin_hint(std::chrono::steady_clock::now() - t0 < long_wait);
  return r;
}

// park_spinning when spin is true, park_now otherwise: no adaptation, the caller decides.
template <class Ready>
bool park(parker& p, Ready&& ready, steady_time deadline, bool spin) {
  return spin ? park_spinning(p, ready, deadline) : park_now(p, ready, deadline);
}

// detach() waits on one of these (picked by the parker's address) for call_listener() to
// finish; static, so a notifier may touch it after the listener and its owner are gone.
struct alignas(cache_line) listener_exit_slot {
  parker exited;
};
inline listener_exit_slot listener_exit_slots[16];

inline parker& listener_exit_parker(const parker* p) noexcept {
  return listener_exit_slots[(reinterpret_cast<std::uintptr_t>(p) / alignof(parker)) % 16].exited;
}

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

// Short backoff for a thread that must let another finish a few instructions (a producer
// waiting for a segment install): pause, then give the core away. Never sleeps.
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

// ---- tether/detail/queue/sink.hpp -------------------------------------------
// tether/detail/queue/sink.hpp - how a consumer hands an item over to whoever takes it.
//
// Two kinds of taker: a drain() callback, which may pop from the same queue, so the item
// must have left the queue before the callback sees it; and the output iterator of
// try_pop_bulk / pop_bulk, which never uses the queue, so the item can go to it straight
// from its slot and leave the queue only once it is there - if the assignment throws, the
// item stays queued instead of being lost.

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
// move left it). Every single-item take and every non-re-entrant hand-over goes this way.
template <class T, class Sink, class Leave>
void move_out(T* p, Sink&& sink, Leave&& leave) {
  sink(std::move(*p));
  p->~T();
  leave();
}

// Hands the item at p to sink and destroys it; leave() moves the queue past its slot. For a
// non-re-entrant sink leave() runs after the sink (move_out: a throwing sink leaves the item
// queued); for any other, before (the sink may pop from the same queue).
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

// ---- tether/result.hpp ------------------------------------------------------
// tether/result.hpp - what a push or pop reports: a value, or why there is none.
//
// Every non-blocking and timed call in tether says exactly what happened, so a caller can
// tell "nothing yet" (empty), "gave up waiting" (timeout), "no room" (full) and "the other
// side is gone" (closed) apart. A failed push never consumes its argument: the value stays
// with the caller.

#include <optional>
#include <string>

namespace tether {

enum class status : std::uint8_t {
  ok,       // the value was pushed / a value was popped
  empty,    // try_pop: nothing ready right now (the queue is open)
  full,     // try_push: no room right now (the queue is open)
  timeout,  // *_for / *_until: the deadline passed first
  closed,   // closed (and, for pops, drained): no value will ever come / be accepted
};

constexpr const char* to_string(status s) noexcept {
  switch (s) {
    case status::ok: return "ok";
    case status::empty: return "empty";
    case status::full: return "full";
    case status::timeout: return "timeout";
    case status::closed: return "closed";
  }
  return "unknown";
}

// Outcome of a push. Converts to true only for status::ok. On any other outcome the value
// was not moved from: it is still the caller's.
class [[nodiscard]] push_result {
 public:
  constexpr push_result(tether::status s) noexcept : status_(s) {}  // NOLINT: implicit by design
  constexpr explicit operator bool() const noexcept { return status_ == tether::status::ok; }
  constexpr tether::status status() const noexcept { return status_; }
  constexpr bool is_full() const noexcept { return status_ == tether::status::full; }
  constexpr bool is_timeout() const noexcept { return status_ == tether::status::timeout; }
  constexpr bool is_closed() const noexcept { return status_ == tether::status::closed; }
  friend constexpr bool operator==(push_result a, push_result b) noexcept = default;

 private:
  tether::status status_;
};

// Outcome of a pop or receive: holds a value (status ok) or says why not (empty, timeout,
// closed). Reads like std::optional: `if (auto r = q.pop_for(10ms)) use(*r);`.
template <class T>
class [[nodiscard]] pop_result {
 public:
  pop_result(tether::status s) noexcept : status_(s) {}  // NOLINT: implicit by design
  pop_result(std::in_place_t, T&& v) : value_(std::move(v)), status_(tether::status::ok) {}
  template <class... Args>
  explicit pop_result(std::in_place_t, Args&&... args)
      : value_(std::in_place, std::forward<Args>(args)...), status_(tether::status::ok) {}

  bool has_value() const noexcept { return status_ == tether::status::ok; }
  explicit operator bool() const noexcept { return has_value(); }
  tether::status status() const noexcept { return status_; }
  bool is_empty() const noexcept { return status_ == tether::status::empty; }
  bool is_timeout() const noexcept { return status_ == tether::status::timeout; }
  bool is_closed() const noexcept { return status_ == tether::status::closed; }

  T& operator*() & noexcept { return *value_; }
  const T& operator*() const& noexcept { return *value_; }
  T&& operator*() && noexcept { return std::move(*value_); }
  T* operator->() noexcept { return &*value_; }
  const T* operator->() const noexcept { return &*value_; }

  // The value; throws std::logic_error naming the status when there is none.
  T& value() & { check(); return *value_; }
  T&& value() && { check(); return std::move(*value_); }

  // Hands the value over as an optional (empty unless status ok).
  std::optional<T> take() && { return std::move(value_); }

 private:
  void check() const {
    if (!has_value())
      throw std::logic_error(std::string("tether::pop_result::value(): no value, status is ") +
                             to_string(status_));
  }

  std::optional<T> value_;
  tether::status status_;
};

}  // namespace tether

// ---- tether/detail/queue/consumer_ops.hpp -----------------------------------
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

// ---- tether/bounded_mpsc_queue.hpp ------------------------------------------
// tether/bounded_mpsc_queue.hpp - fixed-capacity ring: many producers, one consumer,
// backpressure.
//
// Who may call what:
//   try_push / push / push_for / push_until / try_emplace / close / is_closed /
//   size_approx / capacity                                       - any thread, concurrently.
//   try_pop / pop / pop_for / pop_until / *_bulk / drain          - one consumer thread at a
//     time (debug builds throw std::logic_error when two threads consume at once).
//
// Each slot carries a sequence number saying whose turn it is: `pos` means free for the
// producer of position pos, `pos + 1` means holding that producer's item, and the consumer
// hands the slot to the next lap by storing `pos + capacity`. Producers claim positions with
// one compare-and-swap on the tail, so try_push can fail fast when the slot is still full.
// A full queue parks blocked producers. The consumer wakes them once it has freed a batch of
// slots (capacity / 8), or as soon as it runs out of items: waking them for every freed slot
// would make them all race for it and park again, a system call each time.
//
// Memory ordering: a producer's release store of `pos + 1` publishes the item to the
// consumer's acquire load; the consumer's release store of `pos + capacity` hands the
// emptied slot to the producer's acquire load. Waking parked threads is the parker's
// handshake (detail/wait/parker.hpp).
//
// After D. Vyukov's bounded MPMC queue (per-slot sequence numbers), with one consumer,
// close, and parking instead of spinning.

#include <bit>
#include <memory>


namespace tether {

template <class T>
class bounded_mpsc_queue : public detail::consumer_ops<bounded_mpsc_queue<T>, T> {
  friend class detail::consumer_ops<bounded_mpsc_queue<T>, T>;
  static_assert(std::is_nothrow_destructible_v<T>, "tether::bounded_mpsc_queue<T>: T's destructor must not throw");
  static_assert(std::is_move_constructible_v<T>, "tether::bounded_mpsc_queue<T>: T must be move-constructible");

 public:
  using value_type = T;

  // Holds at least `capacity` items: the ring is rounded up to a power of two (at least 2);
  // capacity() says how many. Throws std::invalid_argument for 0.
  explicit bounded_mpsc_queue(std::size_t capacity)
      : mask_(ring_size(capacity) - 1), slots_(std::make_unique<slot[]>(mask_ + 1)) {
    for (std::size_t i = 0; i <= mask_; ++i) slots_[i].seq.store(i, std::memory_order_relaxed);
  }
  bounded_mpsc_queue(const bounded_mpsc_queue&) = delete;
  bounded_mpsc_queue& operator=(const bounded_mpsc_queue&) = delete;

  // Destroys the items still queued (no producer or consumer may be running). Its loads are
  // relaxed: with no other thread left, they only read this thread's view.
  ~bounded_mpsc_queue() {
    const std::uint64_t tail = tail_.load(std::memory_order_relaxed) >> index_shift;
    for (std::uint64_t pos = head_; pos != tail; ++pos) {
      slot& s = slots_[pos & mask_];
      if (s.seq.load(std::memory_order_relaxed) == pos + 1 && !s.abandoned) s.value()->~T();
    }
  }

  // ---- producers (any thread) ------------------------------------------------------------

  // Enqueues v if there is room; never blocks. status ok, full or closed; on full or closed
  // v is untouched (not moved from). Thread-safe.
  push_result try_push(T&& v) { return try_emplace(std::move(v)); }
  push_result try_push(const T& v) { return try_emplace(v); }

  // Constructs an item in place if there is room; never blocks. As try_push. If T's
  // constructor throws, the slot is skipped and the exception propagates.
  template <class... Args>
  push_result try_emplace(Args&&... args) {
    std::uint64_t pos;
    const status s = claim(pos);
    if (s == status::ok) publish(pos, std::forward<Args>(args)...);
    return s;
  }

  // Enqueues v, parking while the queue is full. Returns false if the queue is (or becomes)
  // closed, with v untouched. Thread-safe.
  bool push(T&& v) { return push_until_steady(std::move(v), detail::no_deadline) == status::ok; }
  bool push(const T& v) { return push_until_steady(v, detail::no_deadline) == status::ok; }

  // As push(), giving up at the deadline: status ok, timeout or closed; on timeout or closed
  // v is untouched. Thread-safe.
  template <class U, class Rep, class Period>
  push_result push_for(U&& v, const std::chrono::duration<Rep, Period>& timeout) {
    return push_until_steady(std::forward<U>(v), detail::deadline_after(timeout));
  }
  template <class U, class Clock, class Duration>
  push_result push_until(U&& v, const std::chrono::time_point<Clock, Duration>& deadline) {
    return push_until_steady(std::forward<U>(v), detail::to_steady(deadline));
  }

  // Closes the queue: later pushes fail (handing their item back) and blocked producers wake
  // with status::closed; the consumer still receives everything pushed before, then sees
  // closed. Returns true if this call closed it. Thread-safe; never blocks.
  bool close() noexcept {
    const std::uint64_t prev = tail_.fetch_or(closed_bit, std::memory_order_seq_cst);
    closed_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    consumer_wait_.notify_all();
    space_wait_.notify_all();
    return (prev & closed_bit) == 0;
  }

  bool is_closed() const noexcept { return (tail_.load(std::memory_order_seq_cst) & closed_bit) != 0; }

  std::size_t capacity() const noexcept { return mask_ + 1; }

  // Items pushed and not yet popped; stale as soon as it returns. Thread-safe.
  std::size_t size_approx() const noexcept {
    // relaxed: a statistic; no decision that needs ordering is made from it.
    const std::uint64_t tail = tail_.load(std::memory_order_relaxed) >> index_shift;
    const std::uint64_t head = head_published_.load(std::memory_order_relaxed);
    return tail > head ? static_cast<std::size_t>(tail - head) : 0;
  }
  bool empty_approx() const noexcept { return size_approx() == 0; }

  // Consumer side (one thread at a time), from detail::consumer_ops: try_pop, pop, pop_for,
  // pop_until, try_pop_bulk, pop_bulk, drain.

 private:
  using head_state = detail::head_state;

  static constexpr std::uint64_t closed_bit = 1;  // bit 0 of tail_
  static constexpr unsigned index_shift = 1;
  static constexpr std::uint64_t index_step = std::uint64_t{1} << index_shift;

  struct slot {
    // Turn counter (see the banner). Written by the producer that claimed the slot and by
    // the consumer; read by both.
    std::atomic<std::uint64_t> seq{0};
    // Set by a producer whose constructor threw, before its seq store; read by the consumer.
    bool abandoned = false;
    alignas(T) unsigned char storage[sizeof(T)];
    T* value() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
  };

  static std::size_t ring_size(std::size_t capacity) {
    if (capacity == 0) throw std::invalid_argument("tether::bounded_mpsc_queue: capacity must be at least 1");
    if (capacity > (std::size_t{1} << 40)) throw std::invalid_argument("tether::bounded_mpsc_queue: capacity too large");
    return std::bit_ceil(capacity < 2 ? std::size_t{2} : capacity);
  }

  // Claims the tail position if its slot is free. status ok (pos set), full or closed.
  status claim(std::uint64_t& pos) {
    // relaxed: the slot's seq (acquire) is what orders our access to the slot.
    std::uint64_t tail = tail_.load(std::memory_order_relaxed);
    for (;;) {
      if (tail & closed_bit) return status::closed;
      pos = tail >> index_shift;
      slot& s = slots_[pos & mask_];
      // acquire: pairs with the consumer's store of pos (the slot's previous item is gone).
      const std::uint64_t seq = s.seq.load(std::memory_order_acquire);
      const auto turn = static_cast<std::int64_t>(seq - pos);
      if (turn == 0) {
        // seq_cst claim; on failure relaxed (re-read as above).
        if (tail_.compare_exchange_weak(tail, tail + index_step, std::memory_order_seq_cst,
                                        std::memory_order_relaxed))
          return status::ok;
      } else if (turn < 0) {
        // The slot still holds the item from one lap ago. Full - unless the tail moved on.
        const std::uint64_t now = tail_.load(std::memory_order_relaxed);  // relaxed: as above
        if (now == tail) return (now & closed_bit) ? status::closed : status::full;
        tail = now;
      } else {
        tail = tail_.load(std::memory_order_relaxed);  // another producer claimed pos
      }
    }
  }

  template <class... Args>
  void publish(std::uint64_t pos, Args&&... args) {
    slot& s = slots_[pos & mask_];
    try {
      ::new (static_cast<void*>(s.storage)) T(std::forward<Args>(args)...);
    } catch (...) {
      s.abandoned = true;
      s.seq.store(pos + 1, std::memory_order_release);  // release: as below
      consumer_wait_.notify_one();
      throw;
    }
    // release: publishes the item; pairs with the consumer's acquire in probe(). The parker
    // handshake's fence is in notify_one() (light) and prepare_wait() (heavy).
    s.seq.store(pos + 1, std::memory_order_release);
    consumer_wait_.notify_one();
  }

  // The condition a blocked producer waits for: the tail slot is free, or closed.
  bool tail_ready() const noexcept {
    const std::uint64_t tail = tail_.load(std::memory_order_seq_cst);
    if (tail & closed_bit) return true;
    const std::uint64_t pos = tail >> index_shift;
    return static_cast<std::int64_t>(slots_[pos & mask_].seq.load(std::memory_order_seq_cst) - pos) >= 0;
  }

  template <class U>
  push_result push_until_steady(U&& v, detail::steady_time deadline) {
    for (;;) {
      std::uint64_t pos;
      const status s = claim(pos);
      if (s == status::ok) {
        publish(pos, std::forward<U>(v));
        return status::ok;
      }
      if (s == status::closed) return s;
      if (!detail::park_until(space_wait_, [this] { return tail_ready(); }, deadline)) {
        return status::timeout;
      }
    }
  }

  // ---- consumer primitives (see detail/queue/consumer_ops.hpp) ----

  slot& head_slot() noexcept { return slots_[head_ & mask_]; }

  head_state probe() noexcept {
    // acquire: pairs with the release publish.
    if (head_slot().seq.load(std::memory_order_acquire) == head_ + 1) return head_state::ready;
    wake_producers();  // out of items: hand over whatever room we made
    // Not ready. The tail line is hot with producers: read it only once closed. (A close
    // that has claimed the tail but not yet set closed_ reads as "not closed yet".)
    if (!closed_.load(std::memory_order_seq_cst)) return head_state::empty;
    const std::uint64_t tail = tail_.load(std::memory_order_seq_cst);
    return (tail >> index_shift) != head_ ? head_state::in_flight : head_state::closed;
  }

  bool head_ready() noexcept {
    if (head_slot().seq.load(std::memory_order_seq_cst) == head_ + 1) return true;
    // The tail line is hot with producers: read it only once closed.
    if (!closed_.load(std::memory_order_seq_cst)) return false;
    const std::uint64_t tail = tail_.load(std::memory_order_seq_cst);
    return (tail >> index_shift) == head_;
  }

  // Hands the head slot to the producer one lap ahead and moves on.
  void release_head(slot& s) noexcept {
    s.abandoned = false;
    // release: hands the slot over; pairs with claim()'s acquire. The parker handshake's
    // fence is in notify_all() (light) and prepare_wait() (heavy).
    s.seq.store(head_ + mask_ + 1, std::memory_order_release);
    ++head_;
    head_published_.store(head_, std::memory_order_relaxed);  // relaxed: only size_approx() reads it
    if (++freed_since_wake_ >= wake_batch_) wake_producers();
  }

  void wake_producers() noexcept {
    if (freed_since_wake_ == 0) return;
    freed_since_wake_ = 0;
    space_wait_.notify_all();
  }

  std::optional<T> take() {
    slot& s = head_slot();
    if (s.abandoned) {
      release_head(s);
      return std::nullopt;
    }
    std::optional<T> v;
    // if this throws, the item stays queued
    detail::move_out(s.value(), [&](T&& item) { v.emplace(std::move(item)); }, [&] { release_head(s); });
    return v;
  }

  template <class Sink>
  std::size_t take_ready(std::size_t max, Sink&& sink) {
    std::size_t n = 0;
    while (n < max) {
      slot& s = head_slot();
      // acquire: pairs with the release publish.
      if (s.seq.load(std::memory_order_acquire) != head_ + 1) {
        wake_producers();  // out of items: hand over whatever room we made
        break;
      }
      if (s.abandoned) {
        release_head(s);
        continue;
      }
      detail::hand_over(s.value(), sink, [&] { release_head(s); });
      ++n;
    }
    return n;
  }

  // Producer side: written by every claim (CAS) and close; read by everyone.
  alignas(detail::cache_line) std::atomic<std::uint64_t> tail_{0};

  // Consumer side.
  alignas(detail::cache_line) std::uint64_t head_ = 0;  // consumer only: next position to pop
  // A copy of head_ for size_approx(): written by the consumer, read by any thread.
  std::atomic<std::uint64_t> head_published_{0};
  detail::consumer_check check_;
  std::size_t freed_since_wake_ = 0;  // consumer only: slots freed since producers were woken

  const std::size_t mask_;
  const std::size_t wake_batch_ = (mask_ + 1) / 8 > 0 ? (mask_ + 1) / 8 : 1;
  const std::unique_ptr<slot[]> slots_;

  // A copy of the closed bit off the hot tail line, for waiters: set once by close().
  alignas(detail::cache_line) std::atomic<bool> closed_{false};
  detail::parker consumer_wait_;  // the consumer waits for items
  alignas(detail::cache_line) detail::parker space_wait_;     // producers wait for room
};

}  // namespace tether

// ---- tether/detail/queue/block_pool.hpp -------------------------------------
// tether/detail/queue/block_pool.hpp - emptied queue blocks kept for reuse, up to a limit.
//
// Who may call what: take / give - any thread, concurrently; the destructor - no other thread.
//
// An unbounded queue would otherwise free each block its consumer empties and allocate a
// new one for its producers: with 16 KiB blocks that is the allocator's trim and the kernel's
// page faults on every block, which cost more than the items themselves.
//
// A Treiber stack whose only pop is "take everything" (exchange with null): a node is never
// popped while another thread may push it again, so there is no ABA. take() keeps the first
// block and pushes the rest back as one chain. The count is approximate (relaxed): at worst
// a block more or less is kept than the limit says; memory follows the backlog down.
//
// Memory ordering: give()'s release CAS publishes the block (the giver's last reads and any
// reset of it) to take()'s acquire exchange.


namespace tether::detail {

// Block: any type with a member `std::atomic<Block*> next`, which the pool uses as its link
// while the block is inside (and sets to null on the way out).
template <class Block>
class block_pool {
 public:
  explicit block_pool(std::size_t limit) noexcept : limit_(limit) {}
  block_pool(const block_pool&) = delete;
  block_pool& operator=(const block_pool&) = delete;
  ~block_pool() {
    Block* b = head_.load(std::memory_order_relaxed);  // relaxed: no other thread
    while (b != nullptr) delete std::exchange(b, b->next.load(std::memory_order_relaxed));
  }

  // A kept block (its next null), or nullptr when none is kept.
  Block* take() noexcept {
    // acquire: pairs with give()'s release; the giver is done with the block.
    Block* b = head_.exchange(nullptr, std::memory_order_acquire);
    if (b == nullptr) return nullptr;
    count_.fetch_sub(1, std::memory_order_relaxed);  // relaxed: the count only steers give()
    if (Block* rest = b->next.load(std::memory_order_relaxed)) {  // relaxed: ours since the exchange
      Block* last = rest;
      while (Block* n = last->next.load(std::memory_order_relaxed)) last = n;
      push(rest, last);
    }
    b->next.store(nullptr, std::memory_order_relaxed);  // relaxed: ours
    return b;
  }

  // Keeps b for a later take(), or deletes it when the pool holds its limit.
  void give(Block* b) noexcept {
    // relaxed: the count only steers this choice.
    if (count_.load(std::memory_order_relaxed) >= limit_) {
      delete b;
      return;
    }
    count_.fetch_add(1, std::memory_order_relaxed);
    push(b, b);
  }

 private:
  void push(Block* first, Block* last) noexcept {
    Block* head = head_.load(std::memory_order_relaxed);  // relaxed: the CAS re-checks it
    do {
      last->next.store(head, std::memory_order_relaxed);  // relaxed: published by the CAS
      // release: publishes the chain (and the givers' last accesses) to take()'s acquire exchange.
    } while (!head_.compare_exchange_weak(head, first, std::memory_order_release, std::memory_order_relaxed));
  }

  std::atomic<Block*> head_{nullptr};
  std::atomic<std::size_t> count_{0};
  const std::size_t limit_;
};

}  // namespace tether::detail

// ---- tether/detail/queue/producer_lane.hpp ----------------------------------
// tether/detail/queue/producer_lane.hpp - one producer handle's private FIFO inside an mpsc_queue.
//
// Who may call what: the producer half (emplace) - the thread using the handle that owns the
// lane; the consumer half (ready, take, take_ready, ...) - the queue's consumer; try_own /
// disown / size_approx - any thread.
//
// A lane is a single-producer single-consumer list of blocks of items, each item with a
// stamp: its 1-based position in the lane. The producer writes the item, then stores the
// stamp (release); the consumer compares its head stamp (acquire) with the position it
// expects and takes the item - no compare-and-swap and no cache line shared with other
// producers, the point of a lane. Stamps rather than a published item count: a consumer
// that has caught up then polls near the producer's current item, instead of a counter line
// that every push rewrites (measured slower, see bench/README.md). Stamps rather than a flag
// the consumer clears: the consumer only reads a block, so a reused block's stale stamps are
// simply smaller than expected. The producer links the next block before it publishes a
// block's last item, so the consumer always finds it. Emptied blocks go back to the producer
// through a bounded pool (block_pool.hpp): while the lane's backlog fits it, nothing is
// allocated; past it, blocks are freed and allocated again (bench/README.md measures the
// page faults). Small items sit next to their stamps; items of a cache line or more on
// whole lines (lane_block below).
//
// Closing (see mpsc_queue's banner): emplace raises pushing_ for its whole length and reads
// the queue's closing flag after a light fence; the consumer reads pushing_ before the head
// stamp once closed, so a push that passed its check is either seen in flight or seen landed.
//
// Memory ordering: an item's release stamp store publishes it (and, for a block's last
// item, the link to the next block); the consumer's acquire load pairs with it. pushing_'s
// release store pairs with the consumer's seq_cst load after close. Ownership of the
// producer side moves between handles by owned_'s release/acquire.



namespace tether::detail {

// A lane's block: about 16 KiB of items (at least 32) with their stamps, in one of two
// layouts chosen by the item's size. Both say which line to prefetch ahead of a write.
template <class T, bool StampsApart = (sizeof(T) >= cache_line)>
struct lane_block;

// Items smaller than a cache line: each slot holds the item and its stamp, so reading the
// stamp brings in the item's line too.
template <class T>
struct lane_block<T, false> {
  struct slot {
    alignas(T) unsigned char storage[sizeof(T)];
    std::atomic<std::uint64_t> stamp{0};
  };
  static constexpr std::size_t items = sizeof(slot) * 32 >= 16384 ? 32 : 16384 / sizeof(slot);
  // About 512 bytes ahead of the slot being written.
  static constexpr std::size_t prefetch_ahead = (512 + sizeof(slot) - 1) / sizeof(slot);

  slot slots[items];
  // Stored by the producer before it publishes the block's last item; read by the consumer
  // after it has taken that item. A reused block keeps a stale value until then.
  std::atomic<lane_block*> next{nullptr};

  unsigned char* item(std::size_t i) noexcept { return slots[i].storage; }
  std::atomic<std::uint64_t>& stamp(std::size_t i) noexcept { return slots[i].stamp; }
  void prefetch(std::size_t i) noexcept { prefetch_for_write(&slots[i]); }
};

// Items of a cache line or more: items on whole lines, stamps in an array of their own. A
// consumer that has caught up polls a stamp line, not the line the producer is writing an
// item into. Measured with 64-byte items against the layout above, in one process with
// interleaved repetitions: try_pop 1.2-1.6x as fast at 1 and 4 producers (0.94-1.33x at 2),
// try_pop_bulk 0.8-0.9x at 1 and 2 producers and even at 4 (bench/README.md).
template <class T>
struct lane_block<T, true> {
  static constexpr std::size_t items = sizeof(T) * 32 >= 16384 ? 32 : 16384 / sizeof(T);
  static constexpr std::size_t prefetch_ahead = (512 + sizeof(T) - 1) / sizeof(T);

  alignas(alignof(T) > cache_line ? alignof(T) : cache_line) unsigned char storage[items][sizeof(T)];
  alignas(cache_line) std::atomic<std::uint64_t> stamps[items] = {};
  std::atomic<lane_block*> next{nullptr};  // as above

  unsigned char* item(std::size_t i) noexcept { return storage[i]; }
  std::atomic<std::uint64_t>& stamp(std::size_t i) noexcept { return stamps[i]; }
  void prefetch(std::size_t i) noexcept {
    prefetch_for_write(storage[i]);
    prefetch_for_write(&stamps[i]);
  }
};

template <class T>
class producer_lane {
  using block = lane_block<T>;
  static constexpr std::size_t block_items = block::items;
  // Emptied blocks kept for reuse: up to about 1 MiB per lane, at least 4 blocks.
  static constexpr std::size_t max_cached = sizeof(block) * 4 >= (1u << 20) ? 4 : (1u << 20) / sizeof(block);

 public:
  producer_lane() : tail_block_(new block), head_block_(tail_block_) {}
  producer_lane(const producer_lane&) = delete;
  producer_lane& operator=(const producer_lane&) = delete;

  // Destroys the items left (no thread may use the lane). relaxed loads: no other thread.
  ~producer_lane() {
    std::uint64_t left = pushed_.load(std::memory_order_relaxed) - popped_.load(std::memory_order_relaxed);
    for (; left != 0; --left) {
      head_item()->~T();
      delete step_head();
    }
    // head_block_ is the producer's tail block now; blocks after it are stale links.
    delete head_block_;
  }

  // ---- producer (the owning handle's thread) ---------------------------------------------

  // Appends an item built from args unless `closing` is set; false (args untouched) if it is.
  // If T's constructor throws nothing is published and the exception propagates. The caller
  // wakes the consumer afterwards, however this returns.
  template <class... Args>
  bool emplace(const std::atomic<bool>& closing, Args&&... args) {
    // relaxed: the light fence orders it before the closing load (the close handshake).
    pushing_.store(true, std::memory_order_relaxed);
    light_fence();
    const lower_on_exit lower{pushing_};
    // relaxed: ordered by the handshake's fences; close() heavy-fences after its store.
    if (closing.load(std::memory_order_relaxed)) return false;
    block& b = *tail_block_;
    const std::size_t pos = tail_pos_;
    unsigned char* const s = b.item(pos);
    // The lines about to be written were read by the consumer since the block's last use: ask
    // for them ahead, or each store waits for its line in turn (no hardware prefetcher helps).
    if (pos + block::prefetch_ahead < block_items) b.prefetch(pos + block::prefetch_ahead);
    if (pos + 1 == block_items) {
      std::unique_ptr<block> next(take_spare());          // may throw: nothing written yet
      ::new (s) T(std::forward<Args>(args)...);  // throws: nothing published
      // release: the consumer reads next only after it has taken the item published below.
      b.next.store(next.get(), std::memory_order_release);
      tail_block_ = next.release();
      tail_pos_ = 0;
    } else {
      ::new (s) T(std::forward<Args>(args)...);  // throws: the slot is reused next time
      ++tail_pos_;
    }
    // relaxed: only this thread writes pushed_ (size_approx() reads it as a statistic).
    const std::uint64_t stamp = pushed_.load(std::memory_order_relaxed) + 1;
    // release: publishes the item; pairs with the consumer's acquire load in ready().
    b.stamp(pos).store(stamp, std::memory_order_release);
    pushed_.store(stamp, std::memory_order_relaxed);  // relaxed: as above
    return true;
  }

  // ---- consumer --------------------------------------------------------------------------

  // Is the head item published?
  bool ready() noexcept {
    return head_stamp().load(std::memory_order_acquire) == next_stamp();  // acquire: pairs with emplace()
  }
  // The same with a seq_cst load: the re-check half of the parker handshake.
  bool ready_seq_cst() noexcept { return head_stamp().load(std::memory_order_seq_cst) == next_stamp(); }
  // A push is between its closed check and its end. Read before ready_seq_cst() (banner).
  bool pushing() const noexcept { return pushing_.load(std::memory_order_seq_cst); }

  // Precondition: ready(). Hands the head item to f(T&&), then drops it; if f throws, the
  // item stays queued.
  template <class F>
  void take(F&& f) {
    detail::move_out(head_item(), f, [this] { advance(); });
  }

  // Takes up to max ready items, oldest first, calling sink(T&&) for each. Returns how many.
  // A sink that may pop from the same queue sees each item after it has left the lane
  // (hand_over, sink.hpp).
  template <class Sink>
  std::size_t take_ready(std::size_t max, Sink& sink) {
    std::size_t n = 0;
    for (; n < max && ready(); ++n) detail::hand_over(head_item(), sink, [this] { advance(); });
    return n;
  }

  // ---- any thread ------------------------------------------------------------------------

  std::size_t size_approx() const noexcept {
    // relaxed: statistics; no decision that needs ordering is made from them.
    const std::uint64_t tail = pushed_.load(std::memory_order_relaxed);
    const std::uint64_t head = popped_.load(std::memory_order_relaxed);
    return tail > head ? static_cast<std::size_t>(tail - head) : 0;
  }

  // Claims the lane for a new handle; false if a handle holds it.
  bool try_own() noexcept {
    bool expected = false;
    // relaxed pre-check: a hint only, the CAS decides. acquire: pairs with disown(); the
    // previous owner's producer fields are ours now.
    return !owned_.load(std::memory_order_relaxed) &&
           owned_.compare_exchange_strong(expected, true, std::memory_order_acquire, std::memory_order_relaxed);
  }
  void disown() noexcept { owned_.store(false, std::memory_order_release); }  // release: see try_own()

  // The next lane of the queue's list: set before the lane is published, then constant.
  producer_lane* next_lane = nullptr;

 private:
  struct lower_on_exit {
    std::atomic<bool>& flag;
    // release: a consumer that reads false also sees the item this push published.
    ~lower_on_exit() { flag.store(false, std::memory_order_release); }
  };

  T* head_item() noexcept { return std::launder(reinterpret_cast<T*>(head_block_->item(head_pos_))); }
  std::atomic<std::uint64_t>& head_stamp() noexcept { return head_block_->stamp(head_pos_); }
  // The stamp the head slot carries once its item is published.
  std::uint64_t next_stamp() const noexcept {
    return popped_.load(std::memory_order_relaxed) + 1;  // relaxed: only the consumer writes popped_
  }
  void advance() noexcept {
    if (block* emptied = step_head()) pool_.give(emptied);
    // relaxed: the consumer's own counter; size_approx() reads it as a statistic.
    popped_.store(popped_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  // Moves past the head slot; returns the block it left, if it left one (else nullptr).
  block* step_head() noexcept {
    if (++head_pos_ != block_items) return nullptr;
    // acquire: pairs with emplace()'s release store of next, made before the last slot.
    block* const emptied = std::exchange(head_block_, head_block_->next.load(std::memory_order_acquire));
    head_pos_ = 0;
    return emptied;
  }

  block* take_spare() {
    block* b = pool_.take();
    return b != nullptr ? b : new block;
  }
  // Producer side; the consumer reads pushing_ only after close.
  alignas(cache_line) block* tail_block_;
  std::size_t tail_pos_ = 0;              // next slot in tail_block_
  std::atomic<bool> pushing_{false};      // raised for the length of each emplace()
  std::atomic<std::uint64_t> pushed_{0};  // items published: the last stamp stored

  // Consumer side.
  alignas(cache_line) block* head_block_;
  std::size_t head_pos_ = 0;              // next slot in head_block_
  std::atomic<std::uint64_t> popped_{0};  // items taken; the head slot's stamp is popped_ + 1

  // Shared, written about once per block or per handle.
  alignas(cache_line) block_pool<block> pool_{max_cached};  // emptied blocks, for the producer
  std::atomic<bool> owned_{true};
};

}  // namespace tether::detail

// ---- tether/mpsc_queue.hpp --------------------------------------------------
// tether/mpsc_queue.hpp - unbounded, lock-free queue: many producers, one consumer.
//
// Who may call what:
//   push / emplace / make_producer / close / is_closed / size_approx - any thread, concurrently.
//   producer::push / producer::emplace - the thread using that handle (one at a time).
//   try_pop / pop / pop_for / pop_until / *_bulk / drain - one consumer thread at a time
//     (debug builds throw std::logic_error when two threads consume at once).
//
// Items live in blocks of slots. A producer claims a slot with one compare-and-swap on the
// tail index, writes the item and publishes the slot; the producer that claims a block's last
// slot links the next block (taken from a pool of emptied blocks, so a steady state whose
// backlog fits the pool allocates nothing). The consumer reads slots in index order - so
// items from one producer come out in the order that producer pushed them - and recycles
// each block it has emptied.
//
// A producer preempted between claiming and publishing its slot holds up only the consumer,
// which parks on that slot (it does not spin) and is woken by the publish. A producer
// preempted while linking a block holds up other producers for the two stores it has left;
// they back off and yield meanwhile.
//
// Memory ordering: a slot's release state store publishes the item to the consumer's
// acquire load of that state; a block's `next` is stored before its last slot is
// published, so the consumer always finds it. Waking a parked consumer is the parker's
// handshake (detail/wait/parker.hpp): a push pays no locked instruction beyond its claim.
//
// After crossbeam-channel's list flavour (block list, CAS-claimed slots, a sentinel index
// while the next block is linked), adapted to one consumer, block reuse and parking.
//
// Producer handles (make_producer): a thread that pushes a lot can take a handle that owns a
// private lane - its own list of blocks, written by that thread alone, so a push is a plain
// store and a release store with no compare-and-swap and no shared cache line. The consumer
// reads the shared ring and every lane; it stays with one source while that source has items
// (up to source_quota in a row, so a busy source cannot starve the others), then moves on.
// Items pushed through one handle come out in the order pushed; there is no order between
// different handles, or between a handle and plain push. A dropped handle's lane is kept
// (with its items) and reused by the next make_producer().
//
// Closing with lanes is Dekker's handshake again: a lane push raises its `pushing` flag, then
// (light fence) reads closing_; close() stores closing_, then (heavy fence) sets closed_. Either
// the push sees closing_ and hands its item back, or the consumer - which decides "closed"
// only after it sees closed_ - sees the flag and waits for that push to land.

#include <algorithm>
#include <iterator>


namespace tether {

template <class T>
class mpsc_queue : public detail::consumer_ops<mpsc_queue<T>, T> {
  friend class detail::consumer_ops<mpsc_queue<T>, T>;
  static_assert(std::is_nothrow_destructible_v<T>, "tether::mpsc_queue<T>: T's destructor must not throw");
  static_assert(std::is_move_constructible_v<T>, "tether::mpsc_queue<T>: T must be move-constructible");

 public:
  using value_type = T;

  // relaxed: nothing is shared before the constructor returns.
  mpsc_queue() : head_block_(new block) { tail_block_.store(head_block_, std::memory_order_relaxed); }
  mpsc_queue(const mpsc_queue&) = delete;
  mpsc_queue& operator=(const mpsc_queue&) = delete;

  // Destroys the items still queued (no producer or consumer may be running). Its loads are
  // relaxed: with no other thread left, they only read this thread's view.
  ~mpsc_queue() {
    std::uint64_t head = head_;
    const std::uint64_t tail = tail_index_.load(std::memory_order_relaxed) >> index_shift;
    block* b = head_block_;
    while (head != tail) {
      const std::uint64_t offset = head % lap;
      if (offset == block_cap) {
        head++;
        b = b->next.load(std::memory_order_relaxed);
        continue;
      }
      destroy_if_written(b->slots[offset]);
      head++;
    }
    delete_chain(head_block_);
    for (lane* l = lanes_.load(std::memory_order_relaxed); l != nullptr;) delete std::exchange(l, l->next_lane);
  }

  // ---- producers (any thread) ------------------------------------------------------------

  // Enqueues v; never blocks. Returns false if the queue is closed, leaving v untouched
  // (not moved from), so the caller still owns it. Thread-safe.
  bool push(T&& v) { return emplace(std::move(v)); }
  bool push(const T& v) { return emplace(v); }

  // Constructs an item in place from args. Returns false if closed (args untouched).
  // If T's constructor throws, the slot is skipped and the exception propagates. Thread-safe.
  //
  // Outline:
  //   1. read the tail index; closed -> hand back; at the sentinel -> another producer is
  //      linking the next block: back off (the point where a preempted thread makes other
  //      producers wait, for two stores);
  //   2. claiming the block's last slot -> have the next block ready before the CAS;
  //   3. CAS the tail index one step; the winner of the last slot links the next block and
  //      moves the index past the sentinel;
  //   4. construct the item, publish the slot, wake the consumer if it is parked.
  template <class... Args>
  bool emplace(Args&&... args) {
    detail::backoff backoff;
    block* next_block = nullptr;  // ready for linking when we claim a block's last slot
    // acquire: pairs with [P3] so the tail_block_ read below is the index's block or newer.
    std::uint64_t tail = tail_index_.load(std::memory_order_acquire);
    for (;;) {
      if (tail & closed_bit) {
        return_spare(next_block);
        return false;
      }
      const std::uint64_t offset = (tail >> index_shift) % lap;
      if (offset == block_cap) {
        backoff.snooze();
        tail = tail_index_.load(std::memory_order_acquire);  // acquire: as above
        continue;
      }
      if (offset + 1 == block_cap && next_block == nullptr) next_block = take_spare();
      // acquire: pairs with [P2]; if the CAS below succeeds, b is the block of our slot.
      block* b = tail_block_.load(std::memory_order_acquire);
      // seq_cst claim; on failure acquire (as the first load).
      if (!tail_index_.compare_exchange_weak(tail, tail + index_step, std::memory_order_seq_cst,
                                             std::memory_order_acquire))
        continue;
      if (offset + 1 == block_cap) {
        // [P1] release: the consumer reads next only after our slot below is published.
        b->next.store(next_block, std::memory_order_release);
        // [P2] release: publishes the new block to producers; pairs with the acquire above.
        tail_block_.store(next_block, std::memory_order_release);
        // [P3] release: moves the index past the sentinel; pairs with the acquire loads above.
        tail_index_.fetch_add(index_step, std::memory_order_release);
        next_block = nullptr;
      } else {
        return_spare(next_block);
      }
      // The lines about to be written were read by the consumer in the block's last use: ask
      // for them ahead, as lanes do. Measured (bench/README.md): 64-byte items at 1 producer
      // 1.5x as fast while cross-core traffic is slow, no change while it is fast.
      if (offset + prefetch_ahead < block_cap) detail::prefetch_for_write(&b->slots[offset + prefetch_ahead]);
      const notify_on_exit notify{consumer_wait_};
      fill(b->slots[offset], std::forward<Args>(args)...);
      return true;
    }
  }

  // A producer handle owning a private lane (see the banner): faster pushes for a thread that
  // pushes many items. The handle must not outlive the queue; use it from one thread at a
  // time. Dropping it keeps the items it pushed. Thread-safe; allocates a lane the first time
  // (lanes of dropped handles are reused).
  class producer;
  producer make_producer();

  // Closes the queue: later pushes fail (handing their item back); the consumer still
  // receives everything pushed before, then sees closed. Wakes a parked consumer.
  // Returns true if this call closed it. Thread-safe; never blocks.
  bool close() noexcept {
    const std::uint64_t prev = tail_index_.fetch_or(closed_bit, std::memory_order_seq_cst);
    closing_.store(true, std::memory_order_seq_cst);
    // The close half of the lane handshake (banner). Without lanes there is nothing to wait
    // out; a lane registered after this load reads closing_ (make_producer()).
    if (lanes_.load(std::memory_order_seq_cst) != nullptr) detail::heavy_fence();
    closed_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    consumer_wait_.notify_all();
    return (prev & closed_bit) == 0;
  }

  bool is_closed() const noexcept { return (tail_index_.load(std::memory_order_seq_cst) & closed_bit) != 0; }

  // Items pushed and not yet popped; stale as soon as it returns. Thread-safe.
  std::size_t size_approx() const noexcept {
    // relaxed: a statistic; no decision that needs ordering is made from it.
    const std::uint64_t tail = tail_index_.load(std::memory_order_relaxed) >> index_shift;
    const std::uint64_t head = head_published_.load(std::memory_order_relaxed);
    std::size_t n = tail <= head ? 0 : static_cast<std::size_t>((tail - head) - (tail / lap - head / lap));
    // acquire: pairs with the release that publishes a lane, so its fields are initialised.
    for (const lane* l = lanes_.load(std::memory_order_acquire); l != nullptr; l = l->next_lane) n += l->size_approx();
    return n;
  }
  bool empty_approx() const noexcept { return size_approx() == 0; }

 // Consumer side (one thread at a time), from detail::consumer_ops: try_pop, pop, pop_for,
 // pop_until, try_pop_bulk, pop_bulk, drain.

 private:
  // Slots per block + 1: the last index of each lap is the sentinel "next block being linked".
  static constexpr std::uint64_t pick_lap() {
    std::uint64_t lap = 32;
    while (lap < 1024 && lap * 2 * (sizeof(T) + alignof(T)) <= 16384) lap *= 2;
    return lap;
  }
  static constexpr std::uint64_t lap = pick_lap();
  static constexpr std::uint64_t block_cap = lap - 1;
  static constexpr std::uint64_t closed_bit = 1;  // bit 0 of tail_index_
  static constexpr unsigned index_shift = 1;
  static constexpr std::uint64_t index_step = std::uint64_t{1} << index_shift;

  static constexpr std::uint8_t slot_empty = 0;
  static constexpr std::uint8_t slot_written = 1;
  static constexpr std::uint8_t slot_abandoned = 2;  // the producer's constructor threw

  struct slot {
    alignas(T) unsigned char storage[sizeof(T)];
    // Written by the producer that claimed the slot (publish) and by the consumer (reset on
    // recycling, while no producer can reach the block); read by the consumer.
    std::atomic<std::uint8_t> state{slot_empty};
    T* value() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
  };
  struct block {
    // Written once by the producer that claims slot block_cap-1; read by the consumer.
    std::atomic<block*> next{nullptr};
    slot slots[block_cap];
  };
  // Slots between the one a producer fills and the one it prefetches: about 512 bytes.
  static constexpr std::uint64_t prefetch_ahead = (512 + sizeof(slot) - 1) / sizeof(slot);
  // Emptied blocks kept for reuse: about 1 MiB, at least 4.
  static constexpr std::size_t pool_limit = sizeof(block) * 4 >= (1u << 20) ? 4 : (1u << 20) / sizeof(block);

  using head_state = detail::head_state;

  using lane = detail::producer_lane<T>;

  // Items a consumer takes from one source in a row before it looks at the others.
  static constexpr std::uint32_t source_quota = 256;

  // Constructs the item in s and publishes the slot: written, or abandoned (and rethrows)
  // if T's constructor throws. The caller wakes the consumer.
  template <class... Args>
  static void fill(slot& s, Args&&... args) {
    try {
      ::new (static_cast<void*>(s.storage)) T(std::forward<Args>(args)...);
    } catch (...) {
      s.state.store(slot_abandoned, std::memory_order_release);  // release: as below
      throw;
    }
    // release: publishes the item; pairs with the acquire in probe() / take_ready(). The
    // parker handshake's fence is in notify_one() (light) and prepare_wait() (heavy).
    s.state.store(slot_written, std::memory_order_release);
  }

  struct notify_on_exit {
    detail::parker& p;
    ~notify_on_exit() { p.notify_one(); }
  };

  static void destroy_if_written(slot& s) noexcept {
    if (s.state.load(std::memory_order_relaxed) == slot_written) s.value()->~T();  // relaxed: destructor only
  }
  static void delete_chain(block* b) noexcept {
    while (b != nullptr) delete std::exchange(b, b->next.load(std::memory_order_relaxed));  // relaxed: destructor only
  }

  // ---- lanes (producer handles) ----------------------------------------------------------

  // A lane for a new handle: a dropped handle's lane if there is one, else a new lane.
  // seq_cst list loads: make_producer()'s closing_ check relies on them (see there).
  lane* acquire_lane() {
    for (lane* l = lanes_.load(std::memory_order_seq_cst); l != nullptr; l = l->next_lane)
      if (l->try_own()) return l;
    auto* l = new lane;
    lane* head = lanes_.load(std::memory_order_relaxed);  // relaxed: the CAS below re-checks it
    do {
      l->next_lane = head;
    } while (!lanes_.compare_exchange_weak(head, l, std::memory_order_seq_cst, std::memory_order_relaxed));
    return l;
  }

  template <class... Args>
  bool lane_emplace(lane& l, Args&&... args) {
    // After the lane push has lowered its flag, however it ends: the consumer may be waiting
    // for this push to land after close.
    const notify_on_exit notify{consumer_wait_};
    return l.emplace(closing_, std::forward<Args>(args)...);
  }

  // ---- blocks ----------------------------------------------------------------------------

  block* take_spare() {
    block* b = pool_.take();
    return b != nullptr ? b : new block;
  }
  void return_spare(block* b) noexcept {
    if (b != nullptr) pool_.give(b);
  }
  void recycle(block* b) noexcept {
    // No producer can reach b: every slot was claimed, published and consumed, and
    // tail_block_ moved on before the last slot was published.
    for (slot& s : b->slots) s.state.store(slot_empty, std::memory_order_relaxed);  // relaxed: published by give()
    b->next.store(nullptr, std::memory_order_relaxed);                             // relaxed: as above
    pool_.give(b);
  }

  // ---- consumer --------------------------------------------------------------------------
  //
  // The consumer reads one source at a time: current_ is a lane, or nullptr for the ring.

  slot& ring_slot() noexcept { return head_block_->slots[head_ % lap]; }
  bool ring_ready() noexcept {
    return ring_slot().state.load(std::memory_order_acquire) != slot_empty;  // acquire: pairs with fill()
  }
  bool current_ready() noexcept { return current_ != nullptr ? current_->ready() : ring_ready(); }

  // Makes the next source (after current_, round the ring and the lanes) with an item
  // ready current; false if no other source has one.
  bool switch_to_ready() noexcept {
    // acquire: pairs with the CAS that published a lane; its fields are initialised.
    lane* const first = lanes_.load(std::memory_order_acquire);
    if (first == nullptr) return false;
    for (lane* l = current_ != nullptr ? current_->next_lane : first;; l = l->next_lane) {
      if (l == nullptr) {  // past the last lane: the ring, then the first lane
        if (current_ == nullptr) return false;
        if (ring_ready()) return switch_to(nullptr);
        l = first;
      }
      if (l == current_) return false;
      if (l->ready()) return switch_to(l);
    }
  }
  bool switch_to(lane* l) noexcept {
    current_ = l;
    quota_ = source_quota;
    return true;
  }
  // After an item: once source_quota came from one source in a row, the others get a turn.
  void count_taken(std::size_t n) noexcept {
    if (quota_ > n) {
      quota_ -= static_cast<std::uint32_t>(n);
      return;
    }
    quota_ = source_quota;
    switch_to_ready();
  }

  head_state probe() noexcept {
    if (current_ready() || switch_to_ready()) return head_state::ready;
    // Nothing ready. The ring's tail line is hot with producers: read it only once closed.
    // (A close that has claimed the tail but not yet set closed_ reads as "not closed yet".)
    if (!closed_.load(std::memory_order_seq_cst)) return head_state::empty;
    return closed_state();
  }

  // After closed_ is set: ready (and made current) if some source has an item, in flight
  // while a push that passed its closed check is unfinished, else closed. seq_cst loads:
  // also the re-check half of the parker handshake.
  head_state closed_state() noexcept {
    bool in_flight = false;
    for (lane* l = lanes_.load(std::memory_order_seq_cst); l != nullptr; l = l->next_lane) {
      // The flag before the items: a push that ends between the two loads shows its item.
      if (l->pushing()) {
        in_flight = true;
      } else if (l->ready_seq_cst()) {
        switch_to(l);
        return head_state::ready;
      }
    }
    if (ring_slot().state.load(std::memory_order_seq_cst) != slot_empty) {
      switch_to(nullptr);
      return head_state::ready;
    }
    const std::uint64_t tail = tail_index_.load(std::memory_order_seq_cst);
    if ((tail >> index_shift) != head_) in_flight = true;  // a claimed ring slot not yet published
    return in_flight ? head_state::in_flight : head_state::closed;
  }

  // The condition a parked consumer waits for: some source has an item, or the queue is
  // closed with nothing in flight. seq_cst loads: the re-check half of the parker handshake.
  bool head_ready() noexcept {
    if (ring_slot().state.load(std::memory_order_seq_cst) != slot_empty) return true;
    for (lane* l = lanes_.load(std::memory_order_seq_cst); l != nullptr; l = l->next_lane)
      if (l->ready_seq_cst()) return true;
    // The ring's tail line is hot with producers: read it only once closed.
    if (!closed_.load(std::memory_order_seq_cst)) return false;
    return closed_state() != head_state::in_flight;
  }

  void advance_ring() noexcept {
    std::uint64_t head = head_ + 1;
    if (head % lap == block_cap) {
      // acquire: pairs with [P1]; the last slot's producer linked next before publishing.
      block* next = head_block_->next.load(std::memory_order_acquire);
      recycle(head_block_);
      head_block_ = next;
      ++head;
    }
    head_ = head;
    head_published_.store(head, std::memory_order_relaxed);  // relaxed: only size_approx() reads it
  }

  // Precondition: probe() said ready. Empty optional: a ring slot whose producer's
  // constructor threw.
  std::optional<T> take() {
    std::optional<T> v;
    if (current_ != nullptr) {
      current_->take([&](T&& item) { v.emplace(std::move(item)); });  // if this throws, the item stays queued
    } else {
      slot& s = ring_slot();
      if (s.state.load(std::memory_order_relaxed) == slot_abandoned) {  // relaxed: probe() acquired it
        advance_ring();
        return v;
      }
      // if this throws, the item stays queued
      detail::move_out(s.value(), [&](T&& item) { v.emplace(std::move(item)); }, [this] { advance_ring(); });
    }
    count_taken(1);
    return v;
  }

  template <class Sink>
  std::size_t take_ready(std::size_t max, Sink&& sink) {
    std::size_t n = 0;
    while (n < max) {
      if (current_ != nullptr) {
        const std::size_t k = current_->take_ready(std::min<std::size_t>(max - n, quota_), sink);
        n += k;
        if (k != 0) {
          count_taken(k);
          continue;
        }
      } else if (const std::size_t k = take_ready_ring(std::min<std::size_t>(max - n, quota_), sink); k != 0) {
        n += k;
        count_taken(k);
        continue;
      }
      if (!switch_to_ready()) break;
    }
    return n;
  }

  template <class Sink>
  std::size_t take_ready_ring(std::size_t max, Sink& sink) {
    std::size_t n = 0;
    while (n < max) {
      slot& s = ring_slot();
      const std::uint8_t st = s.state.load(std::memory_order_acquire);  // acquire: pairs with fill()
      if (st == slot_empty) break;
      if (st == slot_abandoned) {
        advance_ring();
        continue;
      }
      detail::hand_over(s.value(), sink, [this] { advance_ring(); });
      ++n;
    }
    return n;
  }

  // Producer side: written by every push (CAS), read by producers and the consumer.
  alignas(detail::cache_line) std::atomic<std::uint64_t> tail_index_{0};
  // Written by the producer that links a block; read by producers before their CAS.
  std::atomic<block*> tail_block_{nullptr};
  // Emptied blocks for reuse (up to about 1 MiB): the consumer gives, producers take.
  detail::block_pool<block> pool_{pool_limit};

  // The lanes of producer handles, newest first; a lane is never removed before the
  // destructor. Written by make_producer(), read by the consumer and close().
  alignas(detail::cache_line) std::atomic<lane*> lanes_{nullptr};

  // Consumer side.
  alignas(detail::cache_line) std::uint64_t head_ = 0;  // consumer only: next index to pop
  block* head_block_;                                  // consumer only: the block holding head_
  // A copy of head_ for size_approx(): written by the consumer, read by any thread.
  std::atomic<std::uint64_t> head_published_{0};
  lane* current_ = nullptr;                 // consumer only: the source read now (nullptr: the ring)
  std::uint32_t quota_ = source_quota;      // consumer only: items left before the others' turn
  detail::consumer_check check_;

  // A copy of the closed bit off the hot tail line, for waiters: set once by close().
  alignas(detail::cache_line) std::atomic<bool> closed_{false};
  // Set by close() before its heavy fence; read by every lane push (banner).
  std::atomic<bool> closing_{false};
  detail::parker consumer_wait_;
};

// A producer handle of an mpsc_queue: see mpsc_queue::make_producer(). Movable, not
// copyable; a moved-from handle may only be destroyed or assigned to.
template <class T>
class mpsc_queue<T>::producer {
 public:
  producer(producer&& o) noexcept : q_(std::exchange(o.q_, nullptr)), lane_(std::exchange(o.lane_, nullptr)) {}
  producer& operator=(producer&& o) noexcept {
    if (this != &o) {
      release();
      q_ = std::exchange(o.q_, nullptr);
      lane_ = std::exchange(o.lane_, nullptr);
    }
    return *this;
  }
  producer(const producer&) = delete;
  producer& operator=(const producer&) = delete;
  ~producer() { release(); }

  // As mpsc_queue::push / emplace: false (item untouched) once the queue is closed. Items
  // pushed through this handle are popped in the order pushed. The thread using this handle.
  bool push(T&& v) { return emplace(std::move(v)); }
  bool push(const T& v) { return emplace(v); }
  template <class... Args>
  bool emplace(Args&&... args) {
    return q_->lane_emplace(*lane_, std::forward<Args>(args)...);
  }

  mpsc_queue& queue() const noexcept { return *q_; }

 private:
  friend class mpsc_queue<T>;
  producer(mpsc_queue& q, lane& l) noexcept : q_(&q), lane_(&l) {}
  void release() noexcept {
    if (lane_ != nullptr) lane_->disown();
  }

  mpsc_queue* q_;
  lane* lane_;
};

template <class T>
typename mpsc_queue<T>::producer mpsc_queue<T>::make_producer() {
  lane& l = *acquire_lane();
  // A close() that read lanes_ before this lane was listed skipped its heavy fence. This
  // seq_cst load, ordered after acquire_lane()'s seq_cst list access, reads that close's
  // closing_ = true - and then so does every later push here (coherence) - or else that
  // close comes later in the seq_cst order and finds the lane, and fences.
  (void)closing_.load(std::memory_order_seq_cst);
  return producer(*this, l);
}

}  // namespace tether

// ---- tether/detail/select/source_access.hpp ---------------------------------
// tether/detail/select/source_access.hpp - a poller's view of the things it can watch.
//
// A poller (select.hpp) needs three things from a source that are no part of the source's
// public API: the parker its consumer sleeps on (to hang a listener there), the parker's
// condition (an item is ready, or closed and drained), and for channel endpoints the
// receiving direction and the shared state that keeps it alive. For an adopting executor it also
// needs the task queue (whose consumer is the owner), the earliest delayed-task deadline and
// a bounded poll(). The sources befriend this one struct instead of exposing those to every
// user.
//
// Who may call what: watched_ready() is a consumer-side call (the thread that receives from
// the source); executor_next_deadline() and executor_poll() - the executor's owner thread
// only (its timer heap is owner-only); the others only read members that never change after
// construction.
//
// Memory ordering: watched_ready() is the queue's own parker condition (seq_cst loads, the
// re-check half of the parker handshake); nothing else here touches shared state (the timer
// heap is owner-only, and executor_poll() is the executor's own poll()).



namespace tether::detail {

struct source_access {
  // ---- the single-consumer queues (their consumer half is consumer_ops) ----
  template <class Queue, class T>
  static parker& watched_parker(consumer_ops<Queue, T>& q) noexcept {
    return q.watched_parker();
  }
  template <class Queue, class T>
  static bool watched_ready(consumer_ops<Queue, T>& q) {
    return q.watched_ready();
  }

  // ---- channel endpoints (channel.hpp) ----
  template <class Endpoint>
  static auto& rx_direction(Endpoint& e) noexcept {
    return e.rx_direction();
  }
  template <class Endpoint>
  static std::shared_ptr<void> shared_state(const Endpoint& e) noexcept {
    return e.state_;
  }

  // ---- adopting executors (executor.hpp; templates, so this header needs not include it) ----
  template <class Executor>
  static auto& executor_queue(Executor& ex) noexcept {
    return ex.queue_;  // an mpsc_queue<task>: producers are the posters, the consumer the owner
  }
  template <class Executor>
  static bool executor_runs_own_thread(const Executor& ex) noexcept {
    return ex.own_thread_;
  }
  // The earliest delayed-task deadline (no_deadline: none). Owner thread only.
  template <class Executor>
  static steady_time executor_next_deadline(const Executor& ex) noexcept {
    return ex.timers_.next_deadline();
  }
  // As ex.poll(), running at most max tasks (due delayed tasks first, then ready ones); once
  // the queue is closed and drained, finishes the stop. Owner thread only (else wrong_thread).
  template <class Executor>
  static std::size_t executor_poll(Executor& ex, std::size_t max) {
    return ex.drive(Executor::run_kind::poll, no_deadline, nullptr, max);
  }
  // Who owns it, for a poller's wrong_thread message (set once by the constructor).
  template <class Executor>
  static auto* executor_owner_record(const Executor& ex) noexcept {
    return ex.owner_record_;
  }
  template <class Executor>
  static std::uint64_t executor_owner_serial(const Executor& ex) noexcept {
    return ex.owner_serial_;
  }
};

}  // namespace tether::detail

// ---- tether/detail/channel/direction.hpp ------------------------------------
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

#include <variant>


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
    if (auto* q = std::get_if<0>(&q_)) return q->push(std::forward<U>(v)) ? status::ok : status::closed;
    return std::get_if<1>(&q_)->try_push(std::forward<U>(v));
  }

  // ok, timeout or closed; v untouched unless ok. Blocks only when bounded and full.
  template <class U>
  push_result push_until(U&& v, steady_time deadline) {
    if (auto* q = std::get_if<0>(&q_)) return q->push(std::forward<U>(v)) ? status::ok : status::closed;
    auto& q = *std::get_if<1>(&q_);
    if (deadline == no_deadline) return q.push(std::forward<U>(v)) ? status::ok : status::closed;
    // The queue's own deadline loop does the waiting; a past deadline still tries once.
    return q.push_for(std::forward<U>(v), deadline - std::chrono::steady_clock::now());
  }

  pop_result<T> try_pop() {
    return with_queue([](auto& q) { return q.try_pop(); });
  }

  // ok, timeout or closed (closed only once drained).
  pop_result<T> pop_until(steady_time deadline) {
    return with_queue([deadline](auto& q) -> pop_result<T> {
      if (deadline == no_deadline) {
        if (auto v = q.pop()) return pop_result<T>(std::in_place, std::move(*v));
        return status::closed;
      }
      return q.pop_for(deadline - std::chrono::steady_clock::now());
    });
  }

  void close() noexcept {
    with_queue([](auto& q) { q.close(); });
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

// ---- tether/channel.hpp -----------------------------------------------------
// tether/channel.hpp - in-process pair channels: two connected endpoints, each sends and
// receives.
//
//   auto [left, right] = tether::make_pair<request, reply>();  // unbounded
//   auto [a, b] = tether::make_pair<message>(64);              // bounded: backpressure
//
// make_pair<A, B>() returns {endpoint<A, B>, endpoint<B, A>}: the first sends A and
// receives B, the second the reverse. Each direction is one single-consumer queue
// (mpsc_queue, or bounded_mpsc_queue when a capacity is given), so a message travels with
// one claim and one publish and nothing is locked.
//
// Who may call what (per endpoint):
//   send / try_send / send_for / send_until / close / is_closed / capacity
//                                  - any thread, concurrently (several senders are fine);
//   recv / try_recv / recv_for / recv_until
//                                  - one thread at a time (debug builds throw
//                                    std::logic_error when two threads receive at once);
//   move, move-assign, destroy     - not concurrently with any other call on that endpoint.
// Endpoints are movable, not copyable; a moved-from endpoint may only be destroyed or
// assigned to.
//
// Closing: close() on either endpoint, or destroying it, closes both directions. Each side
// still receives everything that was sent to it before the close, then sees closed; every
// later send hands its message back (status closed). Blocked senders and receivers on both
// sides wake up. Messages an endpoint never received are destroyed with the last owner of
// the pair (both endpoints, and any poller watching one): receive until closed first if
// they matter.
//
// Memory ordering: a send happens-before the receive that returns its message (the queues'
// release publish / acquire take); a close happens-before a receive or send that reports
// closed.
//
// After ZeroMQ's inproc PAIR sockets and crossbeam-channel's disconnect rules: a send to a
// closed pair hands the message back, a receive drains what was sent before closed.



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
std::pair<endpoint<A, B>, endpoint<B, A>> make_pair();
template <class A, class B = A>
std::pair<endpoint<A, B>, endpoint<B, A>> make_pair(std::size_t capacity);

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
      close();
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
  ~endpoint() { close(); }

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
  // untouched. Only a bounded pair can time out. Thread-safe.
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

  // ---- receiving (one thread at a time) --------------------------------------------------

  // Takes the oldest message the peer sent, blocking (spin briefly, then park) until there is
  // one: ok, or closed once the pair is closed and everything sent before was received.
  pop_result<Recv> recv() { return rx_->pop_until(detail::no_deadline); }

  // Never blocks: ok, empty or closed (closed only when drained).
  pop_result<Recv> try_recv() { return rx_->try_pop(); }

  // As recv(), giving up at the deadline: ok, timeout or closed.
  template <class Rep, class Period>
  pop_result<Recv> recv_for(const std::chrono::duration<Rep, Period>& timeout) {
    return rx_->pop_until(detail::deadline_after(timeout));
  }
  template <class Clock, class Duration>
  pop_result<Recv> recv_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return rx_->pop_until(detail::to_steady(deadline));
  }

  // ---- both sides ------------------------------------------------------------------------

  // Closes both directions: see the banner. Idempotent; never blocks. Thread-safe.
  void close() noexcept {
    if (tx_ == nullptr) return;  // moved from
    tx_->close();
    rx_->close();
  }

  // True once either endpoint closed the pair. Thread-safe.
  bool is_closed() const noexcept { return rx_->is_closed(); }

  // Messages each direction holds at least (0: unbounded). Thread-safe.
  std::size_t capacity() const noexcept { return rx_->capacity(); }

  // Messages sent to this endpoint and not yet received; stale as soon as it returns.
  std::size_t pending_approx() const noexcept { return rx_->size_approx(); }

 private:
  template <class A, class B>
  friend std::pair<endpoint<A, B>, endpoint<B, A>> make_pair();
  template <class A, class B>
  friend std::pair<endpoint<A, B>, endpoint<B, A>> make_pair(std::size_t);
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
std::pair<endpoint<A, B>, endpoint<B, A>> make_pair() {
  auto state = std::make_shared<detail::pair_state<A, B>>();
  auto& s = *state;
  return {endpoint<A, B>(state, s.a_to_b, s.b_to_a), endpoint<B, A>(state, s.b_to_a, s.a_to_b)};
}

// As make_pair(), bounded: each direction holds at least `capacity` messages (rounded up to
// a power of two; capacity() says how many), and send() blocks while the peer's inbox is
// full. Throws std::invalid_argument for 0.
template <class A, class B>
std::pair<endpoint<A, B>, endpoint<B, A>> make_pair(std::size_t capacity) {
  auto state = std::make_shared<detail::pair_state<A, B>>(capacity);
  auto& s = *state;
  return {endpoint<A, B>(state, s.a_to_b, s.b_to_a), endpoint<B, A>(state, s.b_to_a, s.a_to_b)};
}

}  // namespace tether

// ---- tether/detail/platform/thread_record.hpp -------------------------------
// tether/detail/platform/thread_record.hpp - who a thread is, and which executor it is blocked on.
//
// Every thread tether meets gets a thread_record: a serial number unique for that thread's
// life (what affinity checks compare), its name and ids (what error messages print), and the
// edge "blocked in call() on the executor owned by record R" (what deadlock detection walks).
//
// Records are immortal: a record is recycled when its thread exits, never freed, so any
// thread may read another's record at any time without a lifetime protocol. A stale pointer
// is told apart by its serial: a recycled record carries a new one.
//
// Who may call what:
//   this_thread_serial / this_thread_record / acquire_record / adopt_record - any thread, for
//     itself (adopt_record: the thread a record was acquired for).
//   describe_thread - any thread (takes the record's mutex; error paths only).
//   blocking_call (the deadlock edge) - the thread that blocks; find_cycle reads others' edges.
//
// Memory ordering: call_seq stores and all edge loads are seq_cst; the other edge fields are
// written with release stores. A thread's edge is published by its call_seq store (written
// after the fields) and retired by storing call_seq = 0 first; a reader that sees the same
// call_seq before and after reading the fields read one consistent edge, held continuously
// in between (a seqlock whose sequence is the call's unique number). Release is enough for
// the fields: each orders the previous call's "call_seq = 0" before it, so a reader that
// loads a new field value reads 0 or the next number as its second call_seq.

#include <pthread.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string_view>
#include <typeinfo>
#include <unordered_set>
#include <vector>

#if __has_include(<cxxabi.h>)
#include <cxxabi.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace tether::detail {

struct thread_record {
  // 0 while the record is free; otherwise unique to one thread's life. Written under the
  // record's mutex by acquire/release; read lock-free by checkers and deadlock walkers.
  std::atomic<std::uint64_t> serial{0};

  // The blocking call() this thread is in, if any. Written by the thread itself; read by
  // deadlock walkers on other threads. call_seq == 0: not blocked.
  std::atomic<std::uint64_t> call_seq{0};
  std::atomic<thread_record*> waits_for{nullptr};    // owner of the executor being called
  std::atomic<std::uint64_t> waits_for_serial{0};    // that owner's serial
  std::atomic<const char*> waits_on_name{nullptr};   // the executor's (interned) name

  // Identity for messages; guarded by mutex.
  std::mutex mutex;
  std::string name;          // set by tether::set_thread_name (may exceed the OS's 15 bytes)
  std::thread::id id{};
  pthread_t handle{};
  bool bound = false;        // id / handle / tid are set (the thread has started)
  long tid = 0;              // kernel thread id where known (what top and gdb show)
  std::uint64_t next_call = 0;  // the thread's own counter for call_seq (only it touches it)

  thread_record* next_free = nullptr;  // guarded by the registry mutex
};

// Holds every record ever made. Never destroyed: records must outlive every thread, static
// destructors included (a leaked singleton stays reachable, so leak checkers stay quiet).
struct thread_registry {
  std::mutex mutex;
  thread_record* free_list = nullptr;
  std::vector<thread_record*> all;
  std::uint64_t next_serial = 1;
  std::unordered_set<std::string> names;  // interned executor names

  static thread_registry& get() {
    static thread_registry* r = new thread_registry;
    return *r;
  }
};

// Returns a record with a fresh serial, not yet bound to a thread.
inline thread_record* acquire_record() {
  thread_registry& reg = thread_registry::get();
  thread_record* r = nullptr;
  std::uint64_t serial = 0;
  {
    std::lock_guard lock(reg.mutex);
    if (reg.free_list != nullptr) {
      r = reg.free_list;
      reg.free_list = r->next_free;
    } else {
      r = new thread_record;
      reg.all.push_back(r);
    }
    serial = reg.next_serial++;
  }
  std::lock_guard lock(r->mutex);
  r->name.clear();
  r->bound = false;
  r->serial.store(serial, std::memory_order_seq_cst);
  return r;
}

// The calling thread's record and serial (0 / nullptr until it has one).
inline constinit thread_local std::uint64_t tls_serial = 0;
inline constinit thread_local thread_record* tls_record = nullptr;

// Returns r to the pool: its serial becomes 0, so every stale reference sees it has gone.
inline void release_record(thread_record* r) noexcept {
  {
    std::lock_guard lock(r->mutex);
    r->serial.store(0, std::memory_order_seq_cst);
    r->call_seq.store(0, std::memory_order_seq_cst);
    r->bound = false;
  }
  thread_registry& reg = thread_registry::get();
  std::lock_guard lock(reg.mutex);
  r->next_free = reg.free_list;
  reg.free_list = r;
}

inline void release_this_thread_record() noexcept {
  thread_record* r = tls_record;
  if (r == nullptr) return;
  tls_record = nullptr;
  tls_serial = 0;
  release_record(r);
}

struct record_releaser {
  ~record_releaser() { release_this_thread_record(); }
};

// Makes r (from acquire_record) the calling thread's record; it is recycled at thread exit.
inline void adopt_record(thread_record* r) {
  static thread_local record_releaser releaser;  // registers the release at thread exit
  (void)&releaser;
  {
    std::lock_guard lock(r->mutex);
    r->id = std::this_thread::get_id();
    r->handle = ::pthread_self();
#if defined(__linux__)
    r->tid = static_cast<long>(::syscall(SYS_gettid));
#endif
    r->bound = true;
  }
  tls_record = r;
  tls_serial = r->serial.load(std::memory_order_seq_cst);
}

inline thread_record& this_thread_record() {
  if (tls_record == nullptr) adopt_record(acquire_record());
  return *tls_record;
}

inline std::uint64_t this_thread_serial() {
  if (tls_serial == 0) this_thread_record();
  return tls_serial;
}

// One copy of each executor name for the life of the process, so a deadlock walker may read
// a name through another thread's edge without caring whether that executor still exists.
inline const char* intern_name(std::string_view name) {
  if (name.empty()) return nullptr;
  thread_registry& reg = thread_registry::get();
  std::lock_guard lock(reg.mutex);
  return reg.names.emplace(name).first->c_str();
}

// "thread 139712 'julia' (tid 4242)", or a note that it has exited. Error paths only.
inline std::string describe_thread(thread_record* r, std::uint64_t serial) {
  if (r == nullptr) return "an unknown thread";
  std::lock_guard lock(r->mutex);
  if (r->serial.load(std::memory_order_seq_cst) != serial) return "a thread that has exited";
  if (!r->bound) return "a thread that has not started yet";
  std::string name = r->name;
  if (name.empty()) {
    // The thread is alive (its serial is current under the mutex it must take to exit), so
    // its handle is valid.
    char buf[64] = {};
    if (::pthread_getname_np(r->handle, buf, sizeof buf) == 0) name = buf;
  }
  std::ostringstream out;
  out << "thread " << r->id;
  if (!name.empty()) out << " '" << name << "'";
  if (r->tid != 0) out << " (tid " << r->tid << ")";
  return out.str();
}

inline std::string describe_this_thread() {
  thread_record& r = this_thread_record();
  return describe_thread(&r, tls_serial);
}

// The message of a wrong_thread exception: what was used, by whom, who owns it, what to do.
inline std::string wrong_thread_message(const std::string& what, thread_record* owner,
                                        std::uint64_t owner_serial, const char* advice) {
  return "tether: " + what + " belongs to " + describe_thread(owner, owner_serial) +
         " but was used from " + describe_this_thread() + "; " + advice;
}

// T's readable name where the ABI can demangle it (messages only).
template <class T>
std::string type_name() {
  const char* mangled = typeid(T).name();
#if __has_include(<cxxabi.h>)
  int status = 0;
  char* readable = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  if (status == 0 && readable != nullptr) {
    std::string out(readable);
    std::free(readable);
    return out;
  }
#endif
  return mangled;
}

// Sets the calling thread's name for tether's messages (in full) and for the OS (the first
// 15 bytes, what top, gdb and /proc show).
inline void set_this_thread_name(std::string_view name) {
  thread_record& r = this_thread_record();
  {
    std::lock_guard lock(r.mutex);
    r.name.assign(name);
  }
  char os_name[16] = {};
  std::memcpy(os_name, name.data(), name.size() < 15 ? name.size() : 15);
#if defined(__APPLE__)
  ::pthread_setname_np(os_name);
#else
  ::pthread_setname_np(::pthread_self(), os_name);
#endif
}

// ---- deadlock detection ---------------------------------------------------------------------

// One link of a wait cycle: `from` is blocked in call() on executor `name`.
struct wait_link {
  thread_record* from;
  std::uint64_t from_serial;
  std::uint64_t call_seq;
  const char* name;
};

inline constexpr std::size_t max_cycle_length = 32;

struct wait_cycle {
  std::array<wait_link, max_cycle_length> links{};
  std::size_t size = 0;  // 0: no cycle
};

// Walks the chain of blocked threads that starts at `owner` (the owner of the executor the
// calling thread, `me`, is about to block on). Reports a cycle only if every link of it was
// held continuously from its first read to a second, confirming read - then at the moment of
// the last first read all links held at once, so every thread in it is blocked for good.
//
// Outline:
//   1. follow owner -> the owner it waits for -> ..., reading each edge seqlock-style;
//      stop at a thread that is not blocked, has exited, or after max_cycle_length links;
//   2. reaching `me` closes a candidate cycle; re-read every link's call_seq and serial;
//   3. all unchanged -> a cycle.
inline wait_cycle find_cycle(thread_record* me, thread_record* owner, std::uint64_t owner_serial) {
  wait_cycle c;
  thread_record* cur = owner;
  std::uint64_t cur_serial = owner_serial;
  std::size_t n = 0;
  while (cur != me) {
    if (n == max_cycle_length || cur == nullptr) return {};
    if (cur->serial.load(std::memory_order_seq_cst) != cur_serial) return {};
    const std::uint64_t seq = cur->call_seq.load(std::memory_order_seq_cst);
    if (seq == 0) return {};
    thread_record* next = cur->waits_for.load(std::memory_order_seq_cst);
    const std::uint64_t next_serial = cur->waits_for_serial.load(std::memory_order_seq_cst);
    const char* name = cur->waits_on_name.load(std::memory_order_seq_cst);
    if (cur->call_seq.load(std::memory_order_seq_cst) != seq) return {};
    if (cur->serial.load(std::memory_order_seq_cst) != cur_serial) return {};
    c.links[n++] = wait_link{cur, cur_serial, seq, name};
    cur = next;
    cur_serial = next_serial;
  }
  // n == 0: the caller owns the target (call() runs those inline before it gets here);
  // a stale serial: the target's owner is a thread that used `me` before and has exited.
  if (n == 0 || cur_serial != tls_serial) return {};
  for (std::size_t i = 0; i < n; ++i) {
    const wait_link& l = c.links[i];
    if (l.from->call_seq.load(std::memory_order_seq_cst) != l.call_seq ||
        l.from->serial.load(std::memory_order_seq_cst) != l.from_serial)
      return {};
  }
  c.size = n;
  return c;
}

// The calling thread's wait edge while it is blocked in call(): published by the
// constructor (before the caller walks the chain), retired by the destructor.
class blocking_call {
 public:
  blocking_call(thread_record& me, thread_record* owner, std::uint64_t owner_serial,
                const char* name) noexcept
      : me_(me) {
    // release: see the banner (the fields are re-checked through call_seq).
    me.waits_for.store(owner, std::memory_order_release);
    me.waits_for_serial.store(owner_serial, std::memory_order_release);
    me.waits_on_name.store(name, std::memory_order_release);
    // seq_cst: publishes the edge before this thread walks the others' (and they ours).
    me.call_seq.store(++me.next_call, std::memory_order_seq_cst);
  }
  ~blocking_call() { me_.call_seq.store(0, std::memory_order_seq_cst); }
  blocking_call(const blocking_call&) = delete;
  blocking_call& operator=(const blocking_call&) = delete;

 private:
  thread_record& me_;
};

}  // namespace tether::detail

// ---- tether/errors.hpp ------------------------------------------------------
// tether/errors.hpp - the exceptions tether throws for misuse and for refused work.
//
// Each message says what happened, who was involved (threads by id and name, executors by
// name) and what to do instead.
//
//   wrong_thread      (std::logic_error)   - an object confined to one thread was used from
//                                             another; thrown by thread_checker, confined<T>,
//                                             executor::check_owner and the owner-only calls.
//   deadlock_error    (std::logic_error)   - a blocking call() would complete a wait cycle and
//                                             never return; thrown instead of hanging.
//   executor_stopped  (std::runtime_error) - the executor no longer accepts work (submit, call),
//                                             or stop(cancel) destroyed a task before it ran
//                                             (delivered through that task's future or call).
//
// Who may call what: these are plain exception types; any thread.
// Memory ordering: none (no shared state).


namespace tether {

class wrong_thread : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

class deadlock_error : public std::logic_error {
 public:
  // executors: the names of the executors in the cycle, starting with the one called.
  deadlock_error(const std::string& what, std::vector<std::string> executors)
      : std::logic_error(what), executors_(std::move(executors)) {}
  const std::vector<std::string>& executors() const noexcept { return executors_; }

 private:
  std::vector<std::string> executors_;
};

class executor_stopped : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace tether

// ---- tether/detail/wait/call_slot.hpp ---------------------------------------
// tether/detail/wait/call_slot.hpp - where a blocking call() waits for its result, on its own stack.
//
// A std::promise / std::future round trip allocates a shared state and, when the waiter has
// gone to sleep, costs a futex wake-up. call() needs neither: the caller owns a call_slot on
// its stack, the owner thread writes the result (or exception) into it and completes it, and
// the caller waits with the one wait strategy (the parker: spin briefly when the answer is
// expected soon, then park).
//
// The slot lives on the caller's stack, so the caller must not return while the completer
// still touches it. Completion is two stores around the wake-up: `done` (the result is
// there; the caller may stop waiting) and, after notifying, `released` (the completer is
// finished with the slot). A caller that saw `done` backs off until `released`: a few
// instructions, or one futex wake system call if the caller had parked - the point where a
// preempted completer makes the caller wait.
//
// Who may call what: complete()/set_*() - the one completer (the owner thread, or whoever
// destroys the unrun task); wait()/take() - the caller that owns the slot.
//
// Memory ordering: [S1] the release store of `done` publishes the result to the caller's
// acquire/seq_cst loads in wait(); [S2] the release store of `released` orders the
// completer's last touch of the slot before the caller's acquire load, after which the
// caller may destroy it.

#include <exception>
#include <functional>


namespace tether::detail {

template <class R>
class call_slot {
 public:
  call_slot() = default;
  call_slot(const call_slot&) = delete;
  call_slot& operator=(const call_slot&) = delete;

  // Completer: runs f and stores its result or exception, then completes.
  template <class F>
  void run(F&& f) noexcept {
    try {
      if constexpr (std::is_void_v<R>) {
        std::invoke(std::forward<F>(f));
      } else if constexpr (std::is_reference_v<R>) {
        value_ = std::addressof(std::invoke(std::forward<F>(f)));
      } else {
        value_.emplace(std::invoke(std::forward<F>(f)));
      }
    } catch (...) {
      error_ = std::current_exception();
    }
    complete();
  }

  // Completer: completes with an exception instead of running.
  void fail(std::exception_ptr e) noexcept {
    error_ = std::move(e);
    complete();
  }

  // Caller: blocks until completed. spin: spin briefly before parking (the answer is
  // expected soon); else park at once (parker.hpp).
  void wait(bool spin) noexcept {
    park(parker_, [this] { return state_.load(std::memory_order_seq_cst) != pending; }, no_deadline, spin);
    backoff b;
    // After `released`, nothing else touches the slot.
    while (state_.load(std::memory_order_acquire) != released) b.snooze();  // acquire: pairs with [S2]
  }

  // Caller, after wait(): the result, or rethrows the exception.
  R take() {
    if (error_) std::rethrow_exception(error_);
    if constexpr (std::is_void_v<R>) {
      return;
    } else if constexpr (std::is_reference_v<R>) {
      return static_cast<R>(*value_);
    } else {
      return std::move(*value_);
    }
  }

 private:
  static constexpr std::uint32_t pending = 0;
  static constexpr std::uint32_t done = 1;
  static constexpr std::uint32_t released = 2;

  void complete() noexcept {
    state_.store(done, std::memory_order_release);  // [S1] release: publishes value_ / error_
    parker_.notify_one();
    state_.store(released, std::memory_order_release);  // [S2] release: the completer's last touch
  }

  using storage = std::conditional_t<std::is_void_v<R>, char,
                                     std::conditional_t<std::is_reference_v<R>,
                                                        std::remove_reference_t<R>*,
                                                        std::optional<R>>>;
  storage value_{};
  std::exception_ptr error_;
  // Written by the completer (pending -> done -> released); read by the caller.
  std::atomic<std::uint32_t> state_{pending};
  // One wait per call, one notify per call: full fences on both sides beat a membarrier.
  parker parker_{fences::symmetric};
};

}  // namespace tether::detail

// ---- tether/detail/executor/task.hpp ----------------------------------------
// tether/detail/executor/task.hpp - a move-only, small-buffer `void()` callable: what executors queue.
//
// Like std::move_only_function<void()> (C++23), with a buffer sized so that a task fills one
// cache line: callables of up to 56 bytes whose move constructor does not throw live inside
// the task (no allocation); larger ones, over-aligned ones and ones with a throwing move go to
// the heap. A task is invoked at most once, as an rvalue, so `&&`-qualified call operators and
// move-only captures both work.
//
// A task may be marked internal (executor bookkeeping, e.g. "insert this timer"): the
// executor runs it without the user's around_task wrapper and does not count it.
//
// Who may call what: a task is a value; one thread at a time.
// Memory ordering: none (no shared state).


namespace tether::detail {

struct internal_task_t {
  explicit internal_task_t() = default;
};
inline constexpr internal_task_t internal_task{};

class task {
 public:
  static constexpr std::size_t buffer_size = 56;
  static constexpr std::size_t buffer_align = alignof(void*);

  // True if F is stored inside the task (no allocation).
  template <class F>
  static constexpr bool stored_inline = sizeof(F) <= buffer_size && alignof(F) <= buffer_align &&
                                        std::is_nothrow_move_constructible_v<F>;

  task() noexcept = default;

  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, task> &&
                                              !std::is_same_v<std::decay_t<F>, internal_task_t>>>
  task(F&& f) {  // NOLINT: implicit, like std::function
    emplace<std::decay_t<F>, false>(std::forward<F>(f));
  }

  template <class F, class... Args>
  explicit task(std::in_place_type_t<F>, Args&&... args) {
    emplace<F, false>(std::forward<Args>(args)...);
  }

  template <class F, class... Args>
  task(internal_task_t, std::in_place_type_t<F>, Args&&... args) {
    emplace<F, true>(std::forward<Args>(args)...);
  }

  task(task&& other) noexcept : ops_(other.ops_) {
    if (ops_ != nullptr) {
      ops_->relocate(other.buffer_, buffer_);
      other.ops_ = nullptr;
    }
  }
  task& operator=(task&& other) noexcept {
    if (this != &other) {
      reset();
      if (other.ops_ != nullptr) {
        other.ops_->relocate(other.buffer_, buffer_);
        ops_ = other.ops_;
        other.ops_ = nullptr;
      }
    }
    return *this;
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;
  ~task() { reset(); }

  explicit operator bool() const noexcept { return ops_ != nullptr; }
  bool is_internal() const noexcept { return ops_ != nullptr && ops_->internal; }
  bool is_inline() const noexcept { return ops_ != nullptr && ops_->inline_storage; }

  // Runs the callable (at most once). Precondition: not empty.
  void operator()() { ops_->invoke(buffer_); }

  // Destroys the callable now (its destructor runs here).
  void reset() noexcept {
    if (ops_ != nullptr) {
      const ops* o = ops_;
      ops_ = nullptr;
      o->destroy(buffer_);
    }
  }

 private:
  struct ops {
    void (*invoke)(void* buffer);
    void (*relocate)(void* from, void* to) noexcept;  // move-construct into `to`, destroy `from`
    void (*destroy)(void* buffer) noexcept;
    bool internal;
    bool inline_storage;
  };

  template <class F, bool Internal>
  struct inline_ops {
    static F* get(void* b) noexcept { return std::launder(static_cast<F*>(b)); }
    static void invoke(void* b) { std::invoke(std::move(*get(b))); }
    static void relocate(void* from, void* to) noexcept {
      ::new (to) F(std::move(*get(from)));
      get(from)->~F();
    }
    static void destroy(void* b) noexcept { get(b)->~F(); }
    static constexpr ops table{&invoke, &relocate, &destroy, Internal, true};
  };

  template <class F, bool Internal>
  struct heap_ops {
    static F*& get(void* b) noexcept { return *std::launder(static_cast<F**>(b)); }
    static void invoke(void* b) { std::invoke(std::move(*get(b))); }
    static void relocate(void* from, void* to) noexcept { ::new (to) F*(get(from)); }
    static void destroy(void* b) noexcept { delete get(b); }
    static constexpr ops table{&invoke, &relocate, &destroy, Internal, false};
  };

  template <class F, bool Internal, class... Args>
  void emplace(Args&&... args) {
    static_assert(std::is_invocable_v<F&&>, "tether: a task must be callable with no arguments");
    static_assert(std::is_nothrow_destructible_v<F>, "tether: a task's destructor must not throw");
    if constexpr (stored_inline<F>) {
      ::new (static_cast<void*>(buffer_)) F(std::forward<Args>(args)...);
      ops_ = &inline_ops<F, Internal>::table;
    } else {
      ::new (static_cast<void*>(buffer_)) F*(new F(std::forward<Args>(args)...));
      ops_ = &heap_ops<F, Internal>::table;
    }
  }

  alignas(buffer_align) unsigned char buffer_[buffer_size];
  const ops* ops_ = nullptr;
};

static_assert(sizeof(task) == 64, "a task fills one cache line");

}  // namespace tether::detail

// ---- tether/executor_options.hpp --------------------------------------------
// tether/executor_options.hpp - how an executor is set up, and what it reports.
//
//   tether::executor ex{{.name = "julia",
//                        .on_start = [] { init_runtime(); },
//                        .around_task = tether::install_context<julia_tag>(task),
//                        .on_error = [](std::exception_ptr e) { log(e); }}};
//
// The vocabulary of executor.hpp: the adopt_current_thread tag, stop modes, executor_options,
// the task_view an around_task wrapper receives, executor_stats and timer_status.
//
// Who may call what: plain values; any thread. A task_view - the owner thread, inside
// around_task, exactly once.
// Memory ordering: none (no shared state).



namespace tether {

namespace detail {
class executor_core;
}  // namespace detail

// Constructing an executor with this tag makes the calling thread its owner.
struct adopt_current_thread_t {
  explicit adopt_current_thread_t() = default;
};
inline constexpr adopt_current_thread_t adopt_current_thread{};

// stop(drain): run everything accepted, then stop; stop(cancel): destroy it unrun.
enum class stop_mode : std::uint8_t { drain, cancel };
inline constexpr stop_mode drain = stop_mode::drain;
inline constexpr stop_mode cancel = stop_mode::cancel;

// The task an around_task wrapper must run, exactly once.
class task_view {
 public:
  void operator()() const {
    if (*ran_) throw std::logic_error("tether::task_view: a task may run only once");
    *ran_ = true;
    (*task_)();
  }

 private:
  friend class detail::executor_core;
  task_view(detail::task& t, bool& ran) noexcept : task_(&t), ran_(&ran) {}
  detail::task* task_;
  bool* ran_;
};

struct executor_options {
  std::string name{};                // in thread names, error messages and deadlock reports
  std::function<void()> on_start{};  // owner thread, before the first task
  std::function<void()> on_stop{};   // owner thread, after the last task
  // Wraps every task (install context guards here); must call its argument exactly once.
  std::function<void(task_view)> around_task{};
  // Receives exceptions escaping post()ed tasks and hooks, on the owner thread. Unset: the
  // process terminates. An exception it throws leaves run() (or terminates the own thread).
  std::function<void(std::exception_ptr)> on_error{};
  bool wake_fd = false;  // export a descriptor readable while tasks are pending (wake_fd())
};

// Snapshot of an executor's counters; every field may be stale (relaxed reads).
struct executor_stats {
  std::uint64_t tasks_posted = 0;     // approx: run + cancelled + queued + delayed pending
  std::uint64_t tasks_run = 0;
  std::uint64_t tasks_cancelled = 0;  // destroyed unrun by stop(cancel), or delayed and dropped
  std::size_t queue_depth = 0;        // approx
  std::size_t timers_pending = 0;     // delayed tasks waiting for their deadline
  std::chrono::nanoseconds wait_time{0};  // owner parked, waiting for work
  std::chrono::nanoseconds run_time{0};   // owner running tasks
};

// What became of a delayed task (timer_handle::status()).
enum class timer_status : std::uint8_t { pending, running, ran, cancelled, stopped };

}  // namespace tether

// ---- tether/detail/executor/timer_heap.hpp ----------------------------------
// tether/detail/executor/timer_heap.hpp - the owner's min-heap of delayed tasks.
//
// post_at() from any thread allocates a timer_state (shared with the caller's handle) and
// pushes one internal task through the executor's queue; that task, run by the owner,
// inserts the state here. So the heap is owner-only (no lock), a delayed post costs one
// queue push, and the owner parks until the earliest deadline (no polling tick).
//
// Cancellation is lazy: cancel() flips the state to cancelled, and the owner throws the entry
// away (destroying its callable on the owner thread) when its deadline comes up.
//
// Who may call what: timer_heap - the owner thread only. timer_state::phase - any thread
// (try_cancel), the owner (try_start / finish / drop).
//
// Memory ordering: phase transitions are compare-exchanges from `pending`; exactly one of
// cancel (any thread) and start / drop (owner) wins. They publish no data (the callable is
// owner-only), so acq_rel is only for readers of status() that then look at their own state.



namespace tether::detail {

enum class timer_phase : std::uint8_t { pending, running, ran, cancelled, stopped };

struct timer_state {
  timer_state(steady_time at, task f) : when(at), fn(std::move(f)) {}

  bool try_transition(timer_phase to) noexcept {
    timer_phase expected = timer_phase::pending;
    return phase.compare_exchange_strong(expected, to, std::memory_order_acq_rel);  // acq_rel: pairs with status()'s acquire
  }

  // Written by cancel() (any thread) and by the owner; read by any thread.
  std::atomic<timer_phase> phase{timer_phase::pending};
  const steady_time when;
  std::uint64_t seq = 0;  // owner only: FIFO among equal deadlines
  task fn;                // owner only once queued
};

class timer_heap {
 public:
  void push(std::shared_ptr<timer_state> t) {
    t->seq = next_seq_++;
    heap_.push_back(std::move(t));
    std::push_heap(heap_.begin(), heap_.end(), later);
  }

  bool empty() const noexcept { return heap_.empty(); }
  std::size_t size() const noexcept { return heap_.size(); }

  steady_time next_deadline() const noexcept { return heap_.empty() ? no_deadline : heap_.front()->when; }

  // Removes and returns the earliest entry if it is due at `now`; else nullptr.
  std::shared_ptr<timer_state> pop_due(steady_time now) {
    if (heap_.empty() || heap_.front()->when > now) return nullptr;
    std::pop_heap(heap_.begin(), heap_.end(), later);
    std::shared_ptr<timer_state> t = std::move(heap_.back());
    heap_.pop_back();
    return t;
  }

  // Removes and returns every entry, earliest first.
  std::vector<std::shared_ptr<timer_state>> take_all() {
    std::sort_heap(heap_.begin(), heap_.end(), later);  // ascending by `later`: latest first
    std::reverse(heap_.begin(), heap_.end());
    return std::exchange(heap_, {});
  }

 private:
  static bool later(const std::shared_ptr<timer_state>& a, const std::shared_ptr<timer_state>& b) noexcept {
    return a->when != b->when ? a->when > b->when : a->seq > b->seq;
  }

  std::vector<std::shared_ptr<timer_state>> heap_;
  std::uint64_t next_seq_ = 0;
};

}  // namespace tether::detail

// ---- tether/detail/platform/wake_fd.hpp -------------------------------------
// tether/detail/platform/wake_fd.hpp - the platform seam for a file descriptor a foreign loop can watch.
//
// signal() makes the descriptor readable now; arm(deadline) makes it not readable until
// `deadline` (never, for no_deadline) and forgets earlier signals. So one descriptor wakes
// the loop both for posted tasks and for the executor's earliest delayed task.
//
// Linux: a timerfd on CLOCK_MONOTONIC (what steady_clock reads). signal() sets it to expire
// at an absolute time already past; arm() sets the real deadline (timerfd_settime resets
// the expiry count, which is what makes the descriptor readable).
// Other POSIX systems: a non-blocking pipe; arm() drains it and cannot honour a deadline, so
// there a foreign loop must also call poll() by the executor's next delayed deadline.
//
// The executor calls signal() once per batch, not once per task (see its wake_pending_).
//
// Who may call what: signal() and fd() - any thread; arm() - the owner.
// Memory ordering: none here; the executor orders its flag around these calls (and the
// kernel serializes the calls on one descriptor).

#include <cerrno>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/timerfd.h>
#endif


namespace tether::detail {

class wake_fd {
 public:
  wake_fd() {
#if defined(__linux__)
    read_ = write_ = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (read_ < 0) throw std::system_error(errno, std::generic_category(), "tether: timerfd_create");
#else
    int fds[2];
    if (::pipe(fds) != 0) throw std::system_error(errno, std::generic_category(), "tether: pipe");
    for (int fd : fds) {
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    read_ = fds[0];
    write_ = fds[1];
#endif
  }
  ~wake_fd() {
    ::close(read_);
    if (write_ != read_) ::close(write_);
  }
  wake_fd(const wake_fd&) = delete;
  wake_fd& operator=(const wake_fd&) = delete;

  int fd() const noexcept { return read_; }

  // Readable now.
  void signal() noexcept {
#if defined(__linux__)
    itimerspec past{};
    past.it_value.tv_nsec = 1;  // absolute 1 ns after boot: already expired (0 would disarm)
    ::timerfd_settime(read_, TFD_TIMER_ABSTIME, &past, nullptr);
#else
    const char one = 1;
    ssize_t rc;
    do rc = ::write(write_, &one, 1);
    while (rc < 0 && errno == EINTR);  // EAGAIN: the pipe is full, hence readable already
#endif
  }

  // Not readable until `deadline` (never for no_deadline); earlier signals are forgotten.
  void arm(steady_time deadline) noexcept {
#if defined(__linux__)
    itimerspec when{};
    if (deadline != no_deadline) {
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
      if (ns <= 0) ns = 1;
      when.it_value.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
      when.it_value.tv_nsec = static_cast<long>(ns % 1'000'000'000);
    }
    ::timerfd_settime(read_, TFD_TIMER_ABSTIME, &when, nullptr);
#else
    (void)deadline;
    char buf[256];
    for (;;) {
      const ssize_t rc = ::read(read_, buf, sizeof buf);
      if (rc > 0 || (rc < 0 && errno == EINTR)) continue;
      break;
    }
#endif
  }

 private:
  int read_ = -1;
  int write_ = -1;
};

}  // namespace tether::detail

// ---- tether/detail/executor/executor_core.hpp -------------------------------
// tether/detail/executor/executor_core.hpp - the owner's side of tether::executor.
//
// executor.hpp holds what callers use (post, submit, call, stop, ...); this holds what they
// feed: the queue of tasks, the owner's loop (due delayed tasks, ready tasks in batches, the
// wake fd, parking when idle), the stop sequence, the queued job types and the counters.
// executor derives from executor_core privately; nothing here is public API.
//
// Who may call what: the owner-side functions (loop, idle_until, run_*, finish_stop,
// quiet_wake_fd) - the owner thread only; after_push / wake_owner / arm_wake_fd - any
// producer, after a successful push.
//
// Memory ordering: the queue's release publish of each task pairs with the owner's acquire
// (mpsc_queue.hpp). [A1]/[A2]: an idle owner raises asleep_ and then checks the queue; a
// producer pushes (a seq_cst claim) and then checks asleep_ - all seq_cst, so one of them
// sees the other (the parker's fence covers the owner's final re-check). [W1]/[W2]: the
// wake-fd flag is flipped with acq_rel exchanges on both sides, so the owner's clearing
// exchange synchronizes with every producer whose set came before it (their tasks are
// visible to the owner's re-scan) and every later producer sees the clear and signals again.
// Statistics are relaxed counters written only by the owner.

#include <cstdio>
#include <future>
#include <stop_token>


namespace tether::detail {

// How many times spin_phase() checks its condition in its pause phase (it then yields a few
// times, checking again, before it parks): mirrors the loop in parker.hpp. The owner's idle
// wait uses park() (never the adaptive park_until), so every spin phase runs in full.
constexpr int park_spin_checks() {
  int n = 0;
  for (int i = 0, pause = spin_pause_first; i < spin_limit; i += pause, pause = pause < spin_pause_max ? pause * 2 : pause)
    ++n;
  return n;
}

class executor_core {
 protected:
  using clock = std::chrono::steady_clock;
  enum class run_kind { forever, one, poll, until };

  executor_core(executor_options&& o, bool adopted)
      : own_thread_(!adopted),
        name_(std::move(o.name)),
        name_id_(detail::intern_name(name_)),
        on_start_(std::move(o.on_start)),
        on_stop_(std::move(o.on_stop)),
        around_task_(std::move(o.around_task)),
        on_error_(std::move(o.on_error)),
        fd_(o.wake_fd ? std::make_unique<detail::wake_fd>() : nullptr) {}

  // ---- identity ----------------------------------------------------------------------------

  bool running_in_this_thread() const noexcept { return tls_serial == owner_serial_; }

  void check_owner_thread(std::string_view what) const {
    if (running_in_this_thread()) return;
    std::string subject = std::string("executor '") + name_or_unnamed() + "'";
    if (!what.empty()) subject = std::string(what) + " confined to " + subject;
    throw wrong_thread(wrong_thread_message(subject, owner_record_, owner_serial_,
                                            "hand the work over with post(), submit() or call()"));
  }

  // ---- queued job types ----------------------------------------------------------------------

  // submit(): fulfils the promise, or fails it with executor_stopped if destroyed unrun.
  template <class F, class R>
  struct submit_job {
    template <class G>
    submit_job(const executor_core* e, G&& g, std::promise<R>&& p) : fn(std::forward<G>(g)), promise(std::move(p)), ex(e) {}
    submit_job(submit_job&& o) noexcept(std::is_nothrow_move_constructible_v<F>)
        : fn(std::move(o.fn)), promise(std::move(o.promise)), ex(o.ex), done(std::exchange(o.done, true)) {}
    void operator()() {
      done = true;
      try {
        if constexpr (std::is_void_v<R>) {
          std::invoke(std::move(fn));
          promise.set_value();
        } else {
          promise.set_value(std::invoke(std::move(fn)));
        }
      } catch (...) {
        promise.set_exception(std::current_exception());
      }
    }
    ~submit_job() {
      if (done) return;
      try {
        promise.set_exception(std::make_exception_ptr(executor_stopped(ex->dropped("submit()"))));
      } catch (...) {
        try {
          promise.set_exception(std::current_exception());  // out of memory: bad_alloc instead
        } catch (...) {  // cannot happen (the promise is unsatisfied); its destructor reports
        }
      }
    }
    F fn;
    std::promise<R> promise;
    const executor_core* ex;
    bool done = false;
  };

  // call(): runs the caller's callable in place (it outlives the call) into the caller's slot.
  template <class F, class R>
  struct call_job {
    call_job(const executor_core* e, std::remove_reference_t<F>* f, detail::call_slot<R>* s) noexcept : fn(f), slot(s), ex(e) {}
    call_job(call_job&& o) noexcept : fn(o.fn), slot(std::exchange(o.slot, nullptr)), ex(o.ex) {}
    void operator()() { std::exchange(slot, nullptr)->run(std::forward<F>(*fn)); }
    ~call_job() {
      if (slot == nullptr) return;
      try {
        slot->fail(std::make_exception_ptr(executor_stopped(ex->dropped("call()"))));
      } catch (...) {
        slot->fail(std::current_exception());  // out of memory: the caller gets bad_alloc
      }
    }
    std::remove_reference_t<F>* fn;
    detail::call_slot<R>* slot;
    const executor_core* ex;
  };

  // post_at(): inserts the timer into the owner's heap; destroyed unrun -> stopped.
  struct timer_registration {
    timer_registration(executor_core* e, std::shared_ptr<detail::timer_state> s) noexcept : ex(e), state(std::move(s)) {}
    timer_registration(timer_registration&& o) noexcept : ex(o.ex), state(std::move(o.state)) {}
    executor_core* ex;
    std::shared_ptr<detail::timer_state> state;
    void operator()() {
      ex->timers_.push(std::move(state));
      ex->timers_pending_.store(ex->timers_.size(), std::memory_order_relaxed);  // relaxed: statistic
    }
    ~timer_registration() {
      if (!state) return;
      state->try_transition(detail::timer_phase::stopped);
      state->fn.reset();
    }
  };

  // ---- producer side -------------------------------------------------------------------------

  // Returns true if the owner was asleep and this push woke it: its answer is then at least
  // a wake-up away.
  bool after_push() noexcept {
    const bool woke = wake_owner();
    if (fd_) arm_wake_fd();
    return woke;
  }

  // Wakes an owner parked in idle_until(); of the producers that find it asleep, only the
  // one that lowers the flag makes the system call. True if that was this call and the
  // owner was (about to be) asleep in the kernel, not still spinning.
  bool wake_owner() noexcept {
    // [A2] seq_cst: our push (a seq_cst claim) precedes this load; pairs with [A1].
    if (asleep_.load(std::memory_order_seq_cst) && asleep_.exchange(false, std::memory_order_seq_cst)) {
      woken_at_.store(clock::now().time_since_epoch().count(), std::memory_order_relaxed);  // relaxed: a hint
      return owner_wait_.notify_one();
    }
    return false;
  }

  // Only the producer that flips the flag false -> true writes the descriptor: one write per
  // batch, however many tasks are posted before the owner drains.
  void arm_wake_fd() noexcept {
    // release publishes our task to the owner's [W2]; acquire sees its clear.
    if (!wake_pending_.exchange(true, std::memory_order_acq_rel)) fd_->signal();  // [W1] acq_rel: pairs with [W2]
  }

  // ---- owner side ----------------------------------------------------------------------------

  void thread_main() {
    detail::adopt_record(owner_record_);
    if (!name_.empty()) detail::set_this_thread_name(name_);
    run_hook(on_start_);
    in_run_ = true;
    loop(run_kind::forever, detail::no_deadline, nullptr);
    in_run_ = false;
  }

  // `max` caps the tasks one call runs (run_kind::poll only; a poller's batch, select.hpp).
  std::size_t drive(run_kind kind, detail::steady_time deadline, const std::stop_token* token,
                    std::size_t max = SIZE_MAX) {
    if (own_thread_)
      throw std::logic_error("tether: executor '" + std::string(name_or_unnamed()) +
                             "' runs its own thread; run()/poll() are for executors constructed with adopt_current_thread");
    check_owner_thread({});
    if (in_run_)
      throw std::logic_error("tether: run()/poll() on executor '" + std::string(name_or_unnamed()) +
                             "' from inside one of its own tasks");
    in_run_ = true;
    struct leave {
      bool& flag;
      ~leave() { flag = false; }
    } leave_run{in_run_};
    if (token == nullptr) return loop(kind, deadline, nullptr, max);
    // A stop request wakes a parked owner with an empty task (skipped when run).
    std::stop_callback wake(*token, [this]() noexcept {
      try {
        if (queue_.push(detail::task{})) after_push();
      } catch (...) {  // out of memory: the owner notices the token at its next wake-up
      }
    });
    return loop(kind, deadline, token, max);
  }

  // The owner's loop: due timers, ready tasks, quiet the wake fd, then park until the next
  // task, the next timer or the deadline.
  //
  // Outline:
  //   1. finished or token stopped -> return;
  //   2. run due delayed tasks, then up to a batch of ready tasks;
  //   3. queue closed and drained -> finish the stop (timers, on_stop) and return;
  //   4. nothing ready: quiet the wake fd (re-scan if a producer signalled); poll()
  //      returns here;
  //   5. park in idle_until(min(deadline, next timer)), then go round again.
  std::size_t loop(run_kind kind, detail::steady_time deadline, const std::stop_token* token,
                   std::size_t max = SIZE_MAX) {
    const std::size_t want = kind == run_kind::one ? 1 : max;
    std::size_t n = 0;
    for (;;) {
      if (finished_.load(std::memory_order_relaxed)) return n;  // relaxed: only the owner writes it
      if (token != nullptr && token->stop_requested()) return n;
      n += run_due_timers(want - n);
      if (n >= want) return n;
      const ready_step step = run_ready(want - n);
      n += step.ran;
      if (step.closed) {
        finish_stop();
        return n;
      }
      if (n >= want) return n;
      if (step.more) continue;
      if (quiet_wake_fd()) continue;
      if (kind == run_kind::poll) return n;
      const detail::steady_time until = std::min(deadline, timers_.next_deadline());
      if (until != detail::no_deadline && clock::now() >= until) {
        if (clock::now() >= deadline) return n;
        continue;  // a timer is due
      }
      const auto t0 = clock::now();
      parked_since_ns_.store(t0.time_since_epoch().count(), std::memory_order_relaxed);  // relaxed: statistic
      const bool woken = idle_until(until, n);
      parked_since_ns_.store(0, std::memory_order_relaxed);  // relaxed: statistic
      add(wait_ns_, clock::now() - t0);
      if (n >= want) return n;
      if (woken) continue;
      if (deadline != detail::no_deadline && clock::now() >= deadline) return n;
    }
  }

  // Parks the owner until work may be ready, the queue closed, or `until`; false on timeout.
  // Adds to `ran` the task it ran, if any.
  //
  // Outline:
  //   1. a task claimed but not yet published (a producer between its claim and its
  //      publish): wait in the queue's own pop, which parks on that slot;
  //   2. otherwise raise asleep_ and park on owner_wait_ until a producer lowers it (only
  //      that one producer pays the wake-up system call: the rest see it lowered) or the
  //      queue shows work. While raised, producers flip it; the spin phase catches most.
  bool idle_until(detail::steady_time until, std::size_t& ran) {
    if (queue_.size_approx() != 0) {
      pop_result<detail::task> r = queue_.pop_until(until);
      if (r) {
        const auto t1 = clock::now();
        ran += run_item(*r);
        r = status::empty;  // destroy the task before timing stops
        add(run_ns_, clock::now() - t1);
      }
      return !r.is_timeout();
    }
    // Spin only while idle periods stay short (after one that outlasted the spin, park at
    // once) and at most one caller is blocked in call(): with the queue empty, several
    // callers in call() have all been answered and need cores to come back - a spinning
    // owner would take one from the very threads that feed it.
    // Spinning, the flag is raised halfway through park_until's spin: short gaps between
    // tasks cost producers nothing, and it is up (before the parker's fence) when the owner
    // sleeps. Parking at once, it is raised first.
    const bool spin = spin_when_idle_ && callers_.load(std::memory_order_relaxed) <= 1;  // relaxed: a hint
    const int raise_at = spin ? raise_asleep_at : 0;
    int checks = 0;
    // Stores only when needed, here and below: producers read this line on every push, and
    // an owner that rewrote it on every idle period would pull it from them each time.
    if (woken_at_.load(std::memory_order_relaxed) != 0)  // relaxed: a heuristic's input
      woken_at_.store(0, std::memory_order_relaxed);      // relaxed: as above
    if (raise_at == 0) asleep_.store(true, std::memory_order_seq_cst);  // [A1]
    const auto t0 = clock::now();
    const bool woken = detail::park(
        owner_wait_,
        [this, &checks, raise_at] {
          if (++checks == raise_at) asleep_.store(true, std::memory_order_seq_cst);  // [A1] pairs with [A2]
          else if (checks > raise_at && !asleep_.load(std::memory_order_seq_cst)) return true;
          return queue_.size_approx() != 0 || queue_.is_closed();
        },
        until, spin);
    if (asleep_.load(std::memory_order_relaxed))        // relaxed: only saves producers a wake
      asleep_.store(false, std::memory_order_relaxed);  // relaxed: as above
    // The idle period ended when work arrived (stamped by the waking producer), not when
    // the owner got the core back: a slow wake-up must not keep the owner from spinning.
    const clock::rep woke = woken_at_.load(std::memory_order_relaxed);  // relaxed: as above
    const auto end = woke != 0 ? clock::time_point(clock::duration(woke)) : clock::now();
    spin_when_idle_ = end - t0 < short_idle;
    return woken;
  }

  static constexpr int raise_asleep_at = detail::park_spin_checks() / 2;  // 0: before parking at all
  // An idle period this short would have ended inside park_until's spin.
  static constexpr std::chrono::microseconds short_idle{50};

  struct ready_step {
    std::size_t ran;
    bool more;    // stopped at the batch limit: there may be more
    bool closed;  // closed and drained
  };

  ready_step run_ready(std::size_t max_user) {
    constexpr std::size_t batch = 64;
    const std::size_t limit = std::min(batch, max_user);
    std::size_t ran = 0;
    clock::time_point t0{};
    const std::size_t taken = queue_.drain(
        [&](detail::task&& t) {
          if (t0 == clock::time_point{}) t0 = clock::now();
          ran += run_item(t);  // t is destroyed by the queue right after, still inside the batch
        },
        limit);
    if (taken == limit) {
      add(run_ns_, clock::now() - t0);
      return {ran, true, false};
    }
    pop_result<detail::task> r = queue_.try_pop();  // fewer than asked: empty, in flight or closed?
    if (r) {
      if (t0 == clock::time_point{}) t0 = clock::now();
      ran += run_item(*r);
      r = status::empty;
      add(run_ns_, clock::now() - t0);
      return {ran, true, false};
    }
    if (taken != 0) add(run_ns_, clock::now() - t0);
    return {ran, false, r.is_closed()};
  }

  // Runs (or, after stop(cancel), destroys) one dequeued item; returns 1 if it ran a task.
  std::size_t run_item(detail::task& t) {
    if (!t) return 0;  // a wake-up marker
    if (t.is_internal()) {
      try {
        t();
      } catch (...) {
        report_current_exception();
      }
      return 0;
    }
    if (cancel_.load(std::memory_order_relaxed)) {  // relaxed: racing a cancel either way is fine
      t.reset();
      add(cancelled_, 1);
      return 0;
    }
    run_user(t);
    add(ran_, 1);
    return 1;
  }

  std::size_t run_due_timers(std::size_t max) {
    if (timers_.empty()) return 0;
    std::size_t n = 0;
    const auto now = clock::now();
    while (n < max) {
      std::shared_ptr<detail::timer_state> t = timers_.pop_due(now);
      if (!t) break;
      if (t->try_transition(detail::timer_phase::running)) {
        run_user(t->fn);
        t->phase.store(detail::timer_phase::ran, std::memory_order_release);  // release: pairs with status()
        add(ran_, 1);
        ++n;
      }
      t->fn.reset();
    }
    timers_pending_.store(timers_.size(), std::memory_order_relaxed);  // relaxed: statistic
    if (n != 0) add(run_ns_, clock::now() - now);
    return n;
  }

  // The queue is closed and drained: settle the delayed tasks, run on_stop, finish.
  void finish_stop() {
    const bool cancelled = cancel_.load(std::memory_order_seq_cst);
    const auto now = clock::now();
    for (std::shared_ptr<detail::timer_state>& t : timers_.take_all()) {
      if (!cancelled && t->when <= now && t->try_transition(detail::timer_phase::running)) {
        run_user(t->fn);
        t->phase.store(detail::timer_phase::ran, std::memory_order_release);  // release: pairs with status()
        add(ran_, 1);
      } else if (t->try_transition(detail::timer_phase::stopped)) {
        add(cancelled_, 1);
      }
      t->fn.reset();
    }
    timers_pending_.store(0, std::memory_order_relaxed);  // relaxed: statistic
    if (fd_) {
      fd_->arm(detail::no_deadline);
      wake_pending_.store(false, std::memory_order_release);  // release: nothing pairs; quiet for good
    }
    run_hook(on_stop_);
    finished_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    state_wait_.notify_all();
  }

  // Quiets the wake fd until the next delayed deadline (or the next signal); true if a
  // producer signalled since the last quiet (the caller re-scans: its task may be waiting).
  //
  // Outline:
  //   1. no signal since the last quiet and the deadline unchanged -> nothing to do (a
  //      producer that sets the flag after our load signals the fd itself);
  //   2. arm the fd for the next deadline, which also forgets pending signals;
  //   3. clear the flag: producers that set it after this signal after our arm.
  bool quiet_wake_fd() {
    if (!fd_) return false;
    const detail::steady_time next = timers_.next_deadline();
    // A stale `false` is harmless: that producer's signal comes after this load.
    if (!wake_pending_.load(std::memory_order_acquire) && next == armed_deadline_) return false;  // acquire: as [W2]
    fd_->arm(next);
    armed_deadline_ = next;
    // Acquire pairs with every [W1] before it (their tasks are visible to our re-scan);
    // release lets later producers see the clear, so they signal after our arm.
    return wake_pending_.exchange(false, std::memory_order_acq_rel);  // [W2] acq_rel: pairs with [W1]
  }

  // Runs a user task through around_task; exceptions go to the error policy.
  void run_user(detail::task& t) {
    const bool outer = in_task_;
    in_task_ = true;
    try {
      if (around_task_) {
        bool ran = false;
        around_task_(task_view(t, ran));
        if (!ran) throw std::logic_error("tether: executor '" + std::string(name_or_unnamed()) +
                                         "': around_task returned without running the task");
      } else {
        t();
      }
    } catch (...) {
      in_task_ = outer;
      report_current_exception();
      return;
    }
    in_task_ = outer;
  }

  // On the owner thread: runs f now, through around_task unless already inside a task.
  template <class R, class F>
  R run_inline(F&& f) {
    if (in_task_ || !around_task_) {
      const bool outer = in_task_;
      in_task_ = true;
      struct restore {
        bool& flag;
        bool value;
        ~restore() { flag = value; }
      } r{in_task_, outer};
      return std::invoke(std::forward<F>(f));
    }
    detail::call_slot<R> slot;
    detail::task t([&] { slot.run(std::forward<F>(f)); });
    bool ran = false;
    {
      in_task_ = true;
      struct restore {
        bool& flag;
        ~restore() { flag = false; }
      } r{in_task_};
      around_task_(task_view(t, ran));
    }
    if (!ran)
      throw std::logic_error("tether: executor '" + std::string(name_or_unnamed()) +
                             "': around_task returned without running the task");
    return slot.take();
  }

  void run_hook(const std::function<void()>& hook) {
    if (!hook) return;
    try {
      hook();
    } catch (...) {
      report_current_exception();
    }
  }

  // Called inside a catch block.
  void report_current_exception() {
    if (on_error_) {
      on_error_(std::current_exception());
      return;
    }
    std::fprintf(stderr,
                 "tether: an exception escaped a task of executor '%s' and no on_error handler is set\n",
                 name_or_unnamed());
    std::terminate();  // inside the catch block: the runtime prints the exception
  }

  void check_cycle(detail::thread_record& me) const {
    const detail::wait_cycle c = detail::find_cycle(&me, owner_record_, owner_serial_);
    if (c.size == 0) return;
    std::vector<std::string> names{name_or_unnamed()};
    std::string msg = "tether: call() on executor '" + names[0] + "' from " + detail::describe_this_thread() +
                      " would never return: ";
    std::string current = names[0];
    for (std::size_t i = 0; i < c.size; ++i) {
      const detail::wait_link& l = c.links[i];
      const std::string next = l.name != nullptr ? l.name : "(unnamed)";
      msg += "'" + current + "' is owned by " + detail::describe_thread(l.from, l.from_serial) +
             ", which is blocked in call() on '" + next + "'; ";
      names.push_back(next);
      current = next;
    }
    msg += "'" + current + "' is owned by this thread. Make one direction of the cycle asynchronous "
           "(post(), submit() or post_and_reply()).";
    throw deadlock_error(msg, std::move(names));
  }

  std::string refusal(const char* what) const {
    return std::string("tether: executor '") + name_or_unnamed() + "' is stopped and no longer accepts work; " +
           what + " refused";
  }
  std::string dropped(const char* what) const {
    return std::string("tether: executor '") + name_or_unnamed() + "' was stopped (cancel) before a task given to " +
           what + " could run";
  }
  const char* name_or_unnamed() const noexcept { return name_.empty() ? "(unnamed)" : name_.c_str(); }

  // Owner-written counters: load + store, no read-modify-write.
  template <class Rep, class Period>
  static void add(std::atomic<std::uint64_t>& c, std::chrono::duration<Rep, Period> d) noexcept {
    add(c, static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()));
  }
  static void add(std::atomic<std::uint64_t>& c, std::uint64_t v) noexcept {
    c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);  // relaxed: owner-only statistic
  }

  const bool own_thread_;
  const std::string name_;
  const char* const name_id_;  // interned copy for deadlock edges (nullptr: unnamed)
  const std::function<void()> on_start_;
  const std::function<void()> on_stop_;
  const std::function<void(task_view)> around_task_;
  const std::function<void(std::exception_ptr)> on_error_;
  const std::unique_ptr<detail::wake_fd> fd_;
  detail::thread_record* owner_record_ = nullptr;  // set once by the constructor
  std::uint64_t owner_serial_ = 0;                 // set once by the constructor

  mpsc_queue<detail::task> queue_;

  // Set by producers that find it clear (then they signal fd_), cleared by the owner.
  alignas(detail::cache_line) std::atomic<bool> wake_pending_{false};
  // Raised by the owner before it parks in idle_until(); lowered by the producer that wakes
  // it (or by the owner when it wakes up).
  std::atomic<bool> asleep_{false};
  // The owner parks here when idle. Symmetric fences: producers notify it only after they
  // flipped asleep_ (a seq_cst exchange, [A2]), so the full fence costs them nothing extra,
  // while the owner - which parks whenever it runs dry - is spared a membarrier per park.
  detail::parker owner_wait_{detail::fences::symmetric};
  // When the producer that lowered asleep_ did so (steady ticks; 0: none since the owner
  // parked). Written by that producer, read by the owner to judge how long it was idle.
  std::atomic<clock::rep> woken_at_{0};
  // Callers blocked in call() right now (a spin-or-park hint): written by each caller.
  alignas(detail::cache_line) std::atomic<std::uint32_t> callers_{0};
  // Set once by stop(cancel); read by the owner.
  std::atomic<bool> cancel_{false};
  // Set once by the owner when finished; read by joiners and is_finished().
  std::atomic<bool> finished_{false};
  // Own thread: claimed by the one joiner that calls thread_.join(); joined_ set after it.
  std::atomic<bool> join_claimed_{false};
  std::atomic<bool> joined_{false};
  detail::parker state_wait_;  // joiners park here

  // Owner only.
  alignas(detail::cache_line) detail::timer_heap timers_;
  detail::steady_time armed_deadline_ = detail::no_deadline;  // what fd_ is armed for
  bool spin_when_idle_ = true;  // the last idle period was short
  bool in_run_ = false;   // inside run()/poll() (or the own thread's loop)
  bool in_task_ = false;  // inside a task (inline calls then skip around_task)

  // Statistics: written by the owner, read by stats().
  std::atomic<std::uint64_t> ran_{0};
  std::atomic<std::uint64_t> cancelled_{0};
  std::atomic<std::uint64_t> wait_ns_{0};
  std::atomic<std::uint64_t> run_ns_{0};
  std::atomic<clock::rep> parked_since_ns_{0};  // steady-clock ticks when the owner parked; 0: awake
  std::atomic<std::size_t> timers_pending_{0};

  std::thread thread_;  // last: started once everything above exists
};

}  // namespace tether::detail

// ---- tether/executor.hpp ----------------------------------------------------
// tether/executor.hpp - one owner thread runs the tasks; any thread hands them over.
//
//   tether::executor ex{{.name = "julia"}};            // starts and owns a thread
//   ex.post([] { ... });                                // fire and forget
//   std::future<int> f = ex.submit([] { return 42; }); // result or exception, later
//   int v = ex.call([] { return 42; });                 // blocks; inline on the owner
//
//   tether::executor main_ex{tether::adopt_current_thread, {.wake_fd = true}};
//   loop.watch(main_ex.wake_fd(), [&] { main_ex.poll(); });  // or main_ex.run()
//
// The owner is either a thread the executor starts, or the thread that constructs it with
// adopt_current_thread and then drives it with run(), run_one(), run_until() or poll() - so a
// main thread that already runs another loop (asyncio, libuv, a GUI) can be the owner. A
// tether::poller (select.hpp) can watch an adopting executor, so that its owner waits in one
// place on channels, queues and the executor's tasks and delayed tasks.
//
// Who may call what:
//   post / dispatch / submit / call / post_at / post_after / post_and_reply / stop / join /
//   stats / running_in_this_thread / is_stopped / is_finished / wake_fd - any thread.
//   run / run_one / run_until / run_for / poll - the owner thread of an adopting executor,
//     outside its own tasks (wrong_thread elsewhere; std::logic_error for an executor with its
//     own thread, or from inside one of its tasks).
//
// Guarantees:
//   - Tasks from one posting thread run in the order posted (FIFO per poster).
//   - No lock anywhere: user code, hooks, callbacks and task destructors never run under one.
//   - Nothing accepted is silently dropped: post() returns false once stopped (the callable is
//     not moved from); submit() and call() throw executor_stopped; stop(cancel) destroys
//     pending tasks and their futures / calls report executor_stopped (post()ed ones are
//     counted in stats().tasks_cancelled); delayed tasks report through their timer_handle.
//   - A blocking call() that would close a wait cycle (A's owner in B.call() while B's owner
//     is in A.call(), or longer cycles) throws deadlock_error naming the executors.
//   - Exceptions escaping a post()ed task (or a hook) go to executor_options::on_error; when
//     none is set the process terminates, as for an exception escaping a std::thread.
//
// Stopping: stop(drain) (the default, and what the destructor does) refuses new work, runs
// every task already accepted, runs delayed tasks that are due by then and drops (status
// stopped) delayed tasks that are not, then runs on_stop. stop(cancel) refuses new work and
// destroys everything pending instead of running it.
//
// Memory ordering: every hand-over goes through the queue (a release publish, the owner's
// acquire) and, for call(), the caller's stack slot (detail/wait/call_slot.hpp); the owner side
// is described in detail/executor/executor_core.hpp. Deadlock edges are seq_cst
// (detail/platform/thread_record.hpp).



namespace tether {

namespace detail {
struct source_access;  // a poller's view of the executor's queue and timers (detail/select/source_access.hpp)
}  // namespace detail

// Handle to a delayed task; copies share one task. The default-constructed handle refers to
// nothing (status() == cancelled).
class timer_handle {
 public:
  timer_handle() = default;

  // true: the task will never run (it was pending); its callable is destroyed on the owner
  // thread by its deadline. false: it already ran, is running, was cancelled or stopped.
  // Thread-safe.
  bool cancel() noexcept { return state_ && state_->try_transition(detail::timer_phase::cancelled); }

  // stopped: the executor stopped before the task's deadline (or refused it). Thread-safe.
  timer_status status() const noexcept {
    if (!state_) return timer_status::cancelled;
    return static_cast<timer_status>(state_->phase.load(std::memory_order_acquire));  // acquire: pairs with the owner's transitions
  }

 private:
  friend class executor;
  explicit timer_handle(std::shared_ptr<detail::timer_state> s) noexcept : state_(std::move(s)) {}
  std::shared_ptr<detail::timer_state> state_;
};

class TETHER_CAPABILITY("executor") executor : private detail::executor_core {
 public:
  // Starts the owner thread (named after options.name) and runs on_start there.
  executor() : executor(executor_options{}) {}
  explicit executor(executor_options options) : detail::executor_core(std::move(options), false) {
    owner_record_ = detail::acquire_record();
    owner_serial_ = owner_record_->serial.load(std::memory_order_seq_cst);
    try {
      thread_ = std::thread([this] { thread_main(); });
    } catch (...) {
      detail::release_record(owner_record_);
      throw;
    }
  }

  // Adopts the calling thread as the owner; runs on_start here. Drive it with run(),
  // run_one(), run_until(), run_for() or poll() (e.g. when wake_fd() becomes readable).
  explicit executor(adopt_current_thread_t, executor_options options = {})
      : detail::executor_core(std::move(options), true) {
    owner_record_ = &detail::this_thread_record();
    owner_serial_ = detail::tls_serial;
    run_hook(on_start_);
  }

  // stop(drain), then: own thread - joins it; adopting executor on its owner thread - runs
  // the remaining tasks here; elsewhere - waits until the owner has run them (in run/poll).
  // Destroying an executor from one of its own tasks terminates the process.
  ~executor() {
    stop(stop_mode::drain);
    if (running_in_this_thread() && (own_thread_ || in_run_)) {
      std::fprintf(stderr, "tether: executor '%s' destroyed from one of its own tasks\n", name_or_unnamed());
      std::terminate();
    }
    join();
  }

  executor(const executor&) = delete;
  executor& operator=(const executor&) = delete;

  // ---- handing work over (any thread) ------------------------------------------------------

  // Queues f to run on the owner. false once stopped; f is then not moved from.
  // Never blocks. Thread-safe.
  template <class F>
  bool post(F&& f) {
    if (!queue_.emplace(std::forward<F>(f))) return false;
    after_push();
    return true;
  }

  // On the owner thread: runs f now (exceptions propagate to the caller). Elsewhere: post(f).
  // false once stopped. Thread-safe.
  template <class F>
  bool dispatch(F&& f) {
    if (!running_in_this_thread()) return post(std::forward<F>(f));
    if (is_stopped()) return false;
    run_inline<void>([&] { std::invoke(std::forward<F>(f)); });
    return true;
  }

  // Queues f; the future receives its result or exception, or executor_stopped if stop(cancel)
  // destroys it unrun. Throws executor_stopped once stopped. Never blocks. Thread-safe.
  template <class F>
  auto submit(F&& f) -> std::future<std::invoke_result_t<std::decay_t<F>>> {
    using R = std::invoke_result_t<std::decay_t<F>>;
    std::promise<R> promise;
    std::future<R> future = promise.get_future();
    if (!queue_.emplace(std::in_place_type<submit_job<std::decay_t<F>, R>>, core(), std::forward<F>(f),
                        std::move(promise)))
      throw executor_stopped(refusal("submit()"));
    after_push();
    return future;
  }

  // Runs f on the owner and returns its result (rethrows its exception). On the owner thread
  // f runs inline. Elsewhere the caller blocks: f is used in place (not copied), the result
  // comes back through a slot on the caller's stack, and the caller spins briefly first when
  // it is the only caller with nothing queued ahead, else parks at once. Throws
  // deadlock_error instead of blocking when the wait would close a cycle; executor_stopped
  // once stopped or if stop(cancel) destroys the call unrun. Thread-safe.
  template <class F>
  std::invoke_result_t<F&&> call(F&& f) {
    using R = std::invoke_result_t<F&&>;
    if (running_in_this_thread()) {
      if (is_stopped()) throw executor_stopped(refusal("call()"));
      return run_inline<R>(std::forward<F>(f));
    }
    detail::thread_record& me = detail::this_thread_record();
    detail::blocking_call edge(me, owner_record_, owner_serial_, name_id_);  // before the walk
    check_cycle(me);
    detail::call_slot<R> slot;
    struct in_flight {
      std::atomic<std::uint32_t>& n;
      const bool alone;
      explicit in_flight(std::atomic<std::uint32_t>& c)
          : n(c), alone(c.fetch_add(1, std::memory_order_relaxed) == 0) {}  // relaxed: a hint, publishes nothing
      ~in_flight() { n.fetch_sub(1, std::memory_order_relaxed); }           // relaxed: as above
    } caller{callers_};
    if (!queue_.emplace(std::in_place_type<call_job<F, R>>, core(), std::addressof(f), &slot))
      throw executor_stopped(refusal("call()"));
    const bool owner_was_asleep = after_push();
    // Spin first only for a lone caller with nothing queued ahead and an owner that was
    // awake: otherwise the answer is at least a task or a wake-up away, and spinning callers
    // would take the cores that the owner and the other callers (woken, waiting for a core)
    // need - and serve themselves unfairly.
    slot.wait(!owner_was_asleep && caller.alone && queue_.size_approx() <= 1);
    return slot.take();
  }

  // Runs task on this executor, then reply(result) (reply() for void) on reply_to - the
  // continuation comes back to the caller's executor. An exception from task goes to this
  // executor's on_error; one from reply to reply_to's; a reply that reply_to refuses (it
  // stopped) is reported to this executor's on_error as executor_stopped. false once
  // stopped. Thread-safe.
  template <class F, class G>
  bool post_and_reply(F&& task, executor& reply_to, G&& reply) {
    return post([this, &reply_to, fn = std::forward<F>(task), rep = std::forward<G>(reply)]() mutable {
      using R = std::invoke_result_t<std::decay_t<F>>;
      bool accepted;
      if constexpr (std::is_void_v<R>) {
        std::invoke(std::move(fn));
        accepted = reply_to.post(std::move(rep));
      } else {
        accepted = reply_to.post([r = std::move(rep), v = std::invoke(std::move(fn))]() mutable {
          std::invoke(std::move(r), std::move(v));
        });
      }
      if (!accepted)
        throw executor_stopped(std::string("tether: post_and_reply() on executor '") + name_or_unnamed() +
                               "': the reply executor '" + reply_to.name_or_unnamed() +
                               "' stopped before the reply could be posted");
    });
  }

  // Runs f on the owner at (or soon after) `when` / after `delay`. The owner parks until the
  // earliest deadline. Delayed tasks with equal deadlines run in posting order. If the
  // executor is stopped the handle reports timer_status::stopped at once. Thread-safe.
  template <class Clock, class Duration, class F>
  timer_handle post_at(const std::chrono::time_point<Clock, Duration>& when, F&& f) {
    auto state = std::make_shared<detail::timer_state>(detail::to_steady(when), detail::task(std::forward<F>(f)));
    if (queue_.emplace(detail::internal_task, std::in_place_type<timer_registration>, core(), state)) {
      after_push();
    } else {
      state->try_transition(detail::timer_phase::stopped);
      state->fn.reset();
    }
    return timer_handle(std::move(state));
  }
  template <class Rep, class Period, class F>
  timer_handle post_after(const std::chrono::duration<Rep, Period>& delay, F&& f) {
    return post_at(detail::deadline_after(delay), std::forward<F>(f));
  }

  // ---- driving an adopting executor (its owner thread) --------------------------------------

  // Runs tasks until stopped and drained (then on_stop has run). Returns tasks run.
  std::size_t run() { return drive(run_kind::forever, detail::no_deadline, nullptr); }
  // Blocks until one task ran (returns 1) or the executor finished (0).
  std::size_t run_one() { return drive(run_kind::one, detail::no_deadline, nullptr); }
  // Runs every task that is ready (and delayed ones that are due), including ones posted
  // meanwhile; never blocks. Call it when wake_fd() is readable.
  std::size_t poll() { return drive(run_kind::poll, detail::no_deadline, nullptr); }
  // As run(), returning also when `token` is stopped.
  std::size_t run_until(std::stop_token token) {
    return drive(run_kind::until, detail::no_deadline, &token);
  }
  // As run(), returning also at the deadline.
  template <class Clock, class Duration>
  std::size_t run_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return drive(run_kind::until, detail::to_steady(deadline), nullptr);
  }
  template <class Rep, class Period>
  std::size_t run_for(const std::chrono::duration<Rep, Period>& timeout) {
    return drive(run_kind::until, detail::deadline_after(timeout), nullptr);
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  // Refuses new work from now on; drain runs everything accepted, cancel destroys it (see
  // the file comment). Returns true if this call stopped the executor. A cancel after a
  // drain upgrades it. Never blocks. Thread-safe.
  bool stop(stop_mode mode = stop_mode::drain) noexcept {
    if (mode == stop_mode::cancel) cancel_.store(true, std::memory_order_seq_cst);  // before close: seen with it
    const bool first = queue_.close();
    wake_owner();
    if (first && fd_) arm_wake_fd();  // a foreign loop must call poll() once more to finish
    return first;
  }

  // Waits until the executor has finished (every accepted task ran or was cancelled and
  // on_stop ran); joins the own thread. Call stop() first (or have a task do it). On the
  // owner thread of an adopting executor, outside its tasks, it runs the executor here until
  // it finishes; from inside a task it throws deadlock_error. Thread-safe.
  void join() {
    if (running_in_this_thread()) {
      if (own_thread_ || in_run_)
        throw deadlock_error(std::string("tether: join() on executor '") + name_or_unnamed() +
                                 "' from its own owner thread inside one of its tasks would wait for itself",
                             {name_or_unnamed()});
      if (!finished_.load(std::memory_order_seq_cst)) drive(run_kind::forever, detail::no_deadline, nullptr);
      return;
    }
    if (own_thread_) {
      bool expected = false;
      if (join_claimed_.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {  // acq_rel: one joiner claims the thread
        if (thread_.joinable()) thread_.join();  // not joinable: the thread never started
        joined_.store(true, std::memory_order_seq_cst);
        state_wait_.notify_all();
        return;
      }
      detail::park_until(state_wait_, [this] { return joined_.load(std::memory_order_seq_cst); }, detail::no_deadline);
      return;
    }
    detail::park_until(state_wait_, [this] { return finished_.load(std::memory_order_seq_cst); }, detail::no_deadline);
  }

  // stop() was called: no more work is accepted. Thread-safe.
  bool is_stopped() const noexcept { return queue_.is_closed(); }
  // Every accepted task ran or was cancelled, and on_stop ran. Thread-safe.
  bool is_finished() const noexcept { return finished_.load(std::memory_order_seq_cst); }

  // ---- identity and observation ---------------------------------------------------------------

  // true on the owner thread (one thread-local read and a compare). Thread-safe.
  bool running_in_this_thread() const noexcept { return executor_core::running_in_this_thread(); }

  // Throws wrong_thread naming both threads unless called on the owner thread. For clang's
  // -Wthread-safety, asserts the executor capability. `what` names the object in the
  // message (default: the executor itself). Thread-safe.
  void check_owner(std::string_view what = {}) const TETHER_ASSERT_CAPABILITY(this) { check_owner_thread(what); }

  const std::string& name() const noexcept { return name_; }

  // The descriptor a foreign loop watches: readable while tasks are pending, when a delayed
  // task falls due (Linux; elsewhere poll() by the next deadline yourself), and once after
  // stop() so that poll() can finish the stop; poll() quiets it. Throws std::logic_error
  // unless constructed with executor_options::wake_fd. Thread-safe.
  int wake_fd() const {
    if (!fd_) throw std::logic_error("tether: executor '" + std::string(name_or_unnamed()) +
                                     "' has no wake fd; construct it with executor_options{.wake_fd = true}");
    return fd_->fd();
  }

  executor_stats stats() const noexcept {
    executor_stats s;
    // relaxed (all loads here): statistics written by the owner; nothing is read through them.
    s.tasks_run = ran_.load(std::memory_order_relaxed);              // relaxed: statistic
    s.tasks_cancelled = cancelled_.load(std::memory_order_relaxed);  // relaxed: statistic
    s.queue_depth = queue_.size_approx();
    s.timers_pending = timers_pending_.load(std::memory_order_relaxed);  // relaxed: statistic
    s.tasks_posted = s.tasks_run + s.tasks_cancelled + s.queue_depth + s.timers_pending;
    s.wait_time = std::chrono::nanoseconds(wait_ns_.load(std::memory_order_relaxed));  // relaxed: statistic
    // A wait in progress counts too (else an idle executor would report none).
    if (const auto since = parked_since_ns_.load(std::memory_order_relaxed); since != 0)  // relaxed: statistic
      s.wait_time += std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::max(clock::duration(0), clock::now().time_since_epoch() - clock::duration(since)));
    s.run_time = std::chrono::nanoseconds(run_ns_.load(std::memory_order_relaxed));  // relaxed: statistic
    return s;
  }
 private:
  friend struct detail::source_access;  // tether::poller watches adopting executors (select.hpp)

  // The jobs hold the core (a private base: the conversion must happen here).
  detail::executor_core* core() noexcept { return this; }
};

}  // namespace tether

// ---- tether/confined.hpp ----------------------------------------------------
// tether/confined.hpp - a T that lives, is used and dies on one executor's owner thread.
//
//   tether::executor owner{{.name = "lua"}};
//   tether::confined<lua_vm> vm{owner};                          // constructed on the owner
//   int n = vm.with([](lua_vm& l) { return l.eval("return 6*7"); });   // from any thread
//   std::future<int> f = vm.async_with([](lua_vm& l) { return l.top(); });
//   vm.post_with([](lua_vm& l) { l.gc(); });
//
// For runtimes that must only ever be touched by the thread that created them (Julia's C
// API, a lua_State, Tk): every access goes through the owner, so no caller can touch T from
// the wrong thread by accident.
//
// Who may call what: with / async_with / post_with - any thread (with() runs inline on the
// owner and blocks elsewhere, deadlock-checked as executor::call). local() / check_owner() -
// the owner thread only (wrong_thread elsewhere). The destructor - any thread.
//
// Lifetime: the constructor blocks until T is constructed on the owner (its exception, if
// any, propagates). The destructor does not block: it hands T to the owner, which destroys
// it after every task posted before (inline when destroyed on the owner). Destroy confined
// objects before their executor stops; if it no longer accepts work, T is destroyed on the
// destroying thread, as no owner is left to do it.
//
// Memory ordering: whatever executor hand-offs give: T's construction happens-before every
// task that uses it (call() returns after it), and those tasks happen-before its
// destruction (queued after them).



namespace tether {

template <class T>
class TETHER_CAPABILITY("confined object") confined {
 public:
  template <class... Args>
  explicit confined(executor& owner, Args&&... args) : ex_(owner) {
    value_ = ex_.call([&] { return std::make_unique<T>(std::forward<Args>(args)...); });
  }

  ~confined() {
    if (!value_) return;
    auto destroy = [v = std::move(value_)]() mutable noexcept { v.reset(); };
    if (!ex_.dispatch(std::move(destroy))) destroy();  // not moved from when refused
  }

  confined(const confined&) = delete;
  confined& operator=(const confined&) = delete;

  // Runs f(T&) on the owner and returns its result (rethrows its exception); inline on the
  // owner thread. Blocks elsewhere; deadlock_error / executor_stopped as executor::call.
  template <class F>
  std::invoke_result_t<F&&, T&> with(F&& f) {
    T* v = value_.get();
    return ex_.call([&]() -> std::invoke_result_t<F&&, T&> { return std::invoke(std::forward<F>(f), *v); });
  }

  // Queues f(T&); the future carries the result or exception (executor_stopped when
  // refused or cancelled). Never blocks. Throws executor_stopped once stopped.
  template <class F>
  auto async_with(F&& f) {
    return ex_.submit([v = value_.get(), fn = std::forward<F>(f)]() mutable -> decltype(auto) {
      return std::invoke(std::move(fn), *v);
    });
  }

  // Queues f(T&), fire and forget (exceptions go to the executor's on_error). false once
  // stopped.
  template <class F>
  bool post_with(F&& f) {
    return ex_.post([v = value_.get(), fn = std::forward<F>(f)]() mutable { std::invoke(std::move(fn), *v); });
  }

  // T itself, on the owner thread; throws wrong_thread naming both threads elsewhere.
  T& local() {
    check_owner();
    return *value_;
  }

  // Throws wrong_thread unless on the owner thread; asserts the capability for clang's
  // -Wthread-safety.
  void check_owner() const TETHER_ASSERT_CAPABILITY(this) {
    ex_.check_owner("tether::confined<" + detail::type_name<T>() + ">");
  }

  executor& get_executor() const noexcept { return ex_; }

 private:
  executor& ex_;
  std::unique_ptr<T> value_;  // written at construction and destruction only
};

}  // namespace tether

// ---- tether/context_guard.hpp -----------------------------------------------
// tether/context_guard.hpp - install a thread-local "current context" for a scope.
//
//   struct julia_tag { using context_type = jl_task_t; };   // or use the context type itself
//   {
//     tether::context_guard<julia_tag> g{task};   // tether::current<julia_tag>() == task
//     ...                                          // nests; restored on exit and on throw
//   }
//
// Each Tag has one slot per thread holding a pointer (nullptr when nothing is installed) and
// a stack of guards. A guard installs its pointer and restores the previous one when it is
// destroyed. Guards must be destroyed in the reverse order of construction on the thread
// that made them; a guard destroyed out of order (possible only through heap or optional
// guards) or on another thread would restore a stale value, so it prints what happened and
// terminates the process instead (as tokio panics for misordered runtime guards).
//
// An executor installs a context around every task with
//   executor_options{.around_task = tether::install_context<julia_tag>(task)}.
//
// Who may call what: current<Tag>() - any thread, for itself. A guard - the thread that
// constructed it.
// Memory ordering: none; every slot is thread-local.



namespace tether {

namespace detail {

template <class Tag, class = void>
struct context_type_of {
  using type = Tag;
};
template <class Tag>
struct context_type_of<Tag, std::void_t<typename Tag::context_type>> {
  using type = typename Tag::context_type;
};

template <class Tag>
struct context_slot {
  static inline constinit thread_local typename context_type_of<Tag>::type* value = nullptr;
  static inline constinit thread_local const void* top = nullptr;  // innermost live guard
};

[[noreturn]] inline void context_order_violation(const char* tag) noexcept {
  std::fprintf(stderr,
               "tether: context_guard<%s> destroyed out of order or on another thread than the one "
               "that installed it; restoring would leave a stale context. Keep guards scoped.\n",
               tag);
  std::terminate();
}

}  // namespace detail

// The context type a guard for Tag installs: Tag::context_type if Tag declares one, else Tag.
template <class Tag>
using context_t = typename detail::context_type_of<Tag>::type;

// The pointer installed by the innermost live context_guard<Tag> on this thread, or nullptr.
template <class Tag>
context_t<Tag>* current() noexcept {
  return detail::context_slot<Tag>::value;
}

template <class Tag>
class context_guard {
  using slot = detail::context_slot<Tag>;

 public:
  explicit context_guard(context_t<Tag>* value) noexcept : previous_(slot::value), outer_(slot::top) {
    slot::value = value;
    slot::top = this;
  }
  ~context_guard() {
    if (slot::top != this) detail::context_order_violation(detail::type_name<Tag>().c_str());
    slot::value = previous_;
    slot::top = outer_;
  }
  context_guard(const context_guard&) = delete;
  context_guard& operator=(const context_guard&) = delete;

  // The value this guard replaced (what current<Tag>() returns after it).
  context_t<Tag>* previous() const noexcept { return previous_; }

 private:
  context_t<Tag>* previous_;
  const void* outer_;
};

// An around_task wrapper for executor_options: installs `value` for Tag around every task.
template <class Tag>
auto install_context(context_t<Tag>* value) {
  return [value](auto&& run) {
    context_guard<Tag> guard{value};
    std::forward<decltype(run)>(run)();
  };
}

}  // namespace tether

// ---- tether/router_messages.hpp ---------------------------------------------
// tether/router_messages.hpp - the values a router's users send and receive: subshell ids,
// envelopes and replies, control requests and their answers, and the errors they carry.
//
// The vocabulary of router.hpp. None of it needs a router, so code that only builds
// envelopes, reads replies or reports routing errors can include this header alone, without
// the router's threads, queues and executors.
//
// Who may call what: plain values; any thread.
// Memory ordering: none (no shared state).

#include <compare>
#include <concepts>


namespace tether {

// Names a subshell. The default value is the parent (as in JEP 91, where the parent is
// addressed by the absence of an id); children get 1, 2, 3 ... in creation order, never
// reused.
class subshell_id {
 public:
  constexpr subshell_id() noexcept = default;
  constexpr explicit subshell_id(std::uint64_t value) noexcept : value_(value) {}
  constexpr std::uint64_t value() const noexcept { return value_; }
  constexpr bool is_parent() const noexcept { return value_ == 0; }
  // "parent" or "subshell-<id>" (also the child's executor and thread name).
  std::string to_string() const { return is_parent() ? std::string("parent") : "subshell-" + std::to_string(value_); }
  friend constexpr bool operator==(const subshell_id&, const subshell_id&) noexcept = default;
  friend constexpr auto operator<=>(const subshell_id&, const subshell_id&) noexcept = default;

 private:
  std::uint64_t value_ = 0;
};

inline constexpr subshell_id parent_subshell{};

// What a sender hands the router: the header it routes on (subshell, tag) and a payload it
// never looks at. The tag comes back in the reply, to match the two.
template <class Payload>
struct envelope {
  envelope() requires std::default_initializable<Payload> = default;
  template <class P>
    requires std::constructible_from<Payload, P&&>
  envelope(subshell_id id, P&& p, std::uint64_t t = 0) : subshell(id), payload(std::forward<P>(p)), tag(t) {}

  subshell_id subshell{};
  Payload payload;
  std::uint64_t tag = 0;
};

// Why a message (or a control request) got an error instead of a value.
enum class routing_errc : std::uint8_t {
  unknown_subshell = 1,  // no subshell with that id was ever created     (payload handed back)
  subshell_deleted,      // deleted before the message ran or arrived     (payload handed back)
  subshell_stopped,      // the parent's executor refused or cancelled it (payload handed back)
  handler_threw,         // the handler threw before replying (the message names the exception)
  no_reply,              // the handler returned without replying
  router_stopped,        // shutdown(cancel) came first, or a request came during shutdown
  invalid_request,       // control: cannot be served (deleting the parent)
  create_failed,         // control: the subshell's thread or its handler could not be made
};

constexpr const char* to_string(routing_errc c) noexcept {
  switch (c) {
    case routing_errc::unknown_subshell: return "unknown_subshell";
    case routing_errc::subshell_deleted: return "subshell_deleted";
    case routing_errc::subshell_stopped: return "subshell_stopped";
    case routing_errc::handler_threw: return "handler_threw";
    case routing_errc::no_reply: return "no_reply";
    case routing_errc::router_stopped: return "router_stopped";
    case routing_errc::invalid_request: return "invalid_request";
    case routing_errc::create_failed: return "create_failed";
  }
  return "unknown";
}

// An error reply's cause: a code, the subshell it concerns and a message naming both.
class routing_error {
 public:
  routing_error(routing_errc code, subshell_id subshell, std::string message)
      : code_(code), subshell_(subshell), message_(std::move(message)) {}
  routing_errc code() const noexcept { return code_; }
  subshell_id subshell() const noexcept { return subshell_; }
  const std::string& message() const noexcept { return message_; }

 private:
  routing_errc code_;
  subshell_id subshell_;
  std::string message_;
};

// What leaves the router: one per accepted message, tagged with the subshell and the
// envelope's tag, holding the handler's value or an error. Errors are rare, so they live on
// the heap and a value reply stays small.
template <class Reply, class Payload>
class routed_reply {
 public:
  routed_reply(subshell_id subshell, std::uint64_t tag, Reply&& value)
      : subshell_(subshell), tag_(tag), v_(std::in_place_index<0>, std::move(value)) {}
  routed_reply(subshell_id subshell, std::uint64_t tag, routing_error error, std::optional<Payload> returned = {})
      : subshell_(subshell),
        tag_(tag),
        v_(std::in_place_index<1>, std::make_unique<failure>(failure{std::move(error), std::move(returned)})) {}

  subshell_id subshell() const noexcept { return subshell_; }
  std::uint64_t tag() const noexcept { return tag_; }

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  // The handler's reply; throws std::logic_error carrying the error's message when there is
  // none.
  Reply& value() & {
    check();
    return *std::get_if<0>(&v_);
  }
  const Reply& value() const& {
    check();
    return *std::get_if<0>(&v_);
  }
  Reply&& value() && {
    check();
    return std::move(*std::get_if<0>(&v_));
  }
  // Precondition: has_value().
  Reply& operator*() noexcept { return *std::get_if<0>(&v_); }
  const Reply& operator*() const noexcept { return *std::get_if<0>(&v_); }
  Reply* operator->() noexcept { return std::get_if<0>(&v_); }
  const Reply* operator->() const noexcept { return std::get_if<0>(&v_); }

  // The error; throws std::logic_error for a value reply.
  const routing_error& error() const {
    if (has_value()) throw std::logic_error("tether::routed_reply::error(): the reply holds a value");
    return (*std::get_if<1>(&v_))->error;
  }

  // The payload handed back by a message that never reached a handler (unknown_subshell,
  // subshell_deleted, subshell_stopped, router_stopped); nullptr otherwise.
  Payload* returned_payload() noexcept {
    if (has_value()) return nullptr;
    auto& f = *std::get_if<1>(&v_);
    return f->payload ? &*f->payload : nullptr;
  }

 private:
  struct failure {
    routing_error error;
    std::optional<Payload> payload;
  };
  void check() const {
    if (has_value()) return;
    const routing_error& e = (*std::get_if<1>(&v_))->error;
    throw std::logic_error("tether::routed_reply::value(): no value (" + std::string(to_string(e.code())) + "): " +
                           e.message());
  }

  subshell_id subshell_;
  std::uint64_t tag_;
  std::variant<Reply, std::unique_ptr<failure>> v_;
};

// The control channel's verbs (JEP 91's create / delete / list, and per-subshell counters).
enum class control_op : std::uint8_t { create_subshell, delete_subshell, list_subshells, subshell_stats };

struct control_request {
  control_op op = control_op::list_subshells;
  subshell_id subshell{};                // delete: which one
  stop_mode policy = stop_mode::drain;   // delete: run its queued messages, or cancel them
  std::uint64_t tag = 0;                 // comes back in the reply

  static control_request create(std::uint64_t tag = 0) {
    return {control_op::create_subshell, {}, stop_mode::drain, tag};
  }
  static control_request remove(subshell_id id, stop_mode policy = stop_mode::drain, std::uint64_t tag = 0) {
    return {control_op::delete_subshell, id, policy, tag};
  }
  static control_request list(std::uint64_t tag = 0) { return {control_op::list_subshells, {}, stop_mode::drain, tag}; }
  static control_request stats(std::uint64_t tag = 0) {
    return {control_op::subshell_stats, {}, stop_mode::drain, tag};
  }
};

// One subshell's counters; a snapshot, stale as soon as it is taken.
struct subshell_stats {
  subshell_id id{};
  std::string executor_name;  // "subshell-<id>", or the parent executor's name
  std::uint64_t accepted = 0;  // messages routed to it
  std::uint64_t replied = 0;   // answered: reply sent and handler returned (or never run)
  std::uint64_t failed = 0;    // of those, answered with an error
  bool busy = false;           // a handler is running right now
  std::uint64_t pending() const noexcept { return accepted - replied; }
};

struct control_reply {
  control_op op = control_op::list_subshells;
  std::uint64_t tag = 0;
  subshell_id subshell{};               // create: the new subshell; delete: the deleted one
  std::vector<subshell_stats> subshells;  // list: the children; stats: the parent, then them
  std::optional<routing_error> error;     // set when the request was refused
  bool ok() const noexcept { return !error.has_value(); }
};

struct router_options {
  std::string name = "router";  // the router thread's name, in every error message
};

// Thrown by the direct control calls once the router is stopped (shutdown() was called).
class router_stopped : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
}  // namespace tether

// ---- tether/detail/router/subshell.hpp --------------------------------------
// tether/detail/router/subshell.hpp - one subshell as the router sees it, and the handler
// and factory it runs, with the user's callables type-erased.
//
// router.hpp holds what users touch (router, reply_sender); this holds what the router keeps
// for each subshell: its executor, its handler, the counters stats() reports and the cancel
// code its queued tasks answer with. Also the virtual handler and factory through which the
// router calls the user's callables without knowing their types, and the static slots where
// the reaper waits for the parent's last answers. Nothing here is public API.
//
// router and reply_sender are only declared here: router.hpp defines both before it
// instantiates anything below.
//
// Who may call what: each router_subshell field as its comment says; router_child_thread_of -
// set on a child subshell's own thread, read by join() on the calling thread.
// Memory ordering: [A1]/[A2] and [C1]/[C2] on answered and cancel_code are router.hpp's (see
// its banner).



namespace tether {

template <class Payload, class Reply>
class router;
template <class Reply, class Payload>
class reply_sender;

namespace detail {

// The router whose child subshell the calling thread runs, if any (join() refuses there).
inline constinit thread_local const void* router_child_thread_of = nullptr;

template <class Payload, class Reply>
struct router_handler {
  virtual ~router_handler() = default;
  virtual void handle(Payload&& p, reply_sender<Reply, Payload>& reply) = 0;
};

template <class Payload, class Reply>
struct router_factory {
  virtual ~router_factory() = default;
  virtual std::unique_ptr<router_handler<Payload, Reply>> make(subshell_id id) = 0;
};

// One subshell as the router sees it.
template <class Payload, class Reply>
struct router_subshell {
  router_subshell(router<Payload, Reply>* r, subshell_id i, routing_errc unrun) noexcept
      : owner(r), id(i), unrun_code(unrun) {}

  router<Payload, Reply>* const owner;
  const subshell_id id;
  const routing_errc unrun_code;  // for a task destroyed unrun with no cancel code set
  executor* ex = nullptr;          // the parent's executor, or own_ex
  std::unique_ptr<executor> own_ex;  // children only
  // Made, used and destroyed on the subshell's thread (the parent's: see router.hpp's banner).
  std::unique_ptr<router_handler<Payload, Reply>> handler;

  // Router thread only: messages routed here, and those routed in the current inbox batch and
  // not yet handed to the executor (one task per subshell per batch; see router::serve_inbox()).
  std::uint64_t accepted_local = 0;
  std::vector<std::pair<std::uint64_t, Payload>> staged;
  // A copy of accepted_local for stats and the reaper: written by the router thread.
  std::atomic<std::uint64_t> accepted{0};
  // Raised by whichever thread finishes a message (the subshell's, or the router's when its
  // executor refuses the task); read by stats and the reaper. Off the router's line.
  alignas(detail::cache_line) std::atomic<std::uint64_t> answered{0};
  std::atomic<std::uint64_t> failed{0};  // written as answered; read by stats
  std::atomic<bool> busy{false};         // written by the subshell thread; read by stats
  // 0, or the routing_errc with which queued tasks answer instead of running: set by the
  // router thread (delete or shutdown with cancel), read by the subshell's tasks.
  std::atomic<std::uint8_t> cancel_code{0};
};

// Where the reaper waits for the parent's last answers (answered == accepted). Static: the
// parent's thread notifies after its last count, when the router may already be gone.
struct alignas(cache_line) router_settle_slot {
  parker settled;
};
inline router_settle_slot router_settle_slots[16];

inline parker& router_settle_parker(const void* subshell) noexcept {
  return router_settle_slots[(reinterpret_cast<std::uintptr_t>(subshell) / cache_line) % 16].settled;
}

template <class Payload, class Reply, class H>
struct router_handler_impl final : router_handler<Payload, Reply> {
  explicit router_handler_impl(H&& h) : fn(std::move(h)) {}
  void handle(Payload&& p, reply_sender<Reply, Payload>& reply) override {
    if constexpr (std::is_invocable_v<H&, Payload&&, reply_sender<Reply, Payload>&>) {
      std::invoke(fn, std::move(p), reply);
    } else {
      reply.send(Reply(std::invoke(fn, std::move(p))));
    }
  }
  H fn;
};

// A handler of either form (see router.hpp's banner).
template <class H, class Payload, class Reply>
inline constexpr bool router_handler_v = std::is_invocable_v<H&, Payload&&, reply_sender<Reply, Payload>&> ||
                                         std::is_invocable_r_v<Reply, H&, Payload&&>;

template <class Payload, class Reply, class F>
struct router_factory_impl final : router_factory<Payload, Reply> {
  explicit router_factory_impl(F&& f) : fn(std::move(f)) {}
  std::unique_ptr<router_handler<Payload, Reply>> make(subshell_id id) override {
    using H = std::decay_t<std::invoke_result_t<F&, subshell_id>>;
    return std::make_unique<router_handler_impl<Payload, Reply, H>>(std::invoke(fn, id));
  }
  F fn;
};

}  // namespace detail

}  // namespace tether

// ---- tether/detail/select/ready_list.hpp ------------------------------------
// tether/detail/select/ready_list.hpp - the nodes a poller must look at, and the parker it sleeps on.
//
// Every source a poller watches has a poll_node. A notifier that finds the node unsignalled
// pushes it here (a Treiber stack: one compare-and-swap) and wakes the poller; the poller
// takes the whole list with one exchange. A node is on the list at most once (its signalled
// flag says so), so a burst of pushes to one source costs one push and one wake-up.
//
// Who may call what: push - any thread (notifiers, add/remove); take_all / has_work - the
// poller's waiting thread; wake is the poller's parker (park_until on it: the waiting thread).
//
// Memory ordering: push's release CAS [R1] publishes the node's next_ready link (and what the
// pusher did before) to take_all's acquire exchange [R2]. The waiting thread parks on `wake`
// with has_work() as its condition: push stores the head, then notify_one() (light fence);
// the waiter announces itself (heavy fence), then loads the head - the parker's handshake.



namespace tether::detail {

class ready_list;

// One watched source, as its poller and the source's notifiers see it. The poller that owns
// the node fills in the rest (see select.hpp).
struct poll_node : parker_listener {
  // Set by a notifier that finds it false (it then pushes the node) and by add(); cleared by
  // the poller when it takes the node off the list. True exactly while the node is on the
  // ready list, outside the poller's scan.
  std::atomic<bool> signalled{false};
  poll_node* next_ready = nullptr;  // the ready-list link: written by the pusher
  ready_list* list = nullptr;       // fixed at creation
};

class ready_list {
 public:
  // Pushes n and wakes the waiting thread. n must not be on the list. Never blocks.
  void push(poll_node& n) noexcept {
    poll_node* head = head_.load(std::memory_order_relaxed);  // relaxed: the CAS re-validates it
    do {
      n.next_ready = head;
      // [R1] release: publishes n.next_ready and the pusher's earlier writes; pairs with [R2].
    } while (!head_.compare_exchange_weak(head, &n, std::memory_order_release, std::memory_order_relaxed));
    wake.notify_one();
  }

  // Takes every node pushed so far, most recent first. Waiting thread only.
  poll_node* take_all() noexcept {
    return head_.exchange(nullptr, std::memory_order_acquire);  // [R2] acquire: pairs with [R1]
  }

  // The parked poller's condition. seq_cst: the re-check half of the parker handshake.
  bool has_work() const noexcept { return head_.load(std::memory_order_seq_cst) != nullptr; }

  parker wake;  // the poller's waiting thread sleeps here

 private:
  // Written by pushers (CAS) and the waiting thread (exchange); read by both.
  std::atomic<poll_node*> head_{nullptr};
};

// The listener a poller hangs on each watched source's parker (parker_listener::on_notify):
// runs on the notifying thread, after the source published. One push per burst: only the
// notifier that flips `signalled` from false pushes the node.
inline void notify_poller(parker_listener& l) noexcept {
  auto& n = static_cast<poll_node&>(l);
  // [N1] acq_rel, pairs with [W1] (select.hpp). Release: our publish (sequenced before this
  // notify) reaches the poller's probe when [W1] reads our true. Acquire: when we read the
  // poller's false, its last use of n.next_ready happened before push() rewrites it.
  if (!n.signalled.exchange(true, std::memory_order_acq_rel)) n.list->push(n);
}

}  // namespace tether::detail

// ---- tether/select.hpp ------------------------------------------------------
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

// ---- tether/router.hpp ------------------------------------------------------
// tether/router.hpp - a subshell router: messages routed by subshell id, one thread per
// subshell, every accepted message answered exactly once.
//
//   tether::executor main_ex{tether::adopt_current_thread};
//   tether::router<request, result> r{main_ex, [](tether::subshell_id id) {
//     return [state = session{id}](request&& q) mutable { return state.run(q); };  // a handler
//   }};
//   tether::subshell_id child = r.create_subshell();  // its own thread and its own handler
//   r.send({tether::parent_subshell, long_request});   // runs on main_ex (main_ex.run())
//   r.send({child, quick_request, 7});                  // runs now, on the child's thread
//   auto reply = r.replies().pop();                     // {subshell, tag 7, result or error}
//
// The parent subshell runs on an executor the caller owns (often the adopted main thread).
// Each child subshell, created at run time, runs on its own thread with its own executor,
// named "subshell-<id>", and its own handler, made by the factory on that thread. One router
// thread waits (a poller: zero CPU while idle) on two inboxes: envelopes for the shell, and
// control requests (create, delete, list, stats). It reads only an envelope's id and hands
// the payload, untouched, to that subshell's executor as a task; the messages one inbox batch
// holds for a subshell travel as one task (one queue push, at most one wake-up). It never
// runs a handler, so control is served while every subshell is busy, and a long task in one
// subshell delays no other. Handlers reply from their own thread into one outbox,
// replies(), each reply tagged with its subshell's id and the envelope's tag.
//
// Handlers, one per subshell, made by factory(subshell_id) - for the parent on the thread that
// constructs the router, for a child on the child's own thread (so calls may overlap: the
// factory must be safe to call concurrently). Either form:
//   Reply handler(Payload&&)                                      - the value is the reply;
//   void handler(Payload&&, tether::reply_sender<Reply, Payload>&) - send() once; it may reply
//                                                                   early and keep working.
//
// Who may call what:
//   send / send_control / create_subshell / delete_subshell / list_subshells / stats /
//   shutdown / is_stopped / is_finished / name          - any thread, also from handlers.
//   replies() / control_replies()                        - their pop side: one consumer
//     thread at a time (a poller may watch them); never push to or close them.
//   join / join_for / join_until / destructor            - any thread but a child subshell's
//     own (deadlock_error). On the parent's owner thread they run the parent executor until
//     the router has finished (the timed forms: poll() once), as an executor's own
//     destructor would run its pending tasks.
//
// Guarantees:
//   - FIFO per subshell: each subshell runs its messages in the order the router received
//     them, and its replies leave in the order it produced them.
//   - Exactly one reply per accepted message (send() returned ok): the handler's value, or a
//     routing_error naming the subshell. A message that never reached a handler hands its
//     payload back in the reply (crossbeam-style: nothing is silently dropped).
//   - No lock around user code; the routing table belongs to the router thread alone. Every
//     thread parks when idle: no polling loop anywhere.
//   - Deleting a subshell never blocks routing: the router stops its executor (drain: run
//     what it accepted; cancel: answer it with subshell_deleted) and a reaper thread joins it.
//   - shutdown(drain | cancel) follows the same rule for every subshell; replies() reports
//     closed only after the last reply is in it.
//
// Memory ordering: a message crosses two single-consumer queues (inbox -> the subshell's
// executor) and its reply a third (the outbox); each hop is the queue's release publish and
// acquire take, so what the sender wrote is visible to the handler and what the handler wrote
// to the reply's receiver. [A1]/[A2] each subshell's `answered` count is raised (release)
// after the message's reply is pushed and its handler has returned; the reaper's acquire
// loads of it happen before it closes the outbox, so a receiver that sees replies() closed
// has every reply. [C1]/[C2] a cancel code is stored (release) before the executor stop that
// it explains and loaded (acquire) by the task it turns into an error reply.
//
// After ipykernel's subshells (JEP 91: a shell-channel thread routing by subshell_id, a
// subshell manager for control requests), with a parking router in place of a polling one.

#include <unordered_map>


namespace tether {

// Handed to a handler of the form void(Payload&&, reply_sender&): send() answers the message
// (once; later calls return false). If the handler returns without sending, the message is
// answered with routing_errc::no_reply. Neither copyable nor movable: the reply belongs to
// the call. Subshell thread only (the thread running the handler).
template <class Reply, class Payload>
class reply_sender {
 public:
  reply_sender(const reply_sender&) = delete;
  reply_sender& operator=(const reply_sender&) = delete;

  // Sends the reply; true the first time, false (r untouched) once the message has one.
  bool send(Reply&& r) {
    if (sent_) return false;
    owner_->push_value(*sub_, tag_, std::move(r));
    sent_ = true;
    return true;
  }
  bool send(const Reply& r) requires std::copy_constructible<Reply> {
    if (sent_) return false;
    return send(Reply(r));
  }

  bool replied() const noexcept { return sent_; }
  subshell_id subshell() const noexcept { return sub_->id; }
  std::uint64_t tag() const noexcept { return tag_; }

 private:
  friend class router<Payload, Reply>;
  reply_sender(router<Payload, Reply>* owner, detail::router_subshell<Payload, Reply>* sub, std::uint64_t tag) noexcept
      : owner_(owner), sub_(sub), tag_(tag) {}

  router<Payload, Reply>* owner_;
  detail::router_subshell<Payload, Reply>* sub_;
  std::uint64_t tag_;
  bool sent_ = false;
};

template <class Payload, class Reply>
class router {
  static_assert(std::is_move_constructible_v<Payload> && std::is_nothrow_destructible_v<Payload>,
                "tether::router<Payload, Reply>: Payload must be move-constructible with a non-throwing destructor");
  static_assert(std::is_move_constructible_v<Reply> && std::is_nothrow_destructible_v<Reply>,
                "tether::router<Payload, Reply>: Reply must be move-constructible with a non-throwing destructor");

  using subshell = detail::router_subshell<Payload, Reply>;

 public:
  using envelope_type = envelope<Payload>;
  using reply_type = routed_reply<Reply, Payload>;
  using sender_type = reply_sender<Reply, Payload>;

  // Makes the parent's handler here (factory(parent_subshell)), then starts the router thread
  // and the reaper. parent must outlive the router and must run the tasks the router gives it
  // (for an adopting executor: run(), run_until() or poll()). Factory: callable with a
  // subshell_id, returning a handler of either form (see the banner).
  template <class Factory>
  router(executor& parent, Factory factory, router_options options = {})
      : name_(std::move(options.name)),
        parent_(this, parent_subshell, routing_errc::subshell_stopped),
        reaper_(executor_options{.name = name_ + "-reaper", .on_error = [](std::exception_ptr) {}}) {
    static_assert(std::is_invocable_v<Factory&, subshell_id>,
                  "tether::router: the factory must be callable with a tether::subshell_id");
    static_assert(detail::router_handler_v<std::decay_t<std::invoke_result_t<Factory&, subshell_id>>, Payload, Reply>,
                  "tether::router: the factory must return a handler callable as Reply(Payload&&) or "
                  "void(Payload&&, tether::reply_sender<Reply, Payload>&)");
    factory_ = std::make_unique<detail::router_factory_impl<Payload, Reply, Factory>>(std::move(factory));
    parent_.ex = &parent;
    parent_.handler = factory_->make(parent_subshell);
    thread_ = std::thread([this] { thread_main(); });
  }

  router(const router&) = delete;
  router& operator=(const router&) = delete;

  // shutdown(drain), then join(): every accepted message is answered and every thread joined
  // before it returns. Terminates the process (naming the cause) where join() would throw.
  ~router() {
    shutdown(stop_mode::drain);
    try {
      join();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tether: router '%s' destroyed where it cannot finish: %s\n", name_.c_str(), e.what());
      std::terminate();
    }
  }

  // ---- the shell channel ---------------------------------------------------------------------

  // Hands e to the router; never blocks. ok: accepted - exactly one reply will come; closed
  // (after shutdown): refused, e untouched. Thread-safe.
  push_result send(envelope_type&& e) {
    return inbox_.emplace(e.subshell, std::move(e.payload), e.tag) ? status::ok : status::closed;
  }
  // As send({id, payload, tag}); on closed the payload is not moved from.
  template <class P>
    requires std::constructible_from<Payload, P&&>
  push_result send(subshell_id id, P&& payload, std::uint64_t tag = 0) {
    return inbox_.emplace(id, std::forward<P>(payload), tag) ? status::ok : status::closed;
  }

  // The outbox: one reply per accepted message, in the order each subshell produced them.
  // Closed once the router has finished (see join()) and every reply is in. Receive only (one
  // consumer thread at a time; pop, pop_for, pop_bulk, a poller ...).
  mpsc_queue<reply_type>& replies() noexcept { return outbox_; }

  // ---- control: as messages ------------------------------------------------------------------

  // Hands a control request to the router; never blocks. ok or closed (req untouched). The
  // reply comes on control_replies(), with the request's tag: create - once the subshell's
  // handler is made (its id in reply.subshell); delete - once the subshell has finished
  // (every message it accepted is answered) and its thread is joined; list / stats - at once.
  // Replies to different requests may come out of request order: match them by tag. The
  // control channel is separate from the shell inbox (as in JEP 91): a request may overtake
  // messages still waiting there. The direct calls below are ordered with them instead.
  push_result send_control(control_request&& req) {
    return control_in_.emplace(std::move(req), nullptr, false) ? status::ok : status::closed;
  }
  push_result send_control(const control_request& req) {
    return control_in_.emplace(req, nullptr, false) ? status::ok : status::closed;
  }

  // Receive only, as replies(). Closed once the router has finished.
  mpsc_queue<control_reply>& control_replies() noexcept { return control_out_; }

  // ---- control: as calls ---------------------------------------------------------------------
  // Each travels through the shell inbox, so it takes effect after every message whose send()
  // happened before it (a delete with drain runs what this thread sent before it), and waits
  // for the router thread, which runs no user code: it answers as soon as the messages ahead
  // of it are routed, even while every subshell is busy. Throw router_stopped once
  // shutdown() was called. Thread-safe.

  // Creates a child subshell: starts its thread and makes its handler there; returns its id
  // once the handler exists. Rethrows the factory's exception (the subshell is removed then);
  // std::system_error if the thread could not start.
  subshell_id create_subshell() { return call(control_request::create()).subshell; }

  // Deletes a child subshell: from now on messages for it are answered subshell_deleted.
  // drain: its queued messages still run; cancel: they are answered subshell_deleted (a
  // running handler finishes). Returns as soon as it stops accepting - never waits for its
  // handler, so a subshell may delete itself. false: no such subshell, or the parent.
  bool delete_subshell(subshell_id id, stop_mode policy = stop_mode::drain) {
    return call(control_request::remove(id, policy), false).ok();
  }

  // The children's ids, ascending (the parent is implicit, as in JEP 91).
  std::vector<subshell_id> list_subshells() {
    control_reply r = call(control_request::list());
    std::vector<subshell_id> ids;
    ids.reserve(r.subshells.size());
    for (const subshell_stats& s : r.subshells) ids.push_back(s.id);
    return ids;
  }

  // Counters of the parent, then of every child (ascending id).
  std::vector<subshell_stats> stats() { return call(control_request::stats()).subshells; }
  std::optional<subshell_stats> stats(subshell_id id) {
    for (subshell_stats& s : stats())
      if (s.id == id) return std::move(s);
    return std::nullopt;
  }

  // ---- lifecycle -------------------------------------------------------------------------------

  // Stops accepting: later sends and control requests are refused (handed back). drain: every
  // accepted message still runs; cancel: those not yet running are answered router_stopped
  // (the parent's answer when the parent runs them). Control requests already queued are
  // answered router_stopped. Then each child subshell is stopped the same way and joined by
  // the reaper; once the parent has answered too, replies() and control_replies() close. A
  // cancel after a drain upgrades it. Returns true if this call stopped the router. Never
  // blocks. Thread-safe.
  bool shutdown(stop_mode mode = stop_mode::drain) noexcept {
    if (mode == stop_mode::cancel) cancel_.store(true, std::memory_order_seq_cst);  // before the close: seen with it
    const bool first = !stopping_.exchange(true, std::memory_order_seq_cst);
    inbox_.close();
    control_in_.close();
    return first;
  }

  // Waits until the router has finished: every accepted message answered, replies() and
  // control_replies() closed, every thread joined. Call shutdown() first (std::logic_error
  // otherwise). On the parent's owner thread it runs the parent executor until then (as
  // parent.run_until() would), so the parent's pending messages - and a child blocked on the
  // parent - get through; from inside a parent task, with router messages still pending
  // there, or from a child subshell's thread, it throws deadlock_error instead of waiting for
  // itself.
  void join() {
    (void)wait_finished(detail::no_deadline);
    bool expected = false;
    // acq_rel: one joiner claims the std::thread.
    if (thread_join_claimed_.compare_exchange_strong(expected, true, std::memory_order_acq_rel) && thread_.joinable())
      thread_.join();
    reaper_.join();
  }
  // As join() without joining the threads (they are finishing): true once finished, false at
  // the deadline. On the parent's owner thread they run, once, the parent tasks the router has
  // handed over (parent.poll()).
  template <class Rep, class Period>
  bool join_for(const std::chrono::duration<Rep, Period>& timeout) {
    return wait_finished(detail::deadline_after(timeout));
  }
  template <class Clock, class Duration>
  bool join_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return wait_finished(detail::to_steady(deadline));
  }

  bool is_stopped() const noexcept { return stopping_.load(std::memory_order_seq_cst); }
  bool is_finished() const noexcept { return finished_.load(std::memory_order_seq_cst); }
  const std::string& name() const noexcept { return name_; }

 private:
  friend class reply_sender<Reply, Payload>;

  // A control request: from send_control (waiter null: reply on control_out_), a direct call
  // (waiter: complete it) or the router itself (internal: no reply of its own).
  struct command {
    command(control_request&& r, detail::call_slot<control_reply>* w, bool i, std::exception_ptr f = {}) noexcept
        : request(std::move(r)), waiter(w), internal(i), failure(std::move(f)) {}
    command(const control_request& r, detail::call_slot<control_reply>* w, bool i) noexcept
        : request(r), waiter(w), internal(i) {}
    control_request request;
    detail::call_slot<control_reply>* waiter;
    bool internal;
    // Internal removal of a subshell whose factory threw: the exception, for the create it
    // answers once the subshell is gone.
    std::exception_ptr failure;
  };

  // What the inbox carries: a message (its header and payload), or a direct control call
  // (ctl: the caller's command, on its stack until the call returns).
  struct inbox_item {
    template <class P>
    inbox_item(subshell_id s, P&& p, std::uint64_t t)
        : subshell(s), tag(t), payload(std::in_place, std::forward<P>(p)) {}
    explicit inbox_item(command* c) noexcept : ctl(c) {}
    subshell_id subshell{};
    std::uint64_t tag = 0;
    std::optional<Payload> payload;
    command* ctl = nullptr;
  };

  // The task that carries one message to its subshell: the reply obligation. Run, it calls
  // the handler; destroyed unrun (executor refused it, or stop(cancel)), it answers with an
  // error and hands the payload back. Either way, exactly one reply.
  struct delivery {
    delivery(subshell* s, std::uint64_t t, Payload&& p) noexcept(std::is_nothrow_move_constructible_v<Payload>)
        : sub(s), tag(t), payload(std::move(p)) {}
    delivery(delivery&& o) noexcept(std::is_nothrow_move_constructible_v<Payload>)
        : sub(std::exchange(o.sub, nullptr)), tag(o.tag), payload(std::move(o.payload)) {}
    delivery& operator=(delivery&&) = delete;
    void operator()() {
      subshell* s = std::exchange(sub, nullptr);
      s->owner->run_delivery(*s, tag, payload);
    }
    ~delivery() {
      if (sub != nullptr) sub->owner->answer_unrun(*sub, tag, std::move(payload));
    }
    subshell* sub;
    std::uint64_t tag;
    Payload payload;
  };

  // Several messages for one subshell from one inbox batch, as one task: one queue push and at
  // most one wake-up instead of one per message. Each message is answered as delivery's is;
  // destroyed part-way (an exception left the task, or stop(cancel)), it answers the rest.
  struct delivery_batch {
    delivery_batch(subshell* s, std::vector<std::pair<std::uint64_t, Payload>>&& m) noexcept
        : sub(s), items(std::move(m)) {}
    delivery_batch(delivery_batch&& o) noexcept
        : sub(std::exchange(o.sub, nullptr)), items(std::move(o.items)), next(o.next) {}
    delivery_batch& operator=(delivery_batch&&) = delete;
    void operator()() {
      while (next < items.size()) {
        auto& [tag, payload] = items[next++];
        sub->owner->run_delivery(*sub, tag, payload);
      }
      sub = nullptr;
    }
    ~delivery_batch() {
      if (sub == nullptr) return;
      for (; next < items.size(); ++next)
        sub->owner->answer_unrun(*sub, items[next].first, std::move(items[next].second));
    }
    subshell* sub;
    std::vector<std::pair<std::uint64_t, Payload>> items;
    std::size_t next = 0;  // the first message not yet run
  };

  // A child's first task: makes its handler on its own thread, then answers the create.
  struct init_job {
    init_job(router* r, subshell* s, detail::call_slot<control_reply>* w, std::uint64_t t) noexcept
        : owner(r), sub(s), waiter(w), tag(t) {}
    init_job(init_job&& o) noexcept
        : owner(o.owner), sub(std::exchange(o.sub, nullptr)), waiter(o.waiter), tag(o.tag) {}
    void operator()() { owner->init_subshell(*std::exchange(sub, nullptr), waiter, tag); }
    ~init_job() {
      if (sub != nullptr) owner->init_dropped(*sub, waiter, tag);
    }
    router* owner;
    subshell* sub;
    detail::call_slot<control_reply>* waiter;
    std::uint64_t tag;
  };

  // ---- the direct control calls ----------------------------------------------------------------

  control_reply call(control_request req, bool throw_on_error = true) {
    detail::call_slot<control_reply> slot;
    command c(std::move(req), &slot, false);
    if (!inbox_.emplace(&c))
      throw router_stopped("tether: router '" + name_ + "' is stopped and no longer accepts control requests");
    slot.wait(true);  // spin briefly first: the router thread answers promptly
    control_reply r = slot.take();  // rethrows a factory's exception
    if (r.error && (throw_on_error || r.error->code() == routing_errc::router_stopped)) {
      if (r.error->code() == routing_errc::router_stopped) throw router_stopped(r.error->message());
      throw std::runtime_error(r.error->message());
    }
    return r;
  }

  // ---- replies (any thread that answers a message) ---------------------------------------------

  void push_value(subshell& s, std::uint64_t tag, Reply&& r) { (void)outbox_.emplace(s.id, tag, std::move(r)); }

  void push_error(subshell& s, std::uint64_t tag, routing_errc code, std::string why, std::optional<Payload> back) {
    (void)outbox_.emplace(s.id, tag, routing_error(code, s.id, describe(s.id, std::move(why))), std::move(back));
    s.failed.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  }

  // The message is finished: its reply is out and no handler runs for it any more. The count
  // is the last touch of the router; only the parent's finish is waited for (children are
  // joined instead).
  void settle(subshell& s) noexcept {
    const bool parent = s.id.is_parent();
    const void* key = &s;
    s.answered.fetch_add(1, std::memory_order_release);  // [A1] release: pairs with [A2] in finish()
    if (parent) detail::router_settle_parker(key).notify_all();
  }

  std::string describe(subshell_id id, std::string why) const {
    const std::string who = id.is_parent() ? std::string("the parent subshell") : id.to_string();
    return "tether: router '" + name_ + "': " + who + ": " + why;
  }

  std::string reason(const subshell& s, routing_errc code) const {
    switch (code) {
      case routing_errc::subshell_deleted: return "the subshell was deleted; the message was not run";
      case routing_errc::subshell_stopped:
        return "its executor '" + s.ex->name() + "' is stopped; the message was not run";
      case routing_errc::router_stopped: return "the router was stopped (cancel) before the message ran";
      default: return to_string(code);
    }
  }

  // ---- the subshell side ---------------------------------------------------------------------

  // Subshell thread: runs one message (or answers it with the cancel code).
  void run_delivery(subshell& s, std::uint64_t tag, Payload& payload) {
    // [C2] acquire: pairs with [C1]; the cancel code is set before the stop it explains.
    if (const std::uint8_t c = s.cancel_code.load(std::memory_order_acquire); c != 0) {
      push_error(s, tag, routing_errc{c}, reason(s, routing_errc{c}), std::move(payload));
      settle(s);
      return;
    }
    sender_type reply(this, &s, tag);
    bool threw = false;  // an exception after the reply was sent changes nothing for the sender
    s.busy.store(true, std::memory_order_relaxed);  // relaxed: a statistic
    try {
      if (!s.handler) throw std::logic_error("the subshell has no handler (its factory threw)");
      s.handler->handle(std::move(payload), reply);
    } catch (const std::exception& e) {
      threw = true;
      if (!reply.replied())
        push_error(s, tag, routing_errc::handler_threw, std::string("the handler threw: ") + e.what(), {});
    } catch (...) {
      threw = true;
      if (!reply.replied())
        push_error(s, tag, routing_errc::handler_threw, "the handler threw a non-standard exception", {});
    }
    s.busy.store(false, std::memory_order_relaxed);  // relaxed: a statistic
    if (!reply.replied() && !threw)
      push_error(s, tag, routing_errc::no_reply, "the handler returned without replying", {});
    settle(s);
  }

  // Any thread: a delivery destroyed unrun.
  void answer_unrun(subshell& s, std::uint64_t tag, Payload&& payload) noexcept {
    // [C2] acquire: as in run_delivery().
    const std::uint8_t c = s.cancel_code.load(std::memory_order_acquire);
    const routing_errc code = c != 0 ? routing_errc{c} : s.unrun_code;
    try {
      push_error(s, tag, code, reason(s, code), std::move(payload));
    } catch (...) {  // out of memory: the reply is lost, but shutdown must not wait for it
    }
    settle(s);
  }

  // Child thread: makes the handler, answers the create.
  void init_subshell(subshell& s, detail::call_slot<control_reply>* waiter, std::uint64_t tag) {
    std::exception_ptr failure;
    try {
      s.handler = factory_->make(s.id);
    } catch (...) {
      failure = std::current_exception();
    }
    if (!failure) {
      answer(waiter, false, control_reply{control_op::create_subshell, tag, s.id, {}, std::nullopt});
      return;
    }
    // The router removes it, then answers the create. Shutting down, the router stops it
    // anyway: answer here. The exception moves with the request (a closed queue leaves it
    // here), so the thread that reads it also drops the last reference: libstdc++ counts
    // exception_ptr references with atomics ThreadSanitizer does not see, and would report
    // this thread freeing the exception after the router read it.
    if (control_in_.emplace(control_request::remove(s.id, stop_mode::drain, tag), waiter, true, std::move(failure)))
      return;
    answer_failed_create(waiter, tag, s.id, failure);
  }

  void answer_failed_create(detail::call_slot<control_reply>* waiter, std::uint64_t tag, subshell_id id,
                            const std::exception_ptr& failure) {
    if (waiter != nullptr) {
      waiter->fail(failure);  // create_subshell() rethrows it
      return;
    }
    std::string what = "the handler factory threw";
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      what += std::string(": ") + e.what();
    } catch (...) {
    }
    answer(nullptr, false,
           error_reply(control_op::create_subshell, tag, id, routing_errc::create_failed, std::move(what)));
  }

  // Any thread: a child's init task destroyed unrun (deleted or shut down with cancel).
  void init_dropped(subshell& s, detail::call_slot<control_reply>* waiter, std::uint64_t tag) noexcept {
    const std::uint8_t c = s.cancel_code.load(std::memory_order_acquire);  // [C2] acquire: as above
    const routing_errc code = c != 0 ? routing_errc{c} : routing_errc::router_stopped;
    try {
      answer(waiter, false, error_reply(control_op::create_subshell, tag, s.id, code, reason(s, code)));
    } catch (...) {  // out of memory building the reply: never leave a caller blocked
      if (waiter != nullptr) waiter->fail(std::current_exception());
    }
  }

  control_reply error_reply(control_op op, std::uint64_t tag, subshell_id id, routing_errc code,
                            std::string why) const {
    return control_reply{op, tag, id, {}, routing_error(code, id, describe(id, std::move(why)))};
  }

  // Completes a control request: the direct caller's slot, or the control outbox.
  void answer(detail::call_slot<control_reply>* waiter, bool internal, control_reply&& r) {
    if (waiter != nullptr) {
      waiter->run([&r]() -> control_reply { return std::move(r); });
    } else if (!internal) {
      (void)control_out_.push(std::move(r));
    }
  }

  // ---- the router thread -----------------------------------------------------------------------

  void thread_main() {
    try {
      detail::set_this_thread_name(name_);
      poller p;
      p.add(inbox_).add(control_in_);
      const source_id inbox_id = source_id::of(inbox_);
      bool inbox_open = true;
      bool control_open = true;
      while (inbox_open || control_open) {
        const source_id ready = p.wait();
        if (ready == inbox_id) {
          if (!serve_inbox()) {
            p.remove(inbox_);
            inbox_open = false;
          }
        } else if (!serve_control()) {
          p.remove(control_in_);
          control_open = false;
        }
      }
      finish_routing();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tether: router '%s': the router thread failed: %s\n", name_.c_str(), e.what());
      std::terminate();
    }
  }

  // Routes up to a batch of envelopes, then hands each subshell its share as one task. false
  // once the inbox is closed and drained.
  bool serve_inbox() {
    // A bigger batch gives each subshell more messages per task (fewer wake-ups); a smaller one
    // lets a control request in sooner. 1024 routing steps take tens of microseconds.
    constexpr std::size_t batch = 1024;
    bool open = true;
    if (inbox_.drain([this](inbox_item&& e) { route(std::move(e)); }, batch) < batch) {
      pop_result<inbox_item> r = inbox_.try_pop();  // fewer than a batch: empty, or closed?
      if (r)
        route(std::move(*r));
      else
        open = !r.is_closed();
    }
    hand_over();
    return open;
  }

  // Posts what route() staged: a subshell's only message as a delivery, several as a batch.
  // A refused post (the parent's executor stopped) answers them from the task's destructor.
  void hand_over() {
    for (subshell* s : staged_) {
      if (s->staged.size() == 1) {
        auto& [tag, payload] = s->staged.front();
        (void)s->ex->post(delivery(s, tag, std::move(payload)));
        s->staged.clear();
      } else {
        (void)s->ex->post(delivery_batch(s, std::move(s->staged)));
        s->staged.clear();  // moved from: make it empty for certain
      }
    }
    staged_.clear();
  }

  bool serve_control() {
    constexpr std::size_t batch = 16;
    if (control_in_.drain([this](command&& c) { serve(c); }, batch) == batch) return true;
    pop_result<command> r = control_in_.try_pop();
    if (r) {
      serve(*r);
      return true;
    }
    return !r.is_closed();
  }

  // Reads the envelope's id, never its payload, and hands the payload on.
  void route(inbox_item&& e) {
    if (e.ctl != nullptr) {
      hand_over();  // the messages before it reach their subshells first (a delete drains them)
      serve(*e.ctl);
      return;
    }
    // relaxed: a cancel racing this message may go either way; the close after it is seq_cst.
    if (cancel_.load(std::memory_order_relaxed)) {
      reply_unrouted(e, routing_errc::router_stopped, "the router was stopped (cancel) before the message was routed");
      return;
    }
    subshell* s = find(e.subshell);
    if (s == nullptr) {
      if (e.subshell.value() < next_id_)
        reply_unrouted(e, routing_errc::subshell_deleted, "the subshell was deleted; the message was not run");
      else
        reply_unrouted(e, routing_errc::unknown_subshell, "no such subshell was ever created; the message was not run");
      return;
    }
    s->accepted.store(++s->accepted_local, std::memory_order_relaxed);  // relaxed: published by the post in hand_over()
    if (s->staged.empty()) staged_.push_back(s);
    s->staged.emplace_back(e.tag, std::move(*e.payload));
  }

  void reply_unrouted(inbox_item& e, routing_errc code, const char* why) {
    (void)outbox_.emplace(e.subshell, e.tag, routing_error(code, e.subshell, describe(e.subshell, why)),
                          std::move(e.payload));
  }

  subshell* find(subshell_id id) noexcept {
    if (id.is_parent()) return &parent_;
    if (id == cached_id_) return cached_;
    const auto it = table_.find(id.value());
    if (it == table_.end()) return nullptr;
    cached_id_ = id;
    cached_ = it->second.get();
    return cached_;
  }

  // A direct caller's command lives on its stack: once its waiter is completed it may be gone,
  // so everything here works on a copy.
  void serve(const command& in) {
    const command c = in;
    const control_request& q = c.request;
    if (stopping_.load(std::memory_order_seq_cst) && !c.internal) {
      answer(c.waiter, false,
             error_reply(q.op, q.tag, q.subshell, routing_errc::router_stopped,
                         "the router is shutting down; request refused"));
      return;
    }
    switch (q.op) {
      case control_op::create_subshell: create(c); return;
      case control_op::delete_subshell: remove(c); return;
      case control_op::list_subshells:
      case control_op::subshell_stats: {
        control_reply r{q.op, q.tag, {}, {}, std::nullopt};
        if (q.op == control_op::subshell_stats) r.subshells.push_back(snapshot(parent_));
        std::vector<const subshell*> children;
        children.reserve(table_.size());
        for (const auto& entry : table_) children.push_back(entry.second.get());
        std::sort(children.begin(), children.end(), [](const subshell* a, const subshell* b) { return a->id < b->id; });
        for (const subshell* s : children) r.subshells.push_back(snapshot(*s));
        answer(c.waiter, c.internal, std::move(r));
        return;
      }
    }
    answer(c.waiter, c.internal,
           error_reply(q.op, q.tag, q.subshell, routing_errc::invalid_request, "unknown control operation"));
  }

  subshell_stats snapshot(const subshell& s) const {
    // relaxed: statistics.
    return {s.id, s.ex->name(), s.accepted.load(std::memory_order_relaxed), s.answered.load(std::memory_order_relaxed),
            s.failed.load(std::memory_order_relaxed), s.busy.load(std::memory_order_relaxed)};
  }

  // Starts the child's executor (the one thing here that takes a while: a thread start) and
  // queues its init task; the create is answered from the child's thread.
  void create(const command& c) {
    const subshell_id id{next_id_++};
    auto s = std::make_unique<subshell>(this, id, routing_errc::subshell_deleted);
    subshell* raw = s.get();
    try {
      s->own_ex = std::make_unique<executor>(executor_options{
          .name = id.to_string(),
          .on_start = [this] { detail::router_child_thread_of = this; },
          .on_stop = [raw] { raw->handler.reset(); },  // the handler dies on its own thread
          .on_error = [](std::exception_ptr) {},       // only out-of-memory can get here
      });
    } catch (const std::exception& e) {
      if (c.waiter != nullptr) {
        c.waiter->fail(std::current_exception());
        return;
      }
      answer(nullptr, c.internal,
             error_reply(control_op::create_subshell, c.request.tag, id, routing_errc::create_failed,
                         std::string("its thread could not be started: ") + e.what()));
      return;
    }
    s->ex = s->own_ex.get();
    table_.emplace(id.value(), std::move(s));
    (void)raw->ex->post(init_job(this, raw, c.waiter, c.request.tag));  // a fresh executor accepts
  }

  void remove(const command& c) {
    const control_request& q = c.request;
    if (q.subshell.is_parent()) {
      answer(c.waiter, c.internal,
             error_reply(q.op, q.tag, q.subshell, routing_errc::invalid_request,
                         "the parent subshell cannot be deleted"));
      return;
    }
    const auto it = table_.find(q.subshell.value());
    if (it != table_.end()) {
      std::unique_ptr<subshell> s = std::move(it->second);
      table_.erase(it);
      if (cached_id_ == q.subshell) cached_id_ = parent_subshell;
      // A direct delete is answered now; one from the control channel once reaped.
      if (c.waiter != nullptr && !c.failure)
        answer(c.waiter, false, control_reply{q.op, q.tag, q.subshell, {}, std::nullopt});
      retire(std::move(s), q.policy, routing_errc::subshell_deleted, c.waiter == nullptr && !c.internal, q.tag);
    } else if (!c.failure) {
      const bool was = q.subshell.value() < next_id_;
      answer(c.waiter, c.internal,
             error_reply(q.op, q.tag, q.subshell, was ? routing_errc::subshell_deleted : routing_errc::unknown_subshell,
                         was ? "already deleted" : "no such subshell was ever created"));
    }
    if (c.failure) answer_failed_create(c.waiter, q.tag, q.subshell, c.failure);  // it is gone now
  }

  // Stops a child (never waits for it) and gives it to the reaper, which joins its thread,
  // then (for a control-channel delete) answers.
  void retire(std::unique_ptr<subshell> s, stop_mode mode, routing_errc code, bool reply, std::uint64_t tag) {
    // [C1] release: the code is visible to the tasks that stop(cancel) turns away.
    if (mode == stop_mode::cancel) s->cancel_code.store(static_cast<std::uint8_t>(code), std::memory_order_release);
    s->ex->stop(mode);
    (void)reaper_.post([this, s = std::move(s), reply, tag]() mutable {
      const subshell_id id = s->id;
      s->own_ex.reset();  // joins the subshell's thread: its last message is answered
      s.reset();
      if (reply) answer(nullptr, false, control_reply{control_op::delete_subshell, tag, id, {}, std::nullopt});
    });
  }

  // Router thread, once both inboxes are closed and drained: stop every child the same way,
  // let the parent's pending tasks answer router_stopped on cancel, and have the reaper close
  // the outboxes once all is answered.
  void finish_routing() {
    const bool cancelled = cancel_.load(std::memory_order_seq_cst);
    const stop_mode mode = cancelled ? stop_mode::cancel : stop_mode::drain;
    for (auto& entry : table_) retire(std::move(entry.second), mode, routing_errc::router_stopped, false, 0);
    table_.clear();
    cached_id_ = parent_subshell;
    if (cancelled)  // [C1] release: as in retire()
      parent_.cancel_code.store(static_cast<std::uint8_t>(routing_errc::router_stopped), std::memory_order_release);
    const std::uint64_t parent_accepted = parent_.accepted_local;
    (void)reaper_.post([this, parent_accepted] { finish(parent_accepted); });
    routing_done_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    state_wait_.notify_all();
  }

  // Reaper thread, after every child was joined: waits for the parent's answers, then closes.
  void finish(std::uint64_t parent_accepted) {
    // [A2] the loads are seq_cst (acquire): pair with [A1]; every parent reply is pushed.
    detail::park_until(detail::router_settle_parker(&parent_),
                       [&] { return parent_.answered.load(std::memory_order_seq_cst) == parent_accepted; },
                       detail::no_deadline);
    outbox_.close();
    control_out_.close();
    finished_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    state_wait_.notify_all();
    finished_source_.request_stop();  // a join() running the parent returns
    reaper_.stop(stop_mode::drain);
  }

  bool wait_finished(detail::steady_time deadline) {
    if (is_finished()) return true;
    if (!is_stopped())
      throw std::logic_error("tether: join() on router '" + name_ + "' before shutdown(): it would wait forever");
    if (detail::router_child_thread_of == this)
      throw deadlock_error("tether: join() on router '" + name_ + "' from " + detail::describe_this_thread() +
                               ", one of its own child subshells, would wait for itself (the router joins its "
                               "subshells); call shutdown() there and join() elsewhere",
                           {name_});
    if (parent_.ex->running_in_this_thread() && !drive_parent(deadline)) return false;
    return detail::park_until(state_wait_, [this] { return finished_.load(std::memory_order_seq_cst); }, deadline);
  }

  // On the parent's owner thread the router's last parent tasks need this thread. join()
  // runs the parent until the router has finished (so a child blocked on the parent, e.g. in
  // parent.call(), still gets through); the timed forms run once what the router handed over.
  // false: the deadline passed.
  bool drive_parent(detail::steady_time deadline) {
    const auto handed_over = [this] { return routing_done_.load(std::memory_order_seq_cst); };
    const auto parent_settled = [this] {
      // relaxed: after handed_over(), whose seq_cst load ordered the router's last store.
      return parent_.answered.load(std::memory_order_seq_cst) == parent_.accepted.load(std::memory_order_relaxed);
    };
    try {
      if (deadline == detail::no_deadline) {
        (void)parent_.ex->run_until(finished_source_.get_token());
        return true;
      }
      if (!detail::park_until(state_wait_, handed_over, deadline)) return false;
      if (!parent_settled()) (void)parent_.ex->poll();
      return true;
    } catch (const std::logic_error&) {  // inside one of the parent's tasks: it cannot run here
      if (!detail::park_until(state_wait_, handed_over, deadline)) return false;
      if (parent_settled()) return true;  // nothing of ours is pending there
      throw deadlock_error("tether: join() on router '" + name_ + "' inside a task of its parent executor '" +
                               parent_.ex->name() +
                               "' would wait for the parent's own pending messages; call shutdown() there and "
                               "join() once the parent's task has returned",
                           {name_, parent_.ex->name()});
    }
  }

  const std::string name_;
  std::unique_ptr<detail::router_factory<Payload, Reply>> factory_;

  mpsc_queue<inbox_item> inbox_;           // any thread pushes; the router thread pops
  mpsc_queue<command> control_in_;         // any thread pushes; the router thread pops
  mpsc_queue<reply_type> outbox_;          // subshells (and the router) push; the client pops
  mpsc_queue<control_reply> control_out_;  // router, children, reaper push; the client pops

  subshell parent_;

  // Router thread only: the children, the last lookup, and the subshells with staged messages.
  std::unordered_map<std::uint64_t, std::unique_ptr<subshell>> table_;
  std::vector<subshell*> staged_;
  std::uint64_t next_id_ = 1;
  subshell_id cached_id_ = parent_subshell;
  subshell* cached_ = nullptr;

  // Set once by shutdown(); read by the router thread, is_stopped() and join().
  std::atomic<bool> stopping_{false};
  std::atomic<bool> cancel_{false};        // set by shutdown(cancel); read by the router thread
  std::atomic<bool> routing_done_{false};  // set once by the router thread when it hands over
  std::atomic<bool> finished_{false};      // set once by the reaper after closing the outboxes
  std::atomic<bool> thread_join_claimed_{false};
  detail::parker state_wait_;  // joiners wait here for routing_done_ / finished_
  std::stop_source finished_source_;  // stopped with finished_: ends a join() running the parent

  executor reaper_;     // joins the threads of deleted subshells; after what its tasks touch
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace tether

// ---- tether/thread_checker.hpp ----------------------------------------------
// tether/thread_checker.hpp - "this object belongs to one thread", checked in release builds.
//
//   class session_cache {
//     tether::thread_checker owner_;             // bound to the constructing thread
//     int hits_ TETHER_GUARDED_BY(owner_) = 0;   // clang -Wthread-safety checks the accesses
//    public:
//     void hit() { owner_.check(); ++hits_; }    // throws tether::wrong_thread elsewhere
//   };
//
// check() costs one thread-local read and a compare, so it stays on in release builds (a
// misplaced call from another thread becomes an exception naming both threads, not memory
// corruption). The thrown wrong_thread names the owner and the caller by thread id, name
// (set_thread_name() or the OS's thread name) and kernel thread id.
//
// For clang's -Wthread-safety, thread_checker is a capability and check() asserts it:
// members marked TETHER_GUARDED_BY(checker) may be used only after checker.check() in the
// same function.
//
// Who may call what: every member, any thread (that is the point); detach() and rebind
// semantics are racy by nature - call detach() only when no other thread uses the checker.
//
// Memory ordering: a lazy binder claims record_ with an acq_rel CAS, then publishes serial_
// (release); error paths read both with acquire. The fast path reads serial_ relaxed: it
// only compares it with the caller's own serial and reads nothing through it.



namespace tether {

// Names the calling thread in tether's messages (in full) and for the OS (first 15 bytes:
// what top, gdb and /proc show).
inline void set_thread_name(std::string_view name) { detail::set_this_thread_name(name); }

struct defer_binding_t {
  explicit defer_binding_t() = default;
};
inline constexpr defer_binding_t defer_binding{};

class TETHER_CAPABILITY("thread") thread_checker {
 public:
  // Bound to the calling thread.
  thread_checker() : record_(&detail::this_thread_record()), serial_(detail::tls_serial) {}
  // Bound to the first thread that calls check() or is_current().
  explicit thread_checker(defer_binding_t) noexcept {}

  thread_checker(const thread_checker& other) noexcept
      : record_(other.record_.load(std::memory_order_acquire)),  // acquire: pairs with bind()'s CAS
        serial_(other.serial_.load(std::memory_order_acquire)) {}  // acquire: pairs with bind()'s store
  thread_checker& operator=(const thread_checker&) = delete;

  // true on the owner thread (binding a deferred checker to the caller). Thread-safe.
  bool is_current() const {
    // Only the value is compared; the record is read under acquire on other paths.
    const std::uint64_t owner = serial_.load(std::memory_order_relaxed);  // relaxed: pairs with nothing
    if (owner != 0 && owner == detail::tls_serial) return true;
    return owner == 0 && bind();
  }

  // Throws wrong_thread unless on the owner thread. `what` names the object in the message.
  void check(std::string_view what = "an object guarded by a tether::thread_checker") const
      TETHER_ASSERT_CAPABILITY(this) {
    if (!is_current()) throw wrong_thread(message(what));
  }

  // The next check() binds to its caller (e.g. after handing the object to another thread).
  void detach() noexcept {
    serial_.store(0, std::memory_order_release);      // release: pairs with the acquire loads
    record_.store(nullptr, std::memory_order_release);  // release: as above
  }

  // "thread 1403 'julia' (tid 4242)", or why there is none. Thread-safe.
  std::string describe_owner() const {
    const std::uint64_t owner = serial_.load(std::memory_order_acquire);  // acquire: pairs with bind()
    if (owner == 0) return "no thread yet";
    return detail::describe_thread(record_.load(std::memory_order_acquire), owner);  // acquire: pairs with bind()
  }

 private:
  // Binds an unbound checker to the calling thread; true if it is now (or was) ours.
  bool bind() const {
    detail::thread_record& me = detail::this_thread_record();
    detail::thread_record* expected = nullptr;
    // The first binder wins; acquire lets a loser read the winner's record.
    if (record_.compare_exchange_strong(expected, &me, std::memory_order_acq_rel)) {  // acq_rel: pairs with the acquire loads
      serial_.store(detail::tls_serial, std::memory_order_release);  // release: pairs with message()'s acquire
      return true;
    }
    return expected == &me && serial_.load(std::memory_order_acquire) == detail::tls_serial;  // acquire: pairs with the store above
  }

  std::string message(std::string_view what) const {
    const std::uint64_t owner = serial_.load(std::memory_order_acquire);  // acquire: pairs with bind()
    detail::thread_record* record = record_.load(std::memory_order_acquire);  // acquire: pairs with bind()
    return detail::wrong_thread_message(std::string(what), record, owner,
                                        "use it from its owner thread, or hand the work to that thread "
                                        "(executor::call/post, confined<T>::with)");
  }

  // The owner's record and serial. Written at construction or by the first bind(); read by
  // every check.
  mutable std::atomic<detail::thread_record*> record_{nullptr};
  mutable std::atomic<std::uint64_t> serial_{0};
};

}  // namespace tether

// ---- tether.hpp -------------------------------------------------------------
// tether.hpp - the whole toolkit: includes every public header, nothing else.
