// Stress harnesses shared by the queue stress tests (mpsc_queue and bounded_mpsc_queue have
// the same consumer API and a push(T&&) -> push_result producer verb; the harnesses take a
// Push callback returning bool).
//
// run_exactly_once: P producers push tagged items into one queue; the last producer to finish
// closes it; the calling thread consumes until closed and drained. The order_checker proves
// every item arrived exactly once and each producer's items in order.
//
// run_close_race: producers push until a push is refused; one of them closes the queue
// partway through while the others are still pushing. Every accepted item must reach the
// consumer, every refused one must come back to its producer untouched.
//
// Worker threads never call Catch2 (it is not thread-safe); they record what they saw and
// the test thread asserts afterwards.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <iterator>
#include <latch>
#include <memory>
#include <utility>
#include <vector>

#include "queue_test_support.hpp"

namespace tether_test {

enum class consumer_kind {
  pop,       // pop() until it reports closed
  pop_bulk,  // pop_bulk(batch) until it returns 0
  mixed,     // rotates pop_for(short), try_pop, try_pop_bulk and try_pop_each
};

inline const char* to_string(consumer_kind k) {
  switch (k) {
    case consumer_kind::pop: return "pop";
    case consumer_kind::pop_bulk: return "pop_bulk";
    case consumer_kind::mixed: return "mixed";
  }
  return "?";
}

struct exactly_once_result {
  explicit exactly_once_result(std::size_t producers) : check(producers) {}
  order_checker check;
  std::uint64_t refused = 0;        // pushes that returned false (none expected)
  std::uint64_t consumer_waits = 0;  // mixed consumer: pop_for timeouts and empty polls
  double seconds = 0;
};

// Make(uint64) builds a queue item, Get(item) reads the tag back, Push(queue, item&&) -> bool.
template <class Queue, class Make, class Get, class Push>
exactly_once_result run_exactly_once(Queue& q, std::size_t producers, std::uint64_t per_producer,
                                     consumer_kind kind, Make make, Get get, Push push) {
  using T = typename Queue::value_type;
  exactly_once_result res(producers);
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::size_t> running{producers};
  std::latch go(1);
  const auto t0 = std::chrono::steady_clock::now();
  {
    thread_group threads;
    for (std::size_t p = 0; p < producers; ++p)
      threads.spawn([&, p] {
        go.wait();
        std::uint64_t mine_refused = 0;
        for (std::uint64_t s = 0; s < per_producer; ++s)
          if (!push(q, make(make_item(p, s)))) ++mine_refused;
        refused.fetch_add(mine_refused);
        if (running.fetch_sub(1) == 1) q.close();  // the last one out closes
      });
    go.count_down();

    auto& check = res.check;
    switch (kind) {
      case consumer_kind::pop:
        while (auto v = q.pop()) check(get(*v));
        break;
      case consumer_kind::pop_bulk: {
        constexpr std::size_t batch = 128;
        std::vector<T> buf;
        buf.reserve(batch);
        while (q.pop_bulk(std::back_inserter(buf), batch) != 0) {
          for (auto& v : buf) check(get(v));
          buf.clear();
        }
        break;
      }
      case consumer_kind::mixed: {
        std::vector<T> buf;
        for (std::uint64_t round = 0;; ++round) {
          if (round % 4 == 0) {
            auto r = q.pop_for(std::chrono::microseconds(200));
            if (r) check(get(*r));
            else if (r.is_closed()) break;
            else ++res.consumer_waits;
          } else if (round % 4 == 1) {
            auto r = q.try_pop();
            if (r) check(get(*r));
            else if (r.is_closed()) break;
            else ++res.consumer_waits;
          } else if (round % 4 == 2) {
            q.try_pop_bulk(std::back_inserter(buf), 37);
            for (auto& v : buf) check(get(v));
            buf.clear();
          } else {
            q.try_pop_each([&](T&& v) { check(get(v)); }, 53);
          }
        }
        break;
      }
    }
  }
  res.refused = refused.load();
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

struct close_race_result {
  explicit close_race_result(std::size_t producers) : check(producers), accepted(producers, 0) {}
  order_checker check;
  std::vector<std::uint64_t> accepted;  // per producer: pushes that returned true
  std::uint64_t accepted_count = 0;
  std::uint64_t accepted_sum = 0;
  std::uint64_t handed_back = 0;       // refused pushes whose item came back intact
  std::uint64_t handed_back_bad = 0;   // refused pushes whose item was gone or changed
  std::uint64_t accepted_after_refusal = 0;  // a push succeeded after one was refused
  std::uint64_t closes_won = 0;        // close() calls that returned true
  std::uint64_t close_at = 0;
};

// Items are std::unique_ptr<std::uint64_t>, so "handed back" means "still ours, non-null".
// Push(queue, std::unique_ptr<std::uint64_t>&&) -> bool must leave the pointer alone on false.
template <class Queue, class Push>
close_race_result run_close_race(Queue& q, std::size_t producers, std::uint64_t budget,
                                 std::uint64_t close_at, Push push) {
  close_race_result res(producers);
  res.close_at = close_at;
  std::vector<std::uint64_t> sums(producers, 0);
  std::atomic<std::uint64_t> total_accepted{0};
  std::atomic<std::uint64_t> handed_back{0}, handed_back_bad{0}, accepted_after_refusal{0}, closes_won{0};
  std::atomic<std::size_t> running{producers};
  std::latch go(1);
  {
    thread_group threads;
    for (std::size_t p = 0; p < producers; ++p)
      threads.spawn([&, p] {
        go.wait();
        std::uint64_t n = 0, sum = 0;
        for (std::uint64_t s = 0; s < budget; ++s) {
          const std::uint64_t tag = make_item(p, s);
          auto item = std::make_unique<std::uint64_t>(tag);
          if (push(q, std::move(item))) {
            ++n;
            sum += tag;
            // The push that reaches close_at closes, racing the other producers' pushes.
            if (total_accepted.fetch_add(1) + 1 == close_at && q.close()) closes_won.fetch_add(1);
            continue;
          }
          if (item != nullptr && *item == tag) handed_back.fetch_add(1);
          else handed_back_bad.fetch_add(1);
          // Closed is final: later pushes are refused too and hand their items back.
          for (int k = 0; k < 3; ++k) {
            auto extra = std::make_unique<std::uint64_t>(make_item(p, budget + 1));
            if (push(q, std::move(extra))) accepted_after_refusal.fetch_add(1);
            else if (extra == nullptr) handed_back_bad.fetch_add(1);
          }
          break;
        }
        res.accepted[p] = n;
        sums[p] = sum;
        if (running.fetch_sub(1) == 1 && q.close()) closes_won.fetch_add(1);
      });
    go.count_down();
    while (auto v = q.pop()) res.check(**v);
  }
  for (std::size_t p = 0; p < producers; ++p) {
    res.accepted_count += res.accepted[p];
    res.accepted_sum += sums[p];
  }
  res.handed_back = handed_back.load();
  res.handed_back_bad = handed_back_bad.load();
  res.accepted_after_refusal = accepted_after_refusal.load();
  res.closes_won = closes_won.load();
  return res;
}

}  // namespace tether_test
