// SPDX-License-Identifier: MIT
// tether/detail/router/engine.hpp - the engine behind tether::router: the inboxes and
// outboxes, the subshell table, routing, control serving, the reaper and the parent drive.
//
// router.hpp holds the contract; this holds how. Nothing here is public API.
//
// Threads: the router thread waits (a poller) on two inboxes - envelopes and direct control
// calls on the shell inbox, control requests on the control inbox - and owns the subshell
// table. It reads only an envelope's id; the messages one inbox batch holds for a subshell
// travel as one task (one queue push, at most one wake-up). A child subshell runs on its own
// executor's thread; the parent on the caller's executor. The reaper thread joins deleted
// subshells and, at the end, closes the outboxes.
//
// Exactly one reply per accepted message: each message is carried by a task (delivery)
// that, run, calls the handler and, destroyed unrun, answers with an error and the payload.
// Every step that could fail to allocate is followed by an answer that cannot be lost: an
// error reply that cannot be described for want of memory uses a preallocated one
// (routed_reply's fallback), and a reply push that cannot allocate a queue block is retried
// (the reply is late, never lost). The router thread catches what it calls (allocation, a
// thread start, a post) and answers the message or request concerned, then goes on serving.
// A Payload whose move may throw travels boxed (payload_box), so the router thread never
// moves one.
//
// Who may call what: as router.hpp says for the public calls; each member says who touches it.
//
// Memory ordering: a message crosses two single-consumer queues (inbox -> the subshell's
// executor) and its reply a third (the outbox); each hop is the queue's release publish and
// acquire take. [RA1]/[RA2] each subshell's `answered` count is raised (release) after the
// message's reply is pushed and its handler has returned; the reaper's acquire loads of it
// happen before it closes the outbox, so a receiver that sees replies() closed has every
// reply. [RC1]/[RC2] a cancel code is stored (release) before the executor stop that it
// explains and loaded (acquire) by the task it turns into an error reply.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../../errors.hpp"
#include "../../executor.hpp"
#include "../../mpsc_queue.hpp"
#include "../../result.hpp"
#include "../../router_messages.hpp"
#include "../../select.hpp"
#include "../platform/futex.hpp"
#include "../platform/thread_record.hpp"
#include "../select/source_access.hpp"
#include "../wait/call_slot.hpp"
#include "../wait/parker.hpp"
#include "subshell.hpp"

namespace tether::detail {

// Runs f until it does not throw std::bad_alloc, sleeping a little between tries: for the
// steps whose failure would lose an answer (an outbox push, a control reply). Memory comes
// back as the receiver takes replies; until then the answer is late, not lost.
template <class F>
void retry_on_bad_alloc(F&& f) noexcept {
  for (;;) {
    try {
      f();
      return;
    } catch (...) {  // only bad_alloc can come out of the steps given here
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

template <class Payload, class Reply>
class router_engine {
  using subshell = router_subshell<Payload, Reply>;
  using box = payload_box<Payload>;

 public:
  using reply_type = routed_reply<Payload, Reply>;
  using sender_type = reply_sender<Payload, Reply>;

  // Registers the inboxes with the router thread's poller and makes the parent's handler
  // here (exceptions propagate: nothing is started yet), then starts the router thread.
  router_engine(executor& parent, std::unique_ptr<router_factory<Payload, Reply>> factory, std::string name,
                bool subshell_metrics = false)
      : name_(std::move(name)),
        subshell_metrics_(subshell_metrics),
        factory_(std::move(factory)),
        parent_(this, parent_subshell, routing_errc::subshell_stopped),
        reaper_(executor_options{.name = name_ + "-reaper", .on_error = [](std::exception_ptr) {}}) {
    reply_type::warm_up();  // the preallocated error replies exist before any message
    poller_.add(inbox_).add(control_in_);
    parent_.ex = &parent;
    parent_.handler = factory_->make(parent_subshell);
    thread_ = std::thread([this] { thread_main(); });
  }

  router_engine(const router_engine&) = delete;
  router_engine& operator=(const router_engine&) = delete;

  // ---- the public calls (router.hpp delegates) -------------------------------------------------

  template <class P>
  push_result send(subshell_id id, P&& payload, std::uint64_t tag) {
    return inbox_.emplace(id, std::forward<P>(payload), tag) ? status::ok : status::closed;
  }

  template <class Request>
  push_result send_control(Request&& req) {
    return control_in_.emplace(std::forward<Request>(req), nullptr, false) ? status::ok : status::closed;
  }

  mpsc_queue<reply_type>& outbox() noexcept { return outbox_; }
  mpsc_queue<control_reply>& control_outbox() noexcept { return control_out_; }

  // A control request through the shell inbox, answered by the router thread. Never throws
  // for an outcome: a refusal is the reply's error (router_stopped once stopped).
  control_reply call(control_request req) {
    detail::call_slot<control_reply> slot;
    const control_request copy = req;
    command c(std::move(req), &slot, false);
    if (!inbox_.emplace(&c))
      return error_reply(copy.op, copy.tag, copy.subshell, routing_errc::router_stopped,
                         "the router is stopped and no longer accepts control requests");
    slot.wait(true);  // spin briefly first: the router thread answers promptly
    return slot.take();
  }

  bool stop(stop_mode mode) noexcept {
    if (mode == stop_mode::cancel) cancel_.store(true, std::memory_order_seq_cst);  // before the close: seen with it
    const bool first = !stopping_.exchange(true, std::memory_order_seq_cst);
    inbox_.close();
    control_in_.close();
    return first;
  }

  void join() {
    (void)wait_finished(no_deadline);
    bool expected = false;
    // acq_rel: one joiner claims the std::thread.
    if (thread_join_claimed_.compare_exchange_strong(expected, true, std::memory_order_acq_rel) && thread_.joinable())
      thread_.join();
    reaper_.join();
  }

  // true once finished; false at the deadline. See router::join().
  bool wait_finished(steady_time deadline) {
    if (is_finished()) return true;
    if (!is_stopped())
      throw std::logic_error("tether: join() on router '" + name_ + "' before stop(): it would wait forever");
    if (router_child_thread_of == this)
      throw deadlock_error("tether: join() on router '" + name_ + "' from " + describe_this_thread() +
                               ", one of its own child subshells, would wait for itself (the router joins its "
                               "subshells); call stop() there and join() elsewhere",
                           {name_});
    if (parent_.ex->running_in_this_thread() && !drive_parent(deadline)) return false;
    return park_until(state_wait_, [this] { return finished_.load(std::memory_order_seq_cst); }, deadline);
  }

  bool is_stopped() const noexcept { return stopping_.load(std::memory_order_seq_cst); }
  bool is_finished() const noexcept { return finished_.load(std::memory_order_seq_cst); }
  const std::string& name() const noexcept { return name_; }

  // reply_sender::send(): the handler's value. Exceptions (an allocation, Reply's move)
  // reach the handler, which then counts as having thrown before replying.
  void push_value(subshell& s, std::uint64_t tag, Reply&& r) { (void)outbox_.emplace(s.id, tag, std::move(r)); }

 private:
  // A control request: from send_control (waiter null: reply on control_out_), a direct call
  // (waiter: complete it) or the router itself (internal: no reply of its own).
  struct command {
    command(control_request&& r, call_slot<control_reply>* w, bool i, std::exception_ptr f = {}) noexcept
        : request(std::move(r)), waiter(w), internal(i), failure(std::move(f)) {}
    command(const control_request& r, call_slot<control_reply>* w, bool i) noexcept
        : request(r), waiter(w), internal(i) {}
    control_request request;
    call_slot<control_reply>* waiter;
    bool internal;
    // Internal removal of a subshell whose factory threw: the exception, for the create it
    // answers once the subshell is gone.
    std::exception_ptr failure;
  };

  // What the inbox carries: a message (its header and payload), or a direct control call
  // (ctl: the caller's command, on its stack until the call returns). Moving it never throws.
  struct inbox_item {
    template <class P>
    inbox_item(subshell_id s, P&& p, std::uint64_t t)
        : subshell(s), tag(t), payload(std::in_place, std::in_place, std::forward<P>(p)) {}
    explicit inbox_item(command* c) noexcept : ctl(c) {}
    subshell_id subshell{};
    std::uint64_t tag = 0;
    std::optional<box> payload;
    command* ctl = nullptr;
  };
  static_assert(std::is_nothrow_move_constructible_v<inbox_item>);

  // Whether an object is being destroyed by an exception that was not yet in flight when it
  // was made (its task's post threw).
  struct unwinding_probe {
    int at_birth = std::uncaught_exceptions();
    bool unwinding() const noexcept { return std::uncaught_exceptions() > at_birth; }
  };

  // The task that carries one message to its subshell: the reply obligation. Run, it calls
  // the handler; destroyed unrun (executor refused it, stop(cancel), or its post threw), it
  // answers with an error and hands the payload back. Either way, exactly one reply.
  struct delivery {
    delivery(subshell* s, std::uint64_t t, box&& p) noexcept : sub(s), tag(t), payload(std::move(p)) {}
    delivery(delivery&& o) noexcept : sub(std::exchange(o.sub, nullptr)), tag(o.tag), payload(std::move(o.payload)) {}
    delivery& operator=(delivery&&) = delete;
    void operator()() noexcept {
      subshell* s = std::exchange(sub, nullptr);
      s->owner->run_delivery(*s, tag, payload);
    }
    ~delivery() {
      if (sub != nullptr) sub->owner->answer_unrun(*sub, tag, payload, probe.unwinding());
    }
    subshell* sub;
    std::uint64_t tag;
    box payload;
    unwinding_probe probe;
  };

  // Several messages for one subshell from one inbox batch, as one task: one queue push and at
  // most one wake-up instead of one per message. Each message is answered as delivery's is;
  // destroyed part-way (stop(cancel), or its post threw), it answers the rest.
  struct delivery_batch {
    delivery_batch(subshell* s, std::vector<std::pair<std::uint64_t, box>>&& m) noexcept
        : sub(s), items(std::move(m)) {}
    delivery_batch(delivery_batch&& o) noexcept
        : sub(std::exchange(o.sub, nullptr)), items(std::move(o.items)), next(o.next) {}
    delivery_batch& operator=(delivery_batch&&) = delete;
    void operator()() noexcept {
      while (next < items.size()) {
        auto& [tag, payload] = items[next++];
        sub->owner->run_delivery(*sub, tag, payload);
      }
      sub = nullptr;
    }
    ~delivery_batch() {
      if (sub == nullptr) return;
      const bool failed = probe.unwinding();
      for (; next < items.size(); ++next) sub->owner->answer_unrun(*sub, items[next].first, items[next].second, failed);
    }
    subshell* sub;
    std::vector<std::pair<std::uint64_t, box>> items;
    std::size_t next = 0;  // the first message not yet run
    unwinding_probe probe;
  };

  // A child's first task: makes its handler on its own thread, then answers the create.
  struct init_job {
    init_job(router_engine* r, subshell* s, call_slot<control_reply>* w, std::uint64_t t) noexcept
        : owner(r), sub(s), waiter(w), tag(t) {}
    init_job(init_job&& o) noexcept : owner(o.owner), sub(std::exchange(o.sub, nullptr)), waiter(o.waiter), tag(o.tag) {}
    void operator()() noexcept { owner->init_subshell(*std::exchange(sub, nullptr), waiter, tag); }
    ~init_job() {
      if (sub != nullptr) owner->init_dropped(*sub, waiter, tag, probe.unwinding());
    }
    router_engine* owner;
    subshell* sub;
    call_slot<control_reply>* waiter;
    std::uint64_t tag;
    unwinding_probe probe;
  };

  // ---- replies (any thread that answers a message) ---------------------------------------------

  // Answers a message with an error, handing back its payload when given (and when moving it
  // into the reply works). Cannot fail: with no memory to describe the error, the reply is a
  // preallocated one; the push is retried until a queue block can be had.
  void push_error(subshell& s, std::uint64_t tag, routing_errc code, const char* why, box* back) noexcept {
    push_error(s.id, tag, code, why, back);
    s.failed.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  }
  // why == nullptr: the preallocated reply at once.
  void push_error(subshell_id id, std::uint64_t tag, routing_errc code, const char* why, box* back) noexcept {
    std::optional<reply_type> r;
    try {
      if (why == nullptr) throw std::bad_alloc();
      routing_error e(code, id, describe(id, why));
      if (back != nullptr) {
        try {
          r.emplace(id, tag, std::move(e), std::move(back->get()));
        } catch (...) {  // the payload's move (or the reply's allocation) threw: answer without it
          r.emplace(id, tag, routing_error(code, id, describe(id, std::string(why) + " (the payload could not be "
                                                                                     "handed back)")));
        }
      } else {
        r.emplace(id, tag, std::move(e));
      }
    } catch (...) {  // out of memory describing it
      r.reset();
      r.emplace(reply_type(id, tag, code));
    }
    retry_on_bad_alloc([&] { (void)outbox_.push(std::move(*r)); });
  }

  // The message is finished: its reply is out and no handler runs for it any more. The count
  // is the last touch of the router; only the parent's finish is waited for (children are
  // joined instead).
  void settle(subshell& s) noexcept {
    const bool parent = s.id.is_parent();
    const void* key = &s;
    s.answered.fetch_add(1, std::memory_order_release);  // [RA1] release: pairs with [RA2] in finish()
    if (parent) router_settle_parker(key).notify_all();
  }

  std::string describe(subshell_id id, const std::string& why) const {
    const std::string who = id.is_parent() ? std::string("the parent subshell") : id.to_string();
    return "tether: router '" + name_ + "': " + who + ": " + why;
  }

  static const char* reason(routing_errc code) noexcept {
    switch (code) {
      case routing_errc::subshell_deleted: return "the subshell was deleted; the message was not run";
      case routing_errc::subshell_stopped: return "its executor is stopped; the message was not run";  // see answer_unrun()
      case routing_errc::router_stopped: return "the router was stopped (cancel) before the message ran";
      case routing_errc::delivery_failed:
        return "the message could not be handed to its subshell (out of memory); it was not run";
      default: return to_string(code);
    }
  }

  // ---- the subshell side ---------------------------------------------------------------------

  // Subshell thread: runs one message (or answers it with the cancel code). Exactly one reply.
  void run_delivery(subshell& s, std::uint64_t tag, box& payload) noexcept {
    // [RC2] acquire: pairs with [RC1]; the cancel code is set before the stop it explains.
    if (const std::uint8_t c = s.cancel_code.load(std::memory_order_acquire); c != 0) {
      push_error(s, tag, routing_errc{c}, reason(routing_errc{c}), &payload);
      settle(s);
      return;
    }
    sender_type reply(this, &s, tag);
    s.begin_message();
    const char* failure = nullptr;
    std::exception_ptr thrown;
    try {
      if (s.handler) {
        s.handler->handle(std::move(payload.get()), reply);
      } else {
        failure = "the subshell has no handler (its factory threw)";
      }
    } catch (...) {
      thrown = std::current_exception();  // refers to the exception in flight: no allocation
    }
    s.end_message();
    if (!reply.replied()) {
      if (thrown) {
        push_handler_threw(s, tag, thrown);
      } else {
        push_error(s, tag, failure != nullptr ? routing_errc::handler_threw : routing_errc::no_reply,
                   failure != nullptr ? failure : "the handler returned without replying", nullptr);
      }
    }
    settle(s);
  }

  void push_handler_threw(subshell& s, std::uint64_t tag, const std::exception_ptr& thrown) noexcept {
    std::string what;
    try {
      try {
        std::rethrow_exception(thrown);
      } catch (const std::exception& e) {
        what = std::string("the handler threw: ") + e.what();
      } catch (...) {
        what = "the handler threw a non-standard exception";
      }
    } catch (...) {  // out of memory for the text: the preallocated reply says handler_threw
      push_error(s, tag, routing_errc::handler_threw, nullptr, nullptr);
      return;
    }
    push_error(s, tag, routing_errc::handler_threw, what.c_str(), nullptr);
  }

  // Any thread: a delivery destroyed unrun; failed: because its post threw.
  void answer_unrun(subshell& s, std::uint64_t tag, box& payload, bool failed) noexcept {
    // [RC2] acquire: as in run_delivery().
    const std::uint8_t c = s.cancel_code.load(std::memory_order_acquire);
    const routing_errc code = failed ? routing_errc::delivery_failed : c != 0 ? routing_errc{c} : s.unrun_code;
    if (code == routing_errc::subshell_stopped) {  // name the executor
      std::string why;
      try {
        why = "its executor '" + s.ex->name() + "' is stopped; the message was not run";
      } catch (...) {  // out of memory: the short form
      }
      push_error(s, tag, code, why.empty() ? reason(code) : why.c_str(), &payload);
    } else {
      push_error(s, tag, code, reason(code), &payload);
    }
    settle(s);
  }

  // Child thread: makes the handler, answers the create.
  void init_subshell(subshell& s, call_slot<control_reply>* waiter, std::uint64_t tag) noexcept {
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
    // The router removes it, then answers the create. Stopping, the router stops it anyway:
    // answer here. The exception moves with the request (a closed queue leaves it here), so
    // the thread that reads it also drops the last reference: libstdc++ counts exception_ptr
    // references with atomics ThreadSanitizer does not see, and would report this thread
    // freeing the exception after the router read it.
    bool queued = false;
    try {
      queued = static_cast<bool>(
          control_in_.emplace(control_request::remove(s.id, stop_mode::drain, tag), waiter, true, std::move(failure)));
    } catch (...) {  // out of memory: answer here; the subshell stays, without a handler
    }
    if (!queued) answer_failed_create(waiter, tag, s.id, failure);
  }

  void answer_failed_create(call_slot<control_reply>* waiter, std::uint64_t tag, subshell_id id,
                            const std::exception_ptr& failure) noexcept {
    std::string what = "the handler factory threw";
    try {
      try {
        if (failure) std::rethrow_exception(failure);
      } catch (const std::exception& e) {
        what += std::string(": ") + e.what();
      } catch (...) {
      }
    } catch (...) {  // out of memory for the text: keep what we have
    }
    answer(waiter, false, error_reply(control_op::create_subshell, tag, id, routing_errc::create_failed, what));
  }

  // Any thread: a child's init task destroyed unrun (deleted, stopped with cancel, or its post
  // threw).
  void init_dropped(subshell& s, call_slot<control_reply>* waiter, std::uint64_t tag, bool failed) noexcept {
    const std::uint8_t c = s.cancel_code.load(std::memory_order_acquire);  // [RC2] acquire: as above
    const routing_errc code = failed ? routing_errc::create_failed : c != 0 ? routing_errc{c} : routing_errc::router_stopped;
    answer(waiter, false,
           error_reply(control_op::create_subshell, tag, s.id, code,
                       failed ? "its first task could not be queued (out of memory)" : reason(code)));
  }

  // An error answer to a control request. Cannot fail: retried while memory is short.
  control_reply error_reply(control_op op, std::uint64_t tag, subshell_id id, routing_errc code,
                            std::string_view why) const noexcept {
    std::optional<control_reply> r;
    retry_on_bad_alloc([&] {
      r.emplace(control_reply{op, tag, id, {}, routing_error(code, id, describe(id, std::string(why)))});
    });
    return std::move(*r);
  }

  // Completes a control request: the direct caller's slot, or the control outbox.
  void answer(call_slot<control_reply>* waiter, bool internal, control_reply&& r) noexcept {
    if (waiter != nullptr) {
      waiter->run([&r]() noexcept -> control_reply { return std::move(r); });
    } else if (!internal) {
      retry_on_bad_alloc([&] { (void)control_out_.push(std::move(r)); });
    }
  }

  // ---- the router thread -----------------------------------------------------------------------

  void thread_main() noexcept {
    try {
      set_this_thread_name(name_);
    } catch (...) {  // a name is a courtesy
    }
    const source_id inbox_id = source_id::of(inbox_);
    bool inbox_open = true;
    bool control_open = true;
    while (inbox_open || control_open) {
      const source_id ready = poller_.wait();
      if (ready == inbox_id) {
        if (!serve_inbox()) {
          poller_.remove(inbox_);
          inbox_open = false;
        }
      } else if (!serve_control()) {
        poller_.remove(control_in_);
        control_open = false;
      }
    }
    finish_routing();
  }

  // Routes up to a batch of envelopes, then hands each subshell its share as one task. false
  // once the inbox is closed and drained.
  bool serve_inbox() noexcept {
    // A bigger batch gives each subshell more messages per task (fewer wake-ups); a smaller one
    // lets a control request in sooner.
    constexpr std::size_t batch = 1024;
    bool open = true;
    if (inbox_.try_pop_each([this](inbox_item&& e) noexcept { route(std::move(e)); }, batch) < batch) {
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
  // A refused post (the parent's executor stopped) answers them from the task's destructor;
  // so does a post that throws (out of memory), with delivery_failed.
  void hand_over() noexcept {
    for (subshell* s : staged_) {
      if (s->staged.empty()) continue;  // listed twice, or its message could not be staged
      try {
        if (s->staged.size() == 1) {
          auto& [tag, payload] = s->staged.front();
          (void)s->ex->post(delivery(s, tag, std::move(payload)));
        } else {
          (void)s->ex->post(delivery_batch(s, std::move(s->staged)));
        }
      } catch (...) {  // the task's destructor answered its messages
      }
      s->staged.clear();  // moved from: make it empty for certain
    }
    staged_.clear();
  }

  bool serve_control() noexcept {
    constexpr std::size_t batch = 16;
    if (control_in_.try_pop_each([this](command&& c) noexcept { serve(c); }, batch) == batch) return true;
    pop_result<command> r = control_in_.try_pop();
    if (r) {
      serve(*r);
      return true;
    }
    return !r.is_closed();
  }

  // Reads the envelope's id, never its payload, and hands the payload on.
  void route(inbox_item&& e) noexcept {
    if (e.ctl != nullptr) {
      hand_over();  // the messages before it reach their subshells first (a delete drains them)
      serve(*e.ctl);
      return;
    }
    // relaxed: a cancel racing this message may go either way; the close after it is seq_cst.
    if (cancel_.load(std::memory_order_relaxed)) {
      push_error(e.subshell, e.tag, routing_errc::router_stopped,
                 "the router was stopped (cancel) before the message was routed", &*e.payload);
      return;
    }
    subshell* s = find(e.subshell);
    if (s == nullptr) {
      if (e.subshell.value() < next_id_)
        push_error(e.subshell, e.tag, routing_errc::subshell_deleted,
                   "the subshell was deleted; the message was not run", &*e.payload);
      else
        push_error(e.subshell, e.tag, routing_errc::unknown_subshell,
                   "no such subshell was ever created; the message was not run", &*e.payload);
      return;
    }
    try {
      if (s->staged.empty()) staged_.push_back(s);
      s->staged.emplace_back(e.tag, std::move(*e.payload));  // strong guarantee: a failure leaves e whole
    } catch (...) {
      push_error(e.subshell, e.tag, routing_errc::delivery_failed,
                 "the message could not be queued for its subshell (out of memory); it was not run", &*e.payload);
      return;
    }
    s->accepted.store(++s->accepted_local, std::memory_order_relaxed);  // relaxed: published by the post in hand_over()
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
  // so everything here works on a copy. Every request is answered once: what throws in here
  // (an allocation, a thread start) is answered as the request's error.
  void serve(const command& in) noexcept {
    const command c = in;
    const control_request& q = c.request;
    if (stopping_.load(std::memory_order_seq_cst) && !c.internal) {
      answer(c.waiter, false,
             error_reply(q.op, q.tag, q.subshell, routing_errc::router_stopped, "the router is stopped; request refused"));
      return;
    }
    switch (q.op) {
      case control_op::create_subshell: create(c); return;
      case control_op::delete_subshell: remove(c); return;
      case control_op::interrupt: interrupt(c); return;
      case control_op::list_subshells:
      case control_op::subshell_stats: {
        std::optional<control_reply> r;
        try {
          r.emplace(control_reply{q.op, q.tag, {}, {}, std::nullopt});
          if (q.op == control_op::subshell_stats) r->subshells.push_back(snapshot(parent_));
          std::vector<const subshell*> children;
          children.reserve(table_.size());
          for (const auto& entry : table_) children.push_back(entry.second.get());
          std::sort(children.begin(), children.end(), [](const subshell* a, const subshell* b) { return a->id < b->id; });
          for (const subshell* s : children) r->subshells.push_back(snapshot(*s));
        } catch (...) {
          answer(c.waiter, c.internal,
                 error_reply(q.op, q.tag, q.subshell, routing_errc::delivery_failed, "out of memory for the answer"));
          return;
        }
        answer(c.waiter, c.internal, std::move(*r));
        return;
      }
    }
    answer(c.waiter, c.internal,
           error_reply(q.op, q.tag, q.subshell, routing_errc::invalid_request, "unknown control operation"));
  }

  // Requests stop on the token of the message running on the subshell (the parent included);
  // ok also when none runs. Its stop callbacks run here, on the router thread.
  void interrupt(const command& c) noexcept {
    const control_request& q = c.request;
    subshell* s = find(q.subshell);
    if (s == nullptr) {
      const bool was = q.subshell.value() < next_id_;
      answer(c.waiter, c.internal,
             error_reply(q.op, q.tag, q.subshell, was ? routing_errc::subshell_deleted : routing_errc::unknown_subshell,
                         was ? "the subshell was deleted; nothing to interrupt" : "no such subshell was ever created"));
      return;
    }
    try {
      (void)s->interrupt();
    } catch (...) {
      answer(c.waiter, c.internal,
             error_reply(q.op, q.tag, q.subshell, routing_errc::delivery_failed, "out of memory for the stop state"));
      return;
    }
    answer(c.waiter, c.internal, control_reply{q.op, q.tag, q.subshell, {}, std::nullopt});
  }

  subshell_stats snapshot(const subshell& s) const {
    // relaxed (all four): statistics.
    return {s.id, s.ex->name(), s.accepted.load(std::memory_order_relaxed), s.answered.load(std::memory_order_relaxed),
            s.failed.load(std::memory_order_relaxed), s.busy(), s.ex->stats()};
  }

  // Starts the child's executor (the one thing here that takes a while: a thread start) and
  // queues its init task; the create is answered from the child's thread.
  void create(const command& c) noexcept {
    const subshell_id id{next_id_++};
    subshell* raw = nullptr;
    try {
      auto s = std::make_unique<subshell>(this, id, routing_errc::subshell_deleted);
      raw = s.get();
      s->own_ex = std::make_unique<executor>(executor_options{
          .name = id.to_string(),
          .on_start = [this] { router_child_thread_of = this; },
          .on_stop = [raw] { raw->handler.reset(); },  // the handler dies on its own thread
          .on_error = [](std::exception_ptr) {},       // its tasks never throw
          .metrics = subshell_metrics_,
      });
      s->ex = s->own_ex.get();
      table_.emplace(id.value(), std::move(s));  // on failure s (and its thread) go here
    } catch (const std::exception& e) {
      answer_create_failed(c, id, e.what());
      return;
    } catch (...) {
      answer_create_failed(c, id, "a non-standard exception");
      return;
    }
    try {
      (void)raw->ex->post(init_job(this, raw, c.waiter, c.request.tag));  // a fresh executor accepts
    } catch (...) {  // the init task's destructor answered the create: take the subshell out
      take_out(id, stop_mode::drain, routing_errc::subshell_deleted, false, 0);
    }
  }

  void answer_create_failed(const command& c, subshell_id id, const char* what) noexcept {
    std::string why;
    try {
      why = std::string("its thread could not be started: ") + what;
    } catch (...) {
    }
    answer(c.waiter, c.internal, error_reply(control_op::create_subshell, c.request.tag, id, routing_errc::create_failed, why));
  }

  void remove(const command& c) noexcept {
    const control_request& q = c.request;
    if (q.subshell.is_parent()) {
      answer(c.waiter, c.internal,
             error_reply(q.op, q.tag, q.subshell, routing_errc::invalid_request, "the parent subshell cannot be deleted"));
      return;
    }
    if (table_.find(q.subshell.value()) != table_.end()) {
      // A direct delete is answered now; one from the control channel once reaped.
      if (c.waiter != nullptr && !c.failure)
        answer(c.waiter, false, control_reply{q.op, q.tag, q.subshell, {}, std::nullopt});
      take_out(q.subshell, q.policy, routing_errc::subshell_deleted, c.waiter == nullptr && !c.internal, q.tag);
    } else if (!c.failure) {
      const bool was = q.subshell.value() < next_id_;
      answer(c.waiter, c.internal,
             error_reply(q.op, q.tag, q.subshell, was ? routing_errc::subshell_deleted : routing_errc::unknown_subshell,
                         was ? "already deleted" : "no such subshell was ever created"));
    }
    if (c.failure) answer_failed_create(c.waiter, q.tag, q.subshell, c.failure);  // it is gone now
  }

  // Takes a child out of the table and retires it.
  void take_out(subshell_id id, stop_mode mode, routing_errc code, bool reply, std::uint64_t tag) noexcept {
    const auto it = table_.find(id.value());
    if (it == table_.end()) return;
    std::unique_ptr<subshell> s = std::move(it->second);
    table_.erase(it);
    if (cached_id_ == id) cached_id_ = parent_subshell;
    retire(std::move(s), mode, code, reply, tag);
  }

  // Stops a child (never waits for it) and gives it to the reaper, which joins its thread,
  // then (for a control-channel delete) answers. If the reaper cannot take it (out of
  // memory), the calling thread reaps it.
  void retire(std::unique_ptr<subshell> s, stop_mode mode, routing_errc code, bool reply, std::uint64_t tag) noexcept {
    // [RC1] release: the code is visible to the tasks that stop(cancel) turns away.
    if (mode == stop_mode::cancel) {
      s->cancel_code.store(static_cast<std::uint8_t>(code), std::memory_order_release);
      interrupt_quietly(*s);  // the running handler's stop token: it may end early
    }
    s->ex->stop(mode);
    subshell* raw = s.release();
    bool posted = false;
    try {
      posted = static_cast<bool>(reaper_.post([this, raw, reply, tag]() noexcept { reap(raw, reply, tag); }));
    } catch (...) {
    }
    if (!posted) reap(raw, reply, tag);
  }

  // As interrupt(), for a cancel: out of memory for the stop state, the handler simply runs on.
  static void interrupt_quietly(subshell& s) noexcept {
    try {
      (void)s.interrupt();
    } catch (...) {
    }
  }

  void reap(subshell* raw, bool reply, std::uint64_t tag) noexcept {
    std::unique_ptr<subshell> s(raw);
    const subshell_id id = s->id;
    s->own_ex.reset();  // joins the subshell's thread: its last message is answered
    s.reset();
    if (reply) answer(nullptr, false, control_reply{control_op::delete_subshell, tag, id, {}, std::nullopt});
  }

  // Router thread, once both inboxes are closed and drained: stop every child the same way,
  // let the parent's pending tasks answer router_stopped on cancel, and have the reaper close
  // the outboxes once all is answered.
  void finish_routing() noexcept {
    const bool cancelled = cancel_.load(std::memory_order_seq_cst);
    const stop_mode mode = cancelled ? stop_mode::cancel : stop_mode::drain;
    for (auto& entry : table_) retire(std::move(entry.second), mode, routing_errc::router_stopped, false, 0);
    table_.clear();
    cached_id_ = parent_subshell;
    if (cancelled) {  // [RC1] release: as in retire()
      parent_.cancel_code.store(static_cast<std::uint8_t>(routing_errc::router_stopped), std::memory_order_release);
      interrupt_quietly(parent_);
    }
    const std::uint64_t parent_accepted = parent_.accepted_local;
    bool posted = false;
    try {
      posted = static_cast<bool>(reaper_.post([this, parent_accepted]() noexcept { finish(parent_accepted); }));
    } catch (...) {
    }
    routing_done_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    state_wait_.notify_all();
    if (!posted) finish(parent_accepted);  // the reaper could not take it: finish here
  }

  // Reaper thread (or the router thread), after every child was joined: waits for the
  // parent's answers, then closes.
  void finish(std::uint64_t parent_accepted) noexcept {
    // [RA2] the loads are seq_cst (acquire): pair with [RA1]; every parent reply is pushed.
    park_until(router_settle_parker(&parent_),
               [&] { return parent_.answered.load(std::memory_order_seq_cst) == parent_accepted; }, no_deadline);
    outbox_.close();
    control_out_.close();
    finished_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    state_wait_.notify_all();
    finished_source_.request_stop();  // a join() running the parent returns
    reaper_.stop(stop_mode::drain);
  }

  // On the parent's owner thread the router's last parent tasks need this thread. join()
  // runs the parent until the router has finished (so a child blocked on the parent, e.g. in
  // parent.call(), still gets through); the timed forms run once what the router handed over.
  // Inside one of the parent's tasks the parent cannot run here: then it only waits, unless
  // router messages are pending there (deadlock_error). false: the deadline passed.
  bool drive_parent(steady_time deadline) {
    const auto handed_over = [this] { return routing_done_.load(std::memory_order_seq_cst); };
    const auto parent_settled = [this] {
      // relaxed: after handed_over(), whose seq_cst load ordered the router's last store.
      return parent_.answered.load(std::memory_order_seq_cst) == parent_.accepted.load(std::memory_order_relaxed);
    };
    if (source_access::executor_in_run(*parent_.ex)) {
      if (!park_until(state_wait_, handed_over, deadline)) return false;
      if (parent_settled()) return true;  // nothing of ours is pending there
      throw deadlock_error("tether: join() on router '" + name_ + "' inside a task of its parent executor '" +
                               parent_.ex->name() +
                               "' would wait for the parent's own pending messages; call stop() there and "
                               "join() once the parent's task has returned",
                           {name_, parent_.ex->name()});
    }
    if (deadline == no_deadline) {
      (void)parent_.ex->run_until(finished_source_.get_token());
      return true;
    }
    if (!park_until(state_wait_, handed_over, deadline)) return false;
    if (!parent_settled()) (void)parent_.ex->try_run();
    return true;
  }

  const std::string name_;
  const bool subshell_metrics_;  // children's executors record metrics (router_options)
  std::unique_ptr<router_factory<Payload, Reply>> factory_;

  mpsc_queue<inbox_item> inbox_;           // any thread pushes; the router thread pops
  mpsc_queue<command> control_in_;         // any thread pushes; the router thread pops
  mpsc_queue<reply_type> outbox_;          // subshells (and the router) push; the client pops
  mpsc_queue<control_reply> control_out_;  // router, children, reaper push; the client pops
  poller poller_;                          // the router thread waits here on the two inboxes

  subshell parent_;

  // Router thread only: the children, the last lookup, and the subshells with staged messages.
  std::unordered_map<std::uint64_t, std::unique_ptr<subshell>> table_;
  std::vector<subshell*> staged_;
  std::uint64_t next_id_ = 1;
  subshell_id cached_id_ = parent_subshell;
  subshell* cached_ = nullptr;

  // Set once by stop(); read by the router thread, is_stopped() and join().
  std::atomic<bool> stopping_{false};
  std::atomic<bool> cancel_{false};        // set by stop(cancel); read by the router thread
  std::atomic<bool> routing_done_{false};  // set once by the router thread when it hands over
  std::atomic<bool> finished_{false};      // set once by the reaper after closing the outboxes
  std::atomic<bool> thread_join_claimed_{false};
  parker state_wait_;                 // joiners wait here for routing_done_ / finished_
  std::stop_source finished_source_;  // stopped with finished_: ends a join() running the parent

  executor reaper_;     // joins the threads of deleted subshells; after what its tasks touch
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace tether::detail
