// SPDX-License-Identifier: MIT
// tether/detail/queue/consumer_check.hpp - catches two threads consuming one queue at once.
//
// Single-consumer queues are only correct with one consumer at a time. Every consumer call
// holds a consumer_scope (consumer_check::scope<consumer_checks_enabled>): in a translation
// unit compiled without NDEBUG it registers the calling thread in owner_, and a second thread
// entering while another is registered throws std::logic_error naming both threads; with
// NDEBUG it does nothing and costs nothing.
//
// One layout in every build mode: owner_ is always a member, so a queue built in a
// translation unit with NDEBUG and used in one without (or the other way round) is the same
// object. Only whether a call checks depends on NDEBUG, as with assert() in an inline
// function: where the two modes disagree the linker keeps one copy of each queue function,
// and either copy is safe next to the other - an unchecked call never touches owner_; a
// checked call registers and unregisters itself, so it throws only when another checked call
// is inside on another thread (a real misuse), never because of an unchecked one. A mix can
// only miss a misuse, never report a false one. The two scopes are different class template
// specializations and consumer_check itself is the same in every mode, so none of these
// classes has two definitions (tests/unit/odr_checked.cpp shares queues across the modes).
#pragma once

#include <atomic>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace tether::detail {

// Whether this translation unit's consumer calls check. Not inline: a namespace-scope
// constexpr has internal linkage, so each translation unit has its own and none of the
// classes below differs between build modes.
#ifdef NDEBUG
constexpr bool consumer_checks_enabled = false;
#else
constexpr bool consumer_checks_enabled = true;
#endif

class consumer_check {
 public:
  template <bool Check>
  class scope;

 private:
  // The thread inside a checked consumer call, if any: written and read by checked calls only.
  std::atomic<std::thread::id> owner_{};
};

// Checked: registers the calling thread for the length of the call (nested calls on the same
// thread, e.g. a pop from inside a try_pop_each callback, are fine).
template <>
class consumer_check::scope<true> {
 public:
  explicit scope(consumer_check& c) : check_(c) {
    const auto me = std::this_thread::get_id();
    std::thread::id expected{};
    // [CC1] acq_rel: orders this consumer after the previous one's exit; pairs with [CC2].
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
    // [CC2] release: pairs with [CC1] of the next consumer to enter.
    if (outermost_) check_.owner_.store(std::thread::id{}, std::memory_order_release);
  }
  scope(const scope&) = delete;
  scope& operator=(const scope&) = delete;

 private:
  consumer_check& check_;
  bool outermost_ = false;
};

// Unchecked: touches nothing.
template <>
class consumer_check::scope<false> {
 public:
  explicit scope(consumer_check&) noexcept {}
  scope(const scope&) = delete;
  scope& operator=(const scope&) = delete;
};

// The scope every consumer call of this translation unit takes.
using consumer_scope = consumer_check::scope<consumer_checks_enabled>;

}  // namespace tether::detail
