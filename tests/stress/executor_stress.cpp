// Stress tests for tether::executor: exactly-once and FIFO per poster under many posters; no
// lost wake-up through the wake fd while posters race a foreign epoll loop; stop(drain) and
// stop(cancel) racing posters, submitters and callers account for every accepted task;
// delayed tasks from many threads run exactly once, never early; and random cross-calls
// between executors never hang (every cycle is reported instead).
#include <tether/executor.hpp>

#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <latch>
#include <random>
#include <string_view>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {
using namespace std::chrono_literals;
using tether::executor;
using tether_test::scaled;
}  // namespace

TEST_CASE("executor stress: many posters, exactly once, FIFO per poster", "[executor][stress]") {
  constexpr int posters = 8;
  const std::uint64_t per_poster = scaled(200000);
  executor ex{{.name = "fifo"}};
  std::vector<std::uint64_t> next(posters, 0);  // owner only
  std::uint64_t out_of_order = 0, total = 0, sum = 0;
  std::atomic<std::uint64_t> refused{0};
  std::latch go{posters};
  std::vector<std::thread> threads;
  for (int p = 0; p < posters; ++p)
    threads.emplace_back([&, p] {
      go.arrive_and_wait();
      for (std::uint64_t i = 0; i < per_poster; ++i)
        if (!ex.post([&, p, i] {
              out_of_order += next[p] != i;
              next[p] = i + 1;
              ++total;
              sum += i;
            }))
          refused.fetch_add(1);  // (assertions stay on the test thread)
    });
  for (auto& t : threads) t.join();
  ex.call([] {});
  CHECK(refused == 0);
  CHECK(out_of_order == 0);
  CHECK(total == posters * per_poster);
  CHECK(sum == posters * (per_poster * (per_poster - 1) / 2));
  CHECK(ex.stats().tasks_run == posters * per_poster + 1);
}

TEST_CASE("executor stress: the wake fd loses no wake-up under concurrent posts", "[executor][stress][fd]") {
  constexpr int posters = 4;
  const std::uint64_t per_poster = scaled(50000, 2000);
  executor ex{tether::adopt_current_thread, {.name = "epoll-loop", .wake_fd = true}};
  const int epfd = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ::epoll_ctl(epfd, EPOLL_CTL_ADD, ex.wake_fd(), &ev);

  std::uint64_t received = 0;
  std::vector<std::thread> threads;
  for (int p = 0; p < posters; ++p)
    threads.emplace_back([&, p] {
      std::minstd_rand rng(static_cast<unsigned>(p));
      for (std::uint64_t i = 0; i < per_poster; ++i) {
        (void)ex.post([&received] { ++received; });
        if (rng() % 64 == 0) std::this_thread::yield();  // let the loop go idle now and then
      }
    });
  const std::uint64_t expected = posters * per_poster;
  int stalls = 0, wakeups = 0;
  while (received < expected) {
    // A lost wake-up shows as a 10 s stall with work pending.
    const int n = ::epoll_wait(epfd, &ev, 1, 10000);
    if (n == 0) {
      ++stalls;
      break;
    }
    ++wakeups;
    ex.try_run();
  }
  for (auto& t : threads) t.join();
  CHECK(stalls == 0);
  CHECK(received == expected);
  ex.try_run();
  CHECK(::epoll_wait(epfd, &ev, 1, 0) == 0);  // quiet once drained
  CHECK(wakeups > 0);
  ::close(epfd);
}

TEST_CASE("executor stress: stop racing posters accounts for every accepted task", "[executor][stress]") {
  const int rounds = static_cast<int>(scaled(40, 8));
  for (int round = 0; round < rounds; ++round) {
    const bool cancel = round % 2 == 1;
    std::atomic<std::uint64_t> accepted{0}, ran{0};
    std::atomic<std::uint64_t> futures_ok{0}, futures_stopped{0}, submit_refused{0};
    std::atomic<std::uint64_t> calls_ok{0}, calls_stopped{0}, calls_refused{0};
    {
      executor ex{{.name = cancel ? "cancel-race" : "drain-race"}};
      std::atomic<bool> stop_now{false};
      std::vector<std::thread> threads;
      for (int p = 0; p < 3; ++p)
        threads.emplace_back([&, p] {
          std::vector<std::future<int>> futures;
          for (int i = 0; !stop_now.load() || i < 100; ++i) {
            if (i > 20000) break;
            if (p == 0) {
              if (ex.post([&ran] { ran.fetch_add(1); })) accepted.fetch_add(1);
            } else if (p == 1) {
              try {
                futures.push_back(ex.submit([i] { return i; }));
              } catch (const tether::executor_stopped&) {
                submit_refused.fetch_add(1);
              }
            } else {
              try {
                ex.call([] {});
                calls_ok.fetch_add(1);
              } catch (const tether::executor_stopped& e) {
                // Refused at the door (never accepted) or accepted and then cancelled.
                if (std::string_view(e.what()).find("refused") != std::string_view::npos)
                  calls_refused.fetch_add(1);
                else
                  calls_stopped.fetch_add(1);
              }
            }
          }
          for (auto& f : futures) {
            try {
              f.get();
              futures_ok.fetch_add(1);
            } catch (const tether::executor_stopped&) {
              futures_stopped.fetch_add(1);
            }
          }
        });
      std::this_thread::sleep_for(2ms);
      ex.stop(cancel ? tether::cancel : tether::drain);
      stop_now = true;
      for (auto& t : threads) t.join();
      ex.join();
      const auto s = ex.stats();
      // Every accepted post ran or was cancelled; nothing is unaccounted for.
      CHECK(s.tasks_run + s.tasks_cancelled == accepted + futures_ok + futures_stopped + calls_ok + calls_stopped);
      CHECK(s.tasks_run == ran + futures_ok + calls_ok);
      if (!cancel) {
        CHECK(ran == accepted);
        CHECK(futures_stopped == 0);
        CHECK(calls_stopped == 0);
      }
    }
  }
}

TEST_CASE("executor stress: delayed tasks from many threads run once, never early", "[executor][stress][timer]") {
  constexpr int posters = 4;
  const int per_poster = static_cast<int>(scaled(2000, 200));
  executor ex{{.name = "timers"}};
  std::atomic<int> ran{0}, early{0}, cancelled_ran{0};
  std::atomic<int> cancelled{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < posters; ++p)
    threads.emplace_back([&, p] {
      std::minstd_rand rng(static_cast<unsigned>(p) + 7);
      for (int i = 0; i < per_poster; ++i) {
        const auto when = std::chrono::steady_clock::now() + std::chrono::microseconds(rng() % 20000);
        const bool cancel_it = rng() % 8 == 0;
        auto h = ex.post_at(when, [&, when, cancel_it] {
          if (std::chrono::steady_clock::now() < when) early.fetch_add(1);
          if (cancel_it) cancelled_ran.fetch_add(1);
          ran.fetch_add(1);
        });
        if (cancel_it) {
          if (h.cancel())
            cancelled.fetch_add(1);
          else
            cancelled_ran.fetch_sub(1);  // it ran before we could cancel: that is allowed
        }
      }
    });
  for (auto& t : threads) t.join();
  std::promise<void> done;
  ex.post_after(40ms, [&] { done.set_value(); });
  done.get_future().wait();
  CHECK(early == 0);
  CHECK(cancelled_ran == 0);
  CHECK(ran + cancelled == posters * per_poster + 0);
}

TEST_CASE("executor stress: random cross-calls never hang, cycles are reported", "[executor][stress][deadlock]") {
  constexpr int n = 3;
  executor e0{{.name = "e0"}}, e1{{.name = "e1"}}, e2{{.name = "e2"}};
  executor* ex[n] = {&e0, &e1, &e2};
  std::atomic<int> completed{0}, cycles{0}, bad_reports{0};
  const int per_thread = static_cast<int>(scaled(300, 50));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      std::minstd_rand rng(static_cast<unsigned>(t) + 99);
      for (int i = 0; i < per_thread; ++i) {
        const int a = static_cast<int>(rng() % n), b = static_cast<int>(rng() % n), c = static_cast<int>(rng() % n);
        try {
          ex[a]->call([&] { return ex[b]->call([&] { return ex[c]->call([] { return 1; }); }); });
          completed.fetch_add(1);
        } catch (const tether::deadlock_error& e) {
          // Own cycles (a -> b -> a) and cycles across threads (e0's owner waits in e1.call
          // while e1's owner runs another thread's task that waits in e0.call) both count.
          if (e.executors().size() < 2) bad_reports.fetch_add(1);
          cycles.fetch_add(1);
        }
      }
    });
  for (auto& th : threads) th.join();
  CHECK(completed + cycles == 4 * per_thread);
  CHECK(bad_reports == 0);
}
