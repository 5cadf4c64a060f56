// Stress tests for coroutine.hpp: thousands of sessions awaiting calls on one runtime while
// stop requests race the calls' completion (every call runs at most once, and exactly when
// its session saw its result); homes stopped with cancel under suspended chains (every frame
// destroyed exactly once, every starter told); frames and threads pushing into one small
// bounded queue while stop requests race the room (every item delivered once or handed back).
#include <tether/bounded_mpsc_queue.hpp>
#include <tether/coroutine.hpp>
#include <tether/executor.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <random>
#include <stop_token>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using tether_test::counted;
using tether_test::scaled;

}  // namespace

TEST_CASE("stop requests racing awaited calls: each call runs once exactly when its result arrives",
          "[coroutine][stress]") {
  const std::size_t sessions = scaled(2000, 200);
  constexpr int calls = 20;
  tether::executor runtime{{.name = "runtime"}};
  tether::executor home_a{{.name = "home-a"}}, home_b{{.name = "home-b"}};

  // ran[s * calls + c]: times call c of session s ran on the runtime (owner-only writes).
  std::vector<int> ran(sessions * calls, 0);
  std::vector<int> seen(sessions * calls, 0);  // written by the session's frames only
  std::atomic<std::uint64_t> cancelled{0}, completed{0}, wrong_thread{0};
  std::vector<std::stop_source> stops(sessions);

  auto session = [&](std::size_t s, tether::executor& home) -> tether::task<int> {
    int got = 0;
    for (int c = 0; c < calls; ++c) {
      try {
        int v = co_await tether::co_call(runtime, [&, s, c] {
          ++ran[s * calls + static_cast<std::size_t>(c)];
          return c;
        });
        if (v != c || !home.running_in_this_thread()) wrong_thread.fetch_add(1);
        ++seen[s * calls + static_cast<std::size_t>(c)];
        ++got;
      } catch (const tether::operation_cancelled&) {
        cancelled.fetch_add(1);
        break;
      }
    }
    completed.fetch_add(1);
    co_return got;
  };

  std::vector<std::future<int>> fs;
  fs.reserve(sessions);
  std::jthread stopper([&] {
    std::mt19937 rng(12345);
    for (std::size_t i = 0; i < sessions / 3; ++i) {
      stops[rng() % sessions].request_stop();
      if (i % 16 == 0) std::this_thread::sleep_for(50us);
    }
  });
  for (std::size_t s = 0; s < sessions; ++s) {
    tether::executor& home = s % 2 ? home_a : home_b;
    fs.push_back(tether::spawn(home, session(s, home), stops[s].get_token()));
  }
  stopper.join();
  std::uint64_t returned = 0;
  for (auto& f : fs) returned += static_cast<std::uint64_t>(f.get());
  runtime.call([] {});  // every abandoned job has been reached and skipped

  std::uint64_t total_ran = 0, mismatched = 0;
  for (std::size_t i = 0; i < ran.size(); ++i) {
    total_ran += static_cast<std::uint64_t>(ran[i]);
    if (ran[i] != seen[i] || ran[i] > 1) ++mismatched;
  }
  CHECK(completed == sessions);
  CHECK(mismatched == 0);
  CHECK(total_ran == returned);
  CHECK(wrong_thread == 0);
  CHECK(cancelled > 0);
  CHECK(cancelled < sessions);
}

TEST_CASE("homes stopped with cancel under suspended chains: frames destroyed once, starters told",
          "[coroutine][stress][frames]") {
  const int rounds = static_cast<int>(scaled(40, 8));
  const long live_before = counted::live.load();
  tether::executor runtime{{.name = "runtime"}};
  std::uint64_t values = 0, stopped = 0, total = 0;
  std::atomic<std::uint64_t> ran{0};
  for (int r = 0; r < rounds; ++r) {
    std::vector<std::future<int>> fs;
    {
      tether::executor home{{.name = "home"}};
      auto t = [&]() -> tether::task<int> {
        counted local(1);
        int sum = 0;
        for (int i = 0; i < 50; ++i) {
          auto inner = [&]() -> tether::task<int> {
            counted inner_local(2);
            co_return co_await tether::co_call(runtime, [&] {
              ran.fetch_add(1);
              return 1;
            });
          };
          sum += co_await inner();
        }
        co_return sum;
      };
      for (int i = 0; i < 100; ++i) fs.push_back(tether::spawn(home, t()));
      std::this_thread::sleep_for(std::chrono::microseconds(200 * (r % 5)));
      if (r % 4 == 0) fs.front().wait();  // some rounds stop only after a chain has finished
      home.stop(r % 2 ? tether::cancel : tether::drain);
    }  // destroyed while chains wait on the runtime
    for (auto& f : fs) {
      ++total;
      try {
        values += static_cast<std::uint64_t>(f.get());
      } catch (const tether::executor_stopped&) {
        ++stopped;
      } catch (const tether::operation_cancelled&) {
        ++stopped;  // stop(cancel) stopped the chain's token while its frame ran
      }
    }
  }
  runtime.call([] {});
  CHECK(total == static_cast<std::uint64_t>(rounds) * 100);
  CHECK(stopped > 0);
  CHECK(values >= 50);          // the chains waited for
  CHECK(values <= ran.load());  // calls whose chain was destroyed ran, but their value went nowhere
  CHECK(counted::live.load() == live_before);
  CHECK(counted::destroyed_twice.load() == 0);
}

TEST_CASE("frames and threads racing for room in a small bounded queue under stop requests: every item once",
          "[coroutine][send][stress]") {
  const std::uint64_t frames = scaled(1000, 100);
  constexpr std::uint64_t threads = 2;
  const std::uint64_t per_producer = scaled(200, 50);
  tether::bounded_mpsc_queue<std::uint64_t> q(8);
  tether::executor home_a{{.name = "home-a"}}, home_b{{.name = "home-b"}};
  std::vector<std::stop_source> stops(frames);
  // Per producer: items pushed (ok) and whether it was cancelled; frames write their own entry.
  std::vector<std::uint64_t> pushed(frames + threads, 0);
  std::atomic<std::uint64_t> cancelled{0}, handed_back{0}, wrong_thread{0};

  auto produce = [&](std::uint64_t id, tether::executor& home) -> tether::task<void> {
    for (std::uint64_t i = 0; i < per_producer; ++i) {
      std::uint64_t item = id << 32 | i;
      const tether::push_result r = co_await tether::co_push(q, item);
      if (!home.running_in_this_thread()) wrong_thread.fetch_add(1);
      if (r.status() == tether::status::ok) {
        ++pushed[id];
        continue;
      }
      if (r.status() == tether::status::cancelled && item == (id << 32 | i)) handed_back.fetch_add(1);
      cancelled.fetch_add(1);
      break;
    }
  };

  // The consumer: every item once, each producer's in order.
  std::vector<std::uint64_t> next(frames + threads, 0);
  std::uint64_t taken = 0, out_of_order = 0;
  std::atomic<bool> producers_done{false};
  std::jthread consumer([&] {
    for (;;) {
      auto r = q.pop_for(1ms);
      if (!r) {
        if (producers_done.load() && !q.try_pop()) break;  // nothing can be left: all finished
        continue;
      }
      const std::uint64_t id = *r >> 32, seq = *r & 0xffffffffu;
      if (seq != next[id]) ++out_of_order;
      next[id] = seq + 1;
      ++taken;
      if (taken % 64 == 0) std::this_thread::sleep_for(20us);  // let the ring fill up
    }
  });
  std::vector<std::future<void>> fs;
  for (std::uint64_t f = 0; f < frames; ++f)
    fs.push_back(tether::spawn(f % 2 ? home_a : home_b, produce(f, f % 2 ? home_a : home_b), stops[f].get_token()));
  std::vector<std::jthread> plain;
  for (std::uint64_t t = 0; t < threads; ++t)
    plain.emplace_back([&, id = frames + t] {
      for (std::uint64_t i = 0; i < per_producer; ++i) {
        if (q.push(id << 32 | i)) ++pushed[id];
      }
    });
  std::jthread stopper([&] {
    std::mt19937 rng(777);
    for (std::uint64_t i = 0; i < frames / 4; ++i) {
      stops[rng() % frames].request_stop();
      std::this_thread::sleep_for(20us);
    }
  });
  stopper.join();
  for (auto& f : fs) f.get();
  for (auto& t : plain) t.join();
  producers_done.store(true);
  consumer.join();

  std::uint64_t total = 0;
  for (std::uint64_t id = 0; id < frames + threads; ++id) {
    total += pushed[id];
    CHECK(next[id] == pushed[id]);  // the consumer saw exactly the items pushed, no more, no fewer
  }
  CHECK(taken == total);
  CHECK(out_of_order == 0);
  CHECK(wrong_thread == 0);
  CHECK(handed_back == cancelled);
  CHECK(cancelled > 0);
  CHECK(total > 0);
}
