// examples/lua_sessions.cpp - one lua_State, 200 sessions.
//
// A lua_State is not thread-safe: two threads inside it at once corrupt it. Here one
// tether::executor owns it through tether::confined<lua_vm>; 200 session threads each
// evaluate expressions through it concurrently, and every result is checked, along with a
// Lua-side count of the evaluations.
//
// Exit status 0 only when every check passes.
#include <tether/confined.hpp>
#include <tether/executor.hpp>
#include <tether/thread_checker.hpp>

#include <lua.hpp>

#include <atomic>
#include <cstdio>
#include <latch>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

class lua_vm {
 public:
  lua_vm() : L_(luaL_newstate()) {
    if (L_ == nullptr) throw std::runtime_error("lua: out of memory");
    luaL_openlibs(L_);
    run("evaluations = 0");
  }
  ~lua_vm() { lua_close(L_); }
  lua_vm(const lua_vm&) = delete;
  lua_vm& operator=(const lua_vm&) = delete;

  // Evaluates `return <expr>` as an integer; Lua errors become exceptions.
  lua_Integer eval(const std::string& expr) {
    owner_.check("lua_vm");
    run("evaluations = evaluations + 1");
    if (luaL_loadstring(L_, ("return " + expr).c_str()) != LUA_OK || lua_pcall(L_, 0, 1, 0) != LUA_OK) {
      std::string msg = lua_tostring(L_, -1);
      lua_pop(L_, 1);
      throw std::runtime_error("lua: " + msg);
    }
    int is_integer = 0;
    const lua_Integer v = lua_tointegerx(L_, -1, &is_integer);
    lua_pop(L_, 1);
    if (!is_integer) throw std::runtime_error("lua: '" + expr + "' is not an integer");
    return v;
  }

 private:
  void run(const char* chunk) {
    if (luaL_dostring(L_, chunk) != LUA_OK) {
      std::string msg = lua_tostring(L_, -1);
      lua_pop(L_, 1);
      throw std::runtime_error("lua: " + msg);
    }
  }

  lua_State* L_;
  tether::thread_checker owner_;  // bound on the owner thread, where the state is created
};

}  // namespace

int main() {
  constexpr int sessions = 200;
  constexpr int per_session = 40;
  int failures = 0;

  tether::executor owner{{.name = "lua-owner"}};
  tether::confined<lua_vm> vm{owner};

  std::atomic<int> wrong{0}, errors{0};
  std::latch go{sessions};
  std::vector<std::thread> threads;
  for (int s = 0; s < sessions; ++s)
    threads.emplace_back([&, s] {
      tether::set_thread_name("lua-session-" + std::to_string(s));
      go.arrive_and_wait();
      for (int i = 0; i < per_session; ++i) {
        try {
          const lua_Integer a = vm.with([&](lua_vm& l) { return l.eval(std::to_string(s) + " * " + std::to_string(i) + " + 7"); });
          const lua_Integer b = vm.with([&](lua_vm& l) { return l.eval("string.len(string.rep('ab', " + std::to_string(i) + "))"); });
          if (a != s * i + 7 || b != 2 * i) wrong.fetch_add(1);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "session %d: %s\n", s, e.what());
          errors.fetch_add(1);
        }
      }
    });
  for (auto& t : threads) t.join();

  // Lua errors come back as exceptions to the caller.
  try {
    vm.with([](lua_vm& l) { return l.eval("nil + 1"); });
    ++failures;
  } catch (const std::runtime_error& e) {
    std::printf("as expected: %s\n", e.what());
  }

  const lua_Integer evaluations = vm.with([](lua_vm& l) { return l.eval("evaluations"); });
  const lua_Integer expected = 2LL * sessions * per_session + 2;  // + the failed one + this one
  std::printf("%d sessions x %d x 2 evaluations: Lua counted %lld (expected %lld); %d wrong, %d errors\n", sessions,
              per_session, static_cast<long long>(evaluations), static_cast<long long>(expected), wrong.load(),
              errors.load());
  if (wrong != 0 || errors != 0 || evaluations != expected) ++failures;

  std::printf(failures == 0 ? "lua_sessions: all checks passed\n" : "lua_sessions: FAILED\n");
  return failures == 0 ? 0 : 1;
}
