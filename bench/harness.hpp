// bench/harness.hpp - what every tether benchmark shares: the queue adapter concept, waiting
// helpers, payloads that check themselves, failure reporting and main().
//
// The adapter concept. Each queue under test sits behind one small class template, one
// header per peer in bench/peers/:
//
//   template <class T> struct my_queue_adapter {
//     using value_type = T;
//     static constexpr const char* name = "my_queue";  // the <queue> part of every run name
//     static constexpr bool bounded = false;           // fixed capacity: try_push may fail
//     explicit my_queue_adapter(std::size_t capacity); // ring size if bounded, else a hint
//     bool try_push(T&& v);      // false only when full, and then v is untouched (not moved)
//     bool try_pop(T& out);      // false when nothing is ready; never blocks
//     // Optional; the harness detects them and uses them where they apply:
//     std::size_t try_pop_bulk(T* out, std::size_t max);  // mpsc: the consumer takes batches
//     bool pop(T& out);          // blocks until an item arrives: pingpong/blocking, wakeup
//     struct producer {          // per-producer-thread handle (e.g. a producer token)
//       explicit producer(my_queue_adapter&);
//       bool try_push(T&& v);    // as above
//     };
//     static constexpr bool per_producer_fifo = false;  // one producer's items may come
//                                // out of order: mpsc then checks exactly-once only
//   };
//
// Thread rules the harness keeps: producers (try_push, or one `producer` object per thread)
// from any number of threads; try_pop / try_pop_bulk / pop from one consumer thread.
// A false try_push makes the harness retry (pause, then yield); it never drops the item.
#pragma once

#include <benchmark/benchmark.h>

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <tether/detail/platform/config.hpp>

namespace tether_bench {

// ---- the adapter concept ---------------------------------------------------------------

template <class Q>
concept queue_adapter = std::constructible_from<Q, std::size_t> &&
    requires(Q& q, typename Q::value_type&& v, typename Q::value_type& out) {
      { Q::name } -> std::convertible_to<const char*>;
      { Q::bounded } -> std::convertible_to<bool>;
      { q.try_push(std::move(v)) } -> std::same_as<bool>;
      { q.try_pop(out) } -> std::same_as<bool>;
    };

template <class Q>
concept bulk_pop_adapter = queue_adapter<Q> &&
    requires(Q& q, typename Q::value_type* out, std::size_t max) {
      { q.try_pop_bulk(out, max) } -> std::same_as<std::size_t>;
    };

template <class Q>
concept blocking_pop_adapter = queue_adapter<Q> && requires(Q& q, typename Q::value_type& out) {
  { q.pop(out) } -> std::same_as<bool>;
};

// The handle a producer thread pushes through: Q::producer if the adapter has one, else
// the queue itself.
template <class Q>
class queue_producer {
 public:
  explicit queue_producer(Q& q) noexcept : q_(q) {}
  bool try_push(typename Q::value_type&& v) { return q_.try_push(std::move(v)); }

 private:
  Q& q_;
};

template <class Q>
struct producer_of {
  using type = queue_producer<Q>;
};
template <class Q>
  requires requires { typename Q::producer; }
struct producer_of<Q> {
  using type = typename Q::producer;
};
template <class Q>
using producer_of_t = typename producer_of<Q>::type;

// Ring size for bounded queues and the size hint for the others.
inline constexpr std::size_t queue_capacity = 65536;

// ---- waiting without the queue's help --------------------------------------------------

// Polls with a CPU pause `spins` times, then yields the core on every further poll. Never
// sleeps: the benches must not add their own sleeps to the queue's figures.
class spin_wait {
 public:
  explicit spin_wait(int spins) noexcept : spins_(spins) {}
  void operator()() noexcept {
    if (n_ < spins_) {
      ++n_;
      tether::detail::cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
  void reset() noexcept { n_ = 0; }

 private:
  int spins_;
  int n_ = 0;
};

// Pushes v through p, retrying while the queue is full. False only when stop was raised.
template <class P, class T>
bool push_retrying(P& p, T v, spin_wait& wait, const std::atomic<bool>& stop) {
  while (!p.try_push(std::move(v))) {
    if (stop.load(std::memory_order_relaxed)) return false;  // relaxed: a flag; no data rides on it
    wait();
  }
  wait.reset();
  return true;
}

using bench_clock = std::chrono::steady_clock;

inline std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(bench_clock::now().time_since_epoch()).count();
}

inline double seconds_between(bench_clock::time_point a, bench_clock::time_point b) noexcept {
  return std::chrono::duration<double>(b - a).count();
}

// CPU time (user + system) the calling thread has used, in seconds; negative if the
// platform cannot tell.
inline double thread_cpu_seconds() noexcept {
#if defined(RUSAGE_THREAD)
  rusage ru{};
  if (getrusage(RUSAGE_THREAD, &ru) != 0) return -1.0;
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
#else
  return -1.0;
#endif
}

// ---- payloads ----------------------------------------------------------------------------

// A 64-byte item: a key in word[0] and words derived from it, so a torn copy shows.
struct payload64 {
  std::uint64_t word[8];
};
static_assert(sizeof(payload64) == 64);
static_assert(std::is_trivially_copyable_v<payload64>);

template <class T>
struct item_traits;

template <>
struct item_traits<std::uint64_t> {
  static constexpr const char* name_suffix = "";
  static std::uint64_t make(std::uint64_t key) noexcept { return key; }
  static std::uint64_t key(std::uint64_t v) noexcept { return v; }
  static bool intact(std::uint64_t) noexcept { return true; }
};

template <>
struct item_traits<payload64> {
  static constexpr const char* name_suffix = "/payload:64";
  static payload64 make(std::uint64_t key) noexcept {
    payload64 p;
    for (std::uint64_t k = 0; k < 8; ++k) p.word[k] = key + k;
    return p;
  }
  static std::uint64_t key(const payload64& p) noexcept { return p.word[0]; }
  static bool intact(const payload64& p) noexcept { return p.word[7] == p.word[0] + 7 && p.word[4] == p.word[0] + 4; }
};

// ---- options, failures and main ----------------------------------------------------------

// Flags of our own, accepted by every bench binary (Google Benchmark's flags pass through).
struct options {
  int wakeup_samples = 200;   // --wakeup_samples=N: wake-ups timed per wakeup run
  double idle_seconds = 1.0;  // --idle_seconds=S: how long the idle consumer stays parked
};
inline options& opts() {
  static options o;
  return o;
}

inline std::atomic<int>& failures() {
  static std::atomic<int> n{0};
  return n;
}

// Marks the run failed: it posts no figure, and the binary exits with status 1.
inline void fail(benchmark::State& state, const std::string& run, const std::string& why) {
  failures().fetch_add(1, std::memory_order_relaxed);  // relaxed: read after all runs, same thread
  const std::string msg = run + ": " + why;
  std::fprintf(stderr, "tether bench FAILED %s\n", msg.c_str());
  state.SkipWithError(msg.c_str());
}

inline void set_queue_label(benchmark::State& state, bool bounded) {
  state.SetLabel(bounded ? "bounded" : "unbounded");
}

// The cross-core round trip: the time one cache line takes to go from one thread to another
// and back (an atomic handed to and fro, both threads spinning). Every queue's figures rest on
// it, and a virtual machine's can change several-fold for minutes at a time. A pinger starts
// its echo thread once, on another CPU than the caller's (a new thread otherwise starts beside
// its parent and trades the line through yields until the scheduler moves it, tens of ms);
// round_trip() times `trips` round trips and returns the mean in ns.
class cross_core_pinger {
 public:
  cross_core_pinger()
      : echo_([this, cpu = other_cpu()] {
          if (cpu >= 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            (void)pthread_setaffinity_np(pthread_self(), sizeof set, &set);  // failing: left where it is
          }
          spin_wait wait(4096);
          for (std::uint32_t want = 1;; want += 2) {
            for (std::uint32_t v; (v = turn_.load(std::memory_order_acquire)) != want; wait()) {  // acquire: pairs with round_trip()'s release
              if (v == done) return;
            }
            wait.reset();
            turn_.store(want + 1, std::memory_order_release);  // release: pairs with round_trip()'s acquire
          }
        }) {}
  cross_core_pinger(const cross_core_pinger&) = delete;
  cross_core_pinger& operator=(const cross_core_pinger&) = delete;
  ~cross_core_pinger() {
    turn_.store(done, std::memory_order_relaxed);  // relaxed: a cue to leave; no data rides on it
    echo_.join();
  }

  double round_trip(std::uint32_t trips) {
    spin_wait wait(4096);
    const auto t0 = bench_clock::now();
    for (std::uint32_t i = 0; i < trips; ++i, next_ += 2) {
      turn_.store(next_, std::memory_order_release);                                     // release: as above
      for (; turn_.load(std::memory_order_acquire) != next_ + 1; wait()) {}  // acquire: as above
      wait.reset();
    }
    return seconds_between(t0, bench_clock::now()) * 1e9 / trips;
  }

 private:
  // An allowed CPU other than the one the caller runs on; -1 if there is none.
  static int other_cpu() {
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return -1;
    const int here = sched_getcpu();
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
      if (cpu != here && CPU_ISSET(cpu, &allowed)) return cpu;
    return -1;
  }

  static constexpr std::uint32_t done = 0xffffffffu;  // the echo thread's cue to leave
  alignas(64) std::atomic<std::uint32_t> turn_{0};    // odd: the echo thread's turn; even: ours
  std::uint32_t next_ = 1;
  std::thread echo_;  // last: starts once turn_ is initialised
};

// machine/cross_core/<bench>: the probe as a benchmark of its own. A bench registers it beside
// its runs and, with interleaved repetitions, samples it across the whole run. The report
// shows the median and the spread (min and max of the repetitions).
inline void cross_core_round_trip(benchmark::State& state) {
  cross_core_pinger pinger;
  for (auto _ : state) state.SetIterationTime(pinger.round_trip(2000) * 1e-9);  // one round trip
}

// The cross-core speed now, in ns per round trip. mpsc runs report it at their start and end
// (counters cross_core_ns_start, cross_core_ns_end): the report groups a bench's repetitions
// by the speed they ran at.
// Each is the median of 5 batches of 100 round trips, after one batch that lets the echo
// thread start: under a millisecond. Called outside the timed part of a run.
inline double cross_core_now() {
  cross_core_pinger pinger;
  (void)pinger.round_trip(100);
  std::vector<double> batches;
  for (int i = 0; i < 5; ++i) batches.push_back(pinger.round_trip(100));
  std::nth_element(batches.begin(), batches.begin() + 2, batches.end());
  return batches[2];
}

// Registers the probe as machine/cross_core/<bench>: one column per bench binary.
inline void add_cross_core_probe(const std::string& bench) {
  const auto min = [](const std::vector<double>& v) { return v.empty() ? 0.0 : *std::min_element(v.begin(), v.end()); };
  const auto max = [](const std::vector<double>& v) { return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()); };
  // Fixed iterations: a manual time of one round trip per iteration would make
  // --benchmark_min_time ask for millions of them.
  benchmark::RegisterBenchmark(("machine/cross_core/" + bench).c_str(), cross_core_round_trip)
      ->UseManualTime()
      ->Iterations(25)
      ->Unit(benchmark::kNanosecond)
      ->ComputeStatistics("min", min)
      ->ComputeStatistics("max", max);
}

namespace detail {
inline bool take_flag(std::string_view arg, std::string_view flag, std::string& value) {
  if (arg.size() <= flag.size() + 1 || arg.substr(0, flag.size()) != flag || arg[flag.size()] != '=') return false;
  value = std::string(arg.substr(flag.size() + 1));
  return true;
}
}  // namespace detail

// main() of every bench: our flags, then Google Benchmark's, then register_all(), then run.
// Exit status 1 if any run failed its checks.
inline int run_main(int argc, char** argv, void (*register_all)()) {
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    std::string value;
    if (detail::take_flag(argv[i], "--wakeup_samples", value)) {
      opts().wakeup_samples = std::max(1, std::atoi(value.c_str()));
    } else if (detail::take_flag(argv[i], "--idle_seconds", value)) {
      opts().idle_seconds = std::max(0.001, std::atof(value.c_str()));
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  const int failed = failures().load();
  if (failed != 0) std::fprintf(stderr, "tether bench: %d run(s) failed their checks\n", failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace tether_bench
