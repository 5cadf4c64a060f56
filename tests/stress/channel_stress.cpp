// Stress tests for tether::make_channel: traffic in both directions at once with several
// senders per side (exactly once, FIFO per sender), and close from either side racing
// against senders blocked on a full pair and receivers parked on an empty one - counts
// prove that every accepted message is received and every refused one handed back.
//
// Worker threads record what they saw in atomics / their own vectors; the test thread
// asserts after joining them.
#include <tether/channel.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using tether::status;

using pair_t = std::pair<tether::endpoint<std::uint64_t, std::uint64_t>, tether::endpoint<std::uint64_t, std::uint64_t>>;

pair_t make(std::size_t capacity) {
  return capacity == 0 ? tether::make_channel<std::uint64_t>() : tether::make_channel<std::uint64_t>(capacity);
}

constexpr std::uint64_t tag(std::uint64_t sender, std::uint64_t seq) { return (sender << 40) | seq; }
constexpr std::uint64_t tag_sender(std::uint64_t v) { return v >> 40; }
constexpr std::uint64_t tag_seq(std::uint64_t v) { return v & ((std::uint64_t{1} << 40) - 1); }

// What one receiving side saw: per-sender next sequence number, count, sum, order errors.
struct receive_log {
  explicit receive_log(std::size_t senders) : next(senders, 0) {}
  void record(std::uint64_t v) {
    const std::uint64_t s = tag_sender(v);
    if (s >= next.size() || tag_seq(v) != next[s]) ++errors;
    if (s < next.size()) next[s] = tag_seq(v) + 1;
    ++count;
    sum += v;
  }
  std::vector<std::uint64_t> next;
  std::uint64_t count = 0, sum = 0, errors = 0;
};

std::uint64_t expected_sum(std::uint64_t senders, std::uint64_t per_sender) {
  std::uint64_t sum = 0;
  for (std::uint64_t s = 0; s < senders; ++s)
    for (std::uint64_t i = 0; i < per_sender; ++i) sum += tag(s, i);
  return sum;
}

// Receives `expected` messages with a mix of the receive verbs.
void receive_all(tether::endpoint<std::uint64_t, std::uint64_t>& e, receive_log& log, std::uint64_t expected) {
  std::uint64_t round = 0;
  while (log.count < expected) {
    tether::pop_result<std::uint64_t> r(status::empty);
    switch (round++ % 4) {
      case 0: r = e.recv(); break;
      case 1: r = e.recv_for(30s); break;
      case 2: r = e.recv_until(std::chrono::steady_clock::now() + 30s); break;
      default: r = e.try_recv(); break;
    }
    if (r) log.record(*r);
    if (r.is_closed() || r.is_timeout()) return;  // would be a failure: counted below
  }
}

}  // namespace

TEST_CASE("channel stress: both directions at once, several senders per side, exactly once and FIFO", "[channel][stress]") {
  const std::size_t capacity = GENERATE(0, 1, 64);
  const std::uint64_t senders = GENERATE(1, 3);
  // A one-slot pair parks on nearly every message: fewer of them.
  const std::uint64_t per_sender = tether_test::scaled(capacity == 1 ? 40000 : 150000) / senders;
  CAPTURE(capacity, senders, per_sender);
  auto pair = make(capacity);
  auto& left = pair.first;
  auto& right = pair.second;

  receive_log at_left(senders), at_right(senders);
  std::vector<std::thread> threads;
  std::atomic<std::uint64_t> refused{0};
  for (std::uint64_t s = 0; s < senders; ++s) {
    threads.emplace_back([&, s] {
      for (std::uint64_t i = 0; i < per_sender; ++i) {
        // Every verb: blocking, try (retry while full), timed.
        std::uint64_t v = tag(s, i);
        if (i % 3 == 0) {
          if (!left.send(v)) refused.fetch_add(1);
        } else if (i % 3 == 1) {
          auto r = left.try_send(v);
          while (r.is_full()) {
            std::this_thread::yield();
            r = left.try_send(v);
          }
          if (!r) refused.fetch_add(1);
        } else if (!left.send_for(v, 30s)) {
          refused.fetch_add(1);
        }
      }
    });
    threads.emplace_back([&, s] {
      for (std::uint64_t i = 0; i < per_sender; ++i)
        if (!right.send(tag(s, i))) refused.fetch_add(1);
    });
  }
  threads.emplace_back([&] { receive_all(right, at_right, senders * per_sender); });
  threads.emplace_back([&] { receive_all(left, at_left, senders * per_sender); });
  for (auto& t : threads) t.join();

  CHECK(refused == 0);
  for (const receive_log* log : {&at_left, &at_right}) {
    CHECK(log->errors == 0);
    CHECK(log->count == senders * per_sender);
    CHECK(log->sum == expected_sum(senders, per_sender));
  }
  CHECK(left.try_recv().is_empty());
  CHECK(right.try_recv().is_empty());
}

TEST_CASE("channel stress: close from either side while senders and receivers are blocked", "[channel][stress][close]") {
  const std::size_t capacity = GENERATE(0, 4);
  const std::uint64_t rounds = tether_test::scaled(200, 20);
  CAPTURE(capacity, rounds);
  std::mt19937_64 rng(20240601);
  std::uint64_t closed_by_left = 0, closed_by_right = 0, total_accepted = 0;
  for (std::uint64_t round = 0; round < rounds; ++round) {
    auto pair = make(capacity);
    auto& left = pair.first;
    auto& right = pair.second;
    constexpr std::uint64_t senders = 2;
    // left -> right: two senders and a receiver on the right, racing with the close.
    // right -> left: one sender and nobody receiving until after the close, so it blocks
    // on a full bounded pair.
    std::atomic<std::uint64_t> accepted_lr{0}, accepted_rl{0}, handed_back{0}, bad_hand_back{0};
    receive_log at_right(senders);
    std::vector<std::thread> threads;
    for (std::uint64_t s = 0; s < senders; ++s)
      threads.emplace_back([&, s] {
        for (std::uint64_t i = 0;; ++i) {
          std::uint64_t v = tag(s, i);
          const auto r = (i % 2) ? left.send(v) : left.send_for(v, 60s);
          if (!r) {
            if (!r.is_closed()) ++bad_hand_back;
            if (v != tag(s, i)) ++bad_hand_back;  // must be handed back untouched
            ++handed_back;
            return;
          }
          ++accepted_lr;
        }
      });
    threads.emplace_back([&] {
      for (std::uint64_t i = 0;; ++i) {
        if (!right.send(tag(0, i))) return;
        ++accepted_rl;
      }
    });
    threads.emplace_back([&] {
      for (;;) {
        auto r = right.recv();
        if (!r) return;  // closed and drained
        at_right.record(*r);
      }
    });
    // Close after a random amount of traffic (0 means: while the receiver may be parked).
    const std::uint64_t after = rng() % 2000;
    while (accepted_lr.load() < after) std::this_thread::yield();
    const bool by_left = rng() % 2 == 0;
    (by_left ? left : right).close();
    (by_left ? closed_by_left : closed_by_right)++;
    for (auto& t : threads) t.join();  // every blocked thread woke up

    // The left side drains what the right sent before the close.
    receive_log at_left(1);
    while (auto r = left.try_recv()) at_left.record(*r);
    CHECK(left.try_recv().is_closed());

    REQUIRE(bad_hand_back == 0);
    REQUIRE(handed_back == senders);
    REQUIRE(at_right.errors == 0);
    REQUIRE(at_right.count == accepted_lr);  // nothing accepted is lost
    REQUIRE(at_left.errors == 0);
    REQUIRE(at_left.count == accepted_rl);
    total_accepted += accepted_lr + accepted_rl;
  }
  CHECK(closed_by_left > 0);
  CHECK(closed_by_right > 0);
  CHECK(total_accepted > 0);
}
