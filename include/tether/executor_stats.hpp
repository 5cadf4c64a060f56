// SPDX-License-Identifier: MIT
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
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <ostream>
#include <string>

#include "detail/platform/source_location.hpp"

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
