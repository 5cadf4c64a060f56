// docs/examples/cancellation.cpp - a consumer thread freed by its std::stop_token, with the
// queue left open and nothing lost. Built and run by ctest (label "doc"); exits non-zero if a
// check fails.
#include <tether/channel.hpp>
#include <tether/mpsc_queue.hpp>

#include <chrono>
#include <cstdio>
#include <stop_token>
#include <thread>

int main() {
  using namespace std::chrono_literals;
  tether::mpsc_queue<int> q;
  long sum = 0;
  tether::status ended = tether::status::ok;
  {
    // std::jthread hands its stop token to the function and requests the stop when it is
    // destroyed: the blocked pop() wakes at once and returns cancelled.
    std::jthread consumer([&](std::stop_token st) {
      tether::pop_result<int> r = q.pop(st);
      for (; r; r = q.pop(st)) sum += *r;
      ended = r.status();
    });
    for (int i = 1; i <= 100; ++i) (void)q.push(i);
    while (!q.empty_approx()) std::this_thread::sleep_for(1ms);
  }  // ~jthread: request_stop(), then join()

  // The queue is still open: what is pushed now waits for the next consumer.
  (void)q.push(1000);
  const auto next = q.pop_for(1s);

  // A bounded channel's sender blocked on a full inbox is freed the same way, its message
  // handed back untouched.
  auto [tx, rx] = tether::make_channel<int>(2);
  int queued = 0;
  while (tx.try_send(queued + 1)) ++queued;  // fill the peer's inbox
  std::stop_source src;
  std::jthread stopper([&src] {
    std::this_thread::sleep_for(10ms);
    src.request_stop();
  });
  const tether::push_result sent = tx.send(2, src.get_token());

  const bool ok = sum == 5050 && ended == tether::status::cancelled && next && *next == 1000 &&
                  sent.is_cancelled() && queued == 2 && *rx.recv() == 1 && *rx.recv() == 2 &&
                  rx.try_recv().is_empty();
  std::printf("sum %ld, consumer ended %s, next %d, blocked send %s: %s\n", sum, tether::to_string(ended),
              next ? *next : -1, tether::to_string(sent.status()), ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
