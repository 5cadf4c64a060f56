// docs/examples/mpsc_producer.cpp - producer handles: each thread pushes through its own lane.
// Built and run by ctest (label "doc"); exits non-zero if a check fails.
#include <tether/mpsc_queue.hpp>

#include <cstdint>
#include <cstdio>
#include <thread>
#include <vector>

int main() {
  constexpr int producers = 4;
  constexpr std::uint64_t per_producer = 100000;
  tether::mpsc_queue<std::uint64_t> q;

  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p)
    threads.emplace_back([&q, p] {
      auto out = q.make_producer();  // a private lane for this thread
      for (std::uint64_t i = 0; i < per_producer; ++i)
        if (!out.push(static_cast<std::uint64_t>(p) << 32 | i)) return;  // fails only once closed
    });

  // Per handle, items come out in the order pushed.
  std::vector<std::uint64_t> next(producers, 0);
  bool in_order = true;
  std::uint64_t count = 0;
  while (count < producers * per_producer) {
    const std::uint64_t v = *q.pop();  // parks while empty
    const auto p = static_cast<std::size_t>(v >> 32);
    in_order = in_order && (v & 0xffffffffu) == next[p]++;
    ++count;
  }
  for (auto& t : threads) t.join();

  q.close();
  auto late = q.make_producer();
  const bool refused = !late.push(7);  // closed: handed back
  const bool closed = q.try_pop().is_closed();

  std::printf("%llu items, per-handle order %s; push after close refused %d; closed %d\n",
              static_cast<unsigned long long>(count), in_order ? "kept" : "BROKEN", refused, closed);
  return in_order && refused && closed ? 0 : 1;
}
