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

// ---- tether/detail/config.hpp -----------------------------------------------
// tether/detail/config.hpp - cache-line size, CPU pause and the annotation seam.
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

}  // namespace tether::detail

// ---- tether/detail/consumer_check.hpp ---------------------------------------
// tether/detail/consumer_check.hpp - catches two threads consuming one queue at once.
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

// ---- tether/detail/futex.hpp ------------------------------------------------
// tether/detail/futex.hpp - the platform seam: sleep on a 32-bit word until it changes.
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

// Converts any clock's time point to a steady_clock deadline (system_clock deadlines are
// honoured as "this much time from now").
template <class Clock, class Duration>
steady_time to_steady(const std::chrono::time_point<Clock, Duration>& t) {
  if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
    return std::chrono::time_point_cast<std::chrono::steady_clock::duration>(t);
  } else {
    return std::chrono::steady_clock::now() +
           std::chrono::duration_cast<std::chrono::steady_clock::duration>(t - Clock::now());
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

// ---- tether/detail/fence.hpp ------------------------------------------------
// tether/detail/fence.hpp - the platform seam for asymmetric fences.
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
inline void light_fence() noexcept {
  // relaxed: a stale "unknown" or "full" only makes us take the (always correct) full fence.
  if (fence_mode.load(std::memory_order_relaxed) == fence_membarrier)
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

// ---- tether/detail/parker.hpp -----------------------------------------------
// tether/detail/parker.hpp - spin briefly, then sleep until notified: the one wait strategy.
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



namespace tether::detail {

// How many times a waiter re-checks its condition (with a CPU pause) before it sleeps.
// A hand-off between two running threads takes well under a microsecond; a futex sleep and
// wake costs tens of microseconds on virtual machines. Spinning this long catches the first
// case and bounds the CPU spent in the second (measured in bench/README.md).
inline constexpr int spin_limit = 2000;
// Pauses between the first two re-checks, and the most between any two.
inline constexpr int spin_pause_first = 4;
inline constexpr int spin_pause_max = 64;

class parker {
 public:
  // Announces a waiter; returns the key to pass to wait(). The caller must re-check its
  // condition after this call and then either cancel_wait() or wait().
  std::uint32_t prepare_wait() noexcept {
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    heavy_fence();  // the waiter's half of the handshake (see fence.hpp)
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
  void notify_one() noexcept { notify(1); }
  void notify_all() noexcept { notify(INT32_MAX); }

  bool has_waiters() const noexcept { return waiters_.load(std::memory_order_seq_cst) != 0; }

 private:
  void notify(int count) noexcept {
    light_fence();  // the notifier's half of the handshake (see fence.hpp)
    if (waiters_.load(std::memory_order_seq_cst) == 0) return;
    epoch_.fetch_add(1, std::memory_order_seq_cst);
    futex_wake(epoch_, count);
  }

  // Written by waiters (announce / retire), read by every notifier.
  std::atomic<std::uint32_t> waiters_{0};
  // Bumped by notifiers that found a waiter; the futex word waiters sleep on.
  std::atomic<std::uint32_t> epoch_{0};
};

// The single deadline loop behind every blocking call: spin on ready() for spin_limit
// rounds, then announce, re-check, and sleep on the parker. Returns ready()'s verdict:
// true as soon as it holds, false only when the deadline passed first.
//
// Outline:
//   1. spin: re-check ready() with a CPU pause; most hand-offs end here;
//   2. prepare_wait(), re-check (the handshake), sleep until notified or the deadline;
//   3. woken: re-check; a spurious or stale wake-up goes round again.
template <class Ready>
bool park_until(parker& p, Ready&& ready, steady_time deadline) {
  // Re-checks back off exponentially: each check may pull a cache line the other side is
  // writing, so polling it flat out would slow down the very producer we wait for.
  for (int i = 0, pause = spin_pause_first; i < spin_limit; i += pause, pause = pause < spin_pause_max ? pause * 2 : pause) {
    if (ready()) return true;
    for (int k = 0; k < pause; ++k) cpu_relax();
  }
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

// ---- tether/result.hpp ------------------------------------------------------
// tether/result.hpp - what a push or pop reports: a value, or why there is none.
//
// Every non-blocking and timed call in tether says exactly what happened, so a caller can
// tell "nothing yet" (empty), "gave up waiting" (timeout), "no room" (full) and "the other
// side is gone" (closed) apart. A failed push never consumes its argument: the value stays
// with the caller.

#include <optional>
#include <string>
#include <utility>

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

// ---- tether/detail/consumer_ops.hpp -----------------------------------------
// tether/detail/consumer_ops.hpp - the consumer half shared by both single-consumer queues.
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
  std::optional<T> pop() { return pop_until(no_deadline).take(); }

  // As pop(), giving up at the deadline: status ok, timeout or closed. Consumer thread only.
  template <class Rep, class Period>
  pop_result<T> pop_for(const std::chrono::duration<Rep, Period>& timeout) {
    return pop_until(deadline_after(timeout));
  }
  template <class Clock, class Duration>
  pop_result<T> pop_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return pop_until(to_steady(deadline));
  }

  // Moves up to max ready items to out, oldest first; never blocks. Returns how many.
  // Consumer thread only.
  template <class OutputIt>
  std::size_t try_pop_bulk(OutputIt out, std::size_t max) {
    consumer_check::scope scope(q().check_);
    return q().take_ready(max, [&](T&& v) {
      *out = std::move(v);
      ++out;
    });
  }

  // Blocks until at least one item is ready, then moves up to max ready items to out.
  // Returns how many; 0 only when closed and drained (or max == 0). Consumer thread only.
  template <class OutputIt>
  std::size_t pop_bulk(OutputIt out, std::size_t max) {
    consumer_check::scope scope(q().check_);
    if (max == 0) return 0;
    for (;;) {
      const head_state hs = q().probe();
      if (hs == head_state::closed) return 0;
      if (hs == head_state::ready) {
        const std::size_t n = q().take_ready(max, [&](T&& v) {
          *out = std::move(v);
          ++out;
        });
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
  Queue& q() noexcept { return static_cast<Queue&>(*this); }

  bool wait_for_head(steady_time deadline) {
    return park_until(q().consumer_wait_, [this] { return q().head_ready(); }, deadline);
  }

  pop_result<T> pop_until(steady_time deadline) {
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
// handshake (detail/parker.hpp).
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

  // Destroys the items still queued (no producer or consumer may be running).
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
  bool push(T&& v) { return push_until(std::move(v), detail::no_deadline) == status::ok; }
  bool push(const T& v) { return push_until(v, detail::no_deadline) == status::ok; }

  // As push(), giving up at the deadline: status ok, timeout or closed; on timeout or closed
  // v is untouched. Thread-safe.
  template <class U, class Rep, class Period>
  push_result push_for(U&& v, const std::chrono::duration<Rep, Period>& timeout) {
    return push_until(std::forward<U>(v), detail::deadline_after(timeout));
  }
  template <class U, class Clock, class Duration>
  push_result push_until(U&& v, const std::chrono::time_point<Clock, Duration>& deadline) {
    return push_until(std::forward<U>(v), detail::to_steady(deadline));
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
  push_result push_until(U&& v, detail::steady_time deadline) {
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

  // ---- consumer primitives (see detail/consumer_ops.hpp) ----

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
    std::optional<T> v(std::move(*s.value()));  // if this throws, the item stays queued
    s.value()->~T();
    release_head(s);
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
      T v(std::move(*s.value()));
      s.value()->~T();
      release_head(s);
      ++n;
      sink(std::move(v));
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

// ---- tether/mpsc_queue.hpp --------------------------------------------------
// tether/mpsc_queue.hpp - unbounded, lock-free queue: many producers, one consumer.
//
// Who may call what:
//   push / emplace / close / is_closed / size_approx  - any thread, concurrently.
//   try_pop / pop / pop_for / pop_until / *_bulk / drain - one consumer thread at a time
//     (debug builds throw std::logic_error when two threads consume at once).
//
// Items live in blocks of slots. A producer claims a slot with one compare-and-swap on the
// tail index, writes the item and publishes the slot; the producer that claims a block's last
// slot links the next block (taken from a one-block cache, so steady state allocates
// nothing). The consumer reads slots in index order - so items from one producer come out
// in the order that producer pushed them - and recycles each block it has emptied.
//
// A producer preempted between claiming and publishing its slot holds up only the consumer,
// which parks on that slot (it does not spin) and is woken by the publish. A producer
// preempted while linking a block holds up other producers for the two stores it has left;
// they back off and yield meanwhile.
//
// Memory ordering: a slot's release state store publishes the item to the consumer's
// acquire load of that state; a block's `next` is stored before its last slot is
// published, so the consumer always finds it. Waking a parked consumer is the parker's
// handshake (detail/parker.hpp): a push pays no locked instruction beyond its claim.
//
// After crossbeam-channel's list flavour (block list, CAS-claimed slots, a sentinel index
// while the next block is linked), adapted to one consumer, block reuse and parking.

#include <iterator>


namespace tether {

template <class T>
class mpsc_queue : public detail::consumer_ops<mpsc_queue<T>, T> {
  friend class detail::consumer_ops<mpsc_queue<T>, T>;
  static_assert(std::is_nothrow_destructible_v<T>, "tether::mpsc_queue<T>: T's destructor must not throw");
  static_assert(std::is_move_constructible_v<T>, "tether::mpsc_queue<T>: T must be move-constructible");

 public:
  using value_type = T;

  mpsc_queue() : head_block_(new block) { tail_block_.store(head_block_, std::memory_order_relaxed); }
  mpsc_queue(const mpsc_queue&) = delete;
  mpsc_queue& operator=(const mpsc_queue&) = delete;

  // Destroys the items still queued (no producer or consumer may be running).
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
      slot& s = b->slots[offset];
      if (s.state.load(std::memory_order_relaxed) == slot_written) s.value()->~T();
      head++;
    }
    for (block* p = head_block_; p != nullptr;) {
      block* next = p->next.load(std::memory_order_relaxed);
      delete p;
      p = next;
    }
    delete spare_.load(std::memory_order_relaxed);
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
      publish(b->slots[offset], std::forward<Args>(args)...);
      return true;
    }
  }

  // Closes the queue: later pushes fail (handing their item back); the consumer still
  // receives everything pushed before, then sees closed. Wakes a parked consumer.
  // Returns true if this call closed it. Thread-safe; never blocks.
  bool close() noexcept {
    const std::uint64_t prev = tail_index_.fetch_or(closed_bit, std::memory_order_seq_cst);
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
    if (tail <= head) return 0;
    return static_cast<std::size_t>((tail - head) - (tail / lap - head / lap));
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

  using head_state = detail::head_state;

  template <class... Args>
  void publish(slot& s, Args&&... args) {
    try {
      ::new (static_cast<void*>(s.storage)) T(std::forward<Args>(args)...);
    } catch (...) {
      s.state.store(slot_abandoned, std::memory_order_release);  // release: as below
      consumer_wait_.notify_one();
      throw;
    }
    // release: publishes the item; pairs with the acquire in probe() / take_ready(). The
    // parker handshake's fence is in notify_one() (light) and prepare_wait() (heavy).
    s.state.store(slot_written, std::memory_order_release);
    consumer_wait_.notify_one();
  }

  block* take_spare() {
    // acquire: pairs with the release in recycle(): the reset slots are visible.
    block* b = spare_.exchange(nullptr, std::memory_order_acquire);
    return b != nullptr ? b : new block;
  }
  void return_spare(block* b) noexcept {
    if (b == nullptr) return;
    block* expected = nullptr;
    // release: hands the (clean) block to the next take_spare().
    if (!spare_.compare_exchange_strong(expected, b, std::memory_order_release, std::memory_order_relaxed))
      delete b;
  }
  void recycle(block* b) noexcept {
    // No producer can reach b: every slot was claimed, published and consumed, and
    // tail_block_ moved on before the last slot was published.
    for (slot& s : b->slots) s.state.store(slot_empty, std::memory_order_relaxed);  // relaxed: published by the exchange below
    b->next.store(nullptr, std::memory_order_relaxed);                             // relaxed: as above
    // acq_rel: release publishes the reset; acquire lets us delete a block another thread
    // returned.
    delete spare_.exchange(b, std::memory_order_acq_rel);
  }

  slot& head_slot() noexcept { return head_block_->slots[head_ % lap]; }

  head_state probe() noexcept {
    // acquire: pairs with the release publish in publish().
    if (head_slot().state.load(std::memory_order_acquire) != slot_empty) return head_state::ready;
    // Not ready. The tail line is hot with producers: read it only once closed. (A close
    // that has claimed the tail but not yet set closed_ reads as "not closed yet".)
    if (!closed_.load(std::memory_order_seq_cst)) return head_state::empty;
    const std::uint64_t tail = tail_index_.load(std::memory_order_seq_cst);
    return (tail >> index_shift) != head_ ? head_state::in_flight : head_state::closed;
  }

  // The condition a parked consumer waits for: the head slot is published, or the queue is
  // closed with nothing in flight. seq_cst loads: the re-check half of the parker handshake.
  bool head_ready() noexcept {
    if (head_slot().state.load(std::memory_order_seq_cst) != slot_empty) return true;
    // The tail line is hot with producers: read it only once closed.
    if (!closed_.load(std::memory_order_seq_cst)) return false;
    const std::uint64_t tail = tail_index_.load(std::memory_order_seq_cst);
    return (tail >> index_shift) == head_;
  }

  void advance() noexcept {
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

  // Precondition: the head slot is published. Empty optional: the slot was abandoned.
  std::optional<T> take() {
    slot& s = head_slot();
    if (s.state.load(std::memory_order_relaxed) == slot_abandoned) {  // relaxed: probe() acquired it
      advance();
      return std::nullopt;
    }
    std::optional<T> v(std::move(*s.value()));  // if this throws, the item stays queued
    s.value()->~T();
    advance();
    return v;
  }

  template <class Sink>
  std::size_t take_ready(std::size_t max, Sink&& sink) {
    std::size_t n = 0;
    while (n < max) {
      slot& s = head_slot();
      const std::uint8_t st = s.state.load(std::memory_order_acquire);  // acquire: pairs with publish()
      if (st == slot_empty) break;
      if (st == slot_abandoned) {
        advance();
        continue;
      }
      T v(std::move(*s.value()));
      s.value()->~T();
      advance();
      ++n;
      sink(std::move(v));
    }
    return n;
  }

  // Producer side: written by every push (CAS), read by producers and the consumer.
  alignas(detail::cache_line) std::atomic<std::uint64_t> tail_index_{0};
  // Written by the producer that links a block; read by producers before their CAS.
  std::atomic<block*> tail_block_{nullptr};
  // A one-block cache: written by the consumer (recycle) and producers (take / return).
  std::atomic<block*> spare_{nullptr};

  // Consumer side.
  alignas(detail::cache_line) std::uint64_t head_ = 0;  // consumer only: next index to pop
  block* head_block_;                                  // consumer only: the block holding head_
  // A copy of head_ for size_approx(): written by the consumer, read by any thread.
  std::atomic<std::uint64_t> head_published_{0};
  detail::consumer_check check_;

  // A copy of the closed bit off the hot tail line, for waiters: set once by close().
  alignas(detail::cache_line) std::atomic<bool> closed_{false};
  detail::parker consumer_wait_;
};

}  // namespace tether

// ---- tether.hpp -------------------------------------------------------------
// tether.hpp - the whole toolkit: includes every public header, nothing else.
