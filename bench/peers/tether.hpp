// bench/peers/tether.hpp - tether's own queues behind the bench adapter shape (harness.hpp).
//   tether          mpsc_queue, one item per try_pop
//   tether_bulk     mpsc_queue, the consumer takes batches with try_pop_bulk
//   tether_producer       mpsc_queue, a producer handle (private lane) per producer thread
//   tether_producer_bulk  as tether_producer, the consumer takes batches with try_pop_bulk
//   tether_bounded  bounded_mpsc_queue, try_push fails when full
// Every adapter's pop() is the queue's own blocking pop (spin briefly, then park).
#pragma once

#include <cstddef>
#include <utility>

#include <tether/bounded_mpsc_queue.hpp>
#include <tether/mpsc_queue.hpp>

namespace tether_bench::peers {

template <class T>
class tether_unbounded {
 public:
  using value_type = T;
  static constexpr const char* name = "tether";
  static constexpr bool bounded = false;

  explicit tether_unbounded(std::size_t /*capacity: unbounded*/) {}

  bool try_push(T&& v) { return static_cast<bool>(q_.push(std::move(v))); }  // false only if closed (never here)
  bool try_pop(T& out) {
    auto r = q_.try_pop();
    if (!r) return false;
    out = std::move(*r);
    return true;
  }
  bool pop(T& out) {
    auto v = q_.pop();
    if (!v) return false;
    out = std::move(*v);
    return true;
  }

 protected:
  tether::mpsc_queue<T> q_;
};

template <class T>
class tether_unbounded_bulk : public tether_unbounded<T> {
 public:
  static constexpr const char* name = "tether_bulk";
  using tether_unbounded<T>::tether_unbounded;

  std::size_t try_pop_bulk(T* out, std::size_t max) { return this->q_.try_pop_bulk(out, max); }
};

template <class T>
class tether_producer : public tether_unbounded<T> {
 public:
  static constexpr const char* name = "tether_producer";
  using tether_unbounded<T>::tether_unbounded;

  class producer {
   public:
    explicit producer(tether_producer& a) : handle_(a.q_.make_producer()) {}
    bool try_push(T&& v) { return static_cast<bool>(handle_.push(std::move(v))); }

   private:
    typename tether::mpsc_queue<T>::producer handle_;
  };
};

template <class T>
class tether_producer_bulk : public tether_producer<T> {
 public:
  static constexpr const char* name = "tether_producer_bulk";
  using tether_producer<T>::tether_producer;  // and its producer (handle) type

  std::size_t try_pop_bulk(T* out, std::size_t max) { return this->q_.try_pop_bulk(out, max); }
};

template <class T>
class tether_bounded {
 public:
  using value_type = T;
  static constexpr const char* name = "tether_bounded";
  static constexpr bool bounded = true;

  explicit tether_bounded(std::size_t capacity) : q_(capacity) {}

  bool try_push(T&& v) { return static_cast<bool>(q_.try_push(std::move(v))); }
  bool try_pop(T& out) {
    auto r = q_.try_pop();
    if (!r) return false;
    out = std::move(*r);
    return true;
  }
  bool pop(T& out) {
    auto v = q_.pop();
    if (!v) return false;
    out = std::move(*v);
    return true;
  }

 private:
  tether::bounded_mpsc_queue<T> q_;
};

}  // namespace tether_bench::peers
