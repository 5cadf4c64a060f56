// Runs a piece of a fault test in a forked child with a watchdog, so that a crash, an abort
// (std::terminate) or a hang is reported as a result instead of ending the test program.
//
// The calling process must be single-threaded at the fork (no thread of a previous case may
// still run): the child gets only the forking thread.
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace tether_test {

struct fork_result {
  enum kind_t { exited, crashed, hung } kind = exited;
  int code = 0;    // exit code (exited)
  int signal = 0;  // crashed

  bool ok() const noexcept { return kind == exited && code == 0; }
  std::string describe() const {
    switch (kind) {
      case exited: return "exit code " + std::to_string(code);
      case crashed: return std::string("killed by signal ") + std::to_string(signal) + " (" + strsignal(signal) + ")";
      case hung: return "hung (killed by the watchdog)";
    }
    return "?";
  }
};

// Runs body() -> int in a child process; its return value is the child's exit code (an
// exception escaping body exits 99). Waits at most `limit`, then kills the child.
template <class Body>
fork_result run_forked(Body&& body, std::chrono::milliseconds limit) {
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    std::exit(2);
  }
  if (pid == 0) {
    int code = 99;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: exception escaped: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "child: unknown exception escaped\n");
    }
    std::fflush(nullptr);
    _exit(code);
  }
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int wstatus = 0;
  fork_result r;
  for (;;) {
    if (waitpid(pid, &wstatus, WNOHANG) == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &wstatus, 0);
      r.kind = fork_result::hung;
      return r;
    }
    timespec ts{0, 500'000};
    nanosleep(&ts, nullptr);
  }
  if (WIFSIGNALED(wstatus)) {
    r.kind = fork_result::crashed;
    r.signal = WTERMSIG(wstatus);
  } else {
    r.code = WEXITSTATUS(wstatus);
  }
  return r;
}

}  // namespace tether_test
