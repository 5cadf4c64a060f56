// bench/mpsc_bench.cpp - many producers, one consumer: items per second through each queue.
//
// Runs: mpsc/<queue>/producers:<N> (uint64_t items) and mpsc/<queue>/producers:<N>/payload:64
// (64-byte items), N = 1, 2, 4, 8, one consumer; mpsc/<queue>/producers:<N>/consumer:item for
// the plain and handle pushes (one try_pop per item, a yield when empty: the loop users write);
// and cost/<queue>/{push,pop}[/payload:64], one thread alone (see run_cost).
//
// A run starts its producer threads once and keeps them for all its iterations. One
// iteration is a round: the consumer (the benchmark thread) releases every producer at once,
// each pushes items_per_round / N items, and the consumer takes them all. The round's time
// runs from the release to the last item taken (manual time): thread start-up and joins are
// not counted. A full queue makes its producer retry (pause, then yield); an empty queue makes
// the consumer do the same. Consumers with try_pop_bulk take up to bulk_max items at a time;
// the consumer:item runs take one per try_pop and yield at once when the queue is empty.
//
// Before and after its rounds a run times the cross-core round trip (harness.hpp) and reports
// both as counters, so that the report can compare queues at the same machine speed.
//
// Every item carries (producer, sequence number). The consumer checks that each producer's
// items arrive exactly once and in the order pushed (only exactly once for a queue whose
// adapter says per_producer_fifo = false), that 64-byte items are not torn, and after each
// round that the count and the sum of keys match what was pushed. Any mismatch,
// or no progress for stall_limit, fails the run: it posts no figure and the binary exits 1.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "peers/atomic_queue.hpp"
#include "peers/boost_lockfree.hpp"
#include "peers/moodycamel.hpp"
#include "peers/mutex_deque.hpp"
#include "peers/tbb.hpp"
#include "peers/tether.hpp"

namespace {

using namespace tether_bench;

constexpr std::uint64_t items_per_round = std::uint64_t{1} << 18;
constexpr int producer_counts[] = {1, 2, 4, 8};
constexpr std::size_t bulk_max = 256;
constexpr int producer_spins = 64;   // pauses before a producer facing a full queue yields
constexpr int consumer_spins = 128;  // pauses before the consumer facing an empty queue yields
constexpr auto stall_limit = std::chrono::seconds(10);

// Keys: producer index in the high bits, that producer's sequence number in the low bits.
constexpr unsigned producer_shift = 40;
constexpr std::uint64_t sequence_mask = (std::uint64_t{1} << producer_shift) - 1;

// The consumer's bookkeeping: exactly once, per-producer order (for queues that promise it),
// count and sum.
template <class T>
class mpsc_check {
 public:
  mpsc_check(int producers, std::uint64_t per_producer, bool ordered)
      : next_(static_cast<std::size_t>(producers), 0), per_producer_(per_producer), ordered_(ordered) {
    if (!ordered_) seen_.assign(static_cast<std::size_t>(producers) * per_producer, 0);
  }

  bool take(const T& item, std::string& error) {
    if (!item_traits<T>::intact(item)) {
      error = "torn item (key " + std::to_string(item_traits<T>::key(item)) + ")";
      return false;
    }
    const std::uint64_t key = item_traits<T>::key(item);
    const std::uint64_t p = key >> producer_shift;
    const std::uint64_t seq = key & sequence_mask;
    if (p >= next_.size()) {
      error = "item from unknown producer " + std::to_string(p);
      return false;
    }
    if (ordered_) {
      if (seq != next_[p]) {
        error = "producer " + std::to_string(p) + ": expected item " + std::to_string(next_[p]) + ", got " +
                std::to_string(seq) + " (lost, duplicated or reordered)";
        return false;
      }
      ++next_[p];
    } else {
      // next_[p] is the first sequence number of the current round.
      const std::uint64_t k = seq - next_[p];
      if (seq < next_[p] || k >= per_producer_ || seen_[p * per_producer_ + k] != 0) {
        error = "producer " + std::to_string(p) + ": item " + std::to_string(seq) + " duplicated or out of its round";
        return false;
      }
      seen_[p * per_producer_ + k] = 1;
    }
    ++count_;
    sum_ += key;
    return true;
  }

  // After a round: every producer has pushed `rounds * per_producer` items in all.
  bool end_round(std::uint64_t rounds, std::string& error) {
    const std::uint64_t pushed = rounds * per_producer_;
    std::uint64_t expected_sum = 0;
    for (std::uint64_t p = 0; p < next_.size(); ++p)
      expected_sum += pushed * (p << producer_shift) + pushed * (pushed - 1) / 2;
    const std::uint64_t expected_count = pushed * next_.size();
    if (count_ != expected_count || sum_ != expected_sum) {
      error = "count " + std::to_string(count_) + " (expected " + std::to_string(expected_count) + "), sum " +
              std::to_string(sum_) + " (expected " + std::to_string(expected_sum) + ")";
      return false;
    }
    if (!ordered_) {
      for (auto& n : next_) n = pushed;
      std::fill(seen_.begin(), seen_.end(), std::uint8_t{0});
    }
    return true;
  }

 private:
  std::vector<std::uint64_t> next_;  // per producer: the sequence number expected next
  std::vector<std::uint8_t> seen_;   // unordered queues: items of this round already taken
  std::uint64_t per_producer_;
  bool ordered_;
  std::uint64_t count_ = 0;
  std::uint64_t sum_ = 0;  // of keys, modulo 2^64
};

// Adapters of queues that may hand one producer's items out of order say so with
// `static constexpr bool per_producer_fifo = false;` and get the exactly-once check only.
template <class Q>
constexpr bool keeps_producer_order() {
  if constexpr (requires { Q::per_producer_fifo; }) {
    return Q::per_producer_fifo;
  } else {
    return true;
  }
}

// How the consumer takes: the queue's best way (bulk where it has one, spinning a little on
// empty), or one item per try_pop, yielding when empty.
enum class consumer_kind { best, item };

template <class Q>
std::size_t take_some(Q& q, typename Q::value_type* buf, consumer_kind kind) {
  if (kind == consumer_kind::item) return q.try_pop(buf[0]) ? 1 : 0;
  if constexpr (bulk_pop_adapter<Q>) {
    return q.try_pop_bulk(buf, bulk_max);
  } else {
    return q.try_pop(buf[0]) ? 1 : 0;
  }
}

template <class Q>
void run_mpsc(benchmark::State& state, const std::string& run, int producers, consumer_kind kind) {
  using T = typename Q::value_type;
  const std::uint64_t per_producer = items_per_round / static_cast<std::uint64_t>(producers);
  const std::uint64_t per_round = per_producer * static_cast<std::uint64_t>(producers);
  const double cross_core_start = cross_core_now();  // before any thread of the run exists

  Q q(queue_capacity);
  std::atomic<std::uint32_t> round{0};  // bumped by the consumer to release a round
  std::atomic<int> ready{0};            // producers waiting for their first round
  std::atomic<bool> stop{false};        // set once, before the final bump

  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(producers));
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      producer_of_t<Q> out(q);
      spin_wait wait(producer_spins);
      std::uint64_t seq = 0;
      ready.fetch_add(1, std::memory_order_release);  // release: pairs with the consumer's acquire load
      for (std::uint32_t r = 1;; ++r) {
        round.wait(r - 1, std::memory_order_acquire);  // acquire: pairs with the consumer's release bump
        if (stop.load(std::memory_order_acquire)) return;  // acquire: pairs with the release store of stop
        const std::uint64_t base = static_cast<std::uint64_t>(p) << producer_shift;
        for (std::uint64_t i = 0; i < per_producer; ++i) {
          if (!push_retrying(out, item_traits<T>::make(base | seq++), wait, stop)) return;
        }
      }
    });
  }
  while (ready.load(std::memory_order_acquire) < producers) std::this_thread::yield();  // acquire: as above

  mpsc_check<T> check(producers, per_producer, keeps_producer_order<Q>());
  std::vector<T> buf(bulk_max);
  spin_wait wait(consumer_spins);
  std::string error;
  std::uint64_t rounds = 0;
  for (auto _ : state) {
    const auto t0 = bench_clock::now();
    round.fetch_add(1, std::memory_order_release);  // release: pairs with the producers' acquire wait
    round.notify_all();
    std::uint64_t taken = 0;
    std::uint64_t idle = 0;
    bench_clock::time_point idle_since;
    while (taken < per_round && error.empty()) {
      const std::size_t n = take_some(q, buf.data(), kind);
      if (n == 0) {
        if (idle++ == 0) {
          idle_since = bench_clock::now();
        } else if ((idle & 1023) == 0 && bench_clock::now() - idle_since > stall_limit) {
          error = "no item for " + std::to_string(stall_limit.count()) + " s after " + std::to_string(taken) +
                  " of " + std::to_string(per_round) + " in round " + std::to_string(rounds + 1);
        }
        if (kind == consumer_kind::item) {
          std::this_thread::yield();
        } else {
          wait();
        }
        continue;
      }
      idle = 0;
      wait.reset();
      for (std::size_t i = 0; i < n && error.empty(); ++i) check.take(buf[i], error);
      taken += n;
    }
    const auto t1 = bench_clock::now();
    ++rounds;
    if (error.empty()) check.end_round(rounds, error);
    if (!error.empty()) {
      fail(state, run, error);
      break;
    }
    state.SetIterationTime(seconds_between(t0, t1));
  }

  stop.store(true, std::memory_order_release);     // release: pairs with the producers' acquire load
  round.fetch_add(1, std::memory_order_release);  // release: wakes them to see it
  round.notify_all();
  for (auto& t : threads) t.join();

  if (!error.empty()) return;
  if (T extra{}; q.try_pop(extra)) {
    fail(state, run, "an item more than was pushed (key " + std::to_string(item_traits<T>::key(extra)) + ")");
    return;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(rounds * per_round));
  set_queue_label(state, Q::bounded);
  state.counters["cross_core_ns_start"] = cross_core_start;
  state.counters["cross_core_ns_end"] = cross_core_now();
}

// cost/<queue>/push and cost/<queue>/pop (and /payload:64): what one call costs on its own.
// One thread pushes cost_items items (through a producer handle if the adapter has one), then
// takes them all (in batches if it can); `push` times the first phase, `pop` the second, per
// item, with no other thread running and no cache line crossing cores - the instructions and
// the queue's own memory. The mpsc runs add the cross-core traffic. Checked like mpsc (one
// producer: order, count and sum).
constexpr std::uint64_t cost_items = 4096;  // up to about 300 KiB of slots: in the core's caches
constexpr int cost_rounds = 200;            // iterations per repetition (fixed: see below)

template <class Q>
void run_cost(benchmark::State& state, const std::string& run, bool time_push) {
  using T = typename Q::value_type;
  Q q(queue_capacity);
  producer_of_t<Q> out(q);
  mpsc_check<T> check(1, cost_items, keeps_producer_order<Q>());
  std::vector<T> got(cost_items + bulk_max);  // checked after the clock stops
  std::string error;
  std::uint64_t seq = 0;
  std::uint64_t rounds = 0;
  for (auto _ : state) {
    const auto t0 = bench_clock::now();
    for (std::uint64_t i = 0; i < cost_items && error.empty(); ++i)
      if (!out.try_push(item_traits<T>::make(seq++))) error = "push refused with room left";
    const auto t1 = bench_clock::now();
    std::uint64_t taken = 0;
    while (taken < cost_items && error.empty()) {
      const std::size_t n = take_some(q, got.data() + taken, consumer_kind::best);
      if (n == 0) error = "only " + std::to_string(taken) + " of " + std::to_string(cost_items) + " items came out";
      taken += n;
    }
    const auto t2 = bench_clock::now();
    for (std::uint64_t i = 0; i < taken && error.empty(); ++i) check.take(got[i], error);
    ++rounds;
    if (error.empty()) check.end_round(rounds, error);
    if (!error.empty()) {
      fail(state, run, error);
      return;
    }
    state.SetIterationTime((time_push ? seconds_between(t0, t1) : seconds_between(t1, t2)) / cost_items);
  }
  set_queue_label(state, Q::bounded);
}

template <template <class> class Adapter, class T>
void add_cost() {
  using Q = Adapter<T>;
  for (const bool push : {true, false}) {
    const std::string run = std::string("cost/") + Q::name + (push ? "/push" : "/pop") + item_traits<T>::name_suffix;
    // Fixed iterations: with a manual time per item, --benchmark_min_time would ask for
    // millions of rounds.
    benchmark::RegisterBenchmark(run.c_str(), [run, push](benchmark::State& state) { run_cost<Q>(state, run, push); })
        ->UseManualTime()
        ->Iterations(cost_rounds)
        ->Unit(benchmark::kNanosecond);
  }
}

template <template <class> class Adapter, class T>
void add_one(int producers, consumer_kind kind = consumer_kind::best) {
  using Q = Adapter<T>;
  static_assert(queue_adapter<Q>);
  const std::string run = std::string("mpsc/") + Q::name + "/producers:" + std::to_string(producers) +
                          item_traits<T>::name_suffix + (kind == consumer_kind::item ? "/consumer:item" : "");
  benchmark::RegisterBenchmark(run.c_str(), [run, producers, kind](benchmark::State& state) {
    run_mpsc<Q>(state, run, producers, kind);
  })->UseManualTime()->Unit(benchmark::kMillisecond);
}

// The consumer:item runs of one queue (uint64_t items, every producer count).
template <template <class> class Adapter>
void add_item_consumer() {
  for (const int producers : producer_counts) add_one<Adapter, std::uint64_t>(producers, consumer_kind::item);
}

// Registers every mpsc run of one queue: both payloads, every producer count.
template <template <class> class Adapter>
void add_mpsc() {
  for (const int producers : producer_counts) add_one<Adapter, std::uint64_t>(producers);
  for (const int producers : producer_counts) add_one<Adapter, payload64>(producers);
  add_cost<Adapter, std::uint64_t>();
  add_cost<Adapter, payload64>();
}

void register_all() {
  add_cross_core_probe("mpsc_bench");
  add_mpsc<peers::tether_unbounded>();
  add_mpsc<peers::tether_unbounded_bulk>();
  add_mpsc<peers::tether_producer>();
  add_mpsc<peers::tether_producer_bulk>();
  add_mpsc<peers::tether_bounded>();
  add_mpsc<peers::mutex_deque>();
  add_item_consumer<peers::tether_unbounded>();
  add_item_consumer<peers::tether_producer>();
#if defined(TETHER_BENCH_HAVE_MOODYCAMEL)
  add_mpsc<peers::moodycamel_plain>();
  add_mpsc<peers::moodycamel_token>();
  add_mpsc<peers::moodycamel_bulk>();
  add_mpsc<peers::moodycamel_blocking>();
  add_item_consumer<peers::moodycamel_plain>();
  add_item_consumer<peers::moodycamel_token>();
#endif
#if defined(TETHER_BENCH_HAVE_ATOMIC_QUEUE)
  add_mpsc<peers::atomic_queue_b2>();
#endif
#if defined(TETHER_BENCH_HAVE_BOOST_LOCKFREE)
  add_mpsc<peers::boost_lockfree>();
#endif
#if defined(TETHER_BENCH_HAVE_TBB)
  add_mpsc<peers::tbb_unbounded>();
  add_mpsc<peers::tbb_bounded>();
#endif
}

}  // namespace

int main(int argc, char** argv) { return tether_bench::run_main(argc, argv, register_all); }
