// bench/peers/atomic_queue.hpp - atomic_queue::AtomicQueueB2 (package libatomic-queue-dev),
// built when CMake found it (TETHER_BENCH_HAVE_ATOMIC_QUEUE). B2 is the run-time-sized ring
// for any T with default options: a multi-producer, multi-consumer bounded queue whose
// try_push / try_pop never block. It has no parking pop (its pop() busy-waits), so it takes
// part only where the consumer polls.
//
// Its slots hold a state but no lap number, and the consumer claims a position before the
// item is there: while the producer of position t is preempted between claiming and
// storing, the producer of position t + capacity can store into the same slot, and the
// consumer waiting for t takes that item first. Nothing is lost, but one producer's items
// can come out of order, so the mpsc bench checks it for exactly-once delivery only.
#pragma once

#if defined(TETHER_BENCH_HAVE_ATOMIC_QUEUE)

#include <cstddef>
#include <utility>

#include <atomic_queue/atomic_queue.h>

namespace tether_bench::peers {

template <class T>
class atomic_queue_b2 {
 public:
  using value_type = T;
  static constexpr const char* name = "atomic_queue";
  static constexpr bool bounded = true;
  static constexpr bool per_producer_fifo = false;  // see above

  explicit atomic_queue_b2(std::size_t capacity) : q_(static_cast<unsigned>(capacity)) {}

  bool try_push(T&& v) { return q_.try_push(std::move(v)); }
  bool try_pop(T& out) { return q_.try_pop(out); }

 private:
  atomic_queue::AtomicQueueB2<T> q_;
};

}  // namespace tether_bench::peers

#endif  // TETHER_BENCH_HAVE_ATOMIC_QUEUE
