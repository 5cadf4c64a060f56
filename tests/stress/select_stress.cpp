// Stress tests for tether::poller: 64 sources of every kind fed by several producers and
// served by one waiter (exactly once, per-producer order, closes), round-robin fairness over
// a million events while a hot producer floods one source, a busy source that must not
// starve trickling ones, and sources removed and re-added while producers push and the
// waiter runs, and an adopting executor fed by four posters served in one loop with four
// channels (tasks, delayed tasks, then the stop) - counts prove that nothing is lost or
// delivered twice.
//
// Worker threads record what they saw in atomics / their own vectors; the test thread
// asserts after joining them.
#include <tether/executor.hpp>
#include <tether/select.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <memory>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using tether::bounded_mpsc_queue;
using tether::mpsc_queue;
using tether::poller;

using item = std::uint64_t;
constexpr item tag(item producer, item seq) { return (producer << 40) | seq; }
constexpr item tag_producer(item v) { return v >> 40; }
constexpr item tag_seq(item v) { return v & ((item{1} << 40) - 1); }

// The sources of one test: a third unbounded queues, a third bounded, a third channels.
struct source_set {
  explicit source_set(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      switch (i % 3) {
        case 0: unbounded.push_back(std::make_unique<mpsc_queue<item>>()); break;
        case 1: bounded.push_back(std::make_unique<bounded_mpsc_queue<item>>(8)); break;
        default: {
          auto pair = tether::make_channel<item>(16);
          senders.push_back(std::move(pair.first));
          receivers.push_back(std::move(pair.second));
        }
      }
    }
  }
  std::size_t size() const { return unbounded.size() + bounded.size() + receivers.size(); }
  // Blocking send to source i (any thread).
  bool send(std::size_t i, item v) {
    switch (i % 3) {
      case 0: return static_cast<bool>(unbounded[i / 3]->push(v));
      case 1: return static_cast<bool>(bounded[i / 3]->push(v));
      default: return static_cast<bool>(senders[i / 3].send(v));
    }
  }
  void close(std::size_t i) {
    switch (i % 3) {
      case 0: unbounded[i / 3]->close(); break;
      case 1: bounded[i / 3]->close(); break;
      default: senders[i / 3].close(); break;
    }
  }
  template <class F>
  void watch(poller& p, std::size_t i, F on_value, std::atomic<std::size_t>& closed) {
    auto on_closed = [&closed] { closed.fetch_add(1); };
    switch (i % 3) {
      case 0: p.on(*unbounded[i / 3], on_value, on_closed); break;
      case 1: p.on(*bounded[i / 3], on_value, on_closed); break;
      default: p.on(receivers[i / 3], on_value, on_closed); break;
    }
  }

  std::vector<std::unique_ptr<mpsc_queue<item>>> unbounded;
  std::vector<std::unique_ptr<bounded_mpsc_queue<item>>> bounded;
  std::vector<tether::endpoint<item, item>> senders, receivers;
};

}  // namespace

TEST_CASE("select stress: 64 sources of every kind, P producers, one waiter: exactly once, in order", "[select][stress]") {
  const std::size_t producers = GENERATE(1, 4);
  constexpr std::size_t n = 64;
  const item per_producer = tether_test::scaled(200000) / producers;
  CAPTURE(producers, per_producer);
  source_set sources(n);
  poller p;
  // next[s][p]: the sequence number source s must deliver next from producer p.
  std::vector<std::vector<item>> next(n, std::vector<item>(producers, 0));
  std::uint64_t count = 0, sum = 0, errors = 0;
  std::atomic<std::size_t> closed{0};
  for (std::size_t s = 0; s < n; ++s)
    sources.watch(p, s, [&, s](item v) {
      const item pr = tag_producer(v);
      if (pr >= producers || tag_seq(v) != next[s][pr]) ++errors;
      if (pr < producers) next[s][pr] = tag_seq(v) + 1;
      ++count;
      sum += v;
    }, closed);

  std::vector<std::thread> threads;
  std::atomic<item> refused{0};
  for (std::size_t pr = 0; pr < producers; ++pr)
    threads.emplace_back([&, pr] {
      // Producer pr sends its i-th item to source (i * 17 + pr) % n; per source, in order.
      std::vector<item> seq(n, 0);
      for (item i = 0; i < per_producer; ++i) {
        const std::size_t s = (i * 17 + pr) % n;
        if (!sources.send(s, tag(pr, seq[s]++))) refused.fetch_add(1);
      }
    });
  std::thread closer([&] {
    for (auto& t : threads) t.join();
    for (std::size_t s = 0; s < n; ++s) sources.close(s);
  });
  // Serve until every source reported closed (and was removed by the poller).
  std::uint64_t timeouts = 0;
  while (closed.load() < n && timeouts < 10) {
    if (!p.run_one_for(30s)) ++timeouts;
  }
  closer.join();
  CHECK(timeouts == 0);
  CHECK(refused == 0);
  CHECK(errors == 0);
  CHECK(count == producers * per_producer);
  item expected = 0;
  for (std::size_t pr = 0; pr < producers; ++pr) {
    std::vector<item> seq(n, 0);
    for (item i = 0; i < per_producer; ++i) expected += tag(pr, seq[(i * 17 + pr) % n]++);
  }
  CHECK(sum == expected);
  CHECK(p.size() == 0);
}

TEST_CASE("select stress: round-robin over 1M events while a hot producer floods one source", "[select][stress][fairness]") {
  constexpr std::size_t n = 8;
  const std::uint64_t events = tether_test::scaled(1000000, 20000);
  const std::uint64_t per_source = events / n + 1;
  CAPTURE(events);
  std::vector<std::unique_ptr<mpsc_queue<item>>> queues;
  std::vector<std::uint64_t> served(n, 0);
  poller p;
  for (std::size_t i = 0; i < n; ++i) {
    queues.push_back(std::make_unique<mpsc_queue<item>>());
    for (std::uint64_t k = 0; k < per_source; ++k) REQUIRE(queues.back()->push(k));
    p.on(*queues.back(), [&served, i](item) { ++served[i]; });
  }
  // The hot producer keeps signalling source 0 (each push may push it on the ready list
  // again) while every source stays ready: the order must stay strictly round-robin.
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> hot{0};
  std::thread hot_producer([&] {
    while (!stop.load(std::memory_order_relaxed) && hot.load(std::memory_order_relaxed) < events) {
      (void)queues[0]->push(0);
      hot.fetch_add(1, std::memory_order_relaxed);
      if (hot.load(std::memory_order_relaxed) % 64 == 0) std::this_thread::yield();
    }
  });
  std::uint64_t worst_spread = 0;
  for (std::uint64_t e = 1; e <= events; ++e) {
    REQUIRE(p.try_run_one());
    if (e % n == 0) {
      const auto [lo, hi] = std::minmax_element(served.begin(), served.end());
      worst_spread = std::max(worst_spread, *hi - *lo);
    }
  }
  stop = true;
  hot_producer.join();
  CHECK(worst_spread == 0);  // after every n events, every source was served equally
  const auto [lo, hi] = std::minmax_element(served.begin(), served.end());
  CHECK(*hi - *lo <= 1);
  CHECK(hot > 0);
}

TEST_CASE("select stress: a flooded source does not starve trickling ones", "[select][stress][fairness]") {
  constexpr std::size_t trickles = 3;
  const std::uint64_t per_trickle = tether_test::scaled(50000, 2000);
  bounded_mpsc_queue<item> busy(1024);
  std::vector<std::unique_ptr<mpsc_queue<item>>> slow;
  std::uint64_t busy_served = 0;
  std::vector<std::uint64_t> slow_served(trickles, 0);
  poller p;
  p.on(busy, [&](item) { ++busy_served; });
  for (std::size_t i = 0; i < trickles; ++i) {
    slow.push_back(std::make_unique<mpsc_queue<item>>());
    p.on(*slow.back(), [&slow_served, i](item) { ++slow_served[i]; });
  }
  std::atomic<bool> stop{false};
  std::thread flooder([&] {
    while (!stop.load(std::memory_order_relaxed)) (void)busy.push_for(item{1}, 10ms);
  });
  std::vector<std::thread> tricklers;
  for (std::size_t i = 0; i < trickles; ++i)
    tricklers.emplace_back([&, i] {
      for (item k = 0; k < per_trickle; ++k) {
        (void)slow[i]->push(k);
        if (k % 16 == 0) std::this_thread::yield();
      }
    });
  // The flooder never stops while we wait for the trickles: starvation would hang here
  // (bounded by a generous deadline instead).
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  std::uint64_t slow_total = 0;
  while (slow_total < trickles * per_trickle && std::chrono::steady_clock::now() < deadline) {
    (void)p.run_one_for(1s);
    slow_total = 0;
    for (auto s : slow_served) slow_total += s;
  }
  stop = true;
  flooder.join();
  for (auto& t : tricklers) t.join();
  CHECK(slow_total == trickles * per_trickle);
  for (auto s : slow_served) CHECK(s == per_trickle);
  CHECK(busy_served > 0);
}

TEST_CASE("select stress: sources removed and re-added while producers push and the waiter runs", "[select][stress][dynamic]") {
  constexpr std::size_t n = 8;
  const item per_producer = tether_test::scaled(100000, 5000);
  std::vector<std::unique_ptr<mpsc_queue<item>>> queues;
  // seen[q][k]: how often item k of queue q was received (by the waiter or the manager).
  std::vector<std::unique_ptr<std::atomic<std::uint8_t>[]>> seen;
  for (std::size_t i = 0; i < n; ++i) {
    queues.push_back(std::make_unique<mpsc_queue<item>>());
    seen.push_back(std::make_unique<std::atomic<std::uint8_t>[]>(per_producer));
  }
  std::atomic<std::uint64_t> by_waiter{0}, by_manager{0}, toggles{0};
  poller p;
  auto watch = [&](std::size_t i) {
    p.on(*queues[i], [&, i](item k) {
      if (k < per_producer) seen[i][k].fetch_add(1, std::memory_order_relaxed);
      by_waiter.fetch_add(1, std::memory_order_relaxed);
    });
  };
  for (std::size_t i = 0; i < n; ++i) watch(i);

  std::thread waiter([&] {
    // Until everything was received, by either consumer (bounded by a generous deadline).
    const auto deadline = std::chrono::steady_clock::now() + 120s;
    while (by_waiter.load() + by_manager.load() < n * per_producer && std::chrono::steady_clock::now() < deadline)
      (void)p.run_one_for(5ms);
  });
  std::vector<std::thread> producers;
  for (std::size_t i = 0; i < n; ++i)
    producers.emplace_back([&, i] {
      for (item k = 0; k < per_producer; ++k) {
        (void)queues[i]->push(k);
        if (k % 256 == 0) std::this_thread::yield();
      }
    });
  std::atomic<bool> producing{true};
  std::thread manager([&] {
    // Takes a source away from the waiter, receives from it directly for a moment (it is the
    // only consumer now: debug builds would throw if the waiter still touched it), gives it
    // back.
    for (std::size_t round = 0; producing.load(); ++round) {
      const std::size_t i = round % n;
      if (!p.remove(*queues[i])) continue;
      for (int k = 0; k < 64; ++k) {
        auto r = queues[i]->try_pop();
        if (!r) break;
        if (*r < per_producer) seen[i][*r].fetch_add(1, std::memory_order_relaxed);
        by_manager.fetch_add(1, std::memory_order_relaxed);
      }
      watch(i);
      toggles.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::yield();
    }
  });
  for (auto& t : producers) t.join();
  producing = false;
  manager.join();
  waiter.join();

  CHECK(by_waiter + by_manager == n * per_producer);
  std::uint64_t missing = 0, twice = 0;
  for (std::size_t i = 0; i < n; ++i)
    for (item k = 0; k < per_producer; ++k) {
      const auto c = seen[i][k].load();
      missing += c == 0 ? 1 : 0;
      twice += c > 1 ? 1 : 0;
    }
  CHECK(missing == 0);
  CHECK(twice == 0);
  CHECK(toggles > 0);
  CHECK(by_manager > 0);
}

TEST_CASE("select stress: parker listeners detached (and freed) while notifiers call them", "[select][stress][parker]") {
  // The hook under every poller: detach() must wait out a notifier inside the listener, so
  // the listener can be freed at once (ASan / TSan would see a use after free).
  struct counting_listener : tether::detail::parker_listener {
    counting_listener() {
      on_notify = [](tether::detail::parker_listener& l) noexcept {
        auto& self = static_cast<counting_listener&>(l);
        self.calls.fetch_add(1, std::memory_order_relaxed);
      };
    }
    std::atomic<std::uint64_t> calls{0};
  };
  tether::detail::parker p;
  std::atomic<bool> stop{false};
  std::latch running(2);
  std::vector<std::thread> notifiers;
  for (int t = 0; t < 2; ++t)
    notifiers.emplace_back([&] {
      running.count_down();
      while (!stop.load(std::memory_order_relaxed)) p.notify_one();
    });
  // The rounds start once both notifiers run: on a loaded machine (sanitizers, ctest -j) a new
  // thread may otherwise first run after the last round, and nothing would be exercised.
  running.wait();
  // Each round yields twice to spinning notifiers: on 2 busy cores a yield may cost a slice.
  const std::uint64_t rounds = tether_test::scaled(2000, 200);
  std::uint64_t attached = 0, calls = 0, late_calls = 0;
  for (std::uint64_t r = 0; r < rounds; ++r) {
    auto l = std::make_unique<counting_listener>();
    if (p.attach(*l)) ++attached;
    std::this_thread::yield();
    p.detach(*l);
    const std::uint64_t at_detach = l->calls.load();
    std::this_thread::yield();
    late_calls += l->calls.load() - at_detach;  // nobody may call it after detach()
    calls += at_detach;
    l.reset();
  }
  stop = true;
  for (auto& t : notifiers) t.join();
  CHECK(attached == rounds);
  CHECK(late_calls == 0);
  CHECK(calls > 0);
}

TEST_CASE("select stress: one owner loop serves an executor (4 posters) and 4 channels: exactly once, in order", "[select][stress][executor]") {
  constexpr std::size_t posters = 4, channels = 4;
  const item per_poster = tether_test::scaled(50000);
  const item per_channel = tether_test::scaled(50000);
  constexpr item delay_every = 1000;  // every 1000th post also schedules a delayed task
  const item delayed_per_poster = (per_poster + delay_every - 1) / delay_every;
  CAPTURE(per_poster, per_channel);

  tether::executor ex{tether::adopt_current_thread, {.name = "owner"}};
  std::vector<tether::endpoint<item, item>> senders, receivers;
  for (std::size_t c = 0; c < channels; ++c) {
    auto pair = tether::make_channel<item>(64);
    senders.push_back(std::move(pair.first));
    receivers.push_back(std::move(pair.second));
  }
  // Owner-thread state: written by tasks and handlers only.
  std::vector<item> task_next(posters, 0), msg_next(channels, 0);
  std::uint64_t tasks = 0, task_sum = 0, messages = 0, message_sum = 0, delayed = 0, errors = 0;
  std::atomic<std::uint64_t> delayed_ran{0};  // read by the closer
  std::atomic<std::size_t> closed{0};

  poller p;
  p.on(ex, [&closed] { closed.fetch_add(1); });
  for (std::size_t c = 0; c < channels; ++c)
    p.on(receivers[c], [&, c](item v) {
      if (tag_producer(v) != c || tag_seq(v) != msg_next[c]) ++errors;
      msg_next[c] = tag_seq(v) + 1;
      ++messages;
      message_sum += v;
    }, [&closed] { closed.fetch_add(1); });

  std::atomic<std::uint64_t> refused{0};
  std::vector<std::thread> producers;
  for (std::size_t pr = 0; pr < posters; ++pr)
    producers.emplace_back([&, pr] {
      for (item i = 0; i < per_poster; ++i) {
        const item v = tag(pr, i);
        // FIFO per posting thread: each poster's tasks run in the order posted.
        if (!ex.post([&, v] {
              if (tag_seq(v) != task_next[tag_producer(v)]) ++errors;
              task_next[tag_producer(v)] = tag_seq(v) + 1;
              ++tasks;
              task_sum += v;
            }))
          refused.fetch_add(1);
        if (i % delay_every == 0)
          (void)ex.post_after(std::chrono::microseconds(500 + i % 1500), [&] {
            ++delayed;
            delayed_ran.fetch_add(1, std::memory_order_relaxed);
          });
      }
    });
  for (std::size_t c = 0; c < channels; ++c)
    producers.emplace_back([&, c] {
      for (item i = 0; i < per_channel; ++i)
        if (!senders[c].send(tag(c, i))) refused.fetch_add(1);
    });
  // Closes every source once everything was sent and every delayed task ran (a stop would
  // drop those not yet due): the loop must then see each close, drain it and remove it.
  std::thread closer([&] {
    for (auto& t : producers) t.join();
    for (auto& s : senders) s.close();
    const auto deadline = std::chrono::steady_clock::now() + 120s;
    while (delayed_ran.load(std::memory_order_relaxed) < posters * delayed_per_poster &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(1ms);
    ex.stop(tether::drain);
  });
  std::uint64_t timeouts = 0;
  while (closed.load() < channels + 1 && timeouts < 3)
    if (!p.run_one_for(30s)) ++timeouts;
  closer.join();

  CHECK(timeouts == 0);
  CHECK(refused == 0);
  CHECK(errors == 0);
  CHECK(tasks == posters * per_poster);
  CHECK(messages == channels * per_channel);
  CHECK(delayed == posters * delayed_per_poster);
  item expected_tasks = 0, expected_messages = 0;
  for (item pr = 0; pr < posters; ++pr)
    for (item i = 0; i < per_poster; ++i) expected_tasks += tag(pr, i);
  for (item c = 0; c < channels; ++c)
    for (item i = 0; i < per_channel; ++i) expected_messages += tag(c, i);
  CHECK(task_sum == expected_tasks);
  CHECK(message_sum == expected_messages);
  CHECK(ex.is_finished());
  CHECK(ex.stats().tasks_run == posters * per_poster + posters * delayed_per_poster);
  CHECK(p.size() == 0);
}

// remove() and add() on one thread while another waits over sources that are always ready
// (closed queues; queues whose handler pushes the message back): the waiter must never touch
// an entry after remove() freed it (ASan: heap-use-after-free; TSan: a race), every id it
// reports names one of the sources, and the circulating messages are neither lost nor doubled.
TEST_CASE("select stress: remove and add race a waiter over always-ready sources", "[select][stress][dynamic][lifetime]") {
  const std::size_t rounds = tether_test::scaled(100'000);
  constexpr std::size_t n = 4;
  std::vector<std::unique_ptr<mpsc_queue<item>>> closed_q, busy_q;
  for (std::size_t i = 0; i < n; ++i) {
    closed_q.push_back(std::make_unique<mpsc_queue<item>>());
    REQUIRE(closed_q.back()->close());
    busy_q.push_back(std::make_unique<mpsc_queue<item>>());
    REQUIRE(busy_q.back()->push(item{i}));
  }
  std::vector<const void*> known;
  for (auto& q : closed_q) known.push_back(q.get());
  for (auto& q : busy_q) known.push_back(q.get());

  poller p;
  std::atomic<item> handled{0};
  const auto bounce = [&handled](mpsc_queue<item>& q) {
    return [&handled, &q](item&& v) {
      handled.fetch_add(1);
      (void)q.push(std::move(v));  // back in: the source stays ready
    };
  };
  for (std::size_t i = 0; i < n; ++i) {
    p.add(*closed_q[i]);
    p.on(*busy_q[i], bounce(*busy_q[i]));
  }

  std::atomic<bool> done{false};
  std::atomic<item> reports{0}, strangers{0}, errors{0};
  std::thread waiter([&] {
    for (item k = 0; !done.load(); ++k) {
      try {
        tether::pop_result<tether::source_id> r = tether::status::empty;
        switch (k % 3) {
          case 0: r = p.try_wait(); break;
          case 1: r = p.wait_for(1ms); break;
          default: r = p.run_one_for(1ms); break;
        }
        if (!r) continue;
        reports.fetch_add(1);
        if (std::find(known.begin(), known.end(), r->address()) == known.end()) strangers.fetch_add(1);
      } catch (...) {
        errors.fetch_add(1);
      }
    }
  });
  for (std::size_t i = 0; i < rounds; ++i) {
    const std::size_t k = i % n;
    if (i % 2 == 0) {
      CHECK(p.remove(*closed_q[k]));
      p.add(*closed_q[k]);
    } else {
      CHECK(p.remove(*busy_q[k]));
      p.on(*busy_q[k], bounce(*busy_q[k]));
    }
  }
  done.store(true);
  waiter.join();

  CHECK(errors.load() == 0);
  CHECK(strangers.load() == 0);
  CHECK(reports.load() > 0);
  CHECK(handled.load() > 0);
  CHECK(p.size() == 2 * n);
  for (std::size_t i = 0; i < n; ++i) CHECK(p.remove(*busy_q[i]));
  // Each busy queue still holds exactly its one message: none lost, none doubled.
  item sum = 0, count = 0;
  for (auto& q : busy_q)
    while (auto v = q->try_pop()) {
      sum += *v;
      ++count;
    }
  CHECK(count == n);
  CHECK(sum == n * (n - 1) / 2);
}
