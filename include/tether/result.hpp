// SPDX-License-Identifier: MIT
// tether/result.hpp - what a push or pop reports: a value, or why there is none.
//
// Every non-blocking and timed call in tether says exactly what happened, so a caller can
// tell "nothing yet" (empty), "gave up waiting" (timeout), "no room" (full), "the other
// side is gone" (closed) and "asked to stop waiting" (cancelled) apart. A failed push never consumes its argument: the value stays
// with the caller.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

namespace tether {

namespace detail {
// Tag of pop_result's taking constructor: see there. For the queues; not for users.
struct take_from_slot_t {
  explicit take_from_slot_t() = default;
};
inline constexpr take_from_slot_t take_from_slot{};
}  // namespace detail

enum class status : std::uint8_t {
  ok,       // the value was pushed / a value was popped
  empty,    // try_pop: nothing ready right now (the queue is open)
  full,     // try_push: no room right now (the queue is open)
  timeout,  // *_for / *_until: the deadline passed first
  closed,   // closed (and, for pops, drained): no value will ever come / be accepted
  cancelled,  // std::stop_token overloads: a stop was requested before a value came / fitted
};

constexpr const char* to_string(status s) noexcept {
  switch (s) {
    case status::ok: return "ok";
    case status::empty: return "empty";
    case status::full: return "full";
    case status::timeout: return "timeout";
    case status::closed: return "closed";
    case status::cancelled: return "cancelled";
  }
  return "unknown";
}

// Outcome of a push. Converts to true only for status::ok. On any other outcome the value
// was not moved from: it is still the caller's.
class [[nodiscard]] push_result {
 public:
  constexpr push_result(tether::status s) noexcept : status_(s) {}  // NOLINT: implicit by design
  constexpr explicit operator bool() const noexcept { return status_ == tether::status::ok; }
  constexpr tether::status status() const noexcept { return status_; }
  constexpr bool is_full() const noexcept { return status_ == tether::status::full; }
  constexpr bool is_timeout() const noexcept { return status_ == tether::status::timeout; }
  constexpr bool is_closed() const noexcept { return status_ == tether::status::closed; }
  constexpr bool is_cancelled() const noexcept { return status_ == tether::status::cancelled; }
  friend constexpr bool operator==(push_result a, push_result b) noexcept = default;

 private:
  tether::status status_;
};

// Outcome of a pop or receive: holds a value (status ok) or says why not (empty, timeout,
// closed, cancelled). Reads like std::optional: `if (auto r = q.pop_for(10ms)) use(*r);`.
template <class T>
class [[nodiscard]] pop_result {
 public:
  pop_result(tether::status s) noexcept : status_(s) {}  // NOLINT: implicit by design
  pop_result(std::in_place_t, T&& v) : value_(std::move(v)), status_(tether::status::ok) {}
  template <class... Args>
  explicit pop_result(std::in_place_t, Args&&... args)
      : value_(std::in_place, std::forward<Args>(args)...), status_(tether::status::ok) {}

  // For the queues (detail): moves the value straight out of a queue's slot - the only move
  // an item makes on its way out of a pop - destroys the moved-from item in the slot, then
  // calls commit(), which moves the queue past the slot. If the move throws, nothing else
  // runs: the item is still queued (as T's throwing move left it) and the next to pop. Every
  // pop returns this result as a prvalue all the way out (guaranteed copy elision), so no
  // later move of T can lose the item.
  template <class Commit>
  pop_result(detail::take_from_slot_t, T* slot_item, Commit&& commit)
      : value_(std::in_place, std::move(*slot_item)), status_(tether::status::ok) {
    static_assert(noexcept(commit()), "tether::pop_result: a take's commit must not throw");
    slot_item->~T();
    commit();
  }

  bool has_value() const noexcept { return status_ == tether::status::ok; }
  explicit operator bool() const noexcept { return has_value(); }
  tether::status status() const noexcept { return status_; }
  bool is_empty() const noexcept { return status_ == tether::status::empty; }
  bool is_timeout() const noexcept { return status_ == tether::status::timeout; }
  bool is_closed() const noexcept { return status_ == tether::status::closed; }
  bool is_cancelled() const noexcept { return status_ == tether::status::cancelled; }

  T& operator*() & noexcept { return *value_; }
  const T& operator*() const& noexcept { return *value_; }
  T&& operator*() && noexcept { return std::move(*value_); }
  T* operator->() noexcept { return &*value_; }
  const T* operator->() const noexcept { return &*value_; }

  // The value; throws std::logic_error naming the status when there is none.
  T& value() & { check(); return *value_; }
  T&& value() && { check(); return std::move(*value_); }

  // Hands the value over as an optional (empty unless status ok).
  std::optional<T> take() && { return std::move(value_); }

 private:
  void check() const {
    if (!has_value())
      throw std::logic_error(std::string("tether::pop_result::value(): no value, status is ") +
                             to_string(status_));
  }

  std::optional<T> value_;
  tether::status status_;
};

}  // namespace tether
