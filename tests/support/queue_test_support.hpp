// Helpers for the queue tests: tagged items, an exactly-once / per-producer order checker,
// a joining thread group, a watchdog for threads that must finish, and an output iterator
// that throws.
//
// Catch2 assertions are not thread-safe: worker threads record what they saw in these
// helpers (or in atomics) and the test thread asserts after joining them.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tether_test {

// An item names its producer (high 24 bits) and that producer's sequence number (low 40).
inline constexpr unsigned producer_shift = 40;
inline constexpr std::uint64_t make_item(std::uint64_t producer, std::uint64_t seq) noexcept {
  return (producer << producer_shift) | seq;
}
inline constexpr std::uint64_t item_producer(std::uint64_t item) noexcept { return item >> producer_shift; }
inline constexpr std::uint64_t item_seq(std::uint64_t item) noexcept {
  return item & ((std::uint64_t{1} << producer_shift) - 1);
}

// Sum of make_item(p, s) for p < producers, s < per_producer (wrapping, like the checker).
inline std::uint64_t expected_item_sum(std::uint64_t producers, std::uint64_t per_producer) noexcept {
  std::uint64_t sum = 0;
  for (std::uint64_t p = 0; p < producers; ++p) sum += make_item(p, 0) * per_producer;
  return sum + producers * (per_producer * (per_producer - 1) / 2);
}

// Consumer-side record of a stream of tagged items. Each producer's items must arrive in the
// order it pushed them, each exactly once: the next item from producer p must carry
// sequence number next(p). Single-threaded (the consumer's).
class order_checker {
 public:
  explicit order_checker(std::size_t producers) : next_(producers, 0) {}

  void operator()(std::uint64_t item) {
    ++count_;
    sum_ += item;
    const std::uint64_t p = item_producer(item);
    if (p >= next_.size()) {
      note_error("unknown producer", item);
      return;
    }
    if (item_seq(item) != next_[p]) note_error("out of order or duplicate", item);
    next_[p] = item_seq(item) + 1;
  }

  std::uint64_t count() const noexcept { return count_; }
  std::uint64_t sum() const noexcept { return sum_; }
  std::uint64_t errors() const noexcept { return errors_; }
  const std::string& first_error() const noexcept { return first_error_; }
  // The sequence number expected next from producer p = how many of its items arrived.
  std::uint64_t next(std::size_t p) const { return next_.at(p); }

 private:
  void note_error(const char* what, std::uint64_t item) {
    if (errors_++ == 0) {
      first_error_ = std::string(what) + ": producer " + std::to_string(item_producer(item)) + " seq " +
                     std::to_string(item_seq(item)) + " after " + std::to_string(count_ - 1) + " items";
      if (item_producer(item) < next_.size())
        first_error_ += " (expected seq " + std::to_string(next_[item_producer(item)]) + ")";
    }
  }

  std::vector<std::uint64_t> next_;
  std::uint64_t count_ = 0;
  std::uint64_t sum_ = 0;
  std::uint64_t errors_ = 0;
  std::string first_error_;
};

// Threads that are joined on destruction, so a failing assertion cannot leave a joinable
// std::thread behind (which would call std::terminate).
class thread_group {
 public:
  thread_group() = default;
  thread_group(const thread_group&) = delete;
  thread_group& operator=(const thread_group&) = delete;
  ~thread_group() { join(); }

  template <class F>
  void spawn(F&& f) {
    threads_.emplace_back(std::forward<F>(f));
  }
  void join() {
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    threads_.clear();
  }
  std::size_t size() const noexcept { return threads_.size(); }

 private:
  std::vector<std::thread> threads_;
};

// Runs f on a new thread; the returned future becomes ready when f returns.
template <class F>
auto run_async(F&& f) {
  return std::async(std::launch::async, std::forward<F>(f));
}

// For a thread that must finish (e.g. a waiter that close() must wake): waits up to
// `limit` for the future and, if it is still not ready, reports and aborts instead of
// hanging until the ctest timeout. Returns the future's value.
template <class Future>
decltype(auto) finish_or_abort(Future& f, const char* what,
                               std::chrono::seconds limit = std::chrono::seconds(30)) {
  if (f.wait_for(limit) != std::future_status::ready) {
    std::fprintf(stderr, "FATAL: %s did not finish within %lld s\n", what,
                 static_cast<long long>(limit.count()));
    std::fflush(stderr);
    std::abort();
  }
  return f.get();
}

// An output iterator for try_pop_bulk whose assignment throws std::runtime_error once
// `fail_at` items have gone through it; it records the value of each item it took.
struct failing_output {
  std::vector<std::uint64_t>* seen;
  std::size_t fail_at;
  failing_output& operator*() { return *this; }
  failing_output& operator++() { return *this; }
  template <class Item>
  failing_output& operator=(Item&& item) {
    if (seen->size() == fail_at) throw std::runtime_error("output full");
    seen->push_back(item.value);
    return *this;
  }
};

// How many of seen are not 0, 1, 2, ... in turn: 0 when items came out exactly in order.
inline std::uint64_t count_out_of_place(const std::vector<std::uint64_t>& seen) {
  std::uint64_t wrong = 0;
  for (std::uint64_t i = 0; i < seen.size(); ++i) wrong += seen[i] == i ? 0 : 1;
  return wrong;
}

// The wait is long enough for a blocked caller to have gone past its spin phase (well
// under a millisecond) and parked.
inline constexpr std::chrono::milliseconds park_settle{50};

}  // namespace tether_test
