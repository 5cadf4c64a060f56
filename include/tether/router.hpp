// SPDX-License-Identifier: MIT
// tether/router.hpp - a subshell router: messages routed by subshell id, one thread per
// subshell, every accepted message answered exactly once.
//
//   tether::executor main_ex{tether::adopt_current_thread};
//   tether::router<request, result> r{main_ex, [](tether::subshell_id id) {
//     return [state = session{id}](request&& q) mutable { return state.run(q); };  // a handler
//   }};
//   tether::subshell_id child = *r.create_subshell();  // its own thread and its own handler
//   r.send({tether::parent_subshell, long_request});    // runs on main_ex (main_ex.run())
//   r.send({child, quick_request, 7});                   // runs now, on the child's thread
//   auto reply = r.replies().pop();                      // {subshell, tag 7, result or error}
//
// The parent subshell runs on an executor the caller owns; each child, created at run time,
// on its own thread ("subshell-<id>") with its own handler, made by factory(id) on that
// thread (so factory calls may overlap). A handler is Reply(Payload&&), or
// void(Payload&&, tether::reply_sender<Payload, Reply>&), which may reply early and go on.
// One router thread routes by id and serves control requests (create, delete, list,
// stats); it never runs a handler, so control is served while every subshell is busy.
//
// Who may call what: send / send_control / the control calls / stop / is_stopped /
// is_finished / name - any thread, handlers included; replies() / control_replies() - one
// consumer thread at a time (a poller may watch them); join* / destructor - any thread but a
// child subshell's own (deadlock_error); on the parent's owner thread they run the parent.
//
// Guarantees: FIFO per subshell; exactly one reply per accepted message (send() returned
// ok): the handler's value, or a routing_error - a message that never reached a handler
// hands its payload back; an exception on the router thread (out of memory, a payload's
// throwing move) becomes that message's error reply, and routing goes on. Outcomes callers
// branch on are values (push_result, routing_result); exceptions only for misuse. No lock
// around user code; every thread parks when idle. Deleting a subshell never blocks routing.
//
// Memory ordering: a message's send happens before its handler runs, and the handler's
// writes before its reply is received; replies() closed means every reply is in it
// (detail/router/engine.hpp, [RA1]/[RA2]).
//
// After ipykernel's subshells (JEP 91: a shell-channel thread routing by subshell_id, a
// subshell manager for control requests), with a parking router in place of a polling one.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "detail/platform/futex.hpp"
#include "detail/router/engine.hpp"
#include "detail/router/subshell.hpp"
#include "executor.hpp"
#include "receiver.hpp"
#include "result.hpp"
#include "router_messages.hpp"

namespace tether {

// Handed to a handler of the form void(Payload&&, reply_sender&): send() answers the message
// (once; later calls return false). If the handler returns without sending, the message is
// answered with routing_errc::no_reply. Neither copyable nor movable: the reply belongs to
// the call. Subshell thread only (the thread running the handler).
template <class Payload, class Reply>
class reply_sender {
 public:
  reply_sender(const reply_sender&) = delete;
  reply_sender& operator=(const reply_sender&) = delete;

  // Sends the reply; true the first time, false (r untouched) once the message has one. An
  // exception (no memory for the reply, Reply's move) propagates and leaves it unsent.
  bool send(Reply&& r) {
    if (sent_) return false;
    owner_->push_value(*sub_, tag_, std::move(r));
    sent_ = true;
    return true;
  }
  bool send(const Reply& r) requires std::copy_constructible<Reply> {
    if (sent_) return false;
    return send(Reply(r));
  }

  bool replied() const noexcept { return sent_; }
  subshell_id subshell() const noexcept { return sub_->id; }

  // Stopped when router::interrupt(subshell()) - or a control_request::interrupt for it -
  // arrives while this handler runs, or when delete_subshell(cancel) / stop(cancel) ends its
  // subshell; a handler that can stop early observes it, or hands it
  // to its runtime with a std::stop_callback. Such a callback runs on the thread that serves
  // the interrupt (the router thread): keep it short - set a flag, post to an executor -
  // since routing waits for it. The first call for a message allocates its stop state
  // (std::bad_alloc propagates); a message nobody asks about costs nothing.
  std::stop_token stop_token() const { return sub_->stop_token(); }
  std::uint64_t tag() const noexcept { return tag_; }

 private:
  friend class detail::router_engine<Payload, Reply>;
  reply_sender(detail::router_engine<Payload, Reply>* owner, detail::router_subshell<Payload, Reply>* sub,
               std::uint64_t tag) noexcept
      : owner_(owner), sub_(sub), tag_(tag) {}

  detail::router_engine<Payload, Reply>* owner_;
  detail::router_subshell<Payload, Reply>* sub_;
  std::uint64_t tag_;
  bool sent_ = false;
};

template <class Payload, class Reply>
class router {
  static_assert(std::is_move_constructible_v<Payload> && std::is_nothrow_destructible_v<Payload>,
                "tether::router<Payload, Reply>: Payload must be move-constructible with a non-throwing destructor");
  static_assert(std::is_move_constructible_v<Reply> && std::is_nothrow_destructible_v<Reply>,
                "tether::router<Payload, Reply>: Reply must be move-constructible with a non-throwing destructor");

 public:
  using envelope_type = envelope<Payload>;
  using reply_type = routed_reply<Payload, Reply>;
  using sender_type = reply_sender<Payload, Reply>;

  // Makes the parent's handler here (factory(parent_subshell); its exception propagates),
  // then starts the router thread and the reaper. parent must outlive the router and run the
  // tasks the router gives it (for an adopting executor: run(), run_until() or try_run()).
  // Factory: callable with a subshell_id, returning a handler of either form (see the banner).
  template <class Factory>
  router(executor& parent, Factory factory, router_options options = {})
      : engine_(parent, make_factory(std::move(factory)), std::move(options.name), options.subshell_metrics) {}

  router(const router&) = delete;
  router& operator=(const router&) = delete;

  // stop(drain), then join(): every accepted message is answered and every thread joined
  // before it returns. Terminates the process (naming the cause) where join() would throw.
  ~router() {
    stop(stop_mode::drain);
    try {
      join();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tether: router '%s' destroyed where it cannot finish: %s\n", name().c_str(), e.what());
      std::terminate();
    }
  }

  // ---- the shell channel ---------------------------------------------------------------------

  // Hands e to the router; never blocks. ok: accepted - exactly one reply will come; closed
  // (after stop): refused, e untouched. An exception (no memory to queue it) means refused.
  // Thread-safe.
  push_result send(envelope_type&& e) { return engine_.send(e.subshell, std::move(e.payload), e.tag); }
  // As send({id, payload, tag}); on closed the payload is not moved from.
  template <class P>
    requires std::constructible_from<Payload, P&&>
  push_result send(subshell_id id, P&& payload, std::uint64_t tag = 0) {
    return engine_.send(id, std::forward<P>(payload), tag);
  }

  // The outbox, receive only: one reply per accepted message, in the order each subshell
  // produced them; closed once the router has finished and every reply is in. One consumer
  // thread at a time (pop, pop_for, pop_bulk, a poller ...).
  receiver<reply_type> replies() noexcept { return receiver<reply_type>(engine_.outbox()); }

  // ---- control: as messages ------------------------------------------------------------------

  // Hands a control request to the router; never blocks. ok or closed (req untouched). The
  // reply comes on control_replies(), with the request's tag: create - once the subshell's
  // handler is made (its id in reply.subshell); delete - once the subshell has finished
  // (every message it accepted is answered) and its thread is joined; list / stats - at once.
  // Replies may come out of request order: match them by tag. The control channel is
  // separate from the shell inbox (as in JEP 91): a request may overtake messages still
  // waiting there. The direct calls below are ordered with them instead.
  push_result send_control(control_request&& req) { return engine_.send_control(std::move(req)); }
  push_result send_control(const control_request& req) { return engine_.send_control(req); }

  // Receive only, as replies(). Closed once the router has finished.
  receiver<control_reply> control_replies() noexcept { return receiver<control_reply>(engine_.control_outbox()); }

  // ---- control: as calls ---------------------------------------------------------------------
  // Each travels through the shell inbox, so it takes effect after every message whose send()
  // happened before it (a delete with drain runs what this thread sent before it), and waits
  // for the router thread, which runs no user code: it answers as soon as the messages ahead
  // of it are routed, even while every subshell is busy. Each returns a routing_result: the
  // value, or the error (router_stopped once stop() was called). Thread-safe.

  // Creates a child subshell: starts its thread and makes its handler there; the id once the
  // handler exists. create_failed: the thread could not start, or the factory threw (the
  // message names the exception; the subshell is removed).
  routing_result<subshell_id> create_subshell() {
    control_reply r = engine_.call(control_request::create());
    if (r.error) return std::move(*r.error);
    return r.subshell;
  }

  // Deletes a child subshell: from now on messages for it are answered subshell_deleted.
  // drain: its queued messages still run; cancel: they are answered subshell_deleted, and
  // the running handler's stop token is stopped (it finishes, early if it watches the token). Returns as soon as it stops accepting - never waits for its
  // handler, so a subshell may delete itself. Errors: unknown_subshell (never created),
  // subshell_deleted (already deleted), invalid_request (the parent), router_stopped.
  routing_result<> delete_subshell(subshell_id id, stop_mode policy = stop_mode::drain) {
    control_reply r = engine_.call(control_request::remove(id, policy));
    if (r.error) return std::move(*r.error);
    return {};
  }

  // The children's ids, ascending (the parent is implicit, as in JEP 91).
  routing_result<std::vector<subshell_id>> list_subshells() {
    control_reply r = engine_.call(control_request::list());
    if (r.error) return std::move(*r.error);
    std::vector<subshell_id> ids;
    ids.reserve(r.subshells.size());
    for (const subshell_stats& s : r.subshells) ids.push_back(s.id);
    return ids;
  }

  // Interrupts the message running on subshell id (the parent included) now: requests stop
  // on the std::stop_token its handler reads through reply_sender::stop_token() (or
  // receives, for a handler of the form Reply(Payload&&, std::stop_token)). What the handler
  // does then is its own affair: it still replies once. A subshell with no message running
  // is left alone, and its next message starts with a fresh token. Errors: unknown_subshell,
  // subshell_deleted, router_stopped. As control_request::interrupt() on the control channel.
  routing_result<> interrupt(subshell_id id) {
    control_reply r = engine_.call(control_request::interrupt(id));
    if (r.error) return std::move(*r.error);
    return {};
  }

  // Counters of the parent, then of every child (ascending id).
  routing_result<std::vector<subshell_stats>> stats() {
    control_reply r = engine_.call(control_request::stats());
    if (r.error) return std::move(*r.error);
    return std::move(r.subshells);
  }
  // One subshell's counters; unknown_subshell when no live subshell has that id.
  routing_result<subshell_stats> stats(subshell_id id) {
    routing_result<std::vector<subshell_stats>> all = stats();
    if (!all) return all.error();
    for (subshell_stats& s : *all)
      if (s.id == id) return std::move(s);
    return routing_error(routing_errc::unknown_subshell, id,
                         "tether: router '" + name() + "': " + id.to_string() + ": no such subshell (now)");
  }

  // ---- lifecycle -------------------------------------------------------------------------------

  // Stops accepting: later sends and control requests are refused (handed back). drain: every
  // accepted message still runs; cancel: those not yet running are answered router_stopped,
  // and running handlers' stop tokens are stopped.
  // Control requests already queued are answered router_stopped. Then each child is stopped
  // the same way and joined by the reaper; once the parent has answered too, replies() and
  // control_replies() close. A cancel after a drain upgrades it. true for the call that
  // stopped the router. Never blocks. Thread-safe.
  bool stop(stop_mode mode = stop_mode::drain) noexcept { return engine_.stop(mode); }

  // Waits until the router has finished: every accepted message answered, replies() and
  // control_replies() closed, every thread joined. Call stop() first (std::logic_error
  // otherwise: it would wait forever). On the parent's owner thread it runs the parent
  // executor until then (as parent.run_until() would), so the parent's pending messages - and
  // a child blocked on the parent - get through; from inside a parent task, with router
  // messages still pending there, or from a child subshell's thread, it throws deadlock_error
  // instead of waiting for itself.
  void join() { engine_.join(); }
  // As join() without joining the threads (they are finishing): true once finished, false at
  // the deadline (try_join: now). On the parent's owner thread they run, once, the parent
  // tasks the router has handed over (parent.try_run()). A huge timeout waits forever.
  bool try_join() { return engine_.wait_finished(std::chrono::steady_clock::now()); }
  template <class Rep, class Period>
  bool join_for(const std::chrono::duration<Rep, Period>& timeout) {
    return engine_.wait_finished(detail::deadline_after(timeout));
  }
  template <class Clock, class Duration>
  bool join_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return engine_.wait_finished(detail::to_steady(deadline));
  }

  bool is_stopped() const noexcept { return engine_.is_stopped(); }
  bool is_finished() const noexcept { return engine_.is_finished(); }
  const std::string& name() const noexcept { return engine_.name(); }

 private:
  template <class Factory>
  static std::unique_ptr<detail::router_factory<Payload, Reply>> make_factory(Factory&& factory) {
    static_assert(std::is_invocable_v<Factory&, subshell_id>,
                  "tether::router: the factory must be callable with a tether::subshell_id");
    static_assert(detail::router_handler_v<std::decay_t<std::invoke_result_t<Factory&, subshell_id>>, Payload, Reply>,
                  "tether::router: the factory must return a handler callable as Reply(Payload&&) or "
                  "void(Payload&&, tether::reply_sender<Payload, Reply>&)");
    return std::make_unique<detail::router_factory_impl<Payload, Reply, Factory>>(std::move(factory));
  }

  detail::router_engine<Payload, Reply> engine_;
};

}  // namespace tether
