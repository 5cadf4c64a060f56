// SPDX-License-Identifier: MIT
// tether/detail/queue/consumer_check.hpp - catches two threads consuming one queue at once.
//
// Single-consumer queues are only correct with one consumer at a time. In debug builds
// (NDEBUG not defined) every consumer call holds a consumer_scope; a second thread entering
// while another is inside throws std::logic_error naming both threads. In release builds the
// scope is empty and costs nothing.
#pragma once

#include <atomic>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace tether::detail {

#ifndef NDEBUG
class consumer_check {
 public:
  class scope {
   public:
    explicit scope(consumer_check& c) : check_(c) {
      const auto me = std::this_thread::get_id();
      std::thread::id expected{};
      // acq_rel: entering orders this consumer after the previous one's exit (release in ~scope).
      if (check_.owner_.compare_exchange_strong(expected, me, std::memory_order_acq_rel)) {
        outermost_ = true;
      } else if (expected != me) {
        std::ostringstream msg;
        msg << "tether: two threads consume one single-consumer queue at once (thread " << me
            << " entered while thread " << expected
            << " was consuming); consume from one thread at a time";
        throw std::logic_error(msg.str());
      }
    }
    ~scope() {
      // release: pairs with the acq_rel compare_exchange of the next consumer to enter.
      if (outermost_) check_.owner_.store(std::thread::id{}, std::memory_order_release);
    }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

   private:
    consumer_check& check_;
    bool outermost_ = false;
  };

 private:
  std::atomic<std::thread::id> owner_{};  // the thread inside a consumer call, if any
};
#else
class consumer_check {
 public:
  class scope {
   public:
    explicit scope(consumer_check&) noexcept {}
  };
};
#endif

}  // namespace tether::detail
