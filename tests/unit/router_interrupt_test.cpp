// Unit tests for interrupting what a subshell runs (router::interrupt, control_request::
// interrupt, reply_sender::stop_token, handlers of the form Reply(Payload&&, std::stop_token))
// and for naming subshells with strings (subshell_id::from_string). Interrupting a running
// message on the parent and on a child, on an idle subshell (no effect, the next message
// starts unstopped), unknown and deleted ids, stop callbacks, stresses of interrupts racing
// long messages and racing a stream of instant ones (half of which never ask for a token, so
// their subshell takes no lock and makes no stop state).
//
// Handlers record what they saw in atomics; the test thread asserts.
#include <tether/router.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using tether::control_op;
using tether::control_request;
using tether::parent_subshell;
using tether::routing_errc;
using tether::subshell_id;

// A message: how long to run at most, unless stopped.
struct job {
  std::chrono::milliseconds at_most{0};
};
struct outcome {
  bool stopped = false;
  bool stopped_at_start = false;
};

// Runs until stopped or at_most has passed; says which.
outcome run_job(const job& j, const std::stop_token& token, std::atomic<int>& started) {
  outcome o;
  o.stopped_at_start = token.stop_requested();
  started.fetch_add(1);
  const auto end = std::chrono::steady_clock::now() + j.at_most;
  while (!token.stop_requested() && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(200us);
  o.stopped = token.stop_requested();
  return o;
}

template <class F>
bool eventually(F&& f) {
  for (int i = 0; i < 10000; ++i) {
    if (f()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return f();
}

}  // namespace

TEST_CASE("subshell_id: to_string and from_string round trip", "[router][interrupt][ids]") {
  CHECK(subshell_id::from_string("parent") == parent_subshell);
  CHECK(subshell_id::from_string("subshell-1") == subshell_id(1));
  CHECK(subshell_id::from_string("subshell-18446744073709551615") == subshell_id(UINT64_MAX));
  for (std::uint64_t v : {1ULL, 7ULL, 10ULL, 123456789ULL}) {
    const subshell_id id(v);
    CHECK(subshell_id::from_string(id.to_string()) == id);
  }
  for (const char* bad : {"", "subshell-", "subshell-0", "subshell-01", "subshell--1", "subshell-+1", "subshell-1x",
                          "subshell-18446744073709551616", "Subshell-1", "parent ", "1", "subshell 1"})
    CHECK_FALSE(subshell_id::from_string(bad).has_value());
  static_assert(subshell_id::from_string("subshell-42") == subshell_id(42));
}

TEST_CASE("router: interrupt stops the running message of a child, then of the parent", "[router][interrupt]") {
  tether::executor parent_ex{{.name = "parent"}};
  std::atomic<int> started{0};
  tether::router<job, outcome> r{parent_ex, [&](subshell_id) {
                                   return [&](job&& j, tether::reply_sender<job, outcome>& reply) {
                                     reply.send(run_job(j, reply.stop_token(), started));
                                   };
                                 }};
  const subshell_id child = *r.create_subshell();
  for (const subshell_id target : {child, parent_subshell}) {
    const int before = started.load();
    REQUIRE(r.send(target, job{10s}, 1));
    REQUIRE(eventually([&] { return started.load() == before + 1; }));
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(r.interrupt(target));
    auto rep = r.replies().pop_for(10s);
    REQUIRE(rep);
    REQUIRE(*rep);
    CHECK(rep->subshell() == target);
    CHECK((*rep)->stopped);
    CHECK_FALSE((*rep)->stopped_at_start);
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
    // The next message starts with a fresh token.
    REQUIRE(r.send(target, job{1ms}, 2));
    auto next = r.replies().pop_for(10s);
    REQUIRE(next);
    REQUIRE(*next);
    CHECK_FALSE((*next)->stopped);
  }
  r.stop();
  r.join();
}

TEST_CASE("router: interrupting an idle subshell changes nothing", "[router][interrupt]") {
  tether::executor parent_ex{{.name = "parent"}};
  std::atomic<int> started{0};
  tether::router<job, outcome> r{parent_ex, [&](subshell_id) {
                                   return [&](job&& j, std::stop_token token) { return run_job(j, token, started); };
                                 }};
  const subshell_id child = *r.create_subshell();
  CHECK(r.interrupt(child));
  CHECK(r.interrupt(parent_subshell));
  REQUIRE(r.send(child, job{20ms}, 1));
  auto rep = r.replies().pop_for(10s);
  REQUIRE(rep);
  REQUIRE(*rep);
  CHECK_FALSE((*rep)->stopped);
  CHECK_FALSE((*rep)->stopped_at_start);
  r.stop();
  r.join();
}

TEST_CASE("router: interrupt of unknown and deleted ids is an error; on the control channel too",
          "[router][interrupt][errors]") {
  tether::executor parent_ex{{.name = "parent"}};
  std::atomic<int> started{0};
  tether::router<job, outcome> r{parent_ex, [&](subshell_id) {
                                   return [&](job&& j, std::stop_token token) { return run_job(j, token, started); };
                                 }};
  const subshell_id child = *r.create_subshell();
  CHECK(r.interrupt(subshell_id(99)).code() == routing_errc::unknown_subshell);
  REQUIRE(r.delete_subshell(child));
  CHECK(r.interrupt(child).code() == routing_errc::subshell_deleted);

  const subshell_id other = *r.create_subshell();
  REQUIRE(r.send(other, job{10s}, 5));
  REQUIRE(eventually([&] { return started.load() == 1; }));
  REQUIRE(r.send_control(control_request::interrupt(other, 41)));
  REQUIRE(r.send_control(control_request::interrupt(subshell_id(1000), 42)));
  int answered = 0;
  while (answered < 2) {
    auto c = r.control_replies().pop_for(10s);
    REQUIRE(c);
    CHECK(c->op == control_op::interrupt);
    if (c->tag == 41) {
      CHECK(c->ok());
      CHECK(c->subshell == other);
    } else {
      CHECK(c->tag == 42);
      REQUIRE_FALSE(c->ok());
      CHECK(c->error->code() == routing_errc::unknown_subshell);
    }
    ++answered;
  }
  auto rep = r.replies().pop_for(10s);
  REQUIRE(rep);
  REQUIRE(*rep);
  CHECK((*rep)->stopped);
  r.stop();
  r.join();
  CHECK(r.interrupt(other).code() == routing_errc::router_stopped);
}

TEST_CASE("router: a stop callback registered by the handler runs once, off the subshell thread",
          "[router][interrupt][callback]") {
  tether::executor parent_ex{{.name = "parent"}};
  std::atomic<int> callbacks{0};
  std::atomic<bool> on_own_thread{false};
  std::atomic<int> started{0};
  tether::router<job, outcome> r{parent_ex, [&](subshell_id) {
                                   return [&](job&& j, tether::reply_sender<job, outcome>& reply) {
                                     const std::thread::id self = std::this_thread::get_id();
                                     std::stop_callback cb(reply.stop_token(), [&, self] {
                                       callbacks.fetch_add(1);
                                       if (std::this_thread::get_id() == self) on_own_thread = true;
                                     });
                                     reply.send(run_job(j, reply.stop_token(), started));
                                   };
                                 }};
  const subshell_id child = *r.create_subshell();
  REQUIRE(r.send(child, job{10s}));
  REQUIRE(eventually([&] { return started.load() == 1; }));
  REQUIRE(r.interrupt(child));
  REQUIRE(r.interrupt(child));  // a second request: the callback already ran
  auto rep = r.replies().pop_for(10s);
  REQUIRE(rep);
  REQUIRE(*rep);
  CHECK((*rep)->stopped);
  CHECK(callbacks.load() == 1);
  CHECK_FALSE(on_own_thread.load());
  r.stop();
  r.join();
}

TEST_CASE("router: interrupts racing messages: every message answered, later ones unstopped",
          "[router][interrupt][stress]") {
  tether::executor parent_ex{{.name = "parent"}};
  std::atomic<int> started{0};
  tether::router<job, outcome> r{parent_ex, [&](subshell_id) {
                                   return [&](job&& j, std::stop_token token) { return run_job(j, token, started); };
                                 }};
  const subshell_id a = *r.create_subshell();
  const subshell_id b = *r.create_subshell();
  const int n = static_cast<int>(tether_test::scaled(400, 60));
  std::atomic<bool> done{false};
  std::atomic<int> interrupt_errors{0};
  std::thread interrupter([&] {
    while (!done.load()) {
      for (const subshell_id id : {a, b, parent_subshell})
        if (!r.interrupt(id)) interrupt_errors.fetch_add(1);
      std::this_thread::sleep_for(300us);
    }
  });
  for (int i = 0; i < n; ++i)
    for (const subshell_id id : {a, b, parent_subshell}) REQUIRE(r.send(id, job{2ms}, static_cast<std::uint64_t>(i)));
  int replies = 0;
  while (replies < 3 * n) {
    auto rep = r.replies().pop_for(10s);
    REQUIRE(rep);
    CHECK(*rep);
    ++replies;
  }
  done = true;
  interrupter.join();
  CHECK(interrupt_errors.load() == 0);
  // Quiet again: nothing stops a message that no interrupt meets.
  for (const subshell_id id : {a, b, parent_subshell}) REQUIRE(r.send(id, job{5ms}));
  for (int i = 0; i < 3; ++i) {
    auto rep = r.replies().pop_for(10s);
    REQUIRE(rep);
    REQUIRE(*rep);
    CHECK_FALSE((*rep)->stopped);
    CHECK_FALSE((*rep)->stopped_at_start);
  }
  r.stop();
  r.join();
}

TEST_CASE("router: interrupts racing instant messages: each answered once, the next one never stopped by them",
          "[router][interrupt][stress]") {
  tether::executor parent_ex{{.name = "parent"}};
  std::atomic<std::uint64_t> asked{0};
  tether::router<job, outcome> r{parent_ex, [&](subshell_id) {
                                   return [&](job&&, tether::reply_sender<job, outcome>& reply) {
                                     outcome o;
                                     // Every other message asks for its token; the rest never do.
                                     if (asked.fetch_add(1) % 2 == 0) o.stopped = reply.stop_token().stop_requested();
                                     reply.send(o);
                                   };
                                 }};
  const subshell_id a = *r.create_subshell();
  const int n = static_cast<int>(tether_test::scaled(20000, 2000));
  std::atomic<bool> done{false};
  std::atomic<int> interrupt_errors{0};
  std::thread interrupter([&] {
    while (!done.load()) {
      for (const subshell_id id : {a, parent_subshell})
        if (!r.interrupt(id)) interrupt_errors.fetch_add(1);
      std::this_thread::yield();
    }
  });
  std::uint64_t tag_sum = 0;
  for (int i = 0; i < n; ++i)
    for (const subshell_id id : {a, parent_subshell}) {
      REQUIRE(r.send(id, job{}, static_cast<std::uint64_t>(i)));
      tag_sum += static_cast<std::uint64_t>(i);
    }
  std::uint64_t seen_sum = 0;
  for (int replies = 0; replies < 2 * n; ++replies) {
    auto rep = r.replies().pop_for(10s);
    REQUIRE(rep);
    REQUIRE(*rep);
    seen_sum += rep->tag();
  }
  CHECK(seen_sum == tag_sum);
  CHECK_FALSE(r.replies().try_pop());  // exactly once: nothing more
  done = true;
  interrupter.join();
  CHECK(interrupt_errors.load() == 0);
  // No stop state outlives its message: with no interrupt left, a token is never stopped.
  asked = 0;
  for (const subshell_id id : {a, parent_subshell}) REQUIRE(r.send(id, job{}));
  for (int i = 0; i < 2; ++i) {
    auto rep = r.replies().pop_for(10s);
    REQUIRE(rep);
    REQUIRE(*rep);
    CHECK_FALSE((*rep)->stopped);
  }
  r.stop();
  r.join();
}

TEST_CASE("router: delete_subshell(cancel) and stop(cancel) stop the running handlers' tokens",
          "[router][interrupt][cancel]") {
  tether::executor parent_ex{{.name = "parent"}};
  std::atomic<int> started{0};
  tether::router<job, outcome> r{parent_ex, [&](subshell_id) {
                                   return [&](job&& j, tether::reply_sender<job, outcome>& reply) {
                                     reply.send(run_job(j, reply.stop_token(), started));
                                   };
                                 }};
  const subshell_id child = *r.create_subshell();
  REQUIRE(r.send(child, job{10s}, 1));
  REQUIRE(eventually([&] { return started.load() == 1; }));
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(r.delete_subshell(child, tether::cancel));
  auto rep = r.replies().pop_for(10s);
  REQUIRE(rep);
  REQUIRE(*rep);
  CHECK((*rep)->stopped);  // ended early: the cancel reached the running handler
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);

  const subshell_id other = *r.create_subshell();
  REQUIRE(r.send(other, job{10s}, 2));
  REQUIRE(r.send(parent_subshell, job{10s}, 3));
  REQUIRE(eventually([&] { return started.load() == 3; }));
  const auto t1 = std::chrono::steady_clock::now();
  r.stop(tether::cancel);
  int stopped = 0;
  for (int i = 0; i < 2; ++i) {
    auto done = r.replies().pop_for(10s);
    REQUIRE(done);
    REQUIRE(*done);
    stopped += (*done)->stopped;
  }
  CHECK(stopped == 2);
  CHECK(std::chrono::steady_clock::now() - t1 < 5s);
  r.join();
}
