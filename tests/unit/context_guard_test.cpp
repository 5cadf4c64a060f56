// Unit tests for tether::context_guard and tether::current: install and restore, nesting,
// restore on exception, one slot per thread and per tag, install_context as an around_task
// wrapper, and guards destroyed out of order terminate the process (checked in a child).
#include <tether/context_guard.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "catch.hpp"

namespace {

struct runtime {
  std::string name;
};
struct task_tag {
  using context_type = runtime;
};
struct other_tag {
  using context_type = runtime;
};

}  // namespace

TEST_CASE("context_guard installs for its scope and restores", "[context_guard]") {
  runtime a{"a"};
  CHECK(tether::current<task_tag>() == nullptr);
  {
    tether::context_guard<task_tag> g{&a};
    CHECK(tether::current<task_tag>() == &a);
    CHECK(g.previous() == nullptr);
  }
  CHECK(tether::current<task_tag>() == nullptr);
}

TEST_CASE("context_guard nests and restores each level", "[context_guard]") {
  runtime a{"a"}, b{"b"}, c{"c"};
  tether::context_guard<task_tag> ga{&a};
  {
    tether::context_guard<task_tag> gb{&b};
    {
      tether::context_guard<task_tag> gc{&c};
      CHECK(tether::current<task_tag>() == &c);
      tether::context_guard<task_tag> cleared{nullptr};
      CHECK(tether::current<task_tag>() == nullptr);
    }
    CHECK(tether::current<task_tag>() == &b);
  }
  CHECK(tether::current<task_tag>() == &a);
}

TEST_CASE("context_guard restores when an exception unwinds", "[context_guard]") {
  runtime a{"a"}, b{"b"};
  tether::context_guard<task_tag> ga{&a};
  try {
    tether::context_guard<task_tag> gb{&b};
    throw std::runtime_error("unwind");
  } catch (const std::runtime_error&) {
  }
  CHECK(tether::current<task_tag>() == &a);
}

TEST_CASE("context slots are per thread and per tag", "[context_guard]") {
  runtime a{"a"}, b{"b"};
  tether::context_guard<task_tag> g{&a};
  tether::context_guard<other_tag> o{&b};
  CHECK(tether::current<task_tag>() == &a);
  CHECK(tether::current<other_tag>() == &b);
  runtime* seen_elsewhere = &a;
  std::thread([&] { seen_elsewhere = tether::current<task_tag>(); }).join();
  CHECK(seen_elsewhere == nullptr);
  // A tag without context_type installs pointers to itself.
  struct plain {
    int v = 3;
  } p;
  tether::context_guard<plain> gp{&p};
  CHECK(tether::current<plain>()->v == 3);
}

TEST_CASE("install_context wraps a callable in a guard", "[context_guard]") {
  runtime a{"a"};
  auto wrap = tether::install_context<task_tag>(&a);
  runtime* inside = nullptr;
  wrap([&] { inside = tether::current<task_tag>(); });
  CHECK(inside == &a);
  CHECK(tether::current<task_tag>() == nullptr);
}

TEST_CASE("context guards destroyed out of order terminate the process", "[context_guard]") {
  // Run the misuse in a child process; it must die by SIGABRT (std::terminate).
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(2);                      // keep the expected message out of the test log
    std::signal(SIGABRT, SIG_DFL);   // the test framework's handler would report it as a failure
    runtime a{"a"}, b{"b"};
    auto first = std::make_unique<tether::context_guard<task_tag>>(&a);
    auto second = std::make_unique<tether::context_guard<task_tag>>(&b);
    first.reset();  // out of order: `second` is still installed
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(WIFSIGNALED(status));
  if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == SIGABRT);
}
