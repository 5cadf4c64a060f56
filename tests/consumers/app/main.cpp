// A consumer program: uses tether the way an application would, through whichever way in
// the build chose (installed package, subproject, FetchContent, copied include/, single
// header, pkg-config): a queue with several producers, and an executor. Exits 0 only if every
// check passes.
#if defined(TETHER_SINGLE_HEADER)
#include <tether/tether.hpp>
#else
#include <tether.hpp>
#endif

#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

int main() {
  tether::mpsc_queue<long> q;
  std::vector<std::thread> producers;
  std::atomic<long> refused{0};
  for (long p = 0; p < 3; ++p)
    producers.emplace_back([&q, &refused, p] {
      for (long i = 0; i < 1000; ++i)
        if (!q.push(p * 1000 + i)) refused.fetch_add(1, std::memory_order_relaxed);
    });
  long sum = 0;
  for (int n = 0; n < 3000; ++n) sum += *q.pop();
  for (auto& t : producers) t.join();
  const long expected = 2999L * 3000 / 2;

  // Post to an executor's owner thread and call back into it.
  tether::executor ex{{.name = "consumer"}};
  long on_owner = 0;  // touched only on the owner thread
  for (long i = 1; i <= 100; ++i) (void)ex.post([&on_owner, i] { on_owner += i; });
  const long posted_sum = ex.call([&on_owner] { return on_owner; });  // FIFO: after the posts

  std::printf("tether %d.%d.%d: queue sum %ld (expected %ld), executor sum %ld (expected 5050)\n",
              TETHER_VERSION_MAJOR, TETHER_VERSION_MINOR, TETHER_VERSION_PATCH, sum, expected,
              posted_sum);
  return sum == expected && posted_sum == 5050 && refused.load() == 0 ? 0 : 1;
}
