// Unit tests for tether::poller and tether::select: 1, 2, 64 and 1,000 sources of every
// kind, handlers, closed sources, registration rules, adding and removing while a waiter is
// parked, round-robin order, the one-shot form, the CPU an idle waiter burns, and adopting
// executors watched beside channels and queues (tasks, delayed tasks, stop, removal).
//
// Worker threads record what they saw in atomics; the test thread asserts after joining.
#include <tether/executor.hpp>
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
  auto pair = tether::make_channel<std::string, int>();
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
  auto pair = tether::make_channel<int>();
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
  auto pair = tether::make_channel<std::string>();
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
  auto pair = tether::make_channel<int>();
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
    auto pair = tether::make_channel<int>(16);
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

// ---- adopting executors ----------------------------------------------------------------------

TEST_CASE("poller: an executor reports posted tasks; its owner runs them with try_run()", "[select][executor]") {
  tether::executor ex{tether::adopt_current_thread, {.name = "owner"}};
  poller p;
  p.add(ex);
  CHECK(p.contains(ex));
  CHECK(p.size() == 1);
  CHECK(p.try_wait().is_empty());
  CHECK(p.wait_for(5ms).is_timeout());

  int ran = 0;  // touched only by tasks: the owner thread
  std::atomic<bool> posted{false};
  std::thread poster([&] {
    std::this_thread::sleep_for(20ms);  // the owner is parked by now (not needed for correctness)
    posted = static_cast<bool>(ex.post([&ran] { ++ran; }));
  });
  auto r = p.wait_for(10s);
  poster.join();
  REQUIRE(posted);
  REQUIRE(r);
  CHECK(r->is(ex));
  CHECK(*r == source_id::of(ex));
  CHECK(ran == 0);  // add(): reported only; the caller runs the tasks
  CHECK(p.try_wait());  // level-triggered: ready until run
  CHECK(ex.try_run() == 1);
  CHECK(ran == 1);
  CHECK(p.try_wait().is_empty());
  CHECK(p.remove(ex));
  CHECK_FALSE(p.contains(ex));
}

TEST_CASE("poller::on(executor) runs the tasks several threads post, each exactly once", "[select][executor]") {
  tether::executor ex{tether::adopt_current_thread};
  poller p;
  p.on(ex);
  constexpr std::uint64_t threads = 4, per_thread = 2000;
  std::uint64_t count = 0, sum = 0;  // owner thread only
  std::atomic<std::uint64_t> refused{0};
  std::vector<std::thread> posters;
  for (std::uint64_t t = 0; t < threads; ++t)
    posters.emplace_back([&, t] {
      for (std::uint64_t i = 0; i < per_thread; ++i) {
        const std::uint64_t v = t * per_thread + i;
        if (!ex.post([&count, &sum, v] {
              ++count;
              sum += v;
            }))
          refused.fetch_add(1);
      }
    });
  int timeouts = 0;
  while (count < threads * per_thread && timeouts < 3) {
    auto r = p.run_one_for(10s);
    if (!r) {
      ++timeouts;
      continue;
    }
    CHECK(r->is(ex));
  }
  for (auto& t : posters) t.join();
  CHECK(timeouts == 0);
  CHECK(refused == 0);
  CHECK(count == threads * per_thread);
  const std::uint64_t n = threads * per_thread;
  CHECK(sum == n * (n - 1) / 2);
  CHECK(p.try_run_one().is_empty());  // nothing left
  CHECK(ex.stats().tasks_run == n);
}

TEST_CASE("poller: one loop over a channel, an mpsc_queue and an executor accounts for everything", "[select][executor]") {
  tether::executor ex{tether::adopt_current_thread, {.name = "main"}};
  auto pair = tether::make_channel<std::uint64_t>(8);  // bounded: senders wait for the loop
  mpsc_queue<std::uint64_t> q;
  constexpr std::uint64_t per_source = 3000;
  std::uint64_t from_channel = 0, channel_sum = 0, from_queue = 0, queue_sum = 0, tasks = 0, task_sum = 0;
  poller p;
  p.on(pair.second, [&](std::uint64_t v) {
     ++from_channel;
     channel_sum += v;
   }).on(q, [&](std::uint64_t v) {
     ++from_queue;
     queue_sum += v;
   }).on(ex);
  CHECK(p.size() == 3);
  std::atomic<std::uint64_t> refused{0};
  std::thread sender([&] {
    for (std::uint64_t i = 0; i < per_source; ++i)
      if (!pair.first.send(i)) refused.fetch_add(1);
  });
  std::thread pusher([&] {
    for (std::uint64_t i = 0; i < per_source; ++i)
      if (!q.push(2 * i)) refused.fetch_add(1);
  });
  std::thread poster([&] {
    for (std::uint64_t i = 0; i < per_source; ++i)
      if (!ex.post([&tasks, &task_sum, i] {
            ++tasks;
            task_sum += 3 * i;
          }))
        refused.fetch_add(1);
  });
  int timeouts = 0;
  while ((from_channel < per_source || from_queue < per_source || tasks < per_source) && timeouts < 3)
    if (!p.run_one_for(10s)) ++timeouts;
  sender.join();
  pusher.join();
  poster.join();
  const std::uint64_t base = per_source * (per_source - 1) / 2;
  CHECK(timeouts == 0);
  CHECK(refused == 0);
  CHECK(from_channel == per_source);
  CHECK(channel_sum == base);
  CHECK(from_queue == per_source);
  CHECK(queue_sum == 2 * base);
  CHECK(tasks == per_source);
  CHECK(task_sum == 3 * base);
  CHECK(p.try_run_one().is_empty());
}

TEST_CASE("poller: an executor's delayed task wakes the waiter when due, with no other event", "[select][executor][timer]") {
  tether::executor ex{tether::adopt_current_thread};
  poller p;
  p.on(ex);
  bool ran = false;
  const auto t0 = std::chrono::steady_clock::now();
  const tether::timer_handle h = ex.post_after(50ms, [&ran] { ran = true; });
  // The first turn registers the delayed task (an internal task in the queue).
  auto r = p.try_run_one();
  REQUIRE(r);
  CHECK(r->is(ex));
  CHECK_FALSE(ran);
  r = p.run_one_for(2s);
  const auto waited = std::chrono::steady_clock::now() - t0;
  REQUIRE(r);  // the executor, not a timeout
  CHECK(r->is(ex));
  CHECK(ran);
  CHECK(h.status() == tether::timer_status::ran);
  CHECK(waited >= 50ms);
  CHECK(waited < 1s);

  // add() form: wait*() reports the due executor; the caller's try_run() runs the task.
  poller w;
  CHECK(p.remove(ex));
  w.add(ex);
  int later = 0;
  (void)ex.post_after(30ms, [&later] { ++later; });
  CHECK(ex.try_run() == 0);  // registers it
  CHECK(w.try_wait().is_empty());
  const auto t1 = std::chrono::steady_clock::now();
  auto due = w.wait_for(2s);
  REQUIRE(due);
  CHECK(due->is(ex));
  CHECK(std::chrono::steady_clock::now() - t1 >= 20ms);
  CHECK(ex.try_run() == 1);
  CHECK(later == 1);
  // A caller's deadline before the delayed task's is a plain timeout.
  (void)ex.post_after(1h, [] {});
  CHECK(ex.try_run() == 0);
  CHECK(w.wait_for(20ms).is_timeout());
}

TEST_CASE("poller: a delayed task cancelled before it is due never runs", "[select][executor][timer]") {
  tether::executor ex{tether::adopt_current_thread};
  poller p;
  p.on(ex);
  bool ran = false;
  tether::timer_handle h = ex.post_at(std::chrono::steady_clock::now() + 60ms, [&ran] { ran = true; });
  REQUIRE(p.try_run_one());  // registered
  CHECK(h.cancel());
  const auto deadline = std::chrono::steady_clock::now() + 200ms;
  int turns = 0;
  while (std::chrono::steady_clock::now() < deadline)
    if (p.run_one_until(deadline)) ++turns;
  CHECK_FALSE(ran);
  CHECK(h.status() == tether::timer_status::cancelled);
  CHECK(turns <= 2);  // at most the wake-up at its (lazy) deadline: no polling
  CHECK(ex.stats().tasks_run == 0);
}

TEST_CASE("poller: stop(drain) on a watched executor runs every accepted task, then on_closed once", "[select][executor][close]") {
  tether::executor ex{tether::adopt_current_thread, {.name = "draining"}};
  mpsc_queue<int> other;
  poller p;
  int closed_calls = 0;
  std::uint64_t ran = 0;
  p.on(ex, [&] { ++closed_calls; }).add(other);
  constexpr std::uint64_t n = 500;
  tether::timer_handle far;
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<bool> late_refused{false};
  std::thread stopper([&] {
    for (std::uint64_t i = 0; i < n; ++i)
      if (ex.post([&ran] { ++ran; })) accepted.fetch_add(1);
    far = ex.post_after(1h, [] {});  // not due at the stop: dropped, reported as stopped
    ex.stop(tether::drain);
    late_refused = !ex.post([] {});  // refused once stopped
  });
  int timeouts = 0;
  while (closed_calls == 0 && timeouts < 3)
    if (!p.run_one_for(10s)) ++timeouts;
  stopper.join();
  CHECK(timeouts == 0);
  CHECK(accepted == n);
  CHECK(late_refused);
  CHECK(ran == n);
  CHECK(closed_calls == 1);
  CHECK(ex.is_finished());
  CHECK_FALSE(p.contains(ex));
  CHECK(p.size() == 1);
  CHECK(far.status() == tether::timer_status::stopped);
  CHECK(p.try_run_one().is_empty());
  CHECK(closed_calls == 1);
}

TEST_CASE("poller: only an adopting executor can be watched, and only its owner may wait", "[select][executor][registration]") {
  tether::executor own{{.name = "own-thread"}};
  poller p;
  CHECK_THROWS_AS(p.add(own), std::logic_error);
  CHECK_THROWS_AS(p.on(own), std::logic_error);
  CHECK(p.size() == 0);

  tether::executor ex{tether::adopt_current_thread, {.name = "adopted"}};
  p.add(ex);
  CHECK_THROWS_AS(p.add(ex), std::logic_error);  // one poller per source
  poller other;
  CHECK_THROWS_AS(other.on(ex), std::logic_error);
  // Another thread waiting on a poller that watches ex would read its owner-only state.
  bool threw_wrong_thread = false;
  std::thread stranger([&] {
    try {
      (void)p.try_wait();
    } catch (const tether::wrong_thread&) {
      threw_wrong_thread = true;
    }
  });
  stranger.join();
  CHECK(threw_wrong_thread);
  CHECK(p.try_wait().is_empty());  // the owner may
}

TEST_CASE("poller: removing an executor while another thread posts loses nothing", "[select][executor][dynamic]") {
  tether::executor ex{tether::adopt_current_thread};
  poller p;
  p.on(ex);
  constexpr std::uint64_t n = 20000;
  std::uint64_t ran = 0;  // owner thread only
  std::atomic<bool> removed{false};
  std::atomic<std::uint64_t> refused{0};
  std::thread poster([&] {
    for (std::uint64_t i = 0; i < n; ++i) {
      if (!ex.post([&ran] { ++ran; })) refused.fetch_add(1);
      if (i % 64 == 0) std::this_thread::yield();
    }
  });
  std::thread remover([&] {
    std::this_thread::sleep_for(5ms);
    removed = p.remove(ex);  // while the owner waits or runs a batch
  });
  // The owner keeps waiting on the poller; after the removal it is never reported again.
  while (p.contains(ex)) (void)p.run_one_for(5ms);
  remover.join();
  poster.join();
  CHECK(removed);
  CHECK(refused == 0);
  CHECK(p.try_run_one().is_empty());
  while (ex.try_run() != 0) {
  }
  CHECK(ran == n);  // the rest stayed queued and ran in the owner's own try_run()
}

TEST_CASE("poller: a task may remove its own executor from the poller", "[select][executor][dynamic]") {
  tether::executor ex{tether::adopt_current_thread};
  poller p;
  p.on(ex);
  int ran = 0;
  REQUIRE(ex.post([&] {
    ++ran;
    CHECK(p.remove(ex));  // inside the try_run() that run_one() runs: must not wait for it
  }));
  REQUIRE(ex.post([&] { ++ran; }));
  auto r = p.run_one_for(10s);
  REQUIRE(r);
  CHECK(r->is(ex));
  CHECK(ran == 2);  // the batch went on
  CHECK(p.size() == 0);
}

TEST_CASE("poller: a busy executor takes its turn with the other sources", "[select][executor][fairness]") {
  tether::executor ex{tether::adopt_current_thread};
  mpsc_queue<int> q;
  poller p;
  int tasks = 0, messages = 0;
  p.on(ex).on(q, [&](int) { ++messages; });
  for (int i = 0; i < 10000; ++i) REQUIRE(ex.post([&tasks] { ++tasks; }));
  for (int i = 0; i < 5; ++i) REQUIRE(q.push(i));
  for (int i = 0; i < 10; ++i) REQUIRE(p.try_run_one());
  CHECK(messages == 5);  // one per round
  CHECK(tasks == 5 * 64);  // one batch per round
}

TEST_CASE("select: the one-shot form takes an executor too", "[select][executor][one_shot]") {
  tether::executor ex{tether::adopt_current_thread};
  mpsc_queue<int> q;
  CHECK(tether::try_select(q, ex).is_empty());
  (void)ex.post_after(20ms, [] {});
  CHECK(ex.try_run() == 0);  // registers the delayed task
  const auto t0 = std::chrono::steady_clock::now();
  auto r = tether::select_for(5s, q, ex);
  REQUIRE(r);
  CHECK(*r == 1);
  CHECK(std::chrono::steady_clock::now() - t0 >= 15ms);
  CHECK(ex.try_run() == 1);
  REQUIRE(ex.post([] {}));
  CHECK(tether::select(q, ex) == 1);
  CHECK(ex.try_run() == 1);
}

TEST_CASE("poller watching an executor and 100 idle queues burns (almost) no CPU while it waits", "[select][executor][idle]") {
  tether::executor ex{tether::adopt_current_thread};
  std::vector<std::unique_ptr<mpsc_queue<int>>> queues;
  poller p;
  p.on(ex);
  for (int i = 0; i < 100; ++i) {
    queues.push_back(std::make_unique<mpsc_queue<int>>());
    p.add(*queues.back());
  }
  (void)ex.post_after(1h, [] {});  // a delayed task far away: no polling tick for it either
  REQUIRE(p.try_run_one());      // registers it
  const auto t0 = std::chrono::steady_clock::now();
  const auto c0 = tether_test::thread_cpu_time();
  auto r = p.run_one_for(300ms);
  const auto cpu = tether_test::thread_cpu_time() - c0;
  CHECK(r.is_timeout());
  CHECK(std::chrono::steady_clock::now() - t0 >= 300ms);
  INFO("CPU time while waiting: " << cpu.count() << " us");
  CHECK(cpu < 30ms);
}
