// Unit tests for tether::detail::task, the executor's queued callable: small callables stay
// inline (no allocation), large / over-aligned / throwing-move ones go to the heap, move-only
// captures work, moves transfer ownership, and every callable is destroyed exactly once.
#include <tether/detail/executor/task.hpp>

#include <array>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "catch.hpp"
#include "test_support.hpp"

using tether::detail::task;
using tether_test::counted;

TEST_CASE("task: small callables are stored inline, large ones on the heap", "[task]") {
  int hits = 0;
  task small([&hits] { ++hits; });
  CHECK(small.is_inline());
  small();
  CHECK(hits == 1);

  std::array<char, 200> big{};
  big[199] = 7;
  int seen = 0;
  task large([big, &seen] { seen = big[199]; });
  CHECK_FALSE(large.is_inline());
  large();
  CHECK(seen == 7);

  struct alignas(64) over_aligned {
    int* out;
    void operator()() const { *out = 64; }
  };
  task aligned(over_aligned{&seen});
  CHECK_FALSE(aligned.is_inline());
  aligned();
  CHECK(seen == 64);

  struct throwing_move {
    int* out;
    throwing_move(int* o) : out(o) {}
    throwing_move(throwing_move&& o) noexcept(false) : out(o.out) {}
    void operator()() { *out = 3; }
  };
  task heap(throwing_move{&seen});
  CHECK_FALSE(heap.is_inline());
  heap();
  CHECK(seen == 3);
}

TEST_CASE("task: move-only captures, moves and exactly-once destruction", "[task]") {
  const long before = counted::live.load();
  {
    auto p = std::make_unique<int>(5);
    int out = 0;
    task t([p = std::move(p), c = counted(1), &out] { out = *p; });
    CHECK(t.is_inline());
    task moved(std::move(t));
    CHECK_FALSE(t);  // NOLINT: moved-from is empty
    CHECK(moved);
    task assigned;
    assigned = std::move(moved);
    assigned();
    CHECK(out == 5);

    std::array<char, 100> pad{};
    task big([pad, c = counted(2)] { (void)pad; });
    task big_moved(std::move(big));
    big_moved.reset();
    CHECK_FALSE(big_moved);
  }
  CHECK(counted::live.load() == before);
  CHECK(counted::destroyed_twice.load() == 0);
}

TEST_CASE("task: rvalue-qualified call operators and internal marking", "[task]") {
  struct once {
    std::string* out;
    void operator()() && { *out = "called as rvalue"; }
  };
  std::string s;
  task t(once{&s});
  t();
  CHECK(s == "called as rvalue");
  CHECK_FALSE(t.is_internal());
  task internal(tether::detail::internal_task, std::in_place_type<once>, once{&s});
  CHECK(internal.is_internal());
  task empty;
  CHECK_FALSE(empty.is_internal());
  CHECK_FALSE(empty);
}
