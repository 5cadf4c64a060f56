// SPDX-License-Identifier: MIT
// tether/router.hpp - a subshell router: messages routed by subshell id, one thread per
// subshell, every accepted message answered exactly once.
//
//   tether::executor main_ex{tether::adopt_current_thread};
//   tether::router<request, result> r{main_ex, [](tether::subshell_id id) {
//     return [state = session{id}](request&& q) mutable { return state.run(q); };  // a handler
//   }};
//   tether::subshell_id child = r.create_subshell();  // its own thread and its own handler
//   r.send({tether::parent_subshell, long_request});   // runs on main_ex (main_ex.run())
//   r.send({child, quick_request, 7});                  // runs now, on the child's thread
//   auto reply = r.replies().pop();                     // {subshell, tag 7, result or error}
//
// The parent subshell runs on an executor the caller owns (often the adopted main thread).
// Each child subshell, created at run time, runs on its own thread with its own executor,
// named "subshell-<id>", and its own handler, made by the factory on that thread. One router
// thread waits (a poller: zero CPU while idle) on two inboxes: envelopes for the shell, and
// control requests (create, delete, list, stats). It reads only an envelope's id and hands
// the payload, untouched, to that subshell's executor as a task; the messages one inbox batch
// holds for a subshell travel as one task (one queue push, at most one wake-up). It never
// runs a handler, so control is served while every subshell is busy, and a long task in one
// subshell delays no other. Handlers reply from their own thread into one outbox,
// replies(), each reply tagged with its subshell's id and the envelope's tag.
//
// Handlers, one per subshell, made by factory(subshell_id) - for the parent on the thread that
// constructs the router, for a child on the child's own thread (so calls may overlap: the
// factory must be safe to call concurrently). Either form:
//   Reply handler(Payload&&)                                      - the value is the reply;
//   void handler(Payload&&, tether::reply_sender<Reply, Payload>&) - send() once; it may reply
//                                                                   early and keep working.
//
// Who may call what:
//   send / send_control / create_subshell / delete_subshell / list_subshells / stats /
//   shutdown / is_stopped / is_finished / name          - any thread, also from handlers.
//   replies() / control_replies()                        - their pop side: one consumer
//     thread at a time (a poller may watch them); never push to or close them.
//   join / join_for / join_until / destructor            - any thread but a child subshell's
//     own (deadlock_error). On the parent's owner thread they run the parent executor until
//     the router has finished (the timed forms: poll() once), as an executor's own
//     destructor would run its pending tasks.
//
// Guarantees:
//   - FIFO per subshell: each subshell runs its messages in the order the router received
//     them, and its replies leave in the order it produced them.
//   - Exactly one reply per accepted message (send() returned ok): the handler's value, or a
//     routing_error naming the subshell. A message that never reached a handler hands its
//     payload back in the reply (crossbeam-style: nothing is silently dropped).
//   - No lock around user code; the routing table belongs to the router thread alone. Every
//     thread parks when idle: no polling loop anywhere.
//   - Deleting a subshell never blocks routing: the router stops its executor (drain: run
//     what it accepted; cancel: answer it with subshell_deleted) and a reaper thread joins it.
//   - shutdown(drain | cancel) follows the same rule for every subshell; replies() reports
//     closed only after the last reply is in it.
//
// Memory ordering: a message crosses two single-consumer queues (inbox -> the subshell's
// executor) and its reply a third (the outbox); each hop is the queue's release publish and
// acquire take, so what the sender wrote is visible to the handler and what the handler wrote
// to the reply's receiver. [A1]/[A2] each subshell's `answered` count is raised (release)
// after the message's reply is pushed and its handler has returned; the reaper's acquire
// loads of it happen before it closes the outbox, so a receiver that sees replies() closed
// has every reply. [C1]/[C2] a cancel code is stored (release) before the executor stop that
// it explains and loaded (acquire) by the task it turns into an error reply.
//
// After ipykernel's subshells (JEP 91: a shell-channel thread routing by subshell_id, a
// subshell manager for control requests), with a parking router in place of a polling one.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "detail/wait/call_slot.hpp"
#include "detail/platform/futex.hpp"
#include "detail/wait/parker.hpp"
#include "detail/router/subshell.hpp"
#include "detail/platform/thread_record.hpp"
#include "errors.hpp"
#include "executor.hpp"
#include "mpsc_queue.hpp"
#include "result.hpp"
#include "router_messages.hpp"
#include "select.hpp"

namespace tether {

// Handed to a handler of the form void(Payload&&, reply_sender&): send() answers the message
// (once; later calls return false). If the handler returns without sending, the message is
// answered with routing_errc::no_reply. Neither copyable nor movable: the reply belongs to
// the call. Subshell thread only (the thread running the handler).
template <class Reply, class Payload>
class reply_sender {
 public:
  reply_sender(const reply_sender&) = delete;
  reply_sender& operator=(const reply_sender&) = delete;

  // Sends the reply; true the first time, false (r untouched) once the message has one.
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
  std::uint64_t tag() const noexcept { return tag_; }

 private:
  friend class router<Payload, Reply>;
  reply_sender(router<Payload, Reply>* owner, detail::router_subshell<Payload, Reply>* sub, std::uint64_t tag) noexcept
      : owner_(owner), sub_(sub), tag_(tag) {}

  router<Payload, Reply>* owner_;
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

  using subshell = detail::router_subshell<Payload, Reply>;

 public:
  using envelope_type = envelope<Payload>;
  using reply_type = routed_reply<Reply, Payload>;
  using sender_type = reply_sender<Reply, Payload>;

  // Makes the parent's handler here (factory(parent_subshell)), then starts the router thread
  // and the reaper. parent must outlive the router and must run the tasks the router gives it
  // (for an adopting executor: run(), run_until() or poll()). Factory: callable with a
  // subshell_id, returning a handler of either form (see the banner).
  template <class Factory>
  router(executor& parent, Factory factory, router_options options = {})
      : name_(std::move(options.name)),
        parent_(this, parent_subshell, routing_errc::subshell_stopped),
        reaper_(executor_options{.name = name_ + "-reaper", .on_error = [](std::exception_ptr) {}}) {
    static_assert(std::is_invocable_v<Factory&, subshell_id>,
                  "tether::router: the factory must be callable with a tether::subshell_id");
    static_assert(detail::router_handler_v<std::decay_t<std::invoke_result_t<Factory&, subshell_id>>, Payload, Reply>,
                  "tether::router: the factory must return a handler callable as Reply(Payload&&) or "
                  "void(Payload&&, tether::reply_sender<Reply, Payload>&)");
    factory_ = std::make_unique<detail::router_factory_impl<Payload, Reply, Factory>>(std::move(factory));
    parent_.ex = &parent;
    parent_.handler = factory_->make(parent_subshell);
    thread_ = std::thread([this] { thread_main(); });
  }

  router(const router&) = delete;
  router& operator=(const router&) = delete;

  // shutdown(drain), then join(): every accepted message is answered and every thread joined
  // before it returns. Terminates the process (naming the cause) where join() would throw.
  ~router() {
    shutdown(stop_mode::drain);
    try {
      join();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tether: router '%s' destroyed where it cannot finish: %s\n", name_.c_str(), e.what());
      std::terminate();
    }
  }

  // ---- the shell channel ---------------------------------------------------------------------

  // Hands e to the router; never blocks. ok: accepted - exactly one reply will come; closed
  // (after shutdown): refused, e untouched. Thread-safe.
  push_result send(envelope_type&& e) {
    return inbox_.emplace(e.subshell, std::move(e.payload), e.tag) ? status::ok : status::closed;
  }
  // As send({id, payload, tag}); on closed the payload is not moved from.
  template <class P>
    requires std::constructible_from<Payload, P&&>
  push_result send(subshell_id id, P&& payload, std::uint64_t tag = 0) {
    return inbox_.emplace(id, std::forward<P>(payload), tag) ? status::ok : status::closed;
  }

  // The outbox: one reply per accepted message, in the order each subshell produced them.
  // Closed once the router has finished (see join()) and every reply is in. Receive only (one
  // consumer thread at a time; pop, pop_for, pop_bulk, a poller ...).
  mpsc_queue<reply_type>& replies() noexcept { return outbox_; }

  // ---- control: as messages ------------------------------------------------------------------

  // Hands a control request to the router; never blocks. ok or closed (req untouched). The
  // reply comes on control_replies(), with the request's tag: create - once the subshell's
  // handler is made (its id in reply.subshell); delete - once the subshell has finished
  // (every message it accepted is answered) and its thread is joined; list / stats - at once.
  // Replies to different requests may come out of request order: match them by tag. The
  // control channel is separate from the shell inbox (as in JEP 91): a request may overtake
  // messages still waiting there. The direct calls below are ordered with them instead.
  push_result send_control(control_request&& req) {
    return control_in_.emplace(std::move(req), nullptr, false) ? status::ok : status::closed;
  }
  push_result send_control(const control_request& req) {
    return control_in_.emplace(req, nullptr, false) ? status::ok : status::closed;
  }

  // Receive only, as replies(). Closed once the router has finished.
  mpsc_queue<control_reply>& control_replies() noexcept { return control_out_; }

  // ---- control: as calls ---------------------------------------------------------------------
  // Each travels through the shell inbox, so it takes effect after every message whose send()
  // happened before it (a delete with drain runs what this thread sent before it), and waits
  // for the router thread, which runs no user code: it answers as soon as the messages ahead
  // of it are routed, even while every subshell is busy. Throw router_stopped once
  // shutdown() was called. Thread-safe.

  // Creates a child subshell: starts its thread and makes its handler there; returns its id
  // once the handler exists. Rethrows the factory's exception (the subshell is removed then);
  // std::system_error if the thread could not start.
  subshell_id create_subshell() { return call(control_request::create()).subshell; }

  // Deletes a child subshell: from now on messages for it are answered subshell_deleted.
  // drain: its queued messages still run; cancel: they are answered subshell_deleted (a
  // running handler finishes). Returns as soon as it stops accepting - never waits for its
  // handler, so a subshell may delete itself. false: no such subshell, or the parent.
  bool delete_subshell(subshell_id id, stop_mode policy = stop_mode::drain) {
    return call(control_request::remove(id, policy), false).ok();
  }

  // The children's ids, ascending (the parent is implicit, as in JEP 91).
  std::vector<subshell_id> list_subshells() {
    control_reply r = call(control_request::list());
    std::vector<subshell_id> ids;
    ids.reserve(r.subshells.size());
    for (const subshell_stats& s : r.subshells) ids.push_back(s.id);
    return ids;
  }

  // Counters of the parent, then of every child (ascending id).
  std::vector<subshell_stats> stats() { return call(control_request::stats()).subshells; }
  std::optional<subshell_stats> stats(subshell_id id) {
    for (subshell_stats& s : stats())
      if (s.id == id) return std::move(s);
    return std::nullopt;
  }

  // ---- lifecycle -------------------------------------------------------------------------------

  // Stops accepting: later sends and control requests are refused (handed back). drain: every
  // accepted message still runs; cancel: those not yet running are answered router_stopped
  // (the parent's answer when the parent runs them). Control requests already queued are
  // answered router_stopped. Then each child subshell is stopped the same way and joined by
  // the reaper; once the parent has answered too, replies() and control_replies() close. A
  // cancel after a drain upgrades it. Returns true if this call stopped the router. Never
  // blocks. Thread-safe.
  bool shutdown(stop_mode mode = stop_mode::drain) noexcept {
    if (mode == stop_mode::cancel) cancel_.store(true, std::memory_order_seq_cst);  // before the close: seen with it
    const bool first = !stopping_.exchange(true, std::memory_order_seq_cst);
    inbox_.close();
    control_in_.close();
    return first;
  }

  // Waits until the router has finished: every accepted message answered, replies() and
  // control_replies() closed, every thread joined. Call shutdown() first (std::logic_error
  // otherwise). On the parent's owner thread it runs the parent executor until then (as
  // parent.run_until() would), so the parent's pending messages - and a child blocked on the
  // parent - get through; from inside a parent task, with router messages still pending
  // there, or from a child subshell's thread, it throws deadlock_error instead of waiting for
  // itself.
  void join() {
    (void)wait_finished(detail::no_deadline);
    bool expected = false;
    // acq_rel: one joiner claims the std::thread.
    if (thread_join_claimed_.compare_exchange_strong(expected, true, std::memory_order_acq_rel) && thread_.joinable())
      thread_.join();
    reaper_.join();
  }
  // As join() without joining the threads (they are finishing): true once finished, false at
  // the deadline. On the parent's owner thread they run, once, the parent tasks the router has
  // handed over (parent.poll()).
  template <class Rep, class Period>
  bool join_for(const std::chrono::duration<Rep, Period>& timeout) {
    return wait_finished(detail::deadline_after(timeout));
  }
  template <class Clock, class Duration>
  bool join_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return wait_finished(detail::to_steady(deadline));
  }

  bool is_stopped() const noexcept { return stopping_.load(std::memory_order_seq_cst); }
  bool is_finished() const noexcept { return finished_.load(std::memory_order_seq_cst); }
  const std::string& name() const noexcept { return name_; }

 private:
  friend class reply_sender<Reply, Payload>;

  // A control request: from send_control (waiter null: reply on control_out_), a direct call
  // (waiter: complete it) or the router itself (internal: no reply of its own).
  struct command {
    command(control_request&& r, detail::call_slot<control_reply>* w, bool i, std::exception_ptr f = {}) noexcept
        : request(std::move(r)), waiter(w), internal(i), failure(std::move(f)) {}
    command(const control_request& r, detail::call_slot<control_reply>* w, bool i) noexcept
        : request(r), waiter(w), internal(i) {}
    control_request request;
    detail::call_slot<control_reply>* waiter;
    bool internal;
    // Internal removal of a subshell whose factory threw: the exception, for the create it
    // answers once the subshell is gone.
    std::exception_ptr failure;
  };

  // What the inbox carries: a message (its header and payload), or a direct control call
  // (ctl: the caller's command, on its stack until the call returns).
  struct inbox_item {
    template <class P>
    inbox_item(subshell_id s, P&& p, std::uint64_t t)
        : subshell(s), tag(t), payload(std::in_place, std::forward<P>(p)) {}
    explicit inbox_item(command* c) noexcept : ctl(c) {}
    subshell_id subshell{};
    std::uint64_t tag = 0;
    std::optional<Payload> payload;
    command* ctl = nullptr;
  };

  // The task that carries one message to its subshell: the reply obligation. Run, it calls
  // the handler; destroyed unrun (executor refused it, or stop(cancel)), it answers with an
  // error and hands the payload back. Either way, exactly one reply.
  struct delivery {
    delivery(subshell* s, std::uint64_t t, Payload&& p) noexcept(std::is_nothrow_move_constructible_v<Payload>)
        : sub(s), tag(t), payload(std::move(p)) {}
    delivery(delivery&& o) noexcept(std::is_nothrow_move_constructible_v<Payload>)
        : sub(std::exchange(o.sub, nullptr)), tag(o.tag), payload(std::move(o.payload)) {}
    delivery& operator=(delivery&&) = delete;
    void operator()() {
      subshell* s = std::exchange(sub, nullptr);
      s->owner->run_delivery(*s, tag, payload);
    }
    ~delivery() {
      if (sub != nullptr) sub->owner->answer_unrun(*sub, tag, std::move(payload));
    }
    subshell* sub;
    std::uint64_t tag;
    Payload payload;
  };

  // Several messages for one subshell from one inbox batch, as one task: one queue push and at
  // most one wake-up instead of one per message. Each message is answered as delivery's is;
  // destroyed part-way (an exception left the task, or stop(cancel)), it answers the rest.
  struct delivery_batch {
    delivery_batch(subshell* s, std::vector<std::pair<std::uint64_t, Payload>>&& m) noexcept
        : sub(s), items(std::move(m)) {}
    delivery_batch(delivery_batch&& o) noexcept
        : sub(std::exchange(o.sub, nullptr)), items(std::move(o.items)), next(o.next) {}
    delivery_batch& operator=(delivery_batch&&) = delete;
    void operator()() {
      while (next < items.size()) {
        auto& [tag, payload] = items[next++];
        sub->owner->run_delivery(*sub, tag, payload);
      }
      sub = nullptr;
    }
    ~delivery_batch() {
      if (sub == nullptr) return;
      for (; next < items.size(); ++next)
        sub->owner->answer_unrun(*sub, items[next].first, std::move(items[next].second));
    }
    subshell* sub;
    std::vector<std::pair<std::uint64_t, Payload>> items;
    std::size_t next = 0;  // the first message not yet run
  };

  // A child's first task: makes its handler on its own thread, then answers the create.
  struct init_job {
    init_job(router* r, subshell* s, detail::call_slot<control_reply>* w, std::uint64_t t) noexcept
        : owner(r), sub(s), waiter(w), tag(t) {}
    init_job(init_job&& o) noexcept
        : owner(o.owner), sub(std::exchange(o.sub, nullptr)), waiter(o.waiter), tag(o.tag) {}
    void operator()() { owner->init_subshell(*std::exchange(sub, nullptr), waiter, tag); }
    ~init_job() {
      if (sub != nullptr) owner->init_dropped(*sub, waiter, tag);
    }
    router* owner;
    subshell* sub;
    detail::call_slot<control_reply>* waiter;
    std::uint64_t tag;
  };

  // ---- the direct control calls ----------------------------------------------------------------

  control_reply call(control_request req, bool throw_on_error = true) {
    detail::call_slot<control_reply> slot;
    command c(std::move(req), &slot, false);
    if (!inbox_.emplace(&c))
      throw router_stopped("tether: router '" + name_ + "' is stopped and no longer accepts control requests");
    slot.wait(true);  // spin briefly first: the router thread answers promptly
    control_reply r = slot.take();  // rethrows a factory's exception
    if (r.error && (throw_on_error || r.error->code() == routing_errc::router_stopped)) {
      if (r.error->code() == routing_errc::router_stopped) throw router_stopped(r.error->message());
      throw std::runtime_error(r.error->message());
    }
    return r;
  }

  // ---- replies (any thread that answers a message) ---------------------------------------------

  void push_value(subshell& s, std::uint64_t tag, Reply&& r) { (void)outbox_.emplace(s.id, tag, std::move(r)); }

  void push_error(subshell& s, std::uint64_t tag, routing_errc code, std::string why, std::optional<Payload> back) {
    (void)outbox_.emplace(s.id, tag, routing_error(code, s.id, describe(s.id, std::move(why))), std::move(back));
    s.failed.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  }

  // The message is finished: its reply is out and no handler runs for it any more. The count
  // is the last touch of the router; only the parent's finish is waited for (children are
  // joined instead).
  void settle(subshell& s) noexcept {
    const bool parent = s.id.is_parent();
    const void* key = &s;
    s.answered.fetch_add(1, std::memory_order_release);  // [A1] release: pairs with [A2] in finish()
    if (parent) detail::router_settle_parker(key).notify_all();
  }

  std::string describe(subshell_id id, std::string why) const {
    const std::string who = id.is_parent() ? std::string("the parent subshell") : id.to_string();
    return "tether: router '" + name_ + "': " + who + ": " + why;
  }

  std::string reason(const subshell& s, routing_errc code) const {
    switch (code) {
      case routing_errc::subshell_deleted: return "the subshell was deleted; the message was not run";
      case routing_errc::subshell_stopped:
        return "its executor '" + s.ex->name() + "' is stopped; the message was not run";
      case routing_errc::router_stopped: return "the router was stopped (cancel) before the message ran";
      default: return to_string(code);
    }
  }

  // ---- the subshell side ---------------------------------------------------------------------

  // Subshell thread: runs one message (or answers it with the cancel code).
  void run_delivery(subshell& s, std::uint64_t tag, Payload& payload) {
    // [C2] acquire: pairs with [C1]; the cancel code is set before the stop it explains.
    if (const std::uint8_t c = s.cancel_code.load(std::memory_order_acquire); c != 0) {
      push_error(s, tag, routing_errc{c}, reason(s, routing_errc{c}), std::move(payload));
      settle(s);
      return;
    }
    sender_type reply(this, &s, tag);
    bool threw = false;  // an exception after the reply was sent changes nothing for the sender
    s.busy.store(true, std::memory_order_relaxed);  // relaxed: a statistic
    try {
      if (!s.handler) throw std::logic_error("the subshell has no handler (its factory threw)");
      s.handler->handle(std::move(payload), reply);
    } catch (const std::exception& e) {
      threw = true;
      if (!reply.replied())
        push_error(s, tag, routing_errc::handler_threw, std::string("the handler threw: ") + e.what(), {});
    } catch (...) {
      threw = true;
      if (!reply.replied())
        push_error(s, tag, routing_errc::handler_threw, "the handler threw a non-standard exception", {});
    }
    s.busy.store(false, std::memory_order_relaxed);  // relaxed: a statistic
    if (!reply.replied() && !threw)
      push_error(s, tag, routing_errc::no_reply, "the handler returned without replying", {});
    settle(s);
  }

  // Any thread: a delivery destroyed unrun.
  void answer_unrun(subshell& s, std::uint64_t tag, Payload&& payload) noexcept {
    // [C2] acquire: as in run_delivery().
    const std::uint8_t c = s.cancel_code.load(std::memory_order_acquire);
    const routing_errc code = c != 0 ? routing_errc{c} : s.unrun_code;
    try {
      push_error(s, tag, code, reason(s, code), std::move(payload));
    } catch (...) {  // out of memory: the reply is lost, but shutdown must not wait for it
    }
    settle(s);
  }

  // Child thread: makes the handler, answers the create.
  void init_subshell(subshell& s, detail::call_slot<control_reply>* waiter, std::uint64_t tag) {
    std::exception_ptr failure;
    try {
      s.handler = factory_->make(s.id);
    } catch (...) {
      failure = std::current_exception();
    }
    if (!failure) {
      answer(waiter, false, control_reply{control_op::create_subshell, tag, s.id, {}, std::nullopt});
      return;
    }
    // The router removes it, then answers the create. Shutting down, the router stops it
    // anyway: answer here. The exception moves with the request (a closed queue leaves it
    // here), so the thread that reads it also drops the last reference: libstdc++ counts
    // exception_ptr references with atomics ThreadSanitizer does not see, and would report
    // this thread freeing the exception after the router read it.
    if (control_in_.emplace(control_request::remove(s.id, stop_mode::drain, tag), waiter, true, std::move(failure)))
      return;
    answer_failed_create(waiter, tag, s.id, failure);
  }

  void answer_failed_create(detail::call_slot<control_reply>* waiter, std::uint64_t tag, subshell_id id,
                            const std::exception_ptr& failure) {
    if (waiter != nullptr) {
      waiter->fail(failure);  // create_subshell() rethrows it
      return;
    }
    std::string what = "the handler factory threw";
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      what += std::string(": ") + e.what();
    } catch (...) {
    }
    answer(nullptr, false,
           error_reply(control_op::create_subshell, tag, id, routing_errc::create_failed, std::move(what)));
  }

  // Any thread: a child's init task destroyed unrun (deleted or shut down with cancel).
  void init_dropped(subshell& s, detail::call_slot<control_reply>* waiter, std::uint64_t tag) noexcept {
    const std::uint8_t c = s.cancel_code.load(std::memory_order_acquire);  // [C2] acquire: as above
    const routing_errc code = c != 0 ? routing_errc{c} : routing_errc::router_stopped;
    try {
      answer(waiter, false, error_reply(control_op::create_subshell, tag, s.id, code, reason(s, code)));
    } catch (...) {  // out of memory building the reply: never leave a caller blocked
      if (waiter != nullptr) waiter->fail(std::current_exception());
    }
  }

  control_reply error_reply(control_op op, std::uint64_t tag, subshell_id id, routing_errc code,
                            std::string why) const {
    return control_reply{op, tag, id, {}, routing_error(code, id, describe(id, std::move(why)))};
  }

  // Completes a control request: the direct caller's slot, or the control outbox.
  void answer(detail::call_slot<control_reply>* waiter, bool internal, control_reply&& r) {
    if (waiter != nullptr) {
      waiter->run([&r]() -> control_reply { return std::move(r); });
    } else if (!internal) {
      (void)control_out_.push(std::move(r));
    }
  }

  // ---- the router thread -----------------------------------------------------------------------

  void thread_main() {
    try {
      detail::set_this_thread_name(name_);
      poller p;
      p.add(inbox_).add(control_in_);
      const source_id inbox_id = source_id::of(inbox_);
      bool inbox_open = true;
      bool control_open = true;
      while (inbox_open || control_open) {
        const source_id ready = p.wait();
        if (ready == inbox_id) {
          if (!serve_inbox()) {
            p.remove(inbox_);
            inbox_open = false;
          }
        } else if (!serve_control()) {
          p.remove(control_in_);
          control_open = false;
        }
      }
      finish_routing();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tether: router '%s': the router thread failed: %s\n", name_.c_str(), e.what());
      std::terminate();
    }
  }

  // Routes up to a batch of envelopes, then hands each subshell its share as one task. false
  // once the inbox is closed and drained.
  bool serve_inbox() {
    // A bigger batch gives each subshell more messages per task (fewer wake-ups); a smaller one
    // lets a control request in sooner. 1024 routing steps take tens of microseconds.
    constexpr std::size_t batch = 1024;
    bool open = true;
    if (inbox_.drain([this](inbox_item&& e) { route(std::move(e)); }, batch) < batch) {
      pop_result<inbox_item> r = inbox_.try_pop();  // fewer than a batch: empty, or closed?
      if (r)
        route(std::move(*r));
      else
        open = !r.is_closed();
    }
    hand_over();
    return open;
  }

  // Posts what route() staged: a subshell's only message as a delivery, several as a batch.
  // A refused post (the parent's executor stopped) answers them from the task's destructor.
  void hand_over() {
    for (subshell* s : staged_) {
      if (s->staged.size() == 1) {
        auto& [tag, payload] = s->staged.front();
        (void)s->ex->post(delivery(s, tag, std::move(payload)));
        s->staged.clear();
      } else {
        (void)s->ex->post(delivery_batch(s, std::move(s->staged)));
        s->staged.clear();  // moved from: make it empty for certain
      }
    }
    staged_.clear();
  }

  bool serve_control() {
    constexpr std::size_t batch = 16;
    if (control_in_.drain([this](command&& c) { serve(c); }, batch) == batch) return true;
    pop_result<command> r = control_in_.try_pop();
    if (r) {
      serve(*r);
      return true;
    }
    return !r.is_closed();
  }

  // Reads the envelope's id, never its payload, and hands the payload on.
  void route(inbox_item&& e) {
    if (e.ctl != nullptr) {
      hand_over();  // the messages before it reach their subshells first (a delete drains them)
      serve(*e.ctl);
      return;
    }
    // relaxed: a cancel racing this message may go either way; the close after it is seq_cst.
    if (cancel_.load(std::memory_order_relaxed)) {
      reply_unrouted(e, routing_errc::router_stopped, "the router was stopped (cancel) before the message was routed");
      return;
    }
    subshell* s = find(e.subshell);
    if (s == nullptr) {
      if (e.subshell.value() < next_id_)
        reply_unrouted(e, routing_errc::subshell_deleted, "the subshell was deleted; the message was not run");
      else
        reply_unrouted(e, routing_errc::unknown_subshell, "no such subshell was ever created; the message was not run");
      return;
    }
    s->accepted.store(++s->accepted_local, std::memory_order_relaxed);  // relaxed: published by the post in hand_over()
    if (s->staged.empty()) staged_.push_back(s);
    s->staged.emplace_back(e.tag, std::move(*e.payload));
  }

  void reply_unrouted(inbox_item& e, routing_errc code, const char* why) {
    (void)outbox_.emplace(e.subshell, e.tag, routing_error(code, e.subshell, describe(e.subshell, why)),
                          std::move(e.payload));
  }

  subshell* find(subshell_id id) noexcept {
    if (id.is_parent()) return &parent_;
    if (id == cached_id_) return cached_;
    const auto it = table_.find(id.value());
    if (it == table_.end()) return nullptr;
    cached_id_ = id;
    cached_ = it->second.get();
    return cached_;
  }

  // A direct caller's command lives on its stack: once its waiter is completed it may be gone,
  // so everything here works on a copy.
  void serve(const command& in) {
    const command c = in;
    const control_request& q = c.request;
    if (stopping_.load(std::memory_order_seq_cst) && !c.internal) {
      answer(c.waiter, false,
             error_reply(q.op, q.tag, q.subshell, routing_errc::router_stopped,
                         "the router is shutting down; request refused"));
      return;
    }
    switch (q.op) {
      case control_op::create_subshell: create(c); return;
      case control_op::delete_subshell: remove(c); return;
      case control_op::list_subshells:
      case control_op::subshell_stats: {
        control_reply r{q.op, q.tag, {}, {}, std::nullopt};
        if (q.op == control_op::subshell_stats) r.subshells.push_back(snapshot(parent_));
        std::vector<const subshell*> children;
        children.reserve(table_.size());
        for (const auto& entry : table_) children.push_back(entry.second.get());
        std::sort(children.begin(), children.end(), [](const subshell* a, const subshell* b) { return a->id < b->id; });
        for (const subshell* s : children) r.subshells.push_back(snapshot(*s));
        answer(c.waiter, c.internal, std::move(r));
        return;
      }
    }
    answer(c.waiter, c.internal,
           error_reply(q.op, q.tag, q.subshell, routing_errc::invalid_request, "unknown control operation"));
  }

  subshell_stats snapshot(const subshell& s) const {
    // relaxed: statistics.
    return {s.id, s.ex->name(), s.accepted.load(std::memory_order_relaxed), s.answered.load(std::memory_order_relaxed),
            s.failed.load(std::memory_order_relaxed), s.busy.load(std::memory_order_relaxed)};
  }

  // Starts the child's executor (the one thing here that takes a while: a thread start) and
  // queues its init task; the create is answered from the child's thread.
  void create(const command& c) {
    const subshell_id id{next_id_++};
    auto s = std::make_unique<subshell>(this, id, routing_errc::subshell_deleted);
    subshell* raw = s.get();
    try {
      s->own_ex = std::make_unique<executor>(executor_options{
          .name = id.to_string(),
          .on_start = [this] { detail::router_child_thread_of = this; },
          .on_stop = [raw] { raw->handler.reset(); },  // the handler dies on its own thread
          .on_error = [](std::exception_ptr) {},       // only out-of-memory can get here
      });
    } catch (const std::exception& e) {
      if (c.waiter != nullptr) {
        c.waiter->fail(std::current_exception());
        return;
      }
      answer(nullptr, c.internal,
             error_reply(control_op::create_subshell, c.request.tag, id, routing_errc::create_failed,
                         std::string("its thread could not be started: ") + e.what()));
      return;
    }
    s->ex = s->own_ex.get();
    table_.emplace(id.value(), std::move(s));
    (void)raw->ex->post(init_job(this, raw, c.waiter, c.request.tag));  // a fresh executor accepts
  }

  void remove(const command& c) {
    const control_request& q = c.request;
    if (q.subshell.is_parent()) {
      answer(c.waiter, c.internal,
             error_reply(q.op, q.tag, q.subshell, routing_errc::invalid_request,
                         "the parent subshell cannot be deleted"));
      return;
    }
    const auto it = table_.find(q.subshell.value());
    if (it != table_.end()) {
      std::unique_ptr<subshell> s = std::move(it->second);
      table_.erase(it);
      if (cached_id_ == q.subshell) cached_id_ = parent_subshell;
      // A direct delete is answered now; one from the control channel once reaped.
      if (c.waiter != nullptr && !c.failure)
        answer(c.waiter, false, control_reply{q.op, q.tag, q.subshell, {}, std::nullopt});
      retire(std::move(s), q.policy, routing_errc::subshell_deleted, c.waiter == nullptr && !c.internal, q.tag);
    } else if (!c.failure) {
      const bool was = q.subshell.value() < next_id_;
      answer(c.waiter, c.internal,
             error_reply(q.op, q.tag, q.subshell, was ? routing_errc::subshell_deleted : routing_errc::unknown_subshell,
                         was ? "already deleted" : "no such subshell was ever created"));
    }
    if (c.failure) answer_failed_create(c.waiter, q.tag, q.subshell, c.failure);  // it is gone now
  }

  // Stops a child (never waits for it) and gives it to the reaper, which joins its thread,
  // then (for a control-channel delete) answers.
  void retire(std::unique_ptr<subshell> s, stop_mode mode, routing_errc code, bool reply, std::uint64_t tag) {
    // [C1] release: the code is visible to the tasks that stop(cancel) turns away.
    if (mode == stop_mode::cancel) s->cancel_code.store(static_cast<std::uint8_t>(code), std::memory_order_release);
    s->ex->stop(mode);
    (void)reaper_.post([this, s = std::move(s), reply, tag]() mutable {
      const subshell_id id = s->id;
      s->own_ex.reset();  // joins the subshell's thread: its last message is answered
      s.reset();
      if (reply) answer(nullptr, false, control_reply{control_op::delete_subshell, tag, id, {}, std::nullopt});
    });
  }

  // Router thread, once both inboxes are closed and drained: stop every child the same way,
  // let the parent's pending tasks answer router_stopped on cancel, and have the reaper close
  // the outboxes once all is answered.
  void finish_routing() {
    const bool cancelled = cancel_.load(std::memory_order_seq_cst);
    const stop_mode mode = cancelled ? stop_mode::cancel : stop_mode::drain;
    for (auto& entry : table_) retire(std::move(entry.second), mode, routing_errc::router_stopped, false, 0);
    table_.clear();
    cached_id_ = parent_subshell;
    if (cancelled)  // [C1] release: as in retire()
      parent_.cancel_code.store(static_cast<std::uint8_t>(routing_errc::router_stopped), std::memory_order_release);
    const std::uint64_t parent_accepted = parent_.accepted_local;
    (void)reaper_.post([this, parent_accepted] { finish(parent_accepted); });
    routing_done_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    state_wait_.notify_all();
  }

  // Reaper thread, after every child was joined: waits for the parent's answers, then closes.
  void finish(std::uint64_t parent_accepted) {
    // [A2] the loads are seq_cst (acquire): pair with [A1]; every parent reply is pushed.
    detail::park_until(detail::router_settle_parker(&parent_),
                       [&] { return parent_.answered.load(std::memory_order_seq_cst) == parent_accepted; },
                       detail::no_deadline);
    outbox_.close();
    control_out_.close();
    finished_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    state_wait_.notify_all();
    finished_source_.request_stop();  // a join() running the parent returns
    reaper_.stop(stop_mode::drain);
  }

  bool wait_finished(detail::steady_time deadline) {
    if (is_finished()) return true;
    if (!is_stopped())
      throw std::logic_error("tether: join() on router '" + name_ + "' before shutdown(): it would wait forever");
    if (detail::router_child_thread_of == this)
      throw deadlock_error("tether: join() on router '" + name_ + "' from " + detail::describe_this_thread() +
                               ", one of its own child subshells, would wait for itself (the router joins its "
                               "subshells); call shutdown() there and join() elsewhere",
                           {name_});
    if (parent_.ex->running_in_this_thread() && !drive_parent(deadline)) return false;
    return detail::park_until(state_wait_, [this] { return finished_.load(std::memory_order_seq_cst); }, deadline);
  }

  // On the parent's owner thread the router's last parent tasks need this thread. join()
  // runs the parent until the router has finished (so a child blocked on the parent, e.g. in
  // parent.call(), still gets through); the timed forms run once what the router handed over.
  // false: the deadline passed.
  bool drive_parent(detail::steady_time deadline) {
    const auto handed_over = [this] { return routing_done_.load(std::memory_order_seq_cst); };
    const auto parent_settled = [this] {
      // relaxed: after handed_over(), whose seq_cst load ordered the router's last store.
      return parent_.answered.load(std::memory_order_seq_cst) == parent_.accepted.load(std::memory_order_relaxed);
    };
    try {
      if (deadline == detail::no_deadline) {
        (void)parent_.ex->run_until(finished_source_.get_token());
        return true;
      }
      if (!detail::park_until(state_wait_, handed_over, deadline)) return false;
      if (!parent_settled()) (void)parent_.ex->poll();
      return true;
    } catch (const std::logic_error&) {  // inside one of the parent's tasks: it cannot run here
      if (!detail::park_until(state_wait_, handed_over, deadline)) return false;
      if (parent_settled()) return true;  // nothing of ours is pending there
      throw deadlock_error("tether: join() on router '" + name_ + "' inside a task of its parent executor '" +
                               parent_.ex->name() +
                               "' would wait for the parent's own pending messages; call shutdown() there and "
                               "join() once the parent's task has returned",
                           {name_, parent_.ex->name()});
    }
  }

  const std::string name_;
  std::unique_ptr<detail::router_factory<Payload, Reply>> factory_;

  mpsc_queue<inbox_item> inbox_;           // any thread pushes; the router thread pops
  mpsc_queue<command> control_in_;         // any thread pushes; the router thread pops
  mpsc_queue<reply_type> outbox_;          // subshells (and the router) push; the client pops
  mpsc_queue<control_reply> control_out_;  // router, children, reaper push; the client pops

  subshell parent_;

  // Router thread only: the children, the last lookup, and the subshells with staged messages.
  std::unordered_map<std::uint64_t, std::unique_ptr<subshell>> table_;
  std::vector<subshell*> staged_;
  std::uint64_t next_id_ = 1;
  subshell_id cached_id_ = parent_subshell;
  subshell* cached_ = nullptr;

  // Set once by shutdown(); read by the router thread, is_stopped() and join().
  std::atomic<bool> stopping_{false};
  std::atomic<bool> cancel_{false};        // set by shutdown(cancel); read by the router thread
  std::atomic<bool> routing_done_{false};  // set once by the router thread when it hands over
  std::atomic<bool> finished_{false};      // set once by the reaper after closing the outboxes
  std::atomic<bool> thread_join_claimed_{false};
  detail::parker state_wait_;  // joiners wait here for routing_done_ / finished_
  std::stop_source finished_source_;  // stopped with finished_: ends a join() running the parent

  executor reaper_;     // joins the threads of deleted subshells; after what its tasks touch
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace tether
