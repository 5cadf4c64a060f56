// Stress test for an executor's metrics: posters, submitters and callers keep a metrics-enabled
// executor with every hook set busy while other threads read stats() (and format it) the
// whole time. Counts come out exact, every figure a reader sees only grows, and the run is
// ThreadSanitizer-clean (the histograms are owner-written relaxed atomics read concurrently).
#include <tether/executor.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {
using namespace std::chrono_literals;
using tether::executor;
using tether_test::scaled;
}  // namespace

TEST_CASE("executor metrics stress: readers during load see growing figures, counts exact", "[executor][stress]") {
  constexpr int posters = 4;
  constexpr int readers = 2;
  const std::uint64_t per_poster = scaled(100000);
  std::atomic<std::uint64_t> before{0}, after{0}, parks{0}, unparks{0};  // written by the hooks, on the owner
  executor ex{{.name = "metrics-stress",
               .metrics = true,
               .before_task = [&](const tether::task_info&) { before.fetch_add(1); },
               .after_task = [&](const tether::task_info&) { after.fetch_add(1); },
               .long_task_threshold = 1ms,
               .on_park = [&] { parks.fetch_add(1); },
               .on_unpark = [&] { unparks.fetch_add(1); }}};
  std::uint64_t sum = 0;  // owner only
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> regressions{0}, reads{0}, malformed{0}, refused{0};  // Catch2 asserts on this thread only
  std::latch go{posters + readers};
  std::vector<std::thread> threads;
  for (int r = 0; r < readers; ++r)
    threads.emplace_back([&] {
      go.arrive_and_wait();
      tether::executor_stats last;
      while (!done.load()) {
        const tether::executor_stats s = ex.stats();
        if (s.queue_delay.count < last.queue_delay.count || s.task_time.count < last.task_time.count ||
            s.tasks_run < last.tasks_run || s.queue_depth_max < last.queue_depth_max ||
            s.queue_delay.max < last.queue_delay.max || s.task_time.total < last.task_time.total)
          regressions.fetch_add(1);
        if (s.queue_delay.p50 > s.queue_delay.max || s.task_time.p99 > s.task_time.max) malformed.fetch_add(1);
        const std::string j = tether::to_json(s);
        if (j.empty() || j.front() != '{' || j.back() != '}') malformed.fetch_add(1);
        last = s;
        reads.fetch_add(1);
      }
    });
  for (int p = 0; p < posters; ++p)
    threads.emplace_back([&, p] {
      go.arrive_and_wait();
      for (std::uint64_t i = 0; i < per_poster; ++i) {
        const std::uint64_t v = static_cast<std::uint64_t>(p) * per_poster + i;
        if (i % 1000 == 999) {
          ex.call([&sum, v] { sum += v; });
        } else if (i % 1000 == 500) {
          ex.submit([&sum, v] { sum += v; }).get();
        } else {
          if (!ex.post([&sum, v] { sum += v; })) refused.fetch_add(1);
        }
      }
    });
  for (int p = 0; p < posters; ++p) threads[static_cast<std::size_t>(readers + p)].join();
  ex.call([] {});
  done.store(true);
  for (int r = 0; r < readers; ++r) threads[static_cast<std::size_t>(r)].join();

  const std::uint64_t total = per_poster * posters;
  const std::uint64_t expected_sum = total * (total - 1) / 2;
  CHECK(ex.call([&] { return sum; }) == expected_sum);
  const tether::executor_stats s = ex.stats();
  const std::uint64_t tasks = total + 2;  // and the two calls just made
  CHECK(s.tasks_run == tasks);
  CHECK(s.queue_delay.count == tasks);
  CHECK(s.task_time.count == tasks);
  CHECK(before.load() == tasks);
  CHECK(after.load() == tasks);
  CHECK(s.queue_depth_max >= 1);
  CHECK(refused.load() == 0);
  CHECK(regressions.load() == 0);
  CHECK(malformed.load() == 0);
  CHECK(reads.load() > 0);
  ex.stop();
  ex.join();
  CHECK(parks.load() == unparks.load());
}
