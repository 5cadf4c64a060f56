// bench/peers/tbb.hpp - oneTBB's concurrent queues (package libtbb-dev), built when CMake
// found TBB (TETHER_BENCH_HAVE_TBB).
//   tbb          tbb::concurrent_queue: unbounded, non-blocking
//   tbb_bounded  tbb::concurrent_bounded_queue with a capacity; pop() blocks
#pragma once

#if defined(TETHER_BENCH_HAVE_TBB)

#include <cstddef>
#include <utility>

#include <tbb/concurrent_queue.h>

namespace tether_bench::peers {

template <class T>
class tbb_unbounded {
 public:
  using value_type = T;
  static constexpr const char* name = "tbb";
  static constexpr bool bounded = false;

  explicit tbb_unbounded(std::size_t /*capacity: unbounded*/) {}

  bool try_push(T&& v) {
    q_.push(std::move(v));
    return true;
  }
  bool try_pop(T& out) { return q_.try_pop(out); }

 private:
  tbb::concurrent_queue<T> q_;
};

template <class T>
class tbb_bounded {
 public:
  using value_type = T;
  static constexpr const char* name = "tbb_bounded";
  static constexpr bool bounded = true;

  explicit tbb_bounded(std::size_t capacity) { q_.set_capacity(static_cast<std::ptrdiff_t>(capacity)); }

  bool try_push(T&& v) { return q_.try_push(std::move(v)); }
  bool try_pop(T& out) { return q_.try_pop(out); }
  bool pop(T& out) {
    q_.pop(out);
    return true;
  }

 private:
  tbb::concurrent_bounded_queue<T> q_;
};

}  // namespace tether_bench::peers

#endif  // TETHER_BENCH_HAVE_TBB
