// Stress tests for tether::mpsc_queue: 1 to 16 producers (oversubscribed on purpose) into one
// consumer, exactly-once delivery and per-producer order under every consumer verb, block
// linking under contention, close racing against pushes, and a parked consumer's idle cost.
#include <tether/mpsc_queue.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <iterator>
#include <latch>
#include <memory>
#include <thread>
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

TEST_CASE("mpsc_queue stress: a consumer rotating pop_for, try_pop, try_pop_bulk and drain loses nothing", "[mpsc_queue][stress]") {
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
