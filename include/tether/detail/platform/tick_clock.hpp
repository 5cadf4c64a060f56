// SPDX-License-Identifier: MIT
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
#pragma once

#include <chrono>
#include <cstdint>
#include <thread>

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
