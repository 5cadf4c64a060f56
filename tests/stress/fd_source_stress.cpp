// Stress for tether::fd_source: producers write to pipes, push to a queue and call notify()
// from several threads while the waiting thread sleeps in ppoll() and another thread keeps
// removing and re-adding one of the descriptors. Every queued item is received exactly once,
// every byte written is read, and the waiter never stalls (each wait has a deadline).
#include <tether/fd_source.hpp>
#include <tether/select.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;

struct pipe_pair {
  pipe_pair() {
    int fds[2];
    if (::pipe(fds) == 0) {
      read_end = fds[0];
      write_end = fds[1];
      for (int fd : fds) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
  }
  ~pipe_pair() {
    ::close(read_end);
    ::close(write_end);
  }
  int read_end = -1;
  int write_end = -1;
};

}  // namespace

TEST_CASE("fd_source stress: pipes, a queue, notify() and remove/add churn", "[fd_source][stress]") {
  constexpr int pipes = 3;
  std::array<pipe_pair, pipes> pp;
  for (const pipe_pair& p : pp) REQUIRE(p.read_end >= 0);
  std::vector<std::unique_ptr<tether::fd_source>> sources;
  for (const pipe_pair& p : pp) sources.push_back(std::make_unique<tether::fd_source>(p.read_end));

  const long per = static_cast<long>(tether_test::scaled(100000, 5000));
  constexpr int producers = 3;
  tether::mpsc_queue<long> q;
  long sum = 0, got = 0;
  std::array<long, pipes> bytes_read{};
  std::atomic<long> bytes_written{0};
  std::atomic<int> refused{0};

  tether::poller p;
  p.on(q, [&](long v) {
    sum += v;
    ++got;
  });
  for (int i = 0; i < pipes; ++i)
    p.on(*sources[static_cast<std::size_t>(i)], [&, i](tether::fd_events) {
      char buf[256];
      for (;;) {
        const ssize_t n = ::read(pp[static_cast<std::size_t>(i)].read_end, buf, sizeof buf);
        if (n <= 0) break;
        bytes_read[static_cast<std::size_t>(i)] += n;
      }
    });

  std::atomic<bool> stop_churn{false};
  std::thread churn([&] {  // pipe 0 goes away and comes back, over and over
    while (!stop_churn.load()) {
      if (p.remove(*sources[0])) {
        std::this_thread::sleep_for(50us);
        p.on(*sources[0], [&](tether::fd_events) {
          char buf[256];
          for (;;) {
            const ssize_t n = ::read(pp[0].read_end, buf, sizeof buf);
            if (n <= 0) break;
            bytes_read[0] += n;
          }
        });
      }
      std::this_thread::sleep_for(200us);
    }
  });

  std::vector<std::thread> threads;
  for (int t = 0; t < producers; ++t)
    threads.emplace_back([&, t] {
      for (long i = 1; i <= per; ++i) {
        if (!q.push(i)) ++refused;
        if (i % 64 == 0) {
          const char c = 'x';
          if (::write(pp[static_cast<std::size_t>(t % pipes)].write_end, &c, 1) == 1) bytes_written.fetch_add(1);
        }
        if (i % 101 == 0) sources[static_cast<std::size_t>((t + 1) % pipes)]->notify();
      }
    });

  while (got < producers * per) REQUIRE(p.run_one_for(10s));
  for (auto& th : threads) th.join();
  stop_churn = true;
  churn.join();
  // Every byte written is read: the descriptors stay readable until drained.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  auto total_read = [&] { return bytes_read[0] + bytes_read[1] + bytes_read[2]; };
  while (total_read() < bytes_written.load() && std::chrono::steady_clock::now() < deadline) (void)p.run_one_for(100ms);
  CHECK(refused.load() == 0);
  CHECK(got == producers * per);
  CHECK(sum == static_cast<long>(producers) * per * (per + 1) / 2);
  CHECK(total_read() == bytes_written.load());
}
