// bench/router_bench.cpp - tether::router: routed messages per second, and the router hop's
// latency, with 1, 4, 16 and 64 child subshells (story 5).
//
// Runs:
//   router/throughput/subshells:<N>   one client thread sends messages round-robin to N
//       subshells (at most 8192 in flight) and receives every reply; each handler answers
//       with its payload. The figure is messages routed end to end per second (items/s):
//       send -> router thread -> subshell -> reply -> client. Every reply is checked (count,
//       sum, FIFO per subshell). The counter cpu_ns_per_msg is the whole process's CPU time
//       (every thread: client, router, subshells) per message: it shows the cost where the
//       wall-clock figure is noisy, and 2e9 / cpu_ns_per_msg is the ceiling on two idle cores.
//   router/hop_latency/subshells:<N>  one message at a time, to the subshells in turn; the
//       time per iteration is the round trip, and the counters hop_p50_ns / hop_p99_ns /
//       hop_mean_ns are the hop itself: send() until the subshell's handler starts. With
//       many subshells each message wakes a parked thread, which is most of the cost.
//
// The handler is trivial on purpose: the figures are the router's cost, not the work's.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <tether/router.hpp>

#include "harness.hpp"

namespace {

using namespace tether_bench;
using u64 = std::uint64_t;

// CPU time (user + system) of the whole process, in nanoseconds.
double process_cpu_ns() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return (static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
}

struct subshell_set {
  explicit subshell_set(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) ids.push_back(r.create_subshell().value());
  }
  tether::executor parent{{.name = "bench-parent"}};
  tether::router<u64, u64> r{parent, [](tether::subshell_id) { return [](u64&& v) { return v; }; },
                             {.name = "bench-router"}};
  std::vector<tether::subshell_id> ids;
};

void throughput(benchmark::State& state, std::size_t n) {
  constexpr u64 per_iteration = 65536;
  constexpr u64 window = 8192;  // in flight at most
  constexpr u64 chunk = 256;    // sent between two looks at the replies
  subshell_set set(n);
  auto& r = set.r;
  std::vector<tether::routed_reply<u64, u64>> got;
  got.reserve(window);
  std::vector<u64> last_tag(n + 1, 0);  // by subshell id: FIFO check
  u64 next = 1, received = 0, sum = 0;
  bool failed = false;
  const double cpu0 = process_cpu_ns();
  const auto take = [&](bool block) {
    got.clear();
    if (block)
      r.replies().pop_bulk(std::back_inserter(got), window);
    else
      r.replies().try_pop_bulk(std::back_inserter(got), window);
    for (auto& rep : got) {
      u64& last = last_tag[rep.subshell().value()];
      if (!rep.has_value() || *rep != rep.tag() || rep.tag() <= last) {
        failed = true;
        continue;
      }
      last = rep.tag();
      sum += *rep;
    }
    received += got.size();
  };
  for (auto _ : state) {
    const u64 first = next, end = next + per_iteration;
    u64 expect_sum = 0;
    for (u64 i = first; i < end; ++i) expect_sum += i;
    received = 0;
    sum = 0;
    while (next < end) {
      for (u64 k = 0; k < chunk && next < end; ++k, ++next)
        if (!r.send(set.ids[next % n], u64{next}, next)) failed = true;
      take(next - first - received >= window);
    }
    while (received < per_iteration) take(true);
    if (failed || sum != expect_sum) {
      fail(state, "router/throughput", "a reply was lost, wrong or out of order");
      break;
    }
  }
  const double messages = static_cast<double>(state.iterations() * per_iteration);
  state.SetItemsProcessed(static_cast<std::int64_t>(messages));
  if (messages > 0) state.counters["cpu_ns_per_msg"] = (process_cpu_ns() - cpu0) / messages;
  state.counters["subshells"] = static_cast<double>(n);
}

void hop_latency(benchmark::State& state, std::size_t n) {
  // The handler reads the clock as it starts: the hop is send() -> here.
  tether::executor parent{{.name = "bench-parent"}};
  tether::router<std::int64_t, std::int64_t> r{parent,
                                              [](tether::subshell_id) {
                                                return [](std::int64_t&& sent_ns) { return now_ns() - sent_ns; };
                                              },
                                              {.name = "bench-hop"}};
  std::vector<tether::subshell_id> ids;
  for (std::size_t i = 0; i < n; ++i) ids.push_back(r.create_subshell().value());
  std::vector<std::int64_t> hops;
  hops.reserve(1 << 20);
  u64 k = 0;
  for (auto _ : state) {
    if (!r.send(ids[k++ % n], now_ns())) {
      fail(state, "router/hop_latency", "send refused");
      break;
    }
    auto rep = r.replies().pop();
    if (!rep || !rep->has_value()) {
      fail(state, "router/hop_latency", "missing reply");
      break;
    }
    if (hops.size() < hops.capacity()) hops.push_back(**rep);
  }
  if (!hops.empty()) {
    std::sort(hops.begin(), hops.end());
    double mean = 0;
    for (std::int64_t h : hops) mean += static_cast<double>(h);
    state.counters["hop_mean_ns"] = mean / static_cast<double>(hops.size());
    state.counters["hop_p50_ns"] = static_cast<double>(hops[hops.size() / 2]);
    state.counters["hop_p99_ns"] = static_cast<double>(hops[hops.size() * 99 / 100]);
  }
  state.counters["subshells"] = static_cast<double>(n);
}

void register_all() {
  for (std::size_t n : {1, 4, 16, 64}) {
    const std::string suffix = "/subshells:" + std::to_string(n);
    benchmark::RegisterBenchmark(("router/throughput" + suffix).c_str(), [n](benchmark::State& s) { throughput(s, n); })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("router/hop_latency" + suffix).c_str(), [n](benchmark::State& s) { hop_latency(s, n); })
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace

int main(int argc, char** argv) { return run_main(argc, argv, register_all); }
