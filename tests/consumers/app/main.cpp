// A consumer program: uses tether the way an application would, through whichever way in
// the build chose (installed package, subproject, FetchContent, copied include/, single
// header, pkg-config). Exits 0 only if every check passes.
#if defined(TETHER_SINGLE_HEADER)
#include <tether/tether.hpp>
#else
#include <tether.hpp>
#endif

#include <cstdio>
#include <thread>
#include <vector>

int main() {
  tether::mpsc_queue<long> q;
  std::vector<std::thread> producers;
  for (long p = 0; p < 3; ++p)
    producers.emplace_back([&q, p] {
      for (long i = 0; i < 1000; ++i) q.push(p * 1000 + i);
    });
  long sum = 0;
  for (int n = 0; n < 3000; ++n) sum += *q.pop();
  for (auto& t : producers) t.join();
  const long expected = 2999L * 3000 / 2;
  std::printf("tether %d.%d.%d: queue sum %ld (expected %ld)\n", TETHER_VERSION_MAJOR,
              TETHER_VERSION_MINOR, TETHER_VERSION_PATCH, sum, expected);
  return sum == expected ? 0 : 1;
}
