// Unit tests for an executor's metrics and tracing (executor_options::metrics, the task and
// park hooks, long-task reports, stats() and its text and JSON forms): the histogram's
// buckets and percentiles; queue delay and run time of tasks with known sleeps (lower bounds
// tight, upper bounds loose: this runs on loaded 2-core machines); counts exact; hooks once
// per task on the owner thread; the recorded location is the caller's line for every verb;
// long tasks reported (with the queue's growth) and short ones not; the depth high-water mark
// of a burst on a paused owner; metrics off reports nothing; a router's subshell stats carry
// their executors' metrics.
#include <tether/confined.hpp>
#include <tether/detail/executor/latency_histogram.hpp>
#include <tether/executor.hpp>
#include <tether/executor_stats.hpp>
#include <tether/router.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <mutex>
#include <semaphore>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "catch.hpp"

namespace {

using namespace std::chrono_literals;
using tether::executor;
using tether::executor_options;
using tether::task_info;
using histogram = tether::detail::latency_histogram;

constexpr auto loose = 5s;  // an upper bound no loaded machine should reach

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

// Records what the task hooks saw; the hooks run on the owner, the test reads after a call().
struct recorder {
  std::mutex m;
  std::vector<task_info> before, after;
  std::vector<std::thread::id> threads;
  void on_before(const task_info& i) {
    std::lock_guard l(m);
    before.push_back(i);
    threads.push_back(std::this_thread::get_id());
  }
  void on_after(const task_info& i) {
    std::lock_guard l(m);
    after.push_back(i);
    threads.push_back(std::this_thread::get_id());
  }
};

// Waits (without posting: a post would change the depth being measured) until the executor
// has run `n` tasks.
void wait_until_run(const executor& ex, std::uint64_t n) {
  const auto give_up = std::chrono::steady_clock::now() + 30s;
  while (ex.stats().tasks_run < n && std::chrono::steady_clock::now() < give_up) std::this_thread::sleep_for(1ms);
  REQUIRE(ex.stats().tasks_run >= n);
}

}  // namespace

TEST_CASE("latency_histogram: buckets tile the range, percentiles never understate", "[executor][metrics]") {
  for (std::size_t i = 0; i + 1 < histogram::bucket_count; ++i) {
    REQUIRE(histogram::index_of(histogram::lower_bound(i)) == i);
    REQUIRE(histogram::index_of(histogram::upper_bound(i)) == i);
    REQUIRE(histogram::upper_bound(i) + 1 == histogram::lower_bound(i + 1));
    if (i >= 16) {  // relative width at most 1/8
      REQUIRE((histogram::upper_bound(i) - histogram::lower_bound(i) + 1) * 8 <= histogram::lower_bound(i));
    }
  }
  REQUIRE(histogram::index_of(UINT64_MAX) == histogram::bucket_count - 1);

  histogram h;
  REQUIRE(h.summary().count == 0);
  for (std::int64_t v = 1; v <= 1000; ++v) h.record(v * 1000);  // 1 us .. 1 ms
  h.record(-5);                                                 // clamps to 0
  const tether::latency_summary s = h.summary();
  CHECK(s.count == 1001);
  CHECK(s.max == 1ms);
  CHECK(s.p50 >= 500us);
  CHECK(s.p50 <= 500us + 500us / 8);
  CHECK(s.p90 >= 900us);
  CHECK(s.p90 <= 1ms);
  CHECK(s.p99 >= 990us);
  CHECK(s.p99 <= 1ms);
  CHECK(s.total == std::chrono::nanoseconds(500500 * 1000));
}

TEST_CASE("metrics off: stats report none and the hooks are not traced", "[executor][metrics]") {
  executor ex{{.name = "plain"}};
  for (int i = 0; i < 10; ++i) REQUIRE(ex.post([] {}));
  ex.call([] {});
  const tether::executor_stats s = ex.stats();
  CHECK_FALSE(s.metrics);
  CHECK(s.tasks_run == 11);
  CHECK(s.queue_delay.count == 0);
  CHECK(s.task_time.count == 0);
  CHECK(s.queue_depth_max == 0);
  const std::string text = tether::to_string(s);
  CHECK(text.find("11 run") != std::string::npos);
  CHECK(text.find("queue delay") == std::string::npos);
}

TEST_CASE("metrics: queue delay and run time of tasks with known sleeps", "[executor][metrics]") {
  executor ex{tether::adopt_current_thread, {.name = "timed", .metrics = true}};
  constexpr int n = 4;
  for (int i = 0; i < n; ++i) REQUIRE(ex.post([] { std::this_thread::sleep_for(5ms); }));
  std::this_thread::sleep_for(30ms);  // they wait at least this long: the owner (this thread) is not running
  REQUIRE(ex.try_run() == n);
  const tether::executor_stats s = ex.stats();
  REQUIRE(s.metrics);
  CHECK(s.tasks_run == n);
  CHECK(s.queue_delay.count == n);
  CHECK(s.task_time.count == n);
  // Every task waited the 30 ms; the last one also waited for the three before it.
  CHECK(s.queue_delay.p50 >= 30ms);
  CHECK(s.queue_delay.max >= 30ms + (n - 1) * 5ms);
  CHECK(s.queue_delay.max < 30ms + loose);
  CHECK(s.queue_delay.p50 <= s.queue_delay.p90);
  CHECK(s.queue_delay.p90 <= s.queue_delay.p99);
  CHECK(s.queue_delay.p99 <= s.queue_delay.max);
  CHECK(s.task_time.p50 >= 5ms);
  CHECK(s.task_time.max < loose);
  CHECK(s.task_time.total >= n * 5ms);
  CHECK(s.long_tasks == 0);  // no threshold set
}

TEST_CASE("metrics: a delayed task's queue delay counts from its deadline", "[executor][metrics]") {
  executor ex{tether::adopt_current_thread, {.name = "delayed", .metrics = true}};
  (void)ex.post_after(10ms, [] {});
  std::this_thread::sleep_for(60ms);  // due 50 ms ago by the time the owner runs it
  REQUIRE(ex.try_run() == 1);
  const tether::executor_stats s = ex.stats();
  CHECK(s.queue_delay.count == 1);
  CHECK(s.queue_delay.max >= 40ms);
  CHECK(s.queue_delay.max < 60ms + loose);
}

TEST_CASE("hooks: before and after once per task, on the owner thread", "[executor][metrics]") {
  recorder rec;
  executor ex{{.name = "hooked",
               .before_task = [&](const task_info& i) { rec.on_before(i); },
               .after_task = [&](const task_info& i) { rec.on_after(i); }}};
  const std::thread::id owner = ex.call([] { return std::this_thread::get_id(); });
  constexpr int n = 50;
  for (int i = 0; i < n; ++i) REQUIRE(ex.post([] {}));
  REQUIRE(ex.post([] { std::this_thread::sleep_for(10ms); }));
  ex.call([] {});
  std::lock_guard l(rec.m);
  // The first call, n posts, the sleeper, the last call.
  REQUIRE(rec.before.size() == n + 3);
  REQUIRE(rec.after.size() == n + 3);
  for (const std::thread::id& t : rec.threads) CHECK(t == owner);
  for (const task_info& i : rec.before) CHECK(i.run_time == 0ns);
  CHECK(rec.after[n + 1].run_time >= 10ms);
  CHECK(rec.after[n + 1].run_time < loose);
  for (std::size_t i = 0; i < rec.after.size(); ++i) {
    CHECK(rec.after[i].enqueued == rec.before[i].enqueued);
    CHECK(rec.after[i].queue_delay >= 0ns);
    CHECK(rec.after[i].enqueued <= std::chrono::steady_clock::now());
  }
  // Without metrics, stats() reports no distribution even though tasks are traced.
  CHECK_FALSE(ex.stats().metrics);
}

TEST_CASE("hooks: a task posted after the one before it ended has no negative queue delay", "[executor][metrics]") {
  // In a batch a task's start is the previous task's end; a task posted while the owner
  // destroys the previous one (here by that task's own destructor) carries a later post
  // stamp than that end. Its queue delay is zero then, not below zero.
  recorder rec;
  executor ex{tether::adopt_current_thread, {.name = "late", .before_task = [&](const task_info& i) { rec.on_before(i); }}};
  struct posts_on_destruction {
    executor* ex;
    posts_on_destruction(executor* e) : ex(e) {}
    posts_on_destruction(posts_on_destruction&& o) noexcept : ex(std::exchange(o.ex, nullptr)) {}
    ~posts_on_destruction() {
      if (ex != nullptr) (void)ex->post([] {});
    }
  };
  constexpr int n = 20;
  std::size_t ran = 0;
  for (int i = 0; i < n; ++i) {  // one at a time: the posted task is the next one popped
    REQUIRE(ex.post([p = posts_on_destruction{&ex}] { (void)p; }));
    ran += ex.try_run();
  }
  ran += ex.try_run();
  REQUIRE(ran == 2 * n);
  std::lock_guard l(rec.m);
  REQUIRE(rec.before.size() == 2 * n);
  for (const task_info& i : rec.before) CHECK(i.queue_delay >= 0ns);
}

TEST_CASE("hooks: the recorded location is the caller's line, for every verb", "[executor][metrics]") {
  recorder rec;
  executor other{{.name = "reply-to"}};
  executor ex{{.name = "located", .after_task = [&](const task_info& i) { rec.on_after(i); }}};
  std::vector<std::uint_least32_t> lines;

  lines.push_back(__LINE__ + 1);
  REQUIRE(ex.post([] {}));
  lines.push_back(__LINE__ + 1);
  ex.submit([] { return 1; }).get();
  lines.push_back(__LINE__ + 1);
  ex.call([] {});
  lines.push_back(__LINE__ + 1);
  REQUIRE(ex.dispatch([] {}));  // from another thread: posted
  std::binary_semaphore timer_ran{0};
  lines.push_back(__LINE__ + 1);
  (void)ex.post_after(1ms, [&] { timer_ran.release(); });
  timer_ran.acquire();
  std::binary_semaphore replied{0};
  lines.push_back(__LINE__ + 1);
  REQUIRE(ex.post_and_reply([] { return 2; }, other, [&](tether::task_result<int>) { replied.release(); }));
  replied.acquire();
  ex.call([] {});  // the post_and_reply task is done (the reply ran on `other`)
  lines.push_back(__LINE__ - 1);
  {
    tether::confined<int> value{ex, 7};  // constructed by a call from confined.hpp
    lines.push_back(__LINE__ + 1);
    CHECK(value.with([](int& v) { return v; }) == 7);
    lines.push_back(__LINE__ + 1);
    CHECK(value.async_with([](int& v) { return v + 1; }).get() == 8);
    lines.push_back(__LINE__ + 1);
    REQUIRE(value.post_with([](int& v) { ++v; }));
    ex.call([] {});  // post_with's task is done
    lines.push_back(__LINE__ - 1);
  }
  ex.call([] {});  // ~confined's destruction task has run
  lines.push_back(__LINE__ - 1);

  std::lock_guard l(rec.m);
  // confined's construction call and its destruction task come from confined.hpp's lines and
  // are skipped below; every other task ran on ex is one of ours, in order.
  std::vector<tether::task_info> ours;
  for (const auto& i : rec.after)
    if (ends_with(i.posted_from.file_name(), "executor_metrics_test.cpp")) ours.push_back(i);
  REQUIRE(ours.size() == lines.size());
  CHECK(rec.after.size() == lines.size() + 2);  // + confined's construction and destruction
  for (std::size_t i = 0; i < lines.size(); ++i) {
    INFO("verb #" << i);
    CHECK(ours[i].posted_from.line() == lines[i]);
  }
}

TEST_CASE("hooks: a reply carries the post_and_reply caller's line to the reply executor", "[executor][metrics]") {
  recorder rec;
  executor home{{.name = "home", .after_task = [&](const task_info& i) { rec.on_after(i); }}};
  executor worker{{.name = "worker"}};
  std::binary_semaphore replied{0};
  const std::uint_least32_t line = __LINE__ + 1;
  REQUIRE(worker.post_and_reply([] { return 3; }, home, [&](tether::task_result<int>) { replied.release(); }));
  replied.acquire();
  home.call([] {});
  std::lock_guard l(rec.m);
  REQUIRE(rec.after.size() == 2);  // the reply, the call
  CHECK(rec.after[0].posted_from.line() == line);
}

TEST_CASE("long tasks: reported with location and queue growth; short ones not", "[executor][metrics]") {
  std::mutex m;
  std::vector<tether::long_task_report> reports;
  executor ex{{.name = "slow",
               .metrics = true,
               .long_task_threshold = 100ms,
               .on_long_task = [&](const tether::long_task_report& r) {
                 std::lock_guard l(m);
                 reports.push_back(r);
               }}};
  for (int i = 0; i < 20; ++i) REQUIRE(ex.post([] {}));
  ex.call([] {});  // the short ones are done; the queue is empty
  std::latch started{1};
  std::binary_semaphore release{0};
  const auto blocker = [&] {
    started.count_down();
    release.acquire();
  };
  // One line: for a call spread over several, g++ names its first line, clang 14 its last.
  const std::uint_least32_t line = __LINE__ + 1;
  REQUIRE(ex.post(blocker));
  started.wait();
  for (int i = 0; i < 5; ++i) REQUIRE(ex.post([] {}));  // pile up behind it
  std::this_thread::sleep_for(150ms);
  release.release();
  wait_until_run(ex, 20 + 1 + 1 + 5);

  const tether::executor_stats s = ex.stats();
  CHECK(s.long_tasks == 1);
  std::lock_guard l(m);
  REQUIRE(reports.size() == 1);
  const tether::long_task_report& r = reports[0];
  CHECK(r.task.posted_from.line() == line);
  CHECK(r.task.run_time >= 150ms);
  CHECK(r.task.run_time < loose);
  CHECK(r.queue_depth_before == 0);
  CHECK(r.queue_depth_after == 5);
  CHECK(r.queue_growth() == 5);
}

TEST_CASE("queue depth high-water mark: exact for a burst on a paused owner", "[executor][metrics]") {
  executor ex{{.name = "burst", .metrics = true}};
  std::latch started{1};
  std::binary_semaphore release{0};
  REQUIRE(ex.post([&] {
    started.count_down();
    release.acquire();
  }));
  started.wait();
  constexpr std::size_t burst = 100;
  for (std::size_t i = 0; i < burst; ++i) REQUIRE(ex.post([] {}));
  CHECK(ex.stats().queue_depth == burst);
  std::this_thread::sleep_for(1ms);
  release.release();
  wait_until_run(ex, burst + 1);
  const tether::executor_stats s = ex.stats();
  CHECK(s.queue_depth_max == burst);
  CHECK(s.tasks_run == burst + 1);
  CHECK(s.queue_delay.count == burst + 1);
}

TEST_CASE("park hooks: on the owner, paired", "[executor][metrics]") {
  std::atomic<int> parks{0}, unparks{0};
  std::atomic<int> off_owner{0};
  std::atomic<std::thread::id> owner{};
  executor ex{{.name = "parker",
               .on_start = [&] { owner.store(std::this_thread::get_id()); },
               .on_park =
                   [&] {
                     if (owner.load() != std::this_thread::get_id()) off_owner.fetch_add(1);
                     parks.fetch_add(1);
                   },
               .on_unpark =
                   [&] {
                     if (owner.load() != std::this_thread::get_id()) off_owner.fetch_add(1);
                     unparks.fetch_add(1);
                   }}};
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(20ms);  // the owner runs dry and parks
    ex.call([] {});
  }
  const auto [p, u] = ex.call([&] { return std::pair{parks.load(), unparks.load()}; });
  CHECK(p >= 3);
  CHECK(p == u);  // inside a task the owner is awake: every park was followed by its unpark
  CHECK(off_owner.load() == 0);
}

TEST_CASE("stats text and JSON forms", "[executor][metrics]") {
  executor ex{tether::adopt_current_thread, {.name = "dump", .metrics = true}};
  for (int i = 0; i < 7; ++i) REQUIRE(ex.post([] {}));
  REQUIRE(ex.try_run() == 7);
  const tether::executor_stats s = ex.stats();
  const std::string text = tether::to_string(s);
  CHECK(text.find("7 run") != std::string::npos);
  CHECK(text.find("queue delay") != std::string::npos);
  CHECK(text.find("run time") != std::string::npos);
  CHECK(text.find("long tasks: 0") != std::string::npos);
  CHECK(text.find("callers: 0 blocked, 0 woken; owner yielded to them 0 times") != std::string::npos);
  std::ostringstream os;
  os << s;
  CHECK(os.str() == text);

  const std::string json = tether::to_json(s);
  CHECK(json.front() == '{');
  CHECK(json.back() == '}');
  CHECK(json.find("\"tasks_run\":7") != std::string::npos);
  CHECK(json.find("\"metrics\":true") != std::string::npos);
  CHECK(json.find("\"callers_blocked\":0,\"callers_woken\":0,\"owner_yields\":0") != std::string::npos);
  CHECK(json.find("\"queue_delay\":{\"count\":7,") != std::string::npos);
  CHECK(json.find("\"task_time\":{\"count\":7,") != std::string::npos);
  int depth = 0, max_depth = 0;
  for (char c : json) {
    depth += c == '{' ? 1 : c == '}' ? -1 : 0;
    max_depth = std::max(max_depth, depth);
    REQUIRE(depth >= 0);
  }
  CHECK(depth == 0);
  CHECK(max_depth == 2);
}

TEST_CASE("hooks: an exception from a hook goes to on_error, the task still runs", "[executor][metrics]") {
  std::atomic<int> errors{0};
  std::atomic<int> ran{0};
  executor ex{{.name = "throwing-hook",
               .on_error = [&](std::exception_ptr) { errors.fetch_add(1); },
               .before_task = [](const task_info&) { throw std::runtime_error("hook"); }}};
  REQUIRE(ex.post([&] { ran.fetch_add(1); }));
  ex.stop();
  ex.join();
  CHECK(ran.load() == 1);
  CHECK(errors.load() == 1);
}

TEST_CASE("router: subshell stats carry their executor's metrics", "[executor][metrics][router]") {
  executor parent{{.name = "parent", .metrics = true}};
  tether::router<std::string, std::string> r{
      parent, [](tether::subshell_id) { return [](std::string&& s) { return s + "!"; }; }, {.subshell_metrics = true}};
  const tether::subshell_id child = *r.create_subshell();
  constexpr int n = 10;
  for (int i = 0; i < n; ++i) REQUIRE(r.send(child, std::string("x"), static_cast<std::uint64_t>(i)));
  REQUIRE(r.send(tether::parent_subshell, std::string("y"), 99));
  for (int i = 0; i < n + 1; ++i) REQUIRE(r.replies().pop());
  // A task's statistics are recorded after it returns, and the replies leave from inside the
  // tasks: the last records may land just after the last reply (bounded wait for them).
  auto settled = [](const std::vector<tether::subshell_stats>& v) {
    return v.size() == 2 && v[0].executor.task_time.count >= 1 && v[1].executor.task_time.count >= 2 &&
           v[1].executor.tasks_run == v[1].executor.task_time.count;
  };
  auto all = r.stats();
  for (int i = 0; i < 2000 && all && !settled(*all); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    all = r.stats();
  }
  REQUIRE(all);
  REQUIRE(all->size() == 2);  // the parent, then the child
  const tether::subshell_stats& p = (*all)[0];
  const tether::subshell_stats& c = (*all)[1];
  CHECK(p.executor.metrics);
  CHECK(p.executor.task_time.count >= 1);
  CHECK(c.id == child);
  CHECK(c.executor.metrics);
  // The router hands a subshell its messages in batches (one task per batch), plus the init task.
  CHECK(c.executor.task_time.count >= 2);
  CHECK(c.executor.task_time.count <= n + 1);
  CHECK(c.executor.tasks_run == c.executor.task_time.count);
  r.stop();
  r.join();
}
