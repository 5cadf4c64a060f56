// docs/examples/bounded_mpsc_queue.cpp - backpressure: producers park while the ring is full.
// Built and run by ctest (label "doc"); exits non-zero if a check fails.
#include <tether/bounded_mpsc_queue.hpp>

#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

int main() {
  using namespace std::chrono_literals;
  tether::bounded_mpsc_queue<int> q(8);  // capacity() == 8

  int fill = 0;
  while (q.try_push(fill)) ++fill;                    // fails fast once full
  const bool full = q.try_push(99).is_full();        // 99 is still ours
  const bool timed_out = q.push_for(99, 1ms).is_timeout();

  std::thread producer([&q] {
    for (int i = 0; i < 1000; ++i)
      if (!q.push(1)) return;                         // parks while full; fails only once closed
    q.close();
  });
  long sum = 0;
  while (auto v = q.pop()) sum += *v;                // ends with status closed, every item taken
  producer.join();

  std::printf("filled %d; full %d; timeout %d; sum %ld\n", fill, full, timed_out, sum);
  return (fill == 8 && full && timed_out && sum == 28 + 1000) ? 0 : 1;
}
