// bench/executor_bench.cpp - handing work to one owner thread: post throughput, call round
// trip, and many concurrent callers into one confined runtime (story 2).
//
// Runs:
//   executor_post/<impl>/posters:<N>  N threads post small tasks as fast as they can; the
//       figure is tasks run per second (items/s), from the start signal until the owner has
//       run every task. Each task checks its poster's FIFO order.
//   executor_call/<impl>              one thread calls the owner and waits for the answer;
//       time per round trip. tether: executor::call (stack slot, spin then park); peers:
//       post + std::promise / std::future, as their users write it.
//   sessions/<impl>/callers:<N>       N session threads each make blocking calls into one
//       owner that runs a ~100 ns "runtime" function; calls per second (items/s) and the
//       p50 / p99 latency of one call (counters p50_ns, p99_ns). Every answer is checked.
//
//   executor_post/tether_metrics/posters:<1|8>, executor_call/tether_metrics
//                                     the same with executor_options::metrics on (queue
//       delay and run time histograms, depth high-water mark; every task traced): what the
//       metrics cost, beside tether's own figures in the same run.
//   executor_cost/<tether|tether_metrics>
//                                     one thread alone (an adopted executor): post 4096 small
//       tasks, then run them with try_run(); time per round, and per task the counters
//       task_ns = post_ns + run_ns. No cross-core traffic: the CPU cost of the metrics, which the threaded
//       runs above only show through the noise of a shared machine.
//
// Flag: --symmetric_fences (an experiment; see main()).
//
// Implementations: tether (tether::executor), asio (asio::io_context with a work guard and
// one thread in run(); only when <asio.hpp> is found) and mutex_cv (std::deque of
// std::function under a std::mutex, one condition variable).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <latch>
#include <memory>
#include <mutex>
#include <initializer_list>
#include <string>
#include <thread>
#include <vector>

#include <tether/executor.hpp>

#include "harness.hpp"

#if __has_include(<asio.hpp>)
#include <asio.hpp>
#define TETHER_BENCH_HAVE_ASIO 1
#endif

namespace {

using namespace tether_bench;
using clock_type = std::chrono::steady_clock;

// ---- implementations -------------------------------------------------------------------

struct tether_impl {
  static constexpr const char* name = "tether";
  tether::executor ex{{.name = "bench-owner"}};

  template <class F>
  void post(F&& f) {
    (void)ex.post(std::forward<F>(f));
  }
  template <class F>
  auto call(F&& f) {
    return ex.call(std::forward<F>(f));
  }
};

// tether with metrics on.
struct tether_metrics_impl {
  static constexpr const char* name = "tether_metrics";
  tether::executor ex{{.name = "bench-owner", .metrics = true}};

  template <class F>
  void post(F&& f) {
    (void)ex.post(std::forward<F>(f));
  }
  template <class F>
  auto call(F&& f) {
    return ex.call(std::forward<F>(f));
  }
};

#if defined(TETHER_BENCH_HAVE_ASIO)
struct asio_impl {
  static constexpr const char* name = "asio";
  asio::io_context ctx;
  asio::executor_work_guard<asio::io_context::executor_type> work{ctx.get_executor()};
  std::thread runner{[this] { ctx.run(); }};

  ~asio_impl() {
    work.reset();
    runner.join();
  }
  template <class F>
  void post(F&& f) {
    asio::post(ctx, std::forward<F>(f));
  }
  template <class F>
  auto call(F&& f) {
    using R = std::invoke_result_t<F&>;
    std::promise<R> p;
    std::future<R> result = p.get_future();
    asio::post(ctx, [&] { p.set_value(f()); });
    return result.get();
  }
};
#endif

// The executor most code bases start with.
class mutex_cv_impl {
 public:
  static constexpr const char* name = "mutex_cv";
  mutex_cv_impl() : runner_([this] { run(); }) {}
  ~mutex_cv_impl() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_one();
    runner_.join();
  }
  template <class F>
  void post(F&& f) {
    {
      std::lock_guard lock(mutex_);
      tasks_.emplace_back(std::forward<F>(f));
    }
    cv_.notify_one();
  }
  template <class F>
  auto call(F&& f) {
    using R = std::invoke_result_t<F&>;
    std::promise<R> p;
    std::future<R> result = p.get_future();
    post([&] { p.set_value(f()); });
    return result.get();
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      cv_.wait(lock, [this] { return done_ || !tasks_.empty(); });
      if (tasks_.empty()) return;
      std::function<void()> t = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      t();
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool done_ = false;
  std::thread runner_;
};

// ---- executor_post ---------------------------------------------------------------------------

constexpr std::uint64_t post_tasks_per_iteration = 1 << 17;

// What the posted tasks touch; owner thread only.
struct post_state {
  std::vector<std::uint64_t> next;  // per poster: the index expected next
  std::uint64_t ran = 0, total = 0, out_of_order = 0;
  std::promise<void>* all_ran = nullptr;

  void task(int poster, std::uint64_t i) {
    auto& n = next[static_cast<std::size_t>(poster)];
    out_of_order += n != i;
    n = i + 1;
    if (++ran == total) all_ran->set_value();
  }
};

template <class Impl>
void run_post(benchmark::State& state, const std::string& run, int posters) {
  const std::uint64_t per_poster = post_tasks_per_iteration / static_cast<std::uint64_t>(posters);
  const std::uint64_t total = per_poster * static_cast<std::uint64_t>(posters);
  Impl impl;
  post_state st;

  for (auto _ : state) {
    std::promise<void> finished;
    std::future<void> finished_future = finished.get_future();
    impl.call([&] {  // reset on the owner
      st.next.assign(static_cast<std::size_t>(posters), 0);
      st.ran = 0;
      st.total = total;
      st.all_ran = &finished;
      return 0;
    });
    std::latch go{posters + 1};
    std::vector<std::thread> threads;
    for (int p = 0; p < posters; ++p)
      threads.emplace_back([&, p] {
        go.arrive_and_wait();
        post_state* s = &st;
        for (std::uint64_t i = 0; i < per_poster; ++i) impl.post([s, p, i] { s->task(p, i); });
      });
    go.arrive_and_wait();
    const auto t0 = clock_type::now();
    finished_future.wait();
    const auto t1 = clock_type::now();
    for (auto& t : threads) t.join();
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
  if (impl.call([&] { return st.out_of_order; }) != 0) fail(state, run, "tasks of one poster ran out of order");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * total));
}

// ---- executor_call ---------------------------------------------------------------------------

template <class Impl>
void run_call(benchmark::State& state, const std::string& run) {
  Impl impl;
  std::uint64_t owner_value = 0;
  std::uint64_t expected = 0;
  impl.call([&] { return ++owner_value; });  // warm-up: the owner thread is running
  expected = 1;
  bool wrong = false;
  for (auto _ : state) {
    const std::uint64_t v = impl.call([&] { return ++owner_value; });
    wrong |= v != ++expected;
  }
  if (wrong) fail(state, run, "a call returned the wrong answer");
}

// ---- executor_cost ---------------------------------------------------------------------------

void run_cost(benchmark::State& state, bool metrics) {
  constexpr int tasks = 4096;
  tether::executor ex{tether::adopt_current_thread, {.name = "cost", .metrics = metrics}};
  std::uint64_t sum = 0;
  double post_ns = 0, run_ns = 0;
  for (auto _ : state) {
    const auto t0 = clock_type::now();
    for (int i = 0; i < tasks; ++i) (void)ex.post([&sum, i] { sum += static_cast<std::uint64_t>(i); });
    const auto t1 = clock_type::now();
    ex.try_run();
    const auto t2 = clock_type::now();
    post_ns += std::chrono::duration<double, std::nano>(t1 - t0).count();
    run_ns += std::chrono::duration<double, std::nano>(t2 - t1).count();
    state.SetIterationTime(std::chrono::duration<double>(t2 - t0).count());
  }
  benchmark::DoNotOptimize(sum);
  const double n = static_cast<double>(state.iterations()) * tasks;
  state.counters["post_ns"] = post_ns / n;
  state.counters["run_ns"] = run_ns / n;
  state.counters["task_ns"] = (post_ns + run_ns) / n;
  state.SetItemsProcessed(static_cast<std::int64_t>(n));
}

// ---- sessions --------------------------------------------------------------------------------

// ~100 ns of work standing in for one call into a confined runtime.
inline std::uint64_t runtime_function(std::uint64_t x) noexcept {
  for (int i = 0; i < 40; ++i) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
  return x;
}

constexpr std::uint64_t session_calls_per_iteration = 20000;

template <class Impl>
void run_sessions(benchmark::State& state, const std::string& run, int callers) {
  const std::uint64_t per_caller =
      std::max<std::uint64_t>(8, session_calls_per_iteration / static_cast<std::uint64_t>(callers));
  Impl impl;
  std::vector<std::vector<std::int64_t>> latencies(static_cast<std::size_t>(callers));
  for (auto& l : latencies) l.reserve(per_caller * 4);
  std::atomic<std::uint64_t> wrong{0};
  std::uint64_t calls = 0;

  for (auto _ : state) {
    std::latch go{callers + 1};
    std::vector<std::thread> threads;
    threads.reserve(static_cast<std::size_t>(callers));
    for (int c = 0; c < callers; ++c)
      threads.emplace_back([&, c] {
        auto& lat = latencies[static_cast<std::size_t>(c)];
        go.arrive_and_wait();
        for (std::uint64_t i = 0; i < per_caller; ++i) {
          const std::uint64_t x = (static_cast<std::uint64_t>(c) << 32) | i;
          const auto t0 = clock_type::now();
          const std::uint64_t r = impl.call([x] { return runtime_function(x); });
          const auto t1 = clock_type::now();
          lat.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
          if (r != runtime_function(x)) wrong.fetch_add(1, std::memory_order_relaxed);
        }
      });
    go.arrive_and_wait();
    const auto t0 = clock_type::now();
    for (auto& t : threads) t.join();
    const auto t1 = clock_type::now();
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
    calls += per_caller * static_cast<std::uint64_t>(callers);
  }
  if (wrong.load() != 0) fail(state, run, "a call returned the wrong answer");
  std::vector<std::int64_t> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  if (!all.empty()) {
    const auto pick = [&](double q) {
      auto it = all.begin() + static_cast<std::ptrdiff_t>(q * static_cast<double>(all.size() - 1));
      std::nth_element(all.begin(), it, all.end());
      return static_cast<double>(*it);
    };
    state.counters["p50_ns"] = pick(0.50);
    state.counters["p99_ns"] = pick(0.99);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(calls));
}

// ---- registration ----------------------------------------------------------------------------

// Every workload of one implementation; `posters` and `callers` choose which counts run (an
// empty `callers`: no sessions runs).
template <class Impl>
void register_impl(std::initializer_list<int> posters = {1, 2, 4, 8},
                   std::initializer_list<int> callers = {1, 4, 16, 64, 256}) {
  const std::string impl = Impl::name;
  for (int n : posters) {
    const std::string run = "executor_post/" + impl + "/posters:" + std::to_string(n);
    benchmark::RegisterBenchmark(run.c_str(), [run, n](benchmark::State& s) { run_post<Impl>(s, run, n); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  {
    const std::string run = "executor_call/" + impl;
    benchmark::RegisterBenchmark(run.c_str(), [run](benchmark::State& s) { run_call<Impl>(s, run); })
        ->UseRealTime()
        ->Unit(benchmark::kNanosecond);
  }
  for (int n : callers) {
    const std::string run = "sessions/" + impl + "/callers:" + std::to_string(n);
    benchmark::RegisterBenchmark(run.c_str(), [run, n](benchmark::State& s) { run_sessions<Impl>(s, run, n); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
}

// Metrics on: only the runs the off / on comparison needs, and one thread's post + run per
// task with metrics off and on.
void register_metrics() {
  register_impl<tether_metrics_impl>({1, 8}, {});
  for (const bool metrics : {false, true})
    benchmark::RegisterBenchmark(metrics ? "executor_cost/tether_metrics" : "executor_cost/tether",
                                 [metrics](benchmark::State& s) { run_cost(s, metrics); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
}

void register_all() {
  register_impl<tether_impl>();
  register_metrics();
#if defined(TETHER_BENCH_HAVE_ASIO)
  register_impl<asio_impl>();
#endif
  register_impl<mutex_cv_impl>();
}

}  // namespace

// --symmetric_fences: an experiment - the parker's handshake with a full fence on both sides
// instead of membarrier on the waiter's side (detail/platform/fence.hpp), to show what parking costs.
int main(int argc, char** argv) {
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--symmetric_fences")
      tether::detail::fence_mode.store(tether::detail::fence_full);
    else
      argv[kept++] = argv[i];
  }
  return run_main(kept, argv, register_all);
}
