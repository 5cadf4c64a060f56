// Unit tests for coroutine.hpp: tasks, spawn, sync_wait, schedule, co_call / co_with, their
// stop tokens, and the frames' lifetimes (each frame destroyed exactly once, counted) when an
// executor stops or is destroyed under a suspended chain.
#include <tether/bounded_mpsc_queue.hpp>
#include <tether/channel.hpp>
#include <tether/confined.hpp>
#include <tether/coroutine.hpp>
#include <tether/executor.hpp>
#include <tether/fd_source.hpp>
#include <tether/mpsc_queue.hpp>
#include <tether/receiver.hpp>
#include <tether/select.hpp>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <latch>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using tether_test::counted;

tether::task<int> add(int a, int b) { co_return a + b; }
tether::task<void> nothing() { co_return; }
tether::task<int> fails() {
  throw std::runtime_error("boom");
  co_return 0;
}

// Blocks an executor's owner until released: calls queued behind it stay pending.
struct blocker {
  std::promise<void> release_p;
  std::shared_future<void> release = release_p.get_future().share();
  std::promise<void> entered_p;
  void block(tether::executor& ex) {
    REQUIRE(ex.post([r = release, e = &entered_p] {
      e->set_value();
      r.wait();
    }));
    entered_p.get_future().wait();
  }
  void open() { release_p.set_value(); }
};

// Where the future's exception came from.
template <class E, class T>
bool throws_as(std::future<T>& f) {
  try {
    (void)f.get();
  } catch (const E&) {
    return true;
  } catch (...) {
  }
  return false;
}

}  // namespace

TEST_CASE("a task is lazy and sync_wait runs it to its value or exception", "[coroutine]") {
  bool started = false;
  auto body = [&]() -> tether::task<int> {
    started = true;
    co_return co_await add(20, 22);
  };
  tether::task<int> t = body();
  CHECK_FALSE(started);
  CHECK(tether::sync_wait(std::move(t)) == 42);
  CHECK(started);
  tether::sync_wait(nothing());
  CHECK_THROWS_WITH(tether::sync_wait(fails()), "boom");
  CHECK_THROWS_AS(tether::sync_wait(tether::task<int>{}), std::logic_error);
}

TEST_CASE("awaiting a task propagates its exception to the awaiting task", "[coroutine]") {
  auto outer = []() -> tether::task<std::string> {
    try {
      (void)co_await fails();
    } catch (const std::runtime_error& e) {
      co_return std::string("caught ") + e.what();
    }
    co_return "not thrown";
  };
  CHECK(tether::sync_wait(outer()) == "caught boom");
}

TEST_CASE("a long loop of awaits on tasks that finish at once keeps the stack flat", "[coroutine]") {
  // Each awaited task returns to its awaiter, which goes on without suspending: a million
  // rounds in any build mode (a transfer per round that is not a tail call would overflow).
  auto loop = []() -> tether::task<long> {
    long sum = 0;
    for (int i = 0; i < 1000000; ++i) sum += co_await add(i, 1);
    co_return sum;
  };
  CHECK(tether::sync_wait(loop()) == 1000000L * 1000001 / 2);
}

TEST_CASE("deep chains of awaited tasks complete in order", "[coroutine]") {
  // Each level is a nested call while the chain runs without suspending.
  struct rec {
    static tether::task<long> depth(int n) {
      if (n == 0) co_return 0;
      co_return 1 + co_await depth(n - 1);
    }
  };
  CHECK(tether::sync_wait(rec::depth(1000)) == 1000);
}

TEST_CASE("spawn runs a task on the executor: future and callback forms", "[coroutine]") {
  tether::executor ex{{.name = "home"}};
  auto where = [&]() -> tether::task<bool> { co_return ex.running_in_this_thread(); };
  CHECK(tether::spawn(ex, where()).get());

  std::promise<int> got;
  REQUIRE(tether::spawn(ex, add(1, 2), [&](tether::task_result<int>&& r) { got.set_value(r.value()); }));
  CHECK(got.get_future().get() == 3);

  std::future<int> f = tether::spawn(ex, fails());
  CHECK_THROWS_WITH(f.get(), "boom");

  ex.stop();
  ex.join();
  CHECK_THROWS_AS(tether::spawn(ex, add(1, 2)), tether::executor_stopped);
  bool called = false;
  CHECK(tether::spawn(ex, add(1, 2), [&](tether::task_result<int>&&) { called = true; }) == tether::status::closed);
  CHECK_FALSE(called);
}

TEST_CASE("schedule moves the chain to another executor's owner", "[coroutine]") {
  tether::executor a{{.name = "a"}}, b{{.name = "b"}};
  auto hop = [&]() -> tether::task<int> {
    int ok = 0;
    ok += a.running_in_this_thread();
    co_await tether::schedule(b);
    ok += b.running_in_this_thread();
    // A child task runs where its parent is and moves its parent with it.
    auto child = [&]() -> tether::task<void> { co_await tether::schedule(a); };
    co_await child();
    ok += a.running_in_this_thread();
    co_return ok;
  };
  CHECK(tether::spawn(a, hop()).get() == 3);
}

TEST_CASE("schedule to a stopped executor throws executor_stopped and stays home", "[coroutine]") {
  tether::executor a{{.name = "a"}}, b{{.name = "b"}};
  b.stop();
  auto t = [&]() -> tether::task<bool> {
    try {
      co_await tether::schedule(b);
    } catch (const tether::executor_stopped&) {
      co_return a.running_in_this_thread();
    }
    co_return false;
  };
  CHECK(tether::spawn(a, t()).get());
}

TEST_CASE("co_call runs on the target and resumes at home with the value or exception", "[coroutine]") {
  tether::executor home{{.name = "home"}}, target{{.name = "target"}};
  int on_target = 0;
  auto t = [&]() -> tether::task<int> {
    int v = co_await tether::co_call(target, [&] {
      on_target += target.running_in_this_thread();
      return 40;
    });
    if (!home.running_in_this_thread()) throw std::logic_error("resumed away from home");
    int& ref = co_await tether::co_call(target, [&]() -> int& { return on_target; });
    co_await tether::co_call(target, [] {});
    try {
      co_await tether::co_call(target, []() -> int { throw std::out_of_range("inner"); });
    } catch (const std::out_of_range&) {
      v += 1;
    }
    co_return v + ref;
  };
  CHECK(tether::spawn(home, t()).get() == 42);
}

TEST_CASE("co_call on the target's own thread runs inline", "[coroutine]") {
  tether::executor ex{{.name = "one"}};
  auto t = [&]() -> tether::task<std::thread::id> {
    co_return co_await tether::co_call(ex, [] { return std::this_thread::get_id(); });
  };
  const auto owner = ex.call([] { return std::this_thread::get_id(); });
  CHECK(tether::spawn(ex, t()).get() == owner);
}

TEST_CASE("co_with reaches a confined object on its owner", "[coroutine]") {
  tether::executor owner{{.name = "vm"}}, sessions{{.name = "sessions"}};
  tether::confined<std::vector<int>> vm{owner};
  auto session = [&](int id) -> tether::task<std::size_t> {
    co_return co_await tether::co_with(vm, [id](std::vector<int>& v) {
      v.push_back(id);
      return v.size();
    });
  };
  std::vector<std::future<std::size_t>> fs;
  for (int i = 0; i < 100; ++i) fs.push_back(tether::spawn(sessions, session(i)));
  std::size_t sum = 0;
  for (auto& f : fs) sum += f.get();
  CHECK(sum == 100 * 101 / 2);  // sizes 1..100, each seen once
  CHECK(vm.with([](std::vector<int>& v) { return v.size(); }) == 100);
}

TEST_CASE("co_call into a stopped target throws executor_stopped", "[coroutine]") {
  tether::executor home{{.name = "home"}}, target{{.name = "target"}};
  target.stop();
  target.join();
  auto t = [&]() -> tether::task<int> { co_return co_await tether::co_call(target, [] { return 1; }); };
  auto f = tether::spawn(home, t());
  CHECK(throws_as<tether::executor_stopped>(f));
}

TEST_CASE("stop(cancel) of the target delivers executor_stopped to the waiting frame", "[coroutine]") {
  tether::executor home{{.name = "home"}};
  auto target = std::make_unique<tether::executor>(tether::executor_options{.name = "target"});
  blocker b;
  b.block(*target);
  std::atomic<int> ran{0};
  auto t = [&]() -> tether::task<int> { co_return co_await tether::co_call(*target, [&] { return ++ran; }); };
  auto f = tether::spawn(home, t());
  while (target->stats().queue_depth == 0) std::this_thread::sleep_for(1ms);
  target->stop(tether::cancel);
  b.open();
  CHECK(throws_as<tether::executor_stopped>(f));
  CHECK(ran == 0);
}

TEST_CASE("a stop request abandons a queued co_call: it resumes at once and the call never runs", "[coroutine][cancel]") {
  tether::executor home{{.name = "home"}}, target{{.name = "target"}};
  blocker b;
  b.block(target);
  std::atomic<int> ran{0};
  std::stop_source stop;
  auto t = [&]() -> tether::task<int> { co_return co_await tether::co_call(target, [&] { return ++ran; }); };
  auto f = tether::spawn(home, t(), stop.get_token());
  while (target.stats().queue_depth == 0) std::this_thread::sleep_for(1ms);
  stop.request_stop();
  CHECK(f.wait_for(5s) == std::future_status::ready);  // while the target is still blocked
  CHECK(throws_as<tether::operation_cancelled>(f));
  b.open();
  target.call([] {});  // the abandoned job has been reached
  CHECK(ran == 0);
}

// The chain's stop callback fires the queued call's hook on the requesting thread; when the
// chain's home has finished, the refused resumption destroys the chain right there, inside
// that callback - its await and its stop registration go while the callback runs.
TEST_CASE("a stop request whose resumption is refused destroys the chain on the requesting thread, once", "[coroutine][cancel][frames]") {
  const long live_before = counted::live.load();
  const long twice_before = counted::destroyed_twice.load();
  tether::executor target{{.name = "target"}};
  blocker b;
  b.block(target);
  std::atomic<int> ran{0};
  std::stop_source stop;
  std::future<int> f;
  {
    tether::executor home{{.name = "home"}};
    auto t = [&]() -> tether::task<int> {
      counted frame_local;
      co_return co_await tether::co_call(target, [&] { return ++ran; });
    };
    f = tether::spawn(home, t(), stop.get_token());
    while (target.stats().queue_depth < 1) std::this_thread::sleep_for(1ms);
    CHECK(counted::live.load() - live_before == 1);  // suspended in the call
    home.stop();
    home.join();  // finished: nobody may resume the chain there any more
    stop.request_stop();  // cancels the call; the chain is destroyed on this thread
    CHECK(counted::live.load() == live_before);
  }
  CHECK(f.wait_for(5s) == std::future_status::ready);
  CHECK(throws_as<tether::executor_stopped>(f));
  b.open();
  target.call([] {});  // the abandoned job has been reached
  CHECK(ran == 0);
  CHECK(counted::destroyed_twice.load() == twice_before);
}

TEST_CASE("a stop already requested cancels without queueing; a started call completes", "[coroutine][cancel]") {
  tether::executor home{{.name = "home"}}, target{{.name = "target"}};
  std::atomic<int> ran{0};
  std::stop_source early;
  early.request_stop();
  auto t = [&]() -> tether::task<int> { co_return co_await tether::co_call(target, [&] { return ++ran; }); };
  auto f = tether::spawn(home, t(), early.get_token());
  CHECK(throws_as<tether::operation_cancelled>(f));
  CHECK(ran == 0);

  // Requested while f runs: the frame waits and gets the result.
  std::stop_source late;
  std::promise<void> inside;
  std::promise<void> go;
  auto g = [&]() -> tether::task<int> {
    co_return co_await tether::co_call(target, [&] {
      inside.set_value();
      go.get_future().wait();
      return ++ran;
    });
  };
  auto fg = tether::spawn(home, g(), late.get_token());
  inside.get_future().wait();
  late.request_stop();
  go.set_value();
  CHECK(fg.get() == 1);

  auto token_of = []() -> tether::task<bool> { co_return (co_await tether::get_stop_token()).stop_requested(); };
  CHECK(tether::spawn(home, token_of(), early.get_token()).get());
  CHECK_FALSE(tether::spawn(home, token_of()).get());
}

TEST_CASE("stop(cancel) of the home destroys suspended frames exactly once", "[coroutine][frames]") {
  const long live_before = counted::live.load();
  tether::executor target{{.name = "target"}};
  blocker b;
  b.block(target);
  std::vector<std::future<int>> fs;
  std::atomic<int> resumed{0};
  {
    tether::executor home{{.name = "home"}};
    auto t = [&](int i) -> tether::task<int> {
      counted local(static_cast<std::uint64_t>(i));
      auto inner = [&]() -> tether::task<int> {
        counted inner_local(1);
        co_return co_await tether::co_call(target, [] { return 1; });
      };
      int v = co_await inner();
      resumed.fetch_add(1);  // must not happen: home is gone when the call completes
      co_return v + static_cast<int>(local.value);
    };
    for (int i = 0; i < 50; ++i) fs.push_back(tether::spawn(home, t(i)));
    while (target.stats().queue_depth < 50) std::this_thread::sleep_for(1ms);
    CHECK(counted::live.load() - live_before == 100);  // two frames per chain, suspended
    home.stop(tether::cancel);
  }  // home destroyed while its chains wait on target
  b.open();
  target.call([] {});  // every call ran and tried to resume its frame
  for (auto& f : fs) CHECK(throws_as<tether::executor_stopped>(f));
  CHECK(resumed == 0);
  CHECK(counted::live.load() == live_before);
  CHECK(counted::destroyed_twice.load() == 0);
}

TEST_CASE("a resumption destroyed unrun by stop(cancel) destroys the chain on the owner", "[coroutine][frames]") {
  const long live_before = counted::live.load();
  tether::executor home{{.name = "home"}};
  blocker b;
  b.block(home);  // the first resumption of each chain waits behind this
  std::vector<std::future<void>> fs;
  auto t = []() -> tether::task<void> {
    counted local(7);
    co_return;
  };
  for (int i = 0; i < 20; ++i) fs.push_back(tether::spawn(home, t()));
  home.stop(tether::cancel);
  b.open();
  home.join();
  for (auto& f : fs) CHECK(throws_as<tether::executor_stopped>(f));
  CHECK(counted::live.load() == live_before);
  CHECK(counted::destroyed_twice.load() == 0);
}

TEST_CASE("stop(drain) of the home runs accepted resumptions; later ones destroy the chain", "[coroutine][frames]") {
  const long live_before = counted::live.load();
  tether::executor target{{.name = "target"}};
  blocker b;
  b.block(target);
  tether::executor home{{.name = "home"}};
  std::atomic<int> finished{0};
  auto t = [&]() -> tether::task<int> {
    counted local(1);
    int v = co_await tether::co_call(target, [] { return 5; });
    finished.fetch_add(1);
    co_return v;
  };
  auto f = tether::spawn(home, t());
  while (target.stats().queue_depth == 0) std::this_thread::sleep_for(1ms);
  home.stop();  // drain: the frame is suspended, not queued; its resumption will be refused
  home.join();
  b.open();
  CHECK(throws_as<tether::executor_stopped>(f));
  CHECK(finished == 0);
  CHECK(counted::live.load() == live_before);
}

TEST_CASE("an adopted executor is a home: its owner runs the frames in run()", "[coroutine]") {
  tether::executor main_ex{tether::adopt_current_thread, {.name = "main"}};
  tether::executor worker{{.name = "worker"}};
  const auto me = std::this_thread::get_id();
  int result = 0;
  auto t = [&]() -> tether::task<void> {
    int v = co_await tether::co_call(worker, [] { return 21; });
    if (std::this_thread::get_id() != me) throw std::logic_error("not on the adopting thread");
    result = 2 * v;
    main_ex.stop();
  };
  REQUIRE(tether::spawn(main_ex, t(), [](tether::task_result<void>&& r) { r.value(); }));
  main_ex.run();
  CHECK(result == 42);
}

TEST_CASE("sync_wait on an executor's owner that the task must reach reports a deadlock", "[coroutine][deadlock]") {
  tether::executor ex{{.name = "owner"}};
  auto needs_owner = [&]() -> tether::task<int> {
    co_await tether::schedule(ex);
    co_return 1;
  };
  // Inside one of ex's tasks, ex cannot run what the awaited task posts to it.
  auto r = ex.call([&] {
    try {
      return tether::sync_wait(needs_owner());
    } catch (const tether::deadlock_error&) {
      return -1;
    }
  });
  CHECK(r == -1);
  // co_call to the same owner from there runs inline instead: no deadlock.
  auto inline_call = [&]() -> tether::task<int> { co_return co_await tether::co_call(ex, [] { return 7; }); };
  CHECK(ex.call([&] { return tether::sync_wait(inline_call()); }) == 7);
}

TEST_CASE("a blocking call cycle through a co_call still reports deadlock_error", "[coroutine][deadlock]") {
  tether::executor a{{.name = "a"}}, b{{.name = "b"}};
  // A task on a sync_waits; the awaited co_call runs on b, whose f blocks in a.call(): a's owner
  // is blocked in sync_wait, so a.call() can never run. The detector sees a -> b -> a.
  auto t = [&]() -> tether::task<int> {
    co_return co_await tether::co_call(b, [&] { return a.call([] { return 1; }); });
  };
  auto r = a.call([&] {
    try {
      return tether::sync_wait(t());
    } catch (const tether::deadlock_error&) {
      return -1;
    }
  });
  CHECK(r == -1);
}

TEST_CASE("a child that moves the chain and ends at once takes its awaiter along", "[coroutine]") {
  tether::executor a{{.name = "a"}}, b{{.name = "b"}};
  auto round_trips = [&]() -> tether::task<int> {
    int wrong = 0;
    for (int i = 0; i < 2000; ++i) {
      auto to_b = [&]() -> tether::task<void> { co_await tether::schedule(b); };
      co_await to_b();  // may end on b before the awaiter has finished suspending on a
      wrong += !b.running_in_this_thread();
      co_await tether::schedule(a);
      wrong += !a.running_in_this_thread();
    }
    co_return wrong;
  };
  CHECK(tether::spawn(a, round_trips()).get() == 0);
}

TEST_CASE("co_pop and co_recv take items in order, then report closed", "[coroutine][receive]") {
  tether::executor home{{.name = "home"}};
  tether::mpsc_queue<int> q;
  auto consume = [&]() -> tether::task<std::vector<int>> {
    std::vector<int> got;
    for (;;) {
      auto r = co_await tether::co_pop(q);
      if (r.is_closed()) break;
      got.push_back(*r);
    }
    co_return got;
  };
  auto f = tether::spawn(home, consume());
  for (int i = 0; i < 1000; ++i) {
    REQUIRE(q.push(i));
    if (i % 100 == 0) std::this_thread::sleep_for(1ms);  // let it suspend now and then
  }
  q.close();
  std::vector<int> got = f.get();
  REQUIRE(got.size() == 1000);
  for (int i = 0; i < 1000; ++i) CHECK(got[static_cast<std::size_t>(i)] == i);

  auto [left, right] = tether::make_channel<int, std::string>(4);
  auto echo = [&r = right]() -> tether::task<int> {
    auto m = co_await tether::co_recv(r);
    co_return *m * 2;
  };
  auto g = tether::spawn(home, echo());
  std::this_thread::sleep_for(2ms);
  REQUIRE(left.send(21));
  CHECK(g.get() == 42);

  tether::bounded_mpsc_queue<int> bq(8);
  tether::mpsc_queue<int> viewed;
  tether::receiver<int> rx(viewed);
  auto both = [&]() -> tether::task<int> {
    auto x = co_await tether::co_pop(bq);
    auto y = co_await tether::co_pop(rx);
    co_return *x + *y;
  };
  auto h = tether::spawn(home, both());
  REQUIRE(bq.push(1));
  REQUIRE(viewed.push(2));
  CHECK(h.get() == 3);
}

TEST_CASE("a stop request ends a co_pop that waits; an item already there is still taken", "[coroutine][receive][cancel]") {
  tether::executor home{{.name = "home"}};
  tether::mpsc_queue<int> q;
  std::stop_source stop;
  auto one = [&]() -> tether::task<tether::status> { co_return (co_await tether::co_pop(q)).status(); };
  auto f = tether::spawn(home, one(), stop.get_token());
  std::this_thread::sleep_for(5ms);
  stop.request_stop();
  CHECK(f.get() == tether::status::cancelled);
  REQUIRE(q.push(7));  // nothing was taken; the queue is open and still usable
  CHECK(tether::spawn(home, one(), stop.get_token()).get() == tether::status::ok);
  CHECK(q.size_approx() == 0);
}

TEST_CASE("a source already watched cannot be awaited", "[coroutine][receive]") {
  tether::executor home{{.name = "home"}};
  tether::mpsc_queue<int> q;
  std::stop_source stop;
  auto one = [&]() -> tether::task<tether::status> { co_return (co_await tether::co_pop(q)).status(); };
  // Both run on home, in order: the first hangs its listener on q and suspends, then the
  // second starts and finds the listener there.
  auto first = tether::spawn(home, one(), stop.get_token());
  auto second = tether::spawn(home, one(), stop.get_token());
  CHECK_THROWS_AS(second.get(), std::logic_error);
  stop.request_stop();
  CHECK(first.get() == tether::status::cancelled);
}

TEST_CASE("a frame awaiting a queue when its home is destroyed is destroyed once, and told", "[coroutine][receive][frames]") {
  const long live_before = counted::live.load();
  tether::mpsc_queue<int> q;
  std::future<int> f;
  {
    tether::executor home{{.name = "home"}};
    auto t = [&]() -> tether::task<int> {
      counted local(3);
      auto r = co_await tether::co_pop(q);
      co_return *r;
    };
    f = tether::spawn(home, t());
    std::this_thread::sleep_for(5ms);
  }
  REQUIRE(q.push(1));  // the notify finds no home: the chain is destroyed, not resumed
  CHECK(throws_as<tether::executor_stopped>(f));
  for (int i = 0; i < 1000 && counted::live.load() != live_before; ++i) std::this_thread::sleep_for(1ms);
  CHECK(counted::live.load() == live_before);
}

TEST_CASE("co_wait and co_run_one await a poller's next ready source", "[coroutine][poller]") {
  tether::executor home{{.name = "home"}};
  tether::mpsc_queue<int> a, b;
  tether::poller p;
  p.add(a).add(b);
  auto which = [&]() -> tether::task<bool> {
    auto r = co_await tether::co_wait(p);
    co_return r.has_value() && *r == tether::source_id::of(b);
  };
  auto f = tether::spawn(home, which());
  std::this_thread::sleep_for(5ms);  // suspended on the poller's ready list (or not yet: either way)
  REQUIRE(b.push(1));
  CHECK(f.get());
  CHECK(*b.try_pop() == 1);

  tether::poller handlers;
  int sum = 0;
  tether::mpsc_queue<int> c;
  handlers.on(c, [&](int v) { sum += v; });
  auto run_two = [&]() -> tether::task<int> {
    for (int i = 0; i < 2; ++i) (void)co_await tether::co_run_one(handlers);  // handlers run here, on home
    co_return sum;
  };
  auto g = tether::spawn(home, run_two());
  REQUIRE(c.push(20));
  std::this_thread::sleep_for(2ms);
  REQUIRE(c.push(22));
  CHECK(g.get() == 42);

  std::stop_source stop;
  auto cancelled = tether::spawn(home, which(), stop.get_token());
  std::this_thread::sleep_for(2ms);
  stop.request_stop();
  CHECK_FALSE(cancelled.get());  // cancelled: no source

  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  tether::fd_source pipe_in(fds[0]);
  tether::poller with_fd;
  with_fd.add(pipe_in);
  auto refused = [&]() -> tether::task<void> { (void)co_await tether::co_wait(with_fd); };
  auto h = tether::spawn(home, refused());
  CHECK_THROWS_AS(h.get(), std::logic_error);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST_CASE("without a token of its own a chain observes its executor's stop(cancel)", "[coroutine][cancel]") {
  tether::executor target{{.name = "target"}};
  blocker b;
  b.block(target);
  std::atomic<int> ran{0};
  std::future<int> f;
  {
    tether::executor home{{.name = "home"}};
    auto t = [&]() -> tether::task<int> {
      co_return co_await tether::co_call(target, [&] { return ++ran; });
    };
    f = tether::spawn(home, t());
    while (target.stats().queue_depth == 0) std::this_thread::sleep_for(1ms);
    const auto t0 = std::chrono::steady_clock::now();
    home.stop(tether::cancel);  // the pending call is abandoned at once, the frame destroyed
    CHECK(f.wait_for(5s) == std::future_status::ready);  // while target is still blocked
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  }
  CHECK(throws_as<tether::executor_stopped>(f));
  b.open();
  target.call([] {});
  CHECK(ran == 0);  // abandoned: it never ran
}

TEST_CASE("co_push waits for room without a thread: many frames, every item once, each frame's in order",
          "[coroutine][send]") {
  tether::executor home{{.name = "home"}};
  tether::bounded_mpsc_queue<std::uint64_t> q(4);
  constexpr int frames = 200;
  constexpr int per_frame = 50;
  std::atomic<int> sent{0};
  auto produce = [&](std::uint64_t id) -> tether::task<void> {
    for (std::uint64_t i = 0; i < per_frame; ++i) {
      const tether::push_result r = co_await tether::co_push(q, id << 32 | i);
      if (r.status() == tether::status::ok) sent.fetch_add(1);
    }
  };
  std::vector<std::future<void>> done;
  for (int p = 0; p < frames; ++p) done.push_back(tether::spawn(home, produce(static_cast<std::uint64_t>(p))));
  // The ring holds 4: every other frame is suspended, and home's thread is free for more work.
  CHECK(home.call([] { return 7; }) == 7);
  CHECK(q.size_approx() == 4);
  std::vector<std::uint64_t> next(frames, 0);
  std::uint64_t taken = 0;
  bool in_order = true;
  while (taken < static_cast<std::uint64_t>(frames) * per_frame) {
    auto r = q.pop_for(5s);
    REQUIRE(r);
    const std::uint64_t id = *r >> 32, seq = *r & 0xffffffffu;
    if (seq != next[id]) in_order = false;
    next[id] = seq + 1;
    ++taken;
  }
  for (auto& f : done) f.get();
  CHECK(in_order);
  CHECK(sent.load() == frames * per_frame);
  CHECK(!q.try_pop());
}

TEST_CASE("a co_push that waits ends on a stop request or the close, handing the item back", "[coroutine][send][cancel]") {
  tether::executor home{{.name = "home"}};
  tether::bounded_mpsc_queue<std::string> q(2);
  REQUIRE(q.push("a"));
  REQUIRE(q.push("b"));
  std::stop_source stop;
  std::string kept = "kept by the caller";
  auto one = [&]() -> tether::task<tether::status> { co_return (co_await tether::co_push(q, std::move(kept))).status(); };
  auto f = tether::spawn(home, one(), stop.get_token());
  CHECK(f.wait_for(20ms) == std::future_status::timeout);  // waiting for room
  stop.request_stop();
  CHECK(f.get() == tether::status::cancelled);
  CHECK(kept == "kept by the caller");  // not moved from
  CHECK(q.size_approx() == 2);

  // A stop already requested: cancelled without waiting. Room already there: ok even so.
  CHECK(tether::spawn(home, one(), stop.get_token()).get() == tether::status::cancelled);
  auto g = tether::spawn(home, one());
  CHECK(g.wait_for(20ms) == std::future_status::timeout);
  q.close();
  CHECK(g.get() == tether::status::closed);
  CHECK(kept == "kept by the caller");
  CHECK(*q.try_pop() == "a");
  CHECK(*q.try_pop() == "b");
  CHECK(q.try_pop().is_closed());
}

TEST_CASE("co_send waits for room on a bounded channel, never on an unbounded one", "[coroutine][send]") {
  tether::executor home{{.name = "home"}};
  auto [left, right] = tether::make_channel<int, int>(2);
  auto send_all = [&l = left]() -> tether::task<int> {
    int ok = 0;
    for (int i = 0; i < 100; ++i)
      if (co_await tether::co_send(l, i)) ++ok;
    co_return ok;
  };
  auto f = tether::spawn(home, send_all());
  long sum = 0;
  for (int i = 0; i < 100; ++i) {
    auto r = right.recv_for(5s);
    REQUIRE(r);
    CHECK(*r == i);
    sum += *r;
  }
  CHECK(f.get() == 100);
  CHECK(sum == 4950);

  auto [a, b] = tether::make_channel<std::string, int>();
  auto unbounded = [&a = a]() -> tether::task<int> {
    int ok = 0;
    for (int i = 0; i < 1000; ++i)
      if (co_await tether::co_send(a, std::string(1, 'x'))) ++ok;
    co_return ok;
  };
  CHECK(tether::spawn(home, unbounded()).get() == 1000);
  CHECK(b.pending_approx() == 1000);
}

TEST_CASE("a frame awaiting room when its home is destroyed is destroyed once; the queue goes on",
          "[coroutine][send][frames]") {
  const long live_before = counted::live.load();
  tether::bounded_mpsc_queue<int> q(2);
  REQUIRE(q.push(1));
  REQUIRE(q.push(2));
  std::vector<std::future<tether::push_result>> fs;
  {
    tether::executor home{{.name = "home"}};
    auto t = [&](int v) -> tether::task<tether::push_result> {
      counted local(v);
      co_return co_await tether::co_push(q, v);
    };
    for (int i = 0; i < 10; ++i) fs.push_back(tether::spawn(home, t(10 + i)));
    CHECK(home.call([] { return true; }));  // every frame has run up to its wait
  }
  // The consumer's wake-up finds no home: the chains are destroyed, not resumed.
  CHECK(*q.try_pop() == 1);
  CHECK(*q.try_pop() == 2);
  CHECK(!q.try_pop());
  for (auto& f : fs) CHECK(throws_as<tether::executor_stopped>(f));
  for (int i = 0; i < 1000 && counted::live.load() != live_before; ++i) std::this_thread::sleep_for(1ms);
  CHECK(counted::live.load() == live_before);
  REQUIRE(q.push(3));  // a push from a thread still works after the frames left the list
  CHECK(*q.try_pop() == 3);
}
