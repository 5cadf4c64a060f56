// docs/examples/context_guard.cpp - a runtime that reads its "current task" from TLS, kept on
// one thread: confined<T> builds it there, the executor installs the context around every
// task, and thread_checker turns a wrong-thread call into an exception naming both threads.
// Built and run by ctest (label "doc"); exits non-zero if a check fails.
#include <tether/confined.hpp>
#include <tether/context_guard.hpp>
#include <tether/errors.hpp>
#include <tether/executor.hpp>
#include <tether/thread_checker.hpp>

#include <cstdio>
#include <string>
#include <thread>

struct runtime_task {
  int id;
};
struct runtime_tag {
  using context_type = runtime_task;
};

struct runtime {
  tether::thread_checker owner;  // bound to the thread that constructs the runtime
  int calls = 0;
  int eval(int x) {
    owner.check("runtime::eval");                               // wrong_thread elsewhere
    const runtime_task* task = tether::current<runtime_tag>();  // what the C API would read
    ++calls;
    return task != nullptr ? x * 2 + task->id : -1;
  }
};

int main() {
  runtime_task main_task{1};
  tether::executor owner{{.name = "runtime",
                          .around_task = tether::install_context<runtime_tag>(&main_task)}};
  tether::confined<runtime> rt{owner};  // constructed on the owner thread

  int sum = 0;
  std::thread session([&] {
    for (int i = 0; i < 10; ++i) sum += rt.with([i](runtime& r) { return r.eval(i); });
  });
  session.join();

  bool wrong_thread = false;
  try {
    rt.local();  // not the owner: refused with a message naming both threads
  } catch (const tether::wrong_thread& e) {
    wrong_thread = std::string(e.what()).find("runtime") != std::string::npos;
  }
  {
    runtime_task nested{7};
    tether::context_guard<runtime_tag> g{&nested};  // this thread's own context, restored on exit
    if (tether::current<runtime_tag>() != &nested) return 1;
  }
  const bool restored = tether::current<runtime_tag>() == nullptr;

  std::printf("sum %d, wrong_thread %d, restored %d\n", sum, wrong_thread, restored);
  return (sum == 2 * 45 + 10 && wrong_thread && restored) ? 0 : 1;
}
