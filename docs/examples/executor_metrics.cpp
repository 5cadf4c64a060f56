// docs/examples/executor_metrics.cpp - where does a shared runtime run out of breath? Metrics
// (queue delay, run time, queue depth), a long-task report naming the line that posted the
// task, and the stats as a table and as JSON.
// Built and run by ctest (label "doc"); exits non-zero if a check fails.
#include <tether/executor.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

int main() {
  using namespace std::chrono_literals;
  std::mutex m;
  unsigned long long slow_line = 0;
  tether::executor ex{{.name = "runtime",
                       .metrics = true,
                       .long_task_threshold = 50ms,
                       .on_long_task = [&](const tether::long_task_report& r) {  // on the owner thread
                         std::lock_guard l(m);
                         slow_line = r.task.posted_from.line();
                         std::printf("long task from %s:%u ran %lld us, %td tasks piled up behind it\n",
                                     r.task.posted_from.file_name(), static_cast<unsigned>(r.task.posted_from.line()),
                                     static_cast<long long>(r.task.run_time.count() / 1000), r.queue_growth());
                       }}};

  std::vector<std::thread> sessions;  // a few sessions share the runtime
  for (int s = 0; s < 4; ++s)
    sessions.emplace_back([&] {
      for (int i = 0; i < 100; ++i) (void)ex.post([] { std::this_thread::sleep_for(10us); });
    });
  for (auto& t : sessions) t.join();
  const unsigned long long line = __LINE__ + 1;
  (void)ex.post([] { std::this_thread::sleep_for(100ms); }); // this line is reported
  ex.call([] {});                                            // everything above has run

  const tether::executor_stats s = ex.stats();
  std::cout << s;                                       // a small table
  std::cout << tether::to_json(s) << "\n";              // for a scraper
  std::lock_guard l(m);
  const bool ok = s.queue_delay.count == 402 && s.task_time.p99 >= 10us && s.long_tasks >= 1 && slow_line == line &&
                  s.queue_depth_max >= 1;
  return ok ? 0 : 1;
}
