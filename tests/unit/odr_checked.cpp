// One queue, two build modes: this translation unit is compiled without NDEBUG (its
// consumer calls check for a second consumer), odr_unchecked.cpp with NDEBUG (they do not).
// The queues' layout must not depend on NDEBUG (detail/queue/consumer_check.hpp): queues and
// channels created on one side are pushed and popped on the other, concurrently, and every
// item must arrive exactly once. Built by tests/CMakeLists.txt as odr_test.
#include <tether/bounded_mpsc_queue.hpp>
#include <tether/channel.hpp>
#include <tether/mpsc_queue.hpp>

#include <cstdint>
#include <iterator>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "odr_shared.hpp"

#ifdef NDEBUG
#error "odr_checked.cpp must be compiled without NDEBUG (tests/CMakeLists.txt unsets it)"
#endif

namespace {

constexpr std::uint64_t n = 50000;
constexpr std::uint64_t sum_of(std::uint64_t first, std::uint64_t count) { return count * first + count * (count - 1) / 2; }

odr::counted_sum pop_checked(tether::mpsc_queue<std::uint64_t>& q, std::uint64_t want) {
  odr::counted_sum r;
  std::vector<std::uint64_t> batch;
  while (r.count < want) {
    if (r.count % 2 == 0) {
      auto v = q.pop_for(std::chrono::seconds(30));
      if (!v) break;
      r.add(*v);
    } else {
      batch.clear();
      if (q.try_pop_each([&](std::uint64_t&& v) { batch.push_back(v); }, 5) == 0) {
        if (q.pop_bulk(std::back_inserter(batch), 5) == 0) break;
      }
      for (auto v : batch) r.add(v);
    }
  }
  return r;
}

}  // namespace

TEST_CASE("odr: the two translation units agree on the queues' layout", "[odr]") {
  const odr::layout other = odr::layout_unchecked();
  CHECK_FALSE(other.checks);
  CHECK(tether::detail::consumer_checks_enabled);
  CHECK(other.consumer_check == sizeof(tether::detail::consumer_check));
  CHECK(other.mpsc_queue == sizeof(tether::mpsc_queue<std::uint64_t>));
  CHECK(other.bounded_mpsc_queue == sizeof(tether::bounded_mpsc_queue<std::uint64_t>));
  CHECK(other.channel_direction == sizeof(tether::detail::channel_direction<std::uint64_t>));
}

TEST_CASE("odr: an mpsc_queue pushed in the NDEBUG unit is popped here, and the other way", "[odr][mpsc_queue]") {
  tether::mpsc_queue<std::uint64_t> q;
  std::uint64_t pushed = 0;
  std::thread producer([&] { pushed = odr::push_unchecked(q, 1, n); });
  const odr::counted_sum got = pop_checked(q, n);
  producer.join();
  CHECK(pushed == sum_of(1, n));
  CHECK(got.count == n);
  CHECK(got.sum == sum_of(1, n));

  // Pushed here (the ring and a handle), popped there (pop and pop_bulk).
  std::thread producer2([&] {
    auto h = q.make_producer();
    for (std::uint64_t i = 1; i <= n; ++i)
      if (!(i % 2 == 0 ? q.push(i) : h.push(i))) return;
    (void)q.close();
  });
  const odr::counted_sum got2 = odr::pop_unchecked(q, n + 1);  // n + 1: runs until closed
  producer2.join();
  CHECK(got2.count == n);
  CHECK(got2.sum == sum_of(1, n));
  CHECK(q.try_pop().is_closed());
}

TEST_CASE("odr: a bounded_mpsc_queue pushed in one unit is popped in the other", "[odr][bounded_mpsc_queue]") {
  tether::bounded_mpsc_queue<std::uint64_t> q(64);
  std::uint64_t pushed = 0;
  std::thread producer([&] { pushed = odr::push_unchecked(q, 1, n); });
  odr::counted_sum got;
  while (got.count < n) {
    auto v = q.pop();
    REQUIRE(v.has_value());
    got.add(*v);
  }
  producer.join();
  CHECK(pushed == sum_of(1, n));
  CHECK(got.sum == sum_of(1, n));

  std::thread producer2([&] {
    for (std::uint64_t i = 1; i <= n; ++i)
      if (!q.push(i)) return;
  });
  const odr::counted_sum got2 = odr::pop_unchecked(q, n);
  producer2.join();
  CHECK(got2.count == n);
  CHECK(got2.sum == sum_of(1, n));
  CHECK(q.try_pop().is_empty());
}

TEST_CASE("odr: a channel's endpoints used from both units", "[odr][channel]") {
  for (const std::size_t capacity : {std::size_t{0}, std::size_t{16}}) {
    auto [a, b] = capacity == 0 ? tether::make_channel<std::uint64_t>() : tether::make_channel<std::uint64_t>(capacity);
    std::uint64_t sent = 0;
    std::thread sender([&, &aa = a] { sent = odr::send_unchecked(aa, 1, n); });  // unchecked sends a -> b
    odr::counted_sum got;
    while (got.count < n) {
      auto v = b.recv();  // checked receives
      REQUIRE(v.has_value());
      got.add(*v);
    }
    sender.join();
    CHECK(sent == sum_of(1, n));
    CHECK(got.sum == sum_of(1, n));

    std::thread sender2([&, &bb = b] {
      for (std::uint64_t i = 1; i <= n; ++i)
        if (!bb.send(i)) return;
      (void)bb.close();
    });
    const odr::counted_sum got2 = odr::recv_unchecked(a, n + 1);  // until closed
    sender2.join();
    CHECK(got2.count == n);
    CHECK(got2.sum == sum_of(1, n));
  }
}
