// examples/epoll_loop.cpp - a foreign event loop on the main thread drives an executor.
//
// The main thread runs its own epoll loop (here: a timerfd tick and the executor's wake fd;
// in real life sockets, a GUI or a runtime's loop). It adopts a tether::executor and watches
// executor::wake_fd(): readable while tasks are pending, quiet once try_run() has run them.
// Producer threads post tasks, delayed tasks and blocking calls to the main thread; the loop
// checks that every task arrived exactly once, in order per producer, on the main thread.
//
// Exit status 0 only when every check passes.
#include <tether/executor.hpp>
#include <tether/thread_checker.hpp>

#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <thread>
#include <vector>

int main() {
  constexpr int producers = 4;
  constexpr std::uint64_t per_producer = 20000;
  constexpr int delayed = 100;
  int failures = 0;

  tether::executor loop_ex{tether::adopt_current_thread, {.name = "main-loop", .wake_fd = true}};
  tether::thread_checker main_thread;

  const int epfd = ::epoll_create1(EPOLL_CLOEXEC);
  const int tick = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  itimerspec every_10ms{};
  every_10ms.it_interval.tv_nsec = every_10ms.it_value.tv_nsec = 10'000'000;
  ::timerfd_settime(tick, 0, &every_10ms, nullptr);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = loop_ex.wake_fd();
  ::epoll_ctl(epfd, EPOLL_CTL_ADD, loop_ex.wake_fd(), &ev);
  ev.data.fd = tick;
  ::epoll_ctl(epfd, EPOLL_CTL_ADD, tick, &ev);

  // Loop state: touched only on the main thread (tasks run there).
  std::vector<std::uint64_t> next(producers, 0);
  std::uint64_t received = 0, out_of_order = 0, off_thread = 0, ticks = 0;
  int delayed_ran = 0;

  std::atomic<int> producers_done{0};
  std::atomic<std::uint64_t> call_errors{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p)
    threads.emplace_back([&, p] {
      for (std::uint64_t i = 0; i < per_producer; ++i) {
        if (!loop_ex.post([&, p, i] {
              off_thread += !main_thread.is_current();
              out_of_order += next[p] != i;
              next[p] = i + 1;
              ++received;
            }))
          call_errors.fetch_add(1);  // refused: the loop stopped too early
        if (i % 5000 == 0) {
          // A blocking call, answered by the main thread when its loop gets to it.
          const std::uint64_t seen = loop_ex.call([&] { return next[p]; });
          if (seen != i + 1) call_errors.fetch_add(1);
        }
      }
      for (int d = 0; d < delayed / producers; ++d)
        loop_ex.post_after(std::chrono::milliseconds(d % 20), [&] { ++delayed_ran; });
      producers_done.fetch_add(1);
    });

  const std::uint64_t expected = producers * per_producer;
  int wakeups = 0;
  while (received < expected || delayed_ran < delayed || producers_done.load() < producers) {
    epoll_event events[2];
    const int n = ::epoll_wait(epfd, events, 2, 5000);
    if (n == 0) {
      std::fprintf(stderr, "epoll_loop: stalled with %llu of %llu tasks\n", static_cast<unsigned long long>(received),
                   static_cast<unsigned long long>(expected));
      ++failures;
      break;
    }
    for (int k = 0; k < n; ++k) {
      if (events[k].data.fd == tick) {
        std::uint64_t expirations = 0;
        if (::read(tick, &expirations, sizeof expirations) > 0) ticks += expirations;
      } else {
        ++wakeups;
        loop_ex.try_run();  // runs every ready task (and due delayed ones); quiets the fd
      }
    }
  }
  for (auto& t : threads) t.join();

  loop_ex.stop();
  loop_ex.try_run();  // finishes the stop: nothing accepted is left behind
  epoll_event ev_out{};
  const bool still_readable = ::epoll_wait(epfd, &ev_out, 1, 0) == 1 && ev_out.data.fd == loop_ex.wake_fd();

  std::printf("received %llu/%llu tasks and %d/%d delayed ones in %d wake-ups (%llu ticks meanwhile)\n",
              static_cast<unsigned long long>(received), static_cast<unsigned long long>(expected), delayed_ran,
              delayed, wakeups, static_cast<unsigned long long>(ticks));
  std::printf("out of order %llu, off the main thread %llu, call errors %llu, finished %d\n",
              static_cast<unsigned long long>(out_of_order), static_cast<unsigned long long>(off_thread),
              static_cast<unsigned long long>(call_errors.load()), loop_ex.is_finished() ? 1 : 0);
  if (received != expected || delayed_ran != delayed || out_of_order != 0 || off_thread != 0 || call_errors != 0 ||
      !loop_ex.is_finished() || still_readable)
    ++failures;
  ::close(tick);
  ::close(epfd);
  std::printf(failures == 0 ? "epoll_loop: all checks passed\n" : "epoll_loop: FAILED\n");
  return failures == 0 ? 0 : 1;
}
