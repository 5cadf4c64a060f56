// Stress test for tether::confined<T> (story 2): 200 concurrent session threads call one
// confined runtime through with() and async_with(); every call is served exactly once with
// the right result, the runtime is only ever touched on its owner thread, and the executor's
// counters account for every call.
#include <tether/confined.hpp>
#include <tether/thread_checker.hpp>

#include <atomic>
#include <cstdint>
#include <future>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

// A runtime that must stay on one thread; checks it on every call.
class runtime {
 public:
  std::uint64_t eval(std::uint64_t session, std::uint64_t x) {
    owner_.check("runtime");
    ++calls_;
    return session * 1000003 + x * x;
  }
  std::uint64_t calls() {
    owner_.check("runtime");
    return calls_;
  }

 private:
  tether::thread_checker owner_;  // bound where the runtime is constructed: the owner
  std::uint64_t calls_ TETHER_GUARDED_BY(owner_) = 0;
};

}  // namespace

TEST_CASE("confined stress: 200 concurrent sessions, every call served correctly", "[confined][stress]") {
  constexpr int sessions = 200;
  const std::uint64_t calls_per_session = tether_test::scaled(2000, 100) / 10;
  tether::executor owner{{.name = "runtime-owner"}};
  tether::confined<runtime> rt{owner};

  std::atomic<std::uint64_t> wrong{0}, served{0}, errors{0};
  std::latch go{sessions};
  std::vector<std::thread> threads;
  threads.reserve(sessions);
  for (int s = 0; s < sessions; ++s)
    threads.emplace_back([&, s] {
      tether::set_thread_name("session-" + std::to_string(s));
      go.arrive_and_wait();
      const auto session = static_cast<std::uint64_t>(s);
      for (std::uint64_t i = 0; i < calls_per_session; ++i) {
        try {
          std::uint64_t r;
          if (i % 4 == 3)
            r = rt.async_with([=](runtime& x) { return x.eval(session, i); }).get();
          else
            r = rt.with([=](runtime& x) { return x.eval(session, i); });
          wrong += r != session * 1000003 + i * i;
          served.fetch_add(1);
        } catch (...) {
          errors.fetch_add(1);
        }
      }
    });
  for (auto& t : threads) t.join();
  const std::uint64_t total = sessions * calls_per_session;
  CHECK(errors == 0);
  CHECK(wrong == 0);
  CHECK(served == total);
  CHECK(rt.with([](runtime& x) { return x.calls(); }) == total);
  const auto stats = owner.stats();
  CHECK(stats.tasks_run >= total + 2);  // + construction and the count above
  CHECK(stats.queue_depth == 0);
}
