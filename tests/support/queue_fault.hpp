// Throwing-move checks shared by the queue and channel tests: whatever pop form meets a
// fault_item whose move throws, the item must stay queued, intact and next in line; every
// pop moves an item exactly once; counts and sums stay exact and nothing leaks.
//
// A "source" here is anything with push(fault_item&&) -> push_result-like and the pop forms
// under test; the tests adapt queues, receivers and channel endpoints to it with lambdas.
// Single-threaded: Catch2 assertions are used directly.
#pragma once

#include <chrono>
#include <cstdint>
#include <iterator>
#include <vector>

#include "catch.hpp"
#include "fault_items.hpp"

namespace tether_test {

// Pushes values first..last (inclusive) with push(fault_item&&); returns their sum.
template <class Push>
std::uint64_t push_range(Push&& push, std::uint64_t first, std::uint64_t last) {
  std::uint64_t sum = 0;
  for (std::uint64_t v = first; v <= last; ++v) {
    REQUIRE(static_cast<bool>(push(fault_item(v))));
    sum += v;
  }
  return sum;
}

// For one single-item pop form pop() -> pop_result<fault_item>, with items 1..5 queued:
//   - a pop whose (only) move throws propagates item_fault and leaves item 1 queued, intact;
//   - a successful pop moves exactly once (the second move from now on would throw: it
//     must not happen inside the pop);
//   - then the rest come out in order; count, sum, live instances exact.
// try_pop() is the plain non-blocking pop of the same source, used to check what is left.
template <class Push, class Pop, class TryPop>
void check_single_pop_keeps_item(Push push, Pop pop, TryPop try_pop) {
  fault_item::reset_counters();
  const long live0 = fault_item::live.load();
  const std::uint64_t sum = push_range(push, 1, 5);
  CHECK(fault_item::live.load() - live0 == 5);
  fault_item::reset_counters();

  // 1. The move into the result throws: the item stays and is still next.
  fault_item::arm_move_throw(1);
  CHECK_THROWS_AS(pop(), item_fault);
  CHECK(fault_item::throws.load() == 1);
  CHECK(fault_item::live.load() - live0 == 5);

  // 2. Armed for the second move: a pop makes exactly one, so it succeeds and the countdown
  //    is left at 1 (the next move throws).
  fault_item::arm_move_throw(2);
  std::uint64_t got = 0, count = 0;
  {
    auto r = pop();
    REQUIRE(r.has_value());
    CHECK(r->intact(1));
    CHECK(fault_item::moves.load() == 1);
    got += r->value;
    ++count;
  }
  CHECK(fault_item::move_countdown.load() == 1);
  CHECK_THROWS_AS(pop(), item_fault);  // item 2's move throws: it stays
  CHECK(fault_item::throws.load() == 2);
  fault_item::disarm();

  // 3. The rest, in order, each intact.
  for (std::uint64_t expect = 2; expect <= 5; ++expect) {
    auto r = try_pop();
    REQUIRE(r.has_value());
    CHECK(r->intact(expect));
    got += r->value;
    ++count;
  }
  CHECK(try_pop().is_empty());
  CHECK(count == 5);
  CHECK(got == sum);
  CHECK(fault_item::live.load() == live0);
  CHECK(fault_item::destroyed_twice.load() == 0);
}

// For a bulk form bulk(out_vector&, max) -> count, with items 1..6 queued: the third
// item's move throws; the two before it are taken (in out), the third stays queued; the
// next bulk call takes 3..6. Counts, sums and live instances exact.
template <class Push, class Bulk, class TryPop>
void check_bulk_keeps_item(Push push, Bulk bulk, TryPop try_pop) {
  fault_item::reset_counters();
  const long live0 = fault_item::live.load();
  const std::uint64_t sum = push_range(push, 1, 6);
  std::vector<fault_item> out;
  out.reserve(16);  // no reallocation: every move below is a queue's hand-over
  fault_item::reset_counters();
  fault_item::arm_move_throw(3);
  CHECK_THROWS_AS(bulk(out, 10), item_fault);
  fault_item::disarm();
  REQUIRE(out.size() == 2);
  CHECK(out[0].intact(1));
  CHECK(out[1].intact(2));
  CHECK(bulk(out, 10) == 4);
  REQUIRE(out.size() == 6);
  std::uint64_t got = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    CHECK(out[i].intact(i + 1));
    got += out[i].value;
  }
  CHECK(got == sum);
  CHECK(try_pop().is_empty());
  out.clear();
  CHECK(fault_item::live.load() == live0);
  CHECK(fault_item::destroyed_twice.load() == 0);
}

// try_pop_each(f, max): the move out of the slot (before f sees the item) throws on the
// second item: the first was handed to f, the second stays queued; then the rest.
template <class Push, class Each, class TryPop>
void check_each_keeps_item(Push push, Each each, TryPop try_pop) {
  fault_item::reset_counters();
  const long live0 = fault_item::live.load();
  const std::uint64_t sum = push_range(push, 1, 4);
  std::uint64_t got = 0, count = 0;
  auto take = [&](fault_item&& v) {
    CHECK(v.intact(count + 1));
    got += v.value;
    ++count;
  };
  fault_item::reset_counters();
  fault_item::arm_move_throw(2);
  CHECK_THROWS_AS(each(take), item_fault);
  fault_item::disarm();
  CHECK(count == 1);
  CHECK(each(take) == 3);
  CHECK(count == 4);
  CHECK(got == sum);
  CHECK(try_pop().is_empty());
  CHECK(fault_item::live.load() == live0);
  CHECK(fault_item::destroyed_twice.load() == 0);
}

}  // namespace tether_test
