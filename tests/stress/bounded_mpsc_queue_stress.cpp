// Stress tests for tether::bounded_mpsc_queue: 1 to 16 producers (oversubscribed on purpose)
// blocking on a small ring, exactly-once delivery and per-producer order under every
// producer and consumer verb, close racing against blocked and running pushes, and the idle
// cost of a parked consumer and of producers parked on a full queue.
#include <tether/bounded_mpsc_queue.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
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
using tether::bounded_mpsc_queue;
using tether_test::consumer_kind;

using queue_u64 = bounded_mpsc_queue<std::uint64_t>;

auto make_plain = [](std::uint64_t tag) { return tag; };
auto get_plain = [](std::uint64_t v) { return v; };
auto push_blocking = [](queue_u64& q, std::uint64_t&& v) { return q.push(std::move(v)); };

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

// Pushes with one of three verbs, chosen by the item's producer: blocking push(), push_for()
// retried on timeout, or try_push() retried (yielding) on full. The value must be untouched
// by every failed attempt; `damaged` counts attempts that broke that rule.
struct mixed_pusher {
  std::atomic<std::uint64_t>* timeouts;
  std::atomic<std::uint64_t>* fulls;
  std::atomic<std::uint64_t>* damaged;

  bool operator()(queue_u64& q, std::uint64_t&& v) const {
    const std::uint64_t tag = v;
    switch (tether_test::item_producer(tag) % 3) {
      case 0: return bool(q.push(std::move(v)));
      case 1:
        for (;;) {
          const auto r = q.push_for(std::move(v), 100us);
          if (r) return true;
          if (r.is_closed()) return false;
          timeouts->fetch_add(1, std::memory_order_relaxed);
          if (v != tag) damaged->fetch_add(1, std::memory_order_relaxed);
        }
      default:
        for (;;) {
          const auto r = q.try_push(std::move(v));
          if (r) return true;
          if (r.is_closed()) return false;
          fulls->fetch_add(1, std::memory_order_relaxed);
          if (v != tag) damaged->fetch_add(1, std::memory_order_relaxed);
          std::this_thread::yield();
        }
    }
  }
};

}  // namespace

TEST_CASE("bounded_mpsc_queue stress: every item of P blocking producers arrives exactly once and in producer order", "[bounded_mpsc_queue][stress]") {
  const std::size_t producers = GENERATE(1, 2, 4, 8, 16);
  const consumer_kind kind = GENERATE(consumer_kind::pop, consumer_kind::pop_bulk);
  const std::uint64_t per_producer = tether_test::scaled(200000);
  CAPTURE(producers, per_producer, tether_test::to_string(kind));
  queue_u64 q(64);
  const auto r = tether_test::run_exactly_once(q, producers, per_producer, kind, make_plain, get_plain, push_blocking);
  check_exactly_once(r, producers, per_producer);
  CHECK(q.try_pop().is_closed());
  CHECK(q.size_approx() == 0);
  WARN("bounded_mpsc_queue(64) " << producers << " producers, " << tether_test::to_string(kind) << ": "
                                 << static_cast<double>(producers * per_producer) / r.seconds / 1e6 << " M items/s");
}

TEST_CASE("bounded_mpsc_queue stress: mixed producer verbs into the smallest ring lose nothing", "[bounded_mpsc_queue][stress]") {
  const std::size_t capacity = GENERATE(2, 64);
  const consumer_kind kind = GENERATE(consumer_kind::pop, consumer_kind::mixed);
  const std::size_t producers = 6;  // two of each verb
  const std::uint64_t per_producer = tether_test::scaled(30000);
  CAPTURE(capacity, per_producer, tether_test::to_string(kind));
  std::atomic<std::uint64_t> timeouts{0}, fulls{0}, damaged{0};
  queue_u64 q(capacity);
  const auto r = tether_test::run_exactly_once(q, producers, per_producer, kind, make_plain, get_plain,
                                               mixed_pusher{&timeouts, &fulls, &damaged});
  check_exactly_once(r, producers, per_producer);
  CHECK(damaged.load() == 0);
  WARN("capacity " << capacity << ", " << tether_test::to_string(kind) << " consumer: " << timeouts.load()
                   << " push_for timeouts, " << fulls.load() << " try_push fulls");
}

TEST_CASE("bounded_mpsc_queue stress: counted items are neither leaked nor destroyed twice", "[bounded_mpsc_queue][stress][drops]") {
  const long live_before = tether_test::counted::live.load();
  const long twice_before = tether_test::counted::destroyed_twice.load();
  const std::size_t producers = 4;
  const std::uint64_t per_producer = tether_test::scaled(50000);
  {
    bounded_mpsc_queue<tether_test::counted> q(64);
    const auto r = tether_test::run_exactly_once(
        q, producers, per_producer, consumer_kind::pop_bulk, [](std::uint64_t tag) { return tether_test::counted(tag); },
        [](const tether_test::counted& c) { return c.value; },
        [](bounded_mpsc_queue<tether_test::counted>& queue, tether_test::counted&& c) { return queue.push(std::move(c)); });
    check_exactly_once(r, producers, per_producer);
  }
  CHECK(tether_test::counted::live.load() == live_before);
  CHECK(tether_test::counted::destroyed_twice.load() == twice_before);
}

TEST_CASE("bounded_mpsc_queue stress: close racing blocked pushes: accepted == consumed, refused items come back", "[bounded_mpsc_queue][stress][close]") {
  const std::size_t producers = GENERATE(1, 2, 4, 8, 16);
  const bool timed = GENERATE(false, true);
  const std::uint64_t budget = tether_test::scaled(50000);
  const std::uint64_t close_at = producers * budget / 3;
  CAPTURE(producers, budget, close_at, timed);
  bounded_mpsc_queue<std::unique_ptr<std::uint64_t>> q(64);
  std::atomic<std::uint64_t> damaged{0};
  const auto r = tether_test::run_close_race(q, producers, budget, close_at, [&](auto& queue, std::unique_ptr<std::uint64_t>&& v) {
    if (!timed) return bool(queue.push(std::move(v)));
    for (;;) {
      const auto res = queue.push_for(std::move(v), 200us);
      if (res) return true;
      if (res.is_closed()) return false;
      if (v == nullptr) damaged.fetch_add(1);  // a timed-out push must leave the value alone
    }
  });
  INFO(r.check.first_error());
  CHECK(r.closes_won == 1);
  CHECK(r.accepted_count >= close_at);
  CHECK(r.check.errors() == 0);
  CHECK(r.check.count() == r.accepted_count);
  CHECK(r.check.sum() == r.accepted_sum);
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
  CHECK(damaged.load() == 0);
}

TEST_CASE("bounded_mpsc_queue stress: a consumer parked in pop() is idle and still gets the next item", "[bounded_mpsc_queue][stress][idle]") {
  bounded_mpsc_queue<int> q(8);
  std::latch ready(1);
  auto consumer = tether_test::run_async([&] {
    ready.count_down();
    const auto cpu0 = tether_test::thread_cpu_time();
    auto v = q.pop();
    return std::make_pair(v, tether_test::thread_cpu_time() - cpu0);
  });
  ready.wait();
  std::this_thread::sleep_for(500ms);
  REQUIRE(q.try_push(42));
  const auto [v, cpu] = tether_test::finish_or_abort(consumer, "consumer parked in pop()");
  CHECK(cpu < 50ms);
  REQUIRE(v);
  CHECK(*v == 42);
}

TEST_CASE("bounded_mpsc_queue stress: producers parked on a full queue are idle and complete once there is room", "[bounded_mpsc_queue][stress][idle]") {
  constexpr int blocked = 4;
  bounded_mpsc_queue<int> q(2);
  REQUIRE(q.try_push(0));
  REQUIRE(q.try_push(1));
  std::latch ready(blocked);
  std::vector<std::future<std::pair<bool, std::chrono::microseconds>>> producers;
  for (int i = 0; i < blocked; ++i)
    producers.push_back(tether_test::run_async([&, i] {
      ready.count_down();
      const auto cpu0 = tether_test::thread_cpu_time();
      const bool ok = i % 2 == 0 ? bool(q.push(100 + i)) : q.push_for(100 + i, 60s).status() == tether::status::ok;
      return std::make_pair(ok, tether_test::thread_cpu_time() - cpu0);
    }));
  ready.wait();
  std::this_thread::sleep_for(500ms);
  // Make room one item at a time; every blocked producer gets its item in.
  std::vector<int> got;
  for (int i = 0; i < blocked + 2; ++i) {
    auto v = q.pop_for(30s);
    REQUIRE(v);
    got.push_back(*v);
  }
  std::uint64_t slow = 0, failed = 0;
  for (auto& f : producers) {
    const auto [ok, cpu] = tether_test::finish_or_abort(f, "producer parked in push()");
    failed += ok ? 0 : 1;
    slow += cpu < 50ms ? 0 : 1;
  }
  CHECK(failed == 0);
  CHECK(slow == 0);
  REQUIRE(got.size() == blocked + 2);
  CHECK(got[0] == 0);
  CHECK(got[1] == 1);
  int sum = 0;
  for (std::size_t i = 2; i < got.size(); ++i) sum += got[i];
  CHECK(sum == 100 + 101 + 102 + 103);
  CHECK(q.try_pop().is_empty());
}
