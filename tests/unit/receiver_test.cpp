// Unit tests for tether::receiver: a receive-only view of an mpsc_queue's consumer side -
// every pop form, is_closed / size_approx, copies sharing the view, a receiver of a queue fed
// by producer handles, and the throwing-move guarantee through the view.
#include <tether/receiver.hpp>

#include <chrono>
#include <cstdint>
#include <iterator>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include "catch.hpp"
#include "queue_fault.hpp"

using namespace std::chrono_literals;

// Receive-only: no push, no close.
template <class R>
concept can_push = requires(R r) { r.push(1); };
template <class R>
concept can_close = requires(R r) { r.close(); };
static_assert(!can_push<tether::receiver<int>>);
static_assert(!can_close<tether::receiver<int>>);
static_assert(std::is_nothrow_copy_constructible_v<tether::receiver<int>>);
static_assert(std::is_same_v<decltype(std::declval<tether::receiver<int>&>().pop()), tether::pop_result<int>>);

TEST_CASE("receiver pops what the queue was given, in every form", "[receiver]") {
  tether::mpsc_queue<int> q;
  tether::receiver<int> r(q);
  CHECK(r.try_pop().is_empty());
  CHECK(r.pop_for(1ms).is_timeout());
  CHECK(r.pop_until(std::chrono::system_clock::now() + 1ms).is_timeout());
  std::vector<int> out;
  CHECK(r.pop_bulk_for(std::back_inserter(out), 4, 1ms) == 0);
  CHECK(r.pop_bulk_until(std::back_inserter(out), 4, std::chrono::steady_clock::now()) == 0);

  for (int i = 1; i <= 10; ++i) REQUIRE(q.push(i));
  CHECK(r.size_approx() == 10);
  CHECK(*r.try_pop() == 1);
  CHECK(*r.pop() == 2);
  CHECK(*r.pop_for(1s) == 3);
  CHECK(*r.pop_until(std::chrono::steady_clock::now() + 1s) == 4);
  CHECK(r.try_pop_bulk(std::back_inserter(out), 2) == 2);
  CHECK(r.pop_bulk(std::back_inserter(out), 1) == 1);
  CHECK(r.pop_bulk_for(std::back_inserter(out), 1, 1s) == 1);
  CHECK(r.pop_bulk_until(std::back_inserter(out), 1, std::chrono::steady_clock::now() + 1s) == 1);
  CHECK(out == std::vector<int>{5, 6, 7, 8, 9});
  int sum = 0;
  CHECK(r.try_pop_each([&](int&& v) { sum += v; }) == 1);
  CHECK(sum == 10);
  CHECK(r.size_approx() == 0);

  CHECK_FALSE(r.is_closed());
  REQUIRE(q.push(11));
  CHECK(q.close());
  CHECK(r.is_closed());
  CHECK(*r.pop() == 11);  // closed: still delivers what was pushed before
  CHECK(r.pop().is_closed());
  CHECK(r.try_pop().is_closed());
  CHECK(r.pop_bulk(std::back_inserter(out), 4) == 0);
}

TEST_CASE("receiver copies are one view of one queue", "[receiver]") {
  tether::mpsc_queue<std::unique_ptr<int>> q;
  tether::receiver<std::unique_ptr<int>> a(q);
  auto b = a;  // cheap copy: the same queue
  CHECK(a == b);
  tether::mpsc_queue<std::unique_ptr<int>> other;
  CHECK_FALSE(a == tether::receiver<std::unique_ptr<int>>(other));
  REQUIRE(q.push(std::make_unique<int>(1)));
  REQUIRE(q.push(std::make_unique<int>(2)));
  CHECK(**a.try_pop() == 1);
  CHECK(**b.try_pop() == 2);
  CHECK(a.try_pop().is_empty());
  CHECK(tether::detail::receiver_queue(b).size_approx() == 0);
  CHECK(&tether::detail::receiver_queue(a) == &q);
}

TEST_CASE("receiver parked in pop() wakes on a push from another thread and on close", "[receiver][blocking]") {
  tether::mpsc_queue<std::uint64_t> q;
  tether::receiver<std::uint64_t> r(q);
  constexpr std::uint64_t n = 20000;
  std::thread producer([&q] {
    auto h = q.make_producer();
    for (std::uint64_t i = 1; i <= n; ++i)
      if (!h.push(i)) return;
    (void)q.close();
  });
  std::uint64_t sum = 0, count = 0, last = 0;
  bool in_order = true;
  while (auto v = r.pop()) {
    in_order = in_order && *v == last + 1;
    last = *v;
    sum += *v;
    ++count;
  }
  producer.join();
  CHECK(in_order);
  CHECK(count == n);
  CHECK(sum == n * (n + 1) / 2);
}

TEST_CASE("receiver keeps an item whose move throws queued", "[receiver][exceptions]") {
  using tether_test::fault_item;
  tether::mpsc_queue<fault_item> q;
  tether::receiver<fault_item> r(q);
  auto push = [&](fault_item&& v) { return q.push(std::move(v)); };
  auto try_pop = [&] { return r.try_pop(); };
  SECTION("pop") { tether_test::check_single_pop_keeps_item(push, [&] { return r.pop(); }, try_pop); }
  SECTION("pop_for") { tether_test::check_single_pop_keeps_item(push, [&] { return r.pop_for(10s); }, try_pop); }
  SECTION("try_pop_bulk") {
    tether_test::check_bulk_keeps_item(
        push, [&](std::vector<fault_item>& out, std::size_t max) { return r.try_pop_bulk(std::back_inserter(out), max); }, try_pop);
  }
  SECTION("try_pop_each") {
    tether_test::check_each_keeps_item(push, [&](auto& f) { return r.try_pop_each(f); }, try_pop);
  }
  CHECK(fault_item::live.load() == 0);
}
