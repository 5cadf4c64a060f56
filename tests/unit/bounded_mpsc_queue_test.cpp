// Unit tests for tether::bounded_mpsc_queue: crossbeam's checklist (smoke, capacity, try_*,
// *_for / *_until, *_after_close, close wakes the consumer and blocked producers, move-only
// and throwing items, drops), ring wrap-around, bulk pops and try_pop_each, size_approx,
// single-producer FIFO, and the debug check against two consumers.
#include <tether/bounded_mpsc_queue.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <iterator>
#include <latch>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "queue_fault.hpp"
#include "queue_test_support.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using tether::bounded_mpsc_queue;
using tether::status;
using tether_test::counted;
using tether_test::failing_output;

struct fragile {
  counted c;
  fragile(std::uint64_t v, bool fail) : c(v) {
    if (fail) throw std::runtime_error("fragile: constructor failed");
  }
};

template <class Q>
concept steady_pop_deadline = requires(Q& q) { q.pop_until(std::chrono::steady_clock::now()); };
template <class Q>
concept steady_push_deadline =
    requires(Q& q, typename Q::value_type v) { q.push_until(std::move(v), std::chrono::steady_clock::now()); };

// Runs the timed calls with steady_clock::time_point deadlines, where they compile.
template <class Q>
void exercise_steady_deadlines() {
  if constexpr (steady_pop_deadline<Q> && steady_push_deadline<Q>) {
    Q q(2);
    const auto deadline = std::chrono::steady_clock::now() + 20ms;
    CHECK(q.pop_until(deadline).is_timeout());
    CHECK(std::chrono::steady_clock::now() >= deadline);
    REQUIRE(q.try_push(1));
    REQUIRE(q.try_push(2));
    CHECK(q.push_until(5, std::chrono::steady_clock::now() + 20ms).is_timeout());
  }
}

// Fills q to capacity with 0, 1, ... using try_push; returns how many went in.
std::size_t fill(bounded_mpsc_queue<int>& q) {
  std::size_t n = 0;
  while (q.try_push(static_cast<int>(n))) ++n;
  return n;
}

}  // namespace

TEST_CASE("bounded_mpsc_queue smoke: try_push then try_pop returns the item", "[bounded_mpsc_queue][smoke]") {
  bounded_mpsc_queue<int> q(4);
  CHECK(q.empty_approx());
  CHECK(q.try_push(7).status() == status::ok);
  CHECK(q.push(8));
  CHECK(q.size_approx() == 2);
  auto a = q.try_pop();
  auto b = q.pop();
  REQUIRE(a);
  REQUIRE(b);
  CHECK(*a == 7);
  CHECK(*b == 8);
  CHECK(q.try_pop().is_empty());
  CHECK(q.empty_approx());
}

TEST_CASE("bounded_mpsc_queue capacity is rounded up to a power of two, at least 2", "[bounded_mpsc_queue][capacity]") {
  CHECK_THROWS_AS(bounded_mpsc_queue<int>(0), std::invalid_argument);
  CHECK_THROWS_AS(bounded_mpsc_queue<int>((std::size_t{1} << 40) + 1), std::invalid_argument);
  CHECK(bounded_mpsc_queue<int>(1).capacity() == 2);
  CHECK(bounded_mpsc_queue<int>(2).capacity() == 2);
  CHECK(bounded_mpsc_queue<int>(3).capacity() == 4);
  CHECK(bounded_mpsc_queue<int>(64).capacity() == 64);
  CHECK(bounded_mpsc_queue<int>(65).capacity() == 128);
  CHECK(bounded_mpsc_queue<int>(1000).capacity() == 1024);
}

TEST_CASE("bounded_mpsc_queue holds exactly capacity() items", "[bounded_mpsc_queue][capacity]") {
  const std::size_t requested = GENERATE(1, 2, 3, 5, 64, 100);
  bounded_mpsc_queue<int> q(requested);
  CAPTURE(requested, q.capacity());
  CHECK(fill(q) == q.capacity());
  CHECK(q.capacity() >= requested);
  CHECK(q.size_approx() == q.capacity());
  CHECK(q.try_push(-1).status() == status::full);
  CHECK(q.try_emplace(-1).is_full());
  // One pop makes room for exactly one more.
  auto first = q.try_pop();
  REQUIRE(first);
  CHECK(*first == 0);
  CHECK(q.try_push(1000));
  CHECK(q.try_push(1001).is_full());
  std::vector<int> out;
  CHECK(q.try_pop_bulk(std::back_inserter(out), 1000) == q.capacity());
  CHECK(out.back() == 1000);
  for (std::size_t i = 0; i + 1 < out.size(); ++i) CHECK(out[i] == static_cast<int>(i + 1));
}

TEST_CASE("bounded_mpsc_queue try_push on a full queue leaves the value with the caller", "[bounded_mpsc_queue][try]") {
  bounded_mpsc_queue<std::unique_ptr<int>> q(2);
  REQUIRE(q.try_push(std::make_unique<int>(0)));
  REQUIRE(q.try_push(std::make_unique<int>(1)));
  auto p = std::make_unique<int>(2);
  CHECK(q.try_push(std::move(p)).is_full());
  REQUIRE(p != nullptr);
  CHECK(*p == 2);
  CHECK(q.push_for(std::move(p), 0ms).is_timeout());
  REQUIRE(p != nullptr);
  REQUIRE(q.try_pop());
  CHECK(q.try_push(std::move(p)));
  CHECK(p == nullptr);
}

TEST_CASE("bounded_mpsc_queue keeps FIFO order across many laps of the ring", "[bounded_mpsc_queue][fifo]") {
  bounded_mpsc_queue<std::uint64_t> q(8);
  std::uint64_t pushed = 0, next = 0, wrong = 0;
  auto pop_one = [&] {
    auto r = q.try_pop();
    if (!r || *r != next) ++wrong;
    ++next;
  };
  for (int round = 0; round < 4000; ++round) {
    // At most 3 items are left over from the last round, so 5 more always fit in 8.
    const std::uint64_t in = 1 + static_cast<std::uint64_t>(round % 5);
    for (std::uint64_t i = 0; i < in; ++i) wrong += q.try_push(pushed++) ? 0 : 1;
    const std::uint64_t out = round % 3 == 0 ? in - 1 : in;  // the backlog grows now and then
    for (std::uint64_t i = 0; i < out; ++i) pop_one();
    if (pushed - next > 3)
      while (next < pushed) pop_one();
    wrong += q.size_approx() == pushed - next ? 0 : 1;
  }
  CHECK(pushed > 10000);
  CHECK(wrong == 0);
}

TEST_CASE("bounded_mpsc_queue is FIFO for a single blocking producer", "[bounded_mpsc_queue][fifo][blocking]") {
  constexpr std::uint64_t n = 20000;
  bounded_mpsc_queue<std::uint64_t> q(4);
  auto producer = tether_test::run_async([&] {
    std::uint64_t refused = 0;
    for (std::uint64_t i = 0; i < n; ++i) refused += q.push(i) ? 0 : 1;
    return refused;
  });
  std::uint64_t next = 0, wrong = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    auto v = q.pop();
    if (!v || *v != next) ++wrong;
    ++next;
  }
  CHECK(tether_test::finish_or_abort(producer, "producer") == 0);
  CHECK(wrong == 0);
  CHECK(q.try_pop().is_empty());
}

TEST_CASE("bounded_mpsc_queue delivers every item of several blocking producers exactly once", "[bounded_mpsc_queue][multi_producer]") {
  constexpr std::size_t producers = 4;
  constexpr std::uint64_t per_producer = 10000;
  bounded_mpsc_queue<std::uint64_t> q(16);
  tether_test::order_checker check(producers);
  std::atomic<std::uint64_t> refused{0};
  {
    tether_test::thread_group threads;
    for (std::size_t p = 0; p < producers; ++p)
      threads.spawn([&, p] {
        for (std::uint64_t s = 0; s < per_producer; ++s)
          if (!q.push(tether_test::make_item(p, s))) refused.fetch_add(1);
      });
    for (std::uint64_t i = 0; i < producers * per_producer; ++i) check(*q.pop());
  }
  INFO(check.first_error());
  CHECK(refused.load() == 0);
  CHECK(check.errors() == 0);
  CHECK(check.count() == producers * per_producer);
  CHECK(check.sum() == tether_test::expected_item_sum(producers, per_producer));
  CHECK(q.try_pop().is_empty());
}

TEST_CASE("bounded_mpsc_queue push blocks while full and completes when the consumer makes room", "[bounded_mpsc_queue][blocking]") {
  bounded_mpsc_queue<int> q(2);
  REQUIRE(fill(q) == 2);
  std::atomic<bool> returned{false};
  std::latch started(1);
  auto producer = tether_test::run_async([&] {
    started.count_down();
    const bool ok = bool(q.push(100));
    returned.store(true);
    return ok;
  });
  started.wait();
  std::this_thread::sleep_for(tether_test::park_settle);
  CHECK_FALSE(returned.load());  // still blocked: the queue is full
  auto first = q.try_pop();
  REQUIRE(first);
  CHECK(*first == 0);
  CHECK(tether_test::finish_or_abort(producer, "producer parked in push()"));
  auto second = q.pop();
  auto third = q.pop();
  REQUIRE(second);
  REQUIRE(third);
  CHECK(*second == 1);
  CHECK(*third == 100);
}

TEST_CASE("bounded_mpsc_queue push_for times out on a full queue and reports closed after close", "[bounded_mpsc_queue][timeout]") {
  bounded_mpsc_queue<std::unique_ptr<int>> q(2);
  REQUIRE(q.try_push(std::make_unique<int>(0)));
  REQUIRE(q.try_push(std::make_unique<int>(1)));
  auto p = std::make_unique<int>(7);
  SECTION("timeout: returns no earlier than the deadline, value untouched") {
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(q.push_for(std::move(p), 30ms).status() == status::timeout);
    CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
    REQUIRE(p != nullptr);
    CHECK(*p == 7);
    CHECK(q.push_until(std::move(p), std::chrono::system_clock::now() + 20ms).is_timeout());
    REQUIRE(p != nullptr);
    CHECK(q.size_approx() == 2);
  }
  SECTION("room appears: ok") {
    REQUIRE(q.try_pop());
    CHECK(q.push_for(std::move(p), 10s).status() == status::ok);
    CHECK(p == nullptr);
  }
  SECTION("closed while full: closed at once, not timeout, value untouched") {
    q.close();
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(q.push_for(std::move(p), 10s).status() == status::closed);
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
    REQUIRE(p != nullptr);
    CHECK(q.try_push(std::move(p)).status() == status::closed);
    REQUIRE(p != nullptr);
  }
}

TEST_CASE("bounded_mpsc_queue pop_for times out on an open queue and reports closed after close", "[bounded_mpsc_queue][timeout]") {
  bounded_mpsc_queue<int> q(4);
  SECTION("timeout: returns no earlier than the deadline") {
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(q.pop_for(30ms).status() == status::timeout);
    CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
    CHECK(q.pop_for(0ms).is_timeout());
    CHECK(q.pop_until(std::chrono::system_clock::now() + 5ms).is_timeout());
  }
  SECTION("closed and drained: closed, without waiting for the timeout") {
    REQUIRE(q.try_push(1));
    q.close();
    auto r = q.pop_for(10s);
    REQUIRE(r);
    CHECK(*r == 1);
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(q.pop_for(10s).is_closed());
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  }
}

TEST_CASE("bounded_mpsc_queue push_until and pop_until accept a plain steady_clock::now() + d deadline", "[bounded_mpsc_queue][timeout]") {
  // The most common deadline type: std::chrono::steady_clock::time_point.
  CHECK(steady_pop_deadline<bounded_mpsc_queue<int>>);
  CHECK(steady_push_deadline<bounded_mpsc_queue<int>>);
  exercise_steady_deadlines<bounded_mpsc_queue<int>>();
}

TEST_CASE("bounded_mpsc_queue after close: pushes are refused, queued items still delivered", "[bounded_mpsc_queue][close]") {
  bounded_mpsc_queue<std::unique_ptr<int>> q(4);
  REQUIRE(q.try_push(std::make_unique<int>(1)));
  CHECK_FALSE(q.is_closed());
  CHECK(q.close());
  CHECK(q.is_closed());
  CHECK_FALSE(q.close());

  auto p = std::make_unique<int>(2);
  CHECK(q.try_push(std::move(p)).is_closed());  // closed even though there is room
  REQUIRE(p != nullptr);
  CHECK_FALSE(q.push(std::move(p)));
  REQUIRE(p != nullptr);
  CHECK(q.push_for(std::move(p), 1s).is_closed());
  REQUIRE(p != nullptr);
  CHECK(*p == 2);
  CHECK(q.try_emplace(std::make_unique<int>(3)).is_closed());

  auto r = q.pop();
  REQUIRE(r);
  CHECK(**r == 1);
  CHECK_FALSE(q.pop().has_value());
  CHECK(q.try_pop().is_closed());
}

TEST_CASE("bounded_mpsc_queue close wakes a consumer parked in pop(), pop_for() and pop_bulk()", "[bounded_mpsc_queue][close]") {
  bounded_mpsc_queue<int> q(4);
  std::latch started(1);
  SECTION("pop()") {
    auto consumer = tether_test::run_async([&] {
      started.count_down();
      return q.pop();
    });
    started.wait();
    std::this_thread::sleep_for(tether_test::park_settle);
    CHECK(q.close());
    CHECK_FALSE(tether_test::finish_or_abort(consumer, "consumer parked in pop()").has_value());
  }
  SECTION("pop_for()") {
    auto consumer = tether_test::run_async([&] {
      started.count_down();
      return q.pop_for(60s).status();
    });
    started.wait();
    std::this_thread::sleep_for(tether_test::park_settle);
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(q.close());
    CHECK(tether_test::finish_or_abort(consumer, "consumer parked in pop_for()") == status::closed);
    CHECK(std::chrono::steady_clock::now() - t0 < 30s);
  }
  SECTION("pop_bulk()") {
    auto consumer = tether_test::run_async([&] {
      started.count_down();
      std::vector<int> out;
      return q.pop_bulk(std::back_inserter(out), 4);
    });
    started.wait();
    std::this_thread::sleep_for(tether_test::park_settle);
    CHECK(q.close());
    CHECK(tether_test::finish_or_abort(consumer, "consumer parked in pop_bulk()") == 0);
  }
}

TEST_CASE("bounded_mpsc_queue close wakes producers blocked on a full queue; they keep their values", "[bounded_mpsc_queue][close]") {
  constexpr int blocked = 4;
  bounded_mpsc_queue<std::unique_ptr<int>> q(2);
  REQUIRE(q.try_push(std::make_unique<int>(0)));
  REQUIRE(q.try_push(std::make_unique<int>(1)));
  std::atomic<int> returned{0};
  std::latch started(blocked);
  std::vector<std::future<std::pair<tether::status, int>>> producers;
  for (int i = 0; i < blocked; ++i)
    producers.push_back(tether_test::run_async([&, i] {
      auto mine = std::make_unique<int>(100 + i);
      started.count_down();
      tether::status st;
      if (i % 2 == 0)
        st = q.push(std::move(mine)) ? status::ok : status::closed;
      else
        st = q.push_for(std::move(mine), 60s).status();
      returned.fetch_add(1);
      return std::make_pair(st, mine ? *mine : -1);
    }));
  started.wait();
  std::this_thread::sleep_for(tether_test::park_settle);
  CHECK(returned.load() == 0);  // all blocked: the queue is full
  CHECK(q.close());
  for (int i = 0; i < blocked; ++i) {
    const auto [st, kept] = tether_test::finish_or_abort(producers[static_cast<std::size_t>(i)], "producer parked in push()");
    CHECK(st == status::closed);
    CHECK(kept == 100 + i);  // handed back, not moved from
  }
  // The two items accepted before close are still delivered.
  auto a = q.pop();
  auto b = q.pop();
  REQUIRE(a);
  REQUIRE(b);
  CHECK(**a == 0);
  CHECK(**b == 1);
  CHECK_FALSE(q.pop().has_value());
}

TEST_CASE("bounded_mpsc_queue carries move-only items", "[bounded_mpsc_queue][move_only]") {
  bounded_mpsc_queue<std::unique_ptr<int>> q(32);
  for (int i = 0; i < 30; ++i) REQUIRE(q.push(std::make_unique<int>(i)));
  REQUIRE(q.try_emplace(new int(30)));
  REQUIRE(q.push_for(std::make_unique<int>(31), 1s));
  auto a = q.try_pop();
  REQUIRE(a);
  CHECK(**a == 0);
  std::vector<std::unique_ptr<int>> out;
  CHECK(q.pop_bulk(std::back_inserter(out), 10) == 10);
  int sum = 0;
  CHECK(q.try_pop_each([&](std::unique_ptr<int>&& p) { sum += *p; }) == 21);
  REQUIRE(out.size() == 10);
  for (int i = 0; i < 10; ++i) CHECK(*out[static_cast<std::size_t>(i)] == i + 1);
  CHECK(sum == (31 * 32 / 2) - (10 * 11 / 2));
}

TEST_CASE("bounded_mpsc_queue try_emplace whose constructor throws skips the slot and keeps working", "[bounded_mpsc_queue][exceptions]") {
  const long live_before = counted::live.load();
  const long twice_before = counted::destroyed_twice.load();
  {
    bounded_mpsc_queue<fragile> q(8);
    std::uint64_t accepted = 0, threw = 0, accepted_sum = 0, popped = 0, popped_sum = 0, wrong = 0, last = 0;
    std::uint64_t i = 0;
    // Many laps of the ring; failures land on every slot.
    for (int round = 0; round < 500; ++round) {
      for (int k = 0; k < 5; ++k, ++i) {
        try {
          if (q.try_emplace(i, i % 7 == 3)) {
            ++accepted;
            accepted_sum += i;
          } else {
            ++wrong;  // never full: at most 5 in flight in a ring of 8
          }
        } catch (const std::runtime_error&) {
          ++threw;
        }
      }
      while (auto r = q.try_pop()) {
        const std::uint64_t v = r->c.value;
        if (v % 7 == 3 || (popped != 0 && v <= last)) ++wrong;
        last = v;
        ++popped;
        popped_sum += v;
      }
    }
    CHECK(wrong == 0);
    CHECK(accepted + threw == i);
    CHECK(threw == i / 7 + (i % 7 > 3 ? 1 : 0));
    CHECK(popped == accepted);
    CHECK(popped_sum == accepted_sum);
    CHECK(q.size_approx() == 0);
    // After skipping, the whole capacity is usable again.
    std::size_t room = 0;
    while (q.try_emplace(std::uint64_t{1}, false)) ++room;
    CHECK(room == q.capacity());
    CHECK(counted::live.load() - live_before == static_cast<long>(room));
  }
  CHECK(counted::live.load() == live_before);
  CHECK(counted::destroyed_twice.load() == twice_before);
}

TEST_CASE("bounded_mpsc_queue a consumer parked in pop() skips a slot whose constructor threw", "[bounded_mpsc_queue][exceptions]") {
  bounded_mpsc_queue<fragile> q(4);
  std::latch started(1);
  auto consumer = tether_test::run_async([&] {
    started.count_down();
    auto r = q.pop();
    return r ? r->c.value : std::uint64_t{0};
  });
  started.wait();
  std::this_thread::sleep_for(tether_test::park_settle);
  CHECK_THROWS_AS(q.try_emplace(std::uint64_t{1}, true), std::runtime_error);
  std::this_thread::sleep_for(tether_test::park_settle);
  REQUIRE(q.try_emplace(std::uint64_t{2}, false));
  CHECK(tether_test::finish_or_abort(consumer, "consumer parked in pop()") == 2);
}

TEST_CASE("bounded_mpsc_queue destroys leftover items exactly once", "[bounded_mpsc_queue][drops]") {
  const long live_before = counted::live.load();
  const long twice_before = counted::destroyed_twice.load();
  SECTION("never popped") {
    bounded_mpsc_queue<counted> q(16);
    for (std::uint64_t i = 0; i < 16; ++i) REQUIRE(q.try_push(counted(i)));
    CHECK(counted::live.load() - live_before == 16);
  }
  SECTION("after the ring wrapped several times") {
    bounded_mpsc_queue<counted> q(16);
    std::uint64_t next = 0;
    for (std::uint64_t i = 0; i < 45; ++i) {  // 45 pushes, 30 pops: nearly three laps, 15 left
      REQUIRE(q.try_emplace(i));
      if (i % 3 != 0) {
        auto r = q.try_pop();
        REQUIRE(r);
        REQUIRE(r->value == next++);
      }
    }
    CHECK(next == 30);
    CHECK(counted::live.load() - live_before == 15);
  }
  SECTION("full and closed, with a rejected push") {
    bounded_mpsc_queue<counted> q(4);
    for (std::uint64_t i = 0; i < 4; ++i) REQUIRE(q.try_push(counted(i)));
    counted extra(9);
    CHECK(q.try_push(std::move(extra)).is_full());
    q.close();
    CHECK(q.try_push(std::move(extra)).is_closed());
    CHECK(extra.value == 9);
  }
  SECTION("with thrown slots left in the queue") {
    bounded_mpsc_queue<fragile> q(16);
    for (std::uint64_t i = 0; i < 16; ++i) {
      try {
        (void)q.try_emplace(i, i % 3 == 0);
      } catch (const std::runtime_error&) {
      }
    }
    auto r = q.try_pop();
    REQUIRE(r);
    CHECK(r->c.value == 1);
  }
  SECTION("bulk and try_pop_each consumers") {
    bounded_mpsc_queue<counted> q(64);
    for (std::uint64_t i = 0; i < 60; ++i) REQUIRE(q.try_emplace(i));
    std::vector<counted> out;
    CHECK(q.try_pop_bulk(std::back_inserter(out), 25) == 25);
    CHECK(q.try_pop_each([](counted&&) {}, 25) == 25);
    CHECK(counted::live.load() - live_before == 35);
  }
  CHECK(counted::live.load() == live_before);
  CHECK(counted::destroyed_twice.load() == twice_before);
}

TEST_CASE("bounded_mpsc_queue size_approx counts exactly on a single thread", "[bounded_mpsc_queue][size]") {
  bounded_mpsc_queue<int> q(8);
  std::uint64_t wrong = 0;
  for (int lap = 0; lap < 50; ++lap) {
    for (std::size_t i = 0; i < q.capacity(); ++i) {
      REQUIRE(q.try_push(static_cast<int>(i)));
      wrong += q.size_approx() == i + 1 ? 0 : 1;
    }
    for (std::size_t i = q.capacity(); i-- > 0;) {
      REQUIRE(q.try_pop());
      wrong += q.size_approx() == i ? 0 : 1;
    }
  }
  CHECK(wrong == 0);
  CHECK(q.empty_approx());
}

TEST_CASE("bounded_mpsc_queue try_pop_bulk: an output that throws leaves its item queued", "[bounded_mpsc_queue][bulk][exceptions]") {
  // The items before the throw are out, the one being assigned stays first in line, and
  // nothing is lost, duplicated or destroyed twice - round the ring's end too.
  const long live_before = counted::live.load();
  const long twice_before = counted::destroyed_twice.load();
  {
    bounded_mpsc_queue<counted> q(16);
    std::vector<std::uint64_t> seen;
    std::uint64_t pushed = 0, throws = 0;
    for (int round = 0; round < 10; ++round) {
      while (pushed < seen.size() + q.capacity()) REQUIRE(q.try_push(counted(pushed++)));
      try {
        q.try_pop_bulk(failing_output{&seen, seen.size() + 5}, SIZE_MAX);
      } catch (const std::runtime_error&) {
        ++throws;
      }
    }
    while (q.try_pop_bulk(failing_output{&seen, SIZE_MAX}, SIZE_MAX) != 0) {
    }
    CHECK(throws == 10);
    REQUIRE(seen.size() == pushed);
    CHECK(tether_test::count_out_of_place(seen) == 0);
  }
  CHECK(counted::live.load() == live_before);
  CHECK(counted::destroyed_twice.load() == twice_before);
}

TEST_CASE("bounded_mpsc_queue try_pop_bulk, pop_bulk and try_pop_each respect max and keep order", "[bounded_mpsc_queue][bulk]") {
  bounded_mpsc_queue<int> q(16);
  std::vector<int> out;
  CHECK(q.try_pop_bulk(std::back_inserter(out), 4) == 0);
  CHECK(q.try_pop_each([](int&&) {}) == 0);
  for (int i = 0; i < 12; ++i) REQUIRE(q.try_push(i));
  CHECK(q.try_pop_bulk(std::back_inserter(out), 0) == 0);
  CHECK(q.pop_bulk(std::back_inserter(out), 0) == 0);
  CHECK(q.try_pop_bulk(std::back_inserter(out), 3) == 3);
  CHECK(q.pop_bulk(std::back_inserter(out), 3) == 3);
  CHECK(q.try_pop_each([&](int&& v) { out.push_back(v); }, 3) == 3);
  CHECK(q.try_pop_each([&](int&& v) { out.push_back(v); }) == 3);
  CHECK(out == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  // Bulk pops free slots for producers: the ring is reusable in full.
  CHECK(fill(q) == 16);
  int raw[32] = {};
  CHECK(q.try_pop_bulk(raw, 32) == 16);
  CHECK(raw[15] == 15);
  for (int i = 0; i < 5; ++i) REQUIRE(q.try_push(i));
  q.close();
  out.clear();
  CHECK(q.pop_bulk(std::back_inserter(out), 4) == 4);
  CHECK(q.pop_bulk(std::back_inserter(out), 4) == 1);
  CHECK(q.pop_bulk(std::back_inserter(out), 4) == 0);
  CHECK(out == std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE("bounded_mpsc_queue pop_bulk blocks for the first item", "[bounded_mpsc_queue][bulk][blocking]") {
  bounded_mpsc_queue<int> q(8);
  std::latch started(1);
  auto consumer = tether_test::run_async([&] {
    started.count_down();
    std::vector<int> out;
    const std::size_t n = q.pop_bulk(std::back_inserter(out), 8);
    return std::make_pair(n, out);
  });
  started.wait();
  std::this_thread::sleep_for(tether_test::park_settle);
  REQUIRE(q.try_push(11));
  const auto [n, out] = tether_test::finish_or_abort(consumer, "consumer parked in pop_bulk()");
  CHECK(n == 1);
  CHECK(out == std::vector<int>{11});
}

TEST_CASE("bounded_mpsc_queue try_pop_each: an item handed to a throwing callback counts as delivered", "[bounded_mpsc_queue][try_pop_each][exceptions]") {
  bounded_mpsc_queue<int> q(4);
  for (int i = 0; i < 3; ++i) REQUIRE(q.try_push(i));
  std::vector<int> seen;
  CHECK_THROWS_AS(q.try_pop_each([&](int&& v) {
    seen.push_back(v);
    if (v == 1) throw std::runtime_error("callback failed");
  }),
                  std::runtime_error);
  CHECK(seen == std::vector<int>{0, 1});
  CHECK(q.size_approx() == 1);
  auto r = q.try_pop();
  REQUIRE(r);
  CHECK(*r == 2);
}

#ifndef NDEBUG
TEST_CASE("bounded_mpsc_queue debug builds reject a second thread consuming at once", "[bounded_mpsc_queue][consumer_check]") {
  bounded_mpsc_queue<int> q(4);
  REQUIRE(q.try_push(1));
  REQUIRE(q.try_push(2));
  std::latch inside(1);
  std::latch release(1);
  auto first = tether_test::run_async([&] {
    return q.try_pop_each([&](int&&) {
      inside.count_down();
      release.wait();
    }, 1);
  });
  inside.wait();  // the first consumer is now inside try_pop_each()
  CHECK_THROWS_AS(q.try_pop(), std::logic_error);
  CHECK_THROWS_WITH(q.try_pop(), Catch::Contains("two threads"));
  CHECK_THROWS_AS(q.pop_for(1ms), std::logic_error);
  std::vector<int> out;
  CHECK_THROWS_AS(q.pop_bulk(std::back_inserter(out), 4), std::logic_error);
  release.count_down();
  CHECK(tether_test::finish_or_abort(first, "first consumer") == 1);
  CHECK(out.empty());
  auto r = q.try_pop();
  REQUIRE(r);
  CHECK(*r == 2);
}
#endif

// ---- a throwing move inside a pop (tests/support/queue_fault.hpp) --------------------------

TEST_CASE("bounded_mpsc_queue every pop form leaves an item whose move throws queued, and moves once", "[bounded_mpsc_queue][exceptions][move]") {
  using tether_test::fault_item;
  using namespace std::chrono_literals;
  tether::bounded_mpsc_queue<fault_item> q(8);
  auto push = [&](fault_item&& v) { return q.try_push(std::move(v)); };
  auto try_pop = [&] { return q.try_pop(); };
  SECTION("try_pop") { tether_test::check_single_pop_keeps_item(push, try_pop, try_pop); }
  SECTION("pop") { tether_test::check_single_pop_keeps_item(push, [&] { return q.pop(); }, try_pop); }
  SECTION("pop_for") { tether_test::check_single_pop_keeps_item(push, [&] { return q.pop_for(10s); }, try_pop); }
  SECTION("pop_until") {
    tether_test::check_single_pop_keeps_item(push, [&] { return q.pop_until(std::chrono::steady_clock::now() + 10s); }, try_pop);
  }
  SECTION("try_pop_bulk") {
    tether_test::check_bulk_keeps_item(
        push, [&](std::vector<fault_item>& out, std::size_t max) { return q.try_pop_bulk(std::back_inserter(out), max); }, try_pop);
  }
  SECTION("pop_bulk_until") {
    tether_test::check_bulk_keeps_item(
        push,
        [&](std::vector<fault_item>& out, std::size_t max) {
          return q.pop_bulk_until(std::back_inserter(out), max, std::chrono::steady_clock::now() + 10s);
        },
        try_pop);
  }
  SECTION("try_pop_each") {
    tether_test::check_each_keeps_item(push, [&](auto& f) { return q.try_pop_each(f); }, try_pop);
  }
  CHECK(fault_item::live.load() == 0);
}

TEST_CASE("bounded_mpsc_queue after close and at destruction, an item whose move threw is still delivered or destroyed once", "[bounded_mpsc_queue][exceptions][move]") {
  using tether_test::fault_item;
  fault_item::reset_counters();
  {
    tether::bounded_mpsc_queue<fault_item> q(4);
    for (std::uint64_t v = 1; v <= 4; ++v) REQUIRE(q.try_push(fault_item(v)));
    CHECK(q.close());
    fault_item::arm_move_throw(1);
    CHECK_THROWS_AS(q.pop(), tether_test::item_fault);
    fault_item::disarm();
    auto r = q.pop();
    REQUIRE(r.has_value());
    CHECK(r->intact(1));  // the item whose move threw, still first
    fault_item::arm_move_throw(1);
    CHECK_THROWS_AS(q.pop_for(std::chrono::seconds(1)), tether_test::item_fault);
    fault_item::disarm();
    CHECK(q.size_approx() == 3);
    CHECK(fault_item::live.load() == 4);  // r and the three queued
  }
  CHECK(fault_item::live.load() == 0);
  CHECK(fault_item::destroyed_twice.load() == 0);
}
