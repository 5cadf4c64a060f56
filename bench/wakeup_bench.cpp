// bench/wakeup_bench.cpp - what a parked consumer costs: how long it takes to wake, and how
// much CPU it burns while it waits.
//
// Runs (every queue with a blocking pop()):
//   wakeup/<queue>/latency   time from the push to the consumer running again, in ns.
//     The consumer waits in pop() on an empty queue. Each sample first lets park_delay pass
//     (far longer than any queue here spins before it sleeps), so the consumer is parked;
//     then the benchmark thread reads the clock and pushes, and the consumer reads the
//     clock as soon as pop() returns. The sample is the difference (manual time); counters
//     p50_ns / p99_ns give the spread. --wakeup_samples=N samples per run (default 200).
//   wakeup/<queue>/idle_cpu  CPU used by a consumer parked on an empty queue, in ms of CPU
//     per s of waiting (counter cpu_ms_per_s). The consumer reads getrusage(RUSAGE_THREAD)
//     before it calls pop() and after pop() returns; the benchmark thread pushes one item
//     after --idle_seconds=S (default 1). The count includes the spin before parking and the
//     wake-up at the end, as a real idle consumer pays them.
//   wakeup/<tether queue>/cancel_latency   time from request_stop() to the consumer's
//     pop(stop_token) returning cancelled, in ns: as latency, but the consumer is freed by its
//     stop token instead of an item (a new consumer thread and stop_source per sample, not
//     timed). tether only: the peers' pops take no stop token.
// Each sample checks the item the consumer got; a wrong or missing one fails the run.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "harness.hpp"
#include "peers/moodycamel.hpp"
#include "peers/mutex_deque.hpp"
#include "peers/tbb.hpp"
#include "peers/tether.hpp"
#include "peers/zmq.hpp"

namespace {

using namespace tether_bench;

constexpr auto park_delay = std::chrono::milliseconds(2);
constexpr auto answer_poll = std::chrono::microseconds(20);
constexpr auto answer_limit = std::chrono::seconds(10);
constexpr std::uint64_t stop_value = ~std::uint64_t{0};

double percentile(std::vector<std::int64_t>& samples, double q) {
  if (samples.empty()) return 0.0;
  const auto k = static_cast<std::size_t>(q * static_cast<double>(samples.size() - 1) + 0.5);
  std::nth_element(samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(k), samples.end());
  return static_cast<double>(samples[k]);
}

template <class Q>
void run_latency(benchmark::State& state, const std::string& run) {
  Q q(queue_capacity);
  std::atomic<std::int64_t> woke_at{0};  // consumer: clock when pop() returned; 0 = not yet
  std::atomic<std::uint64_t> got{0};     // consumer: the item it took
  std::thread consumer([&] {
    for (;;) {
      std::uint64_t v = 0;
      const bool ok = q.pop(v);
      const std::int64_t t = now_ns();
      if (!ok || v == stop_value) return;
      got.store(v, std::memory_order_relaxed);     // relaxed: published by the release below
      woke_at.store(t, std::memory_order_release);  // release: pairs with the acquire poll
    }
  });

  producer_of_t<Q> out(q);
  spin_wait wait(64);
  const std::atomic<bool> stop{false};
  std::vector<std::int64_t> samples;
  samples.reserve(static_cast<std::size_t>(state.max_iterations));
  std::string error;
  std::uint64_t sent = 0;
  for (auto _ : state) {
    std::this_thread::sleep_for(park_delay);
    woke_at.store(0, std::memory_order_relaxed);  // relaxed: the consumer is parked; the push orders it
    ++sent;
    const std::int64_t t0 = now_ns();
    push_retrying(out, sent, wait, stop);
    // Wait for the answer without competing with the consumer for a core.
    const auto give_up = bench_clock::now() + answer_limit;
    std::int64_t t1 = 0;
    // acquire: pairs with the consumer's release store; got is then current.
    while ((t1 = woke_at.load(std::memory_order_acquire)) == 0 && bench_clock::now() < give_up)
      std::this_thread::sleep_for(answer_poll);
    if (t1 == 0) {
      error = "the consumer did not wake within 10 s of item " + std::to_string(sent);
    } else if (got.load(std::memory_order_relaxed) != sent) {  // relaxed: ordered by the acquire above
      error = "pushed " + std::to_string(sent) + ", the consumer got " + std::to_string(got.load());
    }
    if (!error.empty()) {
      fail(state, run, error);
      break;
    }
    samples.push_back(t1 - t0);
    state.SetIterationTime(static_cast<double>(t1 - t0) * 1e-9);
  }
  push_retrying(out, stop_value, wait, stop);
  consumer.join();
  if (!error.empty()) return;
  state.counters["p50_ns"] = percentile(samples, 0.50);
  state.counters["p99_ns"] = percentile(samples, 0.99);
  set_queue_label(state, Q::bounded);
}

template <class Q>
void run_idle(benchmark::State& state, const std::string& run) {
  const auto idle = std::chrono::duration<double>(opts().idle_seconds);
  double cpu_ms_per_s = 0.0;
  for (auto _ : state) {
    Q q(queue_capacity);
    double cpu_s = -1.0;
    double wall_s = 0.0;
    std::uint64_t got = 0;
    std::thread consumer([&] {
      const double c0 = thread_cpu_seconds();
      const auto w0 = bench_clock::now();
      std::uint64_t v = 0;
      if (q.pop(v)) got = v;
      wall_s = seconds_between(w0, bench_clock::now());
      const double c1 = thread_cpu_seconds();
      if (c0 >= 0.0 && c1 >= 0.0) cpu_s = c1 - c0;
    });
    std::this_thread::sleep_for(idle);
    producer_of_t<Q> out(q);
    spin_wait wait(64);
    const std::atomic<bool> stop{false};
    push_retrying(out, std::uint64_t{42}, wait, stop);
    consumer.join();
    if (got != 42) {
      fail(state, run, "the consumer got " + std::to_string(got) + " instead of 42");
      return;
    }
    if (cpu_s < 0.0) {
      fail(state, run, "getrusage(RUSAGE_THREAD) is not available here");
      return;
    }
    state.SetIterationTime(wall_s);
    cpu_ms_per_s = cpu_s * 1e3 / wall_s;
  }
  state.counters["cpu_ms_per_s"] = cpu_ms_per_s;
  set_queue_label(state, Q::bounded);
}

template <class Queue>
void run_cancel_latency(benchmark::State& state, const std::string& run) {
  Queue q = [] {
    if constexpr (std::is_constructible_v<Queue, std::size_t>) return Queue(queue_capacity);
    else return Queue();
  }();
  std::vector<std::int64_t> samples;
  samples.reserve(static_cast<std::size_t>(state.max_iterations));
  std::string error;
  for (auto _ : state) {
    std::stop_source src;
    std::atomic<std::int64_t> woke_at{0};  // consumer: clock when pop() returned; 0 = not yet
    tether::status got = tether::status::ok;
    std::thread consumer([&] {
      const tether::status s = q.pop(src.get_token()).status();
      const std::int64_t t = now_ns();
      got = s;
      woke_at.store(t, std::memory_order_release);  // release: pairs with the acquire poll
    });
    std::this_thread::sleep_for(park_delay);
    const std::int64_t t0 = now_ns();
    src.request_stop();
    const auto give_up = bench_clock::now() + answer_limit;
    std::int64_t t1 = 0;
    // acquire: pairs with the consumer's release store; got is then current.
    while ((t1 = woke_at.load(std::memory_order_acquire)) == 0 && bench_clock::now() < give_up)
      std::this_thread::sleep_for(answer_poll);
    if (t1 == 0) {
      (void)q.push(stop_value);  // free the consumer before joining it
      error = "the consumer's pop did not return within 10 s of request_stop()";
    } else if (got != tether::status::cancelled) {
      error = std::string("pop(stop_token) returned ") + tether::to_string(got) + ", not cancelled";
    }
    consumer.join();
    if (!error.empty()) {
      fail(state, run, error);
      break;
    }
    samples.push_back(t1 - t0);
    state.SetIterationTime(static_cast<double>(t1 - t0) * 1e-9);
  }
  if (!error.empty()) return;
  state.counters["p50_ns"] = percentile(samples, 0.50);
  state.counters["p99_ns"] = percentile(samples, 0.99);
}

template <class Queue>
void add_cancel_latency(const char* queue_name) {
  const std::string name = std::string("wakeup/") + queue_name + "/cancel_latency";
  benchmark::RegisterBenchmark(name.c_str(), [name](benchmark::State& state) {
    run_cancel_latency<Queue>(state, name);
  })->UseManualTime()->Iterations(opts().wakeup_samples)->Unit(benchmark::kMicrosecond);
}

template <template <class> class Adapter>
void add_wakeup() {
  using Q = Adapter<std::uint64_t>;
  static_assert(blocking_pop_adapter<Q>, "wakeup needs a blocking pop()");
  const std::string latency = std::string("wakeup/") + Q::name + "/latency";
  benchmark::RegisterBenchmark(latency.c_str(), [latency](benchmark::State& state) {
    run_latency<Q>(state, latency);
  })->UseManualTime()->Iterations(opts().wakeup_samples)->Unit(benchmark::kMicrosecond);
  const std::string idle = std::string("wakeup/") + Q::name + "/idle_cpu";
  benchmark::RegisterBenchmark(idle.c_str(), [idle](benchmark::State& state) {
    run_idle<Q>(state, idle);
  })->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
}

void register_all() {
  add_wakeup<peers::tether_unbounded>();
  add_wakeup<peers::tether_bounded>();
  add_cancel_latency<tether::mpsc_queue<std::uint64_t>>(peers::tether_unbounded<std::uint64_t>::name);
  add_cancel_latency<tether::bounded_mpsc_queue<std::uint64_t>>(peers::tether_bounded<std::uint64_t>::name);
  add_wakeup<peers::mutex_deque>();
#if defined(TETHER_BENCH_HAVE_MOODYCAMEL)
  add_wakeup<peers::moodycamel_blocking>();
#endif
#if defined(TETHER_BENCH_HAVE_TBB)
  add_wakeup<peers::tbb_bounded>();
#endif
#if defined(TETHER_BENCH_HAVE_ZMQ)
  add_wakeup<peers::zmq_pair>();
#endif
}

}  // namespace

int main(int argc, char** argv) { return tether_bench::run_main(argc, argv, register_all); }
