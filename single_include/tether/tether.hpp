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
// Single-consumer queues are only correct with one consumer at a time. Every consumer call
// holds a consumer_scope (consumer_check::scope<consumer_checks_enabled>): in a translation
// unit compiled without NDEBUG it registers the calling thread in owner_, and a second thread
// entering while another is registered throws std::logic_error naming both threads; with
// NDEBUG it does nothing and costs nothing.
//
// One layout in every build mode: owner_ is always a member, so a queue built in a
// translation unit with NDEBUG and used in one without (or the other way round) is the same
// object. Only whether a call checks depends on NDEBUG, as with assert() in an inline
// function: where the two modes disagree the linker keeps one copy of each queue function,
// and either copy is safe next to the other - an unchecked call never touches owner_; a
// checked call registers and unregisters itself, so it throws only when another checked call
// is inside on another thread (a real misuse), never because of an unchecked one. A mix can
// only miss a misuse, never report a false one. The two scopes are different class template
// specializations and consumer_check itself is the same in every mode, so none of these
// classes has two definitions (tests/unit/odr_checked.cpp shares queues across the modes).

#include <atomic>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace tether::detail {

// Whether this translation unit's consumer calls check. Not inline: a namespace-scope
// constexpr has internal linkage, so each translation unit has its own and none of the
// classes below differs between build modes.
#ifdef NDEBUG
constexpr bool consumer_checks_enabled = false;
#else
constexpr bool consumer_checks_enabled = true;
#endif

class consumer_check {
 public:
  template <bool Check>
  class scope;

 private:
  // The thread inside a checked consumer call, if any: written and read by checked calls only.
  std::atomic<std::thread::id> owner_{};
};

// Checked: registers the calling thread for the length of the call (nested calls on the same
// thread, e.g. a pop from inside a try_pop_each callback, are fine).
template <>
class consumer_check::scope<true> {
 public:
  explicit scope(consumer_check& c) : check_(c) {
    const auto me = std::this_thread::get_id();
    std::thread::id expected{};
    // [CC1] acq_rel: orders this consumer after the previous one's exit; pairs with [CC2].
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
    // [CC2] release: pairs with [CC1] of the next consumer to enter.
    if (outermost_) check_.owner_.store(std::thread::id{}, std::memory_order_release);
  }
  scope(const scope&) = delete;
  scope& operator=(const scope&) = delete;

 private:
  consumer_check& check_;
  bool outermost_ = false;
};

// Unchecked: touches nothing.
template <>
class consumer_check::scope<false> {
 public:
  explicit scope(consumer_check&) noexcept {}
  scope(const scope&) = delete;
  scope& operator=(const scope&) = delete;
};

// The scope every consumer call of this translation unit takes.
using consumer_scope = consumer_check::scope<consumer_checks_enabled>;

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

// The longest wait tether computes a deadline for: anything longer (or a time point further
// ahead) is no_deadline, "wait until woken". About 95 years, far below the steady clock's
// overflow (292 years of nanoseconds from boot).
inline constexpr double deadline_horizon_seconds = 3e9;

// Converts any clock's time point to a steady_clock deadline (other clocks' deadlines are
// honoured as "this much time from now"). Saturates instead of overflowing: a deadline in
// the past is "now" (try once), one beyond the horizon is no_deadline.
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
    if (!(ahead > 0)) return steady_now;
    if (ahead > deadline_horizon_seconds) return no_deadline;
    return steady_now + ceil<steady_clock::duration>(duration<double>(ahead));  // small here
  }
}

// The one place a relative timeout becomes a deadline: every `_for` call of the library goes
// through here. Saturates instead of overflowing: zero, negative (or NaN) is "now" (try
// once); beyond the horizon - days::max(), weeks::max(), microseconds::max(), ... - is
// no_deadline. The comparison is made in floating point: comparing days::max() with an
// integral hours count would itself overflow (libstdc++'s days is a 64-bit count).
template <class Rep, class Period>
steady_time deadline_after(const std::chrono::duration<Rep, Period>& d) noexcept {
  using namespace std::chrono;
  const auto now = steady_clock::now();
  const double seconds = duration<double>(d).count();
  if (!(seconds > 0)) return now;
  if (seconds > deadline_horizon_seconds) return no_deadline;
  return now + ceil<steady_clock::duration>(d);  // d is under the horizon: no overflow
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

#include <optional>
#include <stop_token>


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

// ---- tether/detail/queue/sink.hpp -------------------------------------------
// tether/detail/queue/sink.hpp - how a consumer hands an item over to whoever takes it.
//
// Two kinds of taker: a try_pop_each() callback, which may pop from the same queue, so the item
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

// ---- tether/result.hpp ------------------------------------------------------
// tether/result.hpp - what a push or pop reports: a value, or why there is none.
//
// Every non-blocking and timed call in tether says exactly what happened, so a caller can
// tell "nothing yet" (empty), "gave up waiting" (timeout), "no room" (full), "the other
// side is gone" (closed) and "asked to stop waiting" (cancelled) apart. A failed push never consumes its argument: the value stays
// with the caller.

#include <string>

namespace tether {

namespace detail {
// Tag of pop_result's taking constructor: see there. For the queues; not for users.
struct take_from_slot_t {
  explicit take_from_slot_t() = default;
};
inline constexpr take_from_slot_t take_from_slot{};
}  // namespace detail

enum class status : std::uint8_t {
  ok,       // the value was pushed / a value was popped
  empty,    // try_pop: nothing ready right now (the queue is open)
  full,     // try_push: no room right now (the queue is open)
  timeout,  // *_for / *_until: the deadline passed first
  closed,   // closed (and, for pops, drained): no value will ever come / be accepted
  cancelled,  // std::stop_token overloads: a stop was requested before a value came / fitted
};

constexpr const char* to_string(status s) noexcept {
  switch (s) {
    case status::ok: return "ok";
    case status::empty: return "empty";
    case status::full: return "full";
    case status::timeout: return "timeout";
    case status::closed: return "closed";
    case status::cancelled: return "cancelled";
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
  constexpr bool is_cancelled() const noexcept { return status_ == tether::status::cancelled; }
  friend constexpr bool operator==(push_result a, push_result b) noexcept = default;

 private:
  tether::status status_;
};

// Outcome of a pop or receive: holds a value (status ok) or says why not (empty, timeout,
// closed, cancelled). Reads like std::optional: `if (auto r = q.pop_for(10ms)) use(*r);`.
template <class T>
class [[nodiscard]] pop_result {
 public:
  pop_result(tether::status s) noexcept : status_(s) {}  // NOLINT: implicit by design
  pop_result(std::in_place_t, T&& v) : value_(std::move(v)), status_(tether::status::ok) {}
  template <class... Args>
  explicit pop_result(std::in_place_t, Args&&... args)
      : value_(std::in_place, std::forward<Args>(args)...), status_(tether::status::ok) {}

  // For the queues (detail): moves the value straight out of a queue's slot - the only move
  // an item makes on its way out of a pop - destroys the moved-from item in the slot, then
  // calls commit(), which moves the queue past the slot. If the move throws, nothing else
  // runs: the item is still queued (as T's throwing move left it) and the next to pop. Every
  // pop returns this result as a prvalue all the way out (guaranteed copy elision), so no
  // later move of T can lose the item.
  template <class Commit>
  pop_result(detail::take_from_slot_t, T* slot_item, Commit&& commit)
      : value_(std::in_place, std::move(*slot_item)), status_(tether::status::ok) {
    static_assert(noexcept(commit()), "tether::pop_result: a take's commit must not throw");
    slot_item->~T();
    commit();
  }

  bool has_value() const noexcept { return status_ == tether::status::ok; }
  explicit operator bool() const noexcept { return has_value(); }
  tether::status status() const noexcept { return status_; }
  bool is_empty() const noexcept { return status_ == tether::status::empty; }
  bool is_timeout() const noexcept { return status_ == tether::status::timeout; }
  bool is_closed() const noexcept { return status_ == tether::status::closed; }
  bool is_cancelled() const noexcept { return status_ == tether::status::cancelled; }

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

// ---- tether/detail/wait/waiter_list.hpp -------------------------------------
// tether/detail/wait/waiter_list.hpp - many suspended waiters behind one parker listener.
//
// A parker carries one listener (parker.hpp). That is enough on a queue's consumer side (one
// consumer), but producers awaiting room in a bounded queue are many: waiter_list is a
// listener that holds any number of them. The first add() hangs the list on the parker; from
// then on every notify of that parker takes the whole list and wakes each waiter once. A
// woken waiter re-checks its condition and adds itself again if it lost the race.
//
// Exactly one party wakes a waiter: whoever unlinks it, under the list's lock - a notifier
// (which takes them all), or the waiter's owner through remove() (a stop request, or a
// re-check that found the condition true). remove() returning false means a notifier has the
// waiter and will wake it: the owner must let it (the wake may already be under way). A
// notifier reads a waiter's successor before it wakes it and never touches it after: a woken
// waiter may be gone at once.
//
// The handshake (parker.hpp): add() publishes the waiter (count_, seq_cst) after attaching the
// list; the caller then takes heavy_fence() and re-checks its condition. A notifier publishes
// the condition, takes its light fence in notify_*() and loads the listener and then count_.
// Either the waiter sees the condition or the notifier sees the waiter.
//
// Who may call what: add / remove - any thread (a waiter's owner); the notify - any notifier of
// the parker. The lock is held only to link and unlink, never while a waiter is woken.

#include <mutex>


namespace tether::detail {

// One waiter: its owner sets wake before add(); the list owns prev / next / linked while it is
// linked (under the list's lock).
struct list_waiter {
  void (*wake)(list_waiter& self) noexcept = nullptr;
  list_waiter* prev = nullptr;
  list_waiter* next = nullptr;
  bool linked = false;
};

class waiter_list : parker_listener {
 public:
  waiter_list() noexcept { on_notify = &notified; }
  waiter_list(const waiter_list&) = delete;
  waiter_list& operator=(const waiter_list&) = delete;
  // No waiter may be linked and no notifier running (the owning queue's destruction contract).
  ~waiter_list() {
    if (parker_ != nullptr) parker_->detach(*this);
  }

  // Links w and, the first time, hangs the list on p (always the same parker). Returns false
  // (w not linked) when p carries another listener. Then: heavy_fence(), re-check, and if the
  // condition already holds, remove(w).
  bool add(parker& p, list_waiter& w) {
    std::lock_guard lock(m_);
    if (parker_ == nullptr) {
      if (!p.attach(*this)) return false;
      parker_ = &p;
    }
    w.prev = tail_;
    w.next = nullptr;
    (tail_ != nullptr ? tail_->next : head_) = &w;
    tail_ = &w;
    w.linked = true;
    count_.store(count_.load(std::memory_order_relaxed) + 1, std::memory_order_seq_cst);  // the handshake's announce
    return true;
  }

  // Unlinks w if it is still linked: true means the caller now owns waking it (or not); false
  // means a notifier has taken it and wakes it.
  bool remove(list_waiter& w) noexcept {
    std::lock_guard lock(m_);
    if (!w.linked) return false;
    (w.prev != nullptr ? w.prev->next : head_) = w.next;
    (w.next != nullptr ? w.next->prev : tail_) = w.prev;
    w.linked = false;
    // relaxed: a notifier that still reads the old count takes the lock and finds the list as it is.
    count_.store(count_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    return true;
  }

  std::size_t size() const noexcept { return count_.load(std::memory_order_relaxed); }  // relaxed: a snapshot

 private:
  static void notified(parker_listener& l) noexcept {
    auto& self = static_cast<waiter_list&>(l);
    // The notifier's re-check (the handshake): nobody linked, nothing to take, no lock.
    if (self.count_.load(std::memory_order_seq_cst) == 0) return;
    list_waiter* taken;
    {
      std::lock_guard lock(self.m_);
      taken = self.head_;
      for (list_waiter* w = taken; w != nullptr; w = w->next) w->linked = false;
      self.head_ = self.tail_ = nullptr;
      self.count_.store(0, std::memory_order_relaxed);  // relaxed: as in remove()
    }
    while (taken != nullptr) {
      list_waiter* next = taken->next;  // before the wake: a woken waiter may be gone at once
      taken->wake(*taken);
      taken = next;
    }
  }

  std::mutex m_;
  list_waiter* head_ = nullptr;  // guarded by m_, as are tail_ and parker_
  list_waiter* tail_ = nullptr;
  parker* parker_ = nullptr;
  // How many are linked: written under m_, read without it by notifiers (the handshake).
  std::atomic<std::size_t> count_{0};
};

}  // namespace tether::detail

// ---- tether/bounded_mpsc_queue.hpp ------------------------------------------
// tether/bounded_mpsc_queue.hpp - fixed-capacity ring: many producers, one consumer,
// backpressure.
//
// Who may call what:
//   try_push / push / push_for / push_until / try_emplace / close / is_closed /
//   size_approx / capacity         - any thread, concurrently.
//   try_pop / pop / pop_for / pop_until, try_pop_bulk / pop_bulk / pop_bulk_for /
//   pop_bulk_until, try_pop_each   - one consumer thread at a time (a translation unit built
//                                    without NDEBUG throws std::logic_error when two threads
//                                    consume at once).
//
// Outcomes: a push returns push_result: ok; full (try_push); timeout (push_for /
// push_until); cancelled (the std::stop_token forms); closed - on every outcome but ok its
// argument is untouched. push() blocks
// while the queue is full. A pop returns pop_result<T>: the oldest ready item, or empty
// (try_pop), timeout (_for / _until), cancelled (the std::stop_token forms) or closed (closed
// and every item taken); bulk pops return how many items they took. Items pushed by one thread come out in the order pushed. A
// throwing move of T leaves the item queued (see each method). The destructor destroys the
// items still queued. Memory is allocated once, by the constructor.
//
// Memory ordering: a push happens-before the pop that returns its item, and a pop
// happens-before the push that reuses its slot; a close() happens-before a push or pop that
// reports closed.
//
// After D. Vyukov's bounded MPMC queue (per-slot sequence numbers), with one consumer,
// close, and parking instead of spinning. Design notes: next to the private code below.

#include <bit>
#include <memory>


namespace tether {

template <class T>
class bounded_mpsc_queue : public detail::consumer_ops<bounded_mpsc_queue<T>, T> {
  using base = detail::consumer_ops<bounded_mpsc_queue<T>, T>;
  friend base;
  friend struct detail::source_access;  // room_* for producers that await room (coroutine.hpp)
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

  // Enqueues v, parking while the queue is full: ok, or closed if the queue is (or becomes)
  // closed, with v untouched. Thread-safe.
  push_result push(T&& v) { return push_until_steady(std::move(v), detail::no_deadline); }
  push_result push(const T& v) { return push_until_steady(v, detail::no_deadline); }

  // As push(), giving up at the deadline: status ok, timeout or closed; on timeout or closed
  // v is untouched. A zero or negative timeout (a deadline already past) tries once; a huge
  // one (duration::max()) waits like push(). Thread-safe.
  template <class U, class Rep, class Period>
  push_result push_for(U&& v, const std::chrono::duration<Rep, Period>& timeout) {
    return push_until_steady(std::forward<U>(v), detail::deadline_after(timeout));
  }
  template <class U, class Clock, class Duration>
  push_result push_until(U&& v, const std::chrono::time_point<Clock, Duration>& deadline) {
    return push_until_steady(std::forward<U>(v), detail::to_steady(deadline));
  }

  // The cancellable forms: as above, and cancelled (v untouched) once st's stop is requested
  // while the queue is full; a stop already requested still tries once. Thread-safe.
  push_result push(T&& v, std::stop_token st) { return push_until_steady(std::move(v), detail::no_deadline, &st); }
  push_result push(const T& v, std::stop_token st) { return push_until_steady(v, detail::no_deadline, &st); }
  template <class U, class Rep, class Period>
  push_result push_for(U&& v, const std::chrono::duration<Rep, Period>& timeout, std::stop_token st) {
    return push_until_steady(std::forward<U>(v), detail::deadline_after(timeout), &st);
  }
  template <class U, class Clock, class Duration>
  push_result push_until(U&& v, const std::chrono::time_point<Clock, Duration>& deadline, std::stop_token st) {
    return push_until_steady(std::forward<U>(v), detail::to_steady(deadline), &st);
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

  // True once close() was called. Thread-safe.
  bool is_closed() const noexcept { return (tail_.load(std::memory_order_seq_cst) & closed_bit) != 0; }

  // How many items the queue holds at most. Thread-safe.
  std::size_t capacity() const noexcept { return mask_ + 1; }

  // Items pushed and not yet popped; stale as soon as it returns. Thread-safe.
  std::size_t size_approx() const noexcept {
    // relaxed: a statistic; no decision that needs ordering is made from it.
    const std::uint64_t tail = tail_.load(std::memory_order_relaxed) >> index_shift;
    const std::uint64_t head = head_published_.load(std::memory_order_relaxed);
    return tail > head ? static_cast<std::size_t>(tail - head) : 0;
  }
  bool empty_approx() const noexcept { return size_approx() == 0; }

  // ---- consumer (one thread at a time) ---------------------------------------------------
  //
  // Every call below: consumer thread only. A translation unit built without NDEBUG throws
  // std::logic_error when a second thread enters while one is inside. Popping frees slots:
  // producers blocked on a full queue are woken (see "Design" below for when).

  // Pops the oldest ready item; never blocks. ok with the item; empty when nothing is ready
  // (an item whose producer is mid-push is not ready yet); closed once closed and every item
  // taken. If T's move throws, the exception propagates and the item stays queued, the next
  // to pop (the item is moved exactly once, straight into the result).
  using base::try_pop;

  // Blocks (spins briefly, then parks) until an item is ready: ok with the item, or closed
  // once closed and every item taken. As try_pop if T's move throws.
  using base::pop;

  // As pop(), giving up at the deadline: ok, timeout or closed. A zero or negative timeout
  // (a deadline already past) tries once; a huge one (duration::max()) waits like pop().
  // As try_pop if T's move throws. Any clock's time point is accepted by pop_until.
  using base::pop_for;
  using base::pop_until;
  // pop, pop_for and pop_until (and the bulk pops below) also take a std::stop_token last:
  // a stop request wakes the wait at once and the call returns cancelled (bulk: 0), the item
  // left queued; an item ready when the stop is seen is still taken.

  // Moves up to max ready items to the output iterator out, oldest first; never blocks.
  // Returns how many (0: none ready, or closed). Each item leaves the queue only once its
  // assignment to out has returned: if an assignment throws, the items before it are popped
  // and that one stays queued. out must not use this queue (try_pop_each may).
  using base::try_pop_bulk;

  // As try_pop_bulk, but first blocks until at least one item is ready (pop_bulk), or until
  // the deadline (pop_bulk_for / pop_bulk_until). Returns how many; 0 only when closed with
  // every item taken, timed out, or max == 0 (is_closed() tells closed from timeout).
  using base::pop_bulk;
  using base::pop_bulk_for;
  using base::pop_bulk_until;

  // Calls f(T&&) for up to max ready items, oldest first; never blocks. Returns how many.
  // Each item leaves the queue before f sees it (f may pop from this queue): an item handed
  // to f counts as taken even if f throws (the exception propagates). If moving the item out
  // of its slot throws, it stays queued.
  using base::try_pop_each;

 private:
  // ---- design ----------------------------------------------------------------------------
  //
  // Each slot carries a sequence number saying whose turn it is: `pos` means free for the
  // producer of position pos, `pos + 1` means holding that producer's item, and the consumer
  // hands the slot to the next lap by storing `pos + capacity`. Producers claim positions
  // with one compare-and-swap on the tail, so try_push can fail fast when the slot is still
  // full. A full queue parks blocked producers. The consumer wakes them once it has freed a
  // batch of slots (capacity / 8), or as soon as it runs out of items: waking them for every
  // freed slot would make them all race for it and park again, a system call each time.
  // Waking parked threads is the parker's handshake (detail/wait/parker.hpp).

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
      // [B1] acquire: pairs with [B4] in release_head(); the slot's previous item is gone.
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
      s.seq.store(pos + 1, std::memory_order_release);  // [B2] release: as below
      consumer_wait_.notify_one();
      throw;
    }
    // [B2] release: publishes the item; pairs with [B3] in probe() / take_ready(). The
    // parker handshake's fence is in notify_one() (light) and prepare_wait() (heavy).
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
  push_result push_until_steady(U&& v, detail::steady_time deadline, const std::stop_token* st = nullptr) {
    detail::stop_wake stop(st);
    for (;;) {
      std::uint64_t pos;
      const status s = claim(pos);
      if (s == status::ok) {
        publish(pos, std::forward<U>(v));
        return status::ok;
      }
      if (s == status::closed) return s;
      if (stop.requested()) return status::cancelled;
      stop.arm(space_wait_);
      if (!detail::park_until(space_wait_, [this, &stop] { return tail_ready() || stop.requested(); }, deadline)) {
        return status::timeout;
      }
    }
  }

  // ---- consumer primitives (see detail/queue/consumer_ops.hpp) ----

  slot& head_slot() noexcept { return slots_[head_ & mask_]; }

  head_state probe() noexcept {
    // [B3] acquire: pairs with [B2] in publish().
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
    // [B4] release: hands the slot over; pairs with [B1] in claim(). The parker handshake's
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

  // After probe() said ready: true (and moved past it) if the head slot's producer's
  // constructor threw.
  bool skip_abandoned() noexcept {
    slot& s = head_slot();
    if (!s.abandoned) return false;
    release_head(s);
    return true;
  }

  // After probe() said ready and skip_abandoned() said no: the head item, moved once straight
  // into the result; if that move throws the item stays queued (pop_result's take_from_slot).
  pop_result<T> take() {
    slot& s = head_slot();
    return pop_result<T>(detail::take_from_slot, s.value(), [this, &s]() noexcept { release_head(s); });
  }

  template <class Sink>
  std::size_t take_ready(std::size_t max, Sink&& sink) {
    std::size_t n = 0;
    while (n < max) {
      slot& s = head_slot();
      // [B3] acquire: pairs with [B2] in publish().
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
  detail::stream_watch stream_;  // consumer only: see park_until_streaming

  const std::size_t mask_;
  const std::size_t wake_batch_ = (mask_ + 1) / 8 > 0 ? (mask_ + 1) / 8 : 1;
  const std::unique_ptr<slot[]> slots_;

  // A copy of the closed bit off the hot tail line, for waiters: set once by close().
  alignas(detail::cache_line) std::atomic<bool> closed_{false};
  detail::parker consumer_wait_;  // the consumer waits for items
  alignas(detail::cache_line) detail::parker space_wait_;     // producers wait for room
  // Suspended producers (coroutines) waiting for room: space_wait_'s listener once the first
  // one waits; until then a notify pays nothing for it.
  detail::waiter_list room_waiters_;
};

}  // namespace tether

// ---- tether/detail/queue/block_pool.hpp -------------------------------------
// tether/detail/queue/block_pool.hpp - emptied queue blocks kept for reuse, up to a limit.
//
// Who may call what: take / give / clear - any thread, concurrently; the destructor - no
// other thread.
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
// Memory ordering: give()'s release CAS [BP1] publishes the block (the giver's last reads
// and any reset of it) to take()'s and clear()'s acquire exchange [BP2].


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
    // [BP2] acquire: pairs with [BP1] in push(); the giver is done with the block.
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

  // Deletes every kept block; returns how many. Like take(), it pops by taking everything.
  std::size_t clear() noexcept {
    // [BP2] acquire: as in take().
    Block* b = head_.exchange(nullptr, std::memory_order_acquire);
    std::size_t n = 0;
    while (b != nullptr) {
      delete std::exchange(b, b->next.load(std::memory_order_relaxed));  // relaxed: ours since the exchange
      ++n;
    }
    count_.fetch_sub(n, std::memory_order_relaxed);  // relaxed: the count only steers give()
    return n;
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
      // [BP1] release: publishes the chain (and the givers' last accesses); pairs with [BP2].
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
// lane; the consumer half (ready, head_item, pop_head, take_ready, ...) - the queue's
// consumer; try_own / disown / size_approx / shrink_to_fit - any thread.
//
// A lane is a single-producer single-consumer list of blocks of items, each item with a
// stamp: its 1-based position in the lane. The producer writes the item, then stores the
// stamp (release); the consumer compares its head stamp (acquire) with the position it
// expects and takes the item - no compare-and-swap and no cache line shared with other
// producers, the point of a lane. Stamps rather than a published item count: a consumer
// that has caught up then polls near the producer's current item, instead of a counter line
// that every push rewrites (docs/design/queue_measurements.md). Stamps rather than a flag
// the consumer clears: the consumer only reads a block, so a reused block's stale stamps are
// simply smaller than expected. The producer links the next block before it publishes a
// block's last item, so the consumer always finds it. Emptied blocks go back to the producer
// through a bounded pool (block_pool.hpp): while the lane's backlog fits it, nothing is
// allocated; past it, blocks are freed and allocated again. Small items sit next to their stamps; items of a cache line or more on
// whole lines (lane_block below).
//
// Closing (see mpsc_queue's banner): emplace raises pushing_ for its whole length and reads
// the queue's closing flag after a light fence; the consumer reads pushing_ before the head
// stamp once closed, so a push that passed its check is either seen in flight or seen landed.
//
// Memory ordering: an item's release stamp store [L2] publishes it (and, for a block's last
// item, the link [L1] to the next block); the consumer's acquire loads [L3] / [L4] pair with
// them. pushing_'s
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
// item into (the comparison with the layout above: docs/design/queue_measurements.md).
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
  push_result emplace(const std::atomic<bool>& closing, Args&&... args) {
    // relaxed: the light fence orders it before the closing load (the close handshake).
    pushing_.store(true, std::memory_order_relaxed);
    light_fence();
    const lower_on_exit lower{pushing_};
    // relaxed: ordered by the handshake's fences; close() heavy-fences after its store.
    if (closing.load(std::memory_order_relaxed)) return status::closed;
    block& b = *tail_block_;
    const std::size_t pos = tail_pos_;
    unsigned char* const s = b.item(pos);
    // The lines about to be written were read by the consumer since the block's last use: ask
    // for them ahead, or each store waits for its line in turn (no hardware prefetcher helps).
    if (pos + block::prefetch_ahead < block_items) b.prefetch(pos + block::prefetch_ahead);
    if (pos + 1 == block_items) {
      std::unique_ptr<block> next(take_spare());          // may throw: nothing written yet
      ::new (s) T(std::forward<Args>(args)...);  // throws: nothing published
      // [L1] release: the consumer reads next only after it has taken the item published
      // below; pairs with [L4] in step_head().
      b.next.store(next.get(), std::memory_order_release);
      tail_block_ = next.release();
      tail_pos_ = 0;
    } else {
      ::new (s) T(std::forward<Args>(args)...);  // throws: the slot is reused next time
      ++tail_pos_;
    }
    // relaxed: only this thread writes pushed_ (size_approx() reads it as a statistic).
    const std::uint64_t stamp = pushed_.load(std::memory_order_relaxed) + 1;
    // [L2] release: publishes the item; pairs with [L3] in ready().
    b.stamp(pos).store(stamp, std::memory_order_release);
    pushed_.store(stamp, std::memory_order_relaxed);  // relaxed: as above
    return status::ok;
  }

  // ---- consumer --------------------------------------------------------------------------

  // Is the head item published?
  bool ready() noexcept {
    return head_stamp().load(std::memory_order_acquire) == next_stamp();  // [L3] acquire: pairs with [L2]
  }
  // The same with a seq_cst load: the re-check half of the parker handshake.
  bool ready_seq_cst() noexcept { return head_stamp().load(std::memory_order_seq_cst) == next_stamp(); }
  // A push is between its closed check and its end. Read before ready_seq_cst() (banner).
  bool pushing() const noexcept { return pushing_.load(std::memory_order_seq_cst); }

  // Precondition: ready(). The head item, for the consumer to move out and destroy; then
  // pop_head() moves past its slot (nothing is destroyed there).
  T* head_item() noexcept { return std::launder(reinterpret_cast<T*>(head_block_->item(head_pos_))); }
  void pop_head() noexcept { advance(); }

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

  // Frees the emptied blocks kept for reuse; returns how many bytes.
  std::size_t shrink_to_fit() noexcept { return pool_.clear() * sizeof(block); }

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
    // [L4] acquire: pairs with [L1], made before the last slot was published.
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
//   push / emplace / make_producer / close / is_closed / size_approx / shrink_to_fit
//                                  - any thread, concurrently;
//   producer::push / producer::emplace - the thread using that handle (one at a time);
//   try_pop / pop / pop_for / pop_until, try_pop_bulk / pop_bulk / pop_bulk_for /
//   pop_bulk_until, try_pop_each   - one consumer thread at a time (a translation unit built
//                                    without NDEBUG throws std::logic_error when two threads
//                                    consume at once).
//
// Outcomes: a push never blocks and returns push_result ok, or closed with its argument
// untouched. A pop returns pop_result<T>: the oldest ready item, or empty (try_pop), timeout
// (_for / _until), cancelled (the std::stop_token forms) or closed (closed and every item
// taken). Bulk pops return how many items
// they took. Items pushed by one thread (or one producer handle) come out in the order pushed;
// plain pushes from different threads too, whenever one push happens-before the other (they
// share one ring, claimed in turn); items of different handles keep only per-handle order.
// A throwing move of T leaves the item queued (see each method). The destructor destroys the
// items still queued.
//
// Memory: items live in blocks of about 16 KiB; emptied blocks are kept for reuse up to
// about 1 MiB for the shared ring and 1 MiB per producer handle's lane, and freed beyond
// that, so after a burst memory follows the backlog down to those pools (plus the block in
// use per source); shrink_to_fit() frees the pools too.
//
// Memory ordering: a push happens-before the pop that returns its item; a close()
// happens-before a push that reports closed and a pop that reports closed.
//
// After crossbeam-channel's list flavour (block list, CAS-claimed slots, a sentinel index
// while the next block is linked), adapted to one consumer, producer lanes, block reuse and
// parking. Design notes: next to the private code below, and docs/mpsc_queue.md.

#include <algorithm>
#include <iterator>


namespace tether {

namespace detail {
class executor_core;
}  // namespace detail

template <class T>
class mpsc_queue : public detail::consumer_ops<mpsc_queue<T>, T> {
  using base = detail::consumer_ops<mpsc_queue<T>, T>;
  friend base;
  friend class detail::executor_core;  // its owner's idle wait watches the head (head_has_item)
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

  // Enqueues v; never blocks. ok, or closed with v untouched (not moved from), so the
  // caller still owns it. Thread-safe.
  push_result push(T&& v) { return emplace(std::move(v)); }
  push_result push(const T& v) { return emplace(v); }

  // Constructs an item in place from args; never blocks. ok, or closed with args untouched.
  // If T's constructor throws, the slot is skipped and the exception propagates. Thread-safe.
  //
  // Outline (the ring; see "Design" below):
  //   1. read the tail index; closed -> hand back; at the sentinel -> another producer is
  //      linking the next block: back off (the point where a preempted thread makes other
  //      producers wait, for two stores);
  //   2. claiming the block's last slot -> have the next block ready before the CAS;
  //   3. CAS the tail index one step; the winner of the last slot links the next block and
  //      moves the index past the sentinel;
  //   4. construct the item, publish the slot, wake the consumer if it is parked.
  template <class... Args>
  push_result emplace(Args&&... args) {
    detail::backoff backoff;
    block* next_block = nullptr;  // ready for linking when we claim a block's last slot
    // [Q4] acquire: pairs with [Q3]; the tail_block_ read below is the index's block or newer.
    std::uint64_t tail = tail_index_.load(std::memory_order_acquire);
    for (;;) {
      if (tail & closed_bit) {
        return_spare(next_block);
        return status::closed;
      }
      const std::uint64_t offset = (tail >> index_shift) % lap;
      if (offset == block_cap) {
        backoff.snooze();
        tail = tail_index_.load(std::memory_order_acquire);  // [Q4] acquire: as above
        continue;
      }
      if (offset + 1 == block_cap && next_block == nullptr) next_block = take_spare();
      // [Q5] acquire: pairs with [Q2]; if the CAS below succeeds, b is the block of our slot.
      block* b = tail_block_.load(std::memory_order_acquire);
      // seq_cst claim; on failure acquire (as the first load).
      if (!tail_index_.compare_exchange_weak(tail, tail + index_step, std::memory_order_seq_cst,
                                             std::memory_order_acquire))
        continue;
      if (offset + 1 == block_cap) {
        // [Q1] release: the consumer reads next only after our slot below is published; pairs
        // with [Q7] in advance_ring().
        b->next.store(next_block, std::memory_order_release);
        // [Q2] release: publishes the new block to producers; pairs with [Q5] above.
        tail_block_.store(next_block, std::memory_order_release);
        // [Q3] release: moves the index past the sentinel; pairs with [Q4] above.
        tail_index_.fetch_add(index_step, std::memory_order_release);
        next_block = nullptr;
      } else {
        return_spare(next_block);
      }
      // The lines about to be written were read by the consumer in the block's last use: ask
      // for them ahead, as lanes do (docs/design/queue_measurements.md).
      if (offset + prefetch_ahead < block_cap) detail::prefetch_for_write(&b->slots[offset + prefetch_ahead]);
      const notify_on_exit notify{consumer_wait_};
      fill(b->slots[offset], std::forward<Args>(args)...);
      return status::ok;
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
    // The close half of the lane handshake (Design, below). Without lanes there is nothing to wait
    // out; a lane registered after this load reads closing_ (make_producer()).
    if (lanes_.load(std::memory_order_seq_cst) != nullptr) detail::heavy_fence();
    closed_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    consumer_wait_.notify_all();
    return (prev & closed_bit) == 0;
  }

  // True once close() was called. Thread-safe.
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

  // Frees the emptied blocks kept for reuse (the ring's pool and every lane's), returning
  // how many bytes it freed; the blocks holding items stay. After a burst, for a queue that
  // will stay quiet for a while: the next burst allocates again. Thread-safe.
  std::size_t shrink_to_fit() noexcept {
    std::size_t bytes = pool_.clear() * sizeof(block);
    // acquire: pairs with the CAS that published a lane; its fields are initialised.
    for (lane* l = lanes_.load(std::memory_order_acquire); l != nullptr; l = l->next_lane) bytes += l->shrink_to_fit();
    return bytes;
  }

  // ---- consumer (one thread at a time) ---------------------------------------------------
  //
  // The consumer reads the shared ring and every producer handle's lane, staying with one
  // source while it has items (up to a quota, so that a busy source cannot starve the
  // others). Every call below: consumer thread only. A translation unit built without NDEBUG
  // throws std::logic_error when a second thread enters while one is inside.

  // Pops the oldest ready item; never blocks. ok with the item; empty when nothing is ready
  // (an item whose producer is mid-push is not ready yet); closed once closed and every item
  // taken. If T's move throws, the exception propagates and the item stays queued, the next
  // to pop (the item is moved exactly once, straight into the result).
  using base::try_pop;

  // Blocks (spins briefly, then parks) until an item is ready: ok with the item, or closed
  // once closed and every item taken. As try_pop if T's move throws.
  using base::pop;

  // As pop(), giving up at the deadline: ok, timeout or closed. A zero or negative timeout
  // (a deadline already past) tries once; a huge one (duration::max()) waits like pop().
  // As try_pop if T's move throws. Any clock's time point is accepted by pop_until.
  using base::pop_for;
  using base::pop_until;
  // pop, pop_for and pop_until (and the bulk pops below) also take a std::stop_token last:
  // a stop request wakes the wait at once and the call returns cancelled (bulk: 0), the item
  // left queued; an item ready when the stop is seen is still taken.

  // Moves up to max ready items to the output iterator out, oldest first; never blocks.
  // Returns how many (0: none ready, or closed). Each item leaves the queue only once its
  // assignment to out has returned: if an assignment throws, the items before it are popped
  // and that one stays queued. out must not use this queue (try_pop_each may).
  using base::try_pop_bulk;

  // As try_pop_bulk, but first blocks until at least one item is ready (pop_bulk), or until
  // the deadline (pop_bulk_for / pop_bulk_until). Returns how many; 0 only when closed with
  // every item taken, timed out, or max == 0 (is_closed() tells closed from timeout).
  using base::pop_bulk;
  using base::pop_bulk_for;
  using base::pop_bulk_until;

  // Calls f(T&&) for up to max ready items, oldest first; never blocks. Returns how many.
  // Each item leaves the queue before f sees it (f may pop from this queue): an item handed
  // to f counts as taken even if f throws (the exception propagates). If moving the item out
  // of its slot throws, it stays queued.
  using base::try_pop_each;

 private:
  // ---- design ----------------------------------------------------------------------------
  //
  // The ring: items live in blocks of slots. A producer claims a slot with one compare-and-
  // swap on the tail index, writes the item and publishes the slot (a release store of its
  // state); the producer that claims a block's last slot links the next block (taken from
  // the pool of emptied blocks) before it publishes, so the consumer always finds it. The
  // consumer reads slots in index order and recycles each block it has emptied.
  //
  // Who makes whom wait: a producer preempted between claiming and publishing its slot holds
  // up only the consumer, which parks on that slot (it does not spin) and is woken by the
  // publish. A producer preempted while linking a block holds up other producers for the two
  // stores it has left; they back off and yield meanwhile.
  //
  // Lanes (make_producer): a handle owns a private lane - its own list of blocks, written by
  // that thread alone, so a push is a plain store and a release store with no compare-and-
  // swap and no shared cache line (detail/queue/producer_lane.hpp). A dropped handle's lane
  // is kept (with its items) and reused by the next make_producer().
  //
  // Closing with lanes is Dekker's handshake: a lane push raises its `pushing` flag, then
  // (light fence) reads closing_; close() stores closing_, then (heavy fence) sets closed_.
  // Either the push sees closing_ and hands its item back, or the consumer - which decides
  // "closed" only after it sees closed_ - sees the flag and waits for that push to land.
  //
  // Waking a parked consumer is the parker's handshake (detail/wait/parker.hpp): a push pays
  // no locked instruction beyond its claim.

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
      s.state.store(slot_abandoned, std::memory_order_release);  // [Q6] release: as below
      throw;
    }
    // [Q6] release: publishes the item; pairs with [Q8] in ring_ready() / take_ready_ring().
    // The parker handshake's fence is in notify_one() (light) and prepare_wait() (heavy).
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
  push_result lane_emplace(lane& l, Args&&... args) {
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
    return ring_slot().state.load(std::memory_order_acquire) != slot_empty;  // [Q8] acquire: pairs with [Q6] in fill()
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

  // Some source has an item ready at its head (made current). Reads the consumer's own lines
  // and the slots the producers publish into, never the ring's tail: a waiting owner can poll
  // it without pulling the line every push writes. Consumer thread only.
  bool head_has_item() noexcept { return current_ready() || switch_to_ready(); }

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
      // [Q7] acquire: pairs with [Q1]; the last slot's producer linked next before publishing.
      block* next = head_block_->next.load(std::memory_order_acquire);
      recycle(head_block_);
      head_block_ = next;
      ++head;
    }
    head_ = head;
    head_published_.store(head, std::memory_order_relaxed);  // relaxed: only size_approx() reads it
  }

  // After probe() said ready: true (and moved past it) if the head is a ring slot whose
  // producer's constructor threw.
  bool skip_abandoned() noexcept {
    // relaxed: probe() acquired the state.
    if (current_ != nullptr || ring_slot().state.load(std::memory_order_relaxed) != slot_abandoned) return false;
    advance_ring();
    return true;
  }

  // After probe() said ready and skip_abandoned() said no: the head item, moved once straight
  // into the result; if that move throws the item stays queued (pop_result's take_from_slot).
  pop_result<T> take() {
    if (current_ != nullptr) {
      return pop_result<T>(detail::take_from_slot, current_->head_item(), [this]() noexcept {
        current_->pop_head();
        count_taken(1);
      });
    }
    return pop_result<T>(detail::take_from_slot, ring_slot().value(), [this]() noexcept {
      advance_ring();
      count_taken(1);
    });
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
      const std::uint8_t st = s.state.load(std::memory_order_acquire);  // [Q8] acquire: pairs with [Q6] in fill()
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
  // Emptied blocks for reuse (up to about 1 MiB): the consumer gives, producers take,
  // shrink_to_fit() empties it.
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
  detail::stream_watch stream_;  // consumer only: see park_until_streaming

  // A copy of the closed bit off the hot tail line, for waiters: set once by close().
  alignas(detail::cache_line) std::atomic<bool> closed_{false};
  // Set by close() before its heavy fence; read by every lane push (Design, above).
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

  // As mpsc_queue::push / emplace: ok, or closed (item untouched) once the queue is closed.
  // Never blocks. Items pushed through this handle are popped in the order pushed. The
  // thread using this handle.
  push_result push(T&& v) { return emplace(std::move(v)); }
  push_result push(const T& v) { return emplace(v); }
  template <class... Args>
  push_result emplace(Args&&... args) {
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
// a bounded try_run(). A coroutine that awaits room in a bounded queue (coroutine.hpp) needs
// the producers' parker, the list of suspended producers and their condition, and for channel
// endpoints the sending direction. The sources befriend this one struct instead of exposing
// those to every user.
//
// Who may call what: room_ready() - any producer; watched_ready() is a consumer-side call (the thread that receives from
// the source); executor_next_deadline() and executor_poll() - the executor's owner thread
// only (its timer heap is owner-only); the others only read members that never change after
// construction.
//
// Memory ordering: watched_ready() is the queue's own parker condition (seq_cst loads, the
// re-check half of the parker handshake); nothing else here touches shared state (the timer
// heap is owner-only, and executor_poll() is the executor's own try_run()).



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

  // ---- room in a bounded queue, for producers that await it (coroutine.hpp) ----
  // The parker producers wait on, the list of suspended ones hung on it, and their condition
  // (the tail slot is free, or closed: seq_cst loads, the re-check half of the handshake).
  template <class Queue>
  static parker& room_parker(Queue& q) noexcept {
    return q.space_wait_;
  }
  template <class Queue>
  static waiter_list& room_waiters(Queue& q) noexcept {
    return q.room_waiters_;
  }
  template <class Queue>
  static bool room_ready(const Queue& q) noexcept {
    return q.tail_ready();
  }

  // ---- channel endpoints (channel.hpp) ----
  template <class Endpoint>
  static auto& rx_direction(Endpoint& e) noexcept {
    return e.rx_direction();
  }
  template <class Endpoint>
  static auto& tx_direction(Endpoint& e) noexcept {
    return *e.tx_;
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
  // As ex.try_run(), running at most max tasks (due delayed tasks first, then ready ones); once
  // the queue is closed and drained, finishes the stop. Owner thread only (else wrong_thread).
  template <class Executor>
  static std::size_t executor_poll(Executor& ex, std::size_t max) {
    return ex.drive(max, no_deadline, false, nullptr);  // ex.try_run(), bounded
  }
  // Whether running it from the calling thread (its owner) would be refused: it runs its own
  // thread, or the caller is inside one of its tasks (a run is already going on).
  template <class Executor>
  static bool executor_in_run(const Executor& ex) noexcept {
    return ex.own_thread_ || ex.in_run_;
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

// ---- tether/channel.hpp -----------------------------------------------------
// tether/channel.hpp - in-process channels: two connected endpoints, each sends and receives.
//
//   auto [left, right] = tether::make_channel<request, reply>();  // unbounded
//   auto [a, b] = tether::make_channel<message>(64);              // bounded: backpressure
//
// make_channel<A, B>() returns {endpoint<A, B>, endpoint<B, A>}: the first sends A and
// receives B, the second the reverse. Each direction is one single-consumer queue
// (mpsc_queue, or bounded_mpsc_queue when a capacity is given): nothing is locked.
//
// Who may call what (per endpoint): send* / try_send / close / is_closed / capacity - any
// thread, concurrently; recv* / try_recv - one thread at a time (a translation unit built
// without NDEBUG throws std::logic_error when two threads receive at once); move and
// destroy - not concurrently with any other call on that endpoint.
//
// Outcomes: sends return push_result - ok, full (try_send, bounded), timeout (send_for /
// send_until, bounded), cancelled (the std::stop_token forms, bounded) or closed, and on
// every outcome but ok the message is untouched. Receives return pop_result<Recv> - the
// message, or empty / timeout / cancelled / closed; a throwing move of a message leaves it
// queued. close() on either endpoint, or destroying it, closes both directions: each side
// still receives what was sent to it before, then sees closed; blocked senders and receivers
// wake. Messages never received are destroyed with the last
// owner of the pair (both endpoints, and any poller watching one).
//
// Memory ordering: a send happens-before the receive that returns its message; a close
// happens-before a receive or send that reports closed.
//
// After ZeroMQ's inproc PAIR sockets and crossbeam-channel's disconnect rules.

#include <functional>


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
std::pair<endpoint<A, B>, endpoint<B, A>> make_channel();
template <class A, class B = A>
std::pair<endpoint<A, B>, endpoint<B, A>> make_channel(std::size_t capacity);

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
      (void)close();
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
  ~endpoint() { (void)close(); }

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
  // untouched. Only a bounded pair can time out. Zero or negative tries once; a huge timeout
  // (duration::max()) waits like send(). Thread-safe.
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

  // The cancellable sends: as send / send_for / send_until, and cancelled (v untouched) once
  // st's stop is requested while a bounded pair's inbox is full. An unbounded send never
  // waits, so it never reports cancelled. Thread-safe.
  push_result send(Send&& v, std::stop_token st) {
    return tx_->push_until(std::move(v), detail::no_deadline, std::move(st));
  }
  push_result send(const Send& v, std::stop_token st) { return tx_->push_until(v, detail::no_deadline, std::move(st)); }
  template <class Rep, class Period>
  push_result send_for(Send&& v, const std::chrono::duration<Rep, Period>& timeout, std::stop_token st) {
    return tx_->push_until(std::move(v), detail::deadline_after(timeout), std::move(st));
  }
  template <class Rep, class Period>
  push_result send_for(const Send& v, const std::chrono::duration<Rep, Period>& timeout, std::stop_token st) {
    return tx_->push_until(v, detail::deadline_after(timeout), std::move(st));
  }
  template <class Clock, class Duration>
  push_result send_until(Send&& v, const std::chrono::time_point<Clock, Duration>& deadline, std::stop_token st) {
    return tx_->push_until(std::move(v), detail::to_steady(deadline), std::move(st));
  }
  template <class Clock, class Duration>
  push_result send_until(const Send& v, const std::chrono::time_point<Clock, Duration>& deadline,
                         std::stop_token st) {
    return tx_->push_until(v, detail::to_steady(deadline), std::move(st));
  }

  // ---- receiving (one thread at a time) --------------------------------------------------

  // Takes the oldest message the peer sent, blocking (spin briefly, then park) until there is
  // one: ok, or closed once the pair is closed and everything sent before was received. If
  // the message's move throws, the exception propagates and the message stays queued, the
  // next to receive (it is moved exactly once, straight into the result).
  pop_result<Recv> recv() { return rx_->pop_until(detail::no_deadline); }

  // Never blocks: ok, empty or closed (closed only once everything sent was received). As
  // recv() if the move throws.
  pop_result<Recv> try_recv() { return rx_->try_pop(); }

  // As recv(), giving up at the deadline: ok, timeout or closed. A zero or negative timeout
  // (a deadline already past) tries once; a huge one (duration::max()) waits like recv().
  template <class Rep, class Period>
  pop_result<Recv> recv_for(const std::chrono::duration<Rep, Period>& timeout) {
    return rx_->pop_until(detail::deadline_after(timeout));
  }
  template <class Clock, class Duration>
  pop_result<Recv> recv_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return rx_->pop_until(detail::to_steady(deadline));
  }

  // The cancellable receives: as recv / recv_for / recv_until, and cancelled once st's stop
  // is requested (the wait wakes at once; a message ready by then is still received).
  pop_result<Recv> recv(std::stop_token st) { return rx_->pop_until(detail::no_deadline, st); }
  template <class Rep, class Period>
  pop_result<Recv> recv_for(const std::chrono::duration<Rep, Period>& timeout, std::stop_token st) {
    return rx_->pop_until(detail::deadline_after(timeout), st);
  }
  template <class Clock, class Duration>
  pop_result<Recv> recv_until(const std::chrono::time_point<Clock, Duration>& deadline, std::stop_token st) {
    return rx_->pop_until(detail::to_steady(deadline), st);
  }

  // ---- both sides ------------------------------------------------------------------------

  // Closes both directions: see the banner. Returns true for the one call (on either
  // endpoint) that closed the pair, false if it was already closed or this endpoint was moved
  // from. Never blocks. Thread-safe.
  bool close() noexcept {
    if (tx_ == nullptr) return false;  // moved from
    // Both endpoints close the same two directions in the same order (by address): whoever
    // closes the first one closed the pair. Every call has closed both when it returns.
    const bool tx_first = std::less<const void*>{}(tx_, rx_);
    const bool closed_now = tx_first ? tx_->close() : rx_->close();
    (void)(tx_first ? rx_->close() : tx_->close());
    return closed_now;
  }

  // True once either endpoint closed the pair. Thread-safe.
  bool is_closed() const noexcept { return rx_->is_closed(); }

  // Messages each direction holds at least (0: unbounded). Thread-safe.
  std::size_t capacity() const noexcept { return rx_->capacity(); }

  // Messages sent to this endpoint and not yet received; stale as soon as it returns.
  std::size_t pending_approx() const noexcept { return rx_->size_approx(); }

 private:
  template <class A, class B>
  friend std::pair<endpoint<A, B>, endpoint<B, A>> make_channel();
  template <class A, class B>
  friend std::pair<endpoint<A, B>, endpoint<B, A>> make_channel(std::size_t);
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
std::pair<endpoint<A, B>, endpoint<B, A>> make_channel() {
  auto state = std::make_shared<detail::pair_state<A, B>>();
  auto& s = *state;
  return {endpoint<A, B>(state, s.a_to_b, s.b_to_a), endpoint<B, A>(state, s.b_to_a, s.a_to_b)};
}

// As make_channel(), bounded: each direction holds at least `capacity` messages (rounded up to
// a power of two; capacity() says how many), and send() blocks while the peer's inbox is
// full. Throws std::invalid_argument for 0.
template <class A, class B>
std::pair<endpoint<A, B>, endpoint<B, A>> make_channel(std::size_t capacity) {
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
//                                             (delivered through that task's future, call or
//                                             post_and_reply reply), or a reply executor
//                                             refused a reply (to the sender's on_error).
//   operation_cancelled (std::runtime_error) - a stop request abandoned an awaited call before
//                                             it ran (co_call, co_with); the call never runs.
//   (post, dispatch and post_and_reply report refusal as a value: push_result, closed; waits
//   that return a status report a stop request as status::cancelled.)
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

class operation_cancelled : public std::runtime_error {
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
// Memory ordering: [CS1] the release store of `done` publishes the result to the caller's
// acquire/seq_cst loads in wait(); [CS2] the release store of `released` orders the
// completer's last touch of the slot (counted_ included) before the caller's acquire load,
// after which the caller may destroy it.
//
// Woken callers: a slot given a counter (count_wakes_in) adds one to it when its completion
// had to wake a sleeping caller, and that caller takes it off once it runs again. The owner
// reads the count as the number of callers it answered that still wait for a core (see
// executor_core::pace_callers).

#include <exception>


namespace tether::detail {

// The value or exception a call produced, kept until its caller takes it: call_slot,
// abandonable_call and the coroutines' call_state all store their outcome here. A reference
// result is kept as a pointer. One writer, then one reader, ordered by whoever holds it.
template <class R>
class call_outcome {
 public:
  // Runs f; stores its result, or the exception it threw.
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
  }
  void fail(std::exception_ptr e) noexcept { error_ = std::move(e); }
  bool failed() const noexcept { return static_cast<bool>(error_); }

  // The result, or rethrows the exception.
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
  using storage = std::conditional_t<std::is_void_v<R>, char,
                                     std::conditional_t<std::is_reference_v<R>,
                                                        std::remove_reference_t<R>*,
                                                        std::optional<R>>>;
  storage value_{};
  std::exception_ptr error_;
};

template <class R>
class call_slot {
 public:
  call_slot() = default;
  call_slot(const call_slot&) = delete;
  call_slot& operator=(const call_slot&) = delete;

  // Completer: runs f and stores its result or exception, then completes.
  template <class F>
  void run(F&& f) noexcept {
    out_.run(std::forward<F>(f));
    complete();
  }

  // Completer: completes with an exception instead of running.
  void fail(std::exception_ptr e) noexcept {
    out_.fail(std::move(e));
    complete();
  }

  // Caller, before the call is queued: count a wake-up of this caller in `woken`.
  void count_wakes_in(std::atomic<std::uint32_t>& woken) noexcept { woken_ = &woken; }

  // Caller: blocks until completed. spin: spin briefly before parking (the answer is
  // expected soon); else park at once (parker.hpp).
  void wait(bool spin) noexcept {
    park(parker_, [this] { return state_.load(std::memory_order_seq_cst) != pending; }, no_deadline, spin);
    backoff b;
    // After `released`, nothing else touches the slot.
    while (state_.load(std::memory_order_acquire) != released) b.snooze();  // acquire: pairs with [CS2]
    if (counted_) woken_->fetch_sub(1, std::memory_order_relaxed);  // relaxed: a count for a hint, publishes nothing
  }

  // Caller, after wait(): the result, or rethrows the exception.
  R take() { return out_.take(); }

 private:
  static constexpr std::uint32_t pending = 0;
  static constexpr std::uint32_t done = 1;
  static constexpr std::uint32_t released = 2;

  void complete() noexcept {
    state_.store(done, std::memory_order_release);  // [CS1] release: publishes out_
    if (parker_.notify_one() && woken_ != nullptr) {
      woken_->fetch_add(1, std::memory_order_relaxed);  // relaxed: as in wait(); before [CS2], so never below 0
      counted_ = true;
    }
    state_.store(released, std::memory_order_release);  // [CS2] release: the completer's last touch
  }

  call_outcome<R> out_;
  std::atomic<std::uint32_t>* woken_ = nullptr;  // set by the caller before queueing
  bool counted_ = false;                          // written by the completer before [CS2]
  // Written by the completer (pending -> done -> released); read by the caller.
  std::atomic<std::uint32_t> state_{pending};
  // One wait per call, one notify per call: full fences on both sides beat a membarrier.
  parker parker_{fences::symmetric};
};

// A call() that a stop token may abandon: the caller may return before the owner reaches the
// job, so the outcome lives on the heap, shared by the caller and the job (two references).
// One compare-and-swap out of `pending` decides: the owner claims it (running, then done, with
// the value or exception - executor_stopped when the job is destroyed unrun), or the stop
// callback abandons it (cancelled: the job, when reached, runs nothing). A claimed call is
// waited for: its callable is the caller's, used in place.
//
// Memory ordering: [AC1] the acq_rel CAS picks one outcome; [AC2] the release store of done
// publishes the result to the caller's acquire load [AC3]; [AC4] acq_rel on the count orders
// each side's last touch before the delete.
template <class R>
class abandonable_call {
 public:
  enum class phase : std::uint8_t { pending, running, done, cancelled };

  bool claim() noexcept { return decide(phase::running); }
  // Stop callback: abandons the call if the owner has not claimed it, and wakes the caller.
  void cancel() noexcept {
    if (decide(phase::cancelled)) parker_.notify_one();
  }

  // Owner, after claim(): runs f into the state and completes.
  template <class F>
  void run(F&& f) noexcept {
    out_.run(std::forward<F>(f));
    complete();
  }
  // Whoever destroys the unrun job, after claim(): completes with executor_stopped (e).
  void fail_refused(std::exception_ptr e) noexcept {
    refused_ = true;
    out_.fail(std::move(e));
    complete();
  }

  // Caller: blocks until done or cancelled, or the deadline; then the phase (pending or
  // running only at the deadline).
  phase wait_until(steady_time deadline) noexcept {
    park(parker_, [this] {
      const phase p = state_.load(std::memory_order_acquire);  // [AC3] acquire: pairs with [AC2]
      return p == phase::done || p == phase::cancelled;
    }, deadline, false);
    return state_.load(std::memory_order_acquire);  // [AC3]
  }
  // Caller, at its deadline: abandons the call if the owner has not claimed it.
  bool abandon() noexcept { return decide(phase::cancelled); }

  // After done: the job was destroyed unrun (the executor stopped with cancel).
  bool refused() const noexcept { return refused_; }

  // Caller, after wait() returned false: the result, or rethrows the exception.
  R take() { return out_.take(); }

  void unref() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;  // [AC4]
  }

 private:
  bool decide(phase to) noexcept {
    phase from = phase::pending;
    return state_.compare_exchange_strong(from, to, std::memory_order_acq_rel);  // [AC1]
  }
  void complete() noexcept {
    state_.store(phase::done, std::memory_order_release);  // [AC2]
    parker_.notify_one();
  }

  call_outcome<R> out_;
  bool refused_ = false;  // written before [AC2]
  std::atomic<phase> state_{phase::pending};
  std::atomic<std::uint8_t> refs_{2};  // the caller and the job
  parker parker_{fences::symmetric};
};

// The stop callback of an abandonable call.
template <class R>
struct abandon_on_stop {
  abandonable_call<R>* state;
  void operator()() const noexcept { state->cancel(); }
};

}  // namespace tether::detail

// ---- tether/detail/platform/source_location.hpp -----------------------------
// tether/detail/platform/source_location.hpp - tether::source_location: where a call came from.
//
// std::source_location where the standard library provides it (g++ 11+, clang 15+);
// otherwise - clang 14 with libstdc++, whose <source_location> needs a builtin clang 14 lacks -
// a class with the same four accessors, filled by the __builtin_FILE / _FUNCTION / _LINE /
// _COLUMN builtins that both compilers have. Either way `tether::source_location::current()`
// as a defaulted argument names the caller's line. (The two are different types: a program
// that mixes translation units of both compilers must not pass them between them.)
//
// Who may call what: a value; any thread.
// Memory ordering: none.

#if __has_include(<source_location>)
#include <source_location>
#endif

namespace tether {

#if defined(__cpp_lib_source_location)
using source_location = std::source_location;
#else
class source_location {
 public:
  constexpr source_location() noexcept = default;
  static constexpr source_location current(const char* file = __builtin_FILE(),
                                           const char* function = __builtin_FUNCTION(),
                                           std::uint_least32_t line = __builtin_LINE(),
                                           std::uint_least32_t column = __builtin_COLUMN()) noexcept {
    source_location l;
    l.file_ = file;
    l.function_ = function;
    l.line_ = line;
    l.column_ = column;
    return l;
  }
  constexpr const char* file_name() const noexcept { return file_; }
  constexpr const char* function_name() const noexcept { return function_; }
  constexpr std::uint_least32_t line() const noexcept { return line_; }
  constexpr std::uint_least32_t column() const noexcept { return column_; }

 private:
  const char* file_ = "";
  const char* function_ = "";
  std::uint_least32_t line_ = 0;
  std::uint_least32_t column_ = 0;
};
#endif

}  // namespace tether

// ---- tether/detail/platform/tick_clock.hpp ----------------------------------
// tether/detail/platform/tick_clock.hpp - a cheap monotonic timestamp for per-task metrics.
//
// An executor with metrics or tracing stamps every task when it is posted and when it starts
// and ends: three readings per task, so their cost is the cost of the feature. On x86-64 the
// reading is the time-stamp counter (`rdtsc`, about 10 ns here, against 25-35 ns for
// std::chrono::steady_clock::now() through the vDSO with kvm-clock); elsewhere it is
// steady_clock in nanoseconds. Ticks become nanoseconds through one calibration against
// steady_clock, made once per process (a 2 ms sleep) by the first executor that needs it.
// This assumes an invariant TSC (`constant_tsc nonstop_tsc` in /proc/cpuinfo), which every
// x86-64 CPU of the last fifteen years has; a reading is not ordered with the instructions
// around it (no fence): it is a statistic, a few cycles early or late.
//
// Who may call what: everything - any thread.
// Memory ordering: the calibration is a function-local static (initialised once, with the
// happens-before that guarantees); readings touch no shared state.


#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <x86intrin.h>
#define TETHER_DETAIL_TSC 1
#endif

namespace tether::detail {

using tick_t = std::int64_t;

// The current reading. Thread-safe.
inline tick_t ticks_now() noexcept {
#if defined(TETHER_DETAIL_TSC)
  return static_cast<tick_t>(__rdtsc());
#else
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
#endif
}

// How ticks map to steady_clock: ns = steady0 + (ticks - tick0) * ns_per_tick.
struct tick_calibration {
  double ns_per_tick = 1.0;
  tick_t tick0 = 0;
  std::int64_t steady0 = 0;  // steady_clock nanoseconds at tick0

  std::int64_t to_ns(tick_t duration) const noexcept {
    return static_cast<std::int64_t>(static_cast<double>(duration) * ns_per_tick);
  }
  std::chrono::steady_clock::time_point to_steady(tick_t t) const noexcept {
    return std::chrono::steady_clock::time_point(
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::nanoseconds(steady0 + to_ns(t - tick0))));
  }
  tick_t from_ns(std::int64_t ns) const noexcept { return static_cast<tick_t>(static_cast<double>(ns) / ns_per_tick); }
  tick_t from_steady(std::chrono::steady_clock::time_point t) const noexcept {
    return tick0 + from_ns(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count() - steady0);
  }
};

namespace tick_detail {
struct pair {
  std::int64_t steady;
  tick_t tick;
};
// A steady_clock reading and a tick reading taken as close together as we can: the tick is
// read between two steady readings and paired with their midpoint.
inline pair sample() noexcept {
  using namespace std::chrono;
  const std::int64_t a = duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
  const tick_t t = ticks_now();
  const std::int64_t b = duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
  return {a + (b - a) / 2, t};
}
inline tick_calibration calibrate() {
  tick_calibration c;
  const pair first = sample();
  c.tick0 = first.tick;
  c.steady0 = first.steady;
#if defined(TETHER_DETAIL_TSC)
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const pair second = sample();
  if (second.tick > first.tick && second.steady > first.steady)
    c.ns_per_tick = static_cast<double>(second.steady - first.steady) / static_cast<double>(second.tick - first.tick);
#endif
  return c;
}
}  // namespace tick_detail

// The process's calibration; the first call takes about 2 ms (x86-64). Thread-safe.
inline const tick_calibration& tick_clock() {
  static const tick_calibration c = tick_detail::calibrate();
  return c;
}

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
// A task may carry a trace (traced_job<F>: where it was posted from and when), which the
// executor reads through trace() when tracing is on; a plain task is the same 64 bytes, and
// only the static table of a traced callable says where its trace is.
//
// Who may call what: a task is a value; one thread at a time.
// Memory ordering: none (no shared state).



namespace tether::detail {

// Where and when a traced task was accepted.
struct task_trace {
  tick_t enqueued;              // tick_clock reading at post time
  source_location where;   // the caller of post / submit / call / ...
};

// A callable with its trace; what a tracing executor queues instead of the callable alone.
template <class F>
struct traced_job {
  template <class... Args>
  explicit traced_job(const task_trace& t, Args&&... args) : trace(t), fn(std::forward<Args>(args)...) {}
  traced_job(traced_job&&) = default;
  void operator()() { std::invoke(std::move(fn)); }
  task_trace trace;
  F fn;
};

template <class F>
inline constexpr bool is_traced_job = false;
template <class F>
inline constexpr bool is_traced_job<traced_job<F>> = true;

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

  // The callable's trace; nullptr unless it is a traced_job.
  const task_trace* trace() const noexcept {
    return ops_ != nullptr && ops_->trace != nullptr ? ops_->trace(buffer_) : nullptr;
  }

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
    const task_trace* (*trace)(const void* buffer) noexcept;  // nullptr: not traced
    bool internal;
    bool inline_storage;
  };

  template <class F, class Ops>
  static constexpr auto trace_fn() noexcept -> const task_trace* (*)(const void*) noexcept {
    if constexpr (is_traced_job<F>) return &Ops::trace;
    else return nullptr;
  }

  template <class F, bool Internal>
  struct inline_ops {
    static F* get(void* b) noexcept { return std::launder(static_cast<F*>(b)); }
    static void invoke(void* b) { std::invoke(std::move(*get(b))); }
    static void relocate(void* from, void* to) noexcept {
      ::new (to) F(std::move(*get(from)));
      get(from)->~F();
    }
    static void destroy(void* b) noexcept { get(b)->~F(); }
    static const task_trace* trace(const void* b) noexcept {
      return &std::launder(static_cast<const F*>(b))->trace;
    }
    static constexpr ops table{&invoke, &relocate, &destroy, trace_fn<F, inline_ops>(), Internal, true};
  };

  template <class F, bool Internal>
  struct heap_ops {
    static F*& get(void* b) noexcept { return *std::launder(static_cast<F**>(b)); }
    static void invoke(void* b) { std::invoke(std::move(*get(b))); }
    static void relocate(void* from, void* to) noexcept { ::new (to) F*(get(from)); }
    static void destroy(void* b) noexcept { delete get(b); }
    static const task_trace* trace(const void* b) noexcept {
      return &(*std::launder(static_cast<F* const*>(b)))->trace;
    }
    static constexpr ops table{&invoke, &relocate, &destroy, trace_fn<F, heap_ops>(), Internal, false};
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

// ---- tether/executor_stats.hpp ----------------------------------------------
// tether/executor_stats.hpp - what an executor reports: counters, latency summaries, and the
// per-task records its hooks receive.
//
//   tether::executor ex{{.name = "julia", .metrics = true}};
//   ...
//   tether::executor_stats s = ex.stats();
//   std::cout << s;                          // a small text table
//   scrape(tether::to_json(s));              // one JSON object
//   if (s.queue_delay.p99 > 10ms) ...        // accepted -> started
//
// executor_stats is a snapshot; latency_summary condenses a histogram (count, total, p50,
// p90, p99, max); task_info is what before_task / after_task / on_long_task hooks receive;
// long_task_report adds how much the queue grew while the long task ran.
//
// Who may call what: plain values; any thread.
// Memory ordering: none (no shared state).

#include <cstdio>
#include <ostream>


namespace tether {

// A distribution of durations: how many, their sum, three percentiles and the largest. A
// percentile is the upper bound of its histogram bucket (at most 12.5 % above the true value,
// never below it); max is exact.
struct latency_summary {
  std::uint64_t count = 0;
  std::chrono::nanoseconds total{0};
  std::chrono::nanoseconds p50{0};
  std::chrono::nanoseconds p90{0};
  std::chrono::nanoseconds p99{0};
  std::chrono::nanoseconds max{0};
  std::chrono::nanoseconds mean() const noexcept {
    return count == 0 ? std::chrono::nanoseconds(0) : total / static_cast<std::int64_t>(count);
  }
};

// Snapshot of an executor's counters; every field may be stale (relaxed reads).
struct executor_stats {
  std::uint64_t tasks_posted = 0;     // approx: run + cancelled + queued + delayed pending
  std::uint64_t tasks_run = 0;
  std::uint64_t tasks_cancelled = 0;  // destroyed unrun by stop(cancel), or delayed and stopped / failed
  std::size_t queue_depth = 0;        // approx
  std::size_t timers_pending = 0;     // delayed tasks waiting for their deadline
  std::chrono::nanoseconds wait_time{0};  // owner parked, waiting for work
  std::chrono::nanoseconds run_time{0};   // owner running tasks
  std::uint32_t callers_blocked = 0;  // threads blocked in call() now
  std::uint32_t callers_woken = 0;    // of those, answered and waiting for a core to run again
  std::uint64_t owner_yields = 0;     // times the owner gave its core to callers it had woken (pacing, or idle)
  // With executor_options::metrics (all zero without):
  bool metrics = false;               // the fields below are recorded
  latency_summary queue_delay{};      // per task: accepted (posted, or a delayed task due) -> started
  latency_summary task_time{};        // per task: started -> returned
  std::size_t queue_depth_max = 0;    // the deepest backlog the owner saw (sampled; see docs/executor.md)
  std::uint64_t long_tasks = 0;       // tasks at or over long_task_threshold
};

// One task as a hook sees it (with tracing on: metrics, or a task hook set).
struct task_info {
  source_location posted_from{};                    // the caller of post / submit / call / ...
  std::chrono::steady_clock::time_point enqueued{};      // when it was accepted
  std::chrono::nanoseconds queue_delay{0};               // accepted (or due) -> started
  std::chrono::nanoseconds run_time{0};                  // started -> returned; 0 in before_task
};

// A task that ran for long_task_threshold or longer.
struct long_task_report {
  task_info task{};
  std::size_t queue_depth_before = 0;  // approx: tasks queued behind it when it started
  std::size_t queue_depth_after = 0;   // approx: ... when it returned
  // How many tasks piled up behind it while it ran (negative: the queue shrank).
  std::ptrdiff_t queue_growth() const noexcept {
    return static_cast<std::ptrdiff_t>(queue_depth_after) - static_cast<std::ptrdiff_t>(queue_depth_before);
  }
};

namespace detail {
// "987 ns", "12.3 us", "4.56 ms", "7.89 s": three significant digits.
inline std::string format_duration(std::chrono::nanoseconds d) {
  const double ns = static_cast<double>(d.count());
  char buf[32];
  if (ns < 1e3) std::snprintf(buf, sizeof buf, "%.0f ns", ns);
  else if (ns < 1e6) std::snprintf(buf, sizeof buf, "%.3g us", ns / 1e3);
  else if (ns < 1e9) std::snprintf(buf, sizeof buf, "%.3g ms", ns / 1e6);
  else std::snprintf(buf, sizeof buf, "%.3g s", ns / 1e9);
  return buf;
}
inline std::string json_summary(const latency_summary& s) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "{\"count\":%llu,\"total_ns\":%lld,\"p50_ns\":%lld,\"p90_ns\":%lld,\"p99_ns\":%lld,\"max_ns\":%lld}",
                static_cast<unsigned long long>(s.count), static_cast<long long>(s.total.count()),
                static_cast<long long>(s.p50.count()), static_cast<long long>(s.p90.count()),
                static_cast<long long>(s.p99.count()), static_cast<long long>(s.max.count()));
  return buf;
}
inline std::string table_row(const char* name, const latency_summary& s) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "%-11s %10llu %10s %10s %10s %10s %10s\n", name, static_cast<unsigned long long>(s.count),
                format_duration(s.mean()).c_str(), format_duration(s.p50).c_str(), format_duration(s.p90).c_str(),
                format_duration(s.p99).c_str(), format_duration(s.max).c_str());
  return buf;
}
}  // namespace detail

// A small text table:
//   tasks: 1200 run, 0 cancelled, 3 queued (max 57), 0 delayed; owner busy 12.3 ms, idle 1.02 s
//   callers: 16 blocked, 4 woken; owner yielded to them 311 times
//                    count       mean        p50        p90        p99        max
//   queue delay       1200    4.21 us    3.58 us    8.19 us    28.7 us    102 us
//   run time          1200    10.2 us    9.22 us    12.3 us    65.5 us    1.05 ms
//   long tasks: 1
// (the last three lines only with metrics on).
inline std::string to_string(const executor_stats& s) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "tasks: %llu run, %llu cancelled, %zu queued", static_cast<unsigned long long>(s.tasks_run),
                static_cast<unsigned long long>(s.tasks_cancelled), s.queue_depth);
  std::string out = buf;
  if (s.metrics) out += " (max " + std::to_string(s.queue_depth_max) + ")";
  out += ", " + std::to_string(s.timers_pending) + " delayed; owner busy " + detail::format_duration(s.run_time) +
         ", idle " + detail::format_duration(s.wait_time) + "\n";
  out += "callers: " + std::to_string(s.callers_blocked) + " blocked, " + std::to_string(s.callers_woken) +
         " woken; owner yielded to them " + std::to_string(s.owner_yields) + " times\n";
  if (!s.metrics) return out;
  std::snprintf(buf, sizeof buf, "%-11s %10s %10s %10s %10s %10s %10s\n", "", "count", "mean", "p50", "p90", "p99", "max");
  out += buf;
  out += detail::table_row("queue delay", s.queue_delay);
  out += detail::table_row("run time", s.task_time);
  out += "long tasks: " + std::to_string(s.long_tasks) + "\n";
  return out;
}

inline std::ostream& operator<<(std::ostream& os, const executor_stats& s) { return os << to_string(s); }

// One JSON object (durations in integer nanoseconds), for scraping:
//   {"tasks_posted":1203,"tasks_run":1200,...,"metrics":true,
//    "queue_delay":{"count":1200,"total_ns":...,"p50_ns":...,...},"task_time":{...},
//    "queue_depth_max":57,"long_tasks":1}
inline std::string to_json(const executor_stats& s) {
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "{\"tasks_posted\":%llu,\"tasks_run\":%llu,\"tasks_cancelled\":%llu,\"queue_depth\":%zu,"
                "\"timers_pending\":%zu,\"wait_time_ns\":%lld,\"run_time_ns\":%lld,\"metrics\":%s",
                static_cast<unsigned long long>(s.tasks_posted), static_cast<unsigned long long>(s.tasks_run),
                static_cast<unsigned long long>(s.tasks_cancelled), s.queue_depth, s.timers_pending,
                static_cast<long long>(s.wait_time.count()), static_cast<long long>(s.run_time.count()),
                s.metrics ? "true" : "false");
  std::string out = buf;
  out += ",\"callers_blocked\":" + std::to_string(s.callers_blocked) +
         ",\"callers_woken\":" + std::to_string(s.callers_woken) + ",\"owner_yields\":" + std::to_string(s.owner_yields);
  out += ",\"queue_delay\":" + detail::json_summary(s.queue_delay);
  out += ",\"task_time\":" + detail::json_summary(s.task_time);
  out += ",\"queue_depth_max\":" + std::to_string(s.queue_depth_max);
  out += ",\"long_tasks\":" + std::to_string(s.long_tasks) + "}";
  return out;
}

}  // namespace tether

// ---- tether/executor_options.hpp --------------------------------------------
// tether/executor_options.hpp - how an executor is set up, and what it reports.
//
//   tether::executor ex{{.name = "julia",
//                        .on_start = [] { init_runtime(); },
//                        .around_task = tether::install_context<julia_tag>(task),
//                        .on_error = [](std::exception_ptr e) { log(e); }}};
//
// The vocabulary of executor.hpp: the adopt_current_thread tag, stop modes, executor_options,
// the task_view an around_task wrapper receives and timer_status; executor_stats and the
// records the tracing hooks receive are in executor_stats.hpp (included).
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

  // ---- metrics and tracing (docs/executor.md, "Metrics and tracing") ----
  // Record queue delay and run time histograms, the queue depth high-water mark and long
  // tasks, for stats(). Off: the task path is exactly the untraced one.
  bool metrics = false;
  // Tracing is on when metrics is, or any of the task hooks or long_task_threshold below is
  // set: each task then carries where it was posted from and when. The hooks run on the owner thread,
  // with no lock held; an exception from one goes to on_error.
  std::function<void(const task_info&)> before_task{};  // just before the task (run_time 0)
  std::function<void(const task_info&)> after_task{};   // just after it returned or threw
  // Tasks that ran for long_task_threshold or longer (zero: never) are counted in
  // stats().long_tasks and passed to on_long_task (if set).
  std::chrono::nanoseconds long_task_threshold{0};
  std::function<void(const long_task_report&)> on_long_task{};
  // The owner thread is about to park (nothing to run) / has woken up. Need no tracing.
  std::function<void()> on_park{};
  std::function<void()> on_unpark{};
};

// What became of a delayed task (timer_handle::status()). failed: the owner could not
// register it (out of memory growing its timer heap); it never runs.
enum class timer_status : std::uint8_t { pending, running, ran, cancelled, stopped, failed };

}  // namespace tether

// ---- tether/detail/executor/timer_heap.hpp ----------------------------------
// tether/detail/executor/timer_heap.hpp - the owner's min-heap of delayed tasks.
//
// post_at() from any thread allocates a timer_state (shared with the caller's handle) and
// pushes one internal task, carrying the callable, through the executor's queue; that task,
// run by the owner, stores the callable in the state and inserts the state here. So the heap is owner-only (no lock), a delayed post costs one
// queue push, and the owner parks until the earliest deadline (no polling tick).
//
// Cancellation is lazy: timer_handle::cancel() flips the state to cancelled, and the owner
// throws the entry away (destroying its callable on the owner thread) when its deadline comes
// up, or earlier in a sweep: push() sweeps the cancelled entries out whenever the heap has
// doubled since its last sweep (or its low-water mark), so a stream of post_after + cancel
// keeps memory proportional to the live timers, at an amortized O(1) per push.
//
// Who may call what: timer_heap - the owner thread only. timer_state::try_transition - any
// thread (cancel) and the owner (start, stop, fail); timer_state::phase - read by any thread.
//
// Memory ordering: phase transitions are compare-exchanges from `pending`; exactly one of
// cancel (any thread) and start / stop / fail (owner) wins. They publish no data (the
// callable is owner-only), so acq_rel is only for readers of status() that then look at
// their own state.



namespace tether::detail {

// Mirrors tether::timer_status (executor_options.hpp), value for value.
enum class timer_phase : std::uint8_t { pending, running, ran, cancelled, stopped, failed };

struct timer_state {
  explicit timer_state(steady_time at) noexcept : when(at) {}

  bool try_transition(timer_phase to) noexcept {
    timer_phase expected = timer_phase::pending;
    return phase.compare_exchange_strong(expected, to, std::memory_order_acq_rel);  // [ET1] acq_rel: pairs with [ET2] in timer_handle::status()
  }

  // Written by cancel() (any thread) and by the owner; read by any thread.
  std::atomic<timer_phase> phase{timer_phase::pending};
  const steady_time when;
  std::uint64_t seq = 0;  // owner only: FIFO among equal deadlines
  task fn;                // owner only: set when the owner registers the timer
};

class timer_heap {
 public:
  // Inserts t; may throw std::bad_alloc (the vector grows), leaving the heap unchanged.
  void push(std::shared_ptr<timer_state> t) {
    if (heap_.size() >= sweep_at_) sweep_cancelled();
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
    sweep_at_ = std::min(sweep_at_, std::max(min_sweep, 2 * heap_.size()));  // the low-water mark
    return t;
  }

  // Removes and returns every entry, earliest first.
  std::vector<std::shared_ptr<timer_state>> take_all() {
    std::sort_heap(heap_.begin(), heap_.end(), later);  // ascending by `later`: latest first
    std::reverse(heap_.begin(), heap_.end());
    sweep_at_ = min_sweep;
    return std::exchange(heap_, {});
  }

 private:
  static constexpr std::size_t min_sweep = 64;

  static bool later(const std::shared_ptr<timer_state>& a, const std::shared_ptr<timer_state>& b) noexcept {
    return a->when != b->when ? a->when > b->when : a->seq > b->seq;
  }

  // Drops the cancelled entries (their callables are destroyed here, on the owner) and
  // rebuilds the heap. Allocates nothing.
  void sweep_cancelled() noexcept {
    const auto dead = [](std::shared_ptr<timer_state>& t) {
      if (t->phase.load(std::memory_order_acquire) != timer_phase::cancelled) return false;  // [ET3] acquire: pairs with [ET1]
      t->fn.reset();
      return true;
    };
    heap_.erase(std::remove_if(heap_.begin(), heap_.end(), dead), heap_.end());
    std::make_heap(heap_.begin(), heap_.end(), later);
    sweep_at_ = std::max(min_sweep, 2 * heap_.size());
  }

  std::vector<std::shared_ptr<timer_state>> heap_;
  std::uint64_t next_seq_ = 0;
  std::size_t sweep_at_ = min_sweep;  // push() sweeps when the heap reaches this size
};

}  // namespace tether::detail

// ---- tether/detail/executor/owner_counter.hpp -------------------------------
// tether/detail/executor/owner_counter.hpp - counters that one thread writes and any reads.
//
// An executor's statistics and metrics are written only by its owner thread, so an update is
// a load and a store, never a read-modify-write (no locked instruction on the owner's path).
//
// Who may call what: owner_add / owner_raise - the one writer thread; plain loads - any thread.
// Memory ordering: relaxed everywhere - a statistic that publishes nothing; a reader sees some
// recent value of each counter, never a torn one.


namespace tether::detail {

// c += v. Writer thread only.
template <class T>
void owner_add(std::atomic<T>& c, T v) noexcept {
  c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);  // relaxed: single-writer statistic
}

// c = max(c, v); stores only when it grows (readers' lines stay clean). Writer thread only.
template <class T>
void owner_raise(std::atomic<T>& c, T v) noexcept {
  if (v > c.load(std::memory_order_relaxed)) c.store(v, std::memory_order_relaxed);  // relaxed: single-writer statistic
}

}  // namespace tether::detail

// ---- tether/detail/executor/latency_histogram.hpp ---------------------------
// tether/detail/executor/latency_histogram.hpp - a fixed-size log-linear histogram of durations.
//
// What an executor's metrics keep for queue delay and run time: 336 counters over durations
// in clock ticks (tick_clock.hpp: the owner records raw tick differences, and summary()
// scales to nanoseconds - a log-linear layout scales exactly), HdrHistogram's layout with 3
// sub-bucket bits - values below 16 exactly, then every power of two split into 8 equal
// buckets, so a bucket is at most 1/8 (12.5 %) of its lower bound wide; values of 2^44 ticks
// (about 1.6 hours at 3 GHz) and more share the last bucket.
// Recording is an index computation and three owner-only load + store pairs: no lock, no
// allocation, no read-modify-write. A percentile is the upper bound of the bucket that holds
// it (capped at the largest value seen), so it never understates a delay.
//
// Who may call what: record() - one writer thread (the executor's owner); summary() - any
// thread, concurrently with the writer.
// Memory ordering: every counter is a relaxed atomic written by the one writer; a reader sees
// each counter at some recent value, so a summary taken while tasks run mixes values from a
// few tasks apart (it is a statistic; nothing is read through it).



namespace tether::detail {

class latency_histogram {
 public:
  static constexpr unsigned sub_bits = 3;
  static constexpr std::uint64_t sub_count = std::uint64_t{1} << sub_bits;  // buckets per power of two
  static constexpr unsigned max_exponent = 43;                              // last power of two split
  static constexpr std::size_t bucket_count = 2 * sub_count + (max_exponent - sub_bits) * sub_count;
  static_assert(bucket_count == 336);

  static constexpr std::size_t index_of(std::uint64_t v) noexcept {
    if (v < 2 * sub_count) return static_cast<std::size_t>(v);
    const unsigned e = static_cast<unsigned>(std::bit_width(v)) - 1;  // v in [2^e, 2^(e+1))
    if (e > max_exponent) return bucket_count - 1;
    const std::uint64_t sub = (v >> (e - sub_bits)) - sub_count;  // 0 .. sub_count - 1
    return static_cast<std::size_t>(2 * sub_count + (e - sub_bits - 1) * sub_count + sub);
  }
  // The smallest and largest value that index_of() maps to bucket i.
  static constexpr std::uint64_t lower_bound(std::size_t i) noexcept {
    if (i < 2 * sub_count) return i;
    const std::size_t k = i - 2 * sub_count;
    const unsigned e = static_cast<unsigned>(k / sub_count) + sub_bits + 1;
    return (sub_count + k % sub_count) << (e - sub_bits);
  }
  static constexpr std::uint64_t upper_bound(std::size_t i) noexcept {
    if (i + 1 == bucket_count) return UINT64_MAX;
    return lower_bound(i + 1) - 1;
  }

  // Adds one duration in ticks (negative: 0). Writer thread only.
  void record(std::int64_t ticks) noexcept {
    const std::uint64_t v = ticks < 0 ? 0 : static_cast<std::uint64_t>(ticks);
    owner_add(counts_[index_of(v)], std::uint64_t{1});
    owner_add(sum_, v);
    owner_raise(max_, v);
  }

  // count, total, p50 / p90 / p99 and max of what was recorded so far, in nanoseconds
  // (`ns_per_unit`: what one recorded unit is). Thread-safe.
  latency_summary summary(double ns_per_unit = 1.0) const noexcept {
    const auto ns = [ns_per_unit](std::uint64_t v) {
      return std::chrono::nanoseconds(static_cast<std::int64_t>(static_cast<double>(v) * ns_per_unit));
    };
    std::array<std::uint64_t, bucket_count> c;
    std::uint64_t count = 0;
    for (std::size_t i = 0; i < bucket_count; ++i) {
      c[i] = counts_[i].load(std::memory_order_relaxed);  // relaxed: statistic
      count += c[i];
    }
    latency_summary s;
    s.count = count;
    s.total = ns(sum_.load(std::memory_order_relaxed));  // relaxed: statistic
    if (count == 0) return s;
    const std::uint64_t max = max_.load(std::memory_order_relaxed);  // relaxed: statistic
    const auto at = [&](std::uint64_t per_mille) {
      const std::uint64_t rank = std::max<std::uint64_t>(1, (count * per_mille + 999) / 1000);  // ceil, at least the first
      std::uint64_t seen = 0;
      std::size_t i = 0;
      for (; i < bucket_count; ++i) {
        seen += c[i];
        if (seen >= rank) break;
      }
      i = std::min(i, bucket_count - 1);
      // A stale max (the writer is between its stores) must not pull the value below its bucket.
      const std::uint64_t cap = std::max(max, lower_bound(i));
      return ns(std::min(upper_bound(i), cap));
    };
    s.p50 = at(500);
    s.p90 = at(900);
    s.p99 = at(990);
    std::size_t top = bucket_count - 1;
    while (top > 0 && c[top] == 0) --top;
    s.max = ns(std::max(max, lower_bound(top)));
    return s;
  }

 private:
  // Written by the writer (load + store), read by summary().
  std::array<std::atomic<std::uint64_t>, bucket_count> counts_{};
  std::atomic<std::uint64_t> sum_{0};
  std::atomic<std::uint64_t> max_{0};
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
// quiet_wake_fd, settle_deferred_destroys) - the owner thread only; after_push / wake_owner /
// arm_wake_fd - any producer, after a successful push; defer_destroy - any thread.
//
// Memory ordering: the queue's release publish of each task pairs with the owner's acquire
// (mpsc_queue.hpp). [EA1]/[EA2]: an idle owner raises asleep_ and then checks the queue; a
// producer pushes (a seq_cst claim) and then checks asleep_ - all seq_cst, so one of them
// sees the other (the parker's fence covers the owner's final re-check). [EW1]/[EW2]: the
// wake-fd flag is flipped with acq_rel exchanges on both sides, so the owner's clearing
// exchange synchronizes with every producer whose set came before it (their tasks are
// visible to the owner's re-scan) and every later producer sees the clear and signals again.
// The deferred-destroy stack (defer_destroy) is seq_cst throughout, like asleep_.
// Statistics are relaxed counters written only by the owner; so are the metrics (histograms,
// depth high-water mark, long tasks), which any thread reads through stats().

#include <future>


namespace tether::detail {

// The owner's idle wait uses park() (never the adaptive park_until), so every spin phase runs
// in full: park_spin_checks() (parker.hpp) re-checks, then the yields.

// A destruction that needs no allocation to hand over: the node lives in the object to be
// destroyed (confined<T> keeps one beside its T), and destroy(node) frees both.
struct deferred_destroy {
  deferred_destroy* next = nullptr;
  void (*destroy)(deferred_destroy*) noexcept = nullptr;
};

// Nodes whose executor had finished when they were handed over: leaked on purpose (nobody may
// destroy them on the wrong thread), kept reachable here so that leak checkers and debuggers
// find them. Pushed with a seq_cst compare-exchange; never popped.
inline std::atomic<deferred_destroy*> leaked_destroys{nullptr};

inline void keep_leaked(deferred_destroy* d) noexcept {
  deferred_destroy* head = leaked_destroys.load(std::memory_order_seq_cst);
  do d->next = head;
  while (!leaked_destroys.compare_exchange_weak(head, d, std::memory_order_seq_cst));
}

class executor_core {
 protected:
  using clock = std::chrono::steady_clock;

  executor_core(executor_options&& o, bool adopted)
      : own_thread_(!adopted),
        name_(std::move(o.name)),
        name_id_(detail::intern_name(name_)),
        on_start_(std::move(o.on_start)),
        on_stop_(std::move(o.on_stop)),
        around_task_(std::move(o.around_task)),
        on_error_(std::move(o.on_error)),
        fd_(o.wake_fd ? std::make_unique<detail::wake_fd>() : nullptr),
        tracing_(o.metrics || o.before_task || o.after_task || o.on_long_task || o.long_task_threshold.count() > 0),
        clock_(tracing_ ? &detail::tick_clock() : nullptr),
        metrics_(o.metrics ? std::make_unique<metrics_state>() : nullptr),
        before_task_(std::move(o.before_task)),
        after_task_(std::move(o.after_task)),
        on_long_task_(std::move(o.on_long_task)),
        on_park_(std::move(o.on_park)),
        on_unpark_(std::move(o.on_unpark)),
        long_task_ticks_(o.long_task_threshold.count() > 0
                             ? std::max<detail::tick_t>(1, clock_->from_ns(o.long_task_threshold.count()))
                             : 0),
        depth_sample_ticks_(tracing_ ? clock_->from_ns(depth_sample_ns) : 0) {}

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
    void operator()() {
      ex->pace_callers();
      std::exchange(slot, nullptr)->run(std::forward<F>(*fn));
    }
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

  // call(f, stop_token): as call_job, into a shared abandonable_call; an abandoned call is
  // skipped (f may be gone with its caller).
  template <class F, class R>
  struct abandonable_call_job {
    abandonable_call_job(const executor_core* e, std::remove_reference_t<F>* f, detail::abandonable_call<R>* s) noexcept
        : fn(f), state(s), ex(e) {}
    abandonable_call_job(abandonable_call_job&& o) noexcept : fn(o.fn), state(std::exchange(o.state, nullptr)), ex(o.ex) {}
    void operator()() {
      detail::abandonable_call<R>* s = std::exchange(state, nullptr);
      if (s->claim()) s->run(std::forward<F>(*fn));
      s->unref();
    }
    ~abandonable_call_job() {
      if (state == nullptr) return;
      if (state->claim()) {
        try {
          state->fail_refused(std::make_exception_ptr(executor_stopped(ex->dropped("call()"))));
        } catch (...) {
          state->fail_refused(std::current_exception());  // out of memory: the caller gets bad_alloc
        }
      }
      state->unref();
    }
    std::remove_reference_t<F>* fn;
    detail::abandonable_call<R>* state;
    const executor_core* ex;
  };

  // post_at(): carries the callable to the owner, which stores it in the timer's state and
  // inserts the timer into its heap; destroyed unrun -> stopped. The callable travels in the
  // registration, not in the state, so that every allocation on the caller's side (the state,
  // the queue's node) happens before the callable is moved: a std::bad_alloc leaves it with
  // the caller. If the owner cannot store or insert it (out of memory) the task is not lost
  // silently: its handle reads failed and its callable is destroyed here, on the owner.
  template <class F>
  struct timer_registration {
    template <class... G>
    timer_registration(executor_core* e, std::shared_ptr<detail::timer_state> s, G&&... g)
        : ex(e), state(std::move(s)), fn(std::forward<G>(g)...) {}
    timer_registration(timer_registration&& o) noexcept(std::is_nothrow_move_constructible_v<F>)
        : ex(o.ex), state(std::move(o.state)), fn(std::move(o.fn)) {}
    executor_core* ex;
    std::shared_ptr<detail::timer_state> state;
    F fn;
    void operator()() noexcept {
      std::shared_ptr<detail::timer_state> s = std::move(state);
      try {
        s->fn = detail::task(std::move(fn));  // may allocate: a callable too large to store inline
        ex->timers_.push(s);                  // a copy: s stays ours if the push throws
      } catch (...) {
        if (s->try_transition(detail::timer_phase::failed)) add(ex->cancelled_, 1);
        s->fn.reset();
        return;
      }
      ex->timers_pending_.store(ex->timers_.size(), std::memory_order_relaxed);  // relaxed: statistic
    }
    ~timer_registration() {
      if (state) state->try_transition(detail::timer_phase::stopped);
    }
  };

  // ---- producer side -------------------------------------------------------------------------

  // Tracing on: queues Job (built from args) inside a traced_job stamped now, from `where`.
  // closed once stopped (args untouched).
  template <class Job, class... Args>
  push_result emplace_traced(const source_location& where, Args&&... args) {
    return queue_.emplace(std::in_place_type<detail::traced_job<Job>>, detail::task_trace{detail::ticks_now(), where},
                          std::forward<Args>(args)...);
  }

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
    // [EA2] seq_cst: our push (a seq_cst claim) precedes this load; pairs with [EA1].
    if (asleep_.load(std::memory_order_seq_cst) && asleep_.exchange(false, std::memory_order_seq_cst)) {
      woken_at_.store(clock::now().time_since_epoch().count(), std::memory_order_relaxed);  // relaxed: a hint
      return owner_wait_.notify_one();
    }
    return false;
  }

  // Only the producer that flips the flag false -> true writes the descriptor: one write per
  // batch, however many tasks are posted before the owner drains.
  void arm_wake_fd() noexcept {
    // release publishes our task to the owner's [EW2]; acquire sees its clear.
    if (!wake_pending_.exchange(true, std::memory_order_acq_rel)) fd_->signal();  // [EW1] acq_rel: pairs with [EW2]
  }

  // A destruction handed to the owner without allocating (confined<T>'s fallback when its
  // hand-over post cannot be queued): pushed on an intrusive stack that the owner settles
  // whenever it finds the queue empty (settle_deferred_destroys) and once more, closing it,
  // when it finishes. False once closed (the executor finished): nobody is left to run it.
  // Never blocks. Thread-safe.
  bool defer_destroy(detail::deferred_destroy* d) noexcept {
    detail::deferred_destroy* head = deferred_.load(std::memory_order_seq_cst);
    do {
      if (head == &deferred_closed_) return false;
      d->next = head;
    } while (!deferred_.compare_exchange_weak(head, d, std::memory_order_seq_cst));  // publishes *d to the owner's exchange
    after_push();
    return true;
  }

  // ---- owner side ----------------------------------------------------------------------------

  void thread_main() {
    detail::adopt_record(owner_record_);
    if (!name_.empty()) detail::set_this_thread_name(name_);
    run_hook(on_start_);
    in_run_ = true;
    loop(SIZE_MAX, detail::no_deadline, true, nullptr);
    in_run_ = false;
  }

  // The run family's entry on an adopting executor's owner: checks who calls, then loop().
  std::size_t drive(std::size_t max, detail::steady_time deadline, bool block, const std::stop_token* token) {
    if (own_thread_)
      throw std::logic_error("tether: executor '" + std::string(name_or_unnamed()) +
                             "' runs its own thread; run()/try_run() are for executors constructed with adopt_current_thread");
    check_owner_thread({});
    if (in_run_)
      throw std::logic_error("tether: run()/try_run() on executor '" + std::string(name_or_unnamed()) +
                             "' from inside one of its own tasks");
    in_run_ = true;
    struct leave {
      bool& flag;
      ~leave() { flag = false; }
    } leave_run{in_run_};
    if (token == nullptr) return loop(max, deadline, block, nullptr);
    // A stop request wakes a parked owner with an empty task (skipped when run).
    std::stop_callback wake(*token, [this]() noexcept {
      try {
        if (queue_.push(detail::task{})) after_push();
      } catch (...) {  // out of memory: the owner notices the token at its next wake-up
      }
    });
    return loop(max, deadline, block, token);
  }

  // The one deadline loop behind every run* / try_run* call and the own thread: runs up to
  // `want` user tasks; returns at `deadline` (checked between batches, so a busy executor
  // still returns), when `token` is stopped, or - with block false (the try_ forms) - as soon
  // as nothing is ready instead of parking.
  //
  // Outline:
  //   1. finished, token stopped, or the deadline passed (after the first round) -> return;
  //   2. run due delayed tasks, then up to a batch of ready tasks;
  //   3. queue closed and drained -> finish the stop (timers, on_stop) and return;
  //   4. nothing ready: settle the hand-overs of defer_destroy() (re-scan if it took new
  //      ones); quiet the wake fd (re-scan if a producer signalled); the try_ forms return
  //      here;
  //   5. park in idle_until(min(deadline, next timer)), then go round again.
  std::size_t loop(std::size_t want, detail::steady_time deadline, bool block, const std::stop_token* token) {
    std::size_t n = 0;
    for (bool first = true;; first = false) {
      if (finished_.load(std::memory_order_relaxed)) return n;  // relaxed: only the owner writes it
      if (token != nullptr && token->stop_requested()) return n;
      if (!first && deadline != detail::no_deadline && clock::now() >= deadline) return n;
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
      if (settle_deferred_destroys()) continue;
      if (quiet_wake_fd()) continue;
      if (!block) {
        if (timers_.next_deadline() <= clock::now()) continue;  // registered just now, and due
        return n;
      }
      // A stop request's wake-up task may have been taken (and skipped) by this round's
      // run_ready, after the check at the top: look again before parking, or the owner would
      // sleep with the request seen by nobody. (The request is made before that task is
      // pushed, so having taken the task, this load sees it.)
      if (token != nullptr && token->stop_requested()) return n;
      const detail::steady_time until = std::min(deadline, timers_.next_deadline());
      if (until != detail::no_deadline && clock::now() >= until) {
        if (clock::now() >= deadline) return n;
        continue;  // a timer is due
      }
      const auto t0 = clock::now();
      parked_since_ns_.store(t0.time_since_epoch().count(), std::memory_order_relaxed);  // relaxed: statistic
      clock::duration ran_for{0};
      const bool woken = idle_until(until, n, ran_for);
      parked_since_ns_.store(0, std::memory_order_relaxed);  // relaxed: statistic
      add(wait_ns_, clock::now() - t0 - ran_for);  // a task it ran counts as run time only
      if (n >= want) return n;
      if (woken) continue;
      if (deadline != detail::no_deadline && clock::now() >= deadline) return n;
    }
  }

  // Parks the owner until work may be ready, the queue closed, or `until`; false on timeout.
  // Adds to `ran` the task it ran, if any, and to `ran_for` the time that task took.
  //
  // Outline:
  //   0. an owner that keeps catching up with a streaming poster pauses first (stream_);
  //   1. a task claimed but not yet published (a producer between its claim and its
  //      publish): wait in the queue's own pop, which parks on that slot;
  //   2. otherwise raise asleep_ and park on owner_wait_ until a producer lowers it (only
  //      that one producer pays the wake-up system call: the rest see it lowered) or the
  //      queue shows work. While raised, producers flip it; the spin phase catches most.
  // The ring's tail line is the one every push writes. An owner whose last idle period ended
  // within its first quick_checks looks (tasks coming from another core faster than it can
  // look away: coroutine sessions answered by a runtime) reads it (size_approx, is_closed)
  // only when the head shows nothing - in 1, and from the moment asleep_ is up, where the
  // handshake needs it (a claimed slot is seen there before it is published); before that
  // it watches the head, whose line the next task brings anyway. Otherwise (a call answered,
  // the next one a round trip away) it watches the tail from the start: the claim shows
  // there before the task is written, and the owner reaches for the slot sooner.
  bool idle_until(detail::steady_time until, std::size_t& ran, clock::duration& ran_for) {
    if (callers_.load(std::memory_order_relaxed) > 1) {  // relaxed: a hint
      if (const auto y = yield_to_woken_callers(until)) return *y;
    }
    // Spin only while idle periods stay short (after one that outlasted the spin, park at
    // once), while spinning catches the work (see after_idle()), and while at most one caller
    // is blocked in call(): with the queue empty, several callers in call() have all been
    // answered and need cores to come back - a spinning owner would take one from the very
    // threads that feed it.
    const bool spin = spin_when_idle_ && skip_spins_ == 0 && callers_.load(std::memory_order_relaxed) <= 1;  // relaxed: a hint
    // relaxed: the owner's own counter.
    if (spin && stream_.before_wait(static_cast<std::uint32_t>(ran_.load(std::memory_order_relaxed))))
      detail::stream_watch::pause();
    const bool head_only = spin && work_came_quickly_;
    if ((!head_only || !queue_.head_has_item()) && queue_.size_approx() != 0) {
      if (on_park_) run_hook(on_park_);
      pop_result<detail::task> r = queue_.pop_until(until);
      if (on_unpark_) run_hook(on_unpark_);
      if (r) {
        const auto t1 = clock::now();
        ran += run_item(*r);
        r = status::empty;  // destroy the task before timing stops
        ran_for = clock::now() - t1;
        add(run_ns_, ran_for);
      }
      // work_came_quickly_ and stream_ keep what the last parked period said: recording this
      // path as a quick period was tried and measured no different (bench/README.md).
      return !r.is_timeout();
    }
    // Spinning, the flag is raised halfway through park_until's spin: short gaps between
    // tasks cost producers nothing, and it is up (before the parker's fence) when the owner
    // sleeps. Parking at once, it is raised first.
    const int raise_at = spin ? raise_asleep_at : 0;
    int checks = 0;
    // Stores only when needed, here and below: producers read this line on every push, and
    // an owner that rewrote it on every idle period would pull it from them each time.
    if (woken_at_.load(std::memory_order_relaxed) != 0)  // relaxed: a heuristic's input
      woken_at_.store(0, std::memory_order_relaxed);      // relaxed: as above
    if (raise_at == 0) asleep_.store(true, std::memory_order_seq_cst);  // [EA1]
    if (on_park_) run_hook(on_park_);
    const auto t0 = clock::now();
    const bool woken = detail::park(
        owner_wait_,
        [this, &checks, raise_at, head_only] {
          if (++checks == raise_at) asleep_.store(true, std::memory_order_seq_cst);  // [EA1] pairs with [EA2]
          else if (checks > raise_at && !asleep_.load(std::memory_order_seq_cst)) return true;
          if (head_only && checks < raise_at)  // until the flag is up (above)
            return deferred_.load(std::memory_order_seq_cst) != nullptr || queue_.head_has_item();
          return has_work();
        },
        until, spin);
    if (asleep_.load(std::memory_order_relaxed))        // relaxed: only saves producers a wake
      asleep_.store(false, std::memory_order_relaxed);  // relaxed: as above
    // The idle period ended when work arrived (stamped by the waking producer), not when
    // the owner got the core back: a slow wake-up must not keep the owner from spinning.
    const clock::rep woke = woken_at_.load(std::memory_order_relaxed);  // relaxed: as above
    const auto end = woke != 0 ? clock::time_point(clock::duration(woke)) : clock::now();
    after_idle(spin, woken, checks <= detail::park_spin_checks(), end - t0 < short_idle);
    stream_.after_wait(spin && woken && checks == 1);
    work_came_quickly_ = woken && checks <= quick_checks;
    if (on_unpark_) run_hook(on_unpark_);
    return woken;
  }

  // Before the owner parks with several callers blocked: callers it answered that have not
  // run yet will call again as soon as they get a core, and on 2 cores they wait for the
  // owner's. So while any are counted (woken_callers_), the owner gives its core away rather
  // than parking: their next calls find it awake - no wake-up system call on their side, no
  // sleep and wake on the owner's. At most woken_yields yields, each followed by a look at
  // the queue (and at `until`, so a due timer is not held up): true when work came (or a
  // close or a handed-over destruction), false at `until`; nothing when no woken caller is
  // left or the yields ran out (then the owner parks as usual). Measured: bench/README.md,
  // "Many callers".
  std::optional<bool> yield_to_woken_callers(detail::steady_time until) noexcept {
    for (int i = 0; i < woken_yields; ++i) {
      if (woken_callers_.load(std::memory_order_relaxed) == 0) return std::nullopt;  // relaxed: a hint
      yield_to_callers();
      if (has_work()) return true;
      if (until != detail::no_deadline && clock::now() >= until) return false;
    }
    return std::nullopt;
  }
  static constexpr int woken_yields = 64;

  // What ends an idle period: a handed-over destruction, a task, or the close.
  bool has_work() const noexcept {
    return deferred_.load(std::memory_order_seq_cst) != nullptr || queue_.size_approx() != 0 || queue_.is_closed();
  }

  // The owner gives its core to callers it answered (pace_callers, yield_to_woken_callers).
  void yield_to_callers() const noexcept {
    std::this_thread::yield();
    // relaxed: a statistic; owner-only writes, so no read-modify-write.
    owner_yields_.store(owner_yields_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

  // Whether the next idle periods spin. A long period turns the spin off until a short one
  // comes. A short period whose work arrived only after the pause phase (while the owner
  // yielded or slept) means the spin failed: whoever brought the work needed the core the
  // owner spun on (more runnable threads than cores: a thread pinned beside it, a preempted
  // producer). Then the next skip_spins_ periods park at once; the one after probes with a
  // spin, and each failed probe doubles the count (detail::next_spin_skips), so an owner
  // that shares its core wastes a spin only now and then, and one whose spin catches work
  // again spins every time.
  void after_idle(bool spun, bool woken, bool caught_spinning, bool short_period) noexcept {
    spin_when_idle_ = short_period;
    if (!woken) return;  // a deadline, not work: says nothing about the spin
    if (!spun) {
      if (skip_spins_ > 0) --skip_spins_;
      return;
    }
    if (caught_spinning) {
      spin_skip_step_ = 0;
    } else if (short_period) {
      spin_skip_step_ = detail::next_spin_skips(spin_skip_step_);  // the parker's counts: the same trade-off
      skip_spins_ = spin_skip_step_;
    }
  }

  static constexpr int raise_asleep_at = detail::park_spin_checks() / 2;  // 0: before parking at all
  static constexpr int quick_checks = 2;  // an idle period that ended within these: work_came_quickly_
  // An idle period this short would have ended inside park_until's spin.
  static constexpr std::chrono::microseconds short_idle{50};

  // Before answering a call, on the owner: with many callers and few cores, a fast owner wakes
  // callers faster than the cores can run them. The answered ones then wait to run in the
  // kernel's run queue, in no order tether controls, and the unlucky ones for milliseconds:
  // the tail latency of every caller. So while the callers it woke and that have not run yet
  // number at least pace_floor() and an eighth of the callers in call(), the owner gives its
  // core away once before it answers the next: callers then wait in the queue, which is
  // first in, first out, and the run queue stays short. (Measured: bench/README.md,
  // "Many callers".) A caller that spins is never counted, so one or two callers pay
  // nothing but one load per call.
  void pace_callers() const noexcept {
    const std::uint32_t woken = woken_callers_.load(std::memory_order_relaxed);  // relaxed: a hint
    if (woken >= pace_floor() && woken >= callers_.load(std::memory_order_relaxed) / 8)  // relaxed: as above
      yield_to_callers();
  }
  // Twice the cores: fewer woken callers than that can all run at once, or soon.
  static std::uint32_t pace_floor() noexcept {
    static const std::uint32_t floor = 2 * std::max(1u, std::thread::hardware_concurrency());
    return floor;
  }

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
    if (metrics_) note_depth(queue_.size_approx());  // once per batch: the tail's line is the producers'
    // Inside a batch a traced task starts when the one before it ended (run_traced).
    struct batch_scope {
      detail::tick_t& chain;
      batch_scope(detail::tick_t& c) noexcept : chain(c) { chain = 0; }
      ~batch_scope() { chain = no_chain; }
    } scope{chain_};
    const std::size_t taken = queue_.try_pop_each(
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
    if (tracing_) [[unlikely]]
      run_traced(t, 0);
    else
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
        if (tracing_) [[unlikely]]
          run_traced(t->fn, clock_->from_steady(t->when));
        else
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
        if (tracing_) [[unlikely]]
          run_traced(t->fn, clock_->from_steady(t->when));
        else
          run_user(t->fn);
        t->phase.store(detail::timer_phase::ran, std::memory_order_release);  // release: pairs with status()
        add(ran_, 1);
      } else if (t->try_transition(detail::timer_phase::stopped)) {
        add(cancelled_, 1);
      }
      t->fn.reset();
    }
    timers_pending_.store(0, std::memory_order_relaxed);  // relaxed: statistic
    // Every task is done: destroy every hand-over and close the stack (later ones are refused).
    destroy_all(std::exchange(deferred_taken_, nullptr));
    destroy_all(deferred_.exchange(&deferred_closed_, std::memory_order_seq_cst));
    if (fd_) {
      fd_->arm(detail::no_deadline);
      wake_pending_.store(false, std::memory_order_release);  // release: nothing pairs; quiet for good
    }
    run_hook(on_stop_);
    finished_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    state_wait_.notify_all();
  }

  // Called when the queue was just found empty. A hand-over may be destroyed only after
  // every task its thread posted before it, so: destroy what an earlier call took (the queue
  // has been found empty since that take, so those tasks have run), then take the newer
  // ones; true if it took any (the caller re-scans the queue before the next settle).
  bool settle_deferred_destroys() noexcept {
    destroy_all(std::exchange(deferred_taken_, nullptr));
    if (deferred_.load(std::memory_order_seq_cst) == nullptr) return false;
    deferred_taken_ = deferred_.exchange(nullptr, std::memory_order_seq_cst);
    return true;
  }

  // Runs the destructions of a list taken from deferred_, oldest first, outside around_task
  // (like the destruction of a cancelled task).
  static void destroy_all(detail::deferred_destroy* d) noexcept {
    detail::deferred_destroy* fifo = nullptr;
    while (d != nullptr) fifo = std::exchange(d, std::exchange(d->next, fifo));  // reverse: oldest first
    while (fifo != nullptr) {
      detail::deferred_destroy* next = fifo->next;
      fifo->destroy(fifo);
      fifo = next;
    }
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
    if (!wake_pending_.load(std::memory_order_acquire) && next == armed_deadline_) return false;  // [EW3] acquire: as [EW2], pairs with [EW1]
    fd_->arm(next);
    armed_deadline_ = next;
    // Acquire pairs with every [EW1] before it (their tasks are visible to our re-scan);
    // release lets later producers see the clear, so they signal after our arm.
    return wake_pending_.exchange(false, std::memory_order_acq_rel);  // [EW2] acq_rel: pairs with [EW1]
  }

  // Tracing on: runs a user task as run_user() does, timing it and calling the task hooks.
  // `due`: a delayed task's deadline (its queue delay counts from then), else 0.
  //
  // Outline:
  //   1. copy the trace (the task's storage is moved from once it runs), stamp the start;
  //   2. before_task (then re-stamp: the hook's time is not the task's);
  //   3. run it; stamp the end; record delay and run time in the histograms;
  //   4. after_task; a long task is counted, its queue depth sampled and reported; a task
  //      of depth_sample_ns or more samples the depth for the high-water mark.
  void run_traced(detail::task& t, detail::tick_t due) {
    const detail::task_trace* tr = t.trace();
    if (tr == nullptr) {  // not stamped (a task queued as such): nothing to measure
      run_user(t);
      return;
    }
    const detail::task_trace trace = *tr;
    const detail::tick_t ready = std::max(trace.enqueued, due);
    // In a batch, the previous task's end (a clock reading saved per task; what the owner did
    // in between - destroying that task, popping this one - counts as this task's).
    detail::tick_t start = chain_ > 0 ? chain_ : detail::ticks_now();
    // A task posted after the previous one ended has a start stamp older than its own post
    // stamp; the readings of two cores may also differ by a few ticks. Neither is a queue
    // delay below zero.
    const detail::tick_t delay = start > ready ? start - ready : 0;
    task_info info;
    const bool hooks = before_task_ || after_task_ || on_long_task_;
    if (hooks)
      info = task_info{trace.where, clock_->to_steady(trace.enqueued), std::chrono::nanoseconds(clock_->to_ns(delay)), {}};
    if (before_task_) {
      run_task_hook(before_task_, info);
      start = detail::ticks_now();
    }
    const std::size_t depth_before = on_long_task_ ? queue_.size_approx() : 0;
    run_user(t);
    const detail::tick_t end = detail::ticks_now();
    const detail::tick_t ran = end - start;
    if (metrics_) {  // in ticks; stats() scales them
      metrics_->delay.record(delay);
      metrics_->run.record(ran);
    }
    if (hooks) info.run_time = std::chrono::nanoseconds(clock_->to_ns(ran));
    if (after_task_) run_task_hook(after_task_, info);
    if (long_task_ticks_ != 0 && ran >= long_task_ticks_) {
      const std::size_t depth_after = queue_.size_approx();
      if (metrics_) {
        note_depth(depth_after);
        add(metrics_->long_tasks, 1);
      }
      if (on_long_task_) {
        try {
          on_long_task_(long_task_report{info, depth_before, depth_after});
        } catch (...) {
          report_current_exception();
        }
      }
    } else if (metrics_ && ran >= depth_sample_ticks_) {
      note_depth(queue_.size_approx());
    }
    if (chain_ != no_chain) chain_ = hooks ? detail::ticks_now() : end;  // the hooks' time is not the next task's
  }

  void run_task_hook(const std::function<void(const task_info&)>& hook, const task_info& info) {
    try {
      hook(info);
    } catch (...) {
      report_current_exception();
    }
  }

  // Raises the depth high-water mark. Owner only.
  void note_depth(std::size_t depth) noexcept {
    detail::owner_raise(metrics_->depth_max, depth);
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
  static void add(std::atomic<std::uint64_t>& c, std::uint64_t v) noexcept { detail::owner_add(c, v); }

  const bool own_thread_;
  const std::string name_;
  const char* const name_id_;  // interned copy for deadlock edges (nullptr: unnamed)
  const std::function<void()> on_start_;
  const std::function<void()> on_stop_;
  const std::function<void(task_view)> around_task_;
  const std::function<void(std::exception_ptr)> on_error_;
  const std::unique_ptr<detail::wake_fd> fd_;
  // Metrics and tracing, fixed at construction.
  struct metrics_state {
    // Written by the owner (run_traced, note_depth), read by stats().
    detail::latency_histogram delay;  // accepted -> started, ticks
    detail::latency_histogram run;    // started -> returned, ticks
    std::atomic<std::size_t> depth_max{0};
    std::atomic<std::uint64_t> long_tasks{0};
  };
  // A task this long (or longer) makes the owner sample the queue depth after it: a backlog
  // worth recording builds up while the owner is busy, and one cross-core read per 10 us of
  // work costs nothing measurable.
  static constexpr std::int64_t depth_sample_ns = 10'000;
  const bool tracing_;                             // tasks carry a task_trace
  const detail::tick_calibration* const clock_;    // set when tracing_
  const std::unique_ptr<metrics_state> metrics_;   // set with executor_options::metrics
  const std::function<void(const task_info&)> before_task_;
  const std::function<void(const task_info&)> after_task_;
  const std::function<void(const long_task_report&)> on_long_task_;
  const std::function<void()> on_park_;
  const std::function<void()> on_unpark_;
  const detail::tick_t long_task_ticks_;     // 0: no threshold
  const detail::tick_t depth_sample_ticks_;
  static constexpr detail::tick_t no_chain = -1;  // chain_ outside a batch

  detail::thread_record* owner_record_ = nullptr;  // set once by the constructor
  std::uint64_t owner_serial_ = 0;                 // set once by the constructor

  mpsc_queue<detail::task> queue_;

  // Set by producers that find it clear (then they signal fd_), cleared by the owner.
  alignas(detail::cache_line) std::atomic<bool> wake_pending_{false};
  // Raised by the owner before it parks in idle_until(); lowered by the producer that wakes
  // it (or by the owner when it wakes up).
  std::atomic<bool> asleep_{false};
  // The owner parks here when idle. Symmetric fences: producers notify it only after they
  // flipped asleep_ (a seq_cst exchange, [EA2]), so the full fence costs them nothing extra,
  // while the owner - which parks whenever it runs dry - is spared a membarrier per park.
  detail::parker owner_wait_{detail::fences::symmetric};
  // When the producer that lowered asleep_ did so (steady ticks; 0: none since the owner
  // parked). Written by that producer, read by the owner to judge how long it was idle.
  std::atomic<clock::rep> woken_at_{0};
  // Callers blocked in call() right now (a spin-or-park hint): written by each caller.
  alignas(detail::cache_line) std::atomic<std::uint32_t> callers_{0};
  // Callers in call() whose answer woke them and who have not run since (pace_callers): raised
  // by the owner's wake-up, lowered by the caller once it runs (call_slot::count_wakes_in).
  std::atomic<std::uint32_t> woken_callers_{0};
  mutable std::atomic<std::uint64_t> owner_yields_{0};  // pace_callers' yields: owner writes, stats() reads
  // Destructions handed over by defer_destroy(): pushed by any thread, emptied by the owner;
  // &deferred_closed_ once the owner finished.
  std::atomic<detail::deferred_destroy*> deferred_{nullptr};
  detail::deferred_destroy deferred_closed_{};  // a marker, never run
  detail::deferred_destroy* deferred_taken_ = nullptr;  // owner only: taken, destroyed at the next settle
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
  std::uint16_t skip_spins_ = 0;      // idle periods left that park at once (after_idle)
  std::uint16_t spin_skip_step_ = 0;  // the last count set; 0: the last spin caught its work
  bool in_run_ = false;   // inside run()/try_run() (or the own thread's loop)
  bool in_task_ = false;  // inside a task (inline calls then skip around_task)
  bool work_came_quickly_ = false;  // the last idle period ended within quick_checks (idle_until)
  // Inside run_ready(), the end of the last traced task of the batch (0: none yet); no_chain
  // outside a batch. Here, not beside owner_serial_: it is written per batch, and every
  // caller's running_in_this_thread() reads owner_serial_.
  detail::tick_t chain_ = no_chain;

  // Statistics: written by the owner, read by stats().
  std::atomic<std::uint64_t> ran_{0};
  // Owner only. An owner that keeps catching up with a streaming poster finds the queue empty
  // after nearly every task and, looking at once, pulls the line the poster is writing: the
  // two hand a line back and forth per task. So it follows a queue consumer's stream policy
  // (park_until_streaming in parker.hpp): after stream_quick_waits idle periods in a row that
  // ended at its first look, it pauses before looking, until an idle period follows a single
  // task (a ping-pong) or the pause was not enough.
  detail::stream_watch stream_;
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
//   ex.post([] { ... });                                // push_result: ok, or closed
//   std::future<int> f = ex.submit([] { return 42; }); // result or exception, later
//   int v = ex.call([] { return 42; });                 // blocks; inline on the owner
//
//   tether::executor main_ex{tether::adopt_current_thread, {.wake_fd = true}};
//   loop.watch(main_ex.wake_fd(), [&] { main_ex.try_run(); });  // or main_ex.run()
//
// Who may call what: handing work over (post, dispatch, submit, call, post_at / post_after,
// post_and_reply), stop, the join family, stats, is_* and wake_fd - any thread. The run
// family (run, try_run, run_for, run_until; run_one, try_run_one, run_one_for,
// run_one_until) - the owner of an adopting executor, outside its own tasks.
//
// Guarantees: tasks from one posting thread run in the order posted, and so do tasks posted
// from different threads when one post happens-before the other (inline dispatch() and
// timed tasks aside); no lock is held around user code, hooks or task destructors; nothing
// accepted is dropped silently - a refused post returns closed with the callable not moved
// from, submit() / call() throw executor_stopped, stop(cancel) reports each destroyed task
// (futures, calls, replies, stats), delayed tasks report through their timer_handle; a
// call() that would close a wait cycle throws deadlock_error; exceptions escaping post()ed
// tasks and hooks go to on_error (unset: the process terminates).
//
// Memory ordering: every hand-over goes through the queue (a release publish, the owner's
// acquire), so whatever a poster did before post() happens-before the task; a task
// happens-before what its future, call() or reply observes. Details beside the code
// (detail/executor/executor_core.hpp, detail/wait/call_slot.hpp).



namespace tether {

namespace detail {
struct source_access;  // a poller's view of the executor's queue and timers (detail/select/source_access.hpp)
struct coro_access;    // coroutines resume through the reply gate (detail/coro/chain.hpp)
}  // namespace detail

template <class T>
class confined;

// Handle to a delayed task; copies share one task. The default-constructed handle refers to
// nothing (status() == cancelled).
class timer_handle {
 public:
  timer_handle() = default;

  // true: the task will never run (it was pending); its callable is destroyed on the owner
  // thread by its deadline or sooner. false: it already ran, is running, was cancelled,
  // stopped or failed. Thread-safe.
  bool cancel() noexcept { return state_ && state_->try_transition(detail::timer_phase::cancelled); }

  // stopped: the executor stopped before the task's deadline (or refused it); failed: the
  // owner could not register it (out of memory). Thread-safe.
  timer_status status() const noexcept {
    if (!state_) return timer_status::cancelled;
    return static_cast<timer_status>(state_->phase.load(std::memory_order_acquire));  // [ET2] acquire: pairs with [ET1]
  }

 private:
  friend class executor;
  explicit timer_handle(std::shared_ptr<detail::timer_state> s) noexcept : state_(std::move(s)) {}
  std::shared_ptr<detail::timer_state> state_;
};

// What a post_and_reply() reply receives: the task's value, or the exception that ended it
// (its own, or executor_stopped when stop(cancel) destroyed it unrun).
template <class R>
class task_result {
 public:
  explicit task_result(std::exception_ptr e) noexcept : error_(std::move(e)) {}
  template <class... Args>
  explicit task_result(std::in_place_t, Args&&... args) : value_(std::in_place, std::forward<Args>(args)...) {}

  bool has_value() const noexcept { return !error_; }
  explicit operator bool() const noexcept { return has_value(); }
  // The value; rethrows the task's exception when there is none.
  R& value() & {
    if (error_) std::rethrow_exception(error_);
    return *value_;
  }
  R&& value() && {
    if (error_) std::rethrow_exception(error_);
    return std::move(*value_);
  }
  const std::exception_ptr& error() const noexcept { return error_; }

 private:
  std::optional<R> value_;
  std::exception_ptr error_;
};

template <>
class task_result<void> {
 public:
  task_result() noexcept = default;
  explicit task_result(std::exception_ptr e) noexcept : error_(std::move(e)) {}
  bool has_value() const noexcept { return !error_; }
  explicit operator bool() const noexcept { return has_value(); }
  void value() const {
    if (error_) std::rethrow_exception(error_);
  }
  const std::exception_ptr& error() const noexcept { return error_; }

 private:
  std::exception_ptr error_;
};

namespace detail {
template <class R>
using call_value_t = std::conditional_t<std::is_void_v<R>, std::monostate,
                                        std::conditional_t<std::is_reference_v<R>,
                                                           std::reference_wrapper<std::remove_reference_t<R>>, R>>;
}  // namespace detail

// What call_for / call_until return: the callable's value (void: std::monostate; a
// reference: std::reference_wrapper), or timeout / cancelled / closed.
template <class R>
using call_result = pop_result<detail::call_value_t<R>>;

class TETHER_CAPABILITY("executor") executor : private detail::executor_core {
 public:
  // Starts the owner thread (named after options.name) and runs on_start there.
  executor() : executor(executor_options{}) {}
  explicit executor(executor_options options)
      : detail::executor_core(std::move(options), false), gate_(std::make_shared<reply_gate>(this)) {
    owner_record_ = detail::acquire_record();
    owner_serial_ = owner_record_->serial.load(std::memory_order_seq_cst);
    try {
      thread_ = std::thread([this] { thread_main(); });
    } catch (...) {
      detail::release_record(owner_record_);
      throw;
    }
  }

  // Adopts the calling thread as the owner; runs on_start here. Drive it with the run family
  // (e.g. try_run() when wake_fd() becomes readable).
  explicit executor(adopt_current_thread_t, executor_options options = {})
      : detail::executor_core(std::move(options), true), gate_(std::make_shared<reply_gate>(this)) {
    owner_record_ = &detail::this_thread_record();
    owner_serial_ = detail::tls_serial;
    run_hook(on_start_);
  }

  // stop(drain), then: own thread - joins it; adopting executor on its owner thread - runs
  // the remaining tasks here; elsewhere - waits until the owner has run them (in its run
  // family). Replies still on their way here are refused from now on (their senders'
  // on_error learns). Destroying an executor from one of its own tasks terminates the process.
  ~executor() {
    stop(stop_mode::drain);
    if (running_in_this_thread() && (own_thread_ || in_run_)) {
      std::fprintf(stderr, "tether: executor '%s' destroyed from one of its own tasks\n", name_or_unnamed());
      std::terminate();
    }
    gate_->close();
    join();
    gate_->bury_orphans();  // the owner runs nothing of ours any more
  }

  executor(const executor&) = delete;
  executor& operator=(const executor&) = delete;

  // ---- handing work over (any thread) ------------------------------------------------------
  //
  // Each takes a last, defaulted `loc` (tether::source_location::current(): the caller's
  // line; std::source_location where the standard library has it).
  // With tracing on (executor_options::metrics, a task hook or long_task_threshold) the task
  // carries it, with the time it was accepted, to the hooks and long-task reports; otherwise
  // it is ignored and the task is queued exactly as without it.

  // Queues f to run on the owner: ok; closed once stopped (f is then not moved from). Never
  // blocks. Thread-safe.
  template <class F>
  push_result post(F&& f, const source_location& loc = source_location::current()) {
    if (!tracing_) [[likely]] {
      if (!queue_.emplace(std::forward<F>(f))) return status::closed;
    } else if (!emplace_traced<std::decay_t<F>>(loc, std::forward<F>(f))) {
      return status::closed;
    }
    after_push();
    return status::ok;
  }

  // On the owner thread: runs f now (exceptions propagate to the caller), ok. Elsewhere:
  // post(f). closed once stopped (f not moved from). Thread-safe.
  // Inline runs are not traced (they never wait in the queue).
  template <class F>
  push_result dispatch(F&& f, const source_location& loc = source_location::current()) {
    if (!running_in_this_thread()) return post(std::forward<F>(f), loc);
    if (is_stopped()) return status::closed;
    run_inline<void>([&] { std::invoke(std::forward<F>(f)); });
    return status::ok;
  }

  // Queues f; the future receives its result or exception, or executor_stopped if stop(cancel)
  // destroys it unrun. Throws executor_stopped once stopped. Never blocks. Thread-safe.
  template <class F>
  auto submit(F&& f, const source_location& loc = source_location::current())
      -> std::future<std::invoke_result_t<std::decay_t<F>>> {
    using R = std::invoke_result_t<std::decay_t<F>>;
    using job = submit_job<std::decay_t<F>, R>;
    std::promise<R> promise;
    std::future<R> future = promise.get_future();
    const push_result ok = !tracing_ ? queue_.emplace(std::in_place_type<job>, core(), std::forward<F>(f), std::move(promise))
                              : emplace_traced<job>(loc, core(), std::forward<F>(f), std::move(promise));
    if (!ok) throw executor_stopped(refusal("submit()"));
    after_push();
    return future;
  }

  // Runs f on the owner and returns its result (rethrows its exception). On the owner thread
  // f runs inline. Elsewhere the caller blocks: f is used in place (not copied), the result
  // comes back through a slot on the caller's stack. Throws deadlock_error instead of
  // blocking when the wait would close a cycle; executor_stopped once stopped or if
  // stop(cancel) destroys the call unrun. Inline calls are not traced. Thread-safe.
  template <class F>
  std::invoke_result_t<F&&> call(F&& f, const source_location& loc = source_location::current()) {
    using R = std::invoke_result_t<F&&>;
    if (running_in_this_thread()) {
      if (is_stopped()) throw executor_stopped(refusal("call()"));
      return run_inline<R>(std::forward<F>(f));
    }
    detail::thread_record& me = detail::this_thread_record();
    detail::blocking_call edge(me, owner_record_, owner_serial_, name_id_);  // before the walk
    check_cycle(me);
    detail::call_slot<R> slot;
    slot.count_wakes_in(woken_callers_);  // see executor_core::pace_callers
    struct in_flight {
      std::atomic<std::uint32_t>& n;
      const bool alone;
      explicit in_flight(std::atomic<std::uint32_t>& c)
          : n(c), alone(c.fetch_add(1, std::memory_order_relaxed) == 0) {}  // relaxed: a hint, publishes nothing
      ~in_flight() { n.fetch_sub(1, std::memory_order_relaxed); }           // relaxed: as above
    } caller{callers_};
    const push_result ok = !tracing_ ? queue_.emplace(std::in_place_type<call_job<F, R>>, core(), std::addressof(f), &slot)
                              : emplace_traced<call_job<F, R>>(loc, core(), std::addressof(f), &slot);
    if (!ok) throw executor_stopped(refusal("call()"));
    const bool owner_was_asleep = after_push();
    // Spin first only for a lone caller with nothing queued ahead and an owner that was
    // awake: otherwise the answer is at least a task or a wake-up away, and spinning callers
    // would take the cores that the owner and the other callers (woken, waiting for a core)
    // need - and serve themselves unfairly.
    slot.wait(!owner_was_asleep && caller.alone && queue_.size_approx() <= 1);
    return slot.take();
  }

  // As call(f), abandoned when `token` is stopped before the owner starts f: the caller
  // returns at once with operation_cancelled and f never runs. Once f has started the caller
  // waits for it (f is used in place) and gets its result. A stop already requested throws
  // without queueing anything. Costs one allocation more than call(f) when the token can be
  // stopped (the outcome must outlive an abandoning caller). Thread-safe.
  template <class F>
  std::invoke_result_t<F&&> call(F&& f, std::stop_token token, const source_location& loc = source_location::current()) {
    using R = std::invoke_result_t<F&&>;
    if (!token.stop_possible()) return call(std::forward<F>(f), loc);
    call_result<R> r = call_abandonable<R, F>(f, detail::no_deadline, &token, loc);
    switch (r.status()) {
      case status::cancelled:
        throw operation_cancelled(std::string("tether: call() on executor '") + name_or_unnamed() +
                                  "' was cancelled by its stop token before it ran; it will not run");
      case status::closed:
        throw executor_stopped(refusal("call()"));
      default:
        break;
    }
    return unwrap_call_value<R>(std::move(r));
  }

  // As call(f), giving up at the deadline (or on a stop request): the value, or timeout /
  // cancelled when f had not started (it never runs), or closed when the executor is stopped
  // or stop(cancel) destroys the call unrun. Once f has started the caller waits for it.
  // f's exception is rethrown. void calls give std::monostate, reference calls a
  // std::reference_wrapper. A huge timeout waits forever. Thread-safe.
  template <class Rep, class Period, class F>
  call_result<std::invoke_result_t<F&&>> call_for(const std::chrono::duration<Rep, Period>& timeout, F&& f,
                                                  std::stop_token token = {},
                                                  const source_location& loc = source_location::current()) {
    return call_abandonable<std::invoke_result_t<F&&>, F>(f, detail::deadline_after(timeout), &token, loc);
  }
  template <class Clock, class Duration, class F>
  call_result<std::invoke_result_t<F&&>> call_until(const std::chrono::time_point<Clock, Duration>& deadline, F&& f,
                                                    std::stop_token token = {},
                                                    const source_location& loc = source_location::current()) {
    return call_abandonable<std::invoke_result_t<F&&>, F>(f, detail::to_steady(deadline), &token, loc);
  }

  // Runs task here, then reply(task_result<R>) on reply_to - the continuation comes back to
  // the caller's executor and learns every outcome: the value, the task's exception, or
  // executor_stopped when stop(cancel) destroys the task unrun. Returns closed when this
  // executor or reply_to is stopped (task and reply not moved from). reply_to must be alive
  // at the call; it may be destroyed afterwards (a shared gate is checked, not a dangling
  // reference): a reply that reply_to refuses - stopped or destroyed - is reported to this
  // executor's on_error as executor_stopped. An exception from reply goes to reply_to's
  // on_error; a reply destroyed unrun by reply_to's stop(cancel) counts in its
  // stats().tasks_cancelled. Never blocks. Thread-safe.
  // The reply carries `loc` too (to reply_to's hooks, if it traces).
  template <class F, class G>
  push_result post_and_reply(F&& task, executor& reply_to, G&& reply,
                             const source_location& loc = source_location::current()) {
    using R = std::decay_t<std::invoke_result_t<std::decay_t<F>>>;
    static_assert(std::is_invocable_v<std::decay_t<G>&&, task_result<R>&&>,
                  "tether: post_and_reply(task, reply_to, reply): reply must accept a tether::task_result<R>");
    using job = reply_job<std::decay_t<F>, std::decay_t<G>, R>;
    if (reply_to.is_stopped()) return status::closed;
    const push_result ok = !tracing_ ? queue_.emplace(std::in_place_type<job>, this, reply_to.gate_, std::forward<F>(task),
                                               std::forward<G>(reply), loc)
                              : emplace_traced<job>(loc, this, reply_to.gate_, std::forward<F>(task),
                                                    std::forward<G>(reply), loc);
    if (!ok) return status::closed;
    after_push();
    return status::ok;
  }

  // Runs f on the owner at (or soon after) `when` / after `delay` (a huge delay saturates:
  // never, until cancelled or stopped). The owner parks until the earliest deadline.
  // Delayed tasks with equal deadlines run in posting order. If the executor is stopped the
  // handle reports timer_status::stopped at once. Thread-safe.
  // A delayed task's queue delay counts from its deadline.
  template <class Clock, class Duration, class F>
  timer_handle post_at(const std::chrono::time_point<Clock, Duration>& when, F&& f,
                       const source_location& loc = source_location::current()) {
    // The state first and the callable last: a std::bad_alloc leaves f with the caller.
    auto state = std::make_shared<detail::timer_state>(detail::to_steady(when));
    using plain = timer_registration<std::decay_t<F>>;
    using traced = timer_registration<detail::traced_job<std::decay_t<F>>>;
    const push_result ok =
        !tracing_ ? queue_.emplace(detail::internal_task, std::in_place_type<plain>, core(), state, std::forward<F>(f))
                  : queue_.emplace(detail::internal_task, std::in_place_type<traced>, core(), state,
                                   detail::task_trace{detail::ticks_now(), loc}, std::forward<F>(f));
    if (ok)
      after_push();
    else
      state->try_transition(detail::timer_phase::stopped);  // refused: f untouched
    return timer_handle(std::move(state));
  }
  template <class Rep, class Period, class F>
  timer_handle post_after(const std::chrono::duration<Rep, Period>& delay, F&& f,
                          const source_location& loc = source_location::current()) {
    return post_at(detail::deadline_after(delay), std::forward<F>(f), loc);
  }

  // ---- the run family: driving an adopting executor (its owner thread) ------------------------
  //
  // Each returns how many tasks ran (delayed ones included). run* blocks until the executor
  // has finished (stopped and drained; on_stop has run); the _for / _until forms return at
  // the deadline too (checked between batches, so a busy executor still returns; a huge
  // timeout waits forever); try_* never blocks: it runs what is ready now (and what is posted
  // meanwhile) and due delayed tasks. The *_one forms return after one task. Call try_run()
  // when wake_fd() is readable. wrong_thread off the owner thread; std::logic_error for an
  // executor with its own thread, or from inside one of its tasks.

  std::size_t run() { return drive(SIZE_MAX, detail::no_deadline, true, nullptr); }
  std::size_t try_run() { return drive(SIZE_MAX, detail::no_deadline, false, nullptr); }
  template <class Rep, class Period>
  std::size_t run_for(const std::chrono::duration<Rep, Period>& timeout) {
    return drive(SIZE_MAX, detail::deadline_after(timeout), true, nullptr);
  }
  template <class Clock, class Duration>
  std::size_t run_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return drive(SIZE_MAX, detail::to_steady(deadline), true, nullptr);
  }
  // As run(), returning also when `token` is stopped.
  std::size_t run_until(std::stop_token token) { return drive(SIZE_MAX, detail::no_deadline, true, &token); }

  std::size_t run_one() { return drive(1, detail::no_deadline, true, nullptr); }
  std::size_t try_run_one() { return drive(1, detail::no_deadline, false, nullptr); }
  template <class Rep, class Period>
  std::size_t run_one_for(const std::chrono::duration<Rep, Period>& timeout) {
    return drive(1, detail::deadline_after(timeout), true, nullptr);
  }
  template <class Clock, class Duration>
  std::size_t run_one_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return drive(1, detail::to_steady(deadline), true, nullptr);
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  // Refuses new work from now on. stop(drain) (the default, and what the destructor does)
  // runs every task already accepted, runs delayed tasks that are due by then and stops
  // (status stopped) the others, then runs on_stop; stop(cancel) destroys everything pending
  // instead of running it, each reporting (see the file comment). A cancel after a drain
  // upgrades it. Returns true if this call stopped the executor. Never blocks. Thread-safe.
  bool stop(stop_mode mode = stop_mode::drain) noexcept {
    if (mode == stop_mode::cancel) cancel_.store(true, std::memory_order_seq_cst);  // before close: seen with it
    const bool first = queue_.close();
    wake_owner();
    if (first && fd_) arm_wake_fd();  // a foreign loop must call try_run() once more to finish
    if (mode == stop_mode::cancel) cancel_requested_.request_stop();  // running work may end early
    return first;
  }

  // A token that stop(cancel) stops: a long task can watch it (stop_requested(), or a
  // std::stop_callback handing it to its runtime) and end early. Its callbacks run on the
  // thread that calls stop(cancel); keep them short. Thread-safe.
  std::stop_token get_stop_token() const noexcept { return cancel_requested_.get_token(); }

  // The join family waits until the executor has finished (every accepted task ran or was
  // cancelled, and on_stop ran) and joins the own thread; stop() it first (or have a task do
  // it). join() waits for good; try_join() never blocks (beyond joining a thread that has
  // finished); join_for / join_until give up at the deadline (a huge timeout waits forever).
  // The bool ones return true once finished. On the owner thread of an adopting executor,
  // outside its tasks, they run the executor here (try_join: what is ready); from inside one
  // of its tasks they throw deadlock_error. Thread-safe.
  void join() { (void)join_until_steady(detail::no_deadline, true); }
  bool try_join() { return join_until_steady(detail::no_deadline, false); }
  template <class Rep, class Period>
  bool join_for(const std::chrono::duration<Rep, Period>& timeout) {
    return join_until_steady(detail::deadline_after(timeout), true);
  }
  template <class Clock, class Duration>
  bool join_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return join_until_steady(detail::to_steady(deadline), true);
  }
  // As join(), giving up when `token` is stopped: true once finished, false if cancelled.
  bool join(std::stop_token token) { return join_until_steady(detail::no_deadline, true, &token); }

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
  // task falls due (Linux; elsewhere call try_run() by the next deadline yourself), and once
  // after stop() so that try_run() can finish the stop; try_run() quiets it. Throws
  // std::logic_error unless constructed with executor_options::wake_fd. Thread-safe.
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
    s.callers_blocked = callers_.load(std::memory_order_relaxed);      // relaxed: statistic
    s.callers_woken = woken_callers_.load(std::memory_order_relaxed);  // relaxed: statistic
    s.owner_yields = owner_yields_.load(std::memory_order_relaxed);    // relaxed: statistic
    if (metrics_) {
      s.metrics = true;
      s.queue_delay = metrics_->delay.summary(clock_->ns_per_tick);
      s.task_time = metrics_->run.summary(clock_->ns_per_tick);
      s.queue_depth_max = metrics_->depth_max.load(std::memory_order_relaxed);  // relaxed: statistic
      s.long_tasks = metrics_->long_tasks.load(std::memory_order_relaxed);                                // relaxed: statistic
    }
    return s;
  }

 private:
  friend struct detail::source_access;  // tether::poller watches adopting executors (select.hpp)
  friend struct detail::coro_access;    // a coroutine's resumption goes through gate_ (coroutine.hpp)
  template <class T>
  friend class confined;  // hands its T's destruction over with defer_destroy()

  // The jobs hold the core (a private base: the conversion must happen here).
  detail::executor_core* core() noexcept { return this; }

  // Lets a reply reach an executor that may be destroyed meanwhile ("rundown protection"):
  // a poster enters (state + 2) and posts only if the executor is not closing; close() marks
  // it (bit 0) and waits until the posters inside have left. Shared by the executor and every
  // reply on its way to it.
  struct reply_gate {
    explicit reply_gate(executor* e) noexcept : ex(e) {}
    template <class F>
    push_result post(F&& f, const source_location& loc) {
      struct inside {
        reply_gate& g;
        ~inside() { g.leave(); }
      };
      const std::uint32_t before = state.fetch_add(2, std::memory_order_seq_cst);
      inside guard{*this};
      if (before & 1) return status::closed;
      return ex->post(std::forward<F>(f), loc);
    }
    // defer_destroy() through the gate.
    enum class deferral : std::uint8_t {
      deferred,    // the owner will run d
      owner_done,  // the executor has finished: its owner runs nothing of it any more
      closing,     // its destructor has begun: see adopt_orphan()
    };
    deferral defer(detail::deferred_destroy* d) noexcept {
      const std::uint32_t before = state.fetch_add(2, std::memory_order_seq_cst);
      const deferral r = (before & 1) != 0      ? deferral::closing
                         : ex->defer_destroy(d) ? deferral::deferred
                                                : deferral::owner_done;
      leave();
      return r;
    }
    // The last poster out of a closing gate wakes close() through a static parker, not the
    // gate: once the count drops, close() may return and the gate be freed (a poster need
    // not own a reference to it; coroutine resumptions do not).
    void leave() noexcept {
      if (state.fetch_sub(2, std::memory_order_seq_cst) == 3) exit_parker(this).notify_all();
    }
    void close() noexcept {
      state.fetch_or(1, std::memory_order_seq_cst);
      detail::park_until(exit_parker(this), [this] { return state.load(std::memory_order_seq_cst) == 1; },
                         detail::no_deadline);  // posters inside: a post() each, which never blocks
    }
    // Coroutine chains whose resumption was refused while this executor's owner may still be
    // running (its destructor closed the gate, then joins): they are destroyed once the owner
    // has stopped (bury_orphans, after the join), never while it might be inside one of their
    // frames. adopt_orphan: false once buried (the caller destroys d itself).
    bool adopt_orphan(detail::deferred_destroy* d) noexcept {
      detail::deferred_destroy* head = orphans.load(std::memory_order_seq_cst);
      do {
        if (head == &buried) return false;
        d->next = head;
      } while (!orphans.compare_exchange_weak(head, d, std::memory_order_seq_cst));
      return true;
    }
    void bury_orphans() noexcept {
      for (detail::deferred_destroy* d = orphans.exchange(&buried, std::memory_order_seq_cst); d != nullptr;) {
        detail::deferred_destroy* next = d->next;
        d->destroy(d);
        d = next;
      }
    }
    static detail::parker& exit_parker(const reply_gate* g) noexcept { return detail::exit_parker_for(g); }
    executor* const ex;
    std::atomic<std::uint32_t> state{0};  // bit 0: closing; above it: posters inside, times 2
    std::atomic<detail::deferred_destroy*> orphans{nullptr};  // &buried once the owner stopped
    detail::deferred_destroy buried{};                         // a marker, never run
  };

  // post_and_reply(): runs the task, then posts the reply with its outcome through the reply
  // executor's gate; destroyed unrun (stop(cancel)) it still posts the reply, with
  // executor_stopped. A refused reply is reported to this executor's on_error.
  template <class F, class G, class R>
  struct reply_job {
    template <class F2, class G2>
    reply_job(executor* from, std::shared_ptr<reply_gate> to, F2&& f, G2&& g, const source_location& l)
        : fn(std::forward<F2>(f)), rep(std::forward<G2>(g)), gate(std::move(to)), ex(from), loc(l) {}
    reply_job(reply_job&& o) noexcept(std::is_nothrow_move_constructible_v<F> && std::is_nothrow_move_constructible_v<G>)
        : fn(std::move(o.fn)), rep(std::move(o.rep)), gate(std::move(o.gate)), ex(o.ex), loc(o.loc),
          pending(std::exchange(o.pending, false)) {}
    void operator()() {
      pending = false;
      deliver(outcome());
    }
    ~reply_job() {
      if (!pending) return;
      try {
        deliver(task_result<R>(std::make_exception_ptr(executor_stopped(ex->dropped("post_and_reply()")))));
      } catch (...) {
        ex->report_current_exception();  // on the owner, which destroys cancelled tasks
      }
    }
    task_result<R> outcome() {
      try {
        if constexpr (std::is_void_v<R>) {
          std::invoke(std::move(fn));
          return task_result<R>();
        } else {
          return task_result<R>(std::in_place, std::invoke(std::move(fn)));
        }
      } catch (...) {
        return task_result<R>(std::current_exception());
      }
    }
    void deliver(task_result<R>&& r) {
      if (!gate->post([g = std::move(rep), r = std::move(r)]() mutable { std::invoke(std::move(g), std::move(r)); }, loc))
        throw executor_stopped(std::string("tether: post_and_reply() on executor '") + ex->name_or_unnamed() +
                               "': the reply executor was stopped or destroyed before the reply could be posted");
    }
    F fn;
    G rep;
    std::shared_ptr<reply_gate> gate;
    executor* ex;
    source_location loc;  // the caller of post_and_reply(), for the reply's trace
    bool pending = true;
  };

  // The one loop behind call(f, token), call_for and call_until: the outcome lives in a
  // shared abandonable_call, so a caller that gives up may return before the owner reaches
  // the job (which then runs nothing).
  template <class R, class F>
  call_result<R> call_abandonable(std::remove_reference_t<F>& f, detail::steady_time deadline, const std::stop_token* token,
                                  const source_location& loc) {
    if (token->stop_requested()) return status::cancelled;
    if (running_in_this_thread()) {
      if (is_stopped()) return status::closed;
      return wrap_call_value<R>([&]() -> R { return run_inline<R>(std::forward<F>(f)); });
    }
    if (deadline != detail::no_deadline && clock::now() >= deadline) return status::timeout;
    detail::thread_record& me = detail::this_thread_record();
    detail::blocking_call edge(me, owner_record_, owner_serial_, name_id_);
    check_cycle(me);
    auto* state = new detail::abandonable_call<R>();
    using job = abandonable_call_job<F, R>;
    push_result ok = status::closed;
    try {
      ok = !tracing_ ? queue_.emplace(std::in_place_type<job>, core(), std::addressof(f), state)
                     : emplace_traced<job>(loc, core(), std::addressof(f), state);
    } catch (...) {
      delete state;  // not queued: nobody else holds it
      throw;
    }
    if (!ok) {
      delete state;
      return status::closed;
    }
    after_push();
    struct owner_of {
      detail::abandonable_call<R>* s;
      ~owner_of() { s->unref(); }
    } release{state};
    using phase = typename detail::abandonable_call<R>::phase;
    phase p;
    {
      std::optional<std::stop_callback<detail::abandon_on_stop<R>>> on_stop;
      if (token->stop_possible()) on_stop.emplace(*token, detail::abandon_on_stop<R>{state});
      p = state->wait_until(deadline);
      if (p != phase::done && p != phase::cancelled) {  // the deadline
        if (state->abandon()) return status::timeout;
        p = state->wait_until(detail::no_deadline);  // started meanwhile: wait for it
      }
    }
    if (p == phase::cancelled) return status::cancelled;
    if (state->refused()) return status::closed;
    return wrap_call_value<R>([&]() -> R { return state->take(); });
  }

  // R into call_result<R> and back (void: std::monostate; references: reference_wrapper).
  template <class R, class G>
  static call_result<R> wrap_call_value(G&& get) {
    if constexpr (std::is_void_v<R>) {
      get();
      return call_result<R>(std::in_place);
    } else if constexpr (std::is_reference_v<R>) {
      return call_result<R>(std::in_place, std::ref(get()));
    } else {
      return call_result<R>(std::in_place, get());
    }
  }
  template <class R>
  static R unwrap_call_value(call_result<R>&& r) {
    if constexpr (std::is_void_v<R>) {
      return;
    } else if constexpr (std::is_reference_v<R>) {
      return static_cast<R>((*r).get());
    } else {
      return std::move(*r);
    }
  }

  // The join family's one deadline loop; block false: try_join().
  bool join_until_steady(detail::steady_time deadline, bool block, const std::stop_token* token = nullptr) {
    if (running_in_this_thread()) {
      if (own_thread_ || in_run_)
        throw deadlock_error(std::string("tether: join() on executor '") + name_or_unnamed() +
                                 "' from its own owner thread inside one of its tasks would wait for itself",
                             {name_or_unnamed()});
      if (!finished_.load(std::memory_order_seq_cst)) drive(SIZE_MAX, deadline, block, token);
      return finished_.load(std::memory_order_seq_cst);
    }
    if (!block) deadline = clock::now();  // park_until checks once, then times out
    if (token == nullptr || !token->stop_possible()) return join_wait(deadline, [] { return false; });
    detail::stop_wake stop(token);  // only here: g++ 12 sees an unset optional on the other path
    stop.arm(state_wait_);
    return join_wait(deadline, [&] { return stop.requested(); });
  }

  // join_until_steady off the owner thread: waits until finished (and joins the own thread),
  // or the deadline, or stopped() holds.
  template <class Stopped>
  bool join_wait(detail::steady_time deadline, const Stopped& stopped) {
    const auto finished = [&] { return finished_.load(std::memory_order_seq_cst) || stopped(); };
    const auto done = [this] { return finished_.load(std::memory_order_seq_cst); };
    if (!own_thread_) return detail::park_until(state_wait_, finished, deadline) && done();
    if (!detail::park_until(state_wait_, finished, deadline) || !done()) return false;
    bool expected = false;
    if (join_claimed_.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {  // acq_rel: one joiner claims the thread
      if (thread_.joinable()) thread_.join();  // finished: the thread is on its way out
      joined_.store(true, std::memory_order_seq_cst);
      state_wait_.notify_all();
      return true;
    }
    return detail::park_until(state_wait_, [&] { return joined_.load(std::memory_order_seq_cst) || stopped(); },
                              deadline) &&
           joined_.load(std::memory_order_seq_cst);
  }

  std::shared_ptr<reply_gate> gate_;  // set once by the constructor
  std::stop_source cancel_requested_;  // stop(cancel) requests it: get_stop_token()
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
// any, propagates). The destructor does not block and cannot fail: on the owner thread it
// destroys T at once; elsewhere it hands T to the owner, which destroys it after every task
// posted before. The hand-over needs no allocation when the queue cannot take it (out of
// memory, or the executor is stopped but still draining): a node kept beside T since
// construction goes on an intrusive list the owner empties before it finishes. Once the
// executor has finished, nobody may destroy T on the right thread, so T is leaked on purpose
// (as Chromium's SequenceBound does), never destroyed on the wrong thread: a line on stderr
// names the type and the executor, and the object stays reachable for leak checkers. So
// destroy confined objects before their executor finishes.
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
    node_ = ex_.call([&] { return std::make_unique<node>(std::forward<Args>(args)...); });
  }

  ~confined() {
    if (!node_) return;
    node* n = node_.release();
    if (ex_.running_in_this_thread()) {
      node::destroy_node(n);
      return;
    }
    destroy_job job{n};
    try {
      (void)ex_.post(std::move(job));  // accepted: job is moved from (its node null)
    } catch (...) {  // out of memory: the allocation-free hand-over below
    }
    if (job.n == nullptr) return;
    job.n = nullptr;
    if (ex_.defer_destroy(n)) return;
    detail::keep_leaked(n);  // reachable, for leak checkers
    try {
      std::fprintf(stderr,
                   "tether: confined<%s> destroyed after its executor '%s' finished; the object is leaked, "
                   "not destroyed on the wrong thread (destroy confined objects before their executor stops)\n",
                   detail::type_name<T>().c_str(), ex_.name().empty() ? "(unnamed)" : ex_.name().c_str());
    } catch (...) {  // out of memory for the type's name
      std::fputs("tether: a confined object outlived its executor and is leaked\n", stderr);
    }
  }

  confined(const confined&) = delete;
  confined& operator=(const confined&) = delete;

  // Each takes a last, defaulted `loc` (the caller's line), which reaches the executor's
  // metrics hooks and long-task reports as the task's posted-from location.

  // Runs f(T&) on the owner and returns its result (rethrows its exception); inline on the
  // owner thread. Blocks elsewhere; deadlock_error / executor_stopped as executor::call.
  template <class F>
  std::invoke_result_t<F&&, T&> with(F&& f, const source_location& loc = source_location::current()) {
    T* v = &node_->value;
    return ex_.call([&]() -> std::invoke_result_t<F&&, T&> { return std::invoke(std::forward<F>(f), *v); }, loc);
  }

  // As with(f), abandoned when `token` is stopped before f starts (operation_cancelled; f
  // never runs); see executor::call(f, stop_token).
  template <class F>
  std::invoke_result_t<F&&, T&> with(F&& f, std::stop_token token, const source_location& loc = source_location::current()) {
    T* v = &node_->value;
    return ex_.call([&]() -> std::invoke_result_t<F&&, T&> { return std::invoke(std::forward<F>(f), *v); },
                    std::move(token), loc);
  }

  // Queues f(T&); the future carries the result or exception (executor_stopped when
  // refused or cancelled). Never blocks. Throws executor_stopped once stopped.
  template <class F>
  auto async_with(F&& f, const source_location& loc = source_location::current()) {
    return ex_.submit(
        [v = &node_->value, fn = std::forward<F>(f)]() mutable -> decltype(auto) { return std::invoke(std::move(fn), *v); },
        loc);
  }

  // Queues f(T&), fire and forget (exceptions go to the executor's on_error): ok, or closed
  // once stopped (f not moved from).
  template <class F>
  push_result post_with(F&& f, const source_location& loc = source_location::current()) {
    return ex_.post([v = &node_->value, fn = std::forward<F>(f)]() mutable { std::invoke(std::move(fn), *v); }, loc);
  }

  // T itself, on the owner thread; throws wrong_thread naming both threads elsewhere.
  T& local() {
    check_owner();
    return node_->value;
  }

  // Throws wrong_thread unless on the owner thread; asserts the capability for clang's
  // -Wthread-safety.
  void check_owner() const TETHER_ASSERT_CAPABILITY(this) {
    // The name (a demangling, an allocation) only for the error: every call on the owner passes here.
    if (ex_.running_in_this_thread()) return;
    ex_.check_owner("tether::confined<" + detail::type_name<T>() + ">");
  }

  executor& get_executor() const noexcept { return ex_; }

 private:
  // T and the hand-over node its destruction needs, allocated together on the owner.
  struct node : detail::deferred_destroy {
    template <class... Args>
    explicit node(Args&&... args) : value(std::forward<Args>(args)...) {
      destroy = &destroy_node;
    }
    static void destroy_node(detail::deferred_destroy* d) noexcept { delete static_cast<node*>(d); }
    T value;
  };

  // The queued destruction: run, or destroyed unrun by stop(cancel) (on the owner), it
  // destroys T.
  struct destroy_job {
    explicit destroy_job(node* p) noexcept : n(p) {}
    destroy_job(destroy_job&& o) noexcept : n(std::exchange(o.n, nullptr)) {}
    void operator()() noexcept { node::destroy_node(std::exchange(n, nullptr)); }
    ~destroy_job() {
      if (n != nullptr) node::destroy_node(n);
    }
    node* n;
  };

  executor& ex_;
  std::unique_ptr<node> node_;  // written at construction and destruction only
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

// ---- tether/detail/coro/chain.hpp -------------------------------------------
// tether/detail/coro/chain.hpp - what the tasks of one started coroutine share, and how they resume.
//
// spawn() and sync_wait() start a root frame that awaits the user's task; every task that
// task awaits joins the same chain. A chain runs one frame at a time, so it has one place to
// run (its home executor, which schedule() moves), one stop token, and one frame whose
// destruction destroys them all (the root: each frame owns the tasks it awaits).
//
// Resuming a suspended frame means posting it to its home, through the home's reply gate (a
// poster cannot outlive an executor being destroyed; sync_wait's own executor relies on
// that). Every way it can fail still answers, and exactly once:
//   - the home refuses (stopped, or destroyed): the chain is destroyed - on the home's owner
//     when it is still draining (defer_destroy); by the home's destructor once its owner has
//     stopped, when the destructor has begun (the owner may still be inside one of the
//     chain's frames, finishing an await: never destroyed under it); else, the home gone,
//     here, by the thread that would have resumed it. The root reports executor_stopped to
//     whoever started it;
//   - out of memory for the post: the same allocation-free hand-over resumes the frame on the
//     owner instead, when the owner next finds its queue empty;
//   - a posted resumption destroyed unrun (stop(cancel), on the owner): destroys the chain.
//
// Who may call what: resume_on() - whoever decided the awaited outcome, once per suspension.
// Memory ordering: the executor's hand-over (a release publish, the owner's acquire) orders
// everything before resume_on() before the frame resumes; defer_destroy() is seq_cst.

#include <coroutine>


namespace tether::detail {

struct coro_chain;

// A suspended await that a stop request on the chain's token cancels (co_call arms one per
// suspension). fire() runs on the requesting thread; it may resume the frame elsewhere or
// destroy the chain where it stands.
struct stop_hook {
  void (*fire)(stop_hook&) noexcept = nullptr;
  void* target = nullptr;             // what fire() cancels
  std::atomic<bool> fired{false};     // set by the chain's stop callback once fire() returned
  bool* destroyed = nullptr;          // the callback's flag while fire() runs (see disarm_stop)
};
inline thread_local const stop_hook* firing_hook = nullptr;  // the hook this thread's fire() runs

// The chain's one stop callback (registered at its first armed await, not per await: a
// std::stop_callback costs a lock of the stop state to register and one to remove).
struct chain_stop {
  coro_chain* chain;
  void operator()() noexcept;
};

// The shared state of one chain. Lives in the root frame's promise.
struct coro_chain : deferred_destroy {
  executor* home = nullptr;            // where the chain's frames run now
  std::shared_ptr<void> home_gate;     // home's reply gate (coro_access::gate_of)
  std::stop_token token;               // from spawn() / sync_wait(); awaits observe it
  std::coroutine_handle<> root;        // destroying it destroys every frame of the chain
  std::coroutine_handle<> waiting;     // the frame an allocation-free resumption resumes
  // The armed hook (a stop_hook*), | 1 once the stop callback took it to fire; 0: none. A
  // chain runs one frame at a time, so at most one await is armed.
  std::atomic<std::uintptr_t> armed{0};
  std::optional<std::stop_callback<chain_stop>> on_stop;  // last: removed before the rest goes
};

// Outline: take the armed hook (mark it | 1), fire it, then - unless fire() destroyed the
// chain here - say so through the hook. Touches neither the chain nor this callback after
// fire(): either may be gone.
inline void chain_stop::operator()() noexcept {
  full_fence();  // request_stop()'s write before the load below; pairs with arm_stop()'s fence
  std::atomic<std::uintptr_t>& armed = chain->armed;
  std::uintptr_t w = armed.load(std::memory_order_relaxed);  // relaxed: the CAS below decides
  do {
    if (w == 0 || (w & 1) != 0) return;  // nothing armed
  } while (!armed.compare_exchange_weak(w, w | 1, std::memory_order_acq_rel));  // acq_rel: the hook's setup
  stop_hook& h = *reinterpret_cast<stop_hook*>(w);
  bool destroyed = false;
  h.destroyed = &destroyed;
  const stop_hook* const outer = std::exchange(firing_hook, &h);
  h.fire(h);
  firing_hook = outer;
  if (destroyed) return;
  h.destroyed = nullptr;
  h.fired.store(true, std::memory_order_release);  // release: fire()'s effects before disarm_stop() returns
  exit_parker_for(&h).notify_all();               // a static parker: h may be gone once fired is seen
}

// Arms h for the chain's current await (its home thread, after the await is set up; the
// chain's token can stop). If the stop was requested before the callback could see h, fires
// h here (as a std::stop_callback constructed on a stopped token runs at once).
inline void arm_stop(coro_chain& c, stop_hook& h) {
  // release: h's fields before the callback's acq_rel CAS takes it (the order against the
  // stop request comes from the fences).
  c.armed.store(reinterpret_cast<std::uintptr_t>(&h), std::memory_order_release);
  if (!c.on_stop) {
    c.on_stop.emplace(c.token, chain_stop{&c});  // fires h at once if the stop came first
    return;
  }
  full_fence();  // our arming before the load below; pairs with chain_stop's fence
  if (!c.token.stop_requested()) return;
  std::uintptr_t w = reinterpret_cast<std::uintptr_t>(&h);
  // acq_rel: one of this CAS and the callback's takes h (the callback ran before we armed).
  if (c.armed.compare_exchange_strong(w, 0, std::memory_order_acq_rel)) h.fire(h);
}

// Disarms h when its await ends (resumed, or its frame destroyed). If the stop callback took
// h, waits until fire() has returned - unless this is fire() itself destroying the chain.
inline void disarm_stop(coro_chain& c, stop_hook& h) noexcept {
  std::uintptr_t w = reinterpret_cast<std::uintptr_t>(&h);
  // acq_rel: against the callback's CAS, which takes h first or finds nothing armed.
  if (c.armed.compare_exchange_strong(w, 0, std::memory_order_acq_rel)) return;  // never taken
  if (w != (reinterpret_cast<std::uintptr_t>(&h) | 1)) return;  // not armed (or fired by arm_stop)
  if (firing_hook == &h) {
    *h.destroyed = true;  // inside fire(), on this thread: it must not touch h afterwards
    return;
  }
  park_until(exit_parker_for(&h), [&h] { return h.fired.load(std::memory_order_acquire); }, no_deadline);  // acquire: pairs with chain_stop
  c.armed.store(0, std::memory_order_relaxed);  // relaxed: the chain's own thread re-arms it
}

// Every promise that may await tether's awaitables derives from this.
struct chained_promise {
  coro_chain* chain = nullptr;
};

template <class P>
inline constexpr bool is_chained = std::is_base_of_v<chained_promise, P>;

// tether's private view of the executor (its reply gate).
struct coro_access {
  using gate = executor::reply_gate;
  static std::shared_ptr<void> gate_of(executor& ex) { return ex.gate_; }
  static gate& as_gate(const std::shared_ptr<void>& g) noexcept { return *static_cast<gate*>(g.get()); }

  // A poller's engine (select.hpp; a template, so this header needs not include it).
  template <class Poller>
  static auto& core_of(Poller& p) noexcept {
    return p.core_;
  }

  // A thread blocked in sync_wait() waits for ex's owner while its chain awaits a call there:
  // the deadlock detector's edge, as a blocking call() has (throws deadlock_error when the
  // edge closes a cycle).
  static void enter_wait(executor& ex, std::optional<blocking_call>& edge) {
    thread_record& me = this_thread_record();
    edge.emplace(me, ex.owner_record_, ex.owner_serial_, ex.name_id_);
    ex.check_cycle(me);
  }
};

// Sets the chain's home (schedule, spawn).
inline void move_home(coro_chain& c, executor& ex) {
  if (c.home == &ex) return;
  c.home_gate = coro_access::gate_of(ex);
  c.home = &ex;
}

// The posted resumption. Run: resumes the frame. Destroyed unrun (stop(cancel), on the
// owner): destroys the chain instead, so the frame never resumes on a stopped executor.
struct resume_job {
  resume_job(std::coroutine_handle<> frame, coro_chain* c) noexcept : h(frame), chain(c) {}
  resume_job(resume_job&& o) noexcept : h(std::exchange(o.h, {})), chain(o.chain) {}
  resume_job& operator=(resume_job&&) = delete;
  void operator()() { std::exchange(h, {}).resume(); }
  ~resume_job() {
    if (h) chain->root.destroy();
  }
  std::coroutine_handle<> h;
  coro_chain* chain;
};

inline void destroy_chain_deferred(deferred_destroy* d) noexcept { static_cast<coro_chain*>(d)->root.destroy(); }
inline void resume_chain_deferred(deferred_destroy* d) noexcept {
  static_cast<coro_chain*>(d)->waiting.resume();  // frames catch their own exceptions
}

inline void destroy_orphan(coro_chain& c, bool here) noexcept;

// Destroys the chain where it is safe: on the home's owner while it runs (defer), by the
// home's destructor once its owner has stopped (the owner may still be inside one of the
// chain's frames, finishing an await), or here once the owner is done.
inline void destroy_refused(coro_access::gate& gate, coro_chain& c, bool destroy_here) noexcept {
  c.destroy = &destroy_chain_deferred;
  switch (gate.defer(&c)) {
    case coro_access::gate::deferral::deferred:
      return;
    case coro_access::gate::deferral::closing:
      if (gate.adopt_orphan(&c)) return;
      break;  // buried already: the owner has stopped
    case coro_access::gate::deferral::owner_done:
      break;
  }
  destroy_orphan(c, destroy_here);
}

// Destroys the chain when nobody is left to run it: here, or - for a caller that must not
// destroy frames where it stands (a notifier inside a parker listener the frame would
// detach, see readable.hpp) - on a thread of its own. No thread to be had: the chain is
// leaked, reachable, with a line on stderr.
inline void destroy_orphan(coro_chain& c, bool here) noexcept {
  if (here) {
    c.root.destroy();
    return;
  }
  try {
    std::thread([root = c.root] { root.destroy(); }).detach();
  } catch (...) {
    keep_leaked(&c);
    std::fputs("tether: a coroutine whose executor had finished could not be destroyed (no thread); it is leaked\n",
               stderr);
  }
}

// Resumes `frame` (a frame of chain c) on c's home. See the file comment for refusals.
// destroy_here: false when the caller must not destroy frames itself (destroy_orphan).
inline void resume_on(coro_chain& c, std::coroutine_handle<> frame, bool destroy_here = true,
                      coro_access::gate* home = nullptr) noexcept {
  // The gate, not the executor: it stays valid (refusing) if the home is being destroyed.
  // Not copied: c (which holds it) lives until the frame resumes, and once we are inside
  // the gate a live home's destructor waits for us to leave before it lets its own
  // reference go, so the gate outlives this call even if the resumed frame ends the chain.
  // `home`: the same gate, read from c by the awaiting thread before it suspended.
  auto& gate = home != nullptr ? *home : coro_access::as_gate(c.home_gate);
  resume_job job(frame, &c);
  bool refused = false;
  try {
    refused = !gate.post(std::move(job), source_location::current());
  } catch (...) {  // out of memory: resume through the allocation-free hand-over
    if (job.h) {
      job.h = {};
      c.waiting = frame;
      c.destroy = &resume_chain_deferred;
      if (gate.defer(&c) == coro_access::gate::deferral::deferred) return;
      destroy_refused(gate, c, destroy_here);  // the home is going: nobody is left to resume it
    }
    return;
  }
  if (!refused) return;
  job.h = {};  // not moved from: it still holds the frame
  destroy_refused(gate, c, destroy_here);
}

// sync_wait() blocks its thread while its own executor runs the chain: an executor owned by
// that thread cannot run anything the chain posts to it until sync_wait returns.
inline thread_local int sync_wait_depth = 0;

}  // namespace tether::detail

// ---- tether/detail/coro/call_state.hpp --------------------------------------
// tether/detail/coro/call_state.hpp - an awaited call on another executor: co_call / co_with.
//
// The callable, its result and the outcome live in one heap block shared by the awaiting
// frame and the job queued on the target executor: a stop request may resume the frame while
// the job still waits in the queue, so the job must not point into the frame.
//
// One outcome per call, decided by one compare-and-swap out of `pending`:
//   running -> done   the owner ran f (a stop request is no longer seen: captures by
//                     reference stay valid because the frame waits for the result);
//   refused           the target refused the job or destroyed it unrun (executor_stopped);
//   cancelled         a stop request came first; the job, when the owner reaches it, skips f.
// The frame resumes when both the outcome is decided and await_suspend() has finished
// (`arrivals`): whichever comes second resumes it (await_suspend by not suspending at all).
//
// Who may call what: the job - the target's owner; cancel() - the stop callback, any thread;
// the awaiter - the awaiting frame.
// Memory ordering: [CA1] the acq_rel CAS out of pending picks one outcome; [CA2] the release
// store of done publishes the result to [CA3], the awaiter's acquire load; [CA4] acq_rel on
// arrivals orders the outcome before the resumption (and await_suspend's setup before it);
// [CA5] acq_rel on the reference count orders every use before the delete.



namespace tether::detail {

enum class call_phase : std::uint8_t { pending, running, done, refused, cancelled };

template <class F, class R>
struct call_state {
  template <class G>
  explicit call_state(G&& g) : fn(std::forward<G>(g)) {}

  // The one outcome out of pending; false if another came first.
  bool decide(call_phase to) noexcept {
    call_phase from = call_phase::pending;
    return phase.compare_exchange_strong(from, to, std::memory_order_acq_rel);  // [CA1]
  }

  // Called once by the outcome and once by await_suspend; the second resumes the frame.
  // Returns true for the second.
  bool arrive() noexcept { return arrivals.fetch_add(1, std::memory_order_acq_rel) == 1; }  // [CA4]

  void finish() noexcept {
    if (arrive()) resume_on(*chain, frame, true, home);
  }

  void unref() noexcept {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;  // [CA5]
  }

  void run() noexcept {
    out.run(std::move(fn));
    phase.store(call_phase::done, std::memory_order_release);  // [CA2]
  }

  // The awaiter, after resuming: the value, or the exception.
  R take() {
    switch (phase.load(std::memory_order_acquire)) {  // [CA3]
      case call_phase::cancelled:
        throw operation_cancelled(std::string("tether: co_call() on executor '") + target_name +
                                  "' was cancelled by its stop token before it ran; it will not run");
      case call_phase::refused:
        if (out.failed()) return out.take();  // rethrows: out of memory before it was queued
        throw executor_stopped(std::string("tether: co_call() on executor '") + target_name +
                               "': the executor stopped before the call ran");
      default:
        return out.take();
    }
  }

  std::atomic<call_phase> phase{call_phase::pending};
  std::atomic<std::uint8_t> arrivals{0};
  std::atomic<std::uint8_t> refs{2};  // the awaiter and the job
  const char* target_name = "";       // the target's name, for messages (outlives the call)
  std::coroutine_handle<> frame;
  coro_chain* chain = nullptr;
  // The chain's home gate, copied here by the awaiter: the thread that decides the outcome
  // then reads nothing of the awaiting frame, whose lines its own thread keeps writing.
  coro_access::gate* home = nullptr;
  F fn;
  call_outcome<R> out;
};

// What the target executor queues. Destroyed unrun (refused post, stop(cancel)): the call
// reports executor_stopped.
template <class F, class R>
struct call_job {
  explicit call_job(call_state<F, R>* s) noexcept : state(s) {}
  call_job(call_job&& o) noexcept : state(std::exchange(o.state, nullptr)) {}
  call_job& operator=(call_job&&) = delete;
  void operator()() {
    call_state<F, R>* s = std::exchange(state, nullptr);
    if (s->decide(call_phase::running)) {
      s->run();
      s->finish();
    }
    s->unref();
  }
  ~call_job() {
    if (state == nullptr) return;
    if (state->decide(call_phase::refused)) state->finish();
    state->unref();
  }
  call_state<F, R>* state;
};

// The stop hook of an awaited call (stop_hook::fire): abandons it if it has not started.
template <class F, class R>
struct call_canceller {
  static void fire(stop_hook& h) noexcept {
    auto* state = static_cast<call_state<F, R>*>(h.target);
    if (state->decide(call_phase::cancelled)) state->finish();
  }
};

}  // namespace tether::detail

// ---- tether/fd_source.hpp ---------------------------------------------------
// tether/fd_source.hpp - a file descriptor as a poller source: wait on sockets, pipes and
// foreign event fds in the same place as on tether's queues, channels and executors.
//
//   tether::fd_source shell{zmq_fd_of(shell_socket)};        // readable interest
//   tether::poller p;
//   p.on(shell, [&](tether::fd_events) { drain(shell_socket); })
//    .on(router.replies(), [&](reply r) { send(shell_socket, r); });
//   while (running) p.run_one();                              // zero CPU while idle
//
// A poller that watches at least one fd_source waits in ppoll(2) instead of its futex: on the
// watched descriptors and on a wake descriptor of its own, which a push to any other watched
// source signals (once per sleep, not once per push). Ready events are level-triggered as
// poll(2) reports them: a descriptor that stays readable is reported again at the next wait.
// The handler (or try_pop()) receives the events that are pending: readable, writable,
// error, hangup as poll(2) saw them, and notified for a notify() call.
//
// Edge-triggered descriptors (ZeroMQ's ZMQ_FD, which says "look at ZMQ_EVENTS" rather than
// "a message is waiting"): after any send or receive on such a socket, read its pending
// events (ZMQ_EVENTS) and, if work is left, call notify(): the poller then serves the source
// at its next turn even though the descriptor itself stays quiet (the lost wake-up of
// ipykernel #1554 is exactly a missing re-check here).
//
// Who may call what: notify(), fd(), interest() - any thread. try_pop() / ready() - the thread
// that waits on the poller (or, unwatched, the one thread that polls it). Construct and
// destroy: no poller may watch it (remove() it first; a poller never closes the descriptor,
// and after remove() returns it never touches either the descriptor or this object).
// Neither copyable nor movable (a poller refers to it).
//
// Memory ordering: [F1] notify()'s and the waiter's fetch_or (release) publish the events and
// what the notifying thread did before; [F2] try_pop()'s exchange (acquire) takes them. The
// wake-up itself is the parker's handshake (detail/wait/parker.hpp): the events are stored
// before the parker is notified, and a poller re-checks ready() after attaching.
//
// After epoll's ready list and libuv's uv_poll_t (one loop waits on descriptors and on an
// async wake-up handle), with ZeroMQ's documented ZMQ_FD / ZMQ_EVENTS protocol.



namespace tether {

// What a descriptor is watched for, and what the poller found. A bit set.
enum class fd_events : std::uint8_t {
  none = 0,
  readable = 1,   // POLLIN
  writable = 2,   // POLLOUT
  error = 4,      // POLLERR or POLLNVAL (a closed descriptor: remove the source)
  hangup = 8,     // POLLHUP (the peer closed; reading returns the rest, then end of file)
  notified = 16,  // fd_source::notify() was called
};
constexpr fd_events operator|(fd_events a, fd_events b) noexcept {
  return static_cast<fd_events>(static_cast<std::uint8_t>(a) | static_cast<std::uint8_t>(b));
}
constexpr fd_events operator&(fd_events a, fd_events b) noexcept {
  return static_cast<fd_events>(static_cast<std::uint8_t>(a) & static_cast<std::uint8_t>(b));
}
constexpr fd_events& operator|=(fd_events& a, fd_events b) noexcept { return a = a | b; }
// True when e holds any of the events in which.
constexpr bool has(fd_events e, fd_events which) noexcept { return (e & which) != fd_events::none; }

class fd_source;

namespace detail {
struct fd_access;
}  // namespace detail

class fd_source {
 public:
  // Watches fd for interest (readable, writable or both; error and hangup are always
  // reported). The descriptor stays the caller's: it is never read, written or closed here.
  explicit fd_source(int fd, fd_events interest = fd_events::readable) noexcept : fd_(fd), interest_(interest) {}
  fd_source(const fd_source&) = delete;
  fd_source& operator=(const fd_source&) = delete;

  int fd() const noexcept { return fd_; }
  fd_events interest() const noexcept { return interest_; }

  // Marks the source ready as if its descriptor had reported an event: the waiting thread
  // calls its handler at its next turn, with fd_events::notified among the events. Several
  // calls before that turn are one. Never blocks. Thread-safe, also from handlers.
  void notify() noexcept { deliver(static_cast<std::uint8_t>(fd_events::notified)); }

  // The events pending since the last call (ok), or empty. Never closed: a descriptor has no
  // end here (hangup and error are events; remove the source for good). Waiting thread only.
  pop_result<fd_events> try_pop() noexcept {
    // [F2] acquire: pairs with [F1]; what the notifier did before is visible to the caller.
    const std::uint8_t e = pending_.exchange(0, std::memory_order_acquire);
    if (e == 0) return status::empty;
    return pop_result<fd_events>(std::in_place, static_cast<fd_events>(e));
  }

  // Whether events are pending (try_pop() would return ok). seq_cst: the re-check half of
  // the parker handshake. Waiting thread only.
  bool ready() const noexcept { return pending_.load(std::memory_order_seq_cst) != 0; }

 private:
  friend struct detail::fd_access;

  // Adds events and wakes whoever watches: notify(), or the poller's waiter after ppoll().
  void deliver(std::uint8_t events) noexcept {
    // [F1] release: pairs with [F2]. seq_cst: ordered before the notify's handshake.
    pending_.fetch_or(events, std::memory_order_seq_cst);
    parker_.notify_all();
  }

  const int fd_;
  const fd_events interest_;
  // Events reported and not yet taken: written by notify() (any thread) and the poller's
  // waiter; taken by try_pop() (the waiter).
  std::atomic<std::uint8_t> pending_{0};
  // Where a poller hangs its listener (one poller at a time), as on a queue's consumer parker.
  detail::parker parker_;
};

namespace detail {

// What the poller's core (detail/select/poller_core.hpp) needs from an fd_source.
struct fd_access {
  static parker& watched_parker(fd_source& s) noexcept { return s.parker_; }
  static void deliver(fd_source& s, fd_events e) noexcept { s.deliver(static_cast<std::uint8_t>(e)); }
};

// A poller source (see detail/select/sources.hpp): itself, named by its address, woken through
// its parker, ready while events are pending.
inline fd_source& rx_of(fd_source& s) noexcept { return s; }
inline const void* identity_of(const fd_source& s) noexcept { return &s; }
inline parker& rx_parker(fd_source& s) noexcept { return fd_access::watched_parker(s); }
inline bool rx_ready(fd_source& s) noexcept { return s.ready(); }

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
// the node fills in the rest (see poller_core.hpp).
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
  // [N1] acq_rel, pairs with [W1] (poller_core.hpp). Release: our publish (sequenced before this
  // notify) reaches the poller's probe when [W1] reads our true. Acquire: when we read the
  // poller's false, its last use of n.next_ready happened before push() rewrites it.
  if (!n.signalled.exchange(true, std::memory_order_acq_rel)) n.list->push(n);
}

}  // namespace tether::detail

// ---- tether/receiver.hpp ----------------------------------------------------
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

// ---- tether/detail/select/sources.hpp ---------------------------------------
// tether/detail/select/sources.hpp - what a poller needs from each kind of source it watches.
//
// A poller (select.hpp) treats every source alike through four questions, answered here by
// overloads per kind: which object receives (rx_of), which address names it (identity_of:
// the same for an endpoint and whatever it is moved into, and for a receiver and the queue
// it views), what keeps it alive while watched (keep_alive_of: a channel pair's state), and
// the parker its consumer sleeps on with that parker's condition (rx_parker, rx_ready).
// Adopting executors add the earliest delayed-task deadline (rx_deadline), which only their
// owner may read. Nothing here is public API.
//
// Who may call what: rx_ready / rx_deadline - the thread that receives from the source (for
// an executor: its owner, else wrong_thread); the others only read what never changes after
// construction.
// Memory ordering: rx_ready is the queue's own parker condition (seq_cst loads); nothing
// else here touches shared state.



namespace tether::detail {

// The receiving object: the queue itself (also for a receiver), or the endpoint's receiving
// direction.
template <class T>
mpsc_queue<T>& rx_of(mpsc_queue<T>& q) noexcept { return q; }
template <class T>
bounded_mpsc_queue<T>& rx_of(bounded_mpsc_queue<T>& q) noexcept { return q; }
template <class S, class R>
channel_direction<R>& rx_of(const endpoint<S, R>& e) noexcept { return source_access::rx_direction(e); }
template <class T>
mpsc_queue<T>& rx_of(const receiver<T>& r) noexcept { return receiver_queue(r); }

template <class T>
const void* identity_of(const mpsc_queue<T>& q) noexcept { return &q; }
template <class T>
const void* identity_of(const bounded_mpsc_queue<T>& q) noexcept { return &q; }
template <class S, class R>
const void* identity_of(const endpoint<S, R>& e) noexcept { return &source_access::rx_direction(e); }
template <class T>  // the queue it views: a receiver and its queue are one source
const void* identity_of(const receiver<T>& r) noexcept { return &receiver_queue(r); }

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
// earliest, see poller_core::next_ready()). Its owner is the queue's consumer and the only
// thread that may read the timer heap, so only the owner may wait on a poller that watches it.
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

}  // namespace tether::detail

// ---- tether/detail/select/poller_core.hpp -----------------------------------
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


#include <poll.h>
#include <time.h>


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

// ---- tether/detail/coro/readable.hpp ----------------------------------------
// tether/detail/coro/readable.hpp - suspend a frame until a queue or channel has something to take.
//
// The queues' consumer parker can carry one listener (detail/wait/parker.hpp), which a poller
// uses to watch many sources from one thread; an awaiting frame uses the same hook. It hangs
// itself on the source's parker, re-checks (the parker handshake: heavy_fence() between the
// attach and the re-check, against the notifier's fence between its publish and the listener
// load), and suspends. The first notify after that - a push, or the close - resumes the frame
// on its home (resume_on); so does a stop request. The frame then detaches, which waits out
// a notifier still inside the listener, and takes what is there.
//
// One listener per parker: a source a poller watches, or that another frame awaits, cannot be
// awaited (std::logic_error) - a queue has one consumer anyway.
//
// Who may call what: the awaiter - the awaiting frame (the source's one consumer); fire() -
// any notifier, and the stop callback.
// Memory ordering: [RD1] the acq_rel exchange on `fired` lets exactly one of the notifiers
// and the stop callback resume the frame; the resumption is an executor hand-over.



namespace tether::detail {

// A poller's engine as an awaited source: its ready list's parker and condition.
inline parker& rx_parker(poller_core& c) noexcept { return c.ready_parker(); }
inline bool rx_ready(poller_core& c) noexcept { return c.has_ready(); }

template <class Rx>
class readable : parker_listener {
 public:
  explicit readable(Rx& rx) noexcept : rx_(rx) { on_notify = &notified; }
  readable(const readable&) = delete;
  readable& operator=(const readable&) = delete;
  ~readable() { let_go(); }

  bool await_ready() const noexcept { return false; }

  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    static_assert(is_chained<P>, "tether: co_await this inside a tether::task");
    chain_ = h.promise().chain;
    frame_ = h;
    if (!rx_parker(rx_).attach(*this))
      throw std::logic_error(
          "tether: co_pop / co_recv / co_wait on a source that is already watched (by a poller, or another "
          "awaiting frame; a poller watching descriptors keeps its own wake-up there); a source has one consumer");
    attached_ = true;
    heavy_fence();  // the waiter's half of the handshake: the re-check below sees any publish we missed
    if (rx_ready(rx_)) {
      fired_.store(true, std::memory_order_relaxed);  // relaxed: only this frame reads it from now on
      return false;
    }
    // Called at once when stop is already requested: the resumption queues behind this task.
    if (chain_->token.stop_possible()) stop_.emplace(chain_->token, stop_fire{this});
    return true;
  }

  void await_resume() noexcept { let_go(); }

 private:
  struct stop_fire {
    readable* self;
    void operator()() noexcept { self->fire(); }
  };

  static void notified(parker_listener& l) noexcept { static_cast<readable&>(l).fire(); }

  void fire() noexcept {
    // Not destroyed here when the home is gone: this may be a notifier inside our listener,
    // which the frame's destruction would wait for (resume_on, destroy_orphan).
    if (!fired_.exchange(true, std::memory_order_acq_rel)) resume_on(*chain_, frame_, false);  // [RD1]
  }

  void let_go() noexcept {
    stop_.reset();  // waits out a stop callback running elsewhere
    if (attached_) {
      attached_ = false;
      rx_parker(rx_).detach(*this);  // waits out a notifier inside the listener
    }
  }

  Rx& rx_;
  coro_chain* chain_ = nullptr;
  std::coroutine_handle<> frame_;
  std::atomic<bool> fired_{false};
  bool attached_ = false;
  std::optional<std::stop_callback<stop_fire>> stop_;
};

}  // namespace tether::detail

// ---- tether/detail/coro/room.hpp --------------------------------------------
// tether/detail/coro/room.hpp - suspend a frame until a bounded queue has room for a push.
//
// Producers are many, so an awaiting producer cannot take the parker's one listener slot as
// an awaiting consumer does (readable.hpp): it links itself into the queue's waiter_list
// (detail/wait/waiter_list.hpp), which hangs on the producers' parker. The consumer's next
// wake of producers (it freed a batch of slots, or found the queue empty) or the close takes
// the whole list and resumes every frame on its home (resume_on); each tries its push again
// and waits again if another producer took the room first. A stop request unlinks the frame
// and resumes it.
//
// Exactly once: whoever unlinks the frame resumes it - a notifier, the stop callback, or the
// frame itself when its re-check after linking already finds room (then it does not suspend).
//
// Who may call what: the awaiter - the awaiting frame (any number of them on one queue);
// woken() - a notifier; the stop callback - whoever requests the stop.
// Memory ordering: the waiter_list's lock decides who unlinks (and so resumes) the frame; the
// resumption is an executor hand-over. The link and re-check are the parker handshake
// (heavy_fence() here, the notifier's fence in notify_*()).



namespace tether::detail {

template <class Queue>
class room_in : list_waiter {
 public:
  explicit room_in(Queue& q) noexcept : q_(q) { wake = &woken; }
  room_in(const room_in&) = delete;
  room_in& operator=(const room_in&) = delete;
  ~room_in() { let_go(); }

  bool await_ready() const noexcept { return false; }

  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    static_assert(is_chained<P>, "tether: co_await this inside a tether::task");
    chain_ = h.promise().chain;
    frame_ = h;
    waiting_ = true;
    waiter_list& list = source_access::room_waiters(q_);
    if (!list.add(source_access::room_parker(q_), *this)) {
      waiting_ = false;
      throw std::logic_error("tether: co_push / co_send: the queue's producer parker carries another listener");
    }
    heavy_fence();  // the waiter's half of the handshake: the re-check below sees any room we missed
    if (source_access::room_ready(q_)) return !list.remove(*this);  // not removed: a notifier resumes us
    // Called at once when stop is already requested: the resumption queues behind this task.
    if (chain_->token.stop_possible()) stop_.emplace(chain_->token, stop_fire{this});
    return true;
  }

  void await_resume() noexcept { let_go(); }

 private:
  struct stop_fire {
    room_in* self;
    void operator()() noexcept {
      if (source_access::room_waiters(self->q_).remove(*self)) resume_on(*self->chain_, self->frame_, false);
    }
  };

  // A notifier took us off the list: ours alone to resume. Not destroyed here when the home is
  // gone (resume_on, destroy_orphan): this runs inside the consumer's push or pop.
  static void woken(list_waiter& w) noexcept {
    auto& self = static_cast<room_in&>(w);
    resume_on(*self.chain_, self.frame_, false);
  }

  void let_go() noexcept {
    stop_.reset();  // waits out a stop callback running elsewhere
    // Resumed, so unlinked already; still linked only if the frame is destroyed while it waits.
    if (waiting_) {
      waiting_ = false;
      source_access::room_waiters(q_).remove(*this);
    }
  }

  Queue& q_;
  coro_chain* chain_ = nullptr;
  std::coroutine_handle<> frame_;
  bool waiting_ = false;  // between await_suspend and let_go: the frame's own
  std::optional<std::stop_callback<stop_fire>> stop_;
};

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

// ---- tether/coroutine.hpp ---------------------------------------------------
// tether/coroutine.hpp - C++20 coroutines on executors: sessions that wait without a thread.
//
//   tether::task<int> session(tether::confined<lua_vm>& vm, tether::executor& lua) {
//     int n = co_await tether::co_with(vm, [](lua_vm& l) { return l.eval("return 6*7"); });
//     co_await tether::schedule(lua);           // now on lua's owner thread
//     co_return n;
//   }
//   std::future<int> f = tether::spawn(sessions_ex, session(vm, lua));      // or a callback
//   int v = tether::sync_wait(session(vm, lua));                            // plain threads
//
// task<T> is lazy and move-only: nothing runs until it is started (spawn, sync_wait) or
// awaited by another task; exceptions propagate to whoever awaits or started it. A started
// task and every task it awaits form a chain that runs on one executor at a time, its home:
// spawn() sets it, schedule(ex) moves it, and every await resumes there - co_call(ex, f) runs
// f on ex's owner and comes back home with the value or the exception; co_pop(q) /
// co_recv(ep) take a queue's or channel endpoint's next item, co_push(bq, v) / co_send(ep, v)
// wait for room in a bounded queue or channel, without blocking a thread. An
// adopted executor can be a home too (its owner runs the frames in its run family, e.g.
// from a GUI loop).
//
// Cancellation: spawn() and sync_wait() take a std::stop_token, which every await of the
// chain observes (co_await get_stop_token() reads it); spawn() without one gives the chain
// its executor's get_stop_token(), so that stop(cancel) also frees the chains waiting on
// other executors. A co_call whose stop is requested
// before f ran resumes at once with operation_cancelled and f never runs; once f runs the
// frame waits for its result (f may use the frame's locals by reference).
//
// Nothing lost: a task either finishes (its value or exception reaches the future, the
// callback, the awaiting task or sync_wait's caller) or its chain is destroyed, every frame
// exactly once, and the starter learns executor_stopped. That happens when a resumption
// cannot run: the home stopped (stop(cancel) destroys it on the owner; a refused resumption
// destroys it on the owner while it drains, in the home's destructor once its owner has
// stopped, or - the home finished - on the thread that would have resumed it; see
// detail/coro/chain.hpp). A frame never resumes on an executor that refused it, and is
// never destroyed while its home's owner may still be running it. Executors must outlive the calls
// that target them (as for call()); a home may be destroyed while its chains wait elsewhere.
//
// Deadlocks: sync_wait() runs the chain on the calling thread; an await that needs another
// executor owned by that thread (schedule to it) would wait for itself: deadlock_error.
// co_call on the target's owner thread runs f inline (as call() does).
//
// Who may call what: spawn, sync_wait - any thread (sync_wait blocks it). The awaitables -
// inside a tether::task only (a static_assert says so otherwise).
// Memory ordering: every resumption is an executor hand-over (a release publish, the owner's
// acquire): what a frame did before it suspended happens-before what it does after.



namespace tether {

template <class T = void>
class task;

namespace detail {

template <class T>
struct outcome_of;

template <class P>
void require_chained() {
  static_assert(is_chained<P>, "tether: co_await this inside a tether::task (its promise carries the chain)");
}

// A task frame: where its result goes and whom to resume when it ends.
//
// Awaiting a task resumes it with a plain call, not a symmetric transfer: whether a transfer
// becomes a tail call is up to the optimiser (g++ below -O2 does not), and a loop of awaits
// whose tasks finish without suspending would then grow the stack with every round. Instead
// the awaiter and the finishing task meet at `finished` [TP1]: a task that ends inside the
// awaiter's call finds it unset and just returns (the awaiter goes on without suspending); one
// that ends later, resumed from elsewhere, finds it set and resumes the awaiter.
struct task_promise_base : chained_promise {
  std::coroutine_handle<> continuation;
  std::atomic<bool> finished{false};

  // Both sides call it once; true for the second.
  bool meet() noexcept { return finished.exchange(true, std::memory_order_acq_rel); }  // [TP1] acq_rel: orders the result

  std::suspend_always initial_suspend() noexcept { return {}; }
  struct final_awaiter {
    bool await_ready() noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      task_promise_base& p = h.promise();
      return p.meet() ? p.continuation : std::noop_coroutine();
    }
    void await_resume() noexcept {}
  };
  final_awaiter final_suspend() noexcept { return {}; }
};

// Starts child (awaited by parent) and reports whether parent must stay suspended.
template <class Child, class P>
bool start_awaited(std::coroutine_handle<Child> child, std::coroutine_handle<P> parent) {
  coro_chain& c = *parent.promise().chain;
  executor* const home = c.home;
  child.promise().chain = &c;
  child.promise().continuation = parent;
  child.resume();
  if (!child.promise().meet()) return true;  // still running: it resumes parent when it ends
  if (c.home == home) return false;          // ended here: go on
  // It moved the chain (schedule) and ended there before we got here: go on there too.
  resume_on(c, parent);
  return true;
}

template <class T>
struct task_promise : task_promise_base {
  tether::task<T> get_return_object() noexcept;
  template <class U = T>
  void return_value(U&& v) {
    result.template emplace<1>(std::forward<U>(v));
  }
  void unhandled_exception() noexcept { result.template emplace<2>(std::current_exception()); }
  // Moves the exception out: the frame may be destroyed on another thread after the starter
  // is done with it, and the last reference to an exception should not be dropped there.
  T take() {
    if (result.index() == 2) std::rethrow_exception(std::exchange(std::get<2>(result), nullptr));
    return std::move(std::get<1>(result));
  }
  std::variant<std::monostate, T, std::exception_ptr> result;
};

template <>
struct task_promise<void> : task_promise_base {
  tether::task<void> get_return_object() noexcept;
  void return_void() noexcept {}
  void unhandled_exception() noexcept { error = std::current_exception(); }
  void take() {
    if (error) std::rethrow_exception(std::exchange(error, nullptr));  // as above
  }
  std::exception_ptr error;
};

}  // namespace detail

// A lazy coroutine returning T. Move-only; co_await it (once) inside another task, or start it
// with spawn() / sync_wait(). Destroying a task that never started destroys its frame.
template <class T>
class [[nodiscard]] task {
 public:
  using promise_type = detail::task_promise<T>;
  using value_type = T;

  task() noexcept = default;
  task(task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  task& operator=(task&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;
  ~task() {
    if (h_) h_.destroy();
  }

  // false for a default-constructed or moved-from task.
  bool valid() const noexcept { return static_cast<bool>(h_); }

  // Awaiting a task runs it on the awaiting chain (same home, same stop token) and gives
  // its value or rethrows its exception.
  auto operator co_await() && noexcept { return awaiter{h_}; }
  auto operator co_await() & noexcept { return awaiter{h_}; }

 private:
  friend promise_type;
  friend struct detail::outcome_of<T>;
  using handle = std::coroutine_handle<promise_type>;
  explicit task(handle h) noexcept : h_(h) {}

  struct awaiter {
    handle child;
    bool await_ready() const {
      if (!child) throw std::logic_error("tether::task: co_await of an empty (moved-from) task");
      return false;
    }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> parent) {
      detail::require_chained<P>();
      return detail::start_awaited(child, parent);
    }
    T await_resume() { return child.promise().take(); }
  };

  handle h_;
};

namespace detail {

template <class T>
tether::task<T> task_promise<T>::get_return_object() noexcept {
  return tether::task<T>(std::coroutine_handle<task_promise<T>>::from_promise(*this));
}
inline tether::task<void> task_promise<void>::get_return_object() noexcept {
  return tether::task<void>(std::coroutine_handle<task_promise<void>>::from_promise(*this));
}

// How a started task reports: deliver() once with its outcome, or - if the chain is destroyed
// first - the destructor reports executor_stopped.
struct completion_base {
  bool pending = true;  // false once delivered, or when a refused start destroys the frame
};

template <class T, class Done>
struct completion : completion_base {
  explicit completion(Done&& d) : done(std::move(d)) {}
  completion(completion&& o) : completion_base{std::exchange(o.pending, false)}, done(std::move(o.done)) {}
  Done done;
  void deliver(task_result<T>&& r) noexcept {
    pending = false;
    done(std::move(r));
  }
  ~completion() {
    if (pending)
      done(task_result<T>(std::make_exception_ptr(executor_stopped(
          "tether: a coroutine was destroyed before it finished: its executor stopped while it was suspended"))));
  }
};

// The root frame of a chain: holds the chain, awaits the user's task, reports.
struct root_frame {
  struct promise_type : chained_promise {
    coro_chain storage;
    completion_base* report;  // the frame's copy of run_root's completion
    template <class Task, class C>
    promise_type(Task&, C& c) noexcept : report(&c) {
      chain = &storage;
    }
    root_frame get_return_object() noexcept { return {std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }  // the body catches everything
  };
  std::coroutine_handle<promise_type> h;
};

// Awaits a task and gives its outcome as a task_result (never throws).
template <class T>
struct outcome_of {
  tether::task<T> t;
  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> parent) {
    return start_awaited(std::coroutine_handle<task_promise<T>>::from_address(handle_address()), parent);
  }
  task_result<T> await_resume() noexcept {
    auto child = std::coroutine_handle<task_promise<T>>::from_address(handle_address());
    try {
      if constexpr (std::is_void_v<T>) {
        child.promise().take();
        return task_result<T>();
      } else {
        return task_result<T>(std::in_place, child.promise().take());
      }
    } catch (...) {
      return task_result<T>(std::current_exception());
    }
  }
  void* handle_address() noexcept {
    if (!addr) addr = std::exchange(t.h_, {}).address();
    return addr;
  }
  ~outcome_of() {
    if (addr) std::coroutine_handle<>::from_address(addr).destroy();
  }
  void* addr = nullptr;
};

template <class T, class Done>
root_frame run_root(tether::task<T> t, completion<T, Done> c) {
  outcome_of<T> awaited{std::move(t)};  // a named awaitable: g++ 12 mishandles temporaries here
  task_result<T> r = co_await awaited;
  c.deliver(std::move(r));
}

// Starts a chain on `home`: posts its first resumption. Refused: the frames are destroyed
// (they never ran) and false is returned.
template <class T, class Done>
bool start_chain(executor& home, tether::task<T>&& t, Done&& done, std::stop_token token) {
  if (!t.valid()) throw std::logic_error("tether: starting an empty (moved-from) task");
  root_frame root = run_root<T, std::decay_t<Done>>(std::move(t), completion<T, std::decay_t<Done>>(std::forward<Done>(done)));
  coro_chain& c = root.h.promise().storage;
  c.root = root.h;
  c.token = std::move(token);
  try {
    move_home(c, home);
    resume_job job(root.h, &c);
    if (coro_access::as_gate(c.home_gate).post(std::move(job), source_location::current())) return true;
    job.h = {};  // refused: not moved from
  } catch (...) {
    root.h.promise().report->pending = false;  // never started: the caller hears it, nobody else
    root.h.destroy();
    throw;
  }
  root.h.promise().report->pending = false;
  root.h.destroy();
  return false;
}

}  // namespace detail

// Starts t on ex; the future receives its value or exception (executor_stopped if the chain
// is destroyed unfinished). Throws executor_stopped once ex is stopped (t is destroyed
// unstarted). Never blocks. Thread-safe.
template <class T>
std::future<T> spawn(executor& ex, tether::task<T> t, std::stop_token token = {}) {
  std::promise<T> p;
  std::future<T> f = p.get_future();
  struct to_future {
    std::promise<T> p;
    void operator()(task_result<T>&& r) noexcept {
      // Nothing of the result stays here once the future has it: the waiter may be done with
      // it before this thread lets go, and then this thread would free it.
      std::promise<T> mine = std::move(p);
      try {
        if (!r) {
          std::exception_ptr e = r.error();
          r = task_result<T>(std::exception_ptr{});
          mine.set_exception(std::move(e));
        } else if constexpr (std::is_void_v<T>) {
          mine.set_value();
        } else {
          mine.set_value(std::move(r).value());
        }
      } catch (...) {  // T's move threw
        try { mine.set_exception(std::current_exception()); } catch (...) {}  // already satisfied
      }
    }
  };
  if (!token.stop_possible()) token = ex.get_stop_token();
  if (!detail::start_chain(ex, std::move(t), to_future{std::move(p)}, std::move(token)))
    throw executor_stopped("tether: spawn() on executor '" + (ex.name().empty() ? std::string("(unnamed)") : ex.name()) +
                           "', which is stopped");
  return f;
}

// Starts t on ex; on_done(task_result<T>&&) runs once with its outcome, on the chain's home
// when it finishes there (or on the thread that destroys an unfinished chain, with
// executor_stopped). An exception escaping on_done goes to ex's on_error when it can
// still take it, else is written to stderr and dropped. Returns closed once ex is stopped
// (on_done not called; t destroyed unstarted). Never blocks. Thread-safe.
template <class T, class F>
  requires std::is_invocable_v<std::decay_t<F>&, task_result<T>&&>
push_result spawn(executor& ex, tether::task<T> t, F&& on_done, std::stop_token token = {}) {
  struct to_callback {
    std::decay_t<F> fn;
    std::shared_ptr<void> gate;  // ex's: stays valid, refusing, if ex is destroyed meanwhile
    void operator()(task_result<T>&& r) noexcept {
      try {
        std::invoke(fn, std::move(r));
      } catch (...) {
        auto e = std::current_exception();
        try {
          if (detail::coro_access::as_gate(gate).post([e] { std::rethrow_exception(e); }, source_location::current()))
            return;
        } catch (...) {
        }
        std::fputs("tether: a spawn() completion threw after its executor stopped; the exception is dropped\n", stderr);
      }
    }
  };
  if (!token.stop_possible()) token = ex.get_stop_token();
  return detail::start_chain(ex, std::move(t), to_callback{std::forward<F>(on_done), detail::coro_access::gate_of(ex)}, std::move(token))
             ? push_result(status::ok)
             : push_result(status::closed);
}

// Awaitable: resumes the awaiting frame on ex's owner thread; ex becomes the chain's home.
// Throws executor_stopped (staying where it was) if ex is stopped; deadlock_error if ex's
// owner is this thread, blocked in sync_wait() under the awaiting chain.
class schedule {
 public:
  explicit schedule(executor& ex) noexcept : ex_(ex) {}
  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    detail::require_chained<P>();
    detail::coro_chain& c = *h.promise().chain;
    if (c.home != &ex_ && detail::sync_wait_depth > 0 && ex_.running_in_this_thread())
      throw deadlock_error("tether: co_await schedule(executor '" + name() +
                               "') inside sync_wait() on that executor's own owner thread would wait for itself: "
                               "sync_wait blocks the thread that must run it (spawn the task instead)",
                           {name()});
    if (ex_.is_stopped()) {
      refused_ = true;
      return false;
    }
    executor* const before = c.home;
    std::shared_ptr<void> before_gate = c.home_gate;
    detail::move_home(c, ex_);
    detail::resume_job job(h, &c);
    bool ok = false;
    try {
      ok = static_cast<bool>(detail::coro_access::as_gate(c.home_gate).post(std::move(job), source_location::current()));
    } catch (...) {
      job.h = {};
      c.home = before;
      c.home_gate = std::move(before_gate);
      throw;
    }
    if (ok) return true;
    job.h = {};  // refused (stopped meanwhile): stay where we were
    c.home = before;
    c.home_gate = std::move(before_gate);
    refused_ = true;
    return false;
  }
  void await_resume() const {
    if (refused_) throw executor_stopped("tether: co_await schedule(executor '" + name() + "'): the executor is stopped");
  }

 private:
  std::string name() const { return ex_.name().empty() ? std::string("(unnamed)") : ex_.name(); }
  executor& ex_;
  bool refused_ = false;
};

// Awaitable: the chain's stop token (from spawn / sync_wait).
struct get_stop_token {
  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    detail::require_chained<P>();
    token_ = h.promise().chain->token;
    return false;
  }
  std::stop_token await_resume() noexcept { return std::move(token_); }
  std::stop_token token_;
};

namespace detail {

// co_call's awaiter; see call_state.hpp.
template <class F, class R>
class call_awaiter {
 public:
  template <class G>
  call_awaiter(executor& ex, G&& g, const source_location& loc) : ex_(ex), fn_(std::forward<G>(g)), loc_(loc) {}
  call_awaiter(call_awaiter&&) = delete;
  ~call_awaiter() {
    if (chain_ != nullptr) disarm_stop(*chain_, hook_);
    edge_.reset();
    if (state_ != nullptr) state_->unref();
  }

  bool await_ready() const noexcept { return false; }

  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    require_chained<P>();
    coro_chain& c = *h.promise().chain;
    if (ex_.running_in_this_thread()) {  // inline, as call()
      mode_ = ex_.is_stopped() ? mode::stopped : mode::run_inline;
      return false;
    }
    if (c.token.stop_requested()) {  // a stop already requested: never queued
      mode_ = mode::cancelled;
      return false;
    }
    if (sync_wait_depth > 0) coro_access::enter_wait(ex_, edge_);  // this thread waits: see sync_wait()
    auto* s = new call_state<F, R>(std::move(*fn_));
    fn_.reset();
    s->frame = h;
    s->chain = &c;
    s->home = &coro_access::as_gate(c.home_gate);
    s->target_name = ex_.name().empty() ? "(unnamed)" : ex_.name().c_str();
    state_ = s;
    mode_ = mode::queued;
    if (c.token.stop_possible()) {  // a token that can never stop costs nothing
      hook_.fire = &call_canceller<F, R>::fire;
      hook_.target = s;
      chain_ = &c;
      arm_stop(c, hook_);  // may cancel at once
    }
    if (s->phase.load(std::memory_order_acquire) == call_phase::pending) {  // acquire: pairs with [CA1]
      call_job<F, R> job(s);
      try {
        (void)ex_.post(std::move(job), loc_);  // refused: the job's destructor reports it
      } catch (...) {                          // out of memory: not queued
        if (call_state<F, R>* mine = std::exchange(job.state, nullptr)) {
          if (mine->decide(call_phase::refused)) {
            mine->out.fail(std::current_exception());
            mine->finish();
          }
          mine->unref();
        }
      }
    } else {
      s->unref();  // the job's reference: never queued
    }
    return !s->arrive();  // the outcome came first: go on without suspending
  }

  R await_resume() {
    switch (mode_) {
      case mode::run_inline:
        return std::invoke(std::move(*fn_));
      case mode::stopped:
        throw executor_stopped("tether: co_call() on executor '" + ex_.name() + "', which is stopped");
      case mode::cancelled:
        throw operation_cancelled("tether: co_call() on executor '" + ex_.name() +
                                  "' was cancelled by its stop token before it ran; it will not run");
      case mode::queued:
        break;
    }
    if (coro_chain* c = std::exchange(chain_, nullptr)) disarm_stop(*c, hook_);  // waits out a callback still firing
    edge_.reset();
    return state_->take();
  }

 private:
  executor& ex_;
  std::optional<F> fn_;
  source_location loc_;
  call_state<F, R>* state_ = nullptr;
  stop_hook hook_;                 // armed on the chain while queued (arm_stop)
  coro_chain* chain_ = nullptr;    // set while hook_ is armed (the token can stop)
  std::optional<blocking_call> edge_;  // only under sync_wait()
  enum class mode : std::uint8_t { queued, run_inline, stopped, cancelled } mode_ = mode::queued;
};

}  // namespace detail

// Awaitable: runs f() on ex's owner thread and resumes the awaiting frame at home with its
// value (or rethrows its exception). On ex's owner thread f runs inline. Throws
// executor_stopped when ex is stopped or destroys the call unrun, operation_cancelled when
// the chain's stop token is triggered before f ran (f never runs). f is moved into the call.
template <class F>
auto co_call(executor& ex, F&& f, const source_location& loc = source_location::current()) {
  using Fn = std::decay_t<F>;
  using R = std::invoke_result_t<Fn&&>;
  return detail::call_awaiter<Fn, R>(ex, std::forward<F>(f), loc);
}

// Awaitable: co_call() of f(T&) on the confined object's owner.
template <class T, class F>
auto co_with(confined<T>& obj, F&& f, const source_location& loc = source_location::current()) {
  return co_call(
      obj.get_executor(),
      [&obj, fn = std::forward<F>(f)]() mutable -> decltype(auto) { return std::invoke(std::move(fn), obj.local()); },
      loc);
}

namespace detail {

// The awaited receive: take what is there; else suspend until the source notifies (a push or
// the close) or the chain's stop is requested, and try again.
template <class T, class Source, class Take>
tether::task<pop_result<T>> receive(Source& src, Take take) {
  auto& rx = rx_of(src);
  for (;;) {
    pop_result<T> r = take(src);
    if (r.status() != status::empty) co_return std::move(r);
    tether::get_stop_token ask;
    const std::stop_token token = co_await ask;
    if (token.stop_requested()) co_return status::cancelled;
    readable<std::remove_reference_t<decltype(rx)>> wait(rx);  // named: see run_root
    co_await wait;
  }
}

}  // namespace detail

// Awaitables: the queue's (or endpoint's) next item, without blocking a thread - pop_result:
// the value, closed once closed and drained, or cancelled when the chain's stop is requested
// first (an item already there is still taken). The awaiting frame is the source's one
// consumer; a source that a poller watches, or another frame awaits, throws std::logic_error.
// The source must outlive the await.
template <class T>
tether::task<pop_result<T>> co_pop(mpsc_queue<T>& q) {
  return detail::receive<T>(q, [](mpsc_queue<T>& s) { return s.try_pop(); });
}
template <class T>
tether::task<pop_result<T>> co_pop(bounded_mpsc_queue<T>& q) {
  return detail::receive<T>(q, [](bounded_mpsc_queue<T>& s) { return s.try_pop(); });
}
template <class T>
tether::task<pop_result<T>> co_pop(receiver<T>& r) {
  return detail::receive<T>(r, [](receiver<T>& s) { return s.try_pop(); });
}
template <class S, class R>
tether::task<pop_result<R>> co_recv(endpoint<S, R>& e) {
  return detail::receive<R>(e, [](endpoint<S, R>& s) { return s.try_recv(); });
}

namespace detail {

// The queue a full sender waits on for room: the bounded queue itself, or a channel
// direction's (only a bounded one is ever full).
template <class T>
bounded_mpsc_queue<T>& room_queue(bounded_mpsc_queue<T>& q) noexcept { return q; }
template <class T>
bounded_mpsc_queue<T>& room_queue(channel_direction<T>& d) noexcept { return *d.bounded(); }

// The awaited push: try it; when full, suspend until the consumer makes room (or the queue
// closes, or the chain's stop is requested) and try again. v is used only by the push that
// succeeds.
template <class T, class Tx, class V>
tether::task<push_result> send_with_room(Tx& tx, V&& v) {
  for (;;) {
    push_result r = tx.try_push(std::forward<V>(v));  // full: v untouched
    if (r.status() != status::full) co_return r;
    tether::get_stop_token ask;
    const std::stop_token token = co_await ask;
    if (token.stop_requested()) co_return status::cancelled;
    room_in<bounded_mpsc_queue<T>> wait(room_queue(tx));  // named: see run_root
    co_await wait;
  }
}

}  // namespace detail

// Awaitables: push v into a bounded queue (or send it on a channel endpoint), waiting without
// a thread while it is full - push_result ok, closed, or cancelled when the chain's stop is
// requested first; on every outcome but ok v is untouched (moved from only by the push that
// succeeds), so the caller keeps what was not delivered. Any number of frames (and threads)
// may wait for room on one queue; each wake-up of the producers resumes them all and each
// tries again. v is taken by reference: co_await the task in the expression that creates it
// (as `co_await co_push(q, std::move(m))`), so that v outlives the await. The queue (the
// channel) must outlive the await. An unbounded channel never waits.
template <class T>
tether::task<push_result> co_push(bounded_mpsc_queue<T>& q, std::type_identity_t<T>&& v) {
  return detail::send_with_room<T>(q, std::move(v));
}
template <class T>
tether::task<push_result> co_push(bounded_mpsc_queue<T>& q, const std::type_identity_t<T>& v) {
  return detail::send_with_room<T>(q, v);
}
template <class S, class R>
tether::task<push_result> co_send(endpoint<S, R>& e, std::type_identity_t<S>&& v) {
  return detail::send_with_room<S>(detail::source_access::tx_direction(e), std::move(v));
}
template <class S, class R>
tether::task<push_result> co_send(endpoint<S, R>& e, const std::type_identity_t<S>& v) {
  return detail::send_with_room<S>(detail::source_access::tx_direction(e), v);
}

namespace detail {

// The awaited poller wait: a ready source now (run_one: its handler run here, on the home);
// else suspend until a source turns ready or the chain's stop is requested, and look again.
template <class Poller>
tether::task<pop_result<source_id>> poller_wait(Poller& p, bool run) {
  auto& core = coro_access::core_of(p);
  if (core.watches_fds_or_executors())
    throw std::logic_error(
        "tether: co_wait / co_run_one on a poller that watches descriptors or executors (their readiness does "
        "not notify an awaiting frame); wait on it from a thread, or watch them from the frame's home executor");
  for (;;) {
    pop_result<source_id> r = run ? p.try_run_one() : p.try_wait();
    if (r) co_return std::move(r);
    tether::get_stop_token ask;
    const std::stop_token token = co_await ask;
    if (token.stop_requested()) co_return status::cancelled;
    readable<poller_core> wait(core);  // named: see run_root
    co_await wait;
  }
}

}  // namespace detail

// Awaitables: a poller's next ready source (co_run_one also receives one message from it and
// runs its handler, on the frame's home thread), or cancelled when the chain's stop is
// requested first. The awaiting frame is the poller's waiting thread; a poller watching
// descriptors or executors throws std::logic_error (wait on those from a thread).
// (Templates, like every coroutine here: a translation unit that never awaits one compiles none.)
template <class Poller>
  requires std::is_same_v<Poller, poller>
tether::task<pop_result<source_id>> co_wait(Poller& p) {
  return detail::poller_wait(p, false);
}
template <class Poller>
  requires std::is_same_v<Poller, poller>
tether::task<pop_result<source_id>> co_run_one(Poller& p) {
  return detail::poller_wait(p, true);
}

// Runs t to its end on the calling thread and returns its value (rethrows its exception).
// The chain's home is an executor that this call drives; awaits that need another thread
// suspend it until they resume it here. Blocks. Any thread, including an executor's owner
// inside a task (that executor then runs nothing until this returns: see schedule()).
template <class T>
T sync_wait(tether::task<T> t, std::stop_token token = {}) {
  std::optional<task_result<T>> out;
  {
    executor here{adopt_current_thread, executor_options{.name = "tether::sync_wait"}};
    // Stops `here` on its own thread: the outcome may arrive on any thread (or from a chain
    // destroyed elsewhere), and only the owner may stop an executor it is about to destroy.
    struct stop_here : detail::deferred_destroy {
      executor* ex;
      static void run(detail::deferred_destroy* d) noexcept { static_cast<stop_here*>(d)->ex->stop(); }
    } stopper;
    stopper.ex = &here;
    stopper.destroy = &stop_here::run;
    struct into_out {
      std::optional<task_result<T>>* out;
      stop_here* stopper;
      std::shared_ptr<void> gate;
      void operator()(task_result<T>&& r) noexcept {
        out->emplace(std::move(r));
        // `here` runs until stopped, and is not destroyed before: the hand-over cannot fail.
        (void)detail::coro_access::as_gate(gate).defer(stopper);
      }
    };
    struct depth {
      depth() noexcept { ++detail::sync_wait_depth; }
      ~depth() { --detail::sync_wait_depth; }
    } marked;
    if (!detail::start_chain(here, std::move(t), into_out{&out, &stopper, detail::coro_access::gate_of(here)},
                             std::move(token)))
      throw executor_stopped("tether: sync_wait(): its executor refused the task");
    here.run();
  }  // ~executor waits out every poster still inside its gate
  if (!out) throw executor_stopped("tether: sync_wait(): the task was destroyed before it finished");
  return std::move(*out).value();
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
  // The id to_string() names: "parent", or "subshell-<n>" with n a decimal 1 .. 2^64-1
  // (no sign, no leading zero); nullopt for anything else. So a protocol that names
  // subshells with strings (JEP 91) can use to_string() as the name and this to route.
  static constexpr std::optional<subshell_id> from_string(std::string_view s) noexcept {
    if (s == "parent") return subshell_id{};
    constexpr std::string_view prefix = "subshell-";
    if (s.size() <= prefix.size() || s.substr(0, prefix.size()) != prefix) return std::nullopt;
    s.remove_prefix(prefix.size());
    if (s.front() == '0') return std::nullopt;
    std::uint64_t v = 0;
    for (const char c : s) {
      if (c < '0' || c > '9') return std::nullopt;
      const auto digit = static_cast<std::uint64_t>(c - '0');
      if (v > (UINT64_MAX - digit) / 10) return std::nullopt;  // overflow
      v = v * 10 + digit;
    }
    return subshell_id{v};
  }
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

// Why a message (or a control request) got an error instead of a value; ok: it did not.
enum class routing_errc : std::uint8_t {
  ok = 0,                // no error (routing_result::code() of a success)
  unknown_subshell,  // no subshell with that id was ever created     (payload handed back)
  subshell_deleted,      // deleted before the message ran or arrived     (payload handed back)
  subshell_stopped,      // the parent's executor refused or cancelled it (payload handed back)
  handler_threw,         // the handler threw before replying (the message names the exception)
  no_reply,              // the handler returned without replying
  router_stopped,        // stop(cancel) came first, or a request came once stopped
  invalid_request,       // control: cannot be served (deleting the parent)
  create_failed,         // control: the subshell's thread or its handler could not be made
  delivery_failed,       // the router could not carry it through: an allocation failed, or the
                         // payload's move threw (payload handed back where it still exists)
};

constexpr const char* to_string(routing_errc c) noexcept {
  switch (c) {
    case routing_errc::ok: return "ok";
    case routing_errc::unknown_subshell: return "unknown_subshell";
    case routing_errc::subshell_deleted: return "subshell_deleted";
    case routing_errc::subshell_stopped: return "subshell_stopped";
    case routing_errc::handler_threw: return "handler_threw";
    case routing_errc::no_reply: return "no_reply";
    case routing_errc::router_stopped: return "router_stopped";
    case routing_errc::invalid_request: return "invalid_request";
    case routing_errc::create_failed: return "create_failed";
    case routing_errc::delivery_failed: return "delivery_failed";
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

namespace detail {
template <class Payload, class Reply>
class router_engine;
}  // namespace detail

// What leaves the router: one per accepted message, tagged with the subshell and the
// envelope's tag, holding the handler's value or an error. Errors are rare, so they live on
// the heap and a value reply stays small. Template parameters in data-flow order.
template <class Payload, class Reply>
class routed_reply {
 public:
  routed_reply(subshell_id subshell, std::uint64_t tag, Reply&& value)
      : subshell_(subshell), tag_(tag), v_(std::in_place_index<0>, std::move(value)) {}
  routed_reply(subshell_id subshell, std::uint64_t tag, routing_error error, std::optional<Payload> returned = {})
      : subshell_(subshell),
        tag_(tag),
        v_(std::in_place_index<1>, new failure{std::move(error), std::move(returned), false}) {}
  // An error reply handing back the payload (moved once, into the reply).
  routed_reply(subshell_id subshell, std::uint64_t tag, routing_error error, Payload&& returned)
      : subshell_(subshell),
        tag_(tag),
        v_(std::in_place_index<1>,
           new failure{std::move(error), std::optional<Payload>(std::in_place, std::move(returned)), false}) {}

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

  // The error; throws std::logic_error for a value reply. An error reply the router made
  // with no memory left to describe it carries a fixed message (naming its code, not the
  // subshell: read subshell() for that) and no payload.
  const routing_error& error() const {
    if (has_value()) throw std::logic_error("tether::routed_reply::error(): the reply holds a value");
    return (*std::get_if<1>(&v_))->error;
  }
  // The error's code; routing_errc::ok for a value reply.
  routing_errc code() const noexcept { return has_value() ? routing_errc::ok : (*std::get_if<1>(&v_))->error.code(); }

  // The payload handed back by a message that never reached a handler (unknown_subshell,
  // subshell_deleted, subshell_stopped, router_stopped, delivery_failed); nullptr otherwise.
  Payload* returned_payload() noexcept {
    if (has_value()) return nullptr;
    auto& f = *std::get_if<1>(&v_);
    return f->payload ? &*f->payload : nullptr;
  }

 private:
  friend class detail::router_engine<Payload, Reply>;

  struct failure {
    routing_error error;
    std::optional<Payload> payload;
    bool preallocated;  // one of fallback()'s: never freed
  };
  struct failure_delete {
    void operator()(failure* f) const noexcept {
      if (!f->preallocated) delete f;
    }
  };

  // An error reply that allocates nothing: its failure is one made ahead of time, shared by
  // every such reply with this code (router_engine calls warm_up() before it routes).
  routed_reply(subshell_id subshell, std::uint64_t tag, routing_errc code) noexcept
      : subshell_(subshell), tag_(tag), v_(std::in_place_index<1>, fallback(code)) {}

  static constexpr std::size_t error_codes = static_cast<std::size_t>(routing_errc::delivery_failed) + 1;
  // Made once, on first use (warm_up()), and kept for the life of the process.
  static const std::array<failure*, error_codes>& fallbacks() {
    static const std::array<failure*, error_codes> table = [] {
      std::array<failure*, error_codes> t{};
      for (std::size_t i = 1; i < error_codes; ++i) {
        const auto c = static_cast<routing_errc>(i);
        t[i] = new failure{routing_error(c, subshell_id{},
                                         std::string("tether: router: ") + to_string(c) +
                                             " (no memory was left to describe it further)"),
                           std::nullopt, true};
      }
      return t;
    }();
    return table;
  }
  static failure* fallback(routing_errc code) noexcept {  // after warm_up()
    const auto i = static_cast<std::size_t>(code);
    return fallbacks()[i > 0 && i < error_codes ? i : error_codes - 1];
  }
  static void warm_up() { (void)fallbacks(); }

  void check() const {
    if (has_value()) return;
    const routing_error& e = (*std::get_if<1>(&v_))->error;
    throw std::logic_error("tether::routed_reply::value(): no value (" + std::string(to_string(e.code())) + "): " +
                           e.message());
  }

  subshell_id subshell_;
  std::uint64_t tag_;
  std::variant<Reply, std::unique_ptr<failure, failure_delete>> v_;
};

// What a direct control call (create_subshell, delete_subshell, list_subshells, stats)
// returns: its value, or the routing_error that refused it. Branch on code() (ok,
// unknown_subshell, router_stopped ...) or on operator bool. routing_result<> has no value.
template <class T = void>
class [[nodiscard]] routing_result {
  using stored = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

 public:
  routing_result() requires std::is_void_v<T> : v_(std::in_place_index<0>) {}
  routing_result(stored value) requires(!std::is_void_v<T>) : v_(std::in_place_index<0>, std::move(value)) {}
  routing_result(routing_error error) : v_(std::in_place_index<1>, std::move(error)) {}

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }
  routing_errc code() const noexcept { return has_value() ? routing_errc::ok : std::get_if<1>(&v_)->code(); }

  // The value; throws std::logic_error carrying the error's message when there is none.
  template <class U = T>
    requires(!std::is_void_v<U>)
  U& value() & {
    check();
    return *std::get_if<0>(&v_);
  }
  template <class U = T>
    requires(!std::is_void_v<U>)
  const U& value() const& {
    check();
    return *std::get_if<0>(&v_);
  }
  template <class U = T>
    requires(!std::is_void_v<U>)
  U&& value() && {
    check();
    return std::move(*std::get_if<0>(&v_));
  }
  // Precondition: has_value().
  template <class U = T>
    requires(!std::is_void_v<U>)
  U& operator*() noexcept {
    return *std::get_if<0>(&v_);
  }
  template <class U = T>
    requires(!std::is_void_v<U>)
  const U& operator*() const noexcept {
    return *std::get_if<0>(&v_);
  }
  template <class U = T>
    requires(!std::is_void_v<U>)
  U* operator->() noexcept {
    return std::get_if<0>(&v_);
  }
  template <class U = T>
    requires(!std::is_void_v<U>)
  const U* operator->() const noexcept {
    return std::get_if<0>(&v_);
  }

  // The error; throws std::logic_error for a success.
  const routing_error& error() const {
    if (has_value()) throw std::logic_error("tether::routing_result::error(): the call succeeded");
    return *std::get_if<1>(&v_);
  }

 private:
  void check() const {
    if (has_value()) return;
    const routing_error& e = *std::get_if<1>(&v_);
    throw std::logic_error("tether::routing_result::value(): no value (" + std::string(to_string(e.code())) +
                           "): " + e.message());
  }

  std::variant<stored, routing_error> v_;
};

// The control channel's verbs (JEP 91's create / delete / list, and per-subshell counters).
// interrupt: request stop on the std::stop_token of the message running on a subshell now
// (reply_sender::stop_token()).
enum class control_op : std::uint8_t { create_subshell, delete_subshell, list_subshells, subshell_stats, interrupt };

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
  static control_request interrupt(subshell_id id, std::uint64_t tag = 0) {
    return {control_op::interrupt, id, stop_mode::drain, tag};
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
  // Its executor's stats() (for the parent: the parent executor's). Queue delay, run time
  // and the depth high-water mark need metrics on that executor: router_options::
  // subshell_metrics for children, the parent's own executor_options::metrics.
  executor_stats executor{};
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
  bool subshell_metrics = false;  // child subshells' executors record metrics (subshell_stats::executor)
};

}  // namespace tether

// ---- tether/detail/router/subshell.hpp --------------------------------------
// tether/detail/router/subshell.hpp - one subshell as the router sees it, and the handler
// and factory it runs, with the user's callables type-erased.
//
// router.hpp holds what users touch (router, reply_sender) and engine.hpp the router's
// engine; this holds what the engine keeps for each subshell: its executor, its handler, the
// counters stats() reports, the cancel code its queued tasks answer with and the stop state of
// the message it runs. Also the virtual handler and factory through which the
// router calls the user's callables without knowing their types, and the static slots where
// the reaper waits for the parent's last answers. Nothing here is public API.
//
// reply_sender and router_engine are only declared here: router.hpp defines both before it
// instantiates anything below.
//
// Who may call what: each router_subshell field as its comment says; router_child_thread_of -
// set on a child subshell's own thread, read by join() on the calling thread.
// Memory ordering: [RA1]/[RA2] and [RC1]/[RC2] on answered and cancel_code are engine.hpp's
// (see its banner); [RS1]/[RS2] on phase are here, next to the code.



namespace tether {

template <class Payload, class Reply>
class reply_sender;

namespace detail {

template <class Payload, class Reply>
class router_engine;

// A payload as the router carries it: moving it never throws. A Payload whose own move may
// throw lives on the heap (allocated by send(), on the sender's thread, where a failure is
// the sender's), so the router thread only ever moves a pointer; any other is held inline.
template <class Payload>
class payload_box {
 public:
  static constexpr bool boxed = !std::is_nothrow_move_constructible_v<Payload>;

  template <class P>
  explicit payload_box(std::in_place_t, P&& p) : v_(make(std::forward<P>(p))) {}
  payload_box(payload_box&&) noexcept = default;
  payload_box& operator=(payload_box&&) noexcept = default;

  Payload& get() noexcept {
    if constexpr (boxed) {
      return *v_;
    } else {
      return v_;
    }
  }

 private:
  using storage = std::conditional_t<boxed, std::unique_ptr<Payload>, Payload>;
  template <class P>
  static storage make(P&& p) {
    if constexpr (boxed) {
      return std::make_unique<Payload>(std::forward<P>(p));
    } else {
      return Payload(std::forward<P>(p));
    }
  }
  storage v_;
};

// The router whose child subshell the calling thread runs, if any (join() refuses there).
inline constinit thread_local const void* router_child_thread_of = nullptr;

template <class Payload, class Reply>
struct router_handler {
  virtual ~router_handler() = default;
  virtual void handle(Payload&& p, reply_sender<Payload, Reply>& reply) = 0;
};

template <class Payload, class Reply>
struct router_factory {
  virtual ~router_factory() = default;
  virtual std::unique_ptr<router_handler<Payload, Reply>> make(subshell_id id) = 0;
};

// One subshell as the router sees it.
template <class Payload, class Reply>
struct router_subshell {
  router_subshell(router_engine<Payload, Reply>* r, subshell_id i, routing_errc unrun) noexcept
      : owner(r), id(i), unrun_code(unrun) {}

  router_engine<Payload, Reply>* const owner;
  const subshell_id id;
  const routing_errc unrun_code;  // for a task destroyed unrun with no cancel code set
  executor* ex = nullptr;          // the parent's executor, or own_ex
  std::unique_ptr<executor> own_ex;  // children only
  // Made, used and destroyed on the subshell's thread (the parent's: see router.hpp's banner).
  std::unique_ptr<router_handler<Payload, Reply>> handler;

  // Router thread only: messages routed here, and those routed in the current inbox batch and
  // not yet handed to the executor (one task per subshell per batch; see serve_inbox()).
  std::uint64_t accepted_local = 0;
  std::vector<std::pair<std::uint64_t, payload_box<Payload>>> staged;
  // A copy of accepted_local for stats and the reaper: written by the router thread.
  std::atomic<std::uint64_t> accepted{0};
  // Raised by whichever thread finishes a message (the subshell's, or the router's when its
  // executor refuses the task); read by stats and the reaper. Off the router's line.
  alignas(detail::cache_line) std::atomic<std::uint64_t> answered{0};
  std::atomic<std::uint64_t> failed{0};  // written as answered; read by stats
  // 0, or the routing_errc with which queued tasks answer instead of running: set by the
  // router thread (delete or shutdown with cancel), read by the subshell's tasks.
  std::atomic<std::uint8_t> cancel_code{0};

  // ---- interruption: the stop state of the message running now ----
  // phase says whether a handler runs and whether its message has a stop state yet. The
  // subshell thread moves it idle -> running -> idle around each handler call without a lock;
  // a stop state is made on demand, by the first stop_token() (subshell thread) or
  // interrupt() (router thread) for that message, so a message nobody asks about or
  // interrupts takes no lock and allocates nothing. Only those two take stop_mutex, and only
  // they move running -> stopping, under it; stop is touched only under it. The mutex is never
  // held while a stop callback runs (request_stop() is called after unlocking).
  // An interrupt hits the message running when it takes effect (its move to stopping, or its
  // read of stopping): one aimed at a message that has just ended and been followed by the
  // next hits the next, as it would under any lock.
  enum : std::uint8_t { idle = 0, running = 1, stopping = 2 };
  std::atomic<std::uint8_t> phase{idle};
  std::mutex stop_mutex;
  std::stop_source stop{std::nostopstate};

  // Subshell thread, before the handler. relaxed: no data is published with it; the stop
  // state is published under stop_mutex, and stats() reads busy as a statistic.
  void begin_message() noexcept { phase.store(running, std::memory_order_relaxed); }
  void end_message() noexcept {
    // acq_rel [RS1]: pairs with the move to stopping ([RS2]), made under stop_mutex. Seeing
    // stopping, we take the lock to drop the stop state; seeing running, no stop state was
    // made for this message (the RMW reads the last value in phase's modification order, so
    // a later move to stopping would have found idle and given up).
    if (phase.exchange(idle, std::memory_order_acq_rel) != stopping) return;
    std::stop_source done{std::nostopstate};
    {
      std::lock_guard lock(stop_mutex);
      done.swap(stop);
    }
  }
  // Any thread: a handler runs now (stats).
  bool busy() const noexcept { return phase.load(std::memory_order_relaxed) != idle; }  // a statistic

  // The running message's token (a token that never stops outside a handler). May throw
  // std::bad_alloc (the first call for a message allocates its stop state).
  std::stop_token stop_token() {
    std::lock_guard lock(stop_mutex);
    if (!make_stop_state()) return {};
    return stop.get_token();
  }
  // Requests stop for the running message; false when none runs. Its stop callbacks run here,
  // on the calling thread, after the lock is released. May throw std::bad_alloc.
  bool interrupt() {
    std::stop_source target{std::nostopstate};
    {
      std::lock_guard lock(stop_mutex);
      if (!make_stop_state()) return false;
      target = stop;
    }
    target.request_stop();
    return true;
  }

 private:
  // Under stop_mutex: true when a message runs, with its stop state made.
  bool make_stop_state() {
    std::uint8_t p = phase.load(std::memory_order_relaxed);  // relaxed: the CAS below decides
    if (p == idle) return false;
    if (p == stopping) return true;
    std::stop_source fresh;  // may throw std::bad_alloc; nothing changed yet
    // acq_rel [RS2]: pairs with [RS1]. Fails when the message ended meanwhile.
    if (!phase.compare_exchange_strong(p, stopping, std::memory_order_acq_rel, std::memory_order_relaxed)) {
      return false;
    }
    stop = std::move(fresh);
    return true;
  }
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
  void handle(Payload&& p, reply_sender<Payload, Reply>& reply) override {
    if constexpr (std::is_invocable_v<H&, Payload&&, reply_sender<Payload, Reply>&>) {
      std::invoke(fn, std::move(p), reply);
    } else if constexpr (std::is_invocable_r_v<Reply, H&, Payload&&, std::stop_token>) {
      reply.send(Reply(std::invoke(fn, std::move(p), reply.stop_token())));
    } else {
      reply.send(Reply(std::invoke(fn, std::move(p))));
    }
  }
  H fn;
};

// A handler of either form (see router.hpp's banner).
template <class H, class Payload, class Reply>
inline constexpr bool router_handler_v = std::is_invocable_v<H&, Payload&&, reply_sender<Payload, Reply>&> ||
                                         std::is_invocable_r_v<Reply, H&, Payload&&, std::stop_token> ||
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

// ---- tether/detail/router/engine.hpp ----------------------------------------
// tether/detail/router/engine.hpp - the engine behind tether::router: the inboxes and
// outboxes, the subshell table, routing, control serving, the reaper and the parent drive.
//
// router.hpp holds the contract; this holds how. Nothing here is public API.
//
// Threads: the router thread waits (a poller) on two inboxes - envelopes and direct control
// calls on the shell inbox, control requests on the control inbox - and owns the subshell
// table. It reads only an envelope's id; the messages one inbox batch holds for a subshell
// travel as one task (one queue push, at most one wake-up). A child subshell runs on its own
// executor's thread; the parent on the caller's executor. The reaper thread joins deleted
// subshells and, at the end, closes the outboxes.
//
// Exactly one reply per accepted message: each message is carried by a task (delivery)
// that, run, calls the handler and, destroyed unrun, answers with an error and the payload.
// Every step that could fail to allocate is followed by an answer that cannot be lost: an
// error reply that cannot be described for want of memory uses a preallocated one
// (routed_reply's fallback), and a reply push that cannot allocate a queue block is retried
// (the reply is late, never lost). The router thread catches what it calls (allocation, a
// thread start, a post) and answers the message or request concerned, then goes on serving.
// A Payload whose move may throw travels boxed (payload_box), so the router thread never
// moves one.
//
// Who may call what: as router.hpp says for the public calls; each member says who touches it.
//
// Memory ordering: a message crosses two single-consumer queues (inbox -> the subshell's
// executor) and its reply a third (the outbox); each hop is the queue's release publish and
// acquire take. [RA1]/[RA2] each subshell's `answered` count is raised (release) after the
// message's reply is pushed and its handler has returned; the reaper's acquire loads of it
// happen before it closes the outbox, so a receiver that sees replies() closed has every
// reply. [RC1]/[RC2] a cancel code is stored (release) before the executor stop that it
// explains and loaded (acquire) by the task it turns into an error reply.

#include <unordered_map>


namespace tether::detail {

// Runs f until it does not throw std::bad_alloc, sleeping a little between tries: for the
// steps whose failure would lose an answer (an outbox push, a control reply). Memory comes
// back as the receiver takes replies; until then the answer is late, not lost.
template <class F>
void retry_on_bad_alloc(F&& f) noexcept {
  for (;;) {
    try {
      f();
      return;
    } catch (...) {  // only bad_alloc can come out of the steps given here
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

template <class Payload, class Reply>
class router_engine {
  using subshell = router_subshell<Payload, Reply>;
  using box = payload_box<Payload>;

 public:
  using reply_type = routed_reply<Payload, Reply>;
  using sender_type = reply_sender<Payload, Reply>;

  // Registers the inboxes with the router thread's poller and makes the parent's handler
  // here (exceptions propagate: nothing is started yet), then starts the router thread.
  router_engine(executor& parent, std::unique_ptr<router_factory<Payload, Reply>> factory, std::string name,
                bool subshell_metrics = false)
      : name_(std::move(name)),
        subshell_metrics_(subshell_metrics),
        factory_(std::move(factory)),
        parent_(this, parent_subshell, routing_errc::subshell_stopped),
        reaper_(executor_options{.name = name_ + "-reaper", .on_error = [](std::exception_ptr) {}}) {
    reply_type::warm_up();  // the preallocated error replies exist before any message
    poller_.add(inbox_).add(control_in_);
    parent_.ex = &parent;
    parent_.handler = factory_->make(parent_subshell);
    thread_ = std::thread([this] { thread_main(); });
  }

  router_engine(const router_engine&) = delete;
  router_engine& operator=(const router_engine&) = delete;

  // ---- the public calls (router.hpp delegates) -------------------------------------------------

  template <class P>
  push_result send(subshell_id id, P&& payload, std::uint64_t tag) {
    return inbox_.emplace(id, std::forward<P>(payload), tag) ? status::ok : status::closed;
  }

  template <class Request>
  push_result send_control(Request&& req) {
    return control_in_.emplace(std::forward<Request>(req), nullptr, false) ? status::ok : status::closed;
  }

  mpsc_queue<reply_type>& outbox() noexcept { return outbox_; }
  mpsc_queue<control_reply>& control_outbox() noexcept { return control_out_; }

  // A control request through the shell inbox, answered by the router thread. Never throws
  // for an outcome: a refusal is the reply's error (router_stopped once stopped).
  control_reply call(control_request req) {
    detail::call_slot<control_reply> slot;
    const control_request copy = req;
    command c(std::move(req), &slot, false);
    if (!inbox_.emplace(&c))
      return error_reply(copy.op, copy.tag, copy.subshell, routing_errc::router_stopped,
                         "the router is stopped and no longer accepts control requests");
    slot.wait(true);  // spin briefly first: the router thread answers promptly
    return slot.take();
  }

  bool stop(stop_mode mode) noexcept {
    if (mode == stop_mode::cancel) cancel_.store(true, std::memory_order_seq_cst);  // before the close: seen with it
    const bool first = !stopping_.exchange(true, std::memory_order_seq_cst);
    inbox_.close();
    control_in_.close();
    return first;
  }

  void join() {
    (void)wait_finished(no_deadline);
    bool expected = false;
    // acq_rel: one joiner claims the std::thread.
    if (thread_join_claimed_.compare_exchange_strong(expected, true, std::memory_order_acq_rel) && thread_.joinable())
      thread_.join();
    reaper_.join();
  }

  // true once finished; false at the deadline. See router::join().
  bool wait_finished(steady_time deadline) {
    if (is_finished()) return true;
    if (!is_stopped())
      throw std::logic_error("tether: join() on router '" + name_ + "' before stop(): it would wait forever");
    if (router_child_thread_of == this)
      throw deadlock_error("tether: join() on router '" + name_ + "' from " + describe_this_thread() +
                               ", one of its own child subshells, would wait for itself (the router joins its "
                               "subshells); call stop() there and join() elsewhere",
                           {name_});
    if (parent_.ex->running_in_this_thread() && !drive_parent(deadline)) return false;
    return park_until(state_wait_, [this] { return finished_.load(std::memory_order_seq_cst); }, deadline);
  }

  bool is_stopped() const noexcept { return stopping_.load(std::memory_order_seq_cst); }
  bool is_finished() const noexcept { return finished_.load(std::memory_order_seq_cst); }
  const std::string& name() const noexcept { return name_; }

  // reply_sender::send(): the handler's value. Exceptions (an allocation, Reply's move)
  // reach the handler, which then counts as having thrown before replying.
  void push_value(subshell& s, std::uint64_t tag, Reply&& r) { (void)outbox_.emplace(s.id, tag, std::move(r)); }

 private:
  // A control request: from send_control (waiter null: reply on control_out_), a direct call
  // (waiter: complete it) or the router itself (internal: no reply of its own).
  struct command {
    command(control_request&& r, call_slot<control_reply>* w, bool i, std::exception_ptr f = {}) noexcept
        : request(std::move(r)), waiter(w), internal(i), failure(std::move(f)) {}
    command(const control_request& r, call_slot<control_reply>* w, bool i) noexcept
        : request(r), waiter(w), internal(i) {}
    control_request request;
    call_slot<control_reply>* waiter;
    bool internal;
    // Internal removal of a subshell whose factory threw: the exception, for the create it
    // answers once the subshell is gone.
    std::exception_ptr failure;
  };

  // What the inbox carries: a message (its header and payload), or a direct control call
  // (ctl: the caller's command, on its stack until the call returns). Moving it never throws.
  struct inbox_item {
    template <class P>
    inbox_item(subshell_id s, P&& p, std::uint64_t t)
        : subshell(s), tag(t), payload(std::in_place, std::in_place, std::forward<P>(p)) {}
    explicit inbox_item(command* c) noexcept : ctl(c) {}
    subshell_id subshell{};
    std::uint64_t tag = 0;
    std::optional<box> payload;
    command* ctl = nullptr;
  };
  static_assert(std::is_nothrow_move_constructible_v<inbox_item>);

  // Whether an object is being destroyed by an exception that was not yet in flight when it
  // was made (its task's post threw).
  struct unwinding_probe {
    int at_birth = std::uncaught_exceptions();
    bool unwinding() const noexcept { return std::uncaught_exceptions() > at_birth; }
  };

  // The task that carries one message to its subshell: the reply obligation. Run, it calls
  // the handler; destroyed unrun (executor refused it, stop(cancel), or its post threw), it
  // answers with an error and hands the payload back. Either way, exactly one reply.
  struct delivery {
    delivery(subshell* s, std::uint64_t t, box&& p) noexcept : sub(s), tag(t), payload(std::move(p)) {}
    delivery(delivery&& o) noexcept : sub(std::exchange(o.sub, nullptr)), tag(o.tag), payload(std::move(o.payload)) {}
    delivery& operator=(delivery&&) = delete;
    void operator()() noexcept {
      subshell* s = std::exchange(sub, nullptr);
      s->owner->run_delivery(*s, tag, payload);
    }
    ~delivery() {
      if (sub != nullptr) sub->owner->answer_unrun(*sub, tag, payload, probe.unwinding());
    }
    subshell* sub;
    std::uint64_t tag;
    box payload;
    unwinding_probe probe;
  };

  // Several messages for one subshell from one inbox batch, as one task: one queue push and at
  // most one wake-up instead of one per message. Each message is answered as delivery's is;
  // destroyed part-way (stop(cancel), or its post threw), it answers the rest.
  struct delivery_batch {
    delivery_batch(subshell* s, std::vector<std::pair<std::uint64_t, box>>&& m) noexcept
        : sub(s), items(std::move(m)) {}
    delivery_batch(delivery_batch&& o) noexcept
        : sub(std::exchange(o.sub, nullptr)), items(std::move(o.items)), next(o.next) {}
    delivery_batch& operator=(delivery_batch&&) = delete;
    void operator()() noexcept {
      while (next < items.size()) {
        auto& [tag, payload] = items[next++];
        sub->owner->run_delivery(*sub, tag, payload);
      }
      sub = nullptr;
    }
    ~delivery_batch() {
      if (sub == nullptr) return;
      const bool failed = probe.unwinding();
      for (; next < items.size(); ++next) sub->owner->answer_unrun(*sub, items[next].first, items[next].second, failed);
    }
    subshell* sub;
    std::vector<std::pair<std::uint64_t, box>> items;
    std::size_t next = 0;  // the first message not yet run
    unwinding_probe probe;
  };

  // A child's first task: makes its handler on its own thread, then answers the create.
  struct init_job {
    init_job(router_engine* r, subshell* s, call_slot<control_reply>* w, std::uint64_t t) noexcept
        : owner(r), sub(s), waiter(w), tag(t) {}
    init_job(init_job&& o) noexcept : owner(o.owner), sub(std::exchange(o.sub, nullptr)), waiter(o.waiter), tag(o.tag) {}
    void operator()() noexcept { owner->init_subshell(*std::exchange(sub, nullptr), waiter, tag); }
    ~init_job() {
      if (sub != nullptr) owner->init_dropped(*sub, waiter, tag, probe.unwinding());
    }
    router_engine* owner;
    subshell* sub;
    call_slot<control_reply>* waiter;
    std::uint64_t tag;
    unwinding_probe probe;
  };

  // ---- replies (any thread that answers a message) ---------------------------------------------

  // Answers a message with an error, handing back its payload when given (and when moving it
  // into the reply works). Cannot fail: with no memory to describe the error, the reply is a
  // preallocated one; the push is retried until a queue block can be had.
  void push_error(subshell& s, std::uint64_t tag, routing_errc code, const char* why, box* back) noexcept {
    push_error(s.id, tag, code, why, back);
    s.failed.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  }
  // why == nullptr: the preallocated reply at once.
  void push_error(subshell_id id, std::uint64_t tag, routing_errc code, const char* why, box* back) noexcept {
    std::optional<reply_type> r;
    try {
      if (why == nullptr) throw std::bad_alloc();
      routing_error e(code, id, describe(id, why));
      if (back != nullptr) {
        try {
          r.emplace(id, tag, std::move(e), std::move(back->get()));
        } catch (...) {  // the payload's move (or the reply's allocation) threw: answer without it
          r.emplace(id, tag, routing_error(code, id, describe(id, std::string(why) + " (the payload could not be "
                                                                                     "handed back)")));
        }
      } else {
        r.emplace(id, tag, std::move(e));
      }
    } catch (...) {  // out of memory describing it
      r.reset();
      r.emplace(reply_type(id, tag, code));
    }
    retry_on_bad_alloc([&] { (void)outbox_.push(std::move(*r)); });
  }

  // The message is finished: its reply is out and no handler runs for it any more. The count
  // is the last touch of the router; only the parent's finish is waited for (children are
  // joined instead).
  void settle(subshell& s) noexcept {
    const bool parent = s.id.is_parent();
    const void* key = &s;
    s.answered.fetch_add(1, std::memory_order_release);  // [RA1] release: pairs with [RA2] in finish()
    if (parent) router_settle_parker(key).notify_all();
  }

  std::string describe(subshell_id id, const std::string& why) const {
    const std::string who = id.is_parent() ? std::string("the parent subshell") : id.to_string();
    return "tether: router '" + name_ + "': " + who + ": " + why;
  }

  static const char* reason(routing_errc code) noexcept {
    switch (code) {
      case routing_errc::subshell_deleted: return "the subshell was deleted; the message was not run";
      case routing_errc::subshell_stopped: return "its executor is stopped; the message was not run";  // see answer_unrun()
      case routing_errc::router_stopped: return "the router was stopped (cancel) before the message ran";
      case routing_errc::delivery_failed:
        return "the message could not be handed to its subshell (out of memory); it was not run";
      default: return to_string(code);
    }
  }

  // ---- the subshell side ---------------------------------------------------------------------

  // Subshell thread: runs one message (or answers it with the cancel code). Exactly one reply.
  void run_delivery(subshell& s, std::uint64_t tag, box& payload) noexcept {
    // [RC2] acquire: pairs with [RC1]; the cancel code is set before the stop it explains.
    if (const std::uint8_t c = s.cancel_code.load(std::memory_order_acquire); c != 0) {
      push_error(s, tag, routing_errc{c}, reason(routing_errc{c}), &payload);
      settle(s);
      return;
    }
    sender_type reply(this, &s, tag);
    s.begin_message();
    const char* failure = nullptr;
    std::exception_ptr thrown;
    try {
      if (s.handler) {
        s.handler->handle(std::move(payload.get()), reply);
      } else {
        failure = "the subshell has no handler (its factory threw)";
      }
    } catch (...) {
      thrown = std::current_exception();  // refers to the exception in flight: no allocation
    }
    s.end_message();
    if (!reply.replied()) {
      if (thrown) {
        push_handler_threw(s, tag, thrown);
      } else {
        push_error(s, tag, failure != nullptr ? routing_errc::handler_threw : routing_errc::no_reply,
                   failure != nullptr ? failure : "the handler returned without replying", nullptr);
      }
    }
    settle(s);
  }

  void push_handler_threw(subshell& s, std::uint64_t tag, const std::exception_ptr& thrown) noexcept {
    std::string what;
    try {
      try {
        std::rethrow_exception(thrown);
      } catch (const std::exception& e) {
        what = std::string("the handler threw: ") + e.what();
      } catch (...) {
        what = "the handler threw a non-standard exception";
      }
    } catch (...) {  // out of memory for the text: the preallocated reply says handler_threw
      push_error(s, tag, routing_errc::handler_threw, nullptr, nullptr);
      return;
    }
    push_error(s, tag, routing_errc::handler_threw, what.c_str(), nullptr);
  }

  // Any thread: a delivery destroyed unrun; failed: because its post threw.
  void answer_unrun(subshell& s, std::uint64_t tag, box& payload, bool failed) noexcept {
    // [RC2] acquire: as in run_delivery().
    const std::uint8_t c = s.cancel_code.load(std::memory_order_acquire);
    const routing_errc code = failed ? routing_errc::delivery_failed : c != 0 ? routing_errc{c} : s.unrun_code;
    if (code == routing_errc::subshell_stopped) {  // name the executor
      std::string why;
      try {
        why = "its executor '" + s.ex->name() + "' is stopped; the message was not run";
      } catch (...) {  // out of memory: the short form
      }
      push_error(s, tag, code, why.empty() ? reason(code) : why.c_str(), &payload);
    } else {
      push_error(s, tag, code, reason(code), &payload);
    }
    settle(s);
  }

  // Child thread: makes the handler, answers the create.
  void init_subshell(subshell& s, call_slot<control_reply>* waiter, std::uint64_t tag) noexcept {
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
    // The router removes it, then answers the create. Stopping, the router stops it anyway:
    // answer here. The exception moves with the request (a closed queue leaves it here), so
    // the thread that reads it also drops the last reference: libstdc++ counts exception_ptr
    // references with atomics ThreadSanitizer does not see, and would report this thread
    // freeing the exception after the router read it.
    bool queued = false;
    try {
      queued = static_cast<bool>(
          control_in_.emplace(control_request::remove(s.id, stop_mode::drain, tag), waiter, true, std::move(failure)));
    } catch (...) {  // out of memory: answer here; the subshell stays, without a handler
    }
    if (!queued) answer_failed_create(waiter, tag, s.id, failure);
  }

  void answer_failed_create(call_slot<control_reply>* waiter, std::uint64_t tag, subshell_id id,
                            const std::exception_ptr& failure) noexcept {
    std::string what = "the handler factory threw";
    try {
      try {
        if (failure) std::rethrow_exception(failure);
      } catch (const std::exception& e) {
        what += std::string(": ") + e.what();
      } catch (...) {
      }
    } catch (...) {  // out of memory for the text: keep what we have
    }
    answer(waiter, false, error_reply(control_op::create_subshell, tag, id, routing_errc::create_failed, what));
  }

  // Any thread: a child's init task destroyed unrun (deleted, stopped with cancel, or its post
  // threw).
  void init_dropped(subshell& s, call_slot<control_reply>* waiter, std::uint64_t tag, bool failed) noexcept {
    const std::uint8_t c = s.cancel_code.load(std::memory_order_acquire);  // [RC2] acquire: as above
    const routing_errc code = failed ? routing_errc::create_failed : c != 0 ? routing_errc{c} : routing_errc::router_stopped;
    answer(waiter, false,
           error_reply(control_op::create_subshell, tag, s.id, code,
                       failed ? "its first task could not be queued (out of memory)" : reason(code)));
  }

  // An error answer to a control request. Cannot fail: retried while memory is short.
  control_reply error_reply(control_op op, std::uint64_t tag, subshell_id id, routing_errc code,
                            std::string_view why) const noexcept {
    std::optional<control_reply> r;
    retry_on_bad_alloc([&] {
      r.emplace(control_reply{op, tag, id, {}, routing_error(code, id, describe(id, std::string(why)))});
    });
    return std::move(*r);
  }

  // Completes a control request: the direct caller's slot, or the control outbox.
  void answer(call_slot<control_reply>* waiter, bool internal, control_reply&& r) noexcept {
    if (waiter != nullptr) {
      waiter->run([&r]() noexcept -> control_reply { return std::move(r); });
    } else if (!internal) {
      retry_on_bad_alloc([&] { (void)control_out_.push(std::move(r)); });
    }
  }

  // ---- the router thread -----------------------------------------------------------------------

  void thread_main() noexcept {
    try {
      set_this_thread_name(name_);
    } catch (...) {  // a name is a courtesy
    }
    const source_id inbox_id = source_id::of(inbox_);
    bool inbox_open = true;
    bool control_open = true;
    while (inbox_open || control_open) {
      const source_id ready = poller_.wait();
      if (ready == inbox_id) {
        if (!serve_inbox()) {
          poller_.remove(inbox_);
          inbox_open = false;
        }
      } else if (!serve_control()) {
        poller_.remove(control_in_);
        control_open = false;
      }
    }
    finish_routing();
  }

  // Routes up to a batch of envelopes, then hands each subshell its share as one task. false
  // once the inbox is closed and drained.
  bool serve_inbox() noexcept {
    // A bigger batch gives each subshell more messages per task (fewer wake-ups); a smaller one
    // lets a control request in sooner.
    constexpr std::size_t batch = 1024;
    bool open = true;
    if (inbox_.try_pop_each([this](inbox_item&& e) noexcept { route(std::move(e)); }, batch) < batch) {
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
  // A refused post (the parent's executor stopped) answers them from the task's destructor;
  // so does a post that throws (out of memory), with delivery_failed.
  void hand_over() noexcept {
    for (subshell* s : staged_) {
      if (s->staged.empty()) continue;  // listed twice, or its message could not be staged
      try {
        if (s->staged.size() == 1) {
          auto& [tag, payload] = s->staged.front();
          (void)s->ex->post(delivery(s, tag, std::move(payload)));
        } else {
          (void)s->ex->post(delivery_batch(s, std::move(s->staged)));
        }
      } catch (...) {  // the task's destructor answered its messages
      }
      s->staged.clear();  // moved from: make it empty for certain
    }
    staged_.clear();
  }

  bool serve_control() noexcept {
    constexpr std::size_t batch = 16;
    if (control_in_.try_pop_each([this](command&& c) noexcept { serve(c); }, batch) == batch) return true;
    pop_result<command> r = control_in_.try_pop();
    if (r) {
      serve(*r);
      return true;
    }
    return !r.is_closed();
  }

  // Reads the envelope's id, never its payload, and hands the payload on.
  void route(inbox_item&& e) noexcept {
    if (e.ctl != nullptr) {
      hand_over();  // the messages before it reach their subshells first (a delete drains them)
      serve(*e.ctl);
      return;
    }
    // relaxed: a cancel racing this message may go either way; the close after it is seq_cst.
    if (cancel_.load(std::memory_order_relaxed)) {
      push_error(e.subshell, e.tag, routing_errc::router_stopped,
                 "the router was stopped (cancel) before the message was routed", &*e.payload);
      return;
    }
    subshell* s = find(e.subshell);
    if (s == nullptr) {
      if (e.subshell.value() < next_id_)
        push_error(e.subshell, e.tag, routing_errc::subshell_deleted,
                   "the subshell was deleted; the message was not run", &*e.payload);
      else
        push_error(e.subshell, e.tag, routing_errc::unknown_subshell,
                   "no such subshell was ever created; the message was not run", &*e.payload);
      return;
    }
    try {
      if (s->staged.empty()) staged_.push_back(s);
      s->staged.emplace_back(e.tag, std::move(*e.payload));  // strong guarantee: a failure leaves e whole
    } catch (...) {
      push_error(e.subshell, e.tag, routing_errc::delivery_failed,
                 "the message could not be queued for its subshell (out of memory); it was not run", &*e.payload);
      return;
    }
    s->accepted.store(++s->accepted_local, std::memory_order_relaxed);  // relaxed: published by the post in hand_over()
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
  // so everything here works on a copy. Every request is answered once: what throws in here
  // (an allocation, a thread start) is answered as the request's error.
  void serve(const command& in) noexcept {
    const command c = in;
    const control_request& q = c.request;
    if (stopping_.load(std::memory_order_seq_cst) && !c.internal) {
      answer(c.waiter, false,
             error_reply(q.op, q.tag, q.subshell, routing_errc::router_stopped, "the router is stopped; request refused"));
      return;
    }
    switch (q.op) {
      case control_op::create_subshell: create(c); return;
      case control_op::delete_subshell: remove(c); return;
      case control_op::interrupt: interrupt(c); return;
      case control_op::list_subshells:
      case control_op::subshell_stats: {
        std::optional<control_reply> r;
        try {
          r.emplace(control_reply{q.op, q.tag, {}, {}, std::nullopt});
          if (q.op == control_op::subshell_stats) r->subshells.push_back(snapshot(parent_));
          std::vector<const subshell*> children;
          children.reserve(table_.size());
          for (const auto& entry : table_) children.push_back(entry.second.get());
          std::sort(children.begin(), children.end(), [](const subshell* a, const subshell* b) { return a->id < b->id; });
          for (const subshell* s : children) r->subshells.push_back(snapshot(*s));
        } catch (...) {
          answer(c.waiter, c.internal,
                 error_reply(q.op, q.tag, q.subshell, routing_errc::delivery_failed, "out of memory for the answer"));
          return;
        }
        answer(c.waiter, c.internal, std::move(*r));
        return;
      }
    }
    answer(c.waiter, c.internal,
           error_reply(q.op, q.tag, q.subshell, routing_errc::invalid_request, "unknown control operation"));
  }

  // Requests stop on the token of the message running on the subshell (the parent included);
  // ok also when none runs. Its stop callbacks run here, on the router thread.
  void interrupt(const command& c) noexcept {
    const control_request& q = c.request;
    subshell* s = find(q.subshell);
    if (s == nullptr) {
      const bool was = q.subshell.value() < next_id_;
      answer(c.waiter, c.internal,
             error_reply(q.op, q.tag, q.subshell, was ? routing_errc::subshell_deleted : routing_errc::unknown_subshell,
                         was ? "the subshell was deleted; nothing to interrupt" : "no such subshell was ever created"));
      return;
    }
    try {
      (void)s->interrupt();
    } catch (...) {
      answer(c.waiter, c.internal,
             error_reply(q.op, q.tag, q.subshell, routing_errc::delivery_failed, "out of memory for the stop state"));
      return;
    }
    answer(c.waiter, c.internal, control_reply{q.op, q.tag, q.subshell, {}, std::nullopt});
  }

  subshell_stats snapshot(const subshell& s) const {
    // relaxed (all four): statistics.
    return {s.id, s.ex->name(), s.accepted.load(std::memory_order_relaxed), s.answered.load(std::memory_order_relaxed),
            s.failed.load(std::memory_order_relaxed), s.busy(), s.ex->stats()};
  }

  // Starts the child's executor (the one thing here that takes a while: a thread start) and
  // queues its init task; the create is answered from the child's thread.
  void create(const command& c) noexcept {
    const subshell_id id{next_id_++};
    subshell* raw = nullptr;
    try {
      auto s = std::make_unique<subshell>(this, id, routing_errc::subshell_deleted);
      raw = s.get();
      s->own_ex = std::make_unique<executor>(executor_options{
          .name = id.to_string(),
          .on_start = [this] { router_child_thread_of = this; },
          .on_stop = [raw] { raw->handler.reset(); },  // the handler dies on its own thread
          .on_error = [](std::exception_ptr) {},       // its tasks never throw
          .metrics = subshell_metrics_,
      });
      s->ex = s->own_ex.get();
      table_.emplace(id.value(), std::move(s));  // on failure s (and its thread) go here
    } catch (const std::exception& e) {
      answer_create_failed(c, id, e.what());
      return;
    } catch (...) {
      answer_create_failed(c, id, "a non-standard exception");
      return;
    }
    try {
      (void)raw->ex->post(init_job(this, raw, c.waiter, c.request.tag));  // a fresh executor accepts
    } catch (...) {  // the init task's destructor answered the create: take the subshell out
      take_out(id, stop_mode::drain, routing_errc::subshell_deleted, false, 0);
    }
  }

  void answer_create_failed(const command& c, subshell_id id, const char* what) noexcept {
    std::string why;
    try {
      why = std::string("its thread could not be started: ") + what;
    } catch (...) {
    }
    answer(c.waiter, c.internal, error_reply(control_op::create_subshell, c.request.tag, id, routing_errc::create_failed, why));
  }

  void remove(const command& c) noexcept {
    const control_request& q = c.request;
    if (q.subshell.is_parent()) {
      answer(c.waiter, c.internal,
             error_reply(q.op, q.tag, q.subshell, routing_errc::invalid_request, "the parent subshell cannot be deleted"));
      return;
    }
    if (table_.find(q.subshell.value()) != table_.end()) {
      // A direct delete is answered now; one from the control channel once reaped.
      if (c.waiter != nullptr && !c.failure)
        answer(c.waiter, false, control_reply{q.op, q.tag, q.subshell, {}, std::nullopt});
      take_out(q.subshell, q.policy, routing_errc::subshell_deleted, c.waiter == nullptr && !c.internal, q.tag);
    } else if (!c.failure) {
      const bool was = q.subshell.value() < next_id_;
      answer(c.waiter, c.internal,
             error_reply(q.op, q.tag, q.subshell, was ? routing_errc::subshell_deleted : routing_errc::unknown_subshell,
                         was ? "already deleted" : "no such subshell was ever created"));
    }
    if (c.failure) answer_failed_create(c.waiter, q.tag, q.subshell, c.failure);  // it is gone now
  }

  // Takes a child out of the table and retires it.
  void take_out(subshell_id id, stop_mode mode, routing_errc code, bool reply, std::uint64_t tag) noexcept {
    const auto it = table_.find(id.value());
    if (it == table_.end()) return;
    std::unique_ptr<subshell> s = std::move(it->second);
    table_.erase(it);
    if (cached_id_ == id) cached_id_ = parent_subshell;
    retire(std::move(s), mode, code, reply, tag);
  }

  // Stops a child (never waits for it) and gives it to the reaper, which joins its thread,
  // then (for a control-channel delete) answers. If the reaper cannot take it (out of
  // memory), the calling thread reaps it.
  void retire(std::unique_ptr<subshell> s, stop_mode mode, routing_errc code, bool reply, std::uint64_t tag) noexcept {
    // [RC1] release: the code is visible to the tasks that stop(cancel) turns away.
    if (mode == stop_mode::cancel) {
      s->cancel_code.store(static_cast<std::uint8_t>(code), std::memory_order_release);
      interrupt_quietly(*s);  // the running handler's stop token: it may end early
    }
    s->ex->stop(mode);
    subshell* raw = s.release();
    bool posted = false;
    try {
      posted = static_cast<bool>(reaper_.post([this, raw, reply, tag]() noexcept { reap(raw, reply, tag); }));
    } catch (...) {
    }
    if (!posted) reap(raw, reply, tag);
  }

  // As interrupt(), for a cancel: out of memory for the stop state, the handler simply runs on.
  static void interrupt_quietly(subshell& s) noexcept {
    try {
      (void)s.interrupt();
    } catch (...) {
    }
  }

  void reap(subshell* raw, bool reply, std::uint64_t tag) noexcept {
    std::unique_ptr<subshell> s(raw);
    const subshell_id id = s->id;
    s->own_ex.reset();  // joins the subshell's thread: its last message is answered
    s.reset();
    if (reply) answer(nullptr, false, control_reply{control_op::delete_subshell, tag, id, {}, std::nullopt});
  }

  // Router thread, once both inboxes are closed and drained: stop every child the same way,
  // let the parent's pending tasks answer router_stopped on cancel, and have the reaper close
  // the outboxes once all is answered.
  void finish_routing() noexcept {
    const bool cancelled = cancel_.load(std::memory_order_seq_cst);
    const stop_mode mode = cancelled ? stop_mode::cancel : stop_mode::drain;
    for (auto& entry : table_) retire(std::move(entry.second), mode, routing_errc::router_stopped, false, 0);
    table_.clear();
    cached_id_ = parent_subshell;
    if (cancelled) {  // [RC1] release: as in retire()
      parent_.cancel_code.store(static_cast<std::uint8_t>(routing_errc::router_stopped), std::memory_order_release);
      interrupt_quietly(parent_);
    }
    const std::uint64_t parent_accepted = parent_.accepted_local;
    bool posted = false;
    try {
      posted = static_cast<bool>(reaper_.post([this, parent_accepted]() noexcept { finish(parent_accepted); }));
    } catch (...) {
    }
    routing_done_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    state_wait_.notify_all();
    if (!posted) finish(parent_accepted);  // the reaper could not take it: finish here
  }

  // Reaper thread (or the router thread), after every child was joined: waits for the
  // parent's answers, then closes.
  void finish(std::uint64_t parent_accepted) noexcept {
    // [RA2] the loads are seq_cst (acquire): pair with [RA1]; every parent reply is pushed.
    park_until(router_settle_parker(&parent_),
               [&] { return parent_.answered.load(std::memory_order_seq_cst) == parent_accepted; }, no_deadline);
    outbox_.close();
    control_out_.close();
    finished_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    state_wait_.notify_all();
    finished_source_.request_stop();  // a join() running the parent returns
    reaper_.stop(stop_mode::drain);
  }

  // On the parent's owner thread the router's last parent tasks need this thread. join()
  // runs the parent until the router has finished (so a child blocked on the parent, e.g. in
  // parent.call(), still gets through); the timed forms run once what the router handed over.
  // Inside one of the parent's tasks the parent cannot run here: then it only waits, unless
  // router messages are pending there (deadlock_error). false: the deadline passed.
  bool drive_parent(steady_time deadline) {
    const auto handed_over = [this] { return routing_done_.load(std::memory_order_seq_cst); };
    const auto parent_settled = [this] {
      // relaxed: after handed_over(), whose seq_cst load ordered the router's last store.
      return parent_.answered.load(std::memory_order_seq_cst) == parent_.accepted.load(std::memory_order_relaxed);
    };
    if (source_access::executor_in_run(*parent_.ex)) {
      if (!park_until(state_wait_, handed_over, deadline)) return false;
      if (parent_settled()) return true;  // nothing of ours is pending there
      throw deadlock_error("tether: join() on router '" + name_ + "' inside a task of its parent executor '" +
                               parent_.ex->name() +
                               "' would wait for the parent's own pending messages; call stop() there and "
                               "join() once the parent's task has returned",
                           {name_, parent_.ex->name()});
    }
    if (deadline == no_deadline) {
      (void)parent_.ex->run_until(finished_source_.get_token());
      return true;
    }
    if (!park_until(state_wait_, handed_over, deadline)) return false;
    if (!parent_settled()) (void)parent_.ex->try_run();
    return true;
  }

  const std::string name_;
  const bool subshell_metrics_;  // children's executors record metrics (router_options)
  std::unique_ptr<router_factory<Payload, Reply>> factory_;

  mpsc_queue<inbox_item> inbox_;           // any thread pushes; the router thread pops
  mpsc_queue<command> control_in_;         // any thread pushes; the router thread pops
  mpsc_queue<reply_type> outbox_;          // subshells (and the router) push; the client pops
  mpsc_queue<control_reply> control_out_;  // router, children, reaper push; the client pops
  poller poller_;                          // the router thread waits here on the two inboxes

  subshell parent_;

  // Router thread only: the children, the last lookup, and the subshells with staged messages.
  std::unordered_map<std::uint64_t, std::unique_ptr<subshell>> table_;
  std::vector<subshell*> staged_;
  std::uint64_t next_id_ = 1;
  subshell_id cached_id_ = parent_subshell;
  subshell* cached_ = nullptr;

  // Set once by stop(); read by the router thread, is_stopped() and join().
  std::atomic<bool> stopping_{false};
  std::atomic<bool> cancel_{false};        // set by stop(cancel); read by the router thread
  std::atomic<bool> routing_done_{false};  // set once by the router thread when it hands over
  std::atomic<bool> finished_{false};      // set once by the reaper after closing the outboxes
  std::atomic<bool> thread_join_claimed_{false};
  parker state_wait_;                 // joiners wait here for routing_done_ / finished_
  std::stop_source finished_source_;  // stopped with finished_: ends a join() running the parent

  executor reaper_;     // joins the threads of deleted subshells; after what its tasks touch
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace tether::detail

// ---- tether/router.hpp ------------------------------------------------------
// tether/router.hpp - a subshell router: messages routed by subshell id, one thread per
// subshell, every accepted message answered exactly once.
//
//   tether::executor main_ex{tether::adopt_current_thread};
//   tether::router<request, result> r{main_ex, [](tether::subshell_id id) {
//     return [state = session{id}](request&& q) mutable { return state.run(q); };  // a handler
//   }};
//   tether::subshell_id child = *r.create_subshell();  // its own thread and its own handler
//   r.send({tether::parent_subshell, long_request});    // runs on main_ex (main_ex.run())
//   r.send({child, quick_request, 7});                   // runs now, on the child's thread
//   auto reply = r.replies().pop();                      // {subshell, tag 7, result or error}
//
// The parent subshell runs on an executor the caller owns; each child, created at run time,
// on its own thread ("subshell-<id>") with its own handler, made by factory(id) on that
// thread (so factory calls may overlap). A handler is Reply(Payload&&), or
// void(Payload&&, tether::reply_sender<Payload, Reply>&), which may reply early and go on.
// One router thread routes by id and serves control requests (create, delete, list,
// stats); it never runs a handler, so control is served while every subshell is busy.
//
// Who may call what: send / send_control / the control calls / stop / is_stopped /
// is_finished / name - any thread, handlers included; replies() / control_replies() - one
// consumer thread at a time (a poller may watch them); join* / destructor - any thread but a
// child subshell's own (deadlock_error); on the parent's owner thread they run the parent.
//
// Guarantees: FIFO per subshell; exactly one reply per accepted message (send() returned
// ok): the handler's value, or a routing_error - a message that never reached a handler
// hands its payload back; an exception on the router thread (out of memory, a payload's
// throwing move) becomes that message's error reply, and routing goes on. Outcomes callers
// branch on are values (push_result, routing_result); exceptions only for misuse. No lock
// around user code; every thread parks when idle. Deleting a subshell never blocks routing.
//
// Memory ordering: a message's send happens before its handler runs, and the handler's
// writes before its reply is received; replies() closed means every reply is in it
// (detail/router/engine.hpp, [RA1]/[RA2]).
//
// After ipykernel's subshells (JEP 91: a shell-channel thread routing by subshell_id, a
// subshell manager for control requests), with a parking router in place of a polling one.



namespace tether {

// Handed to a handler of the form void(Payload&&, reply_sender&): send() answers the message
// (once; later calls return false). If the handler returns without sending, the message is
// answered with routing_errc::no_reply. Neither copyable nor movable: the reply belongs to
// the call. Subshell thread only (the thread running the handler).
template <class Payload, class Reply>
class reply_sender {
 public:
  reply_sender(const reply_sender&) = delete;
  reply_sender& operator=(const reply_sender&) = delete;

  // Sends the reply; true the first time, false (r untouched) once the message has one. An
  // exception (no memory for the reply, Reply's move) propagates and leaves it unsent.
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

  // Stopped when router::interrupt(subshell()) - or a control_request::interrupt for it -
  // arrives while this handler runs, or when delete_subshell(cancel) / stop(cancel) ends its
  // subshell; a handler that can stop early observes it, or hands it
  // to its runtime with a std::stop_callback. Such a callback runs on the thread that serves
  // the interrupt (the router thread): keep it short - set a flag, post to an executor -
  // since routing waits for it. The first call for a message allocates its stop state
  // (std::bad_alloc propagates); a message nobody asks about costs nothing.
  std::stop_token stop_token() const { return sub_->stop_token(); }
  std::uint64_t tag() const noexcept { return tag_; }

 private:
  friend class detail::router_engine<Payload, Reply>;
  reply_sender(detail::router_engine<Payload, Reply>* owner, detail::router_subshell<Payload, Reply>* sub,
               std::uint64_t tag) noexcept
      : owner_(owner), sub_(sub), tag_(tag) {}

  detail::router_engine<Payload, Reply>* owner_;
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

 public:
  using envelope_type = envelope<Payload>;
  using reply_type = routed_reply<Payload, Reply>;
  using sender_type = reply_sender<Payload, Reply>;

  // Makes the parent's handler here (factory(parent_subshell); its exception propagates),
  // then starts the router thread and the reaper. parent must outlive the router and run the
  // tasks the router gives it (for an adopting executor: run(), run_until() or try_run()).
  // Factory: callable with a subshell_id, returning a handler of either form (see the banner).
  template <class Factory>
  router(executor& parent, Factory factory, router_options options = {})
      : engine_(parent, make_factory(std::move(factory)), std::move(options.name), options.subshell_metrics) {}

  router(const router&) = delete;
  router& operator=(const router&) = delete;

  // stop(drain), then join(): every accepted message is answered and every thread joined
  // before it returns. Terminates the process (naming the cause) where join() would throw.
  ~router() {
    stop(stop_mode::drain);
    try {
      join();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tether: router '%s' destroyed where it cannot finish: %s\n", name().c_str(), e.what());
      std::terminate();
    }
  }

  // ---- the shell channel ---------------------------------------------------------------------

  // Hands e to the router; never blocks. ok: accepted - exactly one reply will come; closed
  // (after stop): refused, e untouched. An exception (no memory to queue it) means refused.
  // Thread-safe.
  push_result send(envelope_type&& e) { return engine_.send(e.subshell, std::move(e.payload), e.tag); }
  // As send({id, payload, tag}); on closed the payload is not moved from.
  template <class P>
    requires std::constructible_from<Payload, P&&>
  push_result send(subshell_id id, P&& payload, std::uint64_t tag = 0) {
    return engine_.send(id, std::forward<P>(payload), tag);
  }

  // The outbox, receive only: one reply per accepted message, in the order each subshell
  // produced them; closed once the router has finished and every reply is in. One consumer
  // thread at a time (pop, pop_for, pop_bulk, a poller ...).
  receiver<reply_type> replies() noexcept { return receiver<reply_type>(engine_.outbox()); }

  // ---- control: as messages ------------------------------------------------------------------

  // Hands a control request to the router; never blocks. ok or closed (req untouched). The
  // reply comes on control_replies(), with the request's tag: create - once the subshell's
  // handler is made (its id in reply.subshell); delete - once the subshell has finished
  // (every message it accepted is answered) and its thread is joined; list / stats - at once.
  // Replies may come out of request order: match them by tag. The control channel is
  // separate from the shell inbox (as in JEP 91): a request may overtake messages still
  // waiting there. The direct calls below are ordered with them instead.
  push_result send_control(control_request&& req) { return engine_.send_control(std::move(req)); }
  push_result send_control(const control_request& req) { return engine_.send_control(req); }

  // Receive only, as replies(). Closed once the router has finished.
  receiver<control_reply> control_replies() noexcept { return receiver<control_reply>(engine_.control_outbox()); }

  // ---- control: as calls ---------------------------------------------------------------------
  // Each travels through the shell inbox, so it takes effect after every message whose send()
  // happened before it (a delete with drain runs what this thread sent before it), and waits
  // for the router thread, which runs no user code: it answers as soon as the messages ahead
  // of it are routed, even while every subshell is busy. Each returns a routing_result: the
  // value, or the error (router_stopped once stop() was called). Thread-safe.

  // Creates a child subshell: starts its thread and makes its handler there; the id once the
  // handler exists. create_failed: the thread could not start, or the factory threw (the
  // message names the exception; the subshell is removed).
  routing_result<subshell_id> create_subshell() {
    control_reply r = engine_.call(control_request::create());
    if (r.error) return std::move(*r.error);
    return r.subshell;
  }

  // Deletes a child subshell: from now on messages for it are answered subshell_deleted.
  // drain: its queued messages still run; cancel: they are answered subshell_deleted, and
  // the running handler's stop token is stopped (it finishes, early if it watches the token). Returns as soon as it stops accepting - never waits for its
  // handler, so a subshell may delete itself. Errors: unknown_subshell (never created),
  // subshell_deleted (already deleted), invalid_request (the parent), router_stopped.
  routing_result<> delete_subshell(subshell_id id, stop_mode policy = stop_mode::drain) {
    control_reply r = engine_.call(control_request::remove(id, policy));
    if (r.error) return std::move(*r.error);
    return {};
  }

  // The children's ids, ascending (the parent is implicit, as in JEP 91).
  routing_result<std::vector<subshell_id>> list_subshells() {
    control_reply r = engine_.call(control_request::list());
    if (r.error) return std::move(*r.error);
    std::vector<subshell_id> ids;
    ids.reserve(r.subshells.size());
    for (const subshell_stats& s : r.subshells) ids.push_back(s.id);
    return ids;
  }

  // Interrupts the message running on subshell id (the parent included) now: requests stop
  // on the std::stop_token its handler reads through reply_sender::stop_token() (or
  // receives, for a handler of the form Reply(Payload&&, std::stop_token)). What the handler
  // does then is its own affair: it still replies once. A subshell with no message running
  // is left alone, and its next message starts with a fresh token. Errors: unknown_subshell,
  // subshell_deleted, router_stopped. As control_request::interrupt() on the control channel.
  routing_result<> interrupt(subshell_id id) {
    control_reply r = engine_.call(control_request::interrupt(id));
    if (r.error) return std::move(*r.error);
    return {};
  }

  // Counters of the parent, then of every child (ascending id).
  routing_result<std::vector<subshell_stats>> stats() {
    control_reply r = engine_.call(control_request::stats());
    if (r.error) return std::move(*r.error);
    return std::move(r.subshells);
  }
  // One subshell's counters; unknown_subshell when no live subshell has that id.
  routing_result<subshell_stats> stats(subshell_id id) {
    routing_result<std::vector<subshell_stats>> all = stats();
    if (!all) return all.error();
    for (subshell_stats& s : *all)
      if (s.id == id) return std::move(s);
    return routing_error(routing_errc::unknown_subshell, id,
                         "tether: router '" + name() + "': " + id.to_string() + ": no such subshell (now)");
  }

  // ---- lifecycle -------------------------------------------------------------------------------

  // Stops accepting: later sends and control requests are refused (handed back). drain: every
  // accepted message still runs; cancel: those not yet running are answered router_stopped,
  // and running handlers' stop tokens are stopped.
  // Control requests already queued are answered router_stopped. Then each child is stopped
  // the same way and joined by the reaper; once the parent has answered too, replies() and
  // control_replies() close. A cancel after a drain upgrades it. true for the call that
  // stopped the router. Never blocks. Thread-safe.
  bool stop(stop_mode mode = stop_mode::drain) noexcept { return engine_.stop(mode); }

  // Waits until the router has finished: every accepted message answered, replies() and
  // control_replies() closed, every thread joined. Call stop() first (std::logic_error
  // otherwise: it would wait forever). On the parent's owner thread it runs the parent
  // executor until then (as parent.run_until() would), so the parent's pending messages - and
  // a child blocked on the parent - get through; from inside a parent task, with router
  // messages still pending there, or from a child subshell's thread, it throws deadlock_error
  // instead of waiting for itself.
  void join() { engine_.join(); }
  // As join() without joining the threads (they are finishing): true once finished, false at
  // the deadline (try_join: now). On the parent's owner thread they run, once, the parent
  // tasks the router has handed over (parent.try_run()). A huge timeout waits forever.
  bool try_join() { return engine_.wait_finished(std::chrono::steady_clock::now()); }
  template <class Rep, class Period>
  bool join_for(const std::chrono::duration<Rep, Period>& timeout) {
    return engine_.wait_finished(detail::deadline_after(timeout));
  }
  template <class Clock, class Duration>
  bool join_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return engine_.wait_finished(detail::to_steady(deadline));
  }

  bool is_stopped() const noexcept { return engine_.is_stopped(); }
  bool is_finished() const noexcept { return engine_.is_finished(); }
  const std::string& name() const noexcept { return engine_.name(); }

 private:
  template <class Factory>
  static std::unique_ptr<detail::router_factory<Payload, Reply>> make_factory(Factory&& factory) {
    static_assert(std::is_invocable_v<Factory&, subshell_id>,
                  "tether::router: the factory must be callable with a tether::subshell_id");
    static_assert(detail::router_handler_v<std::decay_t<std::invoke_result_t<Factory&, subshell_id>>, Payload, Reply>,
                  "tether::router: the factory must return a handler callable as Reply(Payload&&) or "
                  "void(Payload&&, tether::reply_sender<Payload, Reply>&)");
    return std::make_unique<detail::router_factory_impl<Payload, Reply, Factory>>(std::move(factory));
  }

  detail::router_engine<Payload, Reply> engine_;
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
