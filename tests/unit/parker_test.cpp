// Unit tests for tether::detail::parker and detail::park_until, the one wait strategy every
// blocking call goes through: notify wakes a parked waiter, deadlines are honoured, no
// wake-up is lost however notify and wait interleave, and a notify nobody waits for is
// harmless.
#include <tether/detail/wait/parker.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "queue_test_support.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using tether::detail::no_deadline;
using tether::detail::park_until;
using tether::detail::parker;
using clock_type = std::chrono::steady_clock;

// Test-side only: polls pred (1 ms apart) for up to `limit`; true if it came to hold.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 10s) {
  const auto end = clock_type::now() + limit;
  while (!pred()) {
    if (clock_type::now() >= end) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

}  // namespace

TEST_CASE("park_until returns at once when the condition already holds", "[parker]") {
  parker p;
  int calls = 0;
  CHECK(park_until(p, [&] { return ++calls > 0; }, no_deadline));
  CHECK(calls == 1);
  CHECK_FALSE(p.has_waiters());
}

TEST_CASE("parker: prepare_wait announces a waiter, cancel_wait and wait retire it", "[parker]") {
  parker p;
  CHECK_FALSE(p.has_waiters());
  const auto key = p.prepare_wait();
  CHECK(p.has_waiters());
  p.cancel_wait();
  CHECK_FALSE(p.has_waiters());
  const auto key2 = p.prepare_wait();
  CHECK(key2 == key);  // nobody notified in between
  CHECK_FALSE(p.wait(key2, clock_type::now()));  // deadline already passed
  CHECK_FALSE(p.has_waiters());
}

TEST_CASE("parker: notify wakes a waiter parked in park_until", "[parker]") {
  parker p;
  std::atomic<bool> flag{false};
  auto waiter = tether_test::run_async([&] {
    const auto cpu0 = tether_test::thread_cpu_time();
    const bool ok = park_until(p, [&] { return flag.load(); }, no_deadline);
    return std::make_pair(ok, tether_test::thread_cpu_time() - cpu0);
  });
  REQUIRE(eventually([&] { return p.has_waiters(); }));  // past the spin phase, parked
  std::this_thread::sleep_for(50ms);
  flag.store(true);
  p.notify_one();
  const auto [ok, cpu] = tether_test::finish_or_abort(waiter, "waiter parked in park_until");
  CHECK(ok);
  CHECK(cpu < 40ms);  // it slept rather than spun
  CHECK_FALSE(p.has_waiters());
}

TEST_CASE("parker: notify_all wakes every parked waiter", "[parker]") {
  constexpr int waiters = 6;
  parker p;
  std::atomic<bool> flag{false};
  std::atomic<int> woke{0};
  std::latch started(waiters);
  {
    tether_test::thread_group threads;
    for (int i = 0; i < waiters; ++i)
      threads.spawn([&] {
        started.count_down();
        if (park_until(p, [&] { return flag.load(); }, clock_type::now() + 30s)) woke.fetch_add(1);
      });
    started.wait();
    REQUIRE(eventually([&] { return p.has_waiters(); }));
    std::this_thread::sleep_for(50ms);
    flag.store(true);
    p.notify_all();
  }
  CHECK(woke.load() == waiters);
  CHECK_FALSE(p.has_waiters());
}

TEST_CASE("parker: a notify between prepare_wait and wait is not lost", "[parker]") {
  parker p;
  std::latch announced(1);
  std::latch notified(1);
  auto waiter = tether_test::run_async([&] {
    const auto key = p.prepare_wait();
    announced.count_down();
    notified.wait();  // the notify has already happened when we go to sleep
    const auto t0 = clock_type::now();
    const bool in_time = p.wait(key, clock_type::now() + 20s);
    return std::make_pair(in_time, clock_type::now() - t0);
  });
  announced.wait();
  p.notify_one();
  notified.count_down();
  const auto [in_time, waited] = tether_test::finish_or_abort(waiter, "waiter");
  CHECK(in_time);
  CHECK(waited < 10s);
  CHECK_FALSE(p.has_waiters());
}

TEST_CASE("park_until times out at the deadline and returns false", "[parker][timeout]") {
  parker p;
  SECTION("a future deadline") {
    const auto deadline = clock_type::now() + 50ms;
    const bool ok = park_until(p, [] { return false; }, deadline);
    const auto now = clock_type::now();
    CHECK_FALSE(ok);
    CHECK(now >= deadline);
    CHECK(now - deadline < 10s);
  }
  SECTION("a deadline already passed") {
    const auto t0 = clock_type::now();
    CHECK_FALSE(park_until(p, [] { return false; }, t0 - 1s));
    CHECK(clock_type::now() - t0 < 5s);
  }
  SECTION("a condition that comes true before the deadline wins") {
    std::atomic<bool> flag{false};
    auto waiter = tether_test::run_async([&] { return park_until(p, [&] { return flag.load(); }, clock_type::now() + 30s); });
    REQUIRE(eventually([&] { return p.has_waiters(); }));
    flag.store(true);
    p.notify_one();
    CHECK(tether_test::finish_or_abort(waiter, "waiter"));
  }
  CHECK_FALSE(p.has_waiters());  // every timed-out waiter retired itself
}

TEST_CASE("parker: notify with no waiter is harmless and leaves nothing behind", "[parker]") {
  parker p;
  for (int i = 0; i < 1000; ++i) {
    p.notify_one();
    p.notify_all();
  }
  CHECK_FALSE(p.has_waiters());
  // The notifies above must not satisfy a later wait.
  const auto key = p.prepare_wait();
  CHECK_FALSE(p.wait(key, clock_type::now() + 20ms));
  const auto t0 = clock_type::now();
  CHECK_FALSE(park_until(p, [] { return false; }, t0 + 20ms));
  CHECK(clock_type::now() - t0 >= 20ms);
  // And a real waiter is still woken afterwards.
  std::atomic<bool> flag{false};
  auto waiter = tether_test::run_async([&] { return park_until(p, [&] { return flag.load(); }, clock_type::now() + 30s); });
  REQUIRE(eventually([&] { return p.has_waiters(); }));
  flag.store(true);
  p.notify_one();
  CHECK(tether_test::finish_or_abort(waiter, "waiter"));
}

TEST_CASE("park_until loses no wake-up in a tight ping-pong of many rounds", "[parker][lost_wakeup]") {
  // Two threads take turns: each waits for its turn, passes it on, notifies the other.
  // A lost wake-up strands a thread until its (generous) deadline, which we count.
  const std::uint64_t rounds = tether_test::scaled(20000, 2000);
  parker ping, pong;
  std::atomic<std::uint64_t> turn{0};
  std::atomic<std::uint64_t> stranded{0};
  auto player = [&](parker& mine, parker& other, std::uint64_t parity) {
    for (std::uint64_t r = 0; r < rounds; ++r) {
      const std::uint64_t my_turn = 2 * r + parity;
      if (!park_until(mine, [&] { return turn.load() == my_turn; }, clock_type::now() + 10s)) {
        stranded.fetch_add(1);
        return;
      }
      turn.store(my_turn + 1);
      other.notify_one();
    }
  };
  {
    tether_test::thread_group threads;
    threads.spawn([&] { player(ping, pong, 0); });
    threads.spawn([&] { player(pong, ping, 1); });
  }
  CHECK(stranded.load() == 0);
  CHECK(turn.load() == 2 * rounds);
}

TEST_CASE("parker loses no wake-up when every round goes through prepare_wait and wait", "[parker][lost_wakeup]") {
  // No spin phase: every round takes the announce / re-check / sleep path, so the
  // notifier's publish races the waiter's announcement every time.
  const std::uint64_t rounds = tether_test::scaled(10000, 1000);
  parker ping, pong;
  std::atomic<std::uint64_t> turn{0};
  std::atomic<std::uint64_t> stranded{0};
  auto player = [&](parker& mine, parker& other, std::uint64_t parity) {
    for (std::uint64_t r = 0; r < rounds; ++r) {
      const std::uint64_t my_turn = 2 * r + parity;
      while (turn.load() != my_turn) {
        const auto key = mine.prepare_wait();
        if (turn.load() == my_turn) {
          mine.cancel_wait();
          break;
        }
        if (!mine.wait(key, clock_type::now() + 10s)) {
          stranded.fetch_add(1);
          return;
        }
      }
      turn.store(my_turn + 1);
      other.notify_one();
    }
  };
  {
    tether_test::thread_group threads;
    threads.spawn([&] { player(ping, pong, 0); });
    threads.spawn([&] { player(pong, ping, 1); });
  }
  CHECK(stranded.load() == 0);
  CHECK(turn.load() == 2 * rounds);
  CHECK_FALSE(ping.has_waiters());
  CHECK_FALSE(pong.has_waiters());
}

TEST_CASE("park_until sees every increment of a counter notified by free-running producers", "[parker][lost_wakeup]") {
  // Producers never wait for the consumer: each increment races the consumer's decision to
  // sleep. The consumer must see the final count without any wait timing out.
  constexpr int producers = 3;
  const std::uint64_t per_producer = tether_test::scaled(20000, 2000);
  parker p;
  std::atomic<std::uint64_t> counter{0};
  std::uint64_t seen = 0, waits = 0, timeouts = 0;
  {
    tether_test::thread_group threads;
    for (int i = 0; i < producers; ++i)
      threads.spawn([&] {
        for (std::uint64_t k = 0; k < per_producer; ++k) {
          counter.fetch_add(1);
          p.notify_one();
          if (k % 64 == 0) std::this_thread::yield();  // let the consumer fall asleep now and then
        }
      });
    const std::uint64_t total = producers * per_producer;
    while (seen < total) {
      ++waits;
      if (!park_until(p, [&] { return counter.load() > seen; }, clock_type::now() + 10s)) {
        ++timeouts;
        break;
      }
      seen = counter.load();
    }
  }
  CHECK(timeouts == 0);
  CHECK(seen == producers * per_producer);
  CHECK(waits >= 1);
}

// The streaming consumer's wait (park_until_streaming): which waits count as a stream. ready()
// is scripted, so every wait's path is known: `quick` waits find the condition at their first
// re-check, the others only on a later one.
TEST_CASE("park_until_streaming: quick waits in a row mark a stream; a single item or a slow wait ends it",
          "[parker][stream]") {
  using tether::detail::park_until_streaming;
  using tether::detail::stream_quick_waits;
  using tether::detail::stream_watch;
  parker p;
  stream_watch w;
  std::uint32_t taken = 0;
  // A wait whose condition holds at the first re-check, after `items` taken since the last.
  auto quick_wait = [&](std::uint32_t items) {
    taken += items;
    return park_until_streaming(p, [] { return true; }, no_deadline, w, taken);
  };
  // A wait whose condition holds only from the third re-check on.
  auto slow_wait = [&](std::uint32_t items) {
    taken += items;
    int checks = 0;
    return park_until_streaming(p, [&] { return ++checks >= 3; }, no_deadline, w, taken);
  };

  SECTION("stream_quick_waits quick waits in a row, and not one fewer") {
    for (int i = 0; i + 1 < stream_quick_waits; ++i) CHECK(quick_wait(1));
    CHECK_FALSE(w.streaming);
    CHECK(quick_wait(1));
    CHECK(w.streaming);
  }
  SECTION("a slow wait resets the count") {
    for (int i = 0; i + 1 < stream_quick_waits; ++i) CHECK(quick_wait(1));
    CHECK(slow_wait(1));
    CHECK(w.quick_waits == 0);
    for (int i = 0; i + 1 < stream_quick_waits; ++i) CHECK(quick_wait(1));
    CHECK_FALSE(w.streaming);
  }
  SECTION("a stream stays while each pause buys a batch") {
    for (int i = 0; i < stream_quick_waits; ++i) CHECK(quick_wait(1));
    REQUIRE(w.streaming);
    for (int i = 0; i < 100; ++i) CHECK(quick_wait(5));
    CHECK(w.streaming);
    CHECK(w.taken_at_wait == taken);
  }
  SECTION("a wait after a single item ends the stream (a ping-pong)") {
    for (int i = 0; i < stream_quick_waits; ++i) CHECK(quick_wait(1));
    REQUIRE(w.streaming);
    CHECK(quick_wait(1));
    CHECK_FALSE(w.streaming);
  }
  SECTION("a wait the pause did not cover ends the stream (a slow producer)") {
    for (int i = 0; i < stream_quick_waits; ++i) CHECK(quick_wait(1));
    REQUIRE(w.streaming);
    CHECK(slow_wait(5));
    CHECK_FALSE(w.streaming);
  }
  SECTION("outside a stream every 256th wait probes; a probe that finds work starts a stream") {
    // One item per wait, found only on a later re-check: never a stream by itself.
    for (int i = 0; i < 255; ++i) CHECK(slow_wait(1));
    CHECK_FALSE(w.streaming);
    bool probed = false;
    taken += 1;
    CHECK(park_until_streaming(p, [&] { return probed = w.probing; }, no_deadline, w, taken));
    CHECK(probed);  // the 256th paused first, and its first re-check found the work
    CHECK(w.streaming);
    CHECK(quick_wait(4));  // the pause bought a batch: the stream stays
    CHECK(w.streaming);
    CHECK(quick_wait(1));  // a ping-pong: a single item ends it at the next wait
    CHECK_FALSE(w.streaming);
  }
  SECTION("a probe whose pause brought nothing starts no stream") {
    for (int i = 0; i < 255; ++i) CHECK(slow_wait(1));
    CHECK(slow_wait(1));
    CHECK_FALSE(w.streaming);
    CHECK_FALSE(w.probing);
    for (int i = 0; i < 255; ++i) CHECK(slow_wait(1));  // and the next probe is 256 waits on
    CHECK_FALSE(w.streaming);
  }
  SECTION("a streaming wait still honours its deadline") {
    for (int i = 0; i < stream_quick_waits; ++i) CHECK(quick_wait(1));
    REQUIRE(w.streaming);
    taken += 5;
    const auto t0 = clock_type::now();
    CHECK_FALSE(park_until_streaming(p, [] { return false; }, clock_type::now() + 20ms, w, taken));
    CHECK(clock_type::now() - t0 >= 20ms);
    CHECK_FALSE(w.streaming);
  }
}

TEST_CASE("park_until: a spin that catches nothing until it yields skips the next spins, doubling per failed probe",
          "[parker][spin]") {
  using tether::detail::first_spin_skips;
  using tether::detail::max_spin_skips;
  using tether::detail::park_spin_checks;
  parker p;
  REQUIRE(p.spin_hint());
  // Ready only at the first check after the pause phase: the thread we waited for needed our core.
  auto failed_spin = [&] {
    int checks = 0;
    return park_until(p, [&] { return ++checks > park_spin_checks(); }, no_deadline);
  };
  auto at_once = [&] { return park_until(p, [] { return true; }, no_deadline); };
  // Waits that skip their spin until the hint comes back; returns how many.
  auto skipped = [&] {
    int n = 0;
    while (!p.spin_hint() && n <= max_spin_skips) {
      CHECK(at_once());
      ++n;
    }
    return n;
  };

  CHECK(at_once());  // caught in the pause phase: the spin stays on
  CHECK(p.spin_hint());
  CHECK(failed_spin());
  CHECK_FALSE(p.spin_hint());
  CHECK(skipped() == first_spin_skips);
  CHECK(failed_spin());  // the probe fails too: twice as many
  CHECK(skipped() == 2 * first_spin_skips);
  CHECK(at_once());  // a probe that catches: back to the first count after the next failure
  CHECK(failed_spin());
  CHECK(skipped() == first_spin_skips);
  for (int i = 0; i < 12; ++i) {  // failures in a row stop doubling at the most
    CHECK(failed_spin());
    skipped();
  }
  CHECK(failed_spin());
  CHECK(skipped() == max_spin_skips);

  // A long sleep turns the spin off; the next short one turns it back on, no skips involved.
  parker q;
  std::atomic<bool> flag{false};
  std::jthread setter([&] {
    std::this_thread::sleep_for(2ms);
    flag.store(true);
    q.notify_all();
  });
  CHECK(park_until(q, [&] { return flag.load(); }, no_deadline));
  CHECK_FALSE(q.spin_hint());
  CHECK(park_until(q, [] { return true; }, no_deadline));
  CHECK(q.spin_hint());
}

// A producer streaming into a consumer that keeps catching up (the case the streaming wait is
// for): every wait, paused or not, ends by seeing the next value, never by its deadline.
TEST_CASE("park_until_streaming loses no wake-up while a producer streams", "[parker][stream][lost_wakeup]") {
  using tether::detail::park_until_streaming;
  using tether::detail::stream_watch;
  const std::uint64_t n = tether_test::scaled(200000);
  parker p;
  std::atomic<std::uint64_t> published{0};
  std::thread producer([&] {
    for (std::uint64_t i = 1; i <= n; ++i) {
      published.store(i, std::memory_order_release);  // release: pairs with the acquire loads below
      p.notify_one();
    }
  });
  stream_watch w;
  std::uint64_t seen = 0;
  bool in_time = true;
  while (in_time && seen < n) {
    const std::uint64_t now = published.load(std::memory_order_acquire);
    if (now > seen) {
      seen = now;
      continue;
    }
    in_time = park_until_streaming(p, [&] { return published.load(std::memory_order_acquire) > seen; },
                                   clock_type::now() + 10s, w, static_cast<std::uint32_t>(seen));
  }
  producer.join();
  CHECK(in_time);
  CHECK(seen == n);
}
