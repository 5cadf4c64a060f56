// docs/examples/channel.cpp - a pair of endpoints and a poller waiting on several sources.
// Built and run by ctest (label "doc"); exits non-zero if a check fails.
#include <tether/channel.hpp>
#include <tether/select.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

int main() {
  using namespace std::chrono_literals;
  auto pair = tether::make_channel<std::string, int>(16);  // bounded: 16 per direction
  auto& client = pair.first;                            // sends strings, receives ints
  auto& server = pair.second;                           // sends ints, receives strings

  std::thread worker([&server] {
    while (auto msg = server.recv()) (void)server.send(static_cast<int>(msg->size()));
    // recv() reported closed: the client closed and everything it sent was received.
  });
  int total = 0;
  for (const char* word : {"one", "three", "eleven"}) {
    (void)client.send(word);
    total += *client.recv();
  }
  const bool timed_out = client.recv_for(1ms).is_timeout();  // nothing pending: timeout
  client.close();
  worker.join();
  std::string late = "late";
  const bool handed_back = client.send(std::move(late)).is_closed() && late == "late";

  // A poller: one parked thread, several sources, handlers run with no lock held.
  tether::mpsc_queue<int> a, b;
  tether::poller p;
  int from_a = 0, from_b = 0;
  p.on(a, [&](int v) { from_a += v; }).on(b, [&](int v) { from_b += v; });
  std::thread producer([&] {
    for (int i = 0; i < 100; ++i)
      if (!a.push(1) || !b.push(2)) return;  // fails only once closed
  });
  for (int handled = 0; handled < 200;)
    if (p.run_one_for(1s)) ++handled;
  producer.join();

  std::printf("total %d, timeout %d, handed back %d, a %d, b %d\n", total, timed_out, handed_back,
              from_a, from_b);
  return (total == 3 + 5 + 6 && timed_out && handed_back && from_a == 100 && from_b == 200) ? 0 : 1;
}
