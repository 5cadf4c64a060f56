// bench/channel_bench.cpp - pair channels against ZeroMQ inproc PAIR and a pair of
// moodycamel blocking queues, and how fast a poller wakes up.
//
// Runs:
//   pair_pingpong/<impl>   one round trip between two threads (wall time per iteration): the
//                          benchmark thread sends n and waits for n + 1 from an echo thread;
//                          every answer is checked.
//   pair_oneway/<impl>     one thread sends, the benchmark thread receives (items/s); the
//                          sender sends exactly as many messages as the run has iterations.
//   select_wake/sources:<N>
//                          a waiter thread runs a tether::poller over N idle queues; the
//                          benchmark thread pushes to one of them (a different one each time)
//                          and waits for the waiter's acknowledgement: a round trip through
//                          the poller (compare with pair_pingpong/tether).
//   select_wake/sources:<N>/parked
//                          as above, but the benchmark thread first sleeps 1 ms so that the
//                          waiter is parked for sure; the figure is push -> waiter running
//                          (manual time), i.e. the cost of a real wake-up from a park.
// <impl>: tether (unbounded pair), tether_bounded (capacity 1024), zmq_inproc (two PAIR
// sockets on inproc://, default high-water marks), moodycamel_blocking (two
// BlockingConcurrentQueue, wait_dequeue).
//
// Peers are optional, found with __has_include: ZeroMQ needs -lzmq at link time.
//   g++ -std=c++20 -O2 -Iinclude bench/channel_bench.cpp -lbenchmark -lzmq -pthread
#include <benchmark/benchmark.h>

#include <tether/channel.hpp>
#include <tether/mpsc_queue.hpp>
#include <tether/select.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#if __has_include(<zmq.h>)
#include <zmq.h>
#define CHANNEL_BENCH_ZMQ 1
#endif

#if __has_include(<concurrentqueue/blockingconcurrentqueue.h>)
#include <concurrentqueue/blockingconcurrentqueue.h>
#define CHANNEL_BENCH_MOODYCAMEL 1
#elif __has_include(<blockingconcurrentqueue.h>)
#include <blockingconcurrentqueue.h>
#define CHANNEL_BENCH_MOODYCAMEL 1
#endif

namespace {

using namespace std::chrono_literals;
constexpr std::uint64_t stop_value = ~std::uint64_t{0};

// ---- one adapter per implementation: two connected ends, end 0 and end 1 ----------------
// send(end, v) / recv(end, v): end e sends to the other end and receives from it. Each end is
// used by one thread at a time.

class tether_pair {
 public:
  explicit tether_pair(std::size_t capacity)
      : pair_(capacity == 0 ? tether::make_channel<std::uint64_t>() : tether::make_channel<std::uint64_t>(capacity)) {}
  bool send(int end, std::uint64_t v) { return static_cast<bool>(at(end).send(v)); }
  bool recv(int end, std::uint64_t& v) {
    auto r = at(end).recv();
    if (!r) return false;
    v = *r;
    return true;
  }

 private:
  tether::endpoint<std::uint64_t, std::uint64_t>& at(int end) { return end == 0 ? pair_.first : pair_.second; }
  std::pair<tether::endpoint<std::uint64_t, std::uint64_t>, tether::endpoint<std::uint64_t, std::uint64_t>> pair_;
};

#if defined(CHANNEL_BENCH_ZMQ)
class zmq_pair {
 public:
  explicit zmq_pair(std::size_t) : ctx_(zmq_ctx_new()) {
    static std::atomic<int> next{0};
    const std::string address = "inproc://channel-bench-" + std::to_string(next.fetch_add(1));
    for (void*& s : socket_) {
      s = zmq_socket(ctx_, ZMQ_PAIR);
      const int linger = 0;
      zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    }
    zmq_bind(socket_[0], address.c_str());
    zmq_connect(socket_[1], address.c_str());
  }
  ~zmq_pair() {
    for (void* s : socket_) zmq_close(s);
    zmq_ctx_term(ctx_);
  }
  zmq_pair(const zmq_pair&) = delete;
  zmq_pair& operator=(const zmq_pair&) = delete;
  bool send(int end, std::uint64_t v) { return zmq_send(socket_[end], &v, sizeof v, 0) == sizeof v; }
  bool recv(int end, std::uint64_t& v) { return zmq_recv(socket_[end], &v, sizeof v, 0) == sizeof v; }

 private:
  void* ctx_;
  void* socket_[2] = {nullptr, nullptr};
};
#endif

#if defined(CHANNEL_BENCH_MOODYCAMEL)
class moodycamel_pair {
 public:
  explicit moodycamel_pair(std::size_t) {}
  bool send(int end, std::uint64_t v) { return q_[1 - end].enqueue(v); }
  bool recv(int end, std::uint64_t& v) {
    q_[end].wait_dequeue(v);
    return true;
  }

 private:
  moodycamel::BlockingConcurrentQueue<std::uint64_t> q_[2];  // q_[e]: what end e receives
};
#endif

// ---- pair_pingpong / pair_oneway ----------------------------------------------------------

template <class Pair>
void pingpong(benchmark::State& state, std::size_t capacity) {
  Pair pair(capacity);
  std::thread echo([&] {
    std::uint64_t v = 0;
    while (pair.recv(1, v) && v != stop_value) pair.send(1, v + 1);
  });
  std::uint64_t n = 0;
  for (auto _ : state) {
    std::uint64_t answer = 0;
    if (!pair.send(0, n) || !pair.recv(0, answer) || answer != n + 1) {
      state.SkipWithError("wrong or missing answer");
      break;
    }
    n += 2;
  }
  pair.send(0, stop_value);
  echo.join();
}

template <class Pair>
void oneway(benchmark::State& state, std::size_t capacity) {
  Pair pair(capacity);
  const std::uint64_t total = static_cast<std::uint64_t>(state.max_iterations);
  std::thread sender([&] {
    for (std::uint64_t i = 0; i < total; ++i) pair.send(0, i);
  });
  std::uint64_t expect = 0;
  for (auto _ : state) {
    std::uint64_t v = 0;
    if (!pair.recv(1, v) || v != expect) {
      state.SkipWithError("lost or reordered message");
      break;
    }
    ++expect;
  }
  // On error, drain so the sender can finish.
  for (std::uint64_t v = 0; expect < total && pair.recv(1, v); ++expect) {
  }
  sender.join();
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

template <class Pair>
void add_pair(const std::string& impl, std::size_t capacity) {
  benchmark::RegisterBenchmark(("pair_pingpong/" + impl).c_str(), [capacity](benchmark::State& s) {
    pingpong<Pair>(s, capacity);
  })->UseRealTime()->Unit(benchmark::kNanosecond);
  benchmark::RegisterBenchmark(("pair_oneway/" + impl).c_str(), [capacity](benchmark::State& s) {
    oneway<Pair>(s, capacity);
  })->UseRealTime()->Unit(benchmark::kNanosecond);
}

// ---- select_wake ------------------------------------------------------------------------

void select_wake(benchmark::State& state, std::size_t sources, bool parked) {
  std::vector<std::unique_ptr<tether::mpsc_queue<std::uint64_t>>> queues;
  tether::mpsc_queue<std::uint64_t> ack;
  std::atomic<std::int64_t> woke_at{0};  // the waiter's clock reading when it ran the handler
  bool done = false;                     // the waiter's own
  tether::poller p;
  for (std::size_t i = 0; i < sources; ++i) {
    queues.push_back(std::make_unique<tether::mpsc_queue<std::uint64_t>>());
    p.on(*queues.back(), [&](std::uint64_t v) {
      if (parked) woke_at.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
      if (v == stop_value)
        done = true;
      else
        (void)ack.push(v);
    });
  }
  std::thread waiter([&] {
    while (!done) (void)p.run_one();
  });
  std::uint64_t n = 0;
  for (auto _ : state) {
    if (parked) std::this_thread::sleep_for(1ms);  // untimed (manual time): the waiter parks
    const auto t0 = std::chrono::steady_clock::now();
    (void)queues[n % sources]->push(n);
    auto r = ack.pop();
    if (!r || *r != n) {
      state.SkipWithError("wrong or missing acknowledgement");
      break;
    }
    if (parked) {
      const auto woke = std::chrono::steady_clock::time_point(
          std::chrono::steady_clock::duration(woke_at.load(std::memory_order_relaxed)));
      state.SetIterationTime(std::chrono::duration<double>(woke - t0).count());
    }
    ++n;
  }
  (void)queues[0]->push(stop_value);
  waiter.join();
}

void register_all() {
  add_pair<tether_pair>("tether", 0);
  add_pair<tether_pair>("tether_bounded", 1024);
#if defined(CHANNEL_BENCH_ZMQ)
  add_pair<zmq_pair>("zmq_inproc", 0);
#endif
#if defined(CHANNEL_BENCH_MOODYCAMEL)
  add_pair<moodycamel_pair>("moodycamel_blocking", 0);
#endif
  for (std::size_t n : {std::size_t{1}, std::size_t{1000}}) {
    const std::string name = "select_wake/sources:" + std::to_string(n);
    benchmark::RegisterBenchmark(name.c_str(), [n](benchmark::State& s) { select_wake(s, n, false); })
        ->UseRealTime()
        ->Unit(benchmark::kNanosecond);
    benchmark::RegisterBenchmark((name + "/parked").c_str(), [n](benchmark::State& s) { select_wake(s, n, true); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
