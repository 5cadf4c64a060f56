// The router under memory pressure on a subshell's thread: a handler throws std::bad_alloc
// and the allocations that follow on its thread (the error reply's text, its heap part, an
// outbox block) fail one at a time. Every accepted message must still get exactly one reply,
// and stop() + join() must finish (a lost reply on the parent would hang them).
//
// Its own program: it replaces the global operator new (tests/fault/fault_alloc.hpp), which
// clang's sanitizer runtimes do not allow; there the test only says so.
#include <tether/router.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <new>
#include <set>
#include <vector>

#include "catch.hpp"

#if defined(__clang__) && defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TETHER_OOM_TEST_SKIPPED 1
#endif
#endif

#ifndef TETHER_OOM_TEST_SKIPPED
#include "../fault/fault_alloc.hpp"
#endif

namespace {
using namespace std::chrono_literals;
using u64 = std::uint64_t;
}  // namespace

TEST_CASE("router: a handler's bad_alloc, then failing allocations on its thread: one reply each, stop and join finish",
          "[router][errors][oom]") {
#ifdef TETHER_OOM_TEST_SKIPPED
  WARN("operator new cannot be replaced under clang's sanitizers: skipped");
#else
  const long nth = GENERATE(1, 2, 3, 4, 5, 6, 8);
  tether::executor parent{{.name = "parent"}};
  tether::router<u64, u64> r{parent, [nth](tether::subshell_id) {
    return [nth](u64&& v) -> u64 {
      fault_alloc::disarm(fault_alloc::scope::this_thread);  // what the last message left armed
      if (v % 2 == 1) {
        fault_alloc::arm(fault_alloc::scope::this_thread, nth);  // the nth allocation from here fails
        throw std::bad_alloc();
      }
      return v;
    };
  }};
  const tether::subshell_id child = *r.create_subshell();
  constexpr u64 per = 64;
  for (u64 i = 0; i < per; ++i) {
    REQUIRE(r.send(tether::parent_subshell, u64{i}, i));
    REQUIRE(r.send(child, u64{i}, per + i));
  }
  r.stop();
  REQUIRE(r.join_for(60s));
  r.join();
  std::set<u64> tags;
  u64 values = 0, threw = 0;
  for (;;) {
    auto rep = r.replies().pop_for(10s);
    if (rep.is_closed()) break;
    REQUIRE(rep);
    CHECK(tags.insert(rep->tag()).second);
    if (rep->has_value()) {
      CHECK(**rep == rep->tag() % per);
      ++values;
    } else {
      CHECK(rep->code() == tether::routing_errc::handler_threw);
      ++threw;
    }
  }
  CHECK(tags.size() == 2 * per);
  CHECK(values == per);
  CHECK(threw == per);
#endif
}
