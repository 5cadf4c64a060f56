// Unit tests for tether::fd_source: a poller that waits on file descriptors beside queues,
// channels and adopting executors - readable and writable interest, notify() for
// edge-triggered descriptors, wake-ups by the other sources while the waiter sleeps in
// ppoll(), timeouts, executor timers, fairness against a flooding queue, removal while the
// waiter sleeps, one-shot select, and the CPU an idle waiter burns.
#include <tether/executor.hpp>
#include <tether/fd_source.hpp>
#include <tether/select.hpp>

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using tether::fd_events;
using tether::fd_source;
using tether::mpsc_queue;
using tether::poller;
using tether::source_id;

// A non-blocking pipe, closed on destruction.
struct pipe_pair {
  pipe_pair() {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    read_end = fds[0];
    write_end = fds[1];
    for (int fd : fds) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  ~pipe_pair() {
    if (read_end >= 0) ::close(read_end);
    if (write_end >= 0) ::close(write_end);
  }
  // Any thread (no Catch assertion here: Catch is not thread-safe).
  bool put(char c = 'x') const { return ::write(write_end, &c, 1) == 1; }
  int take() const {
    char buf[64];
    const ssize_t n = ::read(read_end, buf, sizeof buf);
    return n < 0 ? 0 : static_cast<int>(n);
  }
  int read_end = -1;
  int write_end = -1;
};

}  // namespace

TEST_CASE("fd_source: readable pipe, level-triggered, then quiet", "[fd_source][smoke]") {
  pipe_pair pp;
  fd_source src(pp.read_end);
  CHECK(src.fd() == pp.read_end);
  CHECK(src.interest() == fd_events::readable);
  poller p;
  p.add(src);
  CHECK(p.try_wait().is_empty());
  CHECK(p.wait_for(20ms).is_timeout());

  REQUIRE(pp.put());
  auto r = p.wait_for(10s);
  REQUIRE(r);
  CHECK(r->is(src));
  auto e = src.try_pop();
  REQUIRE(e);
  CHECK(tether::has(*e, fd_events::readable));
  CHECK(src.try_pop().is_empty());  // taken
  // Level-triggered: unread data is reported again at the next wait.
  REQUIRE(p.wait_for(10s));
  REQUIRE(src.try_pop());
  CHECK(pp.take() == 1);
  CHECK(p.wait_for(20ms).is_timeout());
  CHECK(p.remove(src));
  CHECK(p.size() == 0);
}

TEST_CASE("fd_source: handlers receive the events", "[fd_source][handler]") {
  pipe_pair pp;
  fd_source src(pp.read_end);
  std::vector<fd_events> seen;
  int bytes = 0;
  poller p;
  p.on(src, [&](fd_events e) {
    seen.push_back(e);
    bytes += pp.take();
  });
  REQUIRE(pp.put('a'));
  REQUIRE(pp.put('b'));
  REQUIRE(p.run_one_for(10s));
  REQUIRE(seen.size() == 1);
  CHECK(tether::has(seen[0], fd_events::readable));
  CHECK(bytes == 2);
  CHECK(p.run_one_for(20ms).is_timeout());  // drained: quiet
}

TEST_CASE("fd_source: writable interest, and hangup", "[fd_source][writable]") {
  pipe_pair pp;
  fd_source out(pp.write_end, fd_events::writable);
  poller p;
  p.add(out);
  auto r = p.wait_for(10s);
  REQUIRE(r);
  auto e = out.try_pop();
  REQUIRE(e);
  CHECK(tether::has(*e, fd_events::writable));
  CHECK(!tether::has(*e, fd_events::readable));
  p.remove(out);

  fd_source in(pp.read_end);
  p.add(in);
  ::close(pp.write_end);
  pp.write_end = -1;
  REQUIRE(p.wait_for(10s));
  auto h = in.try_pop();
  REQUIRE(h);
  CHECK(tether::has(*h, fd_events::hangup));
}

TEST_CASE("fd_source: a queue push wakes a waiter sleeping in ppoll", "[fd_source][wake]") {
  pipe_pair pp;
  fd_source src(pp.read_end);
  mpsc_queue<int> q;
  poller p;
  p.add(src).add(q);
  for (int round = 0; round < 50; ++round) {
    std::thread pusher([&] {
      std::this_thread::sleep_for(1ms);
      (void)q.push(round);
    });
    const auto t0 = std::chrono::steady_clock::now();
    auto r = p.wait_for(10s);
    pusher.join();
    REQUIRE(r);
    CHECK(r->is(q));
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
    CHECK(*q.try_pop() == round);
  }
  CHECK(p.try_wait().is_empty());
}

TEST_CASE("fd_source: notify() from another thread, coalesced", "[fd_source][notify]") {
  const int efd = ::eventfd(0, EFD_NONBLOCK);  // never written: only notify() makes it ready
  REQUIRE(efd >= 0);
  {
    fd_source src(efd);
    int calls = 0;
    fd_events last = fd_events::none;
    poller p;
    p.on(src, [&](fd_events e) {
      ++calls;
      last = e;
    });
    std::thread t([&] {
      std::this_thread::sleep_for(5ms);
      src.notify();
    });
    REQUIRE(p.run_one_for(10s));
    t.join();
    CHECK(calls == 1);
    CHECK(last == fd_events::notified);
    src.notify();
    src.notify();
    src.notify();
    REQUIRE(p.run_one_for(10s));
    CHECK(calls == 2);  // three notifies before the turn: one call
    CHECK(p.run_one_for(20ms).is_timeout());
    // Unwatched: notify() only records the event.
    p.remove(src);
    src.notify();
    CHECK(src.ready());
    CHECK(*src.try_pop() == fd_events::notified);
  }
  ::close(efd);
}

TEST_CASE("fd_source: an edge-triggered descriptor served with notify()", "[fd_source][edge]") {
  // An eventfd read to zero at once plays ZMQ_FD: it says "look", once, and a queue holds the
  // work. Whoever adds work and finds the descriptor already consumed calls notify().
  const int efd = ::eventfd(0, EFD_NONBLOCK);
  REQUIRE(efd >= 0);
  {
    fd_source src(efd);
    mpsc_queue<int> work;  // stands for the socket's incoming messages
    int served = 0;
    poller p;
    p.on(src, [&](fd_events) {
      std::uint64_t v;
      (void)::read(efd, &v, sizeof v);  // consume the edge
      for (int i = 0; i < 2; ++i)       // serve a batch, leave the rest
        if (work.try_pop()) ++served;
      if (work.size_approx() != 0) src.notify();  // work left: the edge is gone, so notify
    });
    for (int i = 0; i < 7; ++i) REQUIRE(work.push(i));
    const std::uint64_t one = 1;
    REQUIRE(::write(efd, &one, sizeof one) == sizeof one);
    for (int turn = 0; turn < 4; ++turn) REQUIRE(p.run_one_for(10s));
    CHECK(served == 7);
    CHECK(p.run_one_for(20ms).is_timeout());
  }
  ::close(efd);
}

TEST_CASE("fd_source: an adopting executor's delayed task beside a quiet descriptor", "[fd_source][executor]") {
  pipe_pair pp;
  fd_source src(pp.read_end);
  tether::executor ex{tether::adopt_current_thread};
  bool ran = false;
  poller p;
  p.add(src).on(ex);
  (void)ex.post_after(30ms, [&] { ran = true; });
  const auto t0 = std::chrono::steady_clock::now();
  while (!ran) REQUIRE(p.run_one_for(10s));
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited >= 30ms);
  CHECK(waited < 5s);
  p.remove(ex);
}

TEST_CASE("fd_source: a flooding queue does not starve a descriptor", "[fd_source][fairness]") {
  pipe_pair pp;
  fd_source src(pp.read_end);
  mpsc_queue<int> flood;
  for (int i = 0; i < 10000; ++i) REQUIRE(flood.push(i));
  int popped = 0;
  bool fd_seen = false;
  poller p;
  p.on(flood, [&](int) { ++popped; }).on(src, [&](fd_events) {
    fd_seen = true;
    pp.take();
  });
  REQUIRE(pp.put());
  int turns = 0;
  while (!fd_seen && turns < 1000) {
    REQUIRE(p.run_one_for(10s));
    ++turns;
  }
  CHECK(fd_seen);
  INFO("turns before the descriptor was served: " << turns);
  CHECK(turns <= 2 * tether::detail::fd_fairness_turns + 2);
  // The one ready source is served in turn while the flood lasts.
  REQUIRE(pp.put());
  int later = 0;
  fd_seen = false;
  while (!fd_seen && later < 1000) {
    REQUIRE(p.run_one_for(10s));
    ++later;
  }
  CHECK(fd_seen);
  CHECK(later <= 2 * tether::detail::fd_fairness_turns + 2);
}

TEST_CASE("fd_source: removed while the waiter sleeps in ppoll", "[fd_source][remove]") {
  pipe_pair pp;
  fd_source src(pp.read_end);
  mpsc_queue<int> q;
  poller p;
  p.add(src).add(q);
  std::atomic<bool> removed{false};
  std::thread remover([&] {
    std::this_thread::sleep_for(20ms);
    CHECK(p.remove(src));
    removed = true;
    (void)pp.put();  // after remove(): never reported
    std::this_thread::sleep_for(20ms);
    (void)q.push(1);
  });
  auto r = p.wait_for(10s);
  remover.join();
  REQUIRE(r);
  CHECK(r->is(q));
  CHECK(removed);
  CHECK(!p.contains(src));
  CHECK(src.try_pop().is_empty());  // nothing was delivered after remove()
  // and it can be watched again
  p.add(src);
  auto again = p.wait_for(10s);
  REQUIRE(again);
}

TEST_CASE("fd_source: add() wakes a waiter that already sleeps", "[fd_source][add]") {
  pipe_pair a, b;
  fd_source first(a.read_end), second(b.read_end);
  REQUIRE(b.put());  // ready before it is watched
  poller p;
  p.add(first);
  std::thread adder([&] {
    std::this_thread::sleep_for(20ms);
    p.add(second);
  });
  auto r = p.wait_for(10s);
  adder.join();
  REQUIRE(r);
  CHECK(r->is(second));
}

TEST_CASE("fd_source: one-shot select with a queue", "[fd_source][select]") {
  pipe_pair pp;
  fd_source src(pp.read_end);
  mpsc_queue<int> q;
  CHECK(tether::try_select(src, q).is_empty());
  CHECK(tether::select_for(20ms, src, q).is_timeout());
  std::thread t([&] {
    std::this_thread::sleep_for(5ms);
    (void)pp.put();
  });
  auto r = tether::select_for(10s, src, q);
  t.join();
  REQUIRE(r);
  CHECK(*r == 0);
  REQUIRE(q.push(3));
  pp.take();
  (void)src.try_pop();
  auto r2 = tether::select_for(10s, src, q);
  REQUIRE(r2);
  CHECK(*r2 == 1);
}

TEST_CASE("fd_source: an idle waiter burns no CPU", "[fd_source][idle]") {
  pipe_pair pp;
  fd_source src(pp.read_end);
  mpsc_queue<int> q;
  poller p;
  p.add(src).add(q);
  const auto c0 = tether_test::thread_cpu_time();
  CHECK(p.wait_for(300ms).is_timeout());
  const auto cpu = tether_test::thread_cpu_time() - c0;
  INFO("CPU time while waiting: " << cpu.count() << " us");
  CHECK(cpu < 30ms);
}

TEST_CASE("fd_source: many wake-ups from several threads are all seen", "[fd_source][stress]") {
  pipe_pair pp;
  fd_source src(pp.read_end);
  mpsc_queue<int> q;
  const int per = static_cast<int>(tether_test::scaled(20000, 2000));
  constexpr int producers = 3;
  long long sum = 0;
  int got = 0;
  int notified = 0;
  poller p;
  p.on(q, [&](int v) {
     sum += v;
     ++got;
   }).on(src, [&](fd_events e) {
    if (tether::has(e, fd_events::notified)) ++notified;
    pp.take();
  });
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < producers; ++t)
    threads.emplace_back([&, t] {
      for (int i = 1; i <= per; ++i) {
        if (!q.push(i)) ++refused;
        if (i % 97 == 0) src.notify();
        if (t == 0 && i % 1000 == 0) (void)pp.put();
      }
    });
  while (got < producers * per) REQUIRE(p.run_one_for(10s));
  for (auto& th : threads) th.join();
  while (p.try_run_one()) {
  }
  CHECK(refused == 0);
  CHECK(sum == static_cast<long long>(producers) * per * (per + 1) / 2);
  CHECK(notified >= 1);
}
