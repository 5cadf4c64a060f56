// SPDX-License-Identifier: MIT
// docs/coroutines.md, runnable: sessions as coroutines calling one confined runtime, a hop
// between executors, an awaited queue, producers waiting for room in a bounded one, and a
// session abandoned by its stop token.
#include <tether/bounded_mpsc_queue.hpp>
#include <tether/confined.hpp>
#include <tether/coroutine.hpp>
#include <tether/executor.hpp>
#include <tether/mpsc_queue.hpp>

#include <chrono>
#include <cstdio>
#include <future>
#include <map>
#include <stop_token>
#include <string>
#include <vector>

// The runtime only its owner thread may touch.
struct kv_store {
  std::map<std::string, int> data;
  int add(const std::string& key, int by) { return data[key] += by; }
};

tether::task<int> session(tether::confined<kv_store>& store, int id) {
  int last = 0;
  for (int i = 0; i < 10; ++i)  // each call waits without holding a thread
    last = co_await tether::co_with(store, [id](kv_store& s) { return s.add("user" + std::to_string(id % 10), 1); });
  co_return last;
}

tether::task<long> consume(tether::mpsc_queue<int>& q) {
  long sum = 0;
  for (;;) {
    auto r = co_await tether::co_pop(q);  // suspends while empty; closed once drained
    if (!r) break;
    sum += *r;
  }
  co_return sum;
}

// Pushes 1..n into a ring of 4: a full ring suspends the frame until the consumer makes room.
tether::task<int> produce(tether::bounded_mpsc_queue<int>& q, int n) {
  int pushed = 0;
  for (int i = 1; i <= n; ++i)
    if (co_await tether::co_push(q, i)) ++pushed;  // push_result: ok, closed or cancelled
  co_return pushed;
}

int main() {
  tether::executor owner{{.name = "store"}};
  tether::executor sessions{{.name = "sessions"}};
  tether::confined<kv_store> store{owner};

  // 1000 sessions on one thread, each making 10 calls into the store.
  std::vector<std::future<int>> done;
  for (int id = 0; id < 1000; ++id) done.push_back(tether::spawn(sessions, session(store, id)));
  for (auto& f : done) f.get();
  const int total = store.with([](kv_store& s) {
    int n = 0;
    for (auto& [k, v] : s.data) n += v;
    return n;
  });
  std::printf("calls that reached the store: %d\n", total);

  // A hop: resume on another executor's thread, then come back.
  auto hop = [&]() -> tether::task<bool> {
    co_await tether::schedule(owner);
    const bool there = owner.running_in_this_thread();
    co_await tether::schedule(sessions);
    co_return there && sessions.running_in_this_thread();
  };
  std::printf("hop there and back: %s\n", tether::spawn(sessions, hop()).get() ? "ok" : "wrong");

  // An awaited queue, fed from this thread.
  tether::mpsc_queue<int> q;
  auto sum = tether::spawn(sessions, consume(q));
  for (int i = 1; i <= 100; ++i) (void)q.push(i);
  q.close();
  std::printf("consumed sum: %ld\n", sum.get());

  // Ten producer frames on one thread, backpressured by a ring of 4; this thread consumes.
  tether::bounded_mpsc_queue<int> ring(4);
  std::vector<std::future<int>> producers;
  for (int p = 0; p < 10; ++p) producers.push_back(tether::spawn(sessions, produce(ring, 100)));
  long ring_sum = 0;
  for (int i = 0; i < 1000; ++i) ring_sum += *ring.pop();
  int ring_pushed = 0;
  for (auto& f : producers) ring_pushed += f.get();
  std::printf("through the ring: %d items, sum %ld\n", ring_pushed, ring_sum);

  // A session whose browser went away: its pending call is abandoned, never run.
  std::stop_source gone;
  std::promise<void> release;
  (void)owner.post([f = release.get_future().share()] { f.wait(); });  // keep the store busy
  auto abandoned = tether::spawn(sessions, session(store, 0), gone.get_token());
  gone.request_stop();
  release.set_value();
  try {
    abandoned.get();
    std::printf("abandoned session: finished\n");
  } catch (const tether::operation_cancelled&) {
    std::printf("abandoned session: cancelled\n");
  }

  // A plain thread can wait for a task too.
  std::printf("sync_wait: %d\n", tether::sync_wait(session(store, 1)));
  const bool ok = total == 10000 && ring_pushed == 1000 && ring_sum == 10 * 5050;
  return ok ? 0 : 1;
}
