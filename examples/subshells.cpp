// examples/subshells.cpp - story 5: Jupyter kernel subshells (JEP 91) with tether::router.
//
// The kernel: the main thread is the parent subshell (an adopted executor, like ipykernel's
// main shell); a router thread receives every request and routes it by subshell id; child
// subshells are created at run time, each on its own thread. A client thread plays the
// frontend and retells JEP 91's sequence:
//   1. it asks the parent to run a long cell;
//   2. while that runs, it creates a child subshell through the control channel;
//   3. it runs three quick cells on the child - their replies arrive while the parent is
//      still busy;
//   4. it deletes the child (control channel);
//   5. the parent's reply arrives last.
// The client waits on both reply channels at once with a tether::poller. So that the order
// never depends on timing, the client starts once the parent's cell is running, and the
// parent's "long computation" lasts until the client is done with the child (at most 5 s).
// A timeline with thread names, ids and times is printed as it happens; the exit status is 0
// only if the replies came in exactly that order and the child ran while the parent was busy.
#include <tether/router.hpp>
#include <tether/select.hpp>
#include <tether/thread_checker.hpp>

#include <pthread.h>

#include <chrono>
#include <cstdio>
#include <future>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

const clock_type::time_point t0 = clock_type::now();

double now_ms() { return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count(); }

std::string thread_name() {
  char buf[16] = {};
  pthread_getname_np(pthread_self(), buf, sizeof buf);
  return buf;
}

std::string thread_id() {
  std::ostringstream out;
  out << std::this_thread::get_id();
  return out.str();
}

std::mutex print_mutex;
void say(const std::string& what) {
  const std::string who = thread_name() + " " + thread_id();
  std::lock_guard lock(print_mutex);
  std::printf("[%8.2f ms] %-28s %s\n", now_ms(), who.c_str(), what.c_str());
  std::fflush(stdout);
}

// What the frontend sends: a cell to run. What comes back: its output, and when and where it ran.
struct cell {
  std::string code;
  std::chrono::milliseconds takes{0};  // stands for the computation
  bool long_running = false;           // runs until the client is done with its child
};

std::promise<void> parent_started, client_done;
std::shared_future<void> client_done_future = client_done.get_future().share();
struct cell_result {
  std::string output;
  std::string thread;
  double started_ms = 0;
  double ended_ms = 0;
};

// One interpreter per subshell: its own execution counter, made on the subshell's thread.
struct interpreter {
  tether::subshell_id id;
  int execution_count = 0;
  cell_result run(cell&& c) {
    cell_result r{"", thread_name(), now_ms(), 0};
    say(id.to_string() + ": runs [" + std::to_string(++execution_count) + "] " + c.code);
    if (c.long_running) {
      parent_started.set_value();
      if (client_done_future.wait_for(5s) != std::future_status::ready) say(id.to_string() + ": gave up waiting");
    } else {
      std::this_thread::sleep_for(c.takes);
    }
    r.output = c.code + " -> done in " + id.to_string();
    r.ended_ms = now_ms();
    return r;
  }
};

}  // namespace

int main() {
  tether::set_thread_name("main");
  tether::executor main_ex{tether::adopt_current_thread, {.name = "main"}};
  tether::router<cell, cell_result> kernel{main_ex,
                                           [](tether::subshell_id id) {
                                             say("factory: interpreter for " + id.to_string());
                                             return [in = interpreter{id}](cell&& c) mutable { return in.run(std::move(c)); };
                                           },
                                           {.name = "shell-router"}};

  // What the client saw, in arrival order: "create", "child:<tag>", "delete", "parent".
  std::vector<std::string> arrivals;
  cell_result parent_result;
  std::vector<cell_result> child_results;
  bool ok = true;

  std::thread client([&] {
    tether::set_thread_name("client");
    tether::subshell_id child;
    tether::poller p;
    p.on(kernel.replies(), [&](tether::routed_reply<cell, cell_result>&& rep) {
       if (!rep) {
         say("client: error reply: " + rep.error().message());
         ok = false;
         return;
       }
       const bool from_parent = rep.subshell().is_parent();
       say("client: reply from " + rep.subshell().to_string() + " (tag " + std::to_string(rep.tag()) + "): " +
           rep->output + ", ran on thread '" + rep->thread + "'");
       arrivals.push_back(from_parent ? "parent" : "child:" + std::to_string(rep.tag()));
       (from_parent ? parent_result : child_results.emplace_back()) = std::move(*rep);
     })
        .on(kernel.control_replies(), [&](tether::control_reply&& rep) {
          if (!rep.ok()) {
            say("client: control error: " + rep.error->message());
            ok = false;
            return;
          }
          if (rep.op == tether::control_op::create_subshell) {
            child = rep.subshell;
            say("client: create_subshell_reply: " + child.to_string());
            arrivals.push_back("create");
          } else if (rep.op == tether::control_op::delete_subshell) {
            say("client: delete_subshell_reply: " + rep.subshell.to_string() + " deleted");
            arrivals.push_back("delete");
          } else {
            std::string ids;
            for (const auto& s : rep.subshells) ids += " " + s.id.to_string() + (s.busy ? "(busy)" : "(idle)");
            say("client: list_subshell_reply:" + ids);
          }
        });
    const auto wait_for = [&](std::size_t n) {
      while (arrivals.size() < n && ok)
        if (!p.run_one_for(10s)) {
          say("client: nothing arrived for 10 s");
          ok = false;
        }
    };

    say("client: execute_request -> parent (a long cell)");
    ok = ok && kernel.send({tether::parent_subshell, cell{"long_computation()", 0ms, true}, 100});
    ok = ok && parent_started.get_future().wait_for(10s) == std::future_status::ready;

    say("client: create_subshell_request");
    ok = ok && kernel.send_control(tether::control_request::create(1));
    wait_for(1);

    for (std::uint64_t i = 1; i <= 3; ++i) {
      say("client: execute_request -> " + child.to_string() + " (quick cell " + std::to_string(i) + ")");
      ok = ok && kernel.send({child, cell{"print(" + std::to_string(i) + ")", 10ms}, i});
    }
    wait_for(4);

    ok = ok && kernel.send_control(tether::control_request::list(2));
    say("client: delete_subshell_request " + child.to_string());
    ok = ok && kernel.send_control(tether::control_request::remove(child, tether::stop_mode::drain, 3));
    wait_for(5);  // the delete reply
    say("client: done with the child; the parent's computation may end");
    client_done.set_value();
    wait_for(6);  // the parent's reply

    (void)main_ex.post([&] { main_ex.stop(); });  // the kernel's main loop may end
  });

  const std::size_t ran = main_ex.run();  // the parent subshell runs here, on the main thread
  client.join();
  kernel.stop();
  kernel.join();
  say("main: loop ran " + std::to_string(ran) + " task(s); kernel stopped");

  // The sequence JEP 91 describes, checked.
  const std::vector<std::string> expected{"create", "child:1", "child:2", "child:3", "delete", "parent"};
  if (arrivals != expected) {
    std::string got;
    for (const auto& a : arrivals) got += " " + a;
    std::printf("FAILED: arrival order was%s\n", got.c_str());
    ok = false;
  }
  for (const cell_result& c : child_results) {
    if (c.started_ms < parent_result.started_ms || c.ended_ms > parent_result.ended_ms) {
      std::printf("FAILED: a child cell ran outside the parent's long cell\n");
      ok = false;
    }
    if (c.thread != "subshell-1") {
      std::printf("FAILED: a child cell ran on thread '%s'\n", c.thread.c_str());
      ok = false;
    }
  }
  if (parent_result.thread != "main") {
    std::printf("FAILED: the parent's cell ran on thread '%s', not main\n", parent_result.thread.c_str());
    ok = false;
  }
  std::printf("%s\n", ok ? "OK: the child ran and was deleted while the parent was busy; the parent answered last"
                         : "FAILED");
  return ok ? 0 : 1;
}
