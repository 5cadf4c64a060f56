// bench/pingpong_bench.cpp - round trip between two threads, in ns.
//
// Runs: pingpong/<queue>/blocking and pingpong/<queue>/spinning.
//
// Two queues of one kind, one each way. The benchmark thread pushes a number into the first
// queue and waits for the answer on the second; an echo thread takes each number and sends
// back number + 1. One iteration is one round trip; the figure is wall time per iteration
// (UseRealTime). The answer is checked every time: a wrong or missing one fails the run.
//   blocking  both threads wait in the queue's own blocking pop() (it may spin, then park)
//   spinning  both threads poll try_pop(): spin_polls polls with a CPU pause, then a yield
//             per poll (so an oversubscribed machine still makes progress)
// Only queues with a blocking pop take part in the blocking runs.
#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "harness.hpp"
#include "peers/atomic_queue.hpp"
#include "peers/boost_lockfree.hpp"
#include "peers/moodycamel.hpp"
#include "peers/mutex_deque.hpp"
#include "peers/tbb.hpp"
#include "peers/tether.hpp"
#include "peers/zmq.hpp"

namespace {

using namespace tether_bench;

constexpr int spin_polls = 4096;
constexpr int push_spins = 64;
constexpr std::uint64_t stop_value = ~std::uint64_t{0};

enum class waiting { blocking, spinning };

template <waiting How, class Q>
bool receive(Q& q, std::uint64_t& out) {
  if constexpr (How == waiting::blocking) {
    return q.pop(out);
  } else {
    spin_wait wait(spin_polls);
    while (!q.try_pop(out)) wait();
    return true;
  }
}

template <class Q, waiting How>
void run_pingpong(benchmark::State& state, const std::string& run) {
  Q there(queue_capacity);
  Q back(queue_capacity);
  std::atomic<bool> stop{false};  // never raised: pushes here retry until they succeed

  std::thread echo([&] {
    producer_of_t<Q> out(back);
    spin_wait wait(push_spins);
    for (;;) {
      std::uint64_t v = 0;
      if (!receive<How>(there, v) || v == stop_value) return;
      push_retrying(out, v + 1, wait, stop);
    }
  });

  producer_of_t<Q> out(there);
  spin_wait wait(push_spins);
  std::uint64_t sent = 0;
  std::string error;
  // One untimed round trip first: the echo thread is running before the clock starts.
  std::uint64_t warm = 0;
  push_retrying(out, sent, wait, stop);
  if (!receive<How>(back, warm) || warm != sent + 1) error = "the warm-up round trip failed";
  sent += 2;
  if (!error.empty()) fail(state, run, error);
  for (auto _ : state) {
    if (!error.empty()) break;
    push_retrying(out, sent, wait, stop);
    std::uint64_t answer = 0;
    if (!receive<How>(back, answer)) {
      error = "the answer queue closed";
    } else if (answer != sent + 1) {
      error = "sent " + std::to_string(sent) + ", got back " + std::to_string(answer) + " (expected " +
              std::to_string(sent + 1) + ")";
    }
    if (!error.empty()) {
      fail(state, run, error);
      break;
    }
    sent += 2;
  }
  push_retrying(out, stop_value, wait, stop);
  echo.join();
  if (error.empty()) set_queue_label(state, Q::bounded);
}

template <template <class> class Adapter, waiting How>
void add_one() {
  using Q = Adapter<std::uint64_t>;
  static_assert(queue_adapter<Q>);
  const std::string run =
      std::string("pingpong/") + Q::name + (How == waiting::blocking ? "/blocking" : "/spinning");
  benchmark::RegisterBenchmark(run.c_str(), [run](benchmark::State& state) {
    run_pingpong<Q, How>(state, run);
  })->UseRealTime()->Unit(benchmark::kNanosecond);
}

// Registers the spinning run of a queue, and the blocking run if it has a blocking pop.
template <template <class> class Adapter>
void add_pingpong() {
  if constexpr (blocking_pop_adapter<Adapter<std::uint64_t>>) add_one<Adapter, waiting::blocking>();
  add_one<Adapter, waiting::spinning>();
}

// Registers only the blocking run (for queues whose polling twin is registered already).
template <template <class> class Adapter>
void add_pingpong_blocking() {
  add_one<Adapter, waiting::blocking>();
}

void register_all() {
  add_cross_core_probe("pingpong_bench");
  add_pingpong<peers::tether_unbounded>();
  add_pingpong<peers::tether_bounded>();
  add_pingpong<peers::mutex_deque>();
#if defined(TETHER_BENCH_HAVE_MOODYCAMEL)
  add_pingpong_blocking<peers::moodycamel_blocking>();
  add_pingpong<peers::moodycamel_plain>();
#endif
#if defined(TETHER_BENCH_HAVE_ATOMIC_QUEUE)
  add_pingpong<peers::atomic_queue_b2>();
#endif
#if defined(TETHER_BENCH_HAVE_BOOST_LOCKFREE)
  add_pingpong<peers::boost_lockfree>();
#endif
#if defined(TETHER_BENCH_HAVE_TBB)
  add_pingpong<peers::tbb_unbounded>();
  add_pingpong_blocking<peers::tbb_bounded>();
#endif
#if defined(TETHER_BENCH_HAVE_ZMQ)
  add_pingpong<peers::zmq_pair>();
#endif
}

}  // namespace

int main(int argc, char** argv) { return tether_bench::run_main(argc, argv, register_all); }
