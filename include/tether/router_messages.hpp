// SPDX-License-Identifier: MIT
// tether/router_messages.hpp - the values a router's users send and receive: subshell ids,
// envelopes and replies, control requests and their answers, and the errors they carry.
//
// The vocabulary of router.hpp. None of it needs a router, so code that only builds
// envelopes, reads replies or reports routing errors can include this header alone, without
// the router's threads, queues and executors.
//
// Who may call what: plain values; any thread.
// Memory ordering: none (no shared state).
#pragma once

#include <array>
#include <compare>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "executor_options.hpp"

namespace tether {

// Names a subshell. The default value is the parent (as in JEP 91, where the parent is
// addressed by the absence of an id); children get 1, 2, 3 ... in creation order, never
// reused.
class subshell_id {
 public:
  constexpr subshell_id() noexcept = default;
  constexpr explicit subshell_id(std::uint64_t value) noexcept : value_(value) {}
  constexpr std::uint64_t value() const noexcept { return value_; }
  constexpr bool is_parent() const noexcept { return value_ == 0; }
  // "parent" or "subshell-<id>" (also the child's executor and thread name).
  std::string to_string() const { return is_parent() ? std::string("parent") : "subshell-" + std::to_string(value_); }
  // The id to_string() names: "parent", or "subshell-<n>" with n a decimal 1 .. 2^64-1
  // (no sign, no leading zero); nullopt for anything else. So a protocol that names
  // subshells with strings (JEP 91) can use to_string() as the name and this to route.
  static constexpr std::optional<subshell_id> from_string(std::string_view s) noexcept {
    if (s == "parent") return subshell_id{};
    constexpr std::string_view prefix = "subshell-";
    if (s.size() <= prefix.size() || s.substr(0, prefix.size()) != prefix) return std::nullopt;
    s.remove_prefix(prefix.size());
    if (s.front() == '0') return std::nullopt;
    std::uint64_t v = 0;
    for (const char c : s) {
      if (c < '0' || c > '9') return std::nullopt;
      const auto digit = static_cast<std::uint64_t>(c - '0');
      if (v > (UINT64_MAX - digit) / 10) return std::nullopt;  // overflow
      v = v * 10 + digit;
    }
    return subshell_id{v};
  }
  friend constexpr bool operator==(const subshell_id&, const subshell_id&) noexcept = default;
  friend constexpr auto operator<=>(const subshell_id&, const subshell_id&) noexcept = default;

 private:
  std::uint64_t value_ = 0;
};

inline constexpr subshell_id parent_subshell{};

// What a sender hands the router: the header it routes on (subshell, tag) and a payload it
// never looks at. The tag comes back in the reply, to match the two.
template <class Payload>
struct envelope {
  envelope() requires std::default_initializable<Payload> = default;
  template <class P>
    requires std::constructible_from<Payload, P&&>
  envelope(subshell_id id, P&& p, std::uint64_t t = 0) : subshell(id), payload(std::forward<P>(p)), tag(t) {}

  subshell_id subshell{};
  Payload payload;
  std::uint64_t tag = 0;
};

// Why a message (or a control request) got an error instead of a value; ok: it did not.
enum class routing_errc : std::uint8_t {
  ok = 0,                // no error (routing_result::code() of a success)
  unknown_subshell,  // no subshell with that id was ever created     (payload handed back)
  subshell_deleted,      // deleted before the message ran or arrived     (payload handed back)
  subshell_stopped,      // the parent's executor refused or cancelled it (payload handed back)
  handler_threw,         // the handler threw before replying (the message names the exception)
  no_reply,              // the handler returned without replying
  router_stopped,        // stop(cancel) came first, or a request came once stopped
  invalid_request,       // control: cannot be served (deleting the parent)
  create_failed,         // control: the subshell's thread or its handler could not be made
  delivery_failed,       // the router could not carry it through: an allocation failed, or the
                         // payload's move threw (payload handed back where it still exists)
};

constexpr const char* to_string(routing_errc c) noexcept {
  switch (c) {
    case routing_errc::ok: return "ok";
    case routing_errc::unknown_subshell: return "unknown_subshell";
    case routing_errc::subshell_deleted: return "subshell_deleted";
    case routing_errc::subshell_stopped: return "subshell_stopped";
    case routing_errc::handler_threw: return "handler_threw";
    case routing_errc::no_reply: return "no_reply";
    case routing_errc::router_stopped: return "router_stopped";
    case routing_errc::invalid_request: return "invalid_request";
    case routing_errc::create_failed: return "create_failed";
    case routing_errc::delivery_failed: return "delivery_failed";
  }
  return "unknown";
}

// An error reply's cause: a code, the subshell it concerns and a message naming both.
class routing_error {
 public:
  routing_error(routing_errc code, subshell_id subshell, std::string message)
      : code_(code), subshell_(subshell), message_(std::move(message)) {}
  routing_errc code() const noexcept { return code_; }
  subshell_id subshell() const noexcept { return subshell_; }
  const std::string& message() const noexcept { return message_; }

 private:
  routing_errc code_;
  subshell_id subshell_;
  std::string message_;
};

namespace detail {
template <class Payload, class Reply>
class router_engine;
}  // namespace detail

// What leaves the router: one per accepted message, tagged with the subshell and the
// envelope's tag, holding the handler's value or an error. Errors are rare, so they live on
// the heap and a value reply stays small. Template parameters in data-flow order.
template <class Payload, class Reply>
class routed_reply {
 public:
  routed_reply(subshell_id subshell, std::uint64_t tag, Reply&& value)
      : subshell_(subshell), tag_(tag), v_(std::in_place_index<0>, std::move(value)) {}
  routed_reply(subshell_id subshell, std::uint64_t tag, routing_error error, std::optional<Payload> returned = {})
      : subshell_(subshell),
        tag_(tag),
        v_(std::in_place_index<1>, new failure{std::move(error), std::move(returned), false}) {}
  // An error reply handing back the payload (moved once, into the reply).
  routed_reply(subshell_id subshell, std::uint64_t tag, routing_error error, Payload&& returned)
      : subshell_(subshell),
        tag_(tag),
        v_(std::in_place_index<1>,
           new failure{std::move(error), std::optional<Payload>(std::in_place, std::move(returned)), false}) {}

  subshell_id subshell() const noexcept { return subshell_; }
  std::uint64_t tag() const noexcept { return tag_; }

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  // The handler's reply; throws std::logic_error carrying the error's message when there is
  // none.
  Reply& value() & {
    check();
    return *std::get_if<0>(&v_);
  }
  const Reply& value() const& {
    check();
    return *std::get_if<0>(&v_);
  }
  Reply&& value() && {
    check();
    return std::move(*std::get_if<0>(&v_));
  }
  // Precondition: has_value().
  Reply& operator*() noexcept { return *std::get_if<0>(&v_); }
  const Reply& operator*() const noexcept { return *std::get_if<0>(&v_); }
  Reply* operator->() noexcept { return std::get_if<0>(&v_); }
  const Reply* operator->() const noexcept { return std::get_if<0>(&v_); }

  // The error; throws std::logic_error for a value reply. An error reply the router made
  // with no memory left to describe it carries a fixed message (naming its code, not the
  // subshell: read subshell() for that) and no payload.
  const routing_error& error() const {
    if (has_value()) throw std::logic_error("tether::routed_reply::error(): the reply holds a value");
    return (*std::get_if<1>(&v_))->error;
  }
  // The error's code; routing_errc::ok for a value reply.
  routing_errc code() const noexcept { return has_value() ? routing_errc::ok : (*std::get_if<1>(&v_))->error.code(); }

  // The payload handed back by a message that never reached a handler (unknown_subshell,
  // subshell_deleted, subshell_stopped, router_stopped, delivery_failed); nullptr otherwise.
  Payload* returned_payload() noexcept {
    if (has_value()) return nullptr;
    auto& f = *std::get_if<1>(&v_);
    return f->payload ? &*f->payload : nullptr;
  }

 private:
  friend class detail::router_engine<Payload, Reply>;

  struct failure {
    routing_error error;
    std::optional<Payload> payload;
    bool preallocated;  // one of fallback()'s: never freed
  };
  struct failure_delete {
    void operator()(failure* f) const noexcept {
      if (!f->preallocated) delete f;
    }
  };

  // An error reply that allocates nothing: its failure is one made ahead of time, shared by
  // every such reply with this code (router_engine calls warm_up() before it routes).
  routed_reply(subshell_id subshell, std::uint64_t tag, routing_errc code) noexcept
      : subshell_(subshell), tag_(tag), v_(std::in_place_index<1>, fallback(code)) {}

  static constexpr std::size_t error_codes = static_cast<std::size_t>(routing_errc::delivery_failed) + 1;
  // Made once, on first use (warm_up()), and kept for the life of the process.
  static const std::array<failure*, error_codes>& fallbacks() {
    static const std::array<failure*, error_codes> table = [] {
      std::array<failure*, error_codes> t{};
      for (std::size_t i = 1; i < error_codes; ++i) {
        const auto c = static_cast<routing_errc>(i);
        t[i] = new failure{routing_error(c, subshell_id{},
                                         std::string("tether: router: ") + to_string(c) +
                                             " (no memory was left to describe it further)"),
                           std::nullopt, true};
      }
      return t;
    }();
    return table;
  }
  static failure* fallback(routing_errc code) noexcept {  // after warm_up()
    const auto i = static_cast<std::size_t>(code);
    return fallbacks()[i > 0 && i < error_codes ? i : error_codes - 1];
  }
  static void warm_up() { (void)fallbacks(); }

  void check() const {
    if (has_value()) return;
    const routing_error& e = (*std::get_if<1>(&v_))->error;
    throw std::logic_error("tether::routed_reply::value(): no value (" + std::string(to_string(e.code())) + "): " +
                           e.message());
  }

  subshell_id subshell_;
  std::uint64_t tag_;
  std::variant<Reply, std::unique_ptr<failure, failure_delete>> v_;
};

// What a direct control call (create_subshell, delete_subshell, list_subshells, stats)
// returns: its value, or the routing_error that refused it. Branch on code() (ok,
// unknown_subshell, router_stopped ...) or on operator bool. routing_result<> has no value.
template <class T = void>
class [[nodiscard]] routing_result {
  using stored = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

 public:
  routing_result() requires std::is_void_v<T> : v_(std::in_place_index<0>) {}
  routing_result(stored value) requires(!std::is_void_v<T>) : v_(std::in_place_index<0>, std::move(value)) {}
  routing_result(routing_error error) : v_(std::in_place_index<1>, std::move(error)) {}

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }
  routing_errc code() const noexcept { return has_value() ? routing_errc::ok : std::get_if<1>(&v_)->code(); }

  // The value; throws std::logic_error carrying the error's message when there is none.
  template <class U = T>
    requires(!std::is_void_v<U>)
  U& value() & {
    check();
    return *std::get_if<0>(&v_);
  }
  template <class U = T>
    requires(!std::is_void_v<U>)
  const U& value() const& {
    check();
    return *std::get_if<0>(&v_);
  }
  template <class U = T>
    requires(!std::is_void_v<U>)
  U&& value() && {
    check();
    return std::move(*std::get_if<0>(&v_));
  }
  // Precondition: has_value().
  template <class U = T>
    requires(!std::is_void_v<U>)
  U& operator*() noexcept {
    return *std::get_if<0>(&v_);
  }
  template <class U = T>
    requires(!std::is_void_v<U>)
  const U& operator*() const noexcept {
    return *std::get_if<0>(&v_);
  }
  template <class U = T>
    requires(!std::is_void_v<U>)
  U* operator->() noexcept {
    return std::get_if<0>(&v_);
  }
  template <class U = T>
    requires(!std::is_void_v<U>)
  const U* operator->() const noexcept {
    return std::get_if<0>(&v_);
  }

  // The error; throws std::logic_error for a success.
  const routing_error& error() const {
    if (has_value()) throw std::logic_error("tether::routing_result::error(): the call succeeded");
    return *std::get_if<1>(&v_);
  }

 private:
  void check() const {
    if (has_value()) return;
    const routing_error& e = *std::get_if<1>(&v_);
    throw std::logic_error("tether::routing_result::value(): no value (" + std::string(to_string(e.code())) +
                           "): " + e.message());
  }

  std::variant<stored, routing_error> v_;
};

// The control channel's verbs (JEP 91's create / delete / list, and per-subshell counters).
// interrupt: request stop on the std::stop_token of the message running on a subshell now
// (reply_sender::stop_token()).
enum class control_op : std::uint8_t { create_subshell, delete_subshell, list_subshells, subshell_stats, interrupt };

struct control_request {
  control_op op = control_op::list_subshells;
  subshell_id subshell{};                // delete: which one
  stop_mode policy = stop_mode::drain;   // delete: run its queued messages, or cancel them
  std::uint64_t tag = 0;                 // comes back in the reply

  static control_request create(std::uint64_t tag = 0) {
    return {control_op::create_subshell, {}, stop_mode::drain, tag};
  }
  static control_request remove(subshell_id id, stop_mode policy = stop_mode::drain, std::uint64_t tag = 0) {
    return {control_op::delete_subshell, id, policy, tag};
  }
  static control_request list(std::uint64_t tag = 0) { return {control_op::list_subshells, {}, stop_mode::drain, tag}; }
  static control_request stats(std::uint64_t tag = 0) {
    return {control_op::subshell_stats, {}, stop_mode::drain, tag};
  }
  static control_request interrupt(subshell_id id, std::uint64_t tag = 0) {
    return {control_op::interrupt, id, stop_mode::drain, tag};
  }
};

// One subshell's counters; a snapshot, stale as soon as it is taken.
struct subshell_stats {
  subshell_id id{};
  std::string executor_name;  // "subshell-<id>", or the parent executor's name
  std::uint64_t accepted = 0;  // messages routed to it
  std::uint64_t replied = 0;   // answered: reply sent and handler returned (or never run)
  std::uint64_t failed = 0;    // of those, answered with an error
  bool busy = false;           // a handler is running right now
  // Its executor's stats() (for the parent: the parent executor's). Queue delay, run time
  // and the depth high-water mark need metrics on that executor: router_options::
  // subshell_metrics for children, the parent's own executor_options::metrics.
  executor_stats executor{};
  std::uint64_t pending() const noexcept { return accepted - replied; }
};

struct control_reply {
  control_op op = control_op::list_subshells;
  std::uint64_t tag = 0;
  subshell_id subshell{};               // create: the new subshell; delete: the deleted one
  std::vector<subshell_stats> subshells;  // list: the children; stats: the parent, then them
  std::optional<routing_error> error;     // set when the request was refused
  bool ok() const noexcept { return !error.has_value(); }
};

struct router_options {
  std::string name = "router";  // the router thread's name, in every error message
  bool subshell_metrics = false;  // child subshells' executors record metrics (subshell_stats::executor)
};

}  // namespace tether
