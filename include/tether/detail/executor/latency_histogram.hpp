// SPDX-License-Identifier: MIT
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
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "../../executor_stats.hpp"
#include "owner_counter.hpp"

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
