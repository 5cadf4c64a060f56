// SPDX-License-Identifier: MIT
// tether/detail/platform/futex.hpp - the platform seam: sleep on a 32-bit word until it changes.
//
// std::atomic<T>::wait has no timed form in C++20, and every blocking call in tether has a
// timed variant, so the parker needs "wait while *word == expected, until a deadline".
// On Linux that is the futex system call (FUTEX_WAIT_BITSET takes an absolute
// CLOCK_MONOTONIC deadline, which is what std::chrono::steady_clock reads on Linux).
// Elsewhere a small striped table of mutex + condition_variable does the same job.
//
// Contract (both implementations): futex_wait may return spuriously; callers re-check.
#pragma once

#include <atomic>
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
