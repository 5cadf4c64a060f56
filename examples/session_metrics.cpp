// examples/session_metrics.cpp - story 2: where does a runtime shared by 200 sessions run out
// of breath? A live table, once a second.
//
// One executor owns a toy interpreter (tether::confined<interpreter>); 200 session threads
// call into it, each at its own pace, and now and then one of them runs a slow statement.
// With executor_options::metrics on, the main thread prints, every second, the calls made in
// that second, the queue's depth now and its high-water mark, and the queue delay and run
// time percentiles since the start; a task that runs 20 ms or more is reported with the line
// that posted it. At the end the figures are checked against what the sessions counted.
//
//   session_metrics [seconds]     (default 3)
//
// Exit status 0 only when every check passes.
#include <tether/confined.hpp>
#include <tether/executor.hpp>
#include <tether/executor_stats.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <latch>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

// Stands for an interpreter: state that only its owner thread may touch, and statements whose
// cost varies (a few microseconds, sometimes far longer).
class interpreter {
 public:
  // Runs a statement of `work` steps; returns a checksum of them.
  std::uint64_t run(std::uint32_t work) {
    std::uint64_t h = statements_;
    for (std::uint32_t i = 0; i < work; ++i) h = h * 6364136223846793005ULL + 1442695040888963407ULL;
    ++statements_;
    return h;
  }
  // A statement that blocks (a sleep, a slow query): the long task.
  void stall(std::chrono::milliseconds d) {
    std::this_thread::sleep_for(d);
    ++statements_;
  }
  std::uint64_t statements() const { return statements_; }

 private:
  std::uint64_t statements_ = 0;
};

std::string fmt(std::chrono::nanoseconds d) { return tether::detail::format_duration(d); }

}  // namespace

int main(int argc, char** argv) {
  const int seconds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 3;
  constexpr int sessions = 200;
  constexpr auto long_task = 20ms;

  std::atomic<std::uint64_t> reported_long{0};
  std::atomic<std::uint32_t> stall_line{0};
  tether::executor owner{{.name = "interpreter",
                          .metrics = true,
                          .long_task_threshold = long_task,
                          .on_long_task = [&](const tether::long_task_report& r) {  // on the owner thread
                            reported_long.fetch_add(1);
                            std::printf("  long task: %s:%u ran %s, the queue grew by %td\n",
                                        r.task.posted_from.file_name(), static_cast<unsigned>(r.task.posted_from.line()),
                                        fmt(r.task.run_time).c_str(), r.queue_growth());
                          }}};
  tether::confined<interpreter> vm{owner};

  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> calls{0}, stalls{0}, errors{0};
  std::latch go{sessions + 1};
  std::vector<std::thread> threads;
  for (int s = 0; s < sessions; ++s)
    threads.emplace_back([&, s] {
      std::minstd_rand rng(static_cast<unsigned>(s) + 1);
      go.arrive_and_wait();
      while (!done.load(std::memory_order_relaxed)) {
        try {
          if (rng() % 4000 == 0) {
            stall_line = __LINE__ + 1;
            vm.with([](interpreter& i) { i.stall(30ms); });
            stalls.fetch_add(1);
          } else {
            (void)vm.with([work = static_cast<std::uint32_t>(200 + rng() % 2000)](interpreter& i) { return i.run(work); });
          }
          calls.fetch_add(1);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "session %d: %s\n", s, e.what());
          errors.fetch_add(1);
          return;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 500));  // the session's own work
      }
    });

  go.arrive_and_wait();
  std::printf("%4s %10s %7s %7s %10s %10s %10s %10s %10s %10s %5s\n", "t", "calls/s", "depth", "max", "delay p50",
              "delay p99", "delay max", "run p50", "run p99", "run max", "long");
  std::uint64_t last_calls = 0;
  for (int t = 1; t <= seconds; ++t) {
    std::this_thread::sleep_for(1s);
    const tether::executor_stats s = owner.stats();  // from this thread, while the sessions run
    const std::uint64_t c = calls.load();
    std::printf("%3ds %10llu %7zu %7zu %10s %10s %10s %10s %10s %10s %5llu\n", t,
                static_cast<unsigned long long>(c - last_calls), s.queue_depth, s.queue_depth_max,
                fmt(s.queue_delay.p50).c_str(), fmt(s.queue_delay.p99).c_str(), fmt(s.queue_delay.max).c_str(),
                fmt(s.task_time.p50).c_str(), fmt(s.task_time.p99).c_str(), fmt(s.task_time.max).c_str(),
                static_cast<unsigned long long>(s.long_tasks));
    std::fflush(stdout);
    last_calls = c;
  }
  done = true;
  for (auto& th : threads) th.join();

  // Every call ran once on the owner: the interpreter's count, the executor's and the
  // sessions' agree (+1: this call; the construction of vm is the executor's first task).
  const std::uint64_t statements = vm.with([](interpreter& i) { return i.statements(); });
  // The owner counts a task just after the caller has its result: wait for the last count.
  tether::executor_stats s = owner.stats();
  for (int i = 0; i < 1000 && s.tasks_run < calls.load() + 2; ++i) {
    std::this_thread::sleep_for(1ms);
    s = owner.stats();
  }
  std::cout << "\n" << s;
  int failures = 0;
  const auto check = [&](bool ok, const char* what) {
    if (!ok) {
      std::fprintf(stderr, "FAILED: %s\n", what);
      ++failures;
    }
  };
  check(errors == 0, "no session saw an error");
  check(statements == calls.load(), "the interpreter ran each session's call once");
  check(s.tasks_run == calls.load() + 2, "the executor ran each call once (+ the construction and the count)");
  check(s.queue_delay.count == s.tasks_run && s.task_time.count == s.tasks_run, "every task was measured");
  check(s.long_tasks >= stalls.load() && reported_long.load() == s.long_tasks, "every stall was reported as long");
  check(s.task_time.max >= long_task || stalls.load() == 0, "the longest task is a stall");
  check(s.queue_depth_max >= 1, "the queue was seen backed up");
  std::printf("%d sessions, %llu calls (%llu stalls, the stalling line is %u); %s\n", sessions,
              static_cast<unsigned long long>(calls.load()), static_cast<unsigned long long>(stalls.load()),
              stall_line.load(), failures == 0 ? "session_metrics: all checks passed" : "session_metrics: FAILED");
  return failures == 0 ? 0 : 1;
}
