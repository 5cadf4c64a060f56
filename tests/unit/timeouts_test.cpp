// Timeouts at the edges, for every timed call of the library: duration::max() of every
// standard period (and duration<double>, and a picosecond count) must wait - still waiting
// after 50 ms, then released by another thread with the right status - instead of
// overflowing into "expired"; zero and negative timeouts and past deadlines try once and
// return at once; system_clock deadlines far in the future wait, far in the past do not.
#include <tether/bounded_mpsc_queue.hpp>
#include <tether/channel.hpp>
#include <tether/executor.hpp>
#include <tether/mpsc_queue.hpp>
#include <tether/receiver.hpp>
#include <tether/router.hpp>
#include <tether/select.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <iterator>
#include <latch>
#include <ratio>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "queue_test_support.hpp"

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using sys = std::chrono::system_clock;

namespace {

constexpr auto still_waiting_after = 50ms;
constexpr auto at_once = 2s;  // generous: sanitizer builds on a loaded machine

// Runs call() on another thread; checks it is still blocked after 50 ms; runs release();
// returns call()'s result (a watchdog aborts the run if it never returns).
template <class Call, class Release>
auto blocks_until_released(Call call, Release release) {
  auto f = std::async(std::launch::async, std::move(call));
  const bool finished_early = f.wait_for(still_waiting_after) == std::future_status::ready;
  CHECK_FALSE(finished_early);
  release();
  REQUIRE(f.wait_for(30s) == std::future_status::ready);
  return f.get();
}

// Runs call() here and checks it returned at once.
template <class Call>
auto returns_at_once(Call call) {
  const auto t0 = steady::now();
  auto r = call();
  CHECK(steady::now() - t0 < at_once);
  return r;
}

}  // namespace

using seconds_double = std::chrono::duration<double>;
using picoseconds = std::chrono::duration<long long, std::pico>;
using int_years = std::chrono::duration<int, std::ratio<86400 * 365>>;

#define TETHER_DURATIONS                                                                                  \
  std::chrono::nanoseconds, std::chrono::microseconds, std::chrono::milliseconds, std::chrono::seconds,  \
      std::chrono::minutes, std::chrono::hours, std::chrono::days, std::chrono::weeks, std::chrono::months, \
      std::chrono::years, seconds_double, picoseconds, int_years

// ---- queues -----------------------------------------------------------------------------

TEMPLATE_TEST_CASE("timeouts: mpsc_queue pop_for / pop_bulk_for with duration::max() wait", "[timeouts][mpsc_queue]", TETHER_DURATIONS) {
  const auto huge = TestType::max();
  tether::mpsc_queue<int> q;
  auto r = blocks_until_released([&] { return q.pop_for(huge); }, [&] { REQUIRE(q.push(7)); });
  REQUIRE(r.has_value());
  CHECK(*r == 7);

  std::vector<int> out;
  CHECK(blocks_until_released([&] { return q.pop_bulk_for(std::back_inserter(out), 8, huge); },
                              [&] { REQUIRE(q.push(8)); }) == 1);
  CHECK(out == std::vector<int>{8});

  tether::receiver<int> rx(q);
  auto c = blocks_until_released([&] { return rx.pop_for(huge); }, [&] { CHECK(q.close()); });
  CHECK(c.is_closed());
}

TEMPLATE_TEST_CASE("timeouts: bounded_mpsc_queue push_for / pop_for / pop_bulk_for with duration::max() wait", "[timeouts][bounded_mpsc_queue]", TETHER_DURATIONS) {
  const auto huge = TestType::max();
  tether::bounded_mpsc_queue<int> q(2);
  auto r = blocks_until_released([&] { return q.pop_for(huge); }, [&] { REQUIRE(q.try_push(1)); });
  CHECK(*r == 1);
  REQUIRE(q.try_push(2));
  REQUIRE(q.try_push(3));
  CHECK(q.try_push(4).is_full());
  auto p = blocks_until_released([&] { return q.push_for(4, huge); }, [&] { CHECK(*q.try_pop() == 2); });
  CHECK(p.status() == tether::status::ok);
  std::vector<int> out;
  CHECK(q.try_pop_bulk(std::back_inserter(out), 8) == 2);
  CHECK(out == std::vector<int>{3, 4});
  CHECK(blocks_until_released([&] { return q.pop_bulk_for(std::back_inserter(out), 8, huge); },
                              [&] { CHECK(q.close()); }) == 0);
  CHECK(q.pop_for(huge).is_closed());  // closed and empty: returns at once
}

TEST_CASE("timeouts: queue deadlines of other clocks, far ahead and far behind", "[timeouts][mpsc_queue][bounded_mpsc_queue]") {
  tether::mpsc_queue<int> q;
  auto r = blocks_until_released([&] { return q.pop_until(sys::time_point::max()); }, [&] { REQUIRE(q.push(1)); });
  CHECK(*r == 1);
  r = blocks_until_released([&] { return q.pop_until(steady::time_point::max()); }, [&] { REQUIRE(q.push(2)); });
  CHECK(*r == 2);
  using sys_days = std::chrono::time_point<sys, std::chrono::days>;
  r = blocks_until_released([&] { return q.pop_until(sys_days::max()); }, [&] { REQUIRE(q.push(3)); });
  CHECK(*r == 3);
  std::vector<int> out;
  CHECK(blocks_until_released([&] { return q.pop_bulk_until(std::back_inserter(out), 4, sys::time_point::max()); },
                              [&] { REQUIRE(q.push(4)); }) == 1);
  CHECK(returns_at_once([&] { return q.pop_until(sys::time_point::min()); }).is_timeout());
  CHECK(returns_at_once([&] { return q.pop_until(sys_days::min()); }).is_timeout());
  CHECK(returns_at_once([&] { return q.pop_until(steady::time_point::min()); }).is_timeout());
  CHECK(returns_at_once([&] { return q.pop_until(sys::now() - 1h); }).is_timeout());
  CHECK(returns_at_once([&] { return q.pop_bulk_until(std::back_inserter(out), 4, sys::time_point::min()); }) == 0);

  tether::bounded_mpsc_queue<int> b(2);
  REQUIRE(b.try_push(1));
  REQUIRE(b.try_push(2));
  CHECK(returns_at_once([&] { return b.push_until(3, sys::time_point::min()); }).is_timeout());
  auto p = blocks_until_released([&] { return b.push_until(3, sys::time_point::max()); }, [&] { CHECK(*b.try_pop() == 1); });
  CHECK(p.status() == tether::status::ok);
}

TEMPLATE_TEST_CASE("timeouts: zero and negative timeouts try once and return at once", "[timeouts]", std::chrono::nanoseconds,
                   std::chrono::milliseconds, std::chrono::seconds, std::chrono::days, std::chrono::years,
                   seconds_double) {
  for (const TestType d : {TestType::zero(), TestType(-1), TestType::min()}) {
    tether::mpsc_queue<int> q;
    CHECK(returns_at_once([&] { return q.pop_for(d); }).is_timeout());
    std::vector<int> out;
    CHECK(returns_at_once([&] { return q.pop_bulk_for(std::back_inserter(out), 4, d); }) == 0);
    REQUIRE(q.push(5));
    auto r = returns_at_once([&] { return q.pop_for(d); });  // ready: taken even with no time left
    CHECK(*r == 5);
    REQUIRE(q.push(6));
    CHECK(returns_at_once([&] { return q.pop_bulk_for(std::back_inserter(out), 4, d); }) == 1);

    tether::bounded_mpsc_queue<int> b(2);
    CHECK(returns_at_once([&] { return b.pop_for(d); }).is_timeout());
    CHECK(returns_at_once([&] { return b.push_for(1, d); }).status() == tether::status::ok);
    REQUIRE(b.try_push(2));
    CHECK(returns_at_once([&] { return b.push_for(3, d); }).is_timeout());

    auto [x, y] = tether::make_channel<int>(2);
    CHECK(returns_at_once([&, &yy = y] { return yy.recv_for(d); }).is_timeout());
    CHECK(returns_at_once([&, &xx = x] { return xx.send_for(1, d); }).status() == tether::status::ok);
    REQUIRE(x.try_send(2));
    CHECK(returns_at_once([&, &xx = x] { return xx.send_for(3, d); }).is_timeout());

    tether::poller p;
    tether::mpsc_queue<int> watched;
    p.add(watched);
    CHECK(returns_at_once([&] { return p.wait_for(d); }).is_timeout());
    CHECK(returns_at_once([&] { return p.run_one_for(d); }).is_timeout());

    tether::executor ex{tether::adopt_current_thread};
    CHECK(returns_at_once([&] { return ex.run_for(d); }) == 0);
    CHECK(returns_at_once([&] { return ex.run_one_for(d); }) == 0);
    int ran = 0;
    (void)ex.post([&] { ++ran; });
    CHECK(returns_at_once([&] { return ex.run_one_for(d); }) == 1);  // ready work still runs
    CHECK(ran == 1);
    auto h = ex.post_after(d, [&] { ++ran; });  // due now
    CHECK(returns_at_once([&] { return ex.run_one_for(1s); }) == 1);
    CHECK(ran == 2);
    CHECK(ex.stop());
    (void)h;
  }
}

// ---- channels ---------------------------------------------------------------------------

TEMPLATE_TEST_CASE("timeouts: channel recv_for / send_for with duration::max() wait", "[timeouts][channel]", TETHER_DURATIONS) {
  const auto huge = TestType::max();
  auto [a, b] = tether::make_channel<int>(1);
  auto r = blocks_until_released([&, &bb = b] { return bb.recv_for(huge); }, [&, &aa = a] { REQUIRE(aa.try_send(1)); });
  CHECK(*r == 1);
  REQUIRE(a.capacity() == 2);  // rounded up to a power of two
  REQUIRE(a.try_send(2));
  REQUIRE(a.try_send(3));
  CHECK(a.try_send(4).is_full());
  auto s = blocks_until_released([&, &aa = a] { return aa.send_for(4, huge); }, [&, &bb = b] { CHECK(*bb.try_recv() == 2); });
  CHECK(s.status() == tether::status::ok);
  CHECK(*b.try_recv() == 3);
  CHECK(*b.try_recv() == 4);
  auto u = blocks_until_released([&, &bb = b] { return bb.recv_until(sys::time_point::max()); }, [&, &aa = a] { CHECK(aa.close()); });
  CHECK(u.is_closed());
  CHECK(returns_at_once([&, &bb = b] { return bb.recv_until(sys::time_point::min()); }).is_closed());
}

// ---- executor ---------------------------------------------------------------------------

TEMPLATE_TEST_CASE("timeouts: executor run_for / run_one_for / join_for / post_after with duration::max()", "[timeouts][executor]", TETHER_DURATIONS) {
  const auto huge = TestType::max();
  SECTION("run_one_for waits for a task; run_for waits for the stop") {
    std::atomic<tether::executor*> owner{nullptr};
    std::latch stopped(1);
    auto f = std::async(std::launch::async, [&] {
      tether::executor ex{tether::adopt_current_thread};
      owner.store(&ex);
      const std::size_t one = ex.run_one_for(huge);
      const std::size_t rest = ex.run_for(huge);
      stopped.wait();
      return std::pair{one, rest};
    });
    while (owner.load() == nullptr) std::this_thread::yield();
    tether::executor& ex = *owner.load();
    std::this_thread::sleep_for(still_waiting_after);
    CHECK(f.wait_for(0s) == std::future_status::timeout);  // run_one_for still waiting
    std::atomic<int> ran{0};
    REQUIRE(ex.post([&] { ++ran; }));
    while (ran.load() == 0) std::this_thread::yield();
    std::this_thread::sleep_for(still_waiting_after);
    CHECK(f.wait_for(0s) == std::future_status::timeout);  // run_for still waiting
    REQUIRE(ex.post([&] { ++ran; }));
    CHECK(ex.stop());
    stopped.count_down();
    REQUIRE(f.wait_for(30s) == std::future_status::ready);
    const auto [one, rest] = f.get();
    CHECK(one == 1);
    CHECK(rest == 1);
    CHECK(ran.load() == 2);
  }
  SECTION("join_for waits for the last task") {
    tether::executor ex;
    std::latch release(1);
    std::atomic<bool> ran_last{false};
    REQUIRE(ex.post([&] { release.wait(); ran_last = true; }));
    CHECK(ex.stop());
    CHECK(blocks_until_released([&] { return ex.join_for(huge); }, [&] { release.count_down(); }));
    CHECK(ran_last.load());
    CHECK(ex.is_finished());
  }
  SECTION("post_after does not run a task due in duration::max()") {
    std::atomic<int> ran{0};
    tether::timer_handle h, g;
    {
      tether::executor ex;
      h = ex.post_after(huge, [&] { ++ran; });
      g = ex.post_at(sys::time_point::max(), [&] { ++ran; });
      std::this_thread::sleep_for(still_waiting_after);
      CHECK(ran.load() == 0);
      CHECK(h.status() == tether::timer_status::pending);
    }  // stop(drain): tasks not due are stopped, not run
    CHECK(ran.load() == 0);
    CHECK(h.status() == tether::timer_status::stopped);
    CHECK(g.status() == tether::timer_status::stopped);
  }
}

// ---- poller -----------------------------------------------------------------------------

TEMPLATE_TEST_CASE("timeouts: poller wait_for / run_one_for with duration::max() wait", "[timeouts][select]", TETHER_DURATIONS) {
  const auto huge = TestType::max();
  tether::mpsc_queue<int> a, b;
  int got = 0;
  tether::poller p;
  p.add(a);
  p.on(b, [&](int v) { got = v; });
  auto w = blocks_until_released([&] { return p.wait_for(huge); }, [&] { REQUIRE(a.push(1)); });
  REQUIRE(w.has_value());
  CHECK(*w == tether::source_id::of(a));
  CHECK(*a.try_pop() == 1);
  auto r = blocks_until_released([&] { return p.run_one_for(huge); }, [&] { REQUIRE(b.push(2)); });
  REQUIRE(r.has_value());
  CHECK(*r == tether::source_id::of(b));
  CHECK(got == 2);
  auto u = blocks_until_released([&] { return p.wait_until(sys::time_point::max()); }, [&] { REQUIRE(a.push(3)); });
  CHECK(u.has_value());
}

// ---- router -----------------------------------------------------------------------------

TEMPLATE_TEST_CASE("timeouts: router join_for with duration::max() waits for the last message", "[timeouts][router]", TETHER_DURATIONS) {
  const auto huge = TestType::max();
  tether::executor parent;
  std::latch release(1);
  tether::router<int, int> r{parent, [&](tether::subshell_id) {
    return [&](int&& v) {
      release.wait();
      return v + 1;
    };
  }};
  REQUIRE(r.send(tether::parent_subshell, 41, 1));
  CHECK(r.stop());
  CHECK(blocks_until_released([&] { return r.join_for(huge); }, [&] { release.count_down(); }));
  auto rep = r.replies().try_pop();
  REQUIRE(rep.has_value());
  CHECK(**rep == 42);
}
