// bench/peers/moodycamel.hpp - moodycamel::ConcurrentQueue and BlockingConcurrentQueue
// (package libconcurrentqueue-dev), built when CMake found them (TETHER_BENCH_HAVE_MOODYCAMEL).
//   moodycamel           ConcurrentQueue, implicit (per-thread) producers, try_dequeue
//   moodycamel_token     ConcurrentQueue, a ProducerToken per producer thread and a
//                        ConsumerToken, one item per try_dequeue
//   moodycamel_bulk      as moodycamel_token, the consumer takes batches (try_dequeue_bulk)
//   moodycamel_blocking  BlockingConcurrentQueue, implicit producers; pop() is wait_dequeue
// All are unbounded (enqueue allocates when the preallocated blocks run out).
#pragma once

#if defined(TETHER_BENCH_HAVE_MOODYCAMEL)

#include <cstddef>
#include <utility>

#include <blockingconcurrentqueue.h>
#include <concurrentqueue.h>

namespace tether_bench::peers {

template <class T>
class moodycamel_plain {
 public:
  using value_type = T;
  static constexpr const char* name = "moodycamel";
  static constexpr bool bounded = false;

  explicit moodycamel_plain(std::size_t capacity) : q_(capacity) {}

  bool try_push(T&& v) { return q_.enqueue(std::move(v)); }
  bool try_pop(T& out) { return q_.try_dequeue(out); }

 private:
  moodycamel::ConcurrentQueue<T> q_;
};

template <class T>
class moodycamel_token {
 public:
  using value_type = T;
  static constexpr const char* name = "moodycamel_token";
  static constexpr bool bounded = false;

  explicit moodycamel_token(std::size_t capacity) : q_(capacity), consumer_(q_) {}

  class producer {
   public:
    explicit producer(moodycamel_token& a) : q_(a.q_), token_(a.q_) {}
    bool try_push(T&& v) { return q_.enqueue(token_, std::move(v)); }

   private:
    moodycamel::ConcurrentQueue<T>& q_;
    moodycamel::ProducerToken token_;
  };

  bool try_push(T&& v) { return q_.enqueue(std::move(v)); }
  bool try_pop(T& out) { return q_.try_dequeue(consumer_, out); }

 protected:
  moodycamel::ConcurrentQueue<T> q_;
  moodycamel::ConsumerToken consumer_;  // consumer thread only
};

template <class T>
class moodycamel_bulk : public moodycamel_token<T> {
 public:
  static constexpr const char* name = "moodycamel_bulk";
  using moodycamel_token<T>::moodycamel_token;  // and its producer (token) type

  std::size_t try_pop_bulk(T* out, std::size_t max) { return this->q_.try_dequeue_bulk(this->consumer_, out, max); }
};

template <class T>
class moodycamel_blocking {
 public:
  using value_type = T;
  static constexpr const char* name = "moodycamel_blocking";
  static constexpr bool bounded = false;

  explicit moodycamel_blocking(std::size_t capacity) : q_(capacity) {}

  bool try_push(T&& v) { return q_.enqueue(std::move(v)); }
  bool try_pop(T& out) { return q_.try_dequeue(out); }
  bool pop(T& out) {
    q_.wait_dequeue(out);
    return true;
  }

 private:
  moodycamel::BlockingConcurrentQueue<T> q_;
};

}  // namespace tether_bench::peers

#endif  // TETHER_BENCH_HAVE_MOODYCAMEL
