// Unit tests for tether::mpsc_queue: crossbeam's checklist (smoke, try_*, *_for / *_until,
// *_after_close, close wakes the consumer, move-only and throwing items, drops), block
// boundaries and recycling, bulk pops and try_pop_each, size_approx, single-producer FIFO, the
// debug check against two consumers, and producer handles (make_producer): per-handle FIFO,
// mixing with plain push, close, dropped and reused lanes, moves, throwing constructors,
// size_approx, wake-ups (pop*, poller, select), bulk pops, fairness between sources, drops;
// a producer stalled between claiming its slot and writing it (what waits, close, drops).
#include <tether/mpsc_queue.hpp>
#include <tether/select.hpp>

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
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "queue_fault.hpp"
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
using tether_test::failing_output;

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
        for (std::uint64_t s = 0; s < per_producer; ++s) (void)q.push(tether_test::make_item(p, s));
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
  CHECK(q.try_pop_each([&](std::unique_ptr<int>&& p) { sum += *p; }) == 78);
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
        (void)q.emplace(i, i % 3 == 0);
      } catch (const std::runtime_error&) {
      }
    }
    auto r = q.try_pop();
    REQUIRE(r);
    CHECK(r->c.value == 1);
  }
  SECTION("bulk and try_pop_each consumers") {
    mpsc_queue<counted> q;
    for (std::uint64_t i = 0; i < 600; ++i) REQUIRE(q.emplace(i));
    std::vector<counted> out;
    CHECK(q.try_pop_bulk(std::back_inserter(out), 250) == 250);
    CHECK(q.try_pop_each([](counted&&) {}, 250) == 250);
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

// Pushes 31 items at a time through push(item) and pops them, over 500 block boundaries
// after a warm-up; checks the values and that the steady state allocates nothing.
template <class Push>
void check_steady_state_reuses_blocks(mpsc_queue<wide_item>& q, Push push) {
  std::uint64_t pushed = 0, next = 0, wrong = 0;
  // Warm up: link a few blocks so that emptied ones are kept for reuse.
  for (int round = 0; round < 10; ++round) {
    for (int i = 0; i < 31; ++i) wrong += push(wide_item(pushed++)) ? 0 : 1;
    pop_expect(q, next, 31);
  }
  const std::size_t before = allocations.load();
  for (int round = 0; round < 500; ++round) {  // 15,500 items over 500 block boundaries
    for (int i = 0; i < 31; ++i) wrong += push(wide_item(pushed++)) ? 0 : 1;
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

TEST_CASE("mpsc_queue steady push/pop reuses blocks instead of allocating", "[mpsc_queue][blocks]") {
  mpsc_queue<wide_item> q;
  check_steady_state_reuses_blocks(q, [&](wide_item&& v) { return q.push(std::move(v)); });
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

TEST_CASE("mpsc_queue try_pop_each hands ready items to the callback up to max, never blocking", "[mpsc_queue][try_pop_each]") {
  mpsc_queue<int> q;
  std::vector<int> seen;
  auto sink = [&](int&& v) { seen.push_back(v); };
  CHECK(q.try_pop_each(sink) == 0);
  for (int i = 0; i < 10; ++i) REQUIRE(q.push(i));
  CHECK(q.try_pop_each(sink, 0) == 0);
  CHECK(q.try_pop_each(sink, 4) == 4);
  CHECK(q.try_pop_each(sink) == 6);
  CHECK(q.try_pop_each(sink) == 0);
  CHECK(seen == std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  q.close();
  CHECK(q.try_pop_each(sink) == 0);
  CHECK(q.try_pop().is_closed());
}

TEST_CASE("mpsc_queue try_pop_each: an item handed to a throwing callback counts as delivered", "[mpsc_queue][try_pop_each][exceptions]") {
  mpsc_queue<int> q;
  for (int i = 0; i < 3; ++i) REQUIRE(q.push(i));
  std::vector<int> seen;
  CHECK_THROWS_AS(q.try_pop_each([&](int&& v) {
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

TEST_CASE("mpsc_queue a try_pop_each callback may consume from the same queue on its own thread", "[mpsc_queue][try_pop_each]") {
  mpsc_queue<int> q;
  for (int i = 0; i < 6; ++i) REQUIRE(q.push(i));
  std::vector<int> seen;
  const std::size_t n = q.try_pop_each([&](int&& v) {
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
  CHECK_THROWS_AS(q.try_pop_bulk(std::back_inserter(out), 4), std::logic_error);
  CHECK_THROWS_AS(q.try_pop_each([](int&&) {}), std::logic_error);
  release.count_down();
  CHECK(tether_test::finish_or_abort(first, "first consumer") == 1);
  // The rejected calls took nothing; after the first consumer left, another thread may consume.
  CHECK(out.empty());
  auto r = q.try_pop();
  REQUIRE(r);
  CHECK(*r == 2);
}
#endif

// ---- producer handles (make_producer) ------------------------------------------------------
//
// A handle owns a private lane: per-handle FIFO, no order between sources, the consumer
// rotating between sources. Items are tagged make_item(source, seq) where a test needs to
// tell sources apart; the order_checker then proves exactly-once and per-source order.

namespace {

template <class T>
using producer_of = typename mpsc_queue<T>::producer;

static_assert(std::is_nothrow_move_constructible_v<producer_of<int>>);
static_assert(std::is_nothrow_move_assignable_v<producer_of<int>>);
static_assert(!std::is_copy_constructible_v<producer_of<int>>);
static_assert(!std::is_copy_assignable_v<producer_of<int>>);

// A counted item at least as wide as wide_item: few per block.
struct wide_counted {
  counted c;
  std::array<std::uint64_t, 31> pad{};
  explicit wide_counted(std::uint64_t v) : c(v) {}
};
static_assert(sizeof(wide_counted) >= sizeof(wide_item));

using tether_test::item_producer;
using tether_test::make_item;
using tether_test::order_checker;

// Pushes from..to-1 (as T(i)) through the handle h.
template <class Producer>
void push_through(Producer& h, std::uint64_t from, std::uint64_t to) {
  using T = typename std::remove_reference_t<decltype(h.queue())>::value_type;
  std::uint64_t refused = 0;
  for (std::uint64_t i = from; i < to; ++i) refused += h.push(T(i)) ? 0 : 1;
  REQUIRE(refused == 0);
}

// Pushes seq from..to-1 of source `source` (tagged items) through h; returns how many were
// refused.
template <class Producer>
std::uint64_t push_tagged(Producer& h, std::uint64_t source, std::uint64_t from, std::uint64_t to) {
  std::uint64_t refused = 0;
  for (std::uint64_t s = from; s < to; ++s) refused += h.push(make_item(source, s)) ? 0 : 1;
  return refused;
}

// Pops with try_pop until empty (or closed), feeding the checker; returns the last status.
status try_pop_all(mpsc_queue<std::uint64_t>& q, order_checker& check) {
  for (;;) {
    auto r = q.try_pop();
    if (!r) return r.status();
    check(*r);
  }
}

std::uint64_t tagged_sum(std::uint64_t source, std::uint64_t n) { return make_item(source, 0) * n + n * (n - 1) / 2; }

}  // namespace

TEST_CASE("mpsc_queue producer handle is FIFO across many blocks", "[mpsc_queue][producer][fifo]") {
  SECTION("10,000 items through one handle, all pushed then all popped") {
    mpsc_queue<std::uint64_t> q;
    auto h = q.make_producer();
    CHECK(&h.queue() == &q);
    push_through(h, 0, 10000);
    CHECK(q.size_approx() == 10000);
    std::uint64_t next = 0;
    pop_expect(q, next, 10000);
    CHECK(q.try_pop().is_empty());
    CHECK(q.size_approx() == 0);
  }
  SECTION("small blocks (wide items), batches around the block size") {
    // Emptied blocks come back from the pool holding the stamps of their last use: an
    // emptied lane must still read as empty at every position of a reused block.
    mpsc_queue<wide_item> q;
    auto h = q.make_producer();
    std::uint64_t pushed = 0, next = 0, not_empty = 0;
    for (const std::uint64_t batch : {1, 2, 30, 31, 32, 33, 62, 63, 64, 93, 100, 500, 1}) {
      for (int round = 0; round < 20; ++round) {
        push_through(h, pushed, pushed + batch);
        pushed += batch;
        pop_expect(q, next, batch);
        not_empty += q.try_pop().is_empty() ? 0 : 1;
      }
    }
    CHECK(pushed > 10000);
    CHECK(not_empty == 0);
    CHECK(q.try_pop().is_empty());
  }
  SECTION("uint64_t items, batches around the block size, in single and bulk pops") {
    // Emptied blocks come back from the pool holding the stamps of their last use: an
    // emptied lane must read as empty at every position of a reused block, whichever way
    // the consumer takes its items.
    constexpr std::uint64_t b = tether::detail::lane_block<std::uint64_t>::items;
    mpsc_queue<std::uint64_t> q;
    auto h = q.make_producer();
    std::uint64_t pushed = 0, next = 0, not_empty = 0, wrong = 0;
    std::vector<std::uint64_t> out(3 * b);
    for (const std::uint64_t batch : {std::uint64_t{1}, std::uint64_t{2}, std::uint64_t{7}, b / 2, b - 1, b, b + 1,
                                      2 * b + 1, std::uint64_t{1}}) {
      for (int round = 0; round < 6; ++round) {
        push_through(h, pushed, pushed + batch);
        pushed += batch;
        if (round % 2 == 0) {
          pop_expect(q, next, batch);
        } else {
          const std::size_t n = q.try_pop_bulk(out.data(), out.size());
          wrong += n == batch ? 0 : 1;
          for (std::size_t i = 0; i < n; ++i) wrong += out[i] == next++ ? 0 : 1;
        }
        not_empty += q.try_pop().is_empty() ? 0 : 1;
      }
    }
    CHECK(pushed > 5 * b);
    CHECK(wrong == 0);
    CHECK(not_empty == 0);
    CHECK(q.try_pop().is_empty());
  }
  SECTION("small blocks, the consumer trails the handle by a varying distance") {
    mpsc_queue<wide_item> q;
    auto h = q.make_producer();
    std::uint64_t pushed = 0, next = 0;
    for (int round = 0; round < 400; ++round) {
      const std::uint64_t in = 17 + static_cast<std::uint64_t>(round % 50);
      push_through(h, pushed, pushed + in);
      pushed += in;
      pop_expect(q, next, in - static_cast<std::uint64_t>(round % 3));
    }
    CHECK(q.size_approx() == pushed - next);
    pop_expect(q, next, pushed - next);
    CHECK(q.try_pop().is_empty());
  }
  SECTION("a handle on another thread, the consumer parked in pop()") {
    constexpr std::uint64_t n = 20000;
    mpsc_queue<std::uint64_t> q;
    auto producer = tether_test::run_async([&] {
      auto h = q.make_producer();
      std::uint64_t refused = 0;
      for (std::uint64_t i = 0; i < n; ++i) refused += h.push(i) ? 0 : 1;
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
}

TEST_CASE("mpsc_queue steady push/pop through a handle reuses blocks instead of allocating", "[mpsc_queue][producer][blocks]") {
  mpsc_queue<wide_item> q;
  auto h = q.make_producer();
  check_steady_state_reuses_blocks(q, [&](wide_item&& v) { return h.push(std::move(v)); });
}

TEST_CASE("mpsc_queue handle pushes and plain pushes mix: each source in order, nothing lost", "[mpsc_queue][producer][multi_producer]") {
  SECTION("one thread interleaving plain push and three handles") {
    // Source 0 is plain push; sources 1..3 are handles.
    constexpr std::uint64_t total = 12000;
    mpsc_queue<std::uint64_t> q;
    auto h1 = q.make_producer();
    auto h2 = q.make_producer();
    auto h3 = q.make_producer();
    std::array<std::uint64_t, 4> seq{};
    order_checker check(4);
    std::uint64_t refused = 0, expected_sum = 0;
    for (std::uint64_t i = 0; i < total; ++i) {
      const std::uint64_t src = (i * 7 + i / 5) % 4;
      const std::uint64_t item = make_item(src, seq[src]++);
      expected_sum += item;
      bool ok = false;
      switch (src) {
        case 0: ok = bool(q.push(item)); break;
        case 1: ok = bool(h1.push(std::uint64_t{item})); break;
        case 2: ok = bool(h2.emplace(item)); break;
        default: ok = bool(h3.push(item)); break;
      }
      refused += ok ? 0 : 1;
      if (i % 1000 == 999) {  // pop part of what is queued now and then
        for (int k = 0; k < 600; ++k) {
          auto r = q.try_pop();
          if (r) check(*r);
        }
      }
    }
    CHECK(refused == 0);
    CHECK(try_pop_all(q, check) == status::empty);
    INFO(check.first_error());
    CHECK(check.errors() == 0);
    CHECK(check.count() == total);
    CHECK(check.sum() == expected_sum);
    for (std::size_t s = 0; s < 4; ++s) CHECK(check.next(s) == seq[s]);
  }
  SECTION("two threads with handles and two with plain push, consumer in pop()") {
    constexpr std::size_t producers = 4;
    constexpr std::uint64_t per_producer = 10000;
    mpsc_queue<std::uint64_t> q;
    order_checker check(producers);
    std::atomic<std::uint64_t> refused{0};
    {
      tether_test::thread_group threads;
      for (std::size_t p = 0; p < producers; ++p)
        threads.spawn([&q, &refused, p] {
          std::uint64_t mine = 0;
          if (p % 2 == 0) {
            auto h = q.make_producer();
            mine = push_tagged(h, p, 0, per_producer);
          } else {
            for (std::uint64_t s = 0; s < per_producer; ++s) mine += q.push(make_item(p, s)) ? 0 : 1;
          }
          refused.fetch_add(mine);
        });
      for (std::uint64_t i = 0; i < producers * per_producer; ++i) {
        auto v = q.pop();
        if (v) check(*v);
      }
    }
    INFO(check.first_error());
    CHECK(refused.load() == 0);
    CHECK(check.errors() == 0);
    CHECK(check.count() == producers * per_producer);
    CHECK(check.sum() == tether_test::expected_item_sum(producers, per_producer));
    CHECK(q.try_pop().is_empty());
  }
}

TEST_CASE("mpsc_queue handle push after close returns false and leaves the item untouched", "[mpsc_queue][producer][close]") {
  SECTION("move-only items") {
    mpsc_queue<std::unique_ptr<int>> q;
    auto h = q.make_producer();
    REQUIRE(h.push(std::make_unique<int>(1)));
    CHECK(q.close());
    auto p = std::make_unique<int>(2);
    CHECK_FALSE(h.push(std::move(p)));
    REQUIRE(p != nullptr);  // handed back: not moved from
    CHECK(*p == 2);
    CHECK_FALSE(h.emplace(std::move(p)));
    REQUIRE(p != nullptr);
    CHECK(*p == 2);
    // A handle made after close refuses too.
    auto late = q.make_producer();
    CHECK_FALSE(late.push(std::move(p)));
    REQUIRE(p != nullptr);
    CHECK(*p == 2);
    CHECK(q.size_approx() == 1);
    // What the handle pushed before close is still delivered, then closed.
    auto first = q.pop();
    REQUIRE(first);
    CHECK(**first == 1);
    CHECK_FALSE(q.pop().has_value());
    CHECK(q.try_pop().is_closed());
  }
  SECTION("strings (long enough to live on the heap) and copies") {
    mpsc_queue<std::string> q;
    auto h = q.make_producer();
    const std::string text(100, 'x');
    REQUIRE(h.push(std::string(text)));
    q.close();
    std::string s = text;
    CHECK_FALSE(h.push(std::move(s)));
    CHECK(s == text);
    CHECK_FALSE(h.emplace(std::move(s)));
    CHECK(s == text);
    CHECK_FALSE(h.push(static_cast<const std::string&>(s)));
    CHECK_FALSE(h.emplace(std::size_t{50}, 'y'));
    CHECK(s == text);
    auto r = q.try_pop();
    REQUIRE(r);
    CHECK(*r == text);
    CHECK(q.try_pop().is_closed());
    CHECK(q.size_approx() == 0);
  }
  SECTION("a refused copy leaves no copy behind") {
    mpsc_queue<std::shared_ptr<int>> q;
    auto h = q.make_producer();
    const auto cp = std::make_shared<int>(3);
    REQUIRE(h.push(cp));
    CHECK(cp.use_count() == 2);
    q.close();
    CHECK_FALSE(h.push(cp));
    CHECK_FALSE(h.emplace(cp));
    CHECK(cp.use_count() == 2);
    {
      auto r = q.pop();
      REQUIRE(r);
      CHECK(*r == cp);
    }
    CHECK(cp.use_count() == 1);
    CHECK(q.try_pop().is_closed());
  }
}

TEST_CASE("mpsc_queue everything handles pushed before close is popped, then closed", "[mpsc_queue][producer][close]") {
  // Three handles and plain push, across several blocks; then each consumer verb empties the queue.
  constexpr std::uint64_t per_source = 2500;
  mpsc_queue<std::uint64_t> q;
  {
    auto h1 = q.make_producer();
    auto h2 = q.make_producer();
    auto h3 = q.make_producer();
    std::uint64_t refused = 0;
    for (std::uint64_t s = 0; s < per_source; ++s) {
      refused += q.push(make_item(0, s)) ? 0 : 1;
      refused += h1.push(make_item(1, s)) ? 0 : 1;
      refused += h2.push(make_item(2, s)) ? 0 : 1;
      refused += h3.push(make_item(3, s)) ? 0 : 1;
    }
    REQUIRE(refused == 0);
    CHECK(q.close());
    CHECK_FALSE(h1.push(make_item(1, per_source)));
    CHECK_FALSE(q.push(make_item(0, per_source)));
  }
  CHECK(q.size_approx() == 4 * per_source);
  order_checker check(4);
  SECTION("pop()") {
    while (auto v = q.pop()) check(*v);
  }
  SECTION("pop_for()") {
    for (;;) {
      auto r = q.pop_for(10s);
      if (!r) {
        CHECK(r.status() == status::closed);
        break;
      }
      check(*r);
    }
  }
  SECTION("pop_bulk()") {
    std::vector<std::uint64_t> out;
    while (q.pop_bulk(std::back_inserter(out), 333) != 0) {
    }
    for (const std::uint64_t v : out) check(v);
  }
  SECTION("try_pop_each()") {
    CHECK(q.try_pop_each([&](std::uint64_t&& v) { check(v); }) == 4 * per_source);
  }
  INFO(check.first_error());
  CHECK(check.errors() == 0);
  CHECK(check.count() == 4 * per_source);
  CHECK(check.sum() == tether_test::expected_item_sum(4, per_source));
  for (std::size_t s = 0; s < 4; ++s) CHECK(check.next(s) == per_source);
  CHECK_FALSE(q.pop().has_value());
  CHECK(q.try_pop().status() == status::closed);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(q.pop_for(10s).status() == status::closed);
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  std::vector<std::uint64_t> rest;
  CHECK(q.pop_bulk(std::back_inserter(rest), 8) == 0);
  CHECK(q.size_approx() == 0);
}

TEST_CASE("mpsc_queue with handles: close wakes a parked consumer after what was pushed", "[mpsc_queue][producer][close]") {
  mpsc_queue<std::uint64_t> q;
  auto idle = q.make_producer();  // a lane that never pushes
  std::latch started(1);
  SECTION("pop(): no items") {
    auto consumer = tether_test::run_async([&] {
      started.count_down();
      return q.pop();
    });
    started.wait();
    std::this_thread::sleep_for(tether_test::park_settle);
    CHECK(q.close());
    CHECK_FALSE(tether_test::finish_or_abort(consumer, "consumer parked in pop()").has_value());
  }
  SECTION("pop_for(): no items") {
    auto consumer = tether_test::run_async([&] {
      started.count_down();
      return q.pop_for(60s).status();
    });
    started.wait();
    std::this_thread::sleep_for(tether_test::park_settle);
    CHECK(q.close());
    CHECK(tether_test::finish_or_abort(consumer, "consumer parked in pop_for()") == status::closed);
  }
  SECTION("a handle thread pushes, then closes; the consumer gets all of it, then closed") {
    constexpr std::uint64_t n = 5000;
    auto consumer = tether_test::run_async([&] {
      started.count_down();
      order_checker check(1);
      while (auto v = q.pop()) check(*v);
      return check;
    });
    started.wait();
    std::thread producer([&q] {
      auto h = q.make_producer();
      for (std::uint64_t s = 0; s < n; ++s) (void)h.push(make_item(0, s));
      q.close();
    });
    producer.join();
    const order_checker check = tether_test::finish_or_abort(consumer, "consumer in pop()");
    INFO(check.first_error());
    CHECK(check.errors() == 0);
    CHECK(check.count() == n);
    CHECK(check.sum() == tagged_sum(0, n));
  }
  CHECK(q.try_pop().is_closed());
  CHECK_FALSE(idle.push(1));
}

TEST_CASE("mpsc_queue a dropped handle's items are still delivered", "[mpsc_queue][producer][drop]") {
  mpsc_queue<std::uint64_t> q;
  SECTION("dropped on the consumer's thread") {
    {
      auto h = q.make_producer();
      CHECK(push_tagged(h, 0, 0, 3000) == 0);
    }
    CHECK(q.size_approx() == 3000);
    order_checker check(1);
    CHECK(try_pop_all(q, check) == status::empty);
    INFO(check.first_error());
    CHECK(check.errors() == 0);
    CHECK(check.count() == 3000);
    CHECK(check.sum() == tagged_sum(0, 3000));
  }
  SECTION("two handles dropped by a thread that has exited") {
    std::thread t([&q] {
      auto a = q.make_producer();
      auto b = q.make_producer();
      (void)push_tagged(a, 0, 0, 1500);
      (void)push_tagged(b, 1, 0, 2500);
      (void)push_tagged(a, 0, 1500, 3000);
    });
    t.join();
    CHECK(q.size_approx() == 5500);
    order_checker check(2);
    CHECK(try_pop_all(q, check) == status::empty);
    INFO(check.first_error());
    CHECK(check.errors() == 0);
    CHECK(check.count() == 5500);
    CHECK(check.sum() == tagged_sum(0, 3000) + tagged_sum(1, 2500));
    CHECK(check.next(0) == 3000);
    CHECK(check.next(1) == 2500);
  }
  SECTION("dropped while the consumer is parked: it still wakes for the items") {
    std::latch started(1);
    auto consumer = tether_test::run_async([&] {
      started.count_down();
      order_checker check(1);
      for (int i = 0; i < 100; ++i)
        if (auto v = q.pop()) check(*v);
      return check;
    });
    started.wait();
    std::this_thread::sleep_for(tether_test::park_settle);
    std::thread t([&q] {
      auto h = q.make_producer();
      (void)push_tagged(h, 0, 0, 100);
    });
    t.join();
    const order_checker check = tether_test::finish_or_abort(consumer, "consumer parked in pop()");
    CHECK(check.errors() == 0);
    CHECK(check.count() == 100);
    CHECK(check.sum() == tagged_sum(0, 100));
  }
}

TEST_CASE("mpsc_queue a dropped handle's lane is reused by the next make_producer()", "[mpsc_queue][producer][reuse]") {
  SECTION("one handle at a time, items left queued at every drop") {
    // Each handle pushes a batch (some cross block boundaries, some stop mid-block) and is
    // dropped with part of its items still queued; the next handle continues the same lane.
    const std::array<std::uint64_t, 10> batches{700, 1023, 1, 1500, 333, 1024, 2, 2047, 64, 999};
    mpsc_queue<std::uint64_t> q;
    order_checker check(batches.size());  // one source per handle
    std::uint64_t expected_sum = 0, refused = 0, total = 0;
    std::size_t lane_allocations = 0;
    for (std::size_t k = 0; k < batches.size(); ++k) {
      const std::size_t before = allocations.load();
      auto h = q.make_producer();
      if (k > 0) lane_allocations += allocations.load() - before;
      refused += push_tagged(h, k, 0, batches[k]);
      expected_sum += tagged_sum(k, batches[k]);
      total += batches[k];
      for (std::uint64_t i = 0; i < batches[k] / 2; ++i) {
        auto r = q.try_pop();
        if (r) check(*r);
      }
    }
    CHECK(lane_allocations == 0);  // every handle after the first took the dropped lane
    CHECK(q.size_approx() == total - check.count());
    CHECK(try_pop_all(q, check) == status::empty);
    INFO(check.first_error());
    CHECK(refused == 0);
    CHECK(check.errors() == 0);
    CHECK(check.count() == total);
    CHECK(check.sum() == expected_sum);
    for (std::size_t k = 0; k < batches.size(); ++k) CHECK(check.next(k) == batches[k]);
  }
  SECTION("several lanes: a dropped one is reused while the others keep pushing") {
    mpsc_queue<std::uint64_t> q;
    order_checker check(5);
    auto a = q.make_producer();
    std::optional<producer_of<std::uint64_t>> b(q.make_producer());
    auto c = q.make_producer();
    std::uint64_t refused = push_tagged(a, 0, 0, 1200) + push_tagged(*b, 1, 0, 1200) + push_tagged(c, 2, 0, 1200);
    b.reset();  // dropped with its 1,200 items queued
    std::size_t before = allocations.load();
    auto d = q.make_producer();  // takes b's lane
    CHECK(allocations.load() - before == 0);
    before = allocations.load();
    auto e = q.make_producer();  // no lane free: a new one
    CHECK(allocations.load() - before > 0);
    refused += push_tagged(d, 3, 0, 1500) + push_tagged(a, 0, 1200, 2000) + push_tagged(e, 4, 0, 700) +
               push_tagged(c, 2, 1200, 1300);
    CHECK(refused == 0);
    CHECK(q.size_approx() == 1200 * 3 + 1500 + 800 + 700 + 100);
    CHECK(try_pop_all(q, check) == status::empty);
    INFO(check.first_error());
    CHECK(check.errors() == 0);
    CHECK(check.count() == 1200 * 3 + 1500 + 800 + 700 + 100);
    CHECK(check.sum() == tagged_sum(0, 2000) + tagged_sum(1, 1200) + tagged_sum(2, 1300) + tagged_sum(3, 1500) +
                             tagged_sum(4, 700));
    CHECK(check.next(0) == 2000);
    CHECK(check.next(1) == 1200);
    CHECK(check.next(2) == 1300);
    CHECK(check.next(3) == 1500);
    CHECK(check.next(4) == 700);
  }
}

TEST_CASE("mpsc_queue handles move: the moved-to handle pushes, the replaced lane is released", "[mpsc_queue][producer][move]") {
  mpsc_queue<std::uint64_t> q;
  order_checker check(5);  // source 0: the handle passed along by moves
  std::uint64_t refused = 0;
  auto h1 = q.make_producer();
  refused += h1.push(make_item(0, 0)) ? 0 : 1;
  {
    auto h2 = std::move(h1);  // move construction: h2 owns the lane now
    CHECK(&h2.queue() == &q);
    refused += h2.push(make_item(0, 1)) ? 0 : 1;
    auto other = q.make_producer();
    refused += other.push(make_item(1, 0)) ? 0 : 1;
    other = std::move(h2);  // move assignment: other's own lane is released
    refused += other.push(make_item(0, 2)) ? 0 : 1;
    auto& alias = other;
    other = std::move(alias);  // self-move-assignment keeps the handle working
    refused += other.push(make_item(0, 3)) ? 0 : 1;

    std::size_t before = allocations.load();
    auto reuser = q.make_producer();  // takes the lane other released
    CHECK(allocations.load() - before == 0);
    refused += reuser.push(make_item(2, 0)) ? 0 : 1;

    h1 = q.make_producer();  // a moved-from handle may be assigned to, then used
    refused += h1.push(make_item(3, 0)) ? 0 : 1;
    refused += other.push(make_item(0, 4)) ? 0 : 1;
  }  // other, reuser and the moved-from h2 are destroyed here
  {
    // h2 (moved from) released nothing; other and reuser released their lanes: two free.
    std::size_t before = allocations.load();
    auto x = q.make_producer();
    auto y = q.make_producer();
    CHECK(allocations.load() - before == 0);
    before = allocations.load();
    auto z = q.make_producer();  // h1 holds the third lane: a new one
    CHECK(allocations.load() - before > 0);
    refused += z.push(make_item(4, 0)) ? 0 : 1;
  }
  CHECK(refused == 0);
  CHECK(try_pop_all(q, check) == status::empty);
  INFO(check.first_error());
  CHECK(check.errors() == 0);
  CHECK(check.count() == 9);
  CHECK(check.next(0) == 5);  // the moved handle's items in the order pushed
  CHECK(check.next(1) == 1);
  CHECK(check.next(2) == 1);
  CHECK(check.next(3) == 1);
  CHECK(check.next(4) == 1);
  CHECK(check.sum() == tagged_sum(0, 5) + tagged_sum(1, 1) + tagged_sum(2, 1) + tagged_sum(3, 1) + tagged_sum(4, 1));
}

TEST_CASE("mpsc_queue handle emplace whose constructor throws skips the slot and keeps working", "[mpsc_queue][producer][exceptions]") {
  const long live_before = counted::live.load();
  const long twice_before = counted::destroyed_twice.load();
  {
    mpsc_queue<fragile> q;
    auto h = q.make_producer();
    // Several blocks. Every other push throws, so a throw comes at every slot position
    // (block boundaries included, whatever the block size); now and then several in a row.
    constexpr std::uint64_t n = 12000;
    const auto fails = [](std::uint64_t i) { return i % 2 == 0 || i % 101 < 4; };
    std::uint64_t accepted = 0, threw = 0, accepted_sum = 0, expected_throws = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      expected_throws += fails(i) ? 1 : 0;
      try {
        if (h.emplace(i, fails(i))) {
          ++accepted;
          accepted_sum += i;
        }
      } catch (const std::runtime_error&) {
        ++threw;
      }
    }
    CHECK(threw == expected_throws);
    CHECK(accepted + threw == n);
    CHECK(accepted > 5000);
    CHECK(counted::live.load() - live_before == static_cast<long>(accepted));

    std::uint64_t popped = 0, popped_sum = 0, failed_seen = 0, out_of_order = 0, last = 0;
    while (auto r = q.try_pop()) {
      const std::uint64_t v = r->c.value;
      if (fails(v)) ++failed_seen;
      if (popped != 0 && v <= last) ++out_of_order;
      last = v;
      ++popped;
      popped_sum += v;
    }
    CHECK(popped == accepted);
    CHECK(popped_sum == accepted_sum);
    CHECK(failed_seen == 0);
    CHECK(out_of_order == 0);

    // Still usable; a throw as the last act before close leaves nothing behind.
    REQUIRE(h.emplace(std::uint64_t{9000}, false));
    CHECK_THROWS_AS(h.emplace(std::uint64_t{9001}, true), std::runtime_error);
    q.close();
    auto r = q.pop();
    REQUIRE(r);
    CHECK(r->c.value == 9000);
    CHECK_FALSE(q.pop().has_value());
    CHECK(q.try_pop().is_closed());
  }
  CHECK(counted::live.load() == live_before);
  CHECK(counted::destroyed_twice.load() == twice_before);
}

TEST_CASE("mpsc_queue a consumer parked in pop() skips a handle's slot whose constructor threw", "[mpsc_queue][producer][exceptions]") {
  mpsc_queue<fragile> q;
  auto h = q.make_producer();
  std::latch started(1);
  auto consumer = tether_test::run_async([&] {
    started.count_down();
    auto r = q.pop();
    return r ? r->c.value : std::uint64_t{0};
  });
  started.wait();
  std::this_thread::sleep_for(tether_test::park_settle);
  CHECK_THROWS_AS(h.emplace(std::uint64_t{1}, true), std::runtime_error);
  std::this_thread::sleep_for(tether_test::park_settle);
  REQUIRE(h.emplace(std::uint64_t{2}, false));
  CHECK(tether_test::finish_or_abort(consumer, "consumer parked in pop()") == 2);
}

TEST_CASE("mpsc_queue size_approx counts handle items exactly on a single thread", "[mpsc_queue][producer][size]") {
  SECTION("two handles and plain push, up and down across blocks") {
    mpsc_queue<wide_item> q;
    auto a = q.make_producer();
    auto b = q.make_producer();
    std::uint64_t wrong = 0;
    for (std::uint64_t i = 0; i < 3000; ++i) {
      bool ok = false;
      switch (i % 3) {
        case 0: ok = bool(a.push(wide_item(i))); break;
        case 1: ok = bool(b.push(wide_item(i))); break;
        default: ok = bool(q.push(wide_item(i))); break;
      }
      REQUIRE(ok);
      wrong += q.size_approx() == i + 1 ? 0 : 1;
    }
    CHECK_FALSE(q.empty_approx());
    for (std::uint64_t i = 3000; i-- > 0;) {
      REQUIRE(q.try_pop());
      wrong += q.size_approx() == i ? 0 : 1;
    }
    CHECK(wrong == 0);
    CHECK(q.empty_approx());
  }
  SECTION("a dropped handle's items still count") {
    mpsc_queue<std::uint64_t> q;
    {
      auto h = q.make_producer();
      push_through(h, 0, 1500);
    }
    CHECK(q.size_approx() == 1500);
    auto h = q.make_producer();  // reuses the lane
    push_through(h, 1500, 1600);
    CHECK(q.size_approx() == 1600);
    for (int i = 0; i < 1000; ++i) REQUIRE(q.try_pop());
    CHECK(q.size_approx() == 600);
  }
  SECTION("after a handle's constructor threw and the consumer skipped that slot") {
    mpsc_queue<fragile> q;
    auto h = q.make_producer();
    CHECK_THROWS_AS(h.emplace(std::uint64_t{1}, true), std::runtime_error);
    CHECK(q.try_pop().is_empty());  // skips the abandoned slot
    CHECK(q.size_approx() == 0);
    REQUIRE(h.emplace(std::uint64_t{2}, false));
    REQUIRE(h.emplace(std::uint64_t{3}, false));
    CHECK(q.size_approx() == 2);
    auto r = q.try_pop();
    REQUIRE(r);
    CHECK(r->c.value == 2);
    CHECK(q.size_approx() == 1);
  }
}

TEST_CASE("mpsc_queue a parked consumer is woken by a handle push from another thread", "[mpsc_queue][producer][blocking]") {
  mpsc_queue<int> q;
  auto h = q.make_producer();
  SECTION("pop_for(): timeout while empty, then the push") {
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(q.pop_for(30ms).status() == status::timeout);
    CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
    std::latch started(1);
    auto consumer = tether_test::run_async([&] {
      started.count_down();
      const auto begin = std::chrono::steady_clock::now();
      auto r = q.pop_for(60s);
      return std::make_pair(r ? *r : -1, std::chrono::steady_clock::now() - begin);
    });
    started.wait();
    std::this_thread::sleep_for(tether_test::park_settle);
    std::atomic<bool> pushed{false};
    std::thread pusher([&pushed, h = std::move(h)]() mutable { pushed = bool(h.push(42)); });
    pusher.join();
    CHECK(pushed.load());
    const auto [v, waited] = tether_test::finish_or_abort(consumer, "consumer parked in pop_for()");
    CHECK(v == 42);
    CHECK(waited < 30s);
  }
  SECTION("pop()") {
    std::latch started(1);
    auto consumer = tether_test::run_async([&] {
      started.count_down();
      return q.pop();
    });
    started.wait();
    std::this_thread::sleep_for(tether_test::park_settle);
    std::atomic<bool> pushed{false};
    std::thread pusher([&] { pushed = bool(h.emplace(43)); });
    pusher.join();
    CHECK(pushed.load());
    auto v = tether_test::finish_or_abort(consumer, "consumer parked in pop()");
    REQUIRE(v);
    CHECK(*v == 43);
  }
  SECTION("pop_bulk()") {
    std::latch started(1);
    auto consumer = tether_test::run_async([&] {
      started.count_down();
      std::vector<int> out;
      q.pop_bulk(std::back_inserter(out), 8);
      return out;
    });
    started.wait();
    std::this_thread::sleep_for(tether_test::park_settle);
    std::thread pusher([&] { (void)h.push(44); });
    pusher.join();
    CHECK(tether_test::finish_or_abort(consumer, "consumer parked in pop_bulk()") == std::vector<int>{44});
  }
  CHECK(q.try_pop().is_empty());
}

TEST_CASE("mpsc_queue try_pop_bulk and try_pop_each take from every handle", "[mpsc_queue][producer][bulk]") {
  constexpr std::size_t handles = 8;
  constexpr std::uint64_t per_handle = 1500;
  mpsc_queue<std::uint64_t> q;
  std::vector<producer_of<std::uint64_t>> hs;
  for (std::size_t i = 0; i < handles; ++i) hs.push_back(q.make_producer());
  std::uint64_t refused = 0;
  for (std::uint64_t s = 0; s < per_handle; s += 100)
    for (std::size_t i = 0; i < handles; ++i) refused += push_tagged(hs[i], i, s, s + 100);
  REQUIRE(refused == 0);
  order_checker check(handles);
  std::vector<std::uint64_t> out;
  SECTION("try_pop_bulk") {
    std::size_t calls = 0;
    for (;;) {
      const std::size_t n = q.try_pop_bulk(std::back_inserter(out), 777);
      REQUIRE(n <= 777);
      if (n == 0) break;
      ++calls;
      CHECK((n == 777 || out.size() == handles * per_handle));  // a short batch only at the end
    }
    CHECK(calls == (handles * per_handle + 776) / 777);
    for (const std::uint64_t v : out) check(v);
  }
  SECTION("try_pop_each with and without max") {
    CHECK(q.try_pop_each([&](std::uint64_t&& v) { check(v); }, 0) == 0);
    CHECK(q.try_pop_each([&](std::uint64_t&& v) { check(v); }, 5000) == 5000);
    CHECK(q.try_pop_each([&](std::uint64_t&& v) { check(v); }) == handles * per_handle - 5000);
    CHECK(q.try_pop_each([&](std::uint64_t&& v) { check(v); }) == 0);
  }
  SECTION("pop_bulk") {
    while (out.size() < handles * per_handle) REQUIRE(q.pop_bulk(std::back_inserter(out), 1000) > 0);
    for (const std::uint64_t v : out) check(v);
  }
  INFO(check.first_error());
  CHECK(check.errors() == 0);
  CHECK(check.count() == handles * per_handle);
  CHECK(check.sum() == tether_test::expected_item_sum(handles, per_handle));
  for (std::size_t i = 0; i < handles; ++i) CHECK(check.next(i) == per_handle);
  CHECK(q.try_pop().is_empty());
  CHECK(q.size_approx() == 0);
}

TEST_CASE("mpsc_queue try_pop_bulk: an output that throws leaves its item queued", "[mpsc_queue][producer][bulk][exceptions]") {
  // The items before the throw are out, the one being assigned stays first in line, and
  // nothing is lost, duplicated or destroyed twice - across a block boundary too.
  const std::uint64_t n = 3 * tether::detail::lane_block<counted>::items + 5;
  const long live_before = counted::live.load();
  const long twice_before = counted::destroyed_twice.load();
  {
    mpsc_queue<counted> q;
    {
      auto h = q.make_producer();
      for (std::uint64_t i = 0; i < n; ++i) REQUIRE(h.emplace(i));
    }
    std::vector<std::uint64_t> seen;
    std::uint64_t throws = 0;
    const std::size_t step = tether::detail::lane_block<counted>::items - 3;  // ends fall all over the blocks
    while (seen.size() < n) {
      const std::size_t before = seen.size();
      try {
        q.try_pop_bulk(failing_output{&seen, before + step}, SIZE_MAX);
      } catch (const std::runtime_error&) {
        ++throws;
      }
      if (seen.size() == before) break;  // no progress: fail below rather than loop
    }
    CHECK(throws == 3);  // n spans four calls of `step` items, the last one short
    REQUIRE(seen.size() == n);
    CHECK(tether_test::count_out_of_place(seen) == 0);
    CHECK(q.try_pop().is_empty());
  }
  CHECK(counted::live.load() == live_before);
  CHECK(counted::destroyed_twice.load() == twice_before);
}

TEST_CASE("mpsc_queue a try_pop_each callback may pop handle items from the same queue", "[mpsc_queue][producer][try_pop_each]") {
  // Each item leaves its lane before the callback sees it, across block boundaries too: a pop
  // inside the callback takes the next item, never the one being handed over.
  mpsc_queue<counted> q;
  const long live_before = counted::live.load();
  const long twice_before = counted::destroyed_twice.load();
  std::uint64_t n = 0;
  std::vector<std::uint64_t> seen;
  {
    auto h = q.make_producer();
    n = 3 * 1024 + 7;  // several blocks whatever the block size
    for (std::uint64_t i = 0; i < n; ++i) REQUIRE(h.emplace(i));
  }
  const std::size_t handed = q.try_pop_each([&](counted&& c) {
    seen.push_back(c.value);
    if (auto r = q.try_pop()) seen.push_back(r->value);
  });
  CHECK(handed == (n + 1) / 2);
  REQUIRE(seen.size() == n);
  CHECK(tether_test::count_out_of_place(seen) == 0);
  CHECK(q.try_pop().is_empty());
  CHECK(counted::live.load() == live_before);
  CHECK(counted::destroyed_twice.load() == twice_before);
}

namespace {

// Fairness: the consumer takes at most source_quota (256) items in a row from one source
// while another has items; allow some slack over it.
constexpr std::uint64_t fairness_bound = 300;

enum class fair_consumer { try_pop, try_pop_bulk };

// Pops everything queued (two sources, 0 busy and 1 quiet) and returns the 1-based position
// of the quiet source's first item (0 if it never came); checks both sources' order.
std::uint64_t position_of_quiet(mpsc_queue<std::uint64_t>& q, order_checker& check, fair_consumer how) {
  std::vector<std::uint64_t> out;
  if (how == fair_consumer::try_pop) {
    while (auto r = q.try_pop()) out.push_back(*r);
  } else {
    while (q.try_pop_bulk(std::back_inserter(out), 1000) != 0) {
    }
  }
  std::uint64_t quiet_at = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    check(out[i]);
    if (quiet_at == 0 && item_producer(out[i]) == 1) quiet_at = i + 1;
  }
  return quiet_at;
}

}  // namespace

TEST_CASE("mpsc_queue a busy handle cannot starve another source", "[mpsc_queue][producer][fairness]") {
  constexpr std::uint64_t busy_items = 100000;
  const fair_consumer how = GENERATE(fair_consumer::try_pop, fair_consumer::try_pop_bulk);
  const char* const consumer = how == fair_consumer::try_pop ? "try_pop" : "try_pop_bulk";
  CAPTURE(consumer);
  mpsc_queue<std::uint64_t> q;
  order_checker check(2);
  std::uint64_t refused = 0;
  SECTION("busy handle made first, quiet handle second") {
    auto busy = q.make_producer();
    auto quiet = q.make_producer();
    refused += push_tagged(busy, 0, 0, busy_items) + push_tagged(quiet, 1, 0, 1);
    const std::uint64_t at = position_of_quiet(q, check, how);
    CHECK(at >= 1);
    CHECK(at <= fairness_bound);
  }
  SECTION("quiet handle made first, busy handle second") {
    auto quiet = q.make_producer();
    auto busy = q.make_producer();
    refused += push_tagged(busy, 0, 0, busy_items) + push_tagged(quiet, 1, 0, 1);
    const std::uint64_t at = position_of_quiet(q, check, how);
    CHECK(at >= 1);
    CHECK(at <= fairness_bound);
  }
  SECTION("busy plain push, quiet handle") {
    auto quiet = q.make_producer();
    for (std::uint64_t s = 0; s < busy_items; ++s) refused += q.push(make_item(0, s)) ? 0 : 1;
    refused += push_tagged(quiet, 1, 0, 1);
    const std::uint64_t at = position_of_quiet(q, check, how);
    CHECK(at >= 1);
    CHECK(at <= fairness_bound);
  }
  SECTION("busy handle, quiet plain push") {
    auto busy = q.make_producer();
    refused += push_tagged(busy, 0, 0, busy_items);
    refused += q.push(make_item(1, 0)) ? 0 : 1;
    const std::uint64_t at = position_of_quiet(q, check, how);
    CHECK(at >= 1);
    CHECK(at <= fairness_bound);
  }
  INFO(check.first_error());
  CHECK(refused == 0);
  CHECK(check.errors() == 0);
  CHECK(check.count() == busy_items + 1);
  CHECK(check.next(0) == busy_items);
  CHECK(check.next(1) == 1);
  CHECK(q.try_pop().is_empty());
}

TEST_CASE("mpsc_queue serves busy sources in turns of bounded length", "[mpsc_queue][producer][fairness]") {
  // Three busy sources (two handles and plain push): while another source has items, the
  // consumer never takes more than the bound from one source in a row.
  constexpr std::uint64_t per_source = 5000;
  mpsc_queue<std::uint64_t> q;
  auto a = q.make_producer();
  auto b = q.make_producer();
  std::uint64_t refused = push_tagged(a, 0, 0, per_source) + push_tagged(b, 1, 0, per_source);
  for (std::uint64_t s = 0; s < per_source; ++s) refused += q.push(make_item(2, s)) ? 0 : 1;
  REQUIRE(refused == 0);
  order_checker check(3);
  std::array<std::uint64_t, 3> left{per_source, per_source, per_source};
  std::uint64_t run = 0, longest_contended_run = 0, switches = 0, prev = 3;
  while (auto r = q.try_pop()) {
    check(*r);
    const std::uint64_t src = item_producer(*r);
    if (src >= 3) continue;  // reported by the checker
    run = src == prev ? run + 1 : 1;
    if (src != prev) ++switches;
    prev = src;
    --left[src];
    const bool others_waiting = left[(src + 1) % 3] + left[(src + 2) % 3] != 0;
    if (others_waiting && run > longest_contended_run) longest_contended_run = run;
  }
  INFO(check.first_error());
  CHECK(check.errors() == 0);
  CHECK(check.count() == 3 * per_source);
  CHECK(check.sum() == tether_test::expected_item_sum(3, per_source));
  CHECK(longest_contended_run <= fairness_bound);
  CHECK(switches >= 3 * per_source / fairness_bound);
}

TEST_CASE("mpsc_queue watched by a poller or select wakes on handle pushes", "[mpsc_queue][producer][select]") {
  SECTION("a parked poller") {
    mpsc_queue<int> q;
    auto h = q.make_producer();
    tether::poller p;
    p.add(q);
    CHECK(p.try_wait().is_empty());
    std::latch started(1);
    auto waiter = tether_test::run_async([&] {
      started.count_down();
      auto r = p.wait_for(60s);
      return r && r->is(q);
    });
    started.wait();
    std::this_thread::sleep_for(tether_test::park_settle);
    std::atomic<bool> pushed{false};
    std::thread pusher([&] { pushed = bool(h.push(5)); });
    pusher.join();
    CHECK(pushed.load());
    CHECK(tether_test::finish_or_abort(waiter, "poller parked in wait_for()"));
    auto v = q.try_pop();
    REQUIRE(v);
    CHECK(*v == 5);
    CHECK(p.try_wait().is_empty());
  }
  SECTION("one-shot select_for") {
    mpsc_queue<int> a;
    mpsc_queue<int> b;
    auto hb = b.make_producer();
    std::atomic<bool> pushed{false};
    std::thread pusher([&] {
      std::this_thread::sleep_for(tether_test::park_settle);
      pushed = bool(hb.push(9));
    });
    auto r = tether::select_for(60s, a, b);
    pusher.join();
    CHECK(pushed.load());
    REQUIRE(r);
    CHECK(*r == 1);
    auto v = b.try_pop();
    REQUIRE(v);
    CHECK(*v == 9);
  }
  SECTION("a poller's handler receives every item of three handle threads") {
    constexpr std::size_t producers = 3;
    constexpr std::uint64_t per_producer = 2000;
    mpsc_queue<std::uint64_t> q;
    order_checker check(producers);
    bool closed_seen = false;
    tether::poller p;
    p.on(q, [&](std::uint64_t v) { check(v); }, [&] { closed_seen = true; });
    std::atomic<std::uint64_t> refused{0};
    std::atomic<std::size_t> running{producers};
    tether_test::thread_group threads;
    for (std::size_t i = 0; i < producers; ++i)
      threads.spawn([&, i] {
        auto h = q.make_producer();
        refused.fetch_add(push_tagged(h, i, 0, per_producer));
        if (running.fetch_sub(1) == 1) q.close();
      });
    std::uint64_t runs = 0;
    while (!closed_seen) {
      auto r = p.run_one_for(30s);
      REQUIRE(r);
      ++runs;
    }
    threads.join();
    INFO(check.first_error());
    CHECK(refused.load() == 0);
    CHECK(runs == producers * per_producer + 1);  // one run per item, one for closed
    CHECK(check.errors() == 0);
    CHECK(check.count() == producers * per_producer);
    CHECK(check.sum() == tether_test::expected_item_sum(producers, per_producer));
    CHECK(p.size() == 0);
  }
  SECTION("close wakes a parked poller on a queue with lanes") {
    mpsc_queue<int> q;
    auto h = q.make_producer();
    REQUIRE(h.push(1));
    REQUIRE(*q.try_pop() == 1);
    tether::poller p;
    p.add(q);
    std::latch started(1);
    auto waiter = tether_test::run_async([&] {
      started.count_down();
      auto r = p.wait_for(60s);
      return r && r->is(q);
    });
    started.wait();
    std::this_thread::sleep_for(tether_test::park_settle);
    CHECK(q.close());
    CHECK(tether_test::finish_or_abort(waiter, "poller parked in wait_for()"));
    CHECK(q.try_pop().is_closed());
  }
}

TEST_CASE("mpsc_queue destroys items left in lanes exactly once", "[mpsc_queue][producer][drops]") {
  const long live_before = counted::live.load();
  const long twice_before = counted::destroyed_twice.load();
  SECTION("never popped, three handles") {
    mpsc_queue<counted> q;
    auto a = q.make_producer();
    auto b = q.make_producer();
    auto c = q.make_producer();
    for (std::uint64_t i = 0; i < 1000; ++i) {
      REQUIRE(a.push(counted(i)));
      REQUIRE(b.emplace(i));
      REQUIRE(c.push(counted(i)));
    }
    CHECK(counted::live.load() - live_before == 3000);
  }
  SECTION("partly popped across several blocks; ring items too") {
    mpsc_queue<counted> q;
    auto h = q.make_producer();
    for (std::uint64_t i = 0; i < 3000; ++i) REQUIRE(h.emplace(i));
    for (std::uint64_t i = 0; i < 1700; ++i) {
      auto r = q.try_pop();
      REQUIRE(r);
      REQUIRE(r->value == i);
    }
    for (std::uint64_t i = 0; i < 500; ++i) REQUIRE(q.emplace(i));
    CHECK(counted::live.load() - live_before == 1800);
  }
  SECTION("popped up to every position of the first blocks, and emptied") {
    // Wide items, so a few hundred span several blocks whatever the block size: the head is
    // left at every slot offset, block boundaries and an emptied lane included.
    constexpr std::uint64_t n = 300;
    std::uint64_t wrong_live = 0;
    for (std::uint64_t popped = 0; popped <= n; ++popped) {
      {
        mpsc_queue<wide_counted> q;
        auto h = q.make_producer();
        for (std::uint64_t i = 0; i < n; ++i) REQUIRE(h.emplace(i));
        for (std::uint64_t i = 0; i < popped; ++i) {
          auto r = q.try_pop();
          REQUIRE(r);
          REQUIRE(r->c.value == i);
        }
        wrong_live += counted::live.load() - live_before == static_cast<long>(n - popped) ? 0 : 1;
      }
      wrong_live += counted::live.load() == live_before ? 0 : 1;
    }
    CHECK(wrong_live == 0);
  }
  SECTION("dropped handles, one lane reused, items of both left") {
    mpsc_queue<counted> q;
    {
      auto a = q.make_producer();
      for (std::uint64_t i = 0; i < 1500; ++i) REQUIRE(a.emplace(i));
    }
    auto b = q.make_producer();
    for (std::uint64_t i = 0; i < 700; ++i) REQUIRE(b.emplace(i));
    for (std::uint64_t i = 0; i < 100; ++i) REQUIRE(q.try_pop());
    CHECK(counted::live.load() - live_before == 2100);
  }
  SECTION("closed with items left; refused items stay with the caller") {
    mpsc_queue<counted> q;
    auto h = q.make_producer();
    for (std::uint64_t i = 0; i < 10; ++i) REQUIRE(h.push(counted(i)));
    q.close();
    counted rejected(99);
    CHECK_FALSE(h.push(std::move(rejected)));
    CHECK(rejected.value == 99);
    CHECK(counted::live.load() - live_before == 11);
  }
  SECTION("with thrown slots left in a lane") {
    mpsc_queue<fragile> q;
    auto h = q.make_producer();
    std::uint64_t threw = 0;
    for (std::uint64_t i = 0; i < 1500; ++i) {
      try {
        (void)h.emplace(i, i % 3 == 0);
      } catch (const std::runtime_error&) {
        ++threw;
      }
    }
    CHECK(threw == 500);
    auto r = q.try_pop();
    REQUIRE(r);
    CHECK(r->c.value == 1);
    CHECK(counted::live.load() - live_before == 1000);  // 999 queued + r
  }
  CHECK(counted::live.load() == live_before);
  CHECK(counted::destroyed_twice.load() == twice_before);
}

// ---- a throwing move inside a pop (tests/support/queue_fault.hpp) --------------------------

TEST_CASE("mpsc_queue every pop form leaves an item whose move throws queued, and moves once", "[mpsc_queue][exceptions][move]") {
  using tether_test::fault_item;
  using namespace std::chrono_literals;
  const bool via_handle = GENERATE(false, true);  // the ring, or a producer handle's lane
  CAPTURE(via_handle);
  tether::mpsc_queue<fault_item> q;
  auto h = q.make_producer();
  auto push = [&](fault_item&& v) { return via_handle ? h.push(std::move(v)) : q.push(std::move(v)); };
  auto try_pop = [&] { return q.try_pop(); };
  SECTION("try_pop") { tether_test::check_single_pop_keeps_item(push, try_pop, try_pop); }
  SECTION("pop") { tether_test::check_single_pop_keeps_item(push, [&] { return q.pop(); }, try_pop); }
  SECTION("pop_for") { tether_test::check_single_pop_keeps_item(push, [&] { return q.pop_for(10s); }, try_pop); }
  SECTION("pop_until") {
    tether_test::check_single_pop_keeps_item(push, [&] { return q.pop_until(std::chrono::system_clock::now() + 10s); }, try_pop);
  }
  SECTION("try_pop_bulk") {
    tether_test::check_bulk_keeps_item(
        push, [&](std::vector<fault_item>& out, std::size_t max) { return q.try_pop_bulk(std::back_inserter(out), max); }, try_pop);
  }
  SECTION("pop_bulk") {
    tether_test::check_bulk_keeps_item(
        push, [&](std::vector<fault_item>& out, std::size_t max) { return q.pop_bulk(std::back_inserter(out), max); }, try_pop);
  }
  SECTION("pop_bulk_for") {
    tether_test::check_bulk_keeps_item(
        push, [&](std::vector<fault_item>& out, std::size_t max) { return q.pop_bulk_for(std::back_inserter(out), max, 10s); },
        try_pop);
  }
  SECTION("try_pop_each") {
    tether_test::check_each_keeps_item(push, [&](auto& f) { return q.try_pop_each(f); }, try_pop);
  }
  CHECK(fault_item::live.load() == 0);
}

TEST_CASE("mpsc_queue after close and at destruction, an item whose move threw is still delivered or destroyed once", "[mpsc_queue][exceptions][move]") {
  using tether_test::fault_item;
  fault_item::reset_counters();
  {
    tether::mpsc_queue<fault_item> q;
    auto h = q.make_producer();
    for (std::uint64_t v = 1; v <= 3; ++v) REQUIRE(q.push(fault_item(v)));
    for (std::uint64_t v = 4; v <= 6; ++v) REQUIRE(h.push(fault_item(v)));
    CHECK(q.close());
    fault_item::arm_move_throw(1);
    CHECK_THROWS_AS(q.pop(), tether_test::item_fault);
    fault_item::disarm();
    std::uint64_t sum = 0, count = 0;
    while (auto r = q.pop()) {
      CHECK(r->intact(r->value));
      sum += r->value;
      ++count;
      if (count == 3) break;  // leave three queued for the destructor
    }
    CHECK(count == 3);
    CHECK(fault_item::live.load() == 3);
    fault_item::arm_move_throw(1);
    CHECK_THROWS_AS(q.try_pop(), tether_test::item_fault);  // still three queued
    fault_item::disarm();
    CHECK(fault_item::live.load() == 3);
    CHECK(q.size_approx() == 3);
    CHECK((sum == 1 + 2 + 3 || sum == 4 + 5 + 6));  // one source at a time: the ring or the lane
  }
  CHECK(fault_item::live.load() == 0);  // the destructor destroyed the three left, once each
  CHECK(fault_item::destroyed_twice.load() == 0);
}

TEST_CASE("mpsc_queue shrink_to_fit frees the blocks pooled after a burst and the queue keeps working", "[mpsc_queue][memory]") {
  tether::mpsc_queue<std::uint64_t> q;
  auto h = q.make_producer();
  CHECK(q.shrink_to_fit() == 0);  // nothing pooled yet
  // A burst several blocks deep on the ring and on the lane, then popped: the emptied blocks
  // go to the pools.
  constexpr std::uint64_t burst = 20000;
  std::uint64_t sum = 0;
  for (std::uint64_t i = 1; i <= burst; ++i) {
    REQUIRE(q.push(i));
    REQUIRE(h.push(burst + i));
  }
  std::uint64_t count = 0;
  while (auto v = q.try_pop()) {
    sum += *v;
    ++count;
  }
  CHECK(count == 2 * burst);
  CHECK(sum == (2 * burst) * (2 * burst + 1) / 2);
  const std::size_t freed = q.shrink_to_fit();
  // About 19 emptied blocks of about 16 KiB on each source, all within the pools' limits.
  CHECK(freed >= 30 * 16000);
  CHECK(freed <= 2 * (burst / 1000 + 2) * 16500);
  CHECK(q.shrink_to_fit() == 0);  // the pools are empty now
  // Still a working queue: the next burst allocates again.
  for (std::uint64_t i = 1; i <= burst; ++i) REQUIRE((i % 2 == 0 ? q.push(i) : h.push(i)));
  std::vector<std::uint64_t> out;
  while (q.try_pop_bulk(std::back_inserter(out), 1000) != 0) {
  }
  CHECK(out.size() == burst);
  std::uint64_t sum2 = 0;
  for (auto v : out) sum2 += v;
  CHECK(sum2 == burst * (burst + 1) / 2);
}

// Plain push keeps the order of pushes across threads whenever one push happens-before the
// other: here a token passes between threads (a release store, an acquire load), and every
// holder pushes the next number before passing the token on, so the pushes form one
// happens-before chain across four threads while the consumer pops concurrently.
TEST_CASE("mpsc_queue plain pushes from different threads come out in happens-before order", "[mpsc_queue][order]") {
  constexpr int threads = 4;
  const std::uint64_t total = tether_test::scaled(40000, 4000);
  tether::mpsc_queue<std::uint64_t> q;
  std::atomic<std::uint64_t> turn{0};  // the next number to push; its holder is turn % threads
  std::uint64_t out_of_order = 0, popped = 0;
  std::atomic<int> refused{0};
  std::thread consumer([&] {
    std::uint64_t expect = 0;
    while (expect < total) {
      auto r = q.pop_for(std::chrono::seconds(10));
      if (!r) break;
      out_of_order += *r != expect;
      expect = *r + 1;
      ++popped;
    }
  });
  {
    tether_test::thread_group producers;
    for (int t = 0; t < threads; ++t)
      producers.spawn([&, t] {
        for (;;) {
          std::uint64_t next = turn.load(std::memory_order_acquire);
          while (next < total && next % threads != static_cast<std::uint64_t>(t)) {
            std::this_thread::yield();
            next = turn.load(std::memory_order_acquire);
          }
          if (next >= total) return;
          if (!q.push(next)) refused.fetch_add(1);
          turn.store(next + 1, std::memory_order_release);  // release: pairs with the acquire loads above,
          // so this push happens-before the next holder's
        }
      });
  }
  consumer.join();
  CHECK(refused == 0);
  CHECK(popped == total);
  CHECK(out_of_order == 0);
}

// ---- a producer stalled between claiming its slot and publishing it ------------------------
//
// An item whose constructor waits on a gate stands for a producer preempted mid-push: its
// slot is claimed (in index order) but not published until the gate opens.
namespace {
struct stall_gate {
  std::atomic<bool> entered{false};
  std::atomic<bool> open{false};
  bool throw_on_open = false;
  void wait_entered() const {
    while (!entered.load(std::memory_order_acquire)) std::this_thread::yield();
  }
  void release() {
    open.store(true, std::memory_order_release);
    open.notify_all();
  }
};

struct stall_item {
  std::uint64_t v;
  explicit stall_item(std::uint64_t x) : v(x) { ++live(); }
  stall_item(std::uint64_t x, stall_gate& g) : v(x) {
    g.entered.store(true, std::memory_order_release);
    g.open.wait(false, std::memory_order_acquire);
    if (g.throw_on_open) throw std::runtime_error("stall_item: constructor threw");
    ++live();
  }
  stall_item(stall_item&& o) noexcept : v(o.v) { ++live(); }
  stall_item& operator=(stall_item&& o) noexcept {
    v = o.v;
    return *this;
  }
  ~stall_item() { --live(); }
  static std::atomic<int>& live() {
    static std::atomic<int> n{0};
    return n;
  }
};

// A thread whose push of v stalls in the constructor until land(); constructed once the
// slot is claimed. land() returns the push's outcome: 1 ok, 0 refused, -1 the constructor
// threw (throw_on_open).
struct stalled_push {
  stall_gate gate;
  int outcome = 2;
  std::thread thread;

  stalled_push(tether::mpsc_queue<stall_item>& q, std::uint64_t v, bool throw_on_open = false) {
    gate.throw_on_open = throw_on_open;
    thread = std::thread([this, &q, v] {
      try {
        outcome = q.emplace(v, gate) ? 1 : 0;
      } catch (const std::runtime_error&) {
        outcome = -1;
      }
    });
    gate.wait_entered();
  }
  stalled_push(const stalled_push&) = delete;
  stalled_push& operator=(const stalled_push&) = delete;
  ~stalled_push() {
    if (thread.joinable()) land();
  }
  int land() {
    gate.release();
    thread.join();
    return outcome;
  }
};

std::vector<std::uint64_t> drain_ready(tether::mpsc_queue<stall_item>& q) {
  std::vector<std::uint64_t> out;
  while (auto r = q.try_pop()) out.push_back(r->v);
  return out;
}

std::vector<std::uint64_t> iota_values(std::uint64_t from, std::uint64_t to) {
  std::vector<std::uint64_t> v;
  for (std::uint64_t i = from; i < to; ++i) v.push_back(i);
  return v;
}
}  // namespace

// Plain pushes share one ring read in slot order: a slot claimed but not yet written holds
// the items claimed after it until it lands (then they all come, in order), and nothing is
// lost or reported closed meanwhile.
TEST_CASE("mpsc_queue a stalled producer's slot holds the items behind it until it lands, then all come in order", "[mpsc_queue][stall]") {
  {
    tether::mpsc_queue<stall_item> q;
    stalled_push stalled(q, 0);
    // Several blocks' worth behind the stalled slot.
    constexpr std::uint64_t behind = 5000;
    for (std::uint64_t i = 1; i <= behind; ++i) REQUIRE(q.emplace(i));
    CHECK(q.try_pop().is_empty());
    CHECK(q.pop_for(std::chrono::milliseconds(10)).is_timeout());
    CHECK(q.size_approx() == behind + 1);
    CHECK(stalled.land() == 1);
    CHECK(drain_ready(q) == iota_values(0, behind + 1));
    CHECK(q.size_approx() == 0);
  }
  CHECK(stall_item::live() == 0);
}

TEST_CASE("mpsc_queue a stalled slot whose constructor then throws is skipped", "[mpsc_queue][stall][exceptions]") {
  tether::mpsc_queue<stall_item> q;
  stalled_push stalled(q, 0, true);
  REQUIRE(q.emplace(std::uint64_t{1}));
  REQUIRE(q.emplace(std::uint64_t{2}));
  CHECK(q.try_pop().is_empty());
  CHECK(stalled.land() == -1);
  CHECK(drain_ready(q) == std::vector<std::uint64_t>{1, 2});
  CHECK(q.size_approx() == 0);
}

TEST_CASE("mpsc_queue a consumer parked on a stalled slot wakes when it lands", "[mpsc_queue][stall][blocking]") {
  tether::mpsc_queue<stall_item> q;
  stalled_push stalled(q, 0);
  REQUIRE(q.emplace(std::uint64_t{42}));
  std::vector<std::uint64_t> got;
  std::thread consumer([&] {
    std::vector<stall_item> out;
    while (out.size() < 2 && q.pop_bulk_for(std::back_inserter(out), 8, std::chrono::seconds(10)) != 0) {
    }
    for (auto& i : out) got.push_back(i.v);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // most likely parked by now
  CHECK(stalled.land() == 1);
  consumer.join();
  CHECK(got == std::vector<std::uint64_t>{0, 42});
}

TEST_CASE("mpsc_queue closed with a stalled slot: not closed until it lands, then everything, then closed", "[mpsc_queue][stall][close]") {
  tether::mpsc_queue<stall_item> q;
  stalled_push stalled(q, 0);
  REQUIRE(q.emplace(std::uint64_t{1}));
  CHECK(q.close());
  CHECK(!q.emplace(std::uint64_t{2}));
  CHECK(q.try_pop().is_empty());  // not closed: a push is in flight
  CHECK(q.pop_for(std::chrono::milliseconds(20)).is_timeout());
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    stalled.gate.release();
  });
  auto r = q.pop();  // parked until the stalled push lands
  REQUIRE(r);
  CHECK(r->v == 0);
  r = q.pop();
  REQUIRE(r);
  CHECK(r->v == 1);
  CHECK(q.pop().is_closed());
  opener.join();
  CHECK(stalled.land() == 1);
}

TEST_CASE("mpsc_queue destroyed after a stalled push landed destroys each item once", "[mpsc_queue][stall][drops]") {
  {
    tether::mpsc_queue<stall_item> q;
    stalled_push stalled(q, 0);
    for (std::uint64_t i = 1; i <= 3; ++i) REQUIRE(q.emplace(i));
    REQUIRE(stalled.land() == 1);
    auto r = q.try_pop();
    REQUIRE(r);
    CHECK(r->v == 0);
    CHECK(stall_item::live() == 4);  // 1, 2, 3 queued and the one popped
  }
  CHECK(stall_item::live() == 0);
}
