// Unit tests for tether::make_channel / tether::endpoint: both directions, bounded and
// unbounded, try/timed/blocking verbs, close from either side (and by destruction) with
// blocked peers, moves, and that no message is lost or destroyed twice.
//
// Worker threads record what they saw in atomics; the test thread asserts after joining.
#include <tether/channel.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "queue_fault.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using tether::status;
using tether_test::counted;

static_assert(!std::is_copy_constructible_v<tether::endpoint<int, int>>);
static_assert(!std::is_copy_assignable_v<tether::endpoint<int, int>>);
static_assert(std::is_nothrow_move_constructible_v<tether::endpoint<int, int>>);
static_assert(std::is_nothrow_move_assignable_v<tether::endpoint<int, int>>);
static_assert(std::is_same_v<decltype(tether::make_channel<int, std::string>()),
                             std::pair<tether::endpoint<int, std::string>, tether::endpoint<std::string, int>>>);

// Blocks until the predicate holds; used to be sure a thread is parked before acting. The
// sleep only paces the check: correctness never depends on it.
template <class F>
void eventually(F&& f) {
  for (int i = 0; i < 5000 && !f(); ++i) std::this_thread::sleep_for(1ms);
}

}  // namespace

TEST_CASE("channel smoke: each endpoint sends its type and receives the other", "[channel][smoke]") {
  auto pair = tether::make_channel<int, std::string>();
  auto& left = pair.first;    // sends int, receives string
  auto& right = pair.second;  // sends string, receives int
  CHECK(left.capacity() == 0);
  CHECK(left.send(1).status() == status::ok);
  CHECK(left.send(2));
  CHECK(right.send(std::string("one")));
  const std::string two = "two";
  CHECK(right.send(two));
  CHECK(two == "two");  // sent by copy

  auto r1 = right.recv();
  REQUIRE(r1);
  CHECK(*r1 == 1);
  CHECK(right.pending_approx() == 1);
  CHECK(*right.recv() == 2);
  CHECK(right.try_recv().is_empty());
  CHECK(*left.recv() == "one");
  CHECK(*left.try_recv() == "two");
  CHECK(left.try_recv().is_empty());
}

TEST_CASE("channel make_channel<T>() is symmetric and FIFO both ways", "[channel][fifo]") {
  auto [a, b] = tether::make_channel<std::uint64_t>();
  static_assert(std::is_same_v<decltype(a), decltype(b)>);
  for (std::uint64_t i = 0; i < 5000; ++i) {
    REQUIRE(a.send(i));
    REQUIRE(b.send(i * 3));
  }
  for (std::uint64_t i = 0; i < 5000; ++i) {
    auto x = b.try_recv();
    auto y = a.try_recv();
    REQUIRE(x);
    REQUIRE(y);
    REQUIRE(*x == i);
    REQUIRE(*y == i * 3);
  }
}

TEST_CASE("channel bounded: try_send reports full and hands the message back", "[channel][capacity][try]") {
  auto [a, b] = tether::make_channel<std::unique_ptr<int>>(3);
  CHECK(a.capacity() == 4);  // rounded up to a power of two
  CHECK(b.capacity() == 4);
  for (int i = 0; i < 4; ++i) REQUIRE(a.try_send(std::make_unique<int>(i)));
  auto extra = std::make_unique<int>(99);
  const auto r = a.try_send(std::move(extra));
  CHECK(r.is_full());
  REQUIRE(extra != nullptr);  // untouched
  CHECK(*extra == 99);
  // The other direction has its own room.
  CHECK(b.try_send(std::make_unique<int>(7)));
  CHECK(**b.recv() == 0);
  CHECK(a.try_send(std::move(extra)));
  CHECK(extra == nullptr);
  for (int want : {1, 2, 3, 99}) CHECK(**b.recv() == want);
  CHECK(**a.recv() == 7);
  CHECK_THROWS_AS(tether::make_channel<int>(0), std::invalid_argument);
}

TEST_CASE("channel timeouts: timeout on an open pair, closed at once on a closed one", "[channel][timeout]") {
  auto [a, b] = tether::make_channel<std::unique_ptr<int>>(2);
  auto t0 = std::chrono::steady_clock::now();
  CHECK(b.recv_for(20ms).is_timeout());
  CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
  CHECK(b.recv_until(std::chrono::steady_clock::now() + 5ms).is_timeout());
  CHECK(b.recv_until(std::chrono::system_clock::now() + 5ms).is_timeout());
  CHECK(b.recv_for(0ms).is_timeout());

  REQUIRE(a.send(std::make_unique<int>(1)));
  REQUIRE(a.send(std::make_unique<int>(2)));
  auto v = std::make_unique<int>(3);
  CHECK(a.send_for(std::move(v), 20ms).is_timeout());
  REQUIRE(v != nullptr);
  CHECK(a.send_until(std::move(v), std::chrono::steady_clock::now() + 5ms).is_timeout());
  CHECK(a.send_until(std::move(v), std::chrono::system_clock::now() + 5ms).is_timeout());
  REQUIRE(v != nullptr);

  b.close();
  t0 = std::chrono::steady_clock::now();
  CHECK(a.send_for(std::move(v), 10s).is_closed());  // not a timeout, and not a 10 s wait
  REQUIRE(v != nullptr);
  CHECK(a.recv_for(10s).is_closed());
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  // b still receives what was sent before the close, then sees closed.
  CHECK(**b.recv_for(10s) == 1);
  CHECK(**b.recv_until(std::chrono::steady_clock::now() + 10s) == 2);
  CHECK(b.recv_for(10s).is_closed());
  CHECK(b.recv().is_closed());
}

TEST_CASE("channel close from either side: the peer drains, then sees closed; sends hand back", "[channel][close]") {
  const bool bounded = GENERATE(false, true);
  const bool close_left = GENERATE(false, true);
  CAPTURE(bounded, close_left);
  auto pair = bounded ? tether::make_channel<std::string>(8) : tether::make_channel<std::string>();
  auto& left = pair.first;
  auto& right = pair.second;
  REQUIRE(left.send("l1"));
  REQUIRE(left.send("l2"));
  REQUIRE(right.send("r1"));
  CHECK_FALSE(left.is_closed());
  (close_left ? left : right).close();
  (close_left ? left : right).close();  // idempotent
  CHECK(left.is_closed());
  CHECK(right.is_closed());

  std::string msg = "late";
  CHECK(left.send(std::move(msg)).is_closed());
  CHECK(left.try_send(std::move(msg)).is_closed());
  CHECK(right.send_for(std::move(msg), 1s).is_closed());
  CHECK(msg == "late");

  CHECK(*right.recv() == "l1");
  CHECK(*right.try_recv() == "l2");
  CHECK(right.try_recv().is_closed());
  CHECK(*left.recv() == "r1");
  CHECK(left.recv().is_closed());
}

TEST_CASE("channel destroying an endpoint closes the pair; the survivor drains", "[channel][close]") {
  const bool bounded = GENERATE(false, true);
  CAPTURE(bounded);
  auto pair = bounded ? tether::make_channel<int>(4) : tether::make_channel<int>();
  tether::endpoint<int, int> survivor = std::move(pair.second);
  {
    tether::endpoint<int, int> doomed = std::move(pair.first);
    REQUIRE(doomed.send(1));
    REQUIRE(doomed.send(2));
  }
  CHECK(survivor.is_closed());
  CHECK(survivor.send(3).is_closed());
  CHECK(*survivor.recv() == 1);
  CHECK(*survivor.recv() == 2);
  CHECK(survivor.recv().is_closed());
}

TEST_CASE("channel close wakes a receiver parked on either side", "[channel][close][blocking]") {
  const bool close_own_side = GENERATE(false, true);
  CAPTURE(close_own_side);
  auto [a, b] = tether::make_channel<int>();
  std::atomic<int> outcome{-1};
  std::atomic<bool> started{false};
  std::thread receiver([&, &b = b] {
    started = true;
    outcome = static_cast<int>(b.recv().status());  // parks: nothing is sent
  });
  eventually([&] { return started.load(); });
  std::this_thread::sleep_for(20ms);  // let it park (not needed for correctness)
  if (close_own_side)
    b.close();
  else
    a.close();
  receiver.join();
  CHECK(outcome == static_cast<int>(status::closed));
}

TEST_CASE("channel close wakes senders blocked on a full pair, on both sides", "[channel][close][blocking]") {
  const bool close_sender_side = GENERATE(false, true);
  CAPTURE(close_sender_side);
  auto [a, b] = tether::make_channel<counted>(2);
  REQUIRE(a.try_send(counted(0)));
  REQUIRE(a.try_send(counted(1)));
  REQUIRE(b.try_send(counted(10)));
  REQUIRE(b.try_send(counted(11)));
  std::atomic<int> a_outcome{-1}, b_outcome{-1};
  std::atomic<std::uint64_t> a_kept{0}, b_kept{0};
  std::thread a_sender([&, &a = a] {
    counted c(2);
    a_outcome = static_cast<int>(a.send(std::move(c)).status());
    a_kept = c.value;  // handed back: still ours
  });
  std::thread b_sender([&, &b = b] {
    counted c(12);
    b_outcome = static_cast<int>(b.send_for(std::move(c), 60s).status());
    b_kept = c.value;
  });
  std::this_thread::sleep_for(20ms);
  if (close_sender_side)
    a.close();
  else
    b.close();
  a_sender.join();
  b_sender.join();
  CHECK(a_outcome == static_cast<int>(status::closed));
  CHECK(b_outcome == static_cast<int>(status::closed));
  CHECK(a_kept == 2);
  CHECK(b_kept == 12);
  // Everything accepted is still delivered.
  CHECK(b.recv()->value == 0);
  CHECK(b.recv()->value == 1);
  CHECK(b.recv().is_closed());
  CHECK(a.recv()->value == 10);
  CHECK(a.recv()->value == 11);
  CHECK(a.recv().is_closed());
}

TEST_CASE("channel a blocked sender proceeds when the peer receives", "[channel][blocking][capacity]") {
  auto [a, b] = tether::make_channel<int>(2);
  REQUIRE(a.try_send(0));
  REQUIRE(a.try_send(1));
  std::atomic<int> sent{0};
  std::thread sender([&, &a = a] {
    for (int i = 2; i < 100; ++i)
      if (a.send(i)) sent.fetch_add(1);
  });
  long sum = 0;
  for (int i = 0; i < 100; ++i) {
    auto r = b.recv_for(30s);
    REQUIRE(r);
    REQUIRE(*r == i);
    sum += *r;
  }
  sender.join();
  CHECK(sent == 98);
  CHECK(sum == 99 * 100 / 2);
}

TEST_CASE("channel endpoints move; move-assignment closes the pair it replaces", "[channel][move]") {
  auto p1 = tether::make_channel<int>();
  auto p2 = tether::make_channel<int>();
  tether::endpoint<int, int> x = std::move(p1.first);
  REQUIRE(x.send(5));
  CHECK(*p1.second.recv() == 5);
  x = std::move(p2.first);  // closes pair 1
  CHECK(p1.second.is_closed());
  CHECK(p1.second.recv().is_closed());
  REQUIRE(x.send(6));
  CHECK(*p2.second.recv() == 6);
  CHECK_FALSE(p2.second.is_closed());
}

TEST_CASE("channel destroys unreceived messages exactly once, with the last endpoint", "[channel][drops]") {
  const bool bounded = GENERATE(false, true);
  CAPTURE(bounded);
  REQUIRE(counted::live == 0);
  {
    auto pair = bounded ? tether::make_channel<counted>(64) : tether::make_channel<counted>();
    for (std::uint64_t i = 0; i < 40; ++i) {
      REQUIRE(pair.first.send(counted(i)));
      REQUIRE(pair.second.send(counted(i)));
    }
    CHECK(counted::live == 80);
    auto r = pair.second.recv();
    REQUIRE(r);
    CHECK(r->value == 0);
    pair.first.close();
    CHECK(counted::live == 80);  // closing destroys nothing: still receivable
  }
  CHECK(counted::live == 0);
  CHECK(counted::destroyed_twice == 0);
}

TEST_CASE("channel several threads send on one endpoint; each message arrives once", "[channel][multi_producer]") {
  const bool bounded = GENERATE(false, true);
  CAPTURE(bounded);
  auto pair = bounded ? tether::make_channel<std::uint64_t>(16) : tether::make_channel<std::uint64_t>();
  auto& tx = pair.first;
  auto& rx = pair.second;
  constexpr std::uint64_t threads = 4, per_thread = 20000;
  std::vector<std::thread> senders;
  for (std::uint64_t t = 0; t < threads; ++t)
    senders.emplace_back([&tx, t] {
      for (std::uint64_t i = 0; i < per_thread; ++i) (void)tx.send((t << 32) | i);
    });
  std::vector<std::uint64_t> next(threads, 0);
  std::uint64_t errors = 0;
  for (std::uint64_t n = 0; n < threads * per_thread; ++n) {
    auto r = rx.recv_for(30s);
    REQUIRE(r);
    const std::uint64_t t = *r >> 32, i = *r & 0xffffffff;
    if (t >= threads || next[t] != i) ++errors;
    if (t < threads) next[t] = i + 1;
  }
  for (auto& s : senders) s.join();
  CHECK(errors == 0);
  CHECK(rx.try_recv().is_empty());
}

// ---- a throwing move inside a receive (tests/support/queue_fault.hpp) ----------------------

TEST_CASE("channel every receive form leaves a message whose move throws queued, and moves once", "[channel][exceptions][move]") {
  using tether_test::fault_item;
  using namespace std::chrono_literals;
  const bool bounded = GENERATE(false, true);
  CAPTURE(bounded);
  auto pair = bounded ? tether::make_channel<fault_item>(8) : tether::make_channel<fault_item>();
  auto& a = pair.first;
  auto& b = pair.second;
  auto send = [&](fault_item&& v) { return a.try_send(std::move(v)); };
  auto try_recv = [&] { return b.try_recv(); };
  SECTION("try_recv") { tether_test::check_single_pop_keeps_item(send, try_recv, try_recv); }
  SECTION("recv") { tether_test::check_single_pop_keeps_item(send, [&] { return b.recv(); }, try_recv); }
  SECTION("recv_for") { tether_test::check_single_pop_keeps_item(send, [&] { return b.recv_for(10s); }, try_recv); }
  SECTION("recv_until") {
    tether_test::check_single_pop_keeps_item(send, [&] { return b.recv_until(std::chrono::system_clock::now() + 10s); }, try_recv);
  }
  SECTION("closed, then destroyed with messages left") {
    for (std::uint64_t v = 1; v <= 3; ++v) REQUIRE(a.send(fault_item(v)));
    CHECK(a.close());
    CHECK_FALSE(b.close());  // already closed by a
    fault_item::arm_move_throw(1);
    CHECK_THROWS_AS(b.recv(), tether_test::item_fault);
    fault_item::disarm();
    auto r = b.recv();
    REQUIRE(r.has_value());
    CHECK(r->intact(1));
    CHECK(fault_item::live.load() == 3);
  }
  CHECK(fault_item::destroyed_twice.load() == 0);
}

TEST_CASE("channel close() returns true for exactly one call across both endpoints", "[channel][close]") {
  for (int round = 0; round < 200; ++round) {
    auto [a, b] = tether::make_channel<int>();
    std::atomic<int> closers{0};
    std::thread t([&, &bb = b] { closers += bb.close() ? 1 : 0; });
    closers += a.close() ? 1 : 0;
    t.join();
    CHECK(closers.load() == 1);
    CHECK(a.is_closed());
    CHECK(b.is_closed());
    CHECK_FALSE(a.close());
  }
  auto [c, d] = tether::make_channel<int>(2);
  auto moved = std::move(c);
  CHECK_FALSE(c.close());  // NOLINT: a moved-from endpoint closes nothing
  CHECK(moved.close());
  CHECK(d.recv().is_closed());
}
