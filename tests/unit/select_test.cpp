// Unit tests for tether::poller and tether::select: 1, 2, 64 and 1,000 sources of every
// kind, handlers, closed sources, registration rules, adding and removing while a waiter is
// parked, round-robin order, the one-shot form, and the CPU an idle waiter burns.
//
// Worker threads record what they saw in atomics; the test thread asserts after joining.
#include <tether/select.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using tether::bounded_mpsc_queue;
using tether::mpsc_queue;
using tether::poller;
using tether::source_id;
using tether::status;

template <class F>
void eventually(F&& f) {
  for (int i = 0; i < 5000 && !f(); ++i) std::this_thread::sleep_for(1ms);
}

}  // namespace

TEST_CASE("poller with one source: empty, timeout, then ready", "[select][smoke]") {
  mpsc_queue<int> q;
  poller p;
  p.add(q);
  CHECK(p.size() == 1);
  CHECK(p.contains(q));
  CHECK(p.try_wait().is_empty());
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(p.wait_for(20ms).is_timeout());
  CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
  CHECK(p.wait_until(std::chrono::system_clock::now() + 5ms).is_timeout());

  REQUIRE(q.push(7));
  auto r = p.wait_for(10s);
  REQUIRE(r);
  CHECK(r->is(q));
  CHECK(*r == source_id::of(q));
  // Level-triggered: still ready until received from.
  CHECK(p.try_wait());
  CHECK(*q.try_pop() == 7);
  CHECK(p.try_wait().is_empty());
}

TEST_CASE("poller reports messages queued before the source was added", "[select][smoke]") {
  bounded_mpsc_queue<int> q(4);
  REQUIRE(q.try_push(1));
  poller p;
  p.add(q);
  auto r = p.try_wait();
  REQUIRE(r);
  CHECK(r->is(q));
}

TEST_CASE("poller with two sources of different kinds names the ready one", "[select]") {
  auto pair = tether::make_pair<std::string, int>();
  auto& tx = pair.first;   // sends string
  auto& rx = pair.second;  // receives string
  bounded_mpsc_queue<int> q(8);
  poller p;
  p.add(rx).add(q);
  CHECK(p.size() == 2);

  REQUIRE(tx.send("hello"));
  auto r = p.wait_for(10s);
  REQUIRE(r);
  CHECK(r->is(rx));
  CHECK_FALSE(r->is(q));
  CHECK(*rx.try_recv() == "hello");

  REQUIRE(q.try_push(3));
  r = p.wait_for(10s);
  REQUIRE(r);
  CHECK(r->is(q));
  CHECK(*q.try_pop() == 3);
  CHECK(p.wait_for(1ms).is_timeout());
}

TEST_CASE("poller dispatches every message of 1, 2, 64 and 1,000 sources exactly once", "[select][many]") {
  const std::size_t n = GENERATE(1, 2, 64, 1000);
  CAPTURE(n);
  std::vector<std::unique_ptr<mpsc_queue<std::uint64_t>>> queues;
  std::vector<std::uint64_t> received(n, 0), sum(n, 0);
  poller p;
  for (std::size_t i = 0; i < n; ++i) {
    queues.push_back(std::make_unique<mpsc_queue<std::uint64_t>>());
    p.on(*queues.back(), [&received, &sum, i](std::uint64_t v) {
      ++received[i];
      sum[i] += v;
    });
  }
  CHECK(p.size() == n);
  const std::size_t messages = 5 * n + 17;
  std::vector<std::uint64_t> sent(n, 0), sent_sum(n, 0);
  std::thread producer([&] {
    for (std::size_t m = 0; m < messages; ++m) {
      const std::size_t i = (m * 7919) % n;
      (void)queues[i]->push(m);
      ++sent[i];
      sent_sum[i] += m;
    }
  });
  std::size_t served = 0;
  while (served < messages) {
    auto r = p.run_one_for(30s);
    REQUIRE(r);
    ++served;
  }
  producer.join();
  CHECK(p.try_run_one().is_empty());
  CHECK(received == sent);
  CHECK(sum == sent_sum);
}

TEST_CASE("poller: a closed source is ready; on_closed runs once and removes it", "[select][close]") {
  auto pair = tether::make_pair<int>();
  mpsc_queue<int> other;
  std::vector<int> values;
  int closed_calls = 0;
  poller p;
  p.on(pair.second, [&](int v) { values.push_back(v); }, [&] { ++closed_calls; }).add(other);
  REQUIRE(pair.first.send(1));
  REQUIRE(pair.first.send(2));
  pair.first.close();
  for (int i = 0; i < 3; ++i) {
    auto r = p.run_one_for(10s);
    REQUIRE(r);
    CHECK(r->is(pair.second));
  }
  CHECK(values == std::vector<int>{1, 2});
  CHECK(closed_calls == 1);
  CHECK_FALSE(p.contains(pair.second));
  CHECK(p.size() == 1);
  CHECK(p.run_one_for(1ms).is_timeout());

  // A plain add()ed source that is closed stays ready until removed.
  other.close();
  for (int i = 0; i < 3; ++i) CHECK(p.try_wait());
  CHECK(other.try_pop().is_closed());
  CHECK(p.remove(other));
  CHECK(p.try_wait().is_empty());
}

TEST_CASE("poller: one poller per source; remove frees it for another", "[select][registration]") {
  mpsc_queue<int> q;
  poller p1, p2;
  p1.add(q);
  CHECK_THROWS_AS(p1.add(q), std::logic_error);
  CHECK_THROWS_AS(p2.add(q), std::logic_error);
  CHECK_THROWS_AS(tether::select(q), std::logic_error);  // the one-shot form attaches too
  CHECK(p1.size() == 1);
  CHECK(p2.size() == 0);
  CHECK(p1.remove(q));
  CHECK_FALSE(p1.remove(q));
  CHECK_FALSE(p1.remove(source_id{}));
  p2.add(q);
  REQUIRE(q.push(1));
  auto r = p2.try_wait();
  REQUIRE(r);
  CHECK(r->is(q));
  CHECK(p1.try_wait().is_empty());
}

TEST_CASE("poller: a removed source is never reported and may be destroyed at once", "[select][registration]") {
  auto q = std::make_unique<mpsc_queue<int>>();
  mpsc_queue<int> keep;
  poller p;
  p.add(*q).add(keep);
  REQUIRE(q->push(1));  // signalled, on the ready list
  CHECK(p.remove(*q));
  q.reset();  // the poller must not touch it again
  CHECK(p.try_wait().is_empty());
  REQUIRE(keep.push(2));
  auto r = p.try_wait();
  REQUIRE(r);
  CHECK(r->is(keep));
}

TEST_CASE("poller: a source added while the waiter is parked wakes it", "[select][dynamic]") {
  poller p;
  std::atomic<bool> waiting{false};
  std::atomic<int> outcome{-1};
  mpsc_queue<int> q;
  std::thread waiter([&] {
    waiting = true;
    auto r = p.wait_for(60s);  // no sources yet
    outcome = r && r->is(q) ? 1 : 0;
  });
  eventually([&] { return waiting.load(); });
  std::this_thread::sleep_for(20ms);  // let it park (not needed for correctness)
  REQUIRE(q.push(5));                 // queued before the add: the add must report it
  p.add(q);
  waiter.join();
  CHECK(outcome == 1);
}

TEST_CASE("poller: removing sources while the waiter is parked", "[select][dynamic]") {
  std::vector<std::unique_ptr<mpsc_queue<int>>> queues;  // outlives the poller
  poller p;
  for (int i = 0; i < 8; ++i) {
    queues.push_back(std::make_unique<mpsc_queue<int>>());
    p.add(*queues.back());
  }
  std::atomic<bool> waiting{false};
  std::atomic<int> timeouts{0}, reports_of_removed{0}, reports_of_kept{0};
  std::atomic<bool> stop{false};
  const source_id kept = source_id::of(*queues[7]);
  std::thread waiter([&] {
    waiting = true;
    while (!stop) {
      auto r = p.wait_for(50ms);
      if (!r) {
        ++timeouts;
      } else if (*r == kept) {
        ++reports_of_kept;
        (void)queues[7]->try_pop();
      } else {
        ++reports_of_removed;
        break;
      }
    }
  });
  eventually([&] { return waiting.load(); });
  for (int i = 0; i < 7; ++i) {
    CHECK(p.remove(*queues[i]));
    REQUIRE(queues[i]->push(i));  // never reported: removed
  }
  REQUIRE(queues[7]->push(7));
  eventually([&] { return reports_of_kept.load() == 1; });
  stop = true;
  waiter.join();
  CHECK(reports_of_removed == 0);
  CHECK(reports_of_kept == 1);
  CHECK(p.size() == 1);
  for (int i = 0; i < 7; ++i) CHECK(*queues[i]->try_pop() == i);  // still queued: nothing lost
}

TEST_CASE("poller: handlers may add and remove sources, their own included", "[select][dynamic]") {
  mpsc_queue<int> a, b, c;
  poller p;
  std::vector<std::string> log;
  p.on(a, [&](int v) {
    log.push_back("a" + std::to_string(v));
    if (v == 1) {
      p.remove(a);  // its own source, while its handler runs
      p.on(c, [&](int w) { log.push_back("c" + std::to_string(w)); });
    }
  });
  p.on(b, [&](int v) {
    log.push_back("b" + std::to_string(v));
    p.remove(b);
  });
  REQUIRE(a.push(1));
  REQUIRE(a.push(2));  // stays queued: a is removed after the first
  REQUIRE(b.push(1));
  REQUIRE(c.push(1));
  int served = 0;
  while (p.try_run_one()) ++served;
  CHECK(served == 3);
  std::sort(log.begin(), log.end());
  CHECK(log == std::vector<std::string>{"a1", "b1", "c1"});
  CHECK(p.size() == 1);
  CHECK(p.contains(c));
  CHECK(*a.try_pop() == 2);
}

TEST_CASE("poller: an exception from a handler propagates; the poller keeps working", "[select][exceptions]") {
  mpsc_queue<int> q;
  poller p;
  int seen = 0;
  p.on(q, [&](int v) {
    ++seen;
    if (v == 1) throw std::runtime_error("handler failed");
  });
  REQUIRE(q.push(1));
  REQUIRE(q.push(2));
  CHECK_THROWS_AS(p.run_one(), std::runtime_error);
  CHECK(p.run_one().is(q));
  CHECK(seen == 2);
  CHECK(q.try_pop().is_empty());  // the first counts as delivered
}

TEST_CASE("poller keeps a watched pair alive when its endpoint is destroyed", "[select][close]") {
  poller p;
  auto pair = tether::make_pair<std::string>();
  bool closed = false;
  std::vector<std::string> got;
  {
    auto watched = std::move(pair.second);
    p.on(watched, [&](std::string s) { got.push_back(std::move(s)); }, [&] { closed = true; });
    REQUIRE(pair.first.send("before"));
  }  // destroying the watched endpoint closes the pair; its inbox is still receivable
  CHECK(pair.first.send("after").is_closed());
  while (p.try_run_one()) {
  }
  CHECK(got == std::vector<std::string>{"before"});
  CHECK(closed);
  CHECK(p.size() == 0);
}

TEST_CASE("poller serves ready sources round-robin", "[select][fairness]") {
  constexpr std::size_t n = 8;
  constexpr std::uint64_t per_source = 1000;
  std::vector<std::unique_ptr<mpsc_queue<int>>> queues;
  std::vector<std::uint64_t> served(n, 0);
  poller p;
  for (std::size_t i = 0; i < n; ++i) {
    queues.push_back(std::make_unique<mpsc_queue<int>>());
    for (std::uint64_t k = 0; k < per_source; ++k) REQUIRE(queues.back()->push(0));
    p.on(*queues.back(), [&served, i](int) { ++served[i]; });
  }
  // While every source holds messages, each round of n calls serves each source once.
  std::uint64_t worst_spread = 0;
  for (std::uint64_t call = 1; call <= n * per_source / 2; ++call) {
    REQUIRE(p.try_run_one());
    const auto [lo, hi] = std::minmax_element(served.begin(), served.end());
    worst_spread = std::max(worst_spread, *hi - *lo);
  }
  CHECK(worst_spread <= 1);
  for (auto s : served) CHECK(s == per_source / 2);
}

TEST_CASE("select: the one-shot form returns the position of a ready source", "[select][one_shot]") {
  mpsc_queue<int> q1;
  bounded_mpsc_queue<int> q2(4);
  auto pair = tether::make_pair<int>();
  CHECK(tether::try_select(q1, q2, pair.second).is_empty());
  CHECK(tether::select_for(10ms, q1, q2, pair.second).is_timeout());
  CHECK(tether::select_until(std::chrono::steady_clock::now() + 5ms, q1, pair.second).is_timeout());

  REQUIRE(q2.try_push(1));
  CHECK(tether::select(q1, q2, pair.second) == 1);
  REQUIRE(q1.push(1));
  // Both ready: the start moves on, so both positions come up.
  bool saw0 = false, saw1 = false;
  for (int i = 0; i < 8; ++i) {
    const std::size_t k = tether::select(q1, q2, pair.second);
    saw0 = saw0 || k == 0;
    saw1 = saw1 || k == 1;
  }
  CHECK(saw0);
  CHECK(saw1);
  (void)q1.try_pop();
  (void)q2.try_pop();

  // Blocking path: attaches, parks, is woken by a send from another thread, detaches.
  auto& tx = pair.first;
  std::thread sender([&tx] {
    std::this_thread::sleep_for(20ms);
    (void)tx.send(9);
  });
  auto r = tether::select_for(60s, q1, q2, pair.second);
  sender.join();
  REQUIRE(r);
  CHECK(*r == 2);
  CHECK(*pair.second.try_recv() == 9);
  // Detached again: a poller may take the sources now.
  poller p;
  p.add(q1).add(q2).add(pair.second);
  CHECK(p.size() == 3);
}

TEST_CASE("select on 1,000 idle sources burns (almost) no CPU while it waits", "[select][idle]") {
  constexpr std::size_t n = 1000;
  std::vector<std::unique_ptr<mpsc_queue<int>>> queues;
  std::vector<tether::endpoint<int, int>> peers;
  std::vector<tether::endpoint<int, int>> endpoints;
  poller p;
  for (std::size_t i = 0; i < n / 2; ++i) {
    queues.push_back(std::make_unique<mpsc_queue<int>>());
    p.add(*queues.back());
    auto pair = tether::make_pair<int>(16);
    endpoints.push_back(std::move(pair.second));
    peers.push_back(std::move(pair.first));
    p.add(endpoints.back());
  }
  REQUIRE(p.size() == n);
  std::chrono::microseconds cpu{0};
  std::chrono::steady_clock::duration waited{};
  int outcome = -1;
  std::thread waiter([&] {
    const auto t0 = std::chrono::steady_clock::now();
    const auto c0 = tether_test::thread_cpu_time();
    auto r = p.wait_for(500ms);
    cpu = tether_test::thread_cpu_time() - c0;
    waited = std::chrono::steady_clock::now() - t0;
    outcome = static_cast<int>(r.status());
  });
  waiter.join();
  CHECK(outcome == static_cast<int>(status::timeout));
  CHECK(waited >= 500ms);
  INFO("CPU time while waiting: " << cpu.count() << " us");
  CHECK(cpu < 50ms);
}

TEST_CASE("poller destroyed with sources registered, signalled and removed leaks nothing", "[select][lifetime]") {
  REQUIRE(tether_test::counted::live == 0);
  {
    mpsc_queue<tether_test::counted> a, b, c;
    {
      poller p;
      p.add(a).add(b).add(c);
      REQUIRE(a.push(tether_test::counted(1)));
      REQUIRE(b.push(tether_test::counted(2)));
      CHECK(p.remove(b));  // removed while signalled: freed by the destructor
      auto r = p.try_wait();
      REQUIRE(r);
      CHECK(r->is(a));
      REQUIRE(c.push(tether_test::counted(3)));  // signalled, never collected
    }
    // Every source is free again.
    poller q;
    q.add(a).add(b).add(c);
    CHECK(q.size() == 3);
  }
  CHECK(tether_test::counted::live == 0);
}
