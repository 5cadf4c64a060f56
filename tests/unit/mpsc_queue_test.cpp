// Unit tests for tether::mpsc_queue: crossbeam's checklist (smoke, try_*, *_for / *_until,
// *_after_close, close wakes the consumer, move-only and throwing items, drops), block
// boundaries and recycling, bulk pops and drain, size_approx, single-producer FIFO, and the
// debug check against two consumers.
#include <tether/mpsc_queue.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <latch>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "queue_test_support.hpp"
#include "test_support.hpp"

// Counts every allocation in this program, so a test can prove that steady push/pop reuses
// blocks instead of allocating. Every replaceable form is replaced, so each new pairs with
// its delete (sanitizers check that).
namespace {
std::atomic<std::size_t> allocations{0};

void* counted_alloc(std::size_t n) noexcept {
  allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n == 0 ? 1 : n);
}
void* counted_alloc(std::size_t n, std::align_val_t al) noexcept {
  allocations.fetch_add(1, std::memory_order_relaxed);
  const auto a = static_cast<std::size_t>(al);
  return std::aligned_alloc(a, (n + a - 1) / a * a);  // size must be a multiple of the alignment
}
}  // namespace

// g++ sees free() on memory from operator new once these are inlined; here they pair up.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
  if (void* p = counted_alloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = counted_alloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
void* operator new(std::size_t n, std::align_val_t al) {
  if (void* p = counted_alloc(n, al)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t al) {
  if (void* p = counted_alloc(n, al)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept { return counted_alloc(n, al); }
void* operator new[](std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept { return counted_alloc(n, al); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace {

using namespace std::chrono_literals;
using tether::mpsc_queue;
using tether::status;
using tether_test::counted;

// 256 bytes: the queue packs only 31 of these per block, so block boundaries come often.
struct wide_item {
  std::uint64_t value = 0;
  std::array<std::uint64_t, 31> pad{};
  explicit wide_item(std::uint64_t v = 0) : value(v) {}
};
static_assert(sizeof(wide_item) == 256);

// A type whose constructor throws on request; carries a counted so leaks and double
// destruction show up in counted::live / counted::destroyed_twice.
struct fragile {
  counted c;
  fragile(std::uint64_t v, bool fail) : c(v) {
    if (fail) throw std::runtime_error("fragile: constructor failed");
  }
};

// Pushes 0..n-1 (as T(i)) from this thread.
template <class T>
void push_range(mpsc_queue<T>& q, std::uint64_t from, std::uint64_t to) {
  for (std::uint64_t i = from; i < to; ++i) REQUIRE(q.push(T(i)));
}

std::uint64_t value_of(std::uint64_t v) { return v; }
std::uint64_t value_of(const wide_item& v) { return v.value; }

// Pops exactly n items with try_pop and checks they are next, next+1, ...
template <class T>
void pop_expect(mpsc_queue<T>& q, std::uint64_t& next, std::uint64_t n) {
  std::uint64_t wrong = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    auto r = q.try_pop();
    if (!r || value_of(*r) != next) ++wrong;
    ++next;
  }
  REQUIRE(wrong == 0);
}

template <class Q>
concept steady_pop_deadline = requires(Q& q) { q.pop_until(std::chrono::steady_clock::now()); };

// Runs pop_until with a steady_clock::time_point deadline, where it compiles.
template <class Q>
void exercise_steady_deadline() {
  if constexpr (steady_pop_deadline<Q>) {
    Q q;
    const auto deadline = std::chrono::steady_clock::now() + 20ms;
    CHECK(q.pop_until(deadline).status() == status::timeout);
    CHECK(std::chrono::steady_clock::now() >= deadline);
  }
}

}  // namespace

TEST_CASE("mpsc_queue smoke: push then pop returns the item", "[mpsc_queue][smoke]") {
  mpsc_queue<int> q;
  CHECK(q.empty_approx());
  CHECK(q.push(7));
  CHECK(q.size_approx() == 1);
  auto r = q.try_pop();
  REQUIRE(r);
  CHECK(r.status() == status::ok);
  CHECK(*r == 7);
  CHECK(q.try_pop().is_empty());
  CHECK(q.empty_approx());
}

TEST_CASE("mpsc_queue push(const T&) copies and emplace constructs in place", "[mpsc_queue][smoke]") {
  mpsc_queue<std::vector<int>> q;
  const std::vector<int> v{1, 2, 3};
  CHECK(q.push(v));
  CHECK(v.size() == 3);
  CHECK(q.emplace(4u, 9));
  auto a = q.pop();
  auto b = q.pop();
  REQUIRE(a);
  REQUIRE(b);
  CHECK(*a == std::vector<int>{1, 2, 3});
  CHECK(*b == std::vector<int>{9, 9, 9, 9});
}

TEST_CASE("mpsc_queue try_pop reports empty on an open queue and closed once drained", "[mpsc_queue][try]") {
  mpsc_queue<int> q;
  CHECK(q.try_pop().status() == status::empty);
  REQUIRE(q.push(1));
  REQUIRE(q.push(2));
  CHECK(q.close());
  // Items pushed before close are still delivered, in order.
  auto a = q.try_pop();
  auto b = q.try_pop();
  REQUIRE(a);
  REQUIRE(b);
  CHECK(*a == 1);
  CHECK(*b == 2);
  CHECK(q.try_pop().status() == status::closed);
  CHECK(q.try_pop().status() == status::closed);
}

TEST_CASE("mpsc_queue is FIFO for a single producer", "[mpsc_queue][fifo]") {
  constexpr std::uint64_t n = 20000;
  mpsc_queue<std::uint64_t> q;
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

TEST_CASE("mpsc_queue delivers every item of several producers exactly once", "[mpsc_queue][multi_producer]") {
  constexpr std::size_t producers = 4;
  constexpr std::uint64_t per_producer = 10000;
  mpsc_queue<std::uint64_t> q;
  tether_test::order_checker check(producers);
  {
    tether_test::thread_group threads;
    for (std::size_t p = 0; p < producers; ++p)
      threads.spawn([&q, p] {
        for (std::uint64_t s = 0; s < per_producer; ++s) q.push(tether_test::make_item(p, s));
      });
    for (std::uint64_t i = 0; i < producers * per_producer; ++i) check(*q.pop());
  }
  INFO(check.first_error());
  CHECK(check.errors() == 0);
  CHECK(check.count() == producers * per_producer);
  CHECK(check.sum() == tether_test::expected_item_sum(producers, per_producer));
  CHECK(q.try_pop().is_empty());
}

TEST_CASE("mpsc_queue pop_for times out on an open queue and reports closed after close", "[mpsc_queue][timeout]") {
  mpsc_queue<int> q;
  SECTION("timeout: returns no earlier than the deadline") {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = q.pop_for(30ms);
    const auto waited = std::chrono::steady_clock::now() - t0;
    CHECK(r.status() == status::timeout);
    CHECK(waited >= 30ms);
  }
  SECTION("zero and negative timeouts poll") {
    CHECK(q.pop_for(0ms).status() == status::timeout);
    CHECK(q.pop_for(-5ms).status() == status::timeout);
    REQUIRE(q.push(3));
    auto r = q.pop_for(0ms);
    REQUIRE(r);
    CHECK(*r == 3);
  }
  SECTION("an item already there is returned at once") {
    REQUIRE(q.push(5));
    auto r = q.pop_for(10s);
    REQUIRE(r);
    CHECK(*r == 5);
  }
  SECTION("closed and drained: closed, without waiting for the timeout") {
    REQUIRE(q.push(1));
    q.close();
    auto first = q.pop_for(10s);
    REQUIRE(first);
    CHECK(*first == 1);
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(q.pop_for(10s).status() == status::closed);
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  }
}

TEST_CASE("mpsc_queue pop_until honours deadlines of other clocks", "[mpsc_queue][timeout]") {
  mpsc_queue<int> q;
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(q.pop_until(std::chrono::system_clock::now() + 20ms).status() == status::timeout);
  CHECK(q.pop_until(std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now()) + 20ms)
            .status() == status::timeout);
  // Each deadline may convert to a moment a little before now + 20 ms (clock skew, truncation).
  CHECK(std::chrono::steady_clock::now() - t0 >= 35ms);
  REQUIRE(q.push(8));
  auto r = q.pop_until(std::chrono::system_clock::now() + 10s);
  REQUIRE(r);
  CHECK(*r == 8);
  q.close();
  CHECK(q.pop_until(std::chrono::system_clock::now() + 10s).status() == status::closed);
}

TEST_CASE("mpsc_queue pop_until accepts a plain steady_clock::now() + d deadline", "[mpsc_queue][timeout]") {
  // The most common deadline type: std::chrono::steady_clock::time_point.
  CHECK(steady_pop_deadline<mpsc_queue<int>>);
  exercise_steady_deadline<mpsc_queue<int>>();
}

TEST_CASE("mpsc_queue a consumer parked in pop() receives a later push", "[mpsc_queue][blocking]") {
  mpsc_queue<int> q;
  std::latch started(1);
  auto consumer = tether_test::run_async([&] {
    started.count_down();
    return q.pop();
  });
  started.wait();
  std::this_thread::sleep_for(tether_test::park_settle);
  REQUIRE(q.push(42));
  auto v = tether_test::finish_or_abort(consumer, "consumer parked in pop()");
  REQUIRE(v);
  CHECK(*v == 42);
}

TEST_CASE("mpsc_queue close wakes a consumer parked in pop(), pop_for() and pop_bulk()", "[mpsc_queue][close]") {
  mpsc_queue<int> q;
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
      const auto t0 = std::chrono::steady_clock::now();
      const auto r = q.pop_for(60s);
      return std::make_pair(r.status(), std::chrono::steady_clock::now() - t0);
    });
    started.wait();
    std::this_thread::sleep_for(tether_test::park_settle);
    CHECK(q.close());
    const auto [st, waited] = tether_test::finish_or_abort(consumer, "consumer parked in pop_for()");
    CHECK(st == status::closed);
    CHECK(waited < 30s);
  }
  SECTION("pop_bulk()") {
    auto consumer = tether_test::run_async([&] {
      started.count_down();
      std::vector<int> out;
      return q.pop_bulk(std::back_inserter(out), 16);
    });
    started.wait();
    std::this_thread::sleep_for(tether_test::park_settle);
    CHECK(q.close());
    CHECK(tether_test::finish_or_abort(consumer, "consumer parked in pop_bulk()") == 0);
  }
}

TEST_CASE("mpsc_queue close is idempotent and rejects later pushes without consuming them", "[mpsc_queue][close]") {
  mpsc_queue<std::unique_ptr<int>> q;
  CHECK_FALSE(q.is_closed());
  REQUIRE(q.push(std::make_unique<int>(1)));
  CHECK(q.close());
  CHECK(q.is_closed());
  CHECK_FALSE(q.close());

  auto p = std::make_unique<int>(2);
  CHECK_FALSE(q.push(std::move(p)));
  REQUIRE(p != nullptr);  // handed back: not moved from
  CHECK(*p == 2);
  const auto cp = std::make_shared<int>(3);
  mpsc_queue<std::shared_ptr<int>> sq;
  sq.close();
  CHECK_FALSE(sq.push(cp));
  CHECK(cp.use_count() == 1);  // no copy was left inside
  CHECK_FALSE(q.emplace(std::make_unique<int>(4)));

  // What was accepted before close is still delivered, then closed.
  auto first = q.pop();
  REQUIRE(first);
  CHECK(**first == 1);
  CHECK_FALSE(q.pop().has_value());
  CHECK(q.try_pop().is_closed());
}

TEST_CASE("mpsc_queue carries move-only items", "[mpsc_queue][move_only]") {
  mpsc_queue<std::unique_ptr<int>> q;
  for (int i = 0; i < 100; ++i) REQUIRE(q.push(std::make_unique<int>(i)));
  auto a = q.try_pop();
  REQUIRE(a);
  CHECK(**a == 0);
  auto b = q.pop_for(1s);
  REQUIRE(b);
  CHECK(**b == 1);
  std::vector<std::unique_ptr<int>> out;
  CHECK(q.try_pop_bulk(std::back_inserter(out), 10) == 10);
  CHECK(q.pop_bulk(std::back_inserter(out), 10) == 10);
  int sum = 0;
  CHECK(q.drain([&](std::unique_ptr<int>&& p) { sum += *p; }) == 78);
  REQUIRE(out.size() == 20);
  for (int i = 0; i < 20; ++i) CHECK(*out[static_cast<std::size_t>(i)] == i + 2);
  CHECK(sum == (99 * 100 / 2) - (21 * 22 / 2));
  CHECK(q.try_pop().is_empty());
}

TEST_CASE("mpsc_queue emplace whose constructor throws skips the slot and keeps working", "[mpsc_queue][exceptions]") {
  const long live_before = counted::live.load();
  const long twice_before = counted::destroyed_twice.load();
  {
    mpsc_queue<fragile> q;
    constexpr std::uint64_t n = 2000;  // several blocks; failures land on every slot offset
    std::uint64_t accepted = 0, threw = 0, accepted_sum = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      const bool fail = i % 7 == 3;
      try {
        if (q.emplace(i, fail)) {
          ++accepted;
          accepted_sum += i;
        }
      } catch (const std::runtime_error&) {
        ++threw;
      }
    }
    CHECK(threw == n / 7 + (n % 7 > 3 ? 1 : 0));
    CHECK(accepted + threw == n);
    CHECK(counted::live.load() - live_before == static_cast<long>(accepted));

    std::uint64_t popped = 0, popped_sum = 0, failed_seen = 0, out_of_order = 0, last = 0;
    while (auto r = q.try_pop()) {
      const std::uint64_t v = r->c.value;
      if (v % 7 == 3) ++failed_seen;
      if (popped != 0 && v <= last) ++out_of_order;
      last = v;
      ++popped;
      popped_sum += v;
    }
    CHECK(popped == accepted);
    CHECK(popped_sum == accepted_sum);
    CHECK(failed_seen == 0);
    CHECK(out_of_order == 0);
    CHECK(q.size_approx() == 0);

    // Still fully usable, and a throw as the last act before close leaves nothing behind.
    REQUIRE(q.emplace(std::uint64_t{5000}, false));
    CHECK_THROWS_AS(q.emplace(std::uint64_t{5001}, true), std::runtime_error);
    q.close();
    auto r = q.pop();
    REQUIRE(r);
    CHECK(r->c.value == 5000);
    CHECK_FALSE(q.pop().has_value());
  }
  CHECK(counted::live.load() == live_before);
  CHECK(counted::destroyed_twice.load() == twice_before);
}

TEST_CASE("mpsc_queue a consumer parked in pop() skips a slot whose constructor threw", "[mpsc_queue][exceptions]") {
  mpsc_queue<fragile> q;
  std::latch started(1);
  auto consumer = tether_test::run_async([&] {
    started.count_down();
    auto r = q.pop();
    return r ? r->c.value : std::uint64_t{0};
  });
  started.wait();
  std::this_thread::sleep_for(tether_test::park_settle);
  CHECK_THROWS_AS(q.emplace(std::uint64_t{1}, true), std::runtime_error);
  std::this_thread::sleep_for(tether_test::park_settle);
  REQUIRE(q.emplace(std::uint64_t{2}, false));
  CHECK(tether_test::finish_or_abort(consumer, "consumer parked in pop()") == 2);
}

TEST_CASE("mpsc_queue pop_bulk skips thrown slots and still returns at least one item", "[mpsc_queue][exceptions][bulk]") {
  mpsc_queue<fragile> q;
  CHECK_THROWS_AS(q.emplace(std::uint64_t{1}, true), std::runtime_error);
  CHECK_THROWS_AS(q.emplace(std::uint64_t{2}, true), std::runtime_error);
  REQUIRE(q.emplace(std::uint64_t{3}, false));
  std::vector<fragile> out;
  CHECK(q.pop_bulk(std::back_inserter(out), 8) == 1);
  REQUIRE(out.size() == 1);
  CHECK(out[0].c.value == 3);
  CHECK_THROWS_AS(q.emplace(std::uint64_t{4}, true), std::runtime_error);
  CHECK(q.try_pop_bulk(std::back_inserter(out), 8) == 0);
  CHECK(q.try_pop().is_empty());
}

TEST_CASE("mpsc_queue destroys leftover items exactly once", "[mpsc_queue][drops]") {
  const long live_before = counted::live.load();
  const long twice_before = counted::destroyed_twice.load();
  SECTION("never popped") {
    mpsc_queue<counted> q;
    for (std::uint64_t i = 0; i < 1000; ++i) REQUIRE(q.push(counted(i)));
    CHECK(counted::live.load() - live_before == 1000);
  }
  SECTION("partly popped across several blocks") {
    mpsc_queue<counted> q;
    for (std::uint64_t i = 0; i < 3000; ++i) REQUIRE(q.emplace(i));
    for (std::uint64_t i = 0; i < 1700; ++i) {
      auto r = q.try_pop();
      REQUIRE(r);
      REQUIRE(r->value == i);
    }
    CHECK(counted::live.load() - live_before == 1300);
  }
  SECTION("closed with items left") {
    mpsc_queue<counted> q;
    for (std::uint64_t i = 0; i < 10; ++i) REQUIRE(q.push(counted(i)));
    q.close();
    counted rejected(99);
    CHECK_FALSE(q.push(std::move(rejected)));
    CHECK(rejected.value == 99);
  }
  SECTION("with thrown slots left in the queue") {
    mpsc_queue<fragile> q;
    for (std::uint64_t i = 0; i < 500; ++i) {
      try {
        q.emplace(i, i % 3 == 0);
      } catch (const std::runtime_error&) {
      }
    }
    auto r = q.try_pop();
    REQUIRE(r);
    CHECK(r->c.value == 1);
  }
  SECTION("bulk and drain consumers") {
    mpsc_queue<counted> q;
    for (std::uint64_t i = 0; i < 600; ++i) REQUIRE(q.emplace(i));
    std::vector<counted> out;
    CHECK(q.try_pop_bulk(std::back_inserter(out), 250) == 250);
    CHECK(q.drain([](counted&&) {}, 250) == 250);
    CHECK(counted::live.load() - live_before == 350);
  }
  CHECK(counted::live.load() == live_before);
  CHECK(counted::destroyed_twice.load() == twice_before);
}

TEST_CASE("mpsc_queue links and recycles blocks across many boundaries", "[mpsc_queue][blocks]") {
  const long live_before = counted::live.load();
  SECTION("small blocks (wide items), all push then all pop") {
    mpsc_queue<wide_item> q;
    std::uint64_t next = 0;
    push_range(q, 0, 12000);
    CHECK(q.size_approx() == 12000);
    pop_expect(q, next, 12000);
    CHECK(q.try_pop().is_empty());
    CHECK(q.size_approx() == 0);
  }
  SECTION("small blocks, batches around the block size") {
    mpsc_queue<wide_item> q;
    std::uint64_t pushed = 0, next = 0;
    for (const std::uint64_t batch : {1, 2, 30, 31, 32, 33, 62, 63, 64, 93, 100, 500, 1}) {
      for (int round = 0; round < 20; ++round) {
        push_range(q, pushed, pushed + batch);
        pushed += batch;
        pop_expect(q, next, batch);
      }
    }
    CHECK(pushed > 10000);
    CHECK(q.try_pop().is_empty());
  }
  SECTION("small blocks, the consumer trails the producer by a varying distance") {
    mpsc_queue<wide_item> q;
    std::uint64_t pushed = 0, next = 0;
    for (int round = 0; round < 400; ++round) {
      const std::uint64_t in = 17 + static_cast<std::uint64_t>(round % 50);
      push_range(q, pushed, pushed + in);
      pushed += in;
      pop_expect(q, next, in - static_cast<std::uint64_t>(round % 3));
    }
    CHECK(pushed > 10000);
    CHECK(q.size_approx() == pushed - next);
    pop_expect(q, next, pushed - next);
    CHECK(q.try_pop().is_empty());
  }
  SECTION("large blocks (int items), batches around the block size") {
    mpsc_queue<std::uint64_t> q;
    std::uint64_t pushed = 0, next = 0;
    for (const std::uint64_t batch : {1000, 1022, 1023, 1024, 1025, 2047, 2048, 3000, 7}) {
      for (int round = 0; round < 4; ++round) {
        push_range(q, pushed, pushed + batch);
        pushed += batch;
        pop_expect(q, next, batch);
      }
    }
    push_range(q, pushed, pushed + 50000);
    pushed += 50000;
    pop_expect(q, next, 50000);
    CHECK(q.try_pop().is_empty());
  }
  SECTION("counted items over many blocks, interleaved one by one") {
    mpsc_queue<counted> q;
    std::uint64_t wrong = 0;
    REQUIRE(q.push(counted(0)));
    for (std::uint64_t i = 1; i < 20000; ++i) {
      REQUIRE(q.push(counted(i)));
      auto r = q.try_pop();
      if (!r || r->value != i - 1) ++wrong;
    }
    CHECK(wrong == 0);
    CHECK(counted::live.load() - live_before == 1);
  }
  CHECK(counted::live.load() == live_before);
}

TEST_CASE("mpsc_queue steady push/pop reuses blocks instead of allocating", "[mpsc_queue][blocks]") {
  mpsc_queue<wide_item> q;
  std::uint64_t pushed = 0, next = 0;
  // Warm up: link a few blocks so the one-block cache is filled.
  for (int round = 0; round < 10; ++round) {
    push_range(q, pushed, pushed + 31);
    pushed += 31;
    pop_expect(q, next, 31);
  }
  std::uint64_t wrong = 0;
  const std::size_t before = allocations.load();
  for (int round = 0; round < 500; ++round) {  // 15,500 items over 500 block boundaries
    for (int i = 0; i < 31; ++i) wrong += q.push(wide_item(pushed++)) ? 0 : 1;
    for (int i = 0; i < 31; ++i) {
      auto r = q.try_pop();
      if (!r || r->value != next) ++wrong;
      ++next;
    }
  }
  const std::size_t during = allocations.load() - before;
  CHECK(wrong == 0);
  CHECK(during == 0);
}

TEST_CASE("mpsc_queue size_approx counts exactly on a single thread", "[mpsc_queue][size]") {
  mpsc_queue<wide_item> wide;
  mpsc_queue<std::uint64_t> narrow;
  std::uint64_t wrong = 0;
  for (std::uint64_t i = 0; i < 3000; ++i) {
    REQUIRE(wide.push(wide_item(i)));
    REQUIRE(narrow.push(i));
    wrong += wide.size_approx() == i + 1 ? 0 : 1;
    wrong += narrow.size_approx() == i + 1 ? 0 : 1;
  }
  CHECK_FALSE(wide.empty_approx());
  for (std::uint64_t i = 3000; i-- > 0;) {
    REQUIRE(wide.try_pop());
    REQUIRE(narrow.try_pop());
    wrong += wide.size_approx() == i ? 0 : 1;
    wrong += narrow.size_approx() == i ? 0 : 1;
  }
  CHECK(wrong == 0);
  CHECK(wide.empty_approx());
  CHECK(narrow.empty_approx());
}

TEST_CASE("mpsc_queue try_pop_bulk and pop_bulk respect max and keep order", "[mpsc_queue][bulk]") {
  mpsc_queue<std::uint64_t> q;
  std::vector<std::uint64_t> out;
  CHECK(q.try_pop_bulk(std::back_inserter(out), 10) == 0);
  push_range(q, 0, 10);
  CHECK(q.try_pop_bulk(std::back_inserter(out), 0) == 0);
  CHECK(q.pop_bulk(std::back_inserter(out), 0) == 0);
  CHECK(q.try_pop_bulk(std::back_inserter(out), 3) == 3);
  CHECK(q.pop_bulk(std::back_inserter(out), 4) == 4);
  CHECK(q.size_approx() == 3);
  std::uint64_t raw[16] = {};
  CHECK(q.try_pop_bulk(raw, 16) == 3);  // plain pointers are output iterators too
  CHECK(q.try_pop_bulk(raw, 16) == 0);
  REQUIRE(out == std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5, 6});
  CHECK(raw[0] == 7);
  CHECK(raw[1] == 8);
  CHECK(raw[2] == 9);

  // Across block boundaries.
  push_range(q, 10, 5010);
  out.clear();
  std::size_t calls = 0;
  while (out.size() < 5000) {
    const std::size_t n = (calls++ % 2 == 0) ? q.try_pop_bulk(std::back_inserter(out), 777)
                                              : q.pop_bulk(std::back_inserter(out), 777);
    REQUIRE(n > 0);
    REQUIRE(n <= 777);
  }
  REQUIRE(out.size() == 5000);
  std::uint64_t wrong = 0;
  for (std::uint64_t i = 0; i < 5000; ++i) wrong += out[i] == i + 10 ? 0 : 1;
  CHECK(wrong == 0);
  CHECK(calls == 7);  // 6 full batches of 777 and one of 338
}

TEST_CASE("mpsc_queue pop_bulk blocks for the first item and returns 0 only when closed and drained", "[mpsc_queue][bulk][blocking]") {
  mpsc_queue<int> q;
  std::latch started(1);
  auto consumer = tether_test::run_async([&] {
    started.count_down();
    std::vector<int> out;
    const std::size_t n = q.pop_bulk(std::back_inserter(out), 8);
    return std::make_pair(n, out);
  });
  started.wait();
  std::this_thread::sleep_for(tether_test::park_settle);
  REQUIRE(q.push(11));
  const auto [n, out] = tether_test::finish_or_abort(consumer, "consumer parked in pop_bulk()");
  CHECK(n == 1);
  CHECK(out == std::vector<int>{11});

  for (int i = 0; i < 5; ++i) REQUIRE(q.push(i));
  q.close();
  std::vector<int> rest;
  CHECK(q.pop_bulk(std::back_inserter(rest), 3) == 3);
  CHECK(q.pop_bulk(std::back_inserter(rest), 3) == 2);
  CHECK(q.pop_bulk(std::back_inserter(rest), 3) == 0);
  CHECK(rest == std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE("mpsc_queue drain hands ready items to the callback up to max, never blocking", "[mpsc_queue][drain]") {
  mpsc_queue<int> q;
  std::vector<int> seen;
  auto sink = [&](int&& v) { seen.push_back(v); };
  CHECK(q.drain(sink) == 0);
  for (int i = 0; i < 10; ++i) REQUIRE(q.push(i));
  CHECK(q.drain(sink, 0) == 0);
  CHECK(q.drain(sink, 4) == 4);
  CHECK(q.drain(sink) == 6);
  CHECK(q.drain(sink) == 0);
  CHECK(seen == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  q.close();
  CHECK(q.drain(sink) == 0);
  CHECK(q.try_pop().is_closed());
}

TEST_CASE("mpsc_queue drain: an item handed to a throwing callback counts as delivered", "[mpsc_queue][drain][exceptions]") {
  mpsc_queue<int> q;
  for (int i = 0; i < 3; ++i) REQUIRE(q.push(i));
  std::vector<int> seen;
  CHECK_THROWS_AS(q.drain([&](int&& v) {
    seen.push_back(v);
    if (v == 1) throw std::runtime_error("callback failed");
  }),
                  std::runtime_error);
  CHECK(seen == std::vector<int>{0, 1});
  auto r = q.try_pop();
  REQUIRE(r);
  CHECK(*r == 2);
  CHECK(q.try_pop().is_empty());
}

TEST_CASE("mpsc_queue a drain callback may consume from the same queue on its own thread", "[mpsc_queue][drain]") {
  mpsc_queue<int> q;
  for (int i = 0; i < 6; ++i) REQUIRE(q.push(i));
  std::vector<int> seen;
  const std::size_t n = q.drain([&](int&& v) {
    seen.push_back(v);
    if (auto r = q.try_pop()) seen.push_back(*r + 100);
  });
  CHECK(n == 3);
  CHECK(seen == std::vector<int>{0, 101, 2, 103, 4, 105});
  CHECK(q.try_pop().is_empty());
}

#ifndef NDEBUG
TEST_CASE("mpsc_queue debug builds reject a second thread consuming at once", "[mpsc_queue][consumer_check]") {
  mpsc_queue<int> q;
  REQUIRE(q.push(1));
  REQUIRE(q.push(2));
  std::latch inside(1);
  std::latch release(1);
  auto first = tether_test::run_async([&] {
    return q.drain([&](int&&) {
      inside.count_down();
      release.wait();
    }, 1);
  });
  inside.wait();  // the first consumer is now inside drain()
  CHECK_THROWS_AS(q.try_pop(), std::logic_error);
  CHECK_THROWS_WITH(q.try_pop(), Catch::Contains("two threads"));
  CHECK_THROWS_AS(q.pop_for(1ms), std::logic_error);
  std::vector<int> out;
  CHECK_THROWS_AS(q.try_pop_bulk(std::back_inserter(out), 4), std::logic_error);
  CHECK_THROWS_AS(q.drain([](int&&) {}), std::logic_error);
  release.count_down();
  CHECK(tether_test::finish_or_abort(first, "first consumer") == 1);
  // The rejected calls took nothing; after the first consumer left, another thread may consume.
  CHECK(out.empty());
  auto r = q.try_pop();
  REQUIRE(r);
  CHECK(*r == 2);
}
#endif
