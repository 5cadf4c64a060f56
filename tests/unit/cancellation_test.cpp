// Unit tests for the std::stop_token forms of the blocking queue and channel calls: a stop
// request wakes the waiter at once and the call reports cancelled; nothing is lost (the item
// stays queued, the value stays with the caller); an item ready when the stop is seen is still
// taken; a stop already requested tries once; without a request the calls behave as before.
#include <tether/bounded_mpsc_queue.hpp>
#include <tether/channel.hpp>
#include <tether/confined.hpp>
#include <tether/executor.hpp>
#include <tether/fd_source.hpp>
#include <tether/mpsc_queue.hpp>
#include <tether/receiver.hpp>
#include <tether/select.hpp>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <random>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "catch.hpp"
#include "queue_test_support.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// Requests a stop on src after `delay`, from another thread; returns the time of the request.
std::shared_future<clock_type::time_point> request_stop_after(std::stop_source& src,
                                                              std::chrono::milliseconds delay) {
  return std::async(std::launch::async, [&src, delay] {
    std::this_thread::sleep_for(delay);
    const auto at = clock_type::now();
    src.request_stop();
    return at;
  }).share();
}

// How late a woken waiter may return after the request and still count as "at once": far
// below the 10 s the waits would otherwise last, loose enough for a loaded sanitizer run.
constexpr auto prompt = 2s;

// A queue of the tested type; `capacity` applies to the bounded one only.
template <class Queue>
std::unique_ptr<Queue> make_queue(std::size_t capacity) {
  if constexpr (std::is_constructible_v<Queue, std::size_t>) return std::make_unique<Queue>(capacity);
  else return std::make_unique<Queue>();
}

}  // namespace

TEMPLATE_TEST_CASE("a stop request ends a blocked pop with cancelled, at once", "[cancel][queue]",
                   tether::mpsc_queue<std::uint64_t>, tether::bounded_mpsc_queue<std::uint64_t>) {
  auto q = make_queue<TestType>(8);
  std::stop_source src;
  auto requested = request_stop_after(src, 50ms);

  SECTION("pop") {
    const auto r = q->pop(src.get_token());
    const auto back = clock_type::now();
    CHECK(r.is_cancelled());
    CHECK(r.status() == tether::status::cancelled);
    CHECK(back - requested.get() < prompt);
  }
  SECTION("pop_for with a long timeout: cancelled, not timeout") {
    const auto r = q->pop_for(10s, src.get_token());
    const auto back = clock_type::now();
    CHECK(r.is_cancelled());
    CHECK(back - requested.get() < prompt);
  }
  SECTION("pop_until (system_clock deadline)") {
    const auto r = q->pop_until(std::chrono::system_clock::now() + 10s, src.get_token());
    CHECK(r.is_cancelled());
    CHECK(clock_type::now() - requested.get() < prompt);
  }
  SECTION("pop_bulk returns 0 and takes nothing") {
    std::vector<std::uint64_t> out;
    const std::size_t n = q->pop_bulk(std::back_inserter(out), 16, src.get_token());
    CHECK(n == 0);
    CHECK(out.empty());
    CHECK(src.stop_requested());
    CHECK(clock_type::now() - requested.get() < prompt);
  }
  // The queue keeps working after a cancelled wait: the next push is popped.
  requested.wait();
  REQUIRE(q->push(7));
  const auto r = q->pop_for(1s);
  REQUIRE(r);
  CHECK(*r == 7);
}

TEMPLATE_TEST_CASE("a stop already requested tries once: a ready item is taken, else cancelled", "[cancel][queue]",
                   tether::mpsc_queue<std::uint64_t>, tether::bounded_mpsc_queue<std::uint64_t>) {
  auto q = make_queue<TestType>(8);
  std::stop_source src;
  src.request_stop();
  const auto t0 = clock_type::now();
  CHECK(q->pop(src.get_token()).is_cancelled());
  CHECK(q->pop_for(10s, src.get_token()).is_cancelled());
  CHECK(clock_type::now() - t0 < prompt);

  REQUIRE(q->push(1));
  REQUIRE(q->push(2));
  auto first = q->pop(src.get_token());
  REQUIRE(first);
  CHECK(*first == 1);
  std::vector<std::uint64_t> out;
  CHECK(q->pop_bulk(std::back_inserter(out), 8, src.get_token()) == 1);
  CHECK(out == std::vector<std::uint64_t>{2});

  // Closed and drained wins over cancelled: the end is reported as closed.
  REQUIRE(q->close());
  CHECK(q->pop(src.get_token()).is_closed());
}

TEST_CASE("without a stop request the token forms behave as the plain ones", "[cancel][queue]") {
  tether::mpsc_queue<std::uint64_t> q;
  std::stop_source src;
  CHECK(q.pop_for(20ms, src.get_token()).is_timeout());
  std::jthread producer([&] {
    std::this_thread::sleep_for(20ms);
    (void)q.push(5);
  });
  const auto r = q.pop(src.get_token());
  REQUIRE(r);
  CHECK(*r == 5);
  // A default-constructed token can never be stopped: the plain behaviour, timeouts included.
  CHECK(q.pop_for(10ms, std::stop_token{}).is_timeout());
}

TEST_CASE("bounded push: a stop request ends the wait for room; the value stays with the caller", "[cancel][bounded]") {
  tether::bounded_mpsc_queue<std::string> q(2);
  REQUIRE(q.push(std::string("a")));
  REQUIRE(q.push(std::string("b")));
  REQUIRE(q.try_push(std::string("c")).is_full());

  std::stop_source src;
  auto requested = request_stop_after(src, 50ms);
  std::string v(100, 'x');  // long enough that a move would leave it empty
  const auto r = q.push(std::move(v), src.get_token());
  CHECK(r.is_cancelled());
  CHECK(clock_type::now() - requested.get() < prompt);
  CHECK(v == std::string(100, 'x'));

  // Timed form, stop already requested: tries once (full), then cancelled.
  CHECK(q.push_for(v, 10s, src.get_token()).is_cancelled());
  // Room made: a stop already requested still pushes (tries once).
  REQUIRE(q.pop());
  CHECK(q.push_until(v, clock_type::now() + 10s, src.get_token()));
  CHECK(q.size_approx() == 2);
}

TEST_CASE("channel: recv and a bounded send end with cancelled on a stop request", "[cancel][channel]") {
  SECTION("recv") {
    auto [a, b] = tether::make_channel<int>();
    std::stop_source src;
    auto requested = request_stop_after(src, 50ms);
    CHECK(b.recv(src.get_token()).is_cancelled());
    CHECK(clock_type::now() - requested.get() < prompt);
    CHECK(b.recv_for(10s, src.get_token()).is_cancelled());
    REQUIRE(a.send(3));
    const auto r = b.recv_until(clock_type::now() + 10s, src.get_token());
    REQUIRE(r);
    CHECK(*r == 3);
  }
  SECTION("bounded send") {
    auto [a, b] = tether::make_channel<int>(2);
    REQUIRE(a.send(1));
    REQUIRE(a.send(2));
    std::stop_source src;
    auto requested = request_stop_after(src, 50ms);
    CHECK(a.send(3, src.get_token()).is_cancelled());
    CHECK(clock_type::now() - requested.get() < prompt);
    CHECK(a.send_for(3, 10s, src.get_token()).is_cancelled());
    // Nothing lost, nothing extra: the receiver sees 1, 2 and no 3.
    CHECK(*b.recv() == 1);
    CHECK(*b.recv() == 2);
    CHECK(b.try_recv().is_empty());
  }
  SECTION("an unbounded send never waits, so it is never cancelled") {
    auto [a, b] = tether::make_channel<int>();
    std::stop_source src;
    src.request_stop();
    CHECK(a.send(4, src.get_token()));
    CHECK(*b.recv() == 4);
  }
}

// Stop requests racing a stream of pushes: every item is popped exactly once, in order, by a
// consumer whose waits are cancelled at random moments and simply retried.
TEMPLATE_TEST_CASE("stop requests racing pushes lose and duplicate nothing", "[cancel][queue][stress]",
                   tether::mpsc_queue<std::uint64_t>, tether::bounded_mpsc_queue<std::uint64_t>) {
  const std::uint64_t total = tether_test::scaled(50000, 5000);
  auto q = make_queue<TestType>(64);
  // Every wait gets its own source; all outlive the threads (a deque keeps their addresses),
  // so the stopper may request a stop on one the consumer is done with.
  std::deque<std::stop_source> sources;
  std::atomic<bool> done{false};
  std::atomic<std::stop_source*> current{nullptr};
  std::atomic<std::uint64_t> refused{0};
  std::jthread producer([&] {
    std::minstd_rand rng(7);
    for (std::uint64_t i = 0; i < total; ++i) {
      if (!q->push(i)) refused.fetch_add(1);
      if (rng() % 64 == 0) std::this_thread::yield();
    }
  });
  std::jthread stopper([&] {
    std::minstd_rand rng(11);
    while (!done.load()) {
      if (std::stop_source* s = current.load()) s->request_stop();
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
    }
  });
  std::uint64_t expect = 0, out_of_order = 0, cancelled = 0, timeouts = 0;
  while (expect < total && timeouts == 0) {
    std::stop_source& src = sources.emplace_back();
    current.store(&src);
    auto r = q->pop_for(10s, src.get_token());
    if (r) {
      out_of_order += *r != expect;
      expect = *r + 1;
    } else if (r.is_cancelled()) {
      ++cancelled;
    } else {
      ++timeouts;
    }
  }
  current.store(nullptr);
  done.store(true);
  INFO("cancelled waits: " << cancelled);
  CHECK(refused == 0);
  CHECK(timeouts == 0);
  CHECK(out_of_order == 0);
  CHECK(expect == total);
}

TEST_CASE("receiver: the token forms reach the queue", "[cancel][receiver]") {
  tether::mpsc_queue<int> q;
  tether::receiver<int> rx(q);
  std::stop_source src;
  auto requested = request_stop_after(src, 30ms);
  CHECK(rx.pop(src.get_token()).is_cancelled());
  CHECK(clock_type::now() - requested.get() < prompt);
  std::vector<int> out;
  CHECK(rx.pop_bulk_for(std::back_inserter(out), 4, 10s, src.get_token()) == 0);
  REQUIRE(q.push(9));
  const auto r = rx.pop_until(clock_type::now() + 10s, src.get_token());
  REQUIRE(r);
  CHECK(*r == 9);
}

// ---- executor::call and confined::with with a stop token ---------------------------------------

TEST_CASE("call(f, token): a stop request abandons a queued call at once; it never runs", "[cancel][call]") {
  tether::executor ex{{.name = "owner"}};
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> entered;
  REQUIRE(ex.post([&] {
    entered.set_value();
    released.wait();
  }));
  entered.get_future().wait();
  std::atomic<int> ran{0};
  std::stop_source stop;
  auto caller = std::async(std::launch::async, [&] {
    try {
      return ex.call([&] { return ++ran; }, stop.get_token());
    } catch (const tether::operation_cancelled&) {
      return -1;
    }
  });
  while (ex.stats().queue_depth == 0) std::this_thread::sleep_for(1ms);
  stop.request_stop();
  CHECK(caller.wait_for(5s) == std::future_status::ready);  // the owner is still blocked
  CHECK(caller.get() == -1);
  release.set_value();
  ex.call([] {});
  CHECK(ran == 0);
}

TEST_CASE("call(f, token): already stopped, started, or never stoppable", "[cancel][call]") {
  tether::executor ex{{.name = "owner"}};
  std::stop_source early;
  early.request_stop();
  int ran = 0;
  CHECK_THROWS_AS(ex.call([&] { return ++ran; }, early.get_token()), tether::operation_cancelled);
  CHECK(ran == 0);
  CHECK(ex.call([&] { return ++ran; }, std::stop_token{}) == 1);  // no stop state: a plain call

  std::stop_source late;
  std::promise<void> inside;
  std::promise<void> go;
  auto caller = std::async(std::launch::async, [&] {
    return ex.call([&] {
      inside.set_value();
      go.get_future().wait();
      return ++ran;
    }, late.get_token());
  });
  inside.get_future().wait();
  late.request_stop();  // too late: f runs and its caller waits for it
  go.set_value();
  CHECK(caller.get() == 2);
  CHECK_THROWS_AS(ex.call([]() -> int { throw std::runtime_error("from f"); }, late.get_token()),
                  tether::operation_cancelled);  // stopped by now: not queued
  std::stop_source fresh;
  CHECK_THROWS_WITH(ex.call([]() -> int { throw std::runtime_error("from f"); }, fresh.get_token()), "from f");
}

TEST_CASE("confined::with(f, token) and call(f, token) into a stopped executor", "[cancel][call]") {
  tether::executor ex{{.name = "owner"}};
  tether::confined<std::string> s{ex, "abc"};
  std::stop_source stop;
  CHECK(s.with([](std::string& v) { return v.size(); }, stop.get_token()) == 3);
  stop.request_stop();
  CHECK_THROWS_AS(s.with([](std::string& v) { return v.size(); }, stop.get_token()), tether::operation_cancelled);
  tether::executor gone{{.name = "gone"}};
  gone.stop();
  gone.join();
  std::stop_source fresh;
  CHECK_THROWS_AS(gone.call([] { return 1; }, fresh.get_token()), tether::executor_stopped);
}

TEST_CASE("call(f, token): stop requests racing calls never lose or repeat a result", "[cancel][call][stress]") {
  tether::executor ex{{.name = "owner"}};
  constexpr int callers = 4;
  const int per_caller = static_cast<int>(tether_test::scaled(2000, 200));
  std::atomic<long> ran{0}, returned{0}, cancelled{0}, wrong{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < callers; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937 rng(static_cast<unsigned>(c));
      for (int i = 0; i < per_caller; ++i) {
        std::stop_source stop;
        std::thread stopper;
        if (rng() % 2) stopper = std::thread([&stop, d = rng() % 50] {
          std::this_thread::sleep_for(std::chrono::microseconds(d));
          stop.request_stop();
        });
        try {
          const int v = ex.call([&, i] {
            ran.fetch_add(1);
            return i;
          }, stop.get_token());
          if (v != i) wrong.fetch_add(1);
          returned.fetch_add(1);
        } catch (const tether::operation_cancelled&) {
          cancelled.fetch_add(1);
        }
        if (stopper.joinable()) stopper.join();
      }
    });
  }
  for (auto& t : threads) t.join();
  ex.call([] {});  // every abandoned job has been reached
  CHECK(wrong == 0);
  CHECK(returned + cancelled == callers * per_caller);
  CHECK(ran == returned);
  CHECK(cancelled > 0);
}

// ---- the poller's waits and join with a stop token ---------------------------------------------

TEST_CASE("poller wait / run_one with a token: a stop request ends the wait with cancelled", "[cancel][poller]") {
  tether::mpsc_queue<int> q;
  tether::poller p;
  p.add(q);
  std::stop_source stop;
  auto waiter = std::async(std::launch::async, [&] { return p.wait(stop.get_token()).status(); });
  CHECK(waiter.wait_for(20ms) == std::future_status::timeout);  // parked
  stop.request_stop();
  CHECK(waiter.get() == tether::status::cancelled);
  // A ready source is still reported with the stop requested; nothing ready: cancelled at once.
  REQUIRE(q.push(1));
  CHECK(p.wait(stop.get_token()).has_value());
  CHECK(*q.try_pop() == 1);
  CHECK(p.run_one_for(10s, stop.get_token()).is_cancelled());
  std::stop_source unused;
  CHECK(p.wait_for(5ms, unused.get_token()).is_timeout());
}

TEST_CASE("poller with a descriptor: a stop request wakes the wait in ppoll", "[cancel][poller]") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  tether::fd_source pipe_in(fds[0], tether::fd_events::readable);
  tether::poller p;
  p.add(pipe_in);
  for (int round = 0; round < 20; ++round) {  // the request lands before, during and after the sleep
    std::stop_source stop;
    auto waiter = std::async(std::launch::async, [&] { return p.run_one(stop.get_token()).status(); });
    std::this_thread::sleep_for(std::chrono::microseconds(round * 100));
    stop.request_stop();
    REQUIRE(waiter.wait_for(5s) == std::future_status::ready);
    CHECK(waiter.get() == tether::status::cancelled);
  }
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST_CASE("join(token) gives up on a stop request, and returns true once finished", "[cancel][join]") {
  tether::executor ex{{.name = "busy"}};
  std::promise<void> release;
  REQUIRE(ex.post([f = release.get_future().share()] { f.wait(); }));
  ex.stop();
  std::stop_source stop;
  auto joiner = std::async(std::launch::async, [&] { return ex.join(stop.get_token()); });
  CHECK(joiner.wait_for(20ms) == std::future_status::timeout);
  stop.request_stop();
  CHECK_FALSE(joiner.get());
  CHECK_FALSE(ex.is_finished());
  release.set_value();
  std::stop_source fresh;
  CHECK(ex.join(fresh.get_token()));
  CHECK(ex.is_finished());
}

// ---- call_for / call_until ---------------------------------------------------------------------

TEST_CASE("call_for: the value, a timeout that abandons the call, or closed", "[cancel][call_for]") {
  tether::executor ex{{.name = "owner"}};
  auto r = ex.call_for(5s, [] { return 42; });
  REQUIRE(r.has_value());
  CHECK(*r == 42);
  CHECK(ex.call_for(5s, [] {}).has_value());  // void: std::monostate
  int x = 1;
  auto ref = ex.call_until(std::chrono::steady_clock::now() + 5s, [&]() -> int& { return x; });
  REQUIRE(ref.has_value());
  ref->get() = 7;
  CHECK(x == 7);
  CHECK_THROWS_WITH(ex.call_for(5s, []() -> int { throw std::runtime_error("from f"); }), "from f");

  // The owner is busy: the deadline passes before the call starts; it never runs.
  std::promise<void> release;
  REQUIRE(ex.post([f = release.get_future().share()] { f.wait(); }));
  std::atomic<int> ran{0};
  const auto t0 = clock_type::now();
  auto late = ex.call_for(20ms, [&] { return ++ran; });
  CHECK(late.is_timeout());
  CHECK(clock_type::now() - t0 < 2s);
  std::stop_source stop;
  auto stopped = std::async(std::launch::async, [&] { return ex.call_for(10s, [&] { return ++ran; }, stop.get_token()).status(); });
  std::this_thread::sleep_for(5ms);
  stop.request_stop();
  CHECK(stopped.get() == tether::status::cancelled);
  release.set_value();
  CHECK(*ex.call_for(5s, [&] { return ran.load(); }) == 0);  // neither abandoned call ran

  // Started before the deadline: the caller waits for it past the deadline and gets the
  // value; not started by then: timeout, and it never runs. Either way, exactly one.
  std::atomic<bool> started{false};
  auto slow = ex.call_for(5ms, [&] {
    started = true;
    std::this_thread::sleep_for(30ms);
    return 5;
  });
  ex.call([] {});  // the owner is past the job, run or skipped
  CHECK(slow.has_value() == started.load());
  if (slow.has_value()) CHECK(*slow == 5);
  ex.stop();
  ex.join();
  CHECK(ex.call_for(1s, [] { return 1; }).is_closed());
}
