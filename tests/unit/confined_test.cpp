// Unit tests for tether::confined<T>: T is constructed and destroyed on the owner thread,
// with / async_with / post_with run on the owner (inline there), results and exceptions come
// back, local() works only on the owner and names both threads otherwise, and a constructor
// that throws reports to the creator.
#include <tether/confined.hpp>

#include <atomic>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>

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
    std::thread other([&] { h.post_with([](hostile& x) { x.bump(); }); });
    other.join();
    CHECK(ex.poll() == 1);
    CHECK(h.local().value == 2);
  }
  CHECK(destroyed_on == std::this_thread::get_id());
}
