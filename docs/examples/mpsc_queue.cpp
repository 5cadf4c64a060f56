// docs/examples/mpsc_queue.cpp - four producers, one consumer, close, nothing lost.
// Built and run by ctest (label "doc"); exits non-zero if a check fails.
#include <tether/mpsc_queue.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

int main() {
  using namespace std::chrono_literals;
  tether::mpsc_queue<std::unique_ptr<int>> q;

  std::vector<std::thread> producers;
  std::atomic<int> refused_while_open{0};  // a push fails only once the queue is closed
  for (int p = 0; p < 4; ++p)
    producers.emplace_back([&q, &refused_while_open, p] {
      for (int i = 0; i < 1000; ++i)
        if (!q.push(std::make_unique<int>(p * 1000 + i))) ++refused_while_open;
    });

  long sum = 0, count = 0;
  std::vector<std::unique_ptr<int>> batch;
  while (count < 4000) {
    batch.clear();
    count += static_cast<long>(q.pop_bulk(std::back_inserter(batch), 64));  // parks while empty
    for (auto& v : batch) sum += *v;
  }
  for (auto& t : producers) t.join();

  // Nothing ready: a timed pop says "timeout", not "closed".
  const bool timed_out = q.pop_for(1ms).is_timeout();

  const bool closed_it = q.close();  // true: this call closed it
  auto late = std::make_unique<int>(42);
  const bool refused = !q.push(std::move(late));  // handed back: `late` still owns 42
  const bool closed = q.try_pop().is_closed();

  std::printf("sum %ld of %ld items; timeout %d; refused %d (still %d); closed %d\n", sum, count,
              timed_out, refused, *late, closed);
  return (sum == 3999L * 4000 / 2 && refused_while_open == 0 && timed_out && closed_it && refused &&
          *late == 42 && closed)
             ? 0
             : 1;
}
