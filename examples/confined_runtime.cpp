// examples/confined_runtime.cpp - story 1: a runtime that crashes when called from the wrong
// thread, served to 200 concurrent sessions.
//
// `toy` below stands for a runtime such as Julia: its API reads the "current task" from
// thread-local storage and, finding none (any thread the runtime did not set up), aborts
// with a message - Julia's C API would dereference a null pointer instead. The fix: one
// tether::executor owns the runtime; its around_task installs the current task around every
// task it runs; tether::confined<T> keeps a runtime object on that thread; 200 session
// threads evaluate expressions through it at once, and every result is checked.
//
// Exit status 0 only when every check passes.
#include <tether/confined.hpp>
#include <tether/context_guard.hpp>
#include <tether/executor.hpp>
#include <tether/thread_checker.hpp>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <latch>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

// ---- a runtime with Julia's thread rule ------------------------------------------------------
namespace toy {

struct task {
  std::uint64_t evaluations = 0;
  std::map<std::string, std::int64_t> globals;
};
struct task_tag {
  using context_type = task;
};

// The runtime's own view of "the current task": thread-local, installed by tether.
inline task& current_task() {
  task* t = tether::current<task_tag>();
  if (t == nullptr) {
    std::fprintf(stderr, "toy runtime: no current task on this thread - it was not created by the runtime\n");
    std::abort();
  }
  return *t;
}

// Evaluates integer expressions with + - * ( ) and global names; `name = expr` assigns.
class evaluator {
 public:
  explicit evaluator(std::string_view src) : s_(src) {}
  std::int64_t run() {
    task& t = current_task();
    ++t.evaluations;
    skip();
    const std::size_t save = pos_;
    std::string name = ident();
    skip();
    if (!name.empty() && peek() == '=') {
      ++pos_;
      const std::int64_t v = sum();
      t.globals[name] = v;
      return v;
    }
    pos_ = save;
    const std::int64_t v = sum();
    skip();
    if (pos_ != s_.size()) throw std::invalid_argument("toy: trailing input in '" + std::string(s_) + "'");
    return v;
  }

 private:
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip() {
    while (std::isspace(static_cast<unsigned char>(peek()))) ++pos_;
  }
  std::string ident() {
    std::string out;
    while (std::isalpha(static_cast<unsigned char>(peek())) || peek() == '_') out += s_[pos_++];
    return out;
  }
  std::int64_t sum() {
    std::int64_t v = product();
    for (skip(); peek() == '+' || peek() == '-'; skip()) {
      const char op = s_[pos_++];
      const std::int64_t r = product();
      v = op == '+' ? v + r : v - r;
    }
    return v;
  }
  std::int64_t product() {
    std::int64_t v = atom();
    for (skip(); peek() == '*'; skip()) {
      ++pos_;
      v *= atom();
    }
    return v;
  }
  std::int64_t atom() {
    skip();
    if (peek() == '(') {
      ++pos_;
      const std::int64_t v = sum();
      skip();
      if (peek() != ')') throw std::invalid_argument("toy: missing )");
      ++pos_;
      return v;
    }
    if (std::isdigit(static_cast<unsigned char>(peek()))) {
      std::int64_t v = 0;
      while (std::isdigit(static_cast<unsigned char>(peek()))) v = v * 10 + (s_[pos_++] - '0');
      return v;
    }
    const std::string name = ident();
    if (name.empty()) throw std::invalid_argument("toy: unexpected input in '" + std::string(s_) + "'");
    const auto& g = current_task().globals;
    const auto it = g.find(name);
    if (it == g.end()) throw std::invalid_argument("toy: undefined name '" + name + "'");
    return it->second;
  }

  std::string_view s_;
  std::size_t pos_ = 0;
};

inline std::int64_t eval(std::string_view expr) { return evaluator(expr).run(); }

// A runtime-side object whose constructor and destructor use the runtime (so they too must
// run on the owner thread): a module with its own prelude.
class module {
 public:
  explicit module(std::int64_t scale) { eval("scale = " + std::to_string(scale)); }
  ~module() { eval("scale = 0"); }
  std::int64_t scaled(std::int64_t a, std::int64_t b) {
    owner_.check("toy::module");
    return eval("scale * (" + std::to_string(a) + " + " + std::to_string(b) + ")");
  }

 private:
  tether::thread_checker owner_;
};

}  // namespace toy

int main() {
  constexpr int sessions = 200;
  constexpr int calls_per_session = 50;
  int failures = 0;

  toy::task root;  // the runtime's state; only its owner thread ever touches it
  tether::executor runtime_owner{{
      .name = "toy-runtime",
      .on_start = [] { std::printf("runtime initialised on its own thread\n"); },
      .around_task = tether::install_context<toy::task_tag>(&root),
  }};
  {
    tether::confined<toy::module> mod{runtime_owner, 3};

    // A session thread may not touch the module directly: a clear error, not a crash.
    std::thread([&] {
      tether::set_thread_name("session-probe");
      try {
        mod.local();
        ++failures;
      } catch (const tether::wrong_thread& e) {
        std::printf("as expected: %s\n", e.what());
      }
    }).join();

    std::atomic<int> wrong{0}, errors{0};
    std::latch go{sessions};
    std::vector<std::thread> threads;
    const auto t0 = std::chrono::steady_clock::now();
    for (int s = 0; s < sessions; ++s)
      threads.emplace_back([&, s] {
        tether::set_thread_name("session-" + std::to_string(s));
        go.arrive_and_wait();
        for (int i = 0; i < calls_per_session; ++i) {
          try {
            // A plain expression through the executor, and a call on the confined module.
            const std::string expr = std::to_string(s) + " * " + std::to_string(i) + " + (7 - 2)";
            const std::int64_t a = runtime_owner.call([&] { return toy::eval(expr); });
            const std::int64_t b = mod.with([&](toy::module& m) { return m.scaled(s, i); });
            if (a != s * i + 5 || b != 3 * (s + i)) wrong.fetch_add(1);
          } catch (const std::exception& e) {
            std::fprintf(stderr, "session %d: %s\n", s, e.what());
            errors.fetch_add(1);
          }
        }
      });
    for (auto& t : threads) t.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    const std::uint64_t evaluations = runtime_owner.call([&] { return root.evaluations; });
    const std::uint64_t expected = 1 + 2ull * sessions * calls_per_session;  // + the module's prelude
    const auto stats = runtime_owner.stats();
    std::printf("%d sessions x %d calls x 2 in %.3f s: %llu evaluations (expected %llu), %d wrong, %d errors\n",
                sessions, calls_per_session, seconds, static_cast<unsigned long long>(evaluations),
                static_cast<unsigned long long>(expected), wrong.load(), errors.load());
    std::printf("owner: %llu tasks, busy %.1f ms, idle %.1f ms\n", static_cast<unsigned long long>(stats.tasks_run),
                std::chrono::duration<double, std::milli>(stats.run_time).count(),
                std::chrono::duration<double, std::milli>(stats.wait_time).count());
    if (wrong != 0 || errors != 0 || evaluations != expected) ++failures;
  }
  // The module's destructor ran on the owner (it evaluates "scale = 0" there).
  if (runtime_owner.call([&] { return toy::eval("scale"); }) != 0) ++failures;

  // Called from this thread without the executor, the runtime would abort:
  //   toy::eval("1 + 1");   // "toy runtime: no current task on this thread"
  if (tether::current<toy::task_tag>() != nullptr) ++failures;

  std::printf(failures == 0 ? "confined_runtime: all checks passed\n" : "confined_runtime: FAILED\n");
  return failures == 0 ? 0 : 1;
}
