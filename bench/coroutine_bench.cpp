// SPDX-License-Identifier: MIT
// bench/coroutine_bench.cpp - coroutine sessions (tether/coroutine.hpp): many sessions that wait
// without a thread each, calling into one confined runtime (story 2 as coroutines); a
// coroutine's hop between two executors; how fast a stop request frees a suspended call.
//
// Runs:
//   coro_sessions/tether/sessions:<N>/executors:<E>   N tether::task sessions, spawned round
//       robin on E session executors (a thread each), call into one runtime executor that owns
//       a confined counter: K = 200,000 / N calls each, `co_await tether::co_with(counter, ++)`.
//       Each session first makes one untimed call that waits behind a task holding the runtime
//       busy until all N are spawned and suspended; the resident set's growth from before the
//       first spawn to then, divided by N, is bytes_per_session (the frames, the call states,
//       the futures: what a waiting session costs). Then the runtime is freed and the figure is
//       calls per second (items/s, and counter calls_per_s) until the last session finishes;
//       p50_us / p99_us: the latency of one call, from the end of the one before (one clock
//       reading per call: on a VM a reading costs 25-35 ns, a large share of a call's cost on
//       the session thread, the same for every form; the bookkeeping between two calls is a
//       few adds). Every session has all its calls queued at once, so a call's latency is
//       mostly the N - 1 calls ahead of it: compare the forms at the same N.
//   coro_sessions/threads/sessions:200   the same session as a std::thread making blocking
//       confined::with() calls: what the coroutines replace. K = 50,000 / N (a blocking call
//       from 200 threads on 2 cores is slow; the per-call figures do not depend on K).
//       bytes_per_session: each thread's touched stack and bookkeeping, with every thread
//       blocked in its first call (waited for through the runtime's queue depth, then 20 ms
//       to park); the kernel's own per-thread memory is not in the resident set.
//   coro_sessions/asio/sessions:<N>/executors:<E>   the same with Asio's C++20 awaitables: one
//       io_context thread owns the counter, the sessions are co_spawn()ed on E other
//       io_context threads, and a call is two hops: `co_await asio::post(bind_executor(
//       runtime, use_awaitable))`, ++counter, then the same back to the session's own
//       io_context. (A plain `asio::post(runtime, use_awaitable)` would not move the frame:
//       its completion runs on the awaiting coroutine's executor.) Only with <asio.hpp>.
//   coro_hop/<tether|asio>   one coroutine goes from executor a to executor b and back:
//       `co_await tether::schedule(b); co_await tether::schedule(a);` (Asio: post through
//       bind_executor); time per round trip. The benchmark loop itself runs in the coroutine.
//   coro_cancel/tether/cancel   a session suspended in co_call on a runtime kept busy by a long task;
//       its session thread has been parked for 2 ms; time from request_stop() on the stop
//       source given to spawn() to the session running its catch (operation_cancelled), p50 /
//       p99 in p50_ns / p99_ns. --wakeup_samples=N samples (default 200).
//   coro_cancel/tether/wakeup   the same session and park, but the runtime runs the call: time from
//       the end of the called function on the runtime to the session running again. The
//       wake-up the cancellation is compared with.
//   machine/cross_core/coroutine_bench   the cross-core round trip (harness.hpp): on a virtual
//       machine it changes several-fold for minutes at a time, and every figure above rests on it.
// Every run checks its answers (the counter ends at N * K, every value it handed out reached
// exactly one session, in increasing order per session, every future holds a value; the
// hops ran where they should; the cancelled calls threw operation_cancelled and never ran) and
// fails otherwise.
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <future>
#include <latch>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <tether/confined.hpp>
#include <tether/coroutine.hpp>
#include <tether/executor.hpp>

#include "harness.hpp"

#if defined(TETHER_BENCH_HAVE_ASIO)
// Asio 1.22 looks for clang's coroutines TS only; clang 14 has the C++20 ones, which later
// Asio releases detect themselves.
#if defined(__clang__) && __clang_major__ >= 14 && defined(__cpp_impl_coroutine) && !defined(ASIO_HAS_CO_AWAIT)
#define ASIO_HAS_CO_AWAIT 1
#endif
#include <asio.hpp>
#if !defined(ASIO_HAS_CO_AWAIT)
#undef TETHER_BENCH_HAVE_ASIO  // this compiler's coroutines are not Asio's: no asio runs
#endif
#endif

namespace {

using namespace tether_bench;
using clock_type = std::chrono::steady_clock;

constexpr std::uint64_t coroutine_calls_per_iteration = 200000;
constexpr std::uint64_t thread_calls_per_iteration = 50000;
constexpr auto park_delay = std::chrono::milliseconds(2);  // as wakeup_bench: the waiter is parked
constexpr auto hang_limit = std::chrono::seconds(60);

std::int64_t ns_between(clock_type::time_point a, clock_type::time_point b) noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
}

double percentile(std::vector<std::int64_t>& samples, double q) {
  if (samples.empty()) return 0.0;
  const auto k = static_cast<std::size_t>(q * static_cast<double>(samples.size() - 1) + 0.5);
  std::nth_element(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(k), samples.end());
  return static_cast<double>(samples[k]);
}

// A wait that never ends is a bug in what is measured: say so and stop with a core dump
// rather than hang the suite.
[[noreturn]] void hung(const std::string& run, const char* what) {
  std::fprintf(stderr, "tether bench FAILED %s: %s within %lld s\n", run.c_str(), what,
               static_cast<long long>(hang_limit.count()));
  std::abort();
}

// ---- resident memory -------------------------------------------------------------------------

// The resident set in bytes (/proc/self/statm); -1 where it cannot be read.
std::int64_t resident_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return -1;
  long size = 0, resident = 0;
  const int got = std::fscanf(f, "%ld %ld", &size, &resident);
  std::fclose(f);
  return got == 2 ? static_cast<std::int64_t>(resident) * sysconf(_SC_PAGESIZE) : -1;
}

// Gives the heap's free pages back first, so that the growth measured next is memory the
// sessions newly touched, not memory an earlier run happened to leave free.
std::int64_t resident_bytes_trimmed() {
#if defined(__GLIBC__)
  (void)malloc_trim(0);
#endif
  return resident_bytes();
}

// ---- what the three session forms share ------------------------------------------------------

// One iteration's sessions: where their latencies go (allocated and touched before the memory
// is measured) and what they report.
struct session_plan {
  session_plan(int sessions, std::uint64_t calls_per_iteration)
      : n(sessions),
        calls(std::max<std::uint64_t>(1, calls_per_iteration / static_cast<std::uint64_t>(sessions))),
        latency_ns(static_cast<std::size_t>(sessions) * calls, 0) {}

  std::uint64_t total_calls() const noexcept { return static_cast<std::uint64_t>(n) * calls; }
  std::int64_t* latencies_of(int session) noexcept {
    return latency_ns.data() + static_cast<std::size_t>(session) * calls;
  }

  void reset() {
    parked.store(0, std::memory_order_relaxed);        // relaxed: before the sessions exist
    out_of_order.store(0, std::memory_order_relaxed);  // relaxed: as above
    misplaced.store(0, std::memory_order_relaxed);     // relaxed: as above
    remaining.store(n, std::memory_order_relaxed);     // relaxed: as above
    all_done = std::promise<void>();
    done = all_done.get_future();
  }

  // Each session once, as it ends (however it ends): the last one frees the waiter.
  void finished() {
    // acq_rel: the last one sees every session's writes, and the promise passes them on.
    if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) all_done.set_value();
  }
  struct finish_guard {
    session_plan& p;
    ~finish_guard() { p.finished(); }
  };

  // A value a call returned: they must rise within one session.
  void saw(std::uint64_t value, std::uint64_t& last) noexcept {
    if (value <= last) out_of_order.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after all sessions ended
    last = value;
  }

  const int n;
  const std::uint64_t calls;  // K: timed calls per session
  std::vector<std::int64_t> latency_ns;
  std::atomic<int> parked{0};  // sessions that reached their first (untimed) call
  std::atomic<std::uint64_t> out_of_order{0};
  std::atomic<std::uint64_t> misplaced{0};  // asio: increments that ran off the runtime thread
  std::atomic<int> remaining{0};
  std::promise<void> all_done;
  std::future<void> done;
};

// What a session run reports, summed over its iterations.
struct session_totals {
  double seconds = 0;
  std::uint64_t calls = 0;
  double bytes_per_session = 0;
  int memory_samples = 0;
  std::vector<std::int64_t> latency_ns;

  void add_iteration(benchmark::State& state, session_plan& plan, clock_type::time_point t0, clock_type::time_point t1,
                     std::int64_t rss0, std::int64_t rss1) {
    const double s = std::chrono::duration<double>(t1 - t0).count();
    state.SetIterationTime(s);
    seconds += s;
    calls += plan.total_calls();
    if (rss0 >= 0 && rss1 >= 0) {
      bytes_per_session += static_cast<double>(rss1 - rss0) / plan.n;
      ++memory_samples;
    }
    latency_ns.insert(latency_ns.end(), plan.latency_ns.begin(), plan.latency_ns.end());
  }

  void report(benchmark::State& state) {
    state.SetItemsProcessed(static_cast<std::int64_t>(calls));
    if (seconds > 0) state.counters["calls_per_s"] = static_cast<double>(calls) / seconds;
    state.counters["p50_us"] = percentile(latency_ns, 0.50) * 1e-3;
    state.counters["p99_us"] = percentile(latency_ns, 0.99) * 1e-3;
    if (memory_samples > 0) state.counters["bytes_per_session"] = bytes_per_session / memory_samples;
  }
};

// The checks every form makes after an iteration; an empty string when all is well.
// `sums`: per session, the sum of the values its calls returned.
std::string check_sessions(session_plan& plan, std::uint64_t counter, const std::vector<std::uint64_t>& sums) {
  const std::uint64_t m = plan.total_calls();
  if (counter != m) return "the counter ended at " + std::to_string(counter) + ", not " + std::to_string(m);
  std::uint64_t sum = 0;
  for (std::uint64_t s : sums) sum += s;
  if (sum != m * (m + 1) / 2) return "the values the calls returned do not add up to 1 + ... + " + std::to_string(m);
  if (plan.out_of_order.load() != 0)
    return std::to_string(plan.out_of_order.load()) + " call(s) returned a value not above the session's previous one";
  if (plan.misplaced.load() != 0)
    return std::to_string(plan.misplaced.load()) + " call(s) ran off the runtime's thread";
  for (std::int64_t ns : plan.latency_ns)
    if (ns <= 0) return "a call's latency was not recorded";
  return {};
}

// ---- coro_sessions/tether ----------------------------------------------------------------------

struct tether_sessions {
  explicit tether_sessions(int executors) {
    for (int e = 0; e < executors; ++e)
      session_ex.push_back(std::make_unique<tether::executor>(
          tether::executor_options{.name = "session-" + std::to_string(e)}));
  }
  tether::executor runtime{{.name = "runtime"}};
  tether::confined<std::uint64_t> counter{runtime, std::uint64_t{0}};
  std::vector<std::unique_ptr<tether::executor>> session_ex;
};

tether::task<std::uint64_t> tether_session(tether_sessions& r, session_plan& plan, int id) {
  session_plan::finish_guard guard{plan};
  plan.parked.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after a marker call on this executor
  {
    auto first = tether::co_with(r.counter, [](std::uint64_t&) { return std::uint64_t{0}; });
    (void)co_await first;  // waits here until the runtime is freed
  }
  std::int64_t* lat = plan.latencies_of(id);
  std::uint64_t sum = 0, last = 0;
  auto t0 = clock_type::now();
  for (std::uint64_t i = 0; i < plan.calls; ++i) {
    auto call = tether::co_with(r.counter, [](std::uint64_t& n) { return ++n; });
    const std::uint64_t v = co_await call;
    const auto t1 = clock_type::now();
    lat[i] = ns_between(std::exchange(t0, t1), t1);
    plan.saw(v, last);
    sum += v;
  }
  co_return sum;
}

void run_tether_sessions(benchmark::State& state, const std::string& run, int sessions, int executors) {
  session_plan plan(sessions, coroutine_calls_per_iteration);  // first: outlives the sessions
  tether_sessions r(executors);
  session_totals totals;
  std::vector<std::future<std::uint64_t>> futures;
  futures.reserve(static_cast<std::size_t>(sessions));
  std::vector<std::uint64_t> sums(static_cast<std::size_t>(sessions));

  for (auto _ : state) {
    r.counter.with([](std::uint64_t& n) { n = 0; });
    plan.reset();
    futures.clear();
    std::latch busy_until{1};
    if (!r.runtime.post([&busy_until] { busy_until.wait(); })) return fail(state, run, "the runtime refused a task");

    const std::int64_t rss0 = resident_bytes_trimmed();
    for (int s = 0; s < sessions; ++s) {
      tether::executor& home = *r.session_ex[static_cast<std::size_t>(s % executors)];
      futures.push_back(tether::spawn(home, tether_session(r, plan, s)));
    }
    // Each executor runs the spawns in the order posted: after this marker, every session
    // has suspended in its first call.
    for (auto& ex : r.session_ex) ex->call([] {});
    const std::int64_t rss1 = resident_bytes();
    if (plan.parked.load() != sessions) {
      busy_until.count_down();
      (void)plan.done.wait_for(hang_limit);  // they use the counter: let them end first
      return fail(state, run, "not every session reached its first call");
    }

    const auto t0 = clock_type::now();
    busy_until.count_down();
    if (plan.done.wait_for(hang_limit) != std::future_status::ready) hung(run, "the sessions did not finish");
    const auto t1 = clock_type::now();

    for (std::size_t s = 0; s < futures.size(); ++s) {
      try {
        sums[s] = futures[s].get();
      } catch (const std::exception& e) {
        return fail(state, run, std::string("a session ended with an exception: ") + e.what());
      }
    }
    const std::string error = check_sessions(plan, r.counter.with([](std::uint64_t& n) { return n; }), sums);
    if (!error.empty()) return fail(state, run, error);
    totals.add_iteration(state, plan, t0, t1, rss0, rss1);
  }
  totals.report(state);
}

// ---- coro_sessions/threads -----------------------------------------------------------------------

void run_thread_sessions(benchmark::State& state, const std::string& run, int sessions) {
  session_plan plan(sessions, thread_calls_per_iteration);
  tether::executor runtime{{.name = "runtime"}};
  tether::confined<std::uint64_t> counter{runtime, std::uint64_t{0}};
  session_totals totals;
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(sessions));
  std::vector<std::uint64_t> sums(static_cast<std::size_t>(sessions));
  std::atomic<int> failed_sessions{0};

  for (auto _ : state) {
    counter.with([](std::uint64_t& n) { n = 0; });
    plan.reset();
    std::latch busy{1}, busy_until{1};
    if (!runtime.post([&] {
          busy.count_down();
          busy_until.wait();
        }))
      return fail(state, run, "the runtime refused a task");
    busy.wait();  // out of the queue: from now on its depth counts the calls

    const std::int64_t rss0 = resident_bytes_trimmed();
    for (int s = 0; s < sessions; ++s)
      threads.emplace_back([&, s] {
        session_plan::finish_guard guard{plan};
        try {
          (void)counter.with([](std::uint64_t&) { return std::uint64_t{0}; });
          std::int64_t* lat = plan.latencies_of(s);
          std::uint64_t sum = 0, last = 0;
          auto t0 = clock_type::now();
          for (std::uint64_t i = 0; i < plan.calls; ++i) {
            const std::uint64_t v = counter.with([](std::uint64_t& n) { return ++n; });
            const auto t1 = clock_type::now();
            lat[i] = ns_between(std::exchange(t0, t1), t1);
            plan.saw(v, last);
            sum += v;
          }
          sums[static_cast<std::size_t>(s)] = sum;
        } catch (...) {
          failed_sessions.fetch_add(1);
        }
      });
    // Every call queued (the blocked runtime's queue holds them all), then time to park.
    const auto give_up = clock_type::now() + hang_limit;
    while (runtime.stats().queue_depth < static_cast<std::size_t>(sessions)) {
      if (clock_type::now() > give_up) hung(run, "the threads did not reach their first call");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const std::int64_t rss1 = resident_bytes();

    const auto t0 = clock_type::now();
    busy_until.count_down();
    if (plan.done.wait_for(hang_limit) != std::future_status::ready) hung(run, "the threads did not finish");
    const auto t1 = clock_type::now();
    for (auto& t : threads) t.join();
    threads.clear();

    if (failed_sessions.load() != 0) return fail(state, run, "a session thread's call threw");
    const std::string error = check_sessions(plan, counter.with([](std::uint64_t& n) { return n; }), sums);
    if (!error.empty()) return fail(state, run, error);
    totals.add_iteration(state, plan, t0, t1, rss0, rss1);
  }
  totals.report(state);
}

// ---- coro_hop/tether -----------------------------------------------------------------------------

tether::task<std::uint64_t> tether_hops(benchmark::State& state, tether::executor& a, tether::executor& b) {
  std::uint64_t misplaced = 0;
  for (auto _ : state) {
    co_await tether::schedule(b);
    misplaced += !b.running_in_this_thread();
    co_await tether::schedule(a);
    misplaced += !a.running_in_this_thread();
  }
  co_return misplaced;
}

void run_tether_hop(benchmark::State& state, const std::string& run) {
  tether::executor a{{.name = "hop-a"}}, b{{.name = "hop-b"}};
  std::future<std::uint64_t> f = tether::spawn(a, tether_hops(state, a, b));
  if (f.wait_for(hang_limit) != std::future_status::ready) hung(run, "the hops did not finish");
  try {
    if (const std::uint64_t misplaced = f.get(); misplaced != 0)
      return fail(state, run, std::to_string(misplaced) + " hop(s) resumed on the wrong thread");
  } catch (const std::exception& e) {
    return fail(state, run, std::string("the hopping task threw: ") + e.what());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

// ---- coro_cancel ---------------------------------------------------------------------------------

// The session of both cancel runs: one call; `woke_at` gets the clock as soon as the frame
// runs again, with or without the call's value.
tether::task<int> waiting_session(tether::executor& runtime, std::atomic<std::int64_t>& woke_at,
                                  std::atomic<std::int64_t>& finished_at, std::atomic<int>& ran) {
  bool cancelled = false;
  try {
    auto call = tether::co_call(runtime, [&] {
      ran.fetch_add(1, std::memory_order_relaxed);             // relaxed: read after the session ended
      finished_at.store(now_ns(), std::memory_order_relaxed);  // relaxed: as above. The call's last act
      return 1;
    });
    (void)co_await call;
    woke_at.store(now_ns(), std::memory_order_relaxed);  // relaxed: read after the future
  } catch (const tether::operation_cancelled&) {
    woke_at.store(now_ns(), std::memory_order_relaxed);  // relaxed: as above
    cancelled = true;
  }
  co_return cancelled ? 1 : 0;
}

// cancel: request_stop() frees the session; otherwise the runtime runs its call.
void run_cancel(benchmark::State& state, const std::string& run, bool cancel) {
  std::latch busy_for_cancel{1};  // cancel: the runtime is busy for the whole run (outlives it)
  std::atomic<int> ran{0};
  tether::executor runtime{{.name = "runtime"}};
  tether::executor session{{.name = "session"}};
  std::vector<std::int64_t> samples;
  samples.reserve(static_cast<std::size_t>(state.max_iterations));
  if (cancel && !runtime.post([&] { busy_for_cancel.wait(); })) return fail(state, run, "the runtime refused a task");
  struct release_at_end {  // on every way out, before the executors drain
    std::latch& l;
    bool armed;
    ~release_at_end() {
      if (armed) l.count_down();
    }
  } release{busy_for_cancel, cancel};
  std::string error;

  for (auto _ : state) {
    std::atomic<std::int64_t> woke_at{0}, finished_at{0};
    std::latch busy_for_sample{1};  // wakeup: the runtime is busy until this sample's trigger
    if (!cancel && !runtime.post([&] { busy_for_sample.wait(); })) {
      error = "the runtime refused a task";
      break;
    }
    std::stop_source stop;
    std::future<int> f = tether::spawn(session, waiting_session(runtime, woke_at, finished_at, ran), stop.get_token());
    session.call([] {});  // after the spawn: the session has suspended in its call
    std::this_thread::sleep_for(park_delay);
    const std::int64_t t0 = now_ns();
    if (cancel)
      stop.request_stop();
    else
      busy_for_sample.count_down();
    if (f.wait_for(hang_limit) != std::future_status::ready) hung(run, "the session did not resume");
    int cancelled = 0;
    try {
      cancelled = f.get();
    } catch (const std::exception& e) {
      error = std::string("the session threw: ") + e.what();
      break;
    }
    if (cancelled != (cancel ? 1 : 0)) {
      error = cancel ? "the session's call was not cancelled" : "the session's call was cancelled";
      break;
    }
    // relaxed: the future ordered both stores before this.
    const std::int64_t from = cancel ? t0 : finished_at.load(std::memory_order_relaxed);
    const std::int64_t sample = woke_at.load(std::memory_order_relaxed) - from;
    samples.push_back(sample);
    state.SetIterationTime(static_cast<double>(sample) * 1e-9);
  }
  if (error.empty() && cancel) {
    busy_for_cancel.count_down();
    release.armed = false;
    runtime.call([] {});  // the cancelled calls' jobs have come up and skipped their functions
    if (ran.load() != 0) error = std::to_string(ran.load()) + " cancelled call(s) ran";
  } else if (error.empty() && ran.load() != static_cast<int>(samples.size())) {
    error = "the runtime ran " + std::to_string(ran.load()) + " calls for " + std::to_string(samples.size()) +
            " sessions";
  }
  if (!error.empty()) return fail(state, run, error);
  state.counters["p50_ns"] = percentile(samples, 0.50);
  state.counters["p99_ns"] = percentile(samples, 0.99);
}

// ---- Asio ------------------------------------------------------------------------------------------

#if defined(TETHER_BENCH_HAVE_ASIO)
// An io_context run by its own thread until destroyed.
struct asio_thread {
  asio::io_context ctx{1};  // one thread runs it
  asio::executor_work_guard<asio::io_context::executor_type> work{ctx.get_executor()};
  std::thread thread{[this] { ctx.run(); }};
  ~asio_thread() {
    work.reset();
    thread.join();
  }
  asio::io_context::executor_type executor() noexcept { return ctx.get_executor(); }
  // Waits until everything posted here before has run.
  void drain() {
    std::promise<void> p;
    std::future<void> f = p.get_future();
    asio::post(ctx, [&p] { p.set_value(); });
    f.wait();
  }
};

struct asio_sessions {
  explicit asio_sessions(int executors) {
    for (int e = 0; e < executors; ++e) session_ctx.push_back(std::make_unique<asio_thread>());
  }
  asio_thread runtime;
  std::uint64_t counter = 0;  // the runtime thread's only
  std::vector<std::unique_ptr<asio_thread>> session_ctx;
};

asio::awaitable<std::uint64_t> asio_session(asio_sessions& r, asio_thread& home, session_plan& plan, int id) {
  session_plan::finish_guard guard{plan};
  const auto on_runtime = [&r] { return asio::bind_executor(r.runtime.executor(), asio::use_awaitable); };
  const auto at_home = [&home] { return asio::bind_executor(home.executor(), asio::use_awaitable); };
  plan.parked.fetch_add(1, std::memory_order_relaxed);  // relaxed: a progress count; see run_asio_sessions
  co_await asio::post(on_runtime());  // waits here until the runtime is freed
  co_await asio::post(at_home());
  std::int64_t* lat = plan.latencies_of(id);
  std::uint64_t sum = 0, last = 0;
  auto t0 = clock_type::now();
  for (std::uint64_t i = 0; i < plan.calls; ++i) {
    co_await asio::post(on_runtime());
    if (!r.runtime.executor().running_in_this_thread())
      plan.misplaced.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after all sessions ended
    const std::uint64_t v = ++r.counter;
    co_await asio::post(at_home());
    const auto t1 = clock_type::now();
    lat[i] = ns_between(std::exchange(t0, t1), t1);
    plan.saw(v, last);
    sum += v;
  }
  co_return sum;
}

void run_asio_sessions(benchmark::State& state, const std::string& run, int sessions, int executors) {
  session_plan plan(sessions, coroutine_calls_per_iteration);  // first: outlives the sessions
  asio_sessions r(executors);
  session_totals totals;
  std::vector<std::future<std::uint64_t>> futures;
  futures.reserve(static_cast<std::size_t>(sessions));
  std::vector<std::uint64_t> sums(static_cast<std::size_t>(sessions));

  for (auto _ : state) {
    r.runtime.drain();  // the previous iteration's last increments have run
    r.counter = 0;      // ordered by the drain's future and the posts below
    plan.reset();
    futures.clear();
    std::latch busy_until{1};
    asio::post(r.runtime.ctx, [&busy_until] { busy_until.wait(); });

    const std::int64_t rss0 = resident_bytes_trimmed();
    for (int s = 0; s < sessions; ++s) {
      asio_thread& home = *r.session_ctx[static_cast<std::size_t>(s % executors)];
      futures.push_back(asio::co_spawn(home.ctx, asio_session(r, home, plan, s), asio::use_future));
    }
    // co_spawn starts a session through more than one handler: wait for all to reach their
    // first call, then drain each context so that the handler that got there has returned.
    const auto give_up = clock_type::now() + hang_limit;
    while (plan.parked.load(std::memory_order_relaxed) != sessions) {  // relaxed: a progress count
      if (clock_type::now() > give_up) hung(run, "the sessions did not reach their first call");
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    for (auto& ctx : r.session_ctx) ctx->drain();
    const std::int64_t rss1 = resident_bytes();

    const auto t0 = clock_type::now();
    busy_until.count_down();
    if (plan.done.wait_for(hang_limit) != std::future_status::ready) hung(run, "the sessions did not finish");
    const auto t1 = clock_type::now();

    for (std::size_t s = 0; s < futures.size(); ++s) {
      try {
        sums[s] = futures[s].get();
      } catch (const std::exception& e) {
        return fail(state, run, std::string("a session ended with an exception: ") + e.what());
      }
    }
    r.runtime.drain();
    const std::string error = check_sessions(plan, r.counter, sums);
    if (!error.empty()) return fail(state, run, error);
    totals.add_iteration(state, plan, t0, t1, rss0, rss1);
  }
  totals.report(state);
}

asio::awaitable<std::uint64_t> asio_hops(benchmark::State& state, asio_thread& a, asio_thread& b) {
  std::uint64_t misplaced = 0;
  for (auto _ : state) {
    co_await asio::post(asio::bind_executor(b.executor(), asio::use_awaitable));
    misplaced += !b.executor().running_in_this_thread();
    co_await asio::post(asio::bind_executor(a.executor(), asio::use_awaitable));
    misplaced += !a.executor().running_in_this_thread();
  }
  co_return misplaced;
}

void run_asio_hop(benchmark::State& state, const std::string& run) {
  asio_thread a, b;
  std::future<std::uint64_t> f = asio::co_spawn(a.ctx, asio_hops(state, a, b), asio::use_future);
  if (f.wait_for(hang_limit) != std::future_status::ready) hung(run, "the hops did not finish");
  try {
    if (const std::uint64_t misplaced = f.get(); misplaced != 0)
      return fail(state, run, std::to_string(misplaced) + " hop(s) resumed on the wrong thread");
  } catch (const std::exception& e) {
    return fail(state, run, std::string("the hopping coroutine threw: ") + e.what());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
#endif

// ---- registration ----------------------------------------------------------------------------------

constexpr int session_counts[] = {200, 2000, 20000};
constexpr int executor_counts[] = {1, 2};

template <class F>
void add_sessions(const char* impl, F body) {
  for (int n : session_counts)
    for (int e : executor_counts) {
      const std::string run = std::string("coro_sessions/") + impl + "/sessions:" + std::to_string(n) +
                              "/executors:" + std::to_string(e);
      benchmark::RegisterBenchmark(run.c_str(), [run, n, e, body](benchmark::State& s) { body(s, run, n, e); })
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
}

void add_hop(const char* impl, void (*body)(benchmark::State&, const std::string&)) {
  const std::string run = std::string("coro_hop/") + impl;
  benchmark::RegisterBenchmark(run.c_str(), [run, body](benchmark::State& s) { body(s, run); })
      ->UseRealTime()
      ->Unit(benchmark::kNanosecond);
}

void register_all() {
  add_cross_core_probe("coroutine_bench");  // every run here is cross-core hand-overs
  add_sessions("tether", run_tether_sessions);
  {
    const std::string run = "coro_sessions/threads/sessions:200";
    benchmark::RegisterBenchmark(run.c_str(), [run](benchmark::State& s) { run_thread_sessions(s, run, 200); })
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
#if defined(TETHER_BENCH_HAVE_ASIO)
  add_sessions("asio", run_asio_sessions);
#endif
  add_hop("tether", run_tether_hop);
#if defined(TETHER_BENCH_HAVE_ASIO)
  add_hop("asio", run_asio_hop);
#endif
  for (const bool cancel : {true, false}) {
    const std::string run = cancel ? "coro_cancel/tether/cancel" : "coro_cancel/tether/wakeup";
    benchmark::RegisterBenchmark(run.c_str(), [run, cancel](benchmark::State& s) { run_cancel(s, run, cancel); })
        ->UseManualTime()
        ->Iterations(opts().wakeup_samples)
        ->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace

int main(int argc, char** argv) { return tether_bench::run_main(argc, argv, register_all); }
