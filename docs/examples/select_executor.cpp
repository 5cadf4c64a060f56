// docs/examples/select_executor.cpp - the main thread owns an executor and waits, in one
// loop, on its tasks, its delayed tasks and a channel: no second thread, no polling tick.
// Built and run by ctest (label "doc"); exits non-zero if a check fails.
#include <tether/channel.hpp>
#include <tether/executor.hpp>
#include <tether/select.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

int main() {
  using namespace std::chrono_literals;
  // The runtime lives on the main thread (it must: think Julia, R, Tk); other threads hand
  // it work through the executor and send it requests over a channel.
  tether::executor main_ex{tether::adopt_current_thread, {.name = "main"}};
  auto pair = tether::make_channel<std::string>(16);
  auto& requests = pair.second;  // the main thread receives here

  long runtime_state = 0;  // touched only on the main thread
  std::vector<std::string> handled;
  bool ticked = false, loop_done = false;

  tether::poller p;
  p.on(requests, [&](std::string r) { handled.push_back(std::move(r)); })
   .on(main_ex, [&] { loop_done = true; });  // called once main_ex is stopped and drained

  std::vector<std::thread> sessions;
  for (int s = 0; s < 4; ++s)
    sessions.emplace_back([&main_ex, &runtime_state] {
      for (int i = 0; i < 250; ++i) (void)main_ex.post([&runtime_state] { ++runtime_state; });
    });
  std::thread client([&pair] {
    for (const char* r : {"status", "execute", "shutdown"}) (void)pair.first.send(r);
  });
  // A delayed task: the loop sleeps until it is due (or something else arrives).
  const auto t0 = std::chrono::steady_clock::now();
  tether::timer_handle tick = main_ex.post_after(30ms, [&] { ticked = true; });

  // The one loop. Handlers and tasks run here, with no lock held.
  while (!loop_done) {
    (void)p.run_one_for(5s);
    if (!handled.empty() && handled.back() == "shutdown" && ticked && !main_ex.is_stopped()) {
      for (auto& t : sessions) t.join();  // every post accepted by now
      main_ex.stop(tether::drain);         // runs what is queued, then on_closed above
    }
  }
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  client.join();

  const bool ok = runtime_state == 1000 && handled == std::vector<std::string>{"status", "execute", "shutdown"} &&
                  ticked && tick.status() == tether::timer_status::ran && elapsed >= 30ms &&
                  main_ex.is_finished() && !p.contains(main_ex) && p.size() == 1;
  std::printf("tasks %ld, requests %zu, ticked %d, finished %d, watched %zu\n", runtime_state, handled.size(),
              ticked, main_ex.is_finished(), p.size());
  return ok ? 0 : 1;
}
