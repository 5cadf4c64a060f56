// SPDX-License-Identifier: MIT
// examples/lua_coroutine_sessions.cpp - one lua_State, 5,000 coroutine sessions on two threads.
//
// lua_sessions.cpp's story (browser sessions calling one interpreter that only its own thread
// may touch) at a scale where a thread per session no longer fits: 5,000 sessions are
// tether::task coroutines spread over two session executors. A session awaits each Lua call
// with tether::co_with; while the call waits in the interpreter's queue, the session holds no
// thread. The same session as a plain thread, and as a coroutine:
//
//   void session(int id, int calls, std::stop_token stop) {          // one thread each
//     for (int k = 1; k <= calls && !stop.stop_requested(); ++k)
//       sum = vm.with([&](lua_vm& l) { return l.eval(chunk(id, k)); });   // blocks the thread
//   }
//   tether::task<int> session(int id, int calls) {                   // spawn(ex, session(..), stop)
//     for (int k = 1; k <= calls; ++k) {
//       auto call = tether::co_with(vm, [=](lua_vm& l) { return l.eval(chunk(id, k)); });
//       sum = co_await call;                   // throws operation_cancelled once stopped
//     }
//   }
//
// Each session has its own std::stop_source. A tenth of the browsers (chosen with a fixed
// seed) go away partway through their session: a separate thread calls request_stop(), the
// session's pending co_with throws tether::operation_cancelled (an abandoned call never runs
// in Lua) and the session ends. The program then checks that nothing was lost or run twice:
// every session ended exactly once, and the Lua evaluations that ran - counted by Lua and by
// the C++ lambda around them - are exactly the calls whose results reached a session.
//
// Run: ctest -R lua_coroutine (or run the binary). Exit status 0 only when every check passes.
#include <tether/confined.hpp>
#include <tether/coroutine.hpp>
#include <tether/executor.hpp>
#include <tether/thread_checker.hpp>

#include <lua.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <future>
#include <numeric>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

namespace {

class lua_vm {
 public:
  lua_vm() : L_(luaL_newstate()) {
    if (L_ == nullptr) throw std::runtime_error("lua: out of memory");
    luaL_openlibs(L_);
    (void)eval("evaluations = 0; sessions = {}; return 0");
  }
  ~lua_vm() { lua_close(L_); }
  lua_vm(const lua_vm&) = delete;
  lua_vm& operator=(const lua_vm&) = delete;

  // Runs a chunk that returns an integer; Lua errors become exceptions.
  lua_Integer eval(const std::string& chunk) {
    owner_.check("lua_vm");
    if (luaL_loadstring(L_, chunk.c_str()) != LUA_OK || lua_pcall(L_, 0, 1, 0) != LUA_OK) {
      std::string msg = lua_tostring(L_, -1);
      lua_pop(L_, 1);
      throw std::runtime_error("lua: " + msg);
    }
    int is_integer = 0;
    const lua_Integer v = lua_tointegerx(L_, -1, &is_integer);
    lua_pop(L_, 1);
    if (!is_integer) throw std::runtime_error("lua: the chunk did not return an integer");
    return v;
  }

 private:
  lua_State* L_;
  tether::thread_checker owner_;  // bound on the owner thread, where the state is created
};

// Call k of session id: adds id * k to the session's running sum, in a per-session Lua table,
// and returns it (id * k * (k + 1) / 2 after k calls, when each call ran once and in order).
std::string chunk(int id, int k) {
  const std::string i = std::to_string(id);
  return "local s = sessions[" + i + "]\n"
         "if s == nil then s = {calls = 0, sum = 0}; sessions[" + i + "] = s end\n"
         "evaluations = evaluations + 1\n"
         "s.calls = s.calls + 1\n"
         "s.sum = s.sum + " + i + " * " + std::to_string(k) + "\n"
         "return s.sum";
}

// One session as its coroutine saw it. The atomics are also read by the browser thread while
// the session runs; the rest is read by main once the session's future is ready.
struct session_record {
  int planned = 0;                 // calls the session means to make
  int leave_after = 0;             // > 0: its browser goes away once this many calls completed
  std::atomic<int> calls_seen{0};  // calls whose result reached the session
  std::atomic<int> ended{0};       // times the session's body ended: must be 1
  bool wrong = false;              // a result differed from the expected running sum
};

// Counts the end of a session's body however it ends: co_return, an exception, or its frame
// destroyed while suspended.
struct end_mark {
  std::atomic<int>& ended;
  ~end_mark() { ended.fetch_add(1, std::memory_order_release); }
};

// ran_in_cpp is only touched on the interpreter's owner thread, inside the called lambda.
tether::task<int> session(tether::confined<lua_vm>& vm, int id, session_record& rec, long& ran_in_cpp) {
  end_mark mark{rec.ended};
  for (int k = 1; k <= rec.planned; ++k) {
    // A named awaitable: g++ 12 mishandles some temporaries inside co_await expressions.
    auto call = tether::co_with(vm, [&ran_in_cpp, code = chunk(id, k)](lua_vm& l) {
      ++ran_in_cpp;
      return l.eval(code);
    });
    const lua_Integer sum = co_await call;  // operation_cancelled once the browser went away
    rec.calls_seen.fetch_add(1, std::memory_order_release);
    if (sum != static_cast<lua_Integer>(id) * k * (k + 1) / 2) rec.wrong = true;
  }
  co_return rec.planned;
}

}  // namespace

int main() {
  using namespace std::chrono_literals;
  constexpr int sessions = 5000;
  constexpr int leavers = sessions / 10;
  int failures = 0;
  auto check = [&](bool ok, const char* what) {
    if (!ok) {
      std::printf("CHECK FAILED: %s\n", what);
      ++failures;
    }
  };

  tether::executor lua_owner{{.name = "lua-owner"}};
  tether::confined<lua_vm> vm{lua_owner};
  long ran_in_cpp = 0;
  tether::executor sessions_0{{.name = "sessions-0"}}, sessions_1{{.name = "sessions-1"}};
  tether::executor* const homes[] = {&sessions_0, &sessions_1};

  // The plan, from a fixed seed: how many calls each session makes, and which browsers go
  // away after how many of them (always before the last, so they leave mid-session).
  std::mt19937 rng{20240601};
  std::vector<session_record> records(sessions);
  for (auto& r : records) r.planned = std::uniform_int_distribution<int>{5, 20}(rng);
  std::vector<int> leaving(sessions);
  std::iota(leaving.begin(), leaving.end(), 0);
  std::shuffle(leaving.begin(), leaving.end(), rng);
  leaving.resize(leavers);
  for (int id : leaving) records[id].leave_after = std::uniform_int_distribution<int>{1, records[id].planned - 1}(rng);
  std::sort(leaving.begin(), leaving.end(),
            [&](int a, int b) { return records[a].leave_after < records[b].leave_after; });

  std::vector<std::stop_source> stops(sessions);
  std::vector<std::future<int>> futures;
  futures.reserve(sessions);

  // The browsers going away. They leave by progress rather than by the clock, so that they
  // leave mid-session however fast or slow (sanitizers) this machine runs the sessions.
  std::jthread browsers([&](std::stop_token quit) {
    tether::set_thread_name("browsers");
    for (int id : leaving) {
      const session_record& r = records[id];
      while (r.calls_seen.load(std::memory_order_acquire) < r.leave_after &&
             r.ended.load(std::memory_order_acquire) == 0 && !quit.stop_requested())
        std::this_thread::sleep_for(100us);
      stops[id].request_stop();
    }
  });

  const auto start = std::chrono::steady_clock::now();
  for (int id = 0; id < sessions; ++id)
    futures.push_back(tether::spawn(*homes[id % 2], session(vm, id, records[id], ran_in_cpp), stops[id].get_token()));

  // Every future must become ready, once, with a value or an exception.
  int completed = 0, cancelled = 0, failed = 0, unfinished = 0, cancelled_unasked = 0, wrong = 0;
  const auto deadline = start + 120s;  // a hang is reported, not waited out
  for (int id = 0; id < sessions; ++id) {
    session_record& r = records[id];
    if (futures[id].wait_until(deadline) != std::future_status::ready) {
      ++unfinished;
      continue;
    }
    try {
      const int calls = futures[id].get();
      ++completed;
      if (calls != r.planned || r.calls_seen.load() != r.planned) ++wrong;
    } catch (const tether::operation_cancelled&) {
      ++cancelled;
      if (r.leave_after == 0) ++cancelled_unasked;
      if (r.calls_seen.load() >= r.planned) ++wrong;  // nothing was left to cancel
    } catch (const std::exception& e) {
      std::printf("session %d: %s\n", id, e.what());
      ++failed;
    }
    if (r.wrong) ++wrong;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  browsers.request_stop();
  browsers.join();

  // The calls the sessions saw complete, against what the interpreter ran.
  long calls_seen = 0;
  int ended_twice_or_never = 0;
  for (const auto& r : records) {
    calls_seen += r.calls_seen.load();
    if (r.ended.load() != 1) ++ended_twice_or_never;
  }
  int lua_mismatch = 0;
  lua_Integer lua_evaluations = 0;
  long cpp_evaluations = 0;
  if (unfinished == 0)
    vm.with([&](lua_vm& l) {
      lua_evaluations = l.eval("return evaluations");
      cpp_evaluations = ran_in_cpp;
      for (int id = 0; id < sessions; ++id) {
        const std::string i = std::to_string(id);
        const lua_Integer n = l.eval("local s = sessions[" + i + "]; return s and s.calls or 0");
        if (n != records[id].calls_seen.load()) ++lua_mismatch;
      }
    });

  std::printf("lua_coroutine_sessions: %d sessions on 2 session threads, one lua_State on its own thread\n", sessions);
  std::printf("  sessions: %d completed + %d cancelled = %d; %d failed, %d unfinished\n", completed, cancelled,
              completed + cancelled, failed, unfinished);
  std::printf("  %d browsers went away; %d of those sessions had already finished\n", leavers,
              leavers - cancelled + cancelled_unasked);
  std::printf("  calls: %ld reached their sessions; Lua counted %lld evaluations, the C++ lambdas %ld\n", calls_seen,
              static_cast<long long>(lua_evaluations), cpp_evaluations);
  std::printf("  elapsed %.3f s, %.0f calls/s\n", seconds, static_cast<double>(calls_seen) / seconds);

  check(unfinished == 0, "every session's future became ready");
  check(ended_twice_or_never == 0, "every session's body ended exactly once");
  check(failed == 0, "no session failed with another exception");
  check(completed + cancelled == sessions, "sessions completed + sessions cancelled == sessions");
  check(wrong == 0, "every result and every session's call count was as expected");
  check(cancelled > 0 && cancelled >= leavers / 2, "roughly a tenth of the sessions were cancelled");
  check(cancelled_unasked == 0, "only sessions whose browser went away were cancelled");
  check(lua_evaluations == calls_seen, "Lua ran exactly the calls that reached their sessions");
  check(cpp_evaluations == calls_seen, "the C++ lambdas ran exactly the calls that reached their sessions");
  check(lua_mismatch == 0, "per session, Lua's call count equals the calls the session saw");

  std::printf(failures == 0 ? "lua_coroutine_sessions: all checks passed\n" : "lua_coroutine_sessions: FAILED\n");
  return failures == 0 ? 0 : 1;
}
