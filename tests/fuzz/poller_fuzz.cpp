// libFuzzer: a poller whose sources are added and removed from a second thread while the
// main thread pushes, waits and runs handlers.
//
// The input is split in two scripts: the main thread's (push a run to queue k, try_run_one,
// run_one_for, wait_for, try_wait) and the registrar's (on(queue k) with a handler, remove,
// contains). Invariants: a handler sees its queue's items in push order with none skipped
// twice; once the registrar has finished and every source is removed, what the handlers took
// plus what is left in each queue is exactly what was pushed; no call hangs (run_one_for and
// wait_for have short deadlines).
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include <tether/select.hpp>

#include "fuzz_input.hpp"

namespace {

using tether_fuzz::require;
constexpr std::size_t queues = 4;

std::uint32_t tag(std::size_t q, std::uint32_t seq) { return static_cast<std::uint32_t>(q << 24) | seq; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t split = 1 + data[0] % (size - 1);
  tether_fuzz::input main_ops(data + 1, split - 1 < size - 1 ? split - 1 : size - 1);
  tether_fuzz::input reg_ops(data + split, size - split);

  std::array<tether::mpsc_queue<std::uint32_t>, queues> qs;
  std::array<std::uint32_t, queues> pushed{}, taken{};  // main thread only
  tether::poller p;

  auto handler_for = [&](std::size_t k) {
    return [&, k](std::uint32_t v) {
      require(v == tag(k, taken[k]), "handler saw an item out of order", v, tag(k, taken[k]));
      ++taken[k];
    };
  };

  std::thread registrar([&] {
    while (!reg_ops.empty()) {
      const std::size_t k = reg_ops.below(queues);
      switch (reg_ops.below(4)) {
        case 0:
        case 1:
          if (!p.contains(qs[k])) p.on(qs[k], handler_for(k));
          break;
        case 2:
          (void)p.remove(qs[k]);
          require(!p.contains(qs[k]), "contains() true after remove()");
          break;
        default:
          std::this_thread::yield();
          break;
      }
    }
  });

  while (!main_ops.empty()) {
    const std::size_t k = main_ops.below(queues);
    switch (main_ops.below(6)) {
      case 0:
      case 1: {
        const std::size_t n = 1 + main_ops.below(64);
        for (std::size_t i = 0; i < n; ++i) require(static_cast<bool>(qs[k].push(tag(k, pushed[k]++))), "push refused");
        break;
      }
      case 2: (void)p.try_run_one(); break;
      case 3: (void)p.run_one_for(std::chrono::microseconds(main_ops.below(200))); break;
      case 4: (void)p.wait_for(std::chrono::microseconds(main_ops.below(100))); break;
      default: (void)p.try_wait(); break;
    }
  }
  registrar.join();
  // Run what is ready while the sources are still in, then take them out and drain the rest.
  for (int i = 0; i < 64; ++i) (void)p.try_run_one();
  for (std::size_t k = 0; k < queues; ++k) {
    (void)p.remove(qs[k]);
    while (auto r = qs[k].try_pop()) {
      require(*r == tag(k, taken[k]), "item left in a queue out of order", *r, tag(k, taken[k]));
      ++taken[k];
    }
    require(taken[k] == pushed[k], "items lost or duplicated", taken[k], pushed[k]);
  }
  require(p.size() == 0, "poller not empty after removing every source", (long long)p.size());
  return 0;
}
