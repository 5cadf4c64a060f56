// bench/peers/boost_lockfree.hpp - boost::lockfree::queue (package libboost-dev), built when
// CMake found it (TETHER_BENCH_HAVE_BOOST_LOCKFREE). A multi-producer, multi-consumer linked
// queue with a node free list; the capacity preallocates nodes, push allocates more when they
// run out (unbounded). T must be trivially copyable.
#pragma once

#if defined(TETHER_BENCH_HAVE_BOOST_LOCKFREE)

#include <cstddef>

#include <boost/lockfree/queue.hpp>

namespace tether_bench::peers {

template <class T>
class boost_lockfree {
 public:
  using value_type = T;
  static constexpr const char* name = "boost_lockfree";
  static constexpr bool bounded = false;

  explicit boost_lockfree(std::size_t capacity) : q_(capacity) {}

  bool try_push(T&& v) { return q_.push(v); }
  bool try_pop(T& out) { return q_.pop(out); }

 private:
  boost::lockfree::queue<T> q_;
};

}  // namespace tether_bench::peers

#endif  // TETHER_BENCH_HAVE_BOOST_LOCKFREE
