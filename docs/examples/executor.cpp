// docs/examples/executor.cpp - an executor owns a thread; any thread posts, submits or calls.
// Built and run by ctest (label "doc"); exits non-zero if a check fails.
#include <tether/executor.hpp>

#include <chrono>
#include <cstdio>
#include <future>
#include <stdexcept>
#include <thread>
#include <vector>

int main() {
  using namespace std::chrono_literals;
  tether::executor ex{{.name = "runtime"}};
  long state = 0;  // touched only on the owner thread

  std::vector<std::thread> callers;
  for (int c = 0; c < 8; ++c)
    callers.emplace_back([&] {
      for (int i = 0; i < 100; ++i) (void)ex.post([&state] { ++state; });  // ok: running
    });
  for (auto& t : callers) t.join();

  const long seen = ex.call([&state] { return state; });  // runs after every post above
  std::future<int> failing = ex.submit([]() -> int { throw std::runtime_error("boom"); });
  bool carried = false;
  try {
    failing.get();
  } catch (const std::runtime_error&) {
    carried = true;  // the exception came back through the future
  }
  tether::timer_handle later = ex.post_after(1h, [] {});
  const bool cancelled = later.cancel();  // cancelled before it ran

  ex.stop(tether::drain);
  ex.join();
  const bool refused = ex.post([] {}).is_closed();  // visible refusal once stopped
  bool stopped_error = false;
  try {
    ex.call([] { return 0; });
  } catch (const tether::executor_stopped&) {
    stopped_error = true;
  }
  std::printf("seen %ld, exception carried %d, timer cancelled %d, refused %d, stopped %d\n", seen,
              carried, cancelled, refused, stopped_error);
  return (seen == 800 && carried && cancelled && refused && stopped_error) ? 0 : 1;
}
