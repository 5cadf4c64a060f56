// Items whose moves and copies throw, sent through every push, pop, bulk, try_pop_each,
// close and destroy path of the queues, the channel endpoints and the router.
//
// After each throw: a push hands its item back untouched (the caller retries it), a pop leaves
// the item queued (the next pop returns it), and in the end every item pushed comes out
// exactly once and in order; no instance leaks and none is destroyed twice
// (tether_test::fault_item counts them). The router runs in forked children (fork_runner.hpp):
// a throw on the router's or a subshell's thread that ended the process would end this
// program too.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <tether.hpp>

#include "catch.hpp"
#include "fault_items.hpp"
#include "fork_runner.hpp"

namespace {

using tether_test::fault_item;
using tether_test::item_fault;
using namespace std::chrono_literals;

// Every instance made in a test is gone at its end, each destroyed once.
struct leak_guard {
  leak_guard() {
    fault_item::reset_counters();
    REQUIRE(fault_item::live.load() == 0);
    REQUIRE(fault_item::destroyed_twice.load() == 0);
  }
  ~leak_guard() { fault_item::disarm(); }
  static void check() {
    CHECK(fault_item::live.load() == 0);
    CHECK(fault_item::destroyed_twice.load() == 0);
  }
};

constexpr std::uint64_t items = 1100;  // crosses blocks of both queue kinds' lanes and ring

// Pushes 0..n-1 with push_one(item&&) -> push_result / bool; every third push's move throws
// (every seventh a copy, through push_copy) and is retried. Returns how many pushes threw.
template <class Push, class PushCopy>
std::uint64_t push_all_with_throws(std::uint64_t n, Push push_one, PushCopy push_copy) {
  std::uint64_t threw = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    fault_item it(i);
    if (i % 7 == 3) {
      fault_item::arm_copy_throw(1);
      CHECK_THROWS_AS(push_copy(static_cast<const fault_item&>(it)), item_fault);
      ++threw;
      CHECK(it.intact(i));  // the caller still has it
    } else if (i % 3 == 0) {
      fault_item::arm_move_throw(1);
      CHECK_THROWS_AS(push_one(std::move(it)), item_fault);
      ++threw;
      CHECK(it.intact(i));
    }
    fault_item::disarm();
    const bool ok = static_cast<bool>(push_one(std::move(it)));
    CHECK(ok);
  }
  return threw;
}

// Takes every item with take(), whose moves throw on a rotating schedule; each call that threw
// must leave its item queued. take() returns the item's value, or nullopt at the end.
template <class Take>
std::vector<std::uint64_t> take_all_with_throws(Take take, std::uint64_t& threw) {
  std::vector<std::uint64_t> seen;
  for (std::uint64_t round = 0;; ++round) {
    fault_item::arm_move_throw(static_cast<long>(round % 4));  // 0: no throw; 1..3: the k-th move
    std::optional<std::uint64_t> v;
    try {
      v = take();
    } catch (const item_fault&) {
      ++threw;
      continue;
    }
    fault_item::disarm();
    if (!v) break;
    seen.push_back(*v);
    if (round > 20 * items) FAIL("take_all_with_throws does not end");
  }
  fault_item::disarm();
  return seen;
}

// 0, 1, ..., n-1 exactly.
void check_sequence(const std::vector<std::uint64_t>& seen, std::uint64_t n) {
  CHECK(seen.size() == n);
  std::uint64_t wrong = 0;
  for (std::uint64_t i = 0; i < seen.size(); ++i) wrong += seen[i] == i ? 0 : 1;
  CHECK(wrong == 0);
}

// Takes items with a bulk call into a reserved vector (no reallocation); its
// push_back's move throws on a rotating schedule. Returns what came out.
template <class Bulk>
std::vector<std::uint64_t> bulk_all_with_throws(Bulk bulk, std::uint64_t& threw) {
  std::vector<fault_item> out;
  out.reserve(2 * items);
  for (std::uint64_t round = 0;; ++round) {
    fault_item::arm_move_throw(static_cast<long>(round % 6));
    std::size_t n = 0;
    try {
      n = bulk(std::back_inserter(out));
    } catch (const item_fault&) {
      ++threw;
      continue;
    }
    fault_item::disarm();
    if (n == 0) break;
    if (round > 20 * items) FAIL("bulk_all_with_throws does not end");
  }
  fault_item::disarm();
  std::vector<std::uint64_t> seen;
  for (const fault_item& f : out) seen.push_back(f.value);
  return seen;
}

}  // namespace

// ---- mpsc_queue ------------------------------------------------------------------------------------

TEST_CASE("mpsc_queue: a push whose move or copy throws hands the item back; pops whose move throws leave it queued", "[fault][mpsc_queue]") {
  leak_guard guard;
  {
    tether::mpsc_queue<fault_item> q;
    std::uint64_t push_threw = push_all_with_throws(
        items, [&](fault_item&& v) { return q.push(std::move(v)); }, [&](const fault_item& v) { return q.push(v); });
    CHECK(push_threw > 0);
    CHECK(q.close());
    fault_item rejected(7);
    CHECK_FALSE(q.push(std::move(rejected)));  // closed: handed back untouched
    CHECK(rejected.intact(7));
    std::uint64_t threw = 0;
    std::uint64_t which = 0;
    const auto seen = take_all_with_throws(
        [&]() -> std::optional<std::uint64_t> {
          // try_pop, pop and pop_for in turn
          switch (which++ % 3) {
            case 0:
              if (auto r = q.try_pop()) return r->value;
              break;
            case 1:
              if (auto r = q.pop()) return r->value;
              break;
            default:
              if (auto r = q.pop_for(1s)) return r->value;
              break;
          }
          return std::nullopt;
        },
        threw);
    CHECK(threw > 0);
    check_sequence(seen, items);
  }
  leak_guard::check();
}

TEST_CASE("mpsc_queue: producer handle pushes whose move throws hand the item back", "[fault][mpsc_queue]") {
  leak_guard guard;
  {
    tether::mpsc_queue<fault_item> q;
    auto p = q.make_producer();
    push_all_with_throws(
        items, [&](fault_item&& v) { return p.push(std::move(v)); }, [&](const fault_item& v) { return p.push(v); });
    // emplace: a constructor that throws publishes nothing.
    fault_item::arm_move_throw(1);
    fault_item src(items);
    CHECK_THROWS_AS(p.emplace(std::move(src)), item_fault);
    CHECK(src.intact(items));
    fault_item::disarm();
    CHECK(p.emplace(std::move(src)));
    std::vector<std::uint64_t> seen;
    while (auto r = q.try_pop()) seen.push_back(r->value);
    check_sequence(seen, items + 1);
  }
  leak_guard::check();
}

TEST_CASE("mpsc_queue: bulk pops whose output throws leave the item queued", "[fault][mpsc_queue][bulk]") {
  leak_guard guard;
  {
    tether::mpsc_queue<fault_item> q;
    auto p = q.make_producer();
    for (std::uint64_t i = 0; i < items; ++i) {
      // ring and lane, in runs, so bulk takes cross sources
      const bool ok = static_cast<bool>((i / 100) % 2 == 0 ? q.push(fault_item(i)) : p.push(fault_item(i)));
      REQUIRE(ok);
    }
    q.close();
    std::uint64_t threw = 0, which = 0;
    auto seen = bulk_all_with_throws(
        [&](auto out) -> std::size_t {
          switch (which++ % 3) {
            case 0: return q.try_pop_bulk(out, 37);
            case 1: return q.pop_bulk(out, 37);
            default: return q.pop_bulk_for(out, 37, 1s);
          }
        },
        threw);
    CHECK(threw > 0);
    // Ring and lane interleave; each source keeps its order.
    std::sort(seen.begin(), seen.end());
    check_sequence(seen, items);
  }
  leak_guard::check();
}

TEST_CASE("mpsc_queue: try_pop_each with throwing moves and a throwing callback", "[fault][mpsc_queue][each]") {
  leak_guard guard;
  {
    tether::mpsc_queue<fault_item> q;
    for (std::uint64_t i = 0; i < items; ++i) REQUIRE(q.push(fault_item(i)));
    std::vector<std::uint64_t> seen;
    std::uint64_t lib_threw = 0, cb_threw = 0;
    for (std::uint64_t round = 0; seen.size() < items; ++round) {
      REQUIRE(round < 20 * items);
      fault_item::arm_move_throw(static_cast<long>(round % 5));
      const bool callback_throws = round % 7 == 3;
      try {
        q.try_pop_each(
            [&](fault_item&& it) {
              seen.push_back(it.value);  // handed over: delivered, even if we throw now
              if (callback_throws) throw std::runtime_error("callback");
            },
            9);
      } catch (const item_fault&) {
        ++lib_threw;
      } catch (const std::runtime_error&) {
        ++cb_threw;
      }
      fault_item::disarm();
    }
    CHECK(lib_threw > 0);
    CHECK(cb_threw > 0);
    check_sequence(seen, items);
    CHECK_FALSE(q.try_pop());
  }
  leak_guard::check();
}

TEST_CASE("mpsc_queue: destroying a queue destroys what it holds, after throwing pushes too", "[fault][mpsc_queue][destroy]") {
  leak_guard guard;
  {
    tether::mpsc_queue<fault_item> q;
    auto p = q.make_producer();
    push_all_with_throws(
        items, [&](fault_item&& v) { return q.push(std::move(v)); }, [&](const fault_item& v) { return q.push(v); });
    push_all_with_throws(
        100, [&](fault_item&& v) { return p.push(std::move(v)); }, [&](const fault_item& v) { return p.push(v); });
    for (int i = 0; i < 10; ++i) (void)q.try_pop();
    CHECK(fault_item::live.load() == static_cast<long>(items + 100 - 10));
  }
  leak_guard::check();
}

// ---- bounded_mpsc_queue ----------------------------------------------------------------------------

TEST_CASE("bounded_mpsc_queue: pushes and pops whose moves throw", "[fault][bounded_mpsc_queue]") {
  leak_guard guard;
  {
    tether::bounded_mpsc_queue<fault_item> q(2 * items);
    std::uint64_t which = 0;
    auto push = [&](auto&& v) {
      switch (which++ % 3) {
        case 0: return static_cast<bool>(q.try_push(std::forward<decltype(v)>(v)));
        case 1: return static_cast<bool>(q.push(std::forward<decltype(v)>(v)));
        default: return static_cast<bool>(q.push_for(std::forward<decltype(v)>(v), 1s));
      }
    };
    CHECK(push_all_with_throws(items, push, push) > 0);
    q.close();
    fault_item rejected(3);
    CHECK(q.try_push(std::move(rejected)).is_closed());
    CHECK(rejected.intact(3));
    std::uint64_t threw = 0, kind = 0;
    const auto seen = take_all_with_throws(
        [&]() -> std::optional<std::uint64_t> {
          switch (kind++ % 3) {
            case 0:
              if (auto r = q.try_pop()) return r->value;
              break;
            case 1:
              if (auto r = q.pop()) return r->value;
              break;
            default:
              if (auto r = q.pop_for(1s)) return r->value;
              break;
          }
          return std::nullopt;
        },
        threw);
    CHECK(threw > 0);
    check_sequence(seen, items);
  }
  leak_guard::check();
}

TEST_CASE("bounded_mpsc_queue: bulk and try_pop_each whose moves throw leave the item queued", "[fault][bounded_mpsc_queue][bulk]") {
  leak_guard guard;
  {
    tether::bounded_mpsc_queue<fault_item> q(64);
    std::vector<std::uint64_t> all;
    std::uint64_t next = 0, threw = 0;
    // Rounds of 50 pushes wrap the ring; each round is taken by bulk calls or try_pop_each.
    for (int round = 0; round < 20; ++round) {
      for (int i = 0; i < 50; ++i, ++next) REQUIRE(q.try_push(fault_item(next)));
      if (round % 2 == 0) {
        std::uint64_t which = 0;
        const auto got = bulk_all_with_throws(
            [&](auto out) -> std::size_t { return which++ % 2 == 0 ? q.try_pop_bulk(out, 13) : q.pop_bulk_for(out, 13, 0ms); },
            threw);
        all.insert(all.end(), got.begin(), got.end());
      } else {
        for (std::uint64_t k = 0;; ++k) {
          REQUIRE(k < 1000);
          fault_item::arm_move_throw(static_cast<long>(k % 4));
          std::size_t n = 0;
          try {
            n = q.try_pop_each([&](fault_item&& it) { all.push_back(it.value); }, 11);
          } catch (const item_fault&) {
            ++threw;
            continue;
          }
          fault_item::disarm();
          if (n == 0) break;
        }
      }
    }
    fault_item::disarm();
    CHECK(threw > 0);
    check_sequence(all, next);
  }
  leak_guard::check();
}

TEST_CASE("bounded_mpsc_queue: destroying a queue destroys what it holds", "[fault][bounded_mpsc_queue][destroy]") {
  leak_guard guard;
  {
    // A slot whose move threw is skipped by the consumer: it holds ring room until then.
    tether::bounded_mpsc_queue<fault_item> q(256);
    auto push = [&](auto&& v) { return static_cast<bool>(q.try_push(std::forward<decltype(v)>(v))); };
    push_all_with_throws(100, push, push);
    for (int i = 0; i < 10; ++i) (void)q.try_pop();
    CHECK(fault_item::live.load() == 90);
  }
  leak_guard::check();
}

// ---- channel endpoints ------------------------------------------------------------------------------

TEST_CASE("channel: sends and receives whose moves throw, close, destroy", "[fault][channel]") {
  leak_guard guard;
  for (const std::size_t capacity : {std::size_t{0}, std::size_t{2 * items}}) {
    CAPTURE(capacity);
    {
      auto ch = capacity == 0 ? tether::make_channel<fault_item, fault_item>() : tether::make_channel<fault_item, fault_item>(capacity);
      auto& a = ch.first;
      auto& b = ch.second;
      std::uint64_t which = 0;
      auto send = [&](auto&& v) {
        switch (which++ % 3) {
          case 0: return static_cast<bool>(a.send(std::forward<decltype(v)>(v)));
          case 1: return static_cast<bool>(a.try_send(std::forward<decltype(v)>(v)));
          default: return static_cast<bool>(a.send_for(std::forward<decltype(v)>(v), 1s));
        }
      };
      CHECK(push_all_with_throws(items, send, send) > 0);
      // The other direction, left unreceived: destroyed with the pair.
      for (std::uint64_t i = 0; i < 20; ++i) REQUIRE(b.send(fault_item(i)));
      b.close();
      fault_item rejected(5);
      CHECK(a.send(std::move(rejected)).is_closed());
      CHECK(rejected.intact(5));
      std::uint64_t threw = 0, kind = 0;
      const auto seen = take_all_with_throws(
          [&]() -> std::optional<std::uint64_t> {
            switch (kind++ % 3) {
              case 0:
                if (auto r = b.try_recv()) return r->value;
                break;
              case 1:
                if (auto r = b.recv()) return r->value;
                break;
              default:
                if (auto r = b.recv_for(1s)) return r->value;
                break;
            }
            return std::nullopt;
          },
          threw);
      CHECK(threw > 0);
      check_sequence(seen, items);
      CHECK(fault_item::live.load() == 20 + 1);  // b -> a, still held by the pair; and `rejected`
    }
    leak_guard::check();
  }
}

// ---- router -----------------------------------------------------------------------------------------

namespace {

using item_router = tether::router<fault_item, fault_item>;
constexpr std::uint64_t router_messages = 24;

// One router run: a parent executor with its own thread and one child subshell; the handler
// answers with the payload itself. With arm > 0 the arm-th move of a fault_item from the
// first send on (on any thread) throws. Checks exactly one reply per accepted message (a value
// equal to the payload, or an error that hands the payload back or not), no leak, no double
// destroy. Returns 0 if every check held; prints what failed. moves: moves counted from the
// first send (for the counting pass).
int router_run(long arm, long* moves) {
  int failures = 0;
  auto fail = [&](const char* what, std::uint64_t tag) {
    ++failures;
    std::fprintf(stderr, "    router N=%ld: %s (tag %llu)\n", arm, what, static_cast<unsigned long long>(tag));
  };
  fault_item::reset_counters();
  {
    tether::executor parent{{.name = "parent"}};
    item_router r(parent, [](tether::subshell_id) { return [](fault_item&& p) { return std::move(p); }; });
    const tether::subshell_id child = r.create_subshell().value();
    std::vector<int> accepted(router_messages, 0), replies(router_messages, 0);
    const long moves_before = fault_item::moves.load() + fault_item::throws.load();
    fault_item::arm_move_throw(arm);
    for (std::uint64_t tag = 0; tag < router_messages; ++tag) {
      fault_item payload(tag);
      const tether::subshell_id to = tag % 2 == 0 ? tether::parent_subshell : child;
      for (int attempt = 0; attempt < 2 && accepted[tag] == 0; ++attempt) {
        try {
          if (r.send(to, std::move(payload), tag)) accepted[tag] = 1;
          else fail("send refused before shutdown", tag);
        } catch (const item_fault&) {
          if (!payload.intact(tag)) fail("a send that threw left its payload moved from", tag);
        }
      }
    }
    r.stop(tether::stop_mode::drain);
    r.join();
    fault_item::disarm();
    if (moves != nullptr) *moves = fault_item::moves.load() + fault_item::throws.load() - moves_before;
    for (;;) {
      auto rep = r.replies().try_pop();
      if (!rep) {
        if (!rep.is_closed()) fail("replies() not closed after join()", 0);
        break;
      }
      const std::uint64_t tag = rep->tag();
      if (tag >= router_messages || accepted[tag] == 0) {
        fail("a reply to a message never accepted", tag);
        continue;
      }
      ++replies[tag];
      if (rep->has_value() && (**rep).value != tag) fail("a value reply that is not its payload", tag);
    }
    for (std::uint64_t tag = 0; tag < router_messages; ++tag)
      if (accepted[tag] != 0 && replies[tag] != 1) fail("an accepted message without exactly one reply", tag);
  }
  if (fault_item::live.load() != 0) fail("fault_item instances leaked", static_cast<std::uint64_t>(fault_item::live.load()));
  if (fault_item::destroyed_twice.load() != 0) fail("fault_item destroyed twice", 0);
  return failures == 0 ? 0 : 1;
}

}  // namespace

TEST_CASE("router: a throwing payload or reply move, at each move in turn, still gets every accepted message one reply", "[fault][router]") {
  leak_guard guard;
  // Counting pass in a child too: a router thread that throws ends its process.
  long moves = 0;
  const auto counting = tether_test::run_forked([&] { return router_run(0, nullptr); }, 60s);
  REQUIRE(counting.ok());
  REQUIRE(router_run(0, &moves) == 0);  // no throw armed: safe in this process
  REQUIRE(moves > static_cast<long>(router_messages));
  std::vector<std::string> failing;
  for (long n = 1; n <= moves; ++n) {
    const auto r = tether_test::run_forked([&] { return router_run(n, nullptr); }, 30s);
    if (!r.ok()) failing.push_back("N=" + std::to_string(n) + ": " + r.describe());
  }
  INFO("moves swept: " << moves);
  for (const std::string& f : failing) UNSCOPED_INFO(f);
  CHECK(failing.empty());
  leak_guard::check();
}
