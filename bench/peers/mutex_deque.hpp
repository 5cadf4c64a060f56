// bench/peers/mutex_deque.hpp - the baseline everyone writes first: std::deque under a
// std::mutex, a std::condition_variable for the blocking pop. Always built.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <utility>

namespace tether_bench::peers {

template <class T>
class mutex_deque {
 public:
  using value_type = T;
  static constexpr const char* name = "mutex_deque";
  static constexpr bool bounded = false;

  explicit mutex_deque(std::size_t /*capacity: unbounded*/) {}

  bool try_push(T&& v) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      items_.push_back(std::move(v));
    }
    ready_.notify_one();
    return true;
  }
  bool try_pop(T& out) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (items_.empty()) return false;
    out = std::move(items_.front());
    items_.pop_front();
    return true;
  }
  bool pop(T& out) {
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [this] { return !items_.empty(); });
    out = std::move(items_.front());
    items_.pop_front();
    return true;
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<T> items_;
};

}  // namespace tether_bench::peers
