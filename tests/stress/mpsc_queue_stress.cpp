// Stress tests for tether::mpsc_queue: 1 to 16 producers (oversubscribed on purpose) into one
// consumer, exactly-once delivery and per-producer order under every consumer verb, block
// linking under contention, close racing against pushes, a parked consumer's idle cost, and
// producer handles: one per thread, mixed with plain push, racing close, made and dropped
// (lanes reused) while pushing; producers stalling mid-push (exactly once, happens-before
// order).
#include <tether/mpsc_queue.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <iterator>
#include <latch>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "queue_stress.hpp"
#include "queue_test_support.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using tether::mpsc_queue;
using tether_test::consumer_kind;

// 256 bytes: 31 per block, so producers race to link a new block every 31 pushes.
struct wide_item {
  std::uint64_t value = 0;
  std::array<std::uint64_t, 31> pad{};
  explicit wide_item(std::uint64_t v = 0) : value(v) {}
};

auto make_plain = [](std::uint64_t tag) { return tag; };
auto get_plain = [](std::uint64_t v) { return v; };
auto push_plain = [](mpsc_queue<std::uint64_t>& q, std::uint64_t&& v) { return q.push(std::move(v)); };

void check_exactly_once(const tether_test::exactly_once_result& r, std::size_t producers, std::uint64_t per_producer) {
  INFO(r.check.first_error());
  CHECK(r.refused == 0);
  CHECK(r.check.errors() == 0);
  CHECK(r.check.count() == producers * per_producer);
  CHECK(r.check.sum() == tether_test::expected_item_sum(producers, per_producer));
  std::uint64_t short_producers = 0;
  for (std::size_t p = 0; p < producers; ++p) short_producers += r.check.next(p) == per_producer ? 0 : 1;
  CHECK(short_producers == 0);
}

}  // namespace

TEST_CASE("mpsc_queue stress: every item of P producers arrives exactly once and in producer order", "[mpsc_queue][stress]") {
  const std::size_t producers = GENERATE(1, 2, 4, 8, 16);
  const consumer_kind kind = GENERATE(consumer_kind::pop, consumer_kind::pop_bulk);
  const std::uint64_t per_producer = tether_test::scaled(200000);
  CAPTURE(producers, per_producer, tether_test::to_string(kind));
  mpsc_queue<std::uint64_t> q;
  const auto r = tether_test::run_exactly_once(q, producers, per_producer, kind, make_plain, get_plain, push_plain);
  check_exactly_once(r, producers, per_producer);
  CHECK(q.is_closed());
  CHECK(q.try_pop().is_closed());
  CHECK(q.size_approx() == 0);
  WARN("mpsc_queue " << producers << " producers, " << tether_test::to_string(kind) << ": "
                     << static_cast<double>(producers * per_producer) / r.seconds / 1e6 << " M items/s");
}

TEST_CASE("mpsc_queue stress: a consumer rotating pop_for, try_pop, try_pop_bulk and try_pop_each loses nothing", "[mpsc_queue][stress]") {
  const std::size_t producers = GENERATE(1, 4);
  const std::uint64_t per_producer = tether_test::scaled(100000);
  CAPTURE(producers, per_producer);
  mpsc_queue<std::uint64_t> q;
  const auto r = tether_test::run_exactly_once(q, producers, per_producer, consumer_kind::mixed, make_plain, get_plain,
                                               push_plain);
  check_exactly_once(r, producers, per_producer);
}

TEST_CASE("mpsc_queue stress: producers linking small blocks concurrently lose nothing", "[mpsc_queue][stress][blocks]") {
  const std::size_t producers = GENERATE(2, 8);
  const consumer_kind kind = GENERATE(consumer_kind::pop, consumer_kind::pop_bulk, consumer_kind::mixed);
  const std::uint64_t per_producer = tether_test::scaled(25000);
  CAPTURE(producers, per_producer, tether_test::to_string(kind));
  mpsc_queue<wide_item> q;
  const auto r = tether_test::run_exactly_once(
      q, producers, per_producer, kind, [](std::uint64_t tag) { return wide_item(tag); },
      [](const wide_item& v) { return v.value; }, [](mpsc_queue<wide_item>& queue, wide_item&& v) { return queue.push(std::move(v)); });
  check_exactly_once(r, producers, per_producer);
}

TEST_CASE("mpsc_queue stress: counted items are neither leaked nor destroyed twice", "[mpsc_queue][stress][drops]") {
  const long live_before = tether_test::counted::live.load();
  const long twice_before = tether_test::counted::destroyed_twice.load();
  const std::size_t producers = 4;
  const std::uint64_t per_producer = tether_test::scaled(50000);
  {
    mpsc_queue<tether_test::counted> q;
    const auto r = tether_test::run_exactly_once(
        q, producers, per_producer, consumer_kind::pop_bulk, [](std::uint64_t tag) { return tether_test::counted(tag); },
        [](const tether_test::counted& c) { return c.value; },
        [](mpsc_queue<tether_test::counted>& queue, tether_test::counted&& c) { return queue.push(std::move(c)); });
    check_exactly_once(r, producers, per_producer);
  }
  CHECK(tether_test::counted::live.load() == live_before);
  CHECK(tether_test::counted::destroyed_twice.load() == twice_before);
}

TEST_CASE("mpsc_queue stress: close racing pushes: accepted == consumed, refused items come back", "[mpsc_queue][stress][close]") {
  const std::size_t producers = GENERATE(1, 2, 4, 8, 16);
  const std::uint64_t budget = tether_test::scaled(50000);
  // Close when about a third of all pushes have been accepted, while producers are busy.
  const std::uint64_t close_at = producers * budget / 3;
  CAPTURE(producers, budget, close_at);
  mpsc_queue<std::unique_ptr<std::uint64_t>> q;
  const auto r = tether_test::run_close_race(q, producers, budget, close_at,
                                             [](auto& queue, std::unique_ptr<std::uint64_t>&& v) { return queue.push(std::move(v)); });
  INFO(r.check.first_error());
  CHECK(r.closes_won == 1);
  CHECK(r.accepted_count >= close_at);
  CHECK(r.check.errors() == 0);
  CHECK(r.check.count() == r.accepted_count);
  CHECK(r.check.sum() == r.accepted_sum);
  // Per producer, the consumer saw exactly the accepted prefix: nothing refused was consumed.
  std::uint64_t mismatched = 0, refused_producers = 0;
  for (std::size_t p = 0; p < producers; ++p) {
    mismatched += r.check.next(p) == r.accepted[p] ? 0 : 1;
    refused_producers += r.accepted[p] < budget ? 1 : 0;
  }
  CHECK(mismatched == 0);
  CHECK(r.handed_back == refused_producers);
  WARN(producers << " producers: " << r.accepted_count << " of " << producers * budget << " pushes accepted (close at "
                 << close_at << "), " << refused_producers << " producers handed an item back");
  CHECK(r.handed_back_bad == 0);
  CHECK(r.accepted_after_refusal == 0);
}

TEST_CASE("mpsc_queue stress: a consumer parked in pop() is idle and still gets the next item", "[mpsc_queue][stress][idle]") {
  mpsc_queue<int> q;
  std::latch ready(1);
  SECTION("pop()") {
    auto consumer = tether_test::run_async([&] {
      ready.count_down();
      const auto cpu0 = tether_test::thread_cpu_time();
      auto v = q.pop();
      return std::make_pair(v, tether_test::thread_cpu_time() - cpu0);
    });
    ready.wait();
    std::this_thread::sleep_for(500ms);
    REQUIRE(q.push(42));
    const auto [v, cpu] = tether_test::finish_or_abort(consumer, "consumer parked in pop()");
    CHECK(cpu < 50ms);
    REQUIRE(v);
    CHECK(*v == 42);
  }
  SECTION("pop_bulk()") {
    auto consumer = tether_test::run_async([&] {
      ready.count_down();
      const auto cpu0 = tether_test::thread_cpu_time();
      std::vector<int> out;
      q.pop_bulk(std::back_inserter(out), 8);
      return std::make_pair(out, tether_test::thread_cpu_time() - cpu0);
    });
    ready.wait();
    std::this_thread::sleep_for(500ms);
    REQUIRE(q.push(43));
    const auto [out, cpu] = tether_test::finish_or_abort(consumer, "consumer parked in pop_bulk()");
    CHECK(cpu < 50ms);
    CHECK(out == std::vector<int>{43});
  }
  SECTION("pop_for() with a long timeout") {
    auto consumer = tether_test::run_async([&] {
      ready.count_down();
      const auto cpu0 = tether_test::thread_cpu_time();
      auto r = q.pop_for(60s);
      return std::make_pair(r ? *r : -1, tether_test::thread_cpu_time() - cpu0);
    });
    ready.wait();
    std::this_thread::sleep_for(500ms);
    REQUIRE(q.push(44));
    const auto [v, cpu] = tether_test::finish_or_abort(consumer, "consumer parked in pop_for()");
    CHECK(cpu < 50ms);
    CHECK(v == 44);
  }
}

// ---- producer handles (make_producer) ------------------------------------------------------

namespace {

using producer_handle = mpsc_queue<std::uint64_t>::producer;

// Which producer threads push through a handle of their own (the others use plain push).
enum class handles { all, even_threads };

const char* to_string(handles h) { return h == handles::all ? "all threads" : "even threads"; }

// Gives the shared harnesses (which push through push(queue, item&&)) one handle per
// producer thread. Producer p - named by the item's tag - makes its handle on its first push,
// on its own thread; entry p is touched only by that thread until the producers are joined.
// Declare it after the queue: the handles are dropped before the queue is destroyed.
template <class T>
class handle_table {
 public:
  handle_table(std::size_t producers, handles which) : handles_(producers), which_(which) {}

  bool uses_handle(std::size_t p) const noexcept { return which_ == handles::all || p % 2 == 0; }

  bool push(mpsc_queue<T>& q, std::uint64_t tag, T&& v) {
    const std::size_t p = tether_test::item_producer(tag);
    if (p >= handles_.size() || !uses_handle(p)) return bool(q.push(std::move(v)));
    auto& h = handles_[p];
    if (!h) h.emplace(q.make_producer());
    return bool(h->push(std::move(v)));
  }

  // Producers that made a handle (after they have been joined).
  std::size_t made() const {
    std::size_t n = 0;
    for (const auto& h : handles_) n += h ? 1 : 0;
    return n;
  }
  std::size_t expected_made() const {
    std::size_t n = 0;
    for (std::size_t p = 0; p < handles_.size(); ++p) n += uses_handle(p) ? 1 : 0;
    return n;
  }

 private:
  std::vector<std::optional<typename mpsc_queue<T>::producer>> handles_;
  handles which_;
};

}  // namespace

TEST_CASE("mpsc_queue stress: P producers, each through its own handle, exactly once and in order", "[mpsc_queue][stress][producer]") {
  const std::size_t producers = GENERATE(1, 2, 4, 8, 16);
  const consumer_kind kind = GENERATE(consumer_kind::pop, consumer_kind::pop_bulk, consumer_kind::mixed);
  const std::uint64_t per_producer = tether_test::scaled(200000);
  CAPTURE(producers, per_producer, tether_test::to_string(kind));
  mpsc_queue<std::uint64_t> q;
  handle_table<std::uint64_t> table(producers, handles::all);
  const auto r = tether_test::run_exactly_once(q, producers, per_producer, kind, make_plain, get_plain,
                                               [&table](mpsc_queue<std::uint64_t>& queue, std::uint64_t&& v) {
                                                 return table.push(queue, v, std::move(v));
                                               });
  check_exactly_once(r, producers, per_producer);
  CHECK(table.made() == producers);
  CHECK(q.is_closed());
  CHECK(q.try_pop().is_closed());
  CHECK(q.size_approx() == 0);
  WARN("mpsc_queue " << producers << " handles, " << tether_test::to_string(kind) << ": "
                     << static_cast<double>(producers * per_producer) / r.seconds / 1e6 << " M items/s");
}

TEST_CASE("mpsc_queue stress: half the producers through handles, half plain push", "[mpsc_queue][stress][producer]") {
  const std::size_t producers = GENERATE(2, 4, 8, 16);
  const consumer_kind kind = GENERATE(consumer_kind::pop, consumer_kind::mixed);
  const std::uint64_t per_producer = tether_test::scaled(200000);
  CAPTURE(producers, per_producer, tether_test::to_string(kind));
  mpsc_queue<std::uint64_t> q;
  handle_table<std::uint64_t> table(producers, handles::even_threads);
  const auto r = tether_test::run_exactly_once(q, producers, per_producer, kind, make_plain, get_plain,
                                               [&table](mpsc_queue<std::uint64_t>& queue, std::uint64_t&& v) {
                                                 return table.push(queue, v, std::move(v));
                                               });
  check_exactly_once(r, producers, per_producer);
  CHECK(table.made() == (producers + 1) / 2);
  CHECK(q.try_pop().is_closed());
  CHECK(q.size_approx() == 0);
}

TEST_CASE("mpsc_queue stress: wide and counted items through handles: nothing lost, leaked or destroyed twice", "[mpsc_queue][stress][producer][drops]") {
  const long live_before = tether_test::counted::live.load();
  const long twice_before = tether_test::counted::destroyed_twice.load();
  SECTION("wide items: a lane links a block every few dozen pushes") {
    const std::size_t producers = GENERATE(2, 8);
    const std::uint64_t per_producer = tether_test::scaled(25000);
    CAPTURE(producers, per_producer);
    mpsc_queue<wide_item> q;
    handle_table<wide_item> table(producers, handles::even_threads);
    const auto r = tether_test::run_exactly_once(
        q, producers, per_producer, consumer_kind::mixed, [](std::uint64_t tag) { return wide_item(tag); },
        [](const wide_item& v) { return v.value; },
        [&table](mpsc_queue<wide_item>& queue, wide_item&& v) { return table.push(queue, v.value, std::move(v)); });
    check_exactly_once(r, producers, per_producer);
    CHECK(table.made() == table.expected_made());
  }
  SECTION("counted items") {
    const std::size_t producers = 4;
    const std::uint64_t per_producer = tether_test::scaled(50000);
    {
      mpsc_queue<tether_test::counted> q;
      handle_table<tether_test::counted> table(producers, handles::all);
      const auto r = tether_test::run_exactly_once(
          q, producers, per_producer, consumer_kind::pop_bulk, [](std::uint64_t tag) { return tether_test::counted(tag); },
          [](const tether_test::counted& c) { return c.value; },
          [&table](mpsc_queue<tether_test::counted>& queue, tether_test::counted&& c) {
            return table.push(queue, c.value, std::move(c));
          });
      check_exactly_once(r, producers, per_producer);
      CHECK(table.made() == producers);
    }
  }
  CHECK(tether_test::counted::live.load() == live_before);
  CHECK(tether_test::counted::destroyed_twice.load() == twice_before);
}

TEST_CASE("mpsc_queue stress: close racing handle pushes: accepted == consumed, refused items come back", "[mpsc_queue][stress][producer][close]") {
  const handles which = GENERATE(handles::all, handles::even_threads);
  const std::size_t producers = GENERATE(1, 2, 4, 8, 16);
  const int round = GENERATE(range(0, 3));  // the race is timing-dependent: run it a few times
  const std::uint64_t budget = tether_test::scaled(50000);
  // Close when about a third of all pushes have been accepted, while producers are busy.
  const std::uint64_t close_at = producers * budget / 3;
  CAPTURE(to_string(which), producers, round, budget, close_at);
  using item = std::unique_ptr<std::uint64_t>;
  mpsc_queue<item> q;
  handle_table<item> table(producers, which);
  const auto r = tether_test::run_close_race(q, producers, budget, close_at, [&table](mpsc_queue<item>& queue, item&& v) {
    const std::uint64_t tag = *v;
    return table.push(queue, tag, std::move(v));
  });
  INFO(r.check.first_error());
  CHECK(r.closes_won == 1);
  CHECK(r.accepted_count >= close_at);
  CHECK(r.check.errors() == 0);
  CHECK(r.check.count() == r.accepted_count);
  CHECK(r.check.sum() == r.accepted_sum);
  // Per producer, the consumer saw exactly the accepted prefix: nothing refused was consumed.
  std::uint64_t mismatched = 0, refused_producers = 0;
  for (std::size_t p = 0; p < producers; ++p) {
    mismatched += r.check.next(p) == r.accepted[p] ? 0 : 1;
    refused_producers += r.accepted[p] < budget ? 1 : 0;
  }
  CHECK(mismatched == 0);
  CHECK(r.handed_back == refused_producers);
  CHECK(r.handed_back_bad == 0);
  CHECK(r.accepted_after_refusal == 0);
  CHECK(table.made() == table.expected_made());
  CHECK(q.try_pop().is_closed());
  CHECK(q.size_approx() == 0);
}

namespace {

// Items per handle in the churn test, cycled: single items, lane blocks crossed or not.
constexpr std::array<std::uint64_t, 10> churn_batches{1, 2, 7, 31, 300, 1023, 1500, 64, 3, 2500};

struct churn_result {
  explicit churn_result(std::size_t sources) : check(sources) {}
  tether_test::order_checker check;  // one source per handle
  std::uint64_t refused = 0;
  std::uint64_t expected_count = 0;
  std::uint64_t expected_sum = 0;
  std::uint64_t short_handles = 0;  // handles whose items did not all arrive
};

// Each producer thread makes and drops `rounds * churn_batches.size()` handles in turn,
// pushing a batch through each - dropped lanes are reused by whichever thread asks next,
// often with items still queued. Three ways to drop: end of scope, move assignment (the new
// handle is made before the old lane is released) and drop after a move. The last producer
// closes; the consumer pops until closed. Items carry their handle (thread, round) as source.
churn_result run_churn(std::size_t producers, std::size_t handles_per_thread, consumer_kind kind) {
  mpsc_queue<std::uint64_t> q;
  churn_result res(producers * handles_per_thread);
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::size_t> running{producers};
  std::latch go(1);
  {
    tether_test::thread_group threads;
    for (std::size_t t = 0; t < producers; ++t)
      threads.spawn([&, t] {
        go.wait();
        std::uint64_t mine = 0;
        std::optional<producer_handle> kept;
        for (std::size_t k = 0; k < handles_per_thread; ++k) {
          const std::uint64_t source = t * handles_per_thread + k;
          const std::uint64_t n = churn_batches[k % churn_batches.size()];
          const auto push_batch = [&](producer_handle& h) {
            for (std::uint64_t s = 0; s < n; ++s) mine += h.push(tether_test::make_item(source, s)) ? 0 : 1;
          };
          switch ((k + t) % 3) {
            case 0: {  // dropped at the end of the scope
              auto h = q.make_producer();
              push_batch(h);
              break;
            }
            case 1:  // replaces the kept handle, whose lane is released after the new one is made
              if (kept) *kept = q.make_producer();
              else kept.emplace(q.make_producer());
              push_batch(*kept);
              break;
            default: {  // moved, then the moved-to handle pushes and is dropped
              auto h = q.make_producer();
              auto moved = std::move(h);
              push_batch(moved);
              break;
            }
          }
        }
        kept.reset();
        refused.fetch_add(mine);
        if (running.fetch_sub(1) == 1) q.close();  // the last one out closes
      });
    go.count_down();
    if (kind == consumer_kind::pop_bulk) {
      std::vector<std::uint64_t> buf;
      while (q.pop_bulk(std::back_inserter(buf), 128) != 0) {
        for (const std::uint64_t v : buf) res.check(v);
        buf.clear();
      }
    } else {
      while (auto v = q.pop()) res.check(*v);
    }
  }
  res.refused = refused.load();
  for (std::size_t t = 0; t < producers; ++t)
    for (std::size_t k = 0; k < handles_per_thread; ++k) {
      const std::uint64_t source = t * handles_per_thread + k;
      const std::uint64_t n = churn_batches[k % churn_batches.size()];
      res.expected_count += n;
      res.expected_sum += tether_test::make_item(source, 0) * n + n * (n - 1) / 2;
      res.short_handles += res.check.next(source) == n ? 0 : 1;
    }
  return res;
}

}  // namespace

TEST_CASE("mpsc_queue stress: threads making and dropping handles while pushing: each handle in order", "[mpsc_queue][stress][producer][reuse]") {
  const std::size_t producers = GENERATE(2, 4, 8);
  const consumer_kind kind = GENERATE(consumer_kind::pop, consumer_kind::pop_bulk);
  const std::size_t handles_per_thread = churn_batches.size() * tether_test::scaled(30, 3);
  CAPTURE(producers, handles_per_thread, tether_test::to_string(kind));
  const churn_result r = run_churn(producers, handles_per_thread, kind);
  INFO(r.check.first_error());
  CHECK(r.refused == 0);
  CHECK(r.check.errors() == 0);
  CHECK(r.check.count() == r.expected_count);
  CHECK(r.check.sum() == r.expected_sum);
  CHECK(r.short_handles == 0);
}

// ---- producers stalled between claiming a slot and publishing it ---------------------------
namespace {
// Its constructor sometimes yields or sleeps: the slot stays claimed but unpublished while
// other producers push behind it (a producer preempted mid-push, on purpose and often).
struct stalling_item {
  std::uint64_t v = 0;
  stalling_item() = default;
  explicit stalling_item(std::uint64_t x) : v(x) {
    const std::uint64_t s = tether_test::item_seq(x);
    if (s % 997 == 3) {
      std::this_thread::sleep_for(50us);
    } else if (s % 61 == 5) {
      std::this_thread::yield();
    }
  }
};
}  // namespace

TEST_CASE("mpsc_queue stress: producers stalling mid-push: exactly once, each producer in order", "[mpsc_queue][stress][stall]") {
  const std::size_t producers = GENERATE(2, 4, 8);
  const consumer_kind kind = GENERATE(consumer_kind::pop, consumer_kind::pop_bulk, consumer_kind::mixed);
  const std::uint64_t per_producer = tether_test::scaled(50000);
  CAPTURE(producers, per_producer, tether_test::to_string(kind));
  mpsc_queue<stalling_item> q;
  const auto r = tether_test::run_exactly_once(
      q, producers, per_producer, kind, make_plain, [](const stalling_item& i) { return i.v; },
      [](mpsc_queue<stalling_item>& qq, std::uint64_t&& v) { return static_cast<bool>(qq.emplace(v)); });
  check_exactly_once(r, producers, per_producer);
  CHECK(q.try_pop().is_closed());
  CHECK(q.size_approx() == 0);
}

// Pushes that happen-before one another come out in that order even while other producers
// stall mid-push around them. The chain: the
// next number is taken by whichever chain thread claims it (a busy bit), pushed, then handed
// on with a release store; every eighth pusher yields, so the next number is often pushed by
// another thread, whose push happens-before through that store.
TEST_CASE("mpsc_queue stress: happens-before order holds past stalled producers", "[mpsc_queue][stress][stall][order]") {
  constexpr int chain_threads = 3;
  constexpr std::size_t noisy = 4;
  constexpr std::uint64_t busy = std::uint64_t{1} << 63;
  const std::uint64_t chain_total = tether_test::scaled(60000, 6000);
  const std::uint64_t per_noisy = tether_test::scaled(60000, 6000);
  mpsc_queue<stalling_item> q;
  // The chain's items are producer 0's; the noisy producers are 1 .. noisy.
  tether_test::order_checker check(noisy + 1);
  std::atomic<std::uint64_t> turn{0};  // the next number to push, | busy while one is pushing it
  std::atomic<int> refused{0};
  std::atomic<std::size_t> running{chain_threads + noisy};
  {
    tether_test::thread_group threads;
    for (int t = 0; t < chain_threads; ++t)
      threads.spawn([&] {
        for (;;) {
          std::uint64_t next = turn.load(std::memory_order_acquire);
          if (next >= chain_total && (next & busy) == 0) break;
          // acquire on success: pairs with the release store below, so the previous number's
          // push happens-before this one.
          if ((next & busy) != 0 ||
              !turn.compare_exchange_weak(next, next | busy, std::memory_order_acquire, std::memory_order_relaxed)) {
            std::this_thread::yield();
            continue;
          }
          if (!q.emplace(tether_test::make_item(0, next))) refused.fetch_add(1);
          turn.store(next + 1, std::memory_order_release);  // release: hands the chain on
          if (next % 8 == 0) std::this_thread::yield();
        }
        if (running.fetch_sub(1) == 1) q.close();
      });
    for (std::size_t p = 1; p <= noisy; ++p)
      threads.spawn([&, p] {
        for (std::uint64_t s = 0; s < per_noisy; ++s)
          if (!q.emplace(tether_test::make_item(p, s))) refused.fetch_add(1);
        if (running.fetch_sub(1) == 1) q.close();
      });
    std::vector<stalling_item> buf;
    while (q.pop_bulk(std::back_inserter(buf), 64) != 0) {
      for (auto& i : buf) check(i.v);
      buf.clear();
    }
  }
  INFO(check.first_error());
  CHECK(refused == 0);
  CHECK(check.errors() == 0);
  CHECK(check.next(0) == chain_total);
  for (std::size_t p = 1; p <= noisy; ++p) CHECK(check.next(p) == per_noisy);
  CHECK(check.count() == chain_total + noisy * per_noisy);
}
