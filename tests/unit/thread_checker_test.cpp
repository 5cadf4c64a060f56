// Unit tests for tether::thread_checker and tether::set_thread_name: bound at construction or
// at first use, check() passes on the owner and throws wrong_thread elsewhere with both
// threads named, detach() rebinds, copies keep the owner, and the clang -Wthread-safety
// annotation accepts guarded members after check().
#include <tether/thread_checker.hpp>

#include <atomic>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"

namespace {

class session_cache {
 public:
  int hit() {
    owner_.check("session_cache");
    return ++hits_;  // guarded: fine after check() (clang's -Wthread-safety agrees)
  }

 private:
  tether::thread_checker owner_;
  int hits_ TETHER_GUARDED_BY(owner_) = 0;
};

std::string failure_on_other_thread(const tether::thread_checker& c, const std::string& name) {
  std::string message;
  std::thread([&] {
    tether::set_thread_name(name);
    try {
      c.check("the cache");
    } catch (const tether::wrong_thread& e) {
      message = e.what();
    }
  }).join();
  return message;
}

}  // namespace

TEST_CASE("thread_checker passes on its owner and names both threads elsewhere", "[thread_checker]") {
  std::string message;
  std::thread owner([&] {
    tether::set_thread_name("checker-owner-thread");  // longer than the OS's 15 bytes
    tether::thread_checker c;
    CHECK_NOTHROW(c.check());
    CHECK(c.is_current());
    CHECK_THAT(c.describe_owner(), Catch::Contains("checker-owner-thread") && Catch::Contains("tid"));
    message = failure_on_other_thread(c, "session-17");
  });
  owner.join();
  CHECK_THAT(message, Catch::Contains("the cache") && Catch::Contains("checker-owner-thread") &&
                          Catch::Contains("session-17") && Catch::Contains("belongs to"));
}

TEST_CASE("thread_checker names threads by their OS name when tether was not told", "[thread_checker]") {
  std::string message;
  std::thread owner([&] {
    ::pthread_setname_np(::pthread_self(), "os-named");
    tether::thread_checker c;
    message = failure_on_other_thread(c, "caller");
  });
  owner.join();
  CHECK_THAT(message, Catch::Contains("'os-named'") && Catch::Contains("'caller'"));
}

TEST_CASE("thread_checker with deferred binding binds to its first user", "[thread_checker]") {
  tether::thread_checker c{tether::defer_binding};
  CHECK(c.describe_owner() == "no thread yet");
  bool first = false;
  std::thread([&] { first = c.is_current(); }).join();
  CHECK(first);
  CHECK_FALSE(c.is_current());
  CHECK_THROWS_AS(c.check(), tether::wrong_thread);
  CHECK_THAT(c.describe_owner(), Catch::Contains("exited"));
  c.detach();
  CHECK_NOTHROW(c.check());
  CHECK(c.is_current());
}

TEST_CASE("thread_checker: concurrent first uses bind exactly one thread", "[thread_checker]") {
  for (int round = 0; round < 50; ++round) {
    tether::thread_checker c{tether::defer_binding};
    std::atomic<int> owners{0};
    std::latch go{4};
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i)
      threads.emplace_back([&] {
        go.arrive_and_wait();
        owners += c.is_current() ? 1 : 0;
      });
    for (auto& t : threads) t.join();
    CHECK(owners == 1);
  }
}

TEST_CASE("thread_checker copies keep the owner; guarded members compile", "[thread_checker]") {
  tether::thread_checker c;
  const tether::thread_checker copy = c;
  CHECK(copy.is_current());
  session_cache cache;
  CHECK(cache.hit() == 1);
  CHECK(cache.hit() == 2);
  std::string message;
  std::thread([&] {
    try {
      cache.hit();
    } catch (const tether::wrong_thread& e) {
      message = e.what();
    }
  }).join();
  CHECK_THAT(message, Catch::Contains("session_cache"));
}
