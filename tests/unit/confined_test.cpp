// Unit tests for tether::confined<T>: T is constructed and destroyed on the owner thread,
// with / async_with / post_with run on the owner (inline there), results and exceptions come
// back, local() works only on the owner and names both threads otherwise, a constructor
// that throws reports to the creator, and the destruction hand-over survives an allocation
// failure, a stopped executor (destroyed on the owner while it drains) and a finished one
// (leaked, never destroyed on the wrong thread).
#include <tether/confined.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "alloc_failure.hpp"
#include "catch.hpp"

namespace {

// A thread-hostile object: remembers where it was made and checks every use.
struct hostile {
  explicit hostile(int start, std::thread::id* destroyed_on = nullptr)
      : value(start), made_on(std::this_thread::get_id()), destroyed_on_(destroyed_on) {}
  ~hostile() {
    if (destroyed_on_ != nullptr) *destroyed_on_ = std::this_thread::get_id();
  }
  int bump() {
    if (std::this_thread::get_id() != made_on) throw std::logic_error("used from the wrong thread");
    return ++value;
  }
  int value;
  std::thread::id made_on;
  std::thread::id* destroyed_on_;
};

}  // namespace

TEST_CASE("confined: T lives and dies on the owner thread", "[confined]") {
  tether::executor ex{{.name = "owner"}};
  const std::thread::id owner_id = ex.call([] { return std::this_thread::get_id(); });
  std::thread::id destroyed_on{};
  {
    tether::confined<hostile> h{ex, 10, &destroyed_on};
    CHECK(h.with([](hostile& x) { return x.made_on; }) == owner_id);
    CHECK(h.with([](hostile& x) { return x.bump(); }) == 11);
    CHECK(h.async_with([](hostile& x) { return x.bump(); }).get() == 12);
    std::promise<int> posted;
    CHECK(h.post_with([&](hostile& x) { posted.set_value(x.bump()); }));
    CHECK(posted.get_future().get() == 13);
    CHECK(&h.get_executor() == &ex);
  }
  ex.call([] {});  // destruction is handed to the owner; this call runs after it
  CHECK(destroyed_on == owner_id);
}

TEST_CASE("confined: local() on the owner, wrong_thread elsewhere", "[confined]") {
  tether::executor ex{{.name = "lua-owner"}};
  tether::confined<hostile> h{ex, 0};
  CHECK_THROWS_AS(h.local(), tether::wrong_thread);
  try {
    h.local();
  } catch (const tether::wrong_thread& e) {
    CHECK_THAT(e.what(), Catch::Contains("confined<") && Catch::Contains("hostile") &&
                             Catch::Contains("lua-owner") && Catch::Contains("used from"));
  }
  CHECK(h.with([&](hostile&) { return h.local().bump(); }) == 1);  // inline on the owner
  // with() from the owner runs inline (no self-deadlock).
  CHECK(h.with([&](hostile&) { return h.with([](hostile& x) { return x.bump(); }); }) == 2);
}

// The owner check sits on every call's path (local(), with() inline, each queued call): on the
// owner it must cost no allocation (the error's message is built only for the error).
TEST_CASE("confined: the owner's own calls allocate nothing", "[confined]") {
  tether::executor ex{{.name = "lua-owner"}};
  tether::confined<hostile> h{ex, 0};
  const int bumps = ex.call([&] {
    tether_test::failing_allocations oom;  // any operator new on this thread throws
    int n = 0;
    try {
      for (int i = 0; i < 100; ++i) n = h.local().bump();
      n = h.with([](hostile& x) { return x.bump(); });
    } catch (const std::bad_alloc&) {
      return -1;
    }
    return n;
  });
  CHECK(bumps == 101);
}

TEST_CASE("confined: exceptions come back to the caller", "[confined]") {
  tether::executor ex;
  tether::confined<std::string> s{ex, "abc"};
  CHECK_THROWS_AS(s.with([](std::string& v) { return v.at(10); }), std::out_of_range);
  auto f = s.async_with([](std::string& v) -> char { return v.at(10); });
  CHECK_THROWS_AS(f.get(), std::out_of_range);
  CHECK(s.with([](std::string& v) -> std::string& { return v; }) == "abc");

  struct throws_in_ctor {
    throws_in_ctor() { throw std::runtime_error("cannot start runtime"); }
  };
  CHECK_THROWS_WITH(tether::confined<throws_in_ctor>(ex), "cannot start runtime");
}

TEST_CASE("confined: on an adopted owner, construction and destruction are inline", "[confined]") {
  tether::executor ex{tether::adopt_current_thread};
  std::thread::id destroyed_on{};
  {
    tether::confined<hostile> h{ex, 0, &destroyed_on};
    CHECK(h.local().bump() == 1);
    std::thread other([&] { CHECK(h.post_with([](hostile& x) { x.bump(); })); });
    other.join();
    CHECK(ex.try_run() == 1);
    CHECK(h.local().value == 2);
  }
  CHECK(destroyed_on == std::this_thread::get_id());
}

namespace {

// Records on which thread each instance was destroyed.
struct tracked {
  static inline std::atomic<int> live{0};
  static inline std::mutex m;
  static inline std::vector<std::thread::id> destroyed_on;
  tracked() { live.fetch_add(1); }
  ~tracked() {
    live.fetch_sub(1);
    std::lock_guard lock{m};
    destroyed_on.push_back(std::this_thread::get_id());
  }
  tracked(const tracked&) = delete;
  tracked& operator=(const tracked&) = delete;
  static std::vector<std::thread::id> take() {
    std::lock_guard lock{m};
    return std::exchange(destroyed_on, {});
  }
};

struct gate {
  std::promise<void> p;
  std::shared_future<void> f{p.get_future().share()};
};

}  // namespace

TEST_CASE("confined: the destruction hand-over survives an allocation failure", "[confined][oom]") {
  (void)tracked::take();
  tether::executor ex{{.name = "oom-owner"}};
  const std::thread::id owner_id = ex.call([] { return std::this_thread::get_id(); });
  auto obj = std::make_unique<tether::confined<tracked>>(ex);
  gate g;
  REQUIRE(ex.post([&g] { g.f.wait(); }));  // holds the owner: tasks pile up
  std::atomic<int> used{0};
  REQUIRE(obj->post_with([&used](tracked&) { used.fetch_add(1); }));
  bool oom_hit = false;
  int oom_refused = 0;
  {
    tether_test::failing_allocations oom;
    // Post until a post needs a new queue block, which it cannot get: that is where the
    // destructor's hand-over post will fail too.
    // (No assertions in here: they allocate.)
    bool hit = false;
    int refused = 0;
    for (int i = 0; i < 100000 && !hit; ++i) {
      try {
        if (!ex.post([] {})) ++refused;
      } catch (const std::bad_alloc&) {
        hit = true;
      }
    }
    if (hit) obj.reset();  // must neither throw nor terminate
    oom_hit = hit;
    oom_refused = refused;
  }
  REQUIRE(oom_hit);
  CHECK(oom_refused == 0);
  CHECK_FALSE(obj);
  CHECK(tracked::live == 1);  // not destroyed here
  g.p.set_value();
  ex.call([] {});
  ex.stop();
  ex.join();
  CHECK(used == 1);  // the task posted before ran first
  CHECK(tracked::live == 0);
  CHECK(tracked::take() == std::vector<std::thread::id>{owner_id});
}

TEST_CASE("confined: destroyed while its executor drains a stop, T dies on the owner", "[confined][stop]") {
  (void)tracked::take();
  tether::executor ex{{.name = "draining"}};
  const std::thread::id owner_id = ex.call([] { return std::this_thread::get_id(); });
  gate g;
  auto obj = std::make_unique<tether::confined<tracked>>(ex);
  std::atomic<int> used{0};
  REQUIRE(ex.post([&g] { g.f.wait(); }));
  REQUIRE(obj->post_with([&used](tracked&) { used.fetch_add(1); }));
  ex.stop();  // drain: the owner still has tasks to run
  CHECK(obj->post_with([](tracked&) {}).is_closed());
  obj.reset();
  CHECK(tracked::live == 1);
  g.p.set_value();
  ex.join();
  CHECK(used == 1);
  CHECK(tracked::live == 0);
  CHECK(tracked::take() == std::vector<std::thread::id>{owner_id});
}

TEST_CASE("confined: destroyed after its executor finished, T is leaked, not destroyed on the wrong thread",
          "[confined][stop]") {
  (void)tracked::take();
  const int live_before = tracked::live;
  tether::executor ex{{.name = "gone"}};
  auto obj = std::make_unique<tether::confined<tracked>>(ex);
  ex.stop();
  ex.join();
  obj.reset();  // prints a diagnostic; the T stays reachable (tether::detail::leaked_destroys)
  CHECK(tracked::live == live_before + 1);
  CHECK(tracked::take().empty());
  CHECK(tether::detail::leaked_destroys.load() != nullptr);
}

TEST_CASE("confined: stop(cancel) still destroys T on the owner", "[confined][stop]") {
  (void)tracked::take();
  tether::executor ex{{.name = "cancelled"}};
  const std::thread::id owner_id = ex.call([] { return std::this_thread::get_id(); });
  auto obj = std::make_unique<tether::confined<tracked>>(ex);
  gate g;
  REQUIRE(ex.post([&g] { g.f.wait(); }));
  obj.reset();  // queued behind the gate
  ex.stop(tether::stop_mode::cancel);
  g.p.set_value();
  ex.join();
  CHECK(tracked::take() == std::vector<std::thread::id>{owner_id});
}
