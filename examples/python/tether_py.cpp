// examples/python/tether_py.cpp - a tiny C ABI over tether::executor for Python's ctypes.
//
// The asyncio thread calls tether_py_start(): the executor adopts that thread, and the
// returned descriptor goes to loop.add_reader(fd, try_run). C++ producer threads then post
// tasks that call back into Python (on the asyncio thread, inside try_run()), and make blocking
// calls that the asyncio thread answers.
//
// Every function returns 0 or a count on success and -1 on misuse (message on stderr).
#include <tether/executor.hpp>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <thread>
#include <vector>

namespace {

using item_callback = void (*)(std::int64_t producer, std::int64_t seq);

struct state {
  std::unique_ptr<tether::executor> ex;
  item_callback on_item = nullptr;
  std::vector<std::thread> producers;
  std::atomic<std::int64_t> call_errors{0};
  std::int64_t delivered = 0;  // owner (asyncio) thread only
};

state& g() {
  static state s;
  return s;
}

template <class F>
int guarded(F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tether_py: %s\n", e.what());
    return -1;
  }
}

}  // namespace

extern "C" {

// Adopts the calling (asyncio) thread; returns the descriptor to watch.
int tether_py_start(item_callback cb) {
  return guarded([&] {
    g().on_item = cb;
    g().ex = std::make_unique<tether::executor>(tether::adopt_current_thread,
                                                tether::executor_options{.name = "asyncio", .wake_fd = true});
    return g().ex->wake_fd();
  });
}

// Runs what is ready on the owner thread; returns how many tasks ran.
int tether_py_try_run() {
  return guarded([] { return static_cast<int>(g().ex->try_run()); });
}

// Starts `count` C++ threads; each posts `per_producer` items (callback on the asyncio
// thread) and every 100 items makes a blocking call that the asyncio thread answers.
int tether_py_spawn(int count, int per_producer) {
  return guarded([&] {
    for (int p = 0; p < count; ++p)
      g().producers.emplace_back([p, per_producer] {
        tether::executor& ex = *g().ex;
        for (std::int64_t i = 0; i < per_producer; ++i) {
          if (!ex.post([p, i] {
                ++g().delivered;
                g().on_item(p, i);
              }))
            g().call_errors.fetch_add(1);  // refused: stopped too early
          if (i % 100 == 99) {
            const bool on_owner = ex.call([&ex] { return ex.running_in_this_thread(); });
            if (!on_owner) g().call_errors.fetch_add(1);
          }
        }
      });
    return count;
  });
}

// Joins the producer threads; returns the number of failed blocking calls.
int tether_py_join() {
  for (auto& t : g().producers) t.join();
  g().producers.clear();
  return static_cast<int>(g().call_errors.load());
}

// Items delivered so far (asyncio thread).
std::int64_t tether_py_delivered() { return g().delivered; }

// Stops the executor, runs what is left, destroys it; returns tasks run while finishing.
int tether_py_stop() {
  return guarded([] {
    g().ex->stop();
    const int n = static_cast<int>(g().ex->try_run());
    g().ex.reset();
    return n;
  });
}

}  // extern "C"
