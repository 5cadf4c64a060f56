// SPDX-License-Identifier: MIT
// tether/coroutine.hpp - C++20 coroutines on executors: sessions that wait without a thread.
//
//   tether::task<int> session(tether::confined<lua_vm>& vm, tether::executor& lua) {
//     int n = co_await tether::co_with(vm, [](lua_vm& l) { return l.eval("return 6*7"); });
//     co_await tether::schedule(lua);           // now on lua's owner thread
//     co_return n;
//   }
//   std::future<int> f = tether::spawn(sessions_ex, session(vm, lua));      // or a callback
//   int v = tether::sync_wait(session(vm, lua));                            // plain threads
//
// task<T> is lazy and move-only: nothing runs until it is started (spawn, sync_wait) or
// awaited by another task; exceptions propagate to whoever awaits or started it. A started
// task and every task it awaits form a chain that runs on one executor at a time, its home:
// spawn() sets it, schedule(ex) moves it, and every await resumes there - co_call(ex, f) runs
// f on ex's owner and comes back home with the value or the exception; co_pop(q) /
// co_recv(ep) take a queue's or channel endpoint's next item, co_push(bq, v) / co_send(ep, v)
// wait for room in a bounded queue or channel, without blocking a thread. An
// adopted executor can be a home too (its owner runs the frames in its run family, e.g.
// from a GUI loop).
//
// Cancellation: spawn() and sync_wait() take a std::stop_token, which every await of the
// chain observes (co_await get_stop_token() reads it); spawn() without one gives the chain
// its executor's get_stop_token(), so that stop(cancel) also frees the chains waiting on
// other executors. A co_call whose stop is requested
// before f ran resumes at once with operation_cancelled and f never runs; once f runs the
// frame waits for its result (f may use the frame's locals by reference).
//
// Nothing lost: a task either finishes (its value or exception reaches the future, the
// callback, the awaiting task or sync_wait's caller) or its chain is destroyed, every frame
// exactly once, and the starter learns executor_stopped. That happens when a resumption
// cannot run: the home stopped (stop(cancel) destroys it on the owner; a refused resumption
// destroys it on the owner while it drains, in the home's destructor once its owner has
// stopped, or - the home finished - on the thread that would have resumed it; see
// detail/coro/chain.hpp). A frame never resumes on an executor that refused it, and is
// never destroyed while its home's owner may still be running it. Executors must outlive the calls
// that target them (as for call()); a home may be destroyed while its chains wait elsewhere.
//
// Deadlocks: sync_wait() runs the chain on the calling thread; an await that needs another
// executor owned by that thread (schedule to it) would wait for itself: deadlock_error.
// co_call on the target's owner thread runs f inline (as call() does).
//
// Who may call what: spawn, sync_wait - any thread (sync_wait blocks it). The awaitables -
// inside a tether::task only (a static_assert says so otherwise).
// Memory ordering: every resumption is an executor hand-over (a release publish, the owner's
// acquire): what a frame did before it suspended happens-before what it does after.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdio>
#include <exception>
#include <functional>
#include <future>
#include <optional>
#include <stop_token>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "confined.hpp"
#include "detail/coro/call_state.hpp"
#include "detail/coro/chain.hpp"
#include "detail/coro/readable.hpp"
#include "detail/coro/room.hpp"
#include "detail/select/sources.hpp"
#include "errors.hpp"
#include "executor.hpp"
#include "mpsc_queue.hpp"
#include "bounded_mpsc_queue.hpp"
#include "channel.hpp"
#include "receiver.hpp"
#include "result.hpp"
#include "select.hpp"

namespace tether {

template <class T = void>
class task;

namespace detail {

template <class T>
struct outcome_of;

template <class P>
void require_chained() {
  static_assert(is_chained<P>, "tether: co_await this inside a tether::task (its promise carries the chain)");
}

// A task frame: where its result goes and whom to resume when it ends.
//
// Awaiting a task resumes it with a plain call, not a symmetric transfer: whether a transfer
// becomes a tail call is up to the optimiser (g++ below -O2 does not), and a loop of awaits
// whose tasks finish without suspending would then grow the stack with every round. Instead
// the awaiter and the finishing task meet at `finished` [TP1]: a task that ends inside the
// awaiter's call finds it unset and just returns (the awaiter goes on without suspending); one
// that ends later, resumed from elsewhere, finds it set and resumes the awaiter.
struct task_promise_base : chained_promise {
  std::coroutine_handle<> continuation;
  std::atomic<bool> finished{false};

  // Both sides call it once; true for the second.
  bool meet() noexcept { return finished.exchange(true, std::memory_order_acq_rel); }  // [TP1] acq_rel: orders the result

  std::suspend_always initial_suspend() noexcept { return {}; }
  struct final_awaiter {
    bool await_ready() noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      task_promise_base& p = h.promise();
      return p.meet() ? p.continuation : std::noop_coroutine();
    }
    void await_resume() noexcept {}
  };
  final_awaiter final_suspend() noexcept { return {}; }
};

// Starts child (awaited by parent) and reports whether parent must stay suspended.
template <class Child, class P>
bool start_awaited(std::coroutine_handle<Child> child, std::coroutine_handle<P> parent) {
  coro_chain& c = *parent.promise().chain;
  executor* const home = c.home;
  child.promise().chain = &c;
  child.promise().continuation = parent;
  child.resume();
  if (!child.promise().meet()) return true;  // still running: it resumes parent when it ends
  if (c.home == home) return false;          // ended here: go on
  // It moved the chain (schedule) and ended there before we got here: go on there too.
  resume_on(c, parent);
  return true;
}

template <class T>
struct task_promise : task_promise_base {
  tether::task<T> get_return_object() noexcept;
  template <class U = T>
  void return_value(U&& v) {
    result.template emplace<1>(std::forward<U>(v));
  }
  void unhandled_exception() noexcept { result.template emplace<2>(std::current_exception()); }
  // Moves the exception out: the frame may be destroyed on another thread after the starter
  // is done with it, and the last reference to an exception should not be dropped there.
  T take() {
    if (result.index() == 2) std::rethrow_exception(std::exchange(std::get<2>(result), nullptr));
    return std::move(std::get<1>(result));
  }
  std::variant<std::monostate, T, std::exception_ptr> result;
};

template <>
struct task_promise<void> : task_promise_base {
  tether::task<void> get_return_object() noexcept;
  void return_void() noexcept {}
  void unhandled_exception() noexcept { error = std::current_exception(); }
  void take() {
    if (error) std::rethrow_exception(std::exchange(error, nullptr));  // as above
  }
  std::exception_ptr error;
};

}  // namespace detail

// A lazy coroutine returning T. Move-only; co_await it (once) inside another task, or start it
// with spawn() / sync_wait(). Destroying a task that never started destroys its frame.
template <class T>
class [[nodiscard]] task {
 public:
  using promise_type = detail::task_promise<T>;
  using value_type = T;

  task() noexcept = default;
  task(task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  task& operator=(task&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;
  ~task() {
    if (h_) h_.destroy();
  }

  // false for a default-constructed or moved-from task.
  bool valid() const noexcept { return static_cast<bool>(h_); }

  // Awaiting a task runs it on the awaiting chain (same home, same stop token) and gives
  // its value or rethrows its exception.
  auto operator co_await() && noexcept { return awaiter{h_}; }
  auto operator co_await() & noexcept { return awaiter{h_}; }

 private:
  friend promise_type;
  friend struct detail::outcome_of<T>;
  using handle = std::coroutine_handle<promise_type>;
  explicit task(handle h) noexcept : h_(h) {}

  struct awaiter {
    handle child;
    bool await_ready() const {
      if (!child) throw std::logic_error("tether::task: co_await of an empty (moved-from) task");
      return false;
    }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> parent) {
      detail::require_chained<P>();
      return detail::start_awaited(child, parent);
    }
    T await_resume() { return child.promise().take(); }
  };

  handle h_;
};

namespace detail {

template <class T>
tether::task<T> task_promise<T>::get_return_object() noexcept {
  return tether::task<T>(std::coroutine_handle<task_promise<T>>::from_promise(*this));
}
inline tether::task<void> task_promise<void>::get_return_object() noexcept {
  return tether::task<void>(std::coroutine_handle<task_promise<void>>::from_promise(*this));
}

// How a started task reports: deliver() once with its outcome, or - if the chain is destroyed
// first - the destructor reports executor_stopped.
struct completion_base {
  bool pending = true;  // false once delivered, or when a refused start destroys the frame
};

template <class T, class Done>
struct completion : completion_base {
  explicit completion(Done&& d) : done(std::move(d)) {}
  completion(completion&& o) : completion_base{std::exchange(o.pending, false)}, done(std::move(o.done)) {}
  Done done;
  void deliver(task_result<T>&& r) noexcept {
    pending = false;
    done(std::move(r));
  }
  ~completion() {
    if (pending)
      done(task_result<T>(std::make_exception_ptr(executor_stopped(
          "tether: a coroutine was destroyed before it finished: its executor stopped while it was suspended"))));
  }
};

// The root frame of a chain: holds the chain, awaits the user's task, reports.
struct root_frame {
  struct promise_type : chained_promise {
    coro_chain storage;
    completion_base* report;  // the frame's copy of run_root's completion
    template <class Task, class C>
    promise_type(Task&, C& c) noexcept : report(&c) {
      chain = &storage;
    }
    root_frame get_return_object() noexcept { return {std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }  // the body catches everything
  };
  std::coroutine_handle<promise_type> h;
};

// Awaits a task and gives its outcome as a task_result (never throws).
template <class T>
struct outcome_of {
  tether::task<T> t;
  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> parent) {
    return start_awaited(std::coroutine_handle<task_promise<T>>::from_address(handle_address()), parent);
  }
  task_result<T> await_resume() noexcept {
    auto child = std::coroutine_handle<task_promise<T>>::from_address(handle_address());
    try {
      if constexpr (std::is_void_v<T>) {
        child.promise().take();
        return task_result<T>();
      } else {
        return task_result<T>(std::in_place, child.promise().take());
      }
    } catch (...) {
      return task_result<T>(std::current_exception());
    }
  }
  void* handle_address() noexcept {
    if (!addr) addr = std::exchange(t.h_, {}).address();
    return addr;
  }
  ~outcome_of() {
    if (addr) std::coroutine_handle<>::from_address(addr).destroy();
  }
  void* addr = nullptr;
};

template <class T, class Done>
root_frame run_root(tether::task<T> t, completion<T, Done> c) {
  outcome_of<T> awaited{std::move(t)};  // a named awaitable: g++ 12 mishandles temporaries here
  task_result<T> r = co_await awaited;
  c.deliver(std::move(r));
}

// Starts a chain on `home`: posts its first resumption. Refused: the frames are destroyed
// (they never ran) and false is returned.
template <class T, class Done>
bool start_chain(executor& home, tether::task<T>&& t, Done&& done, std::stop_token token) {
  if (!t.valid()) throw std::logic_error("tether: starting an empty (moved-from) task");
  root_frame root = run_root<T, std::decay_t<Done>>(std::move(t), completion<T, std::decay_t<Done>>(std::forward<Done>(done)));
  coro_chain& c = root.h.promise().storage;
  c.root = root.h;
  c.token = std::move(token);
  try {
    move_home(c, home);
    resume_job job(root.h, &c);
    if (coro_access::as_gate(c.home_gate).post(std::move(job), source_location::current())) return true;
    job.h = {};  // refused: not moved from
  } catch (...) {
    root.h.promise().report->pending = false;  // never started: the caller hears it, nobody else
    root.h.destroy();
    throw;
  }
  root.h.promise().report->pending = false;
  root.h.destroy();
  return false;
}

}  // namespace detail

// Starts t on ex; the future receives its value or exception (executor_stopped if the chain
// is destroyed unfinished). Throws executor_stopped once ex is stopped (t is destroyed
// unstarted). Never blocks. Thread-safe.
template <class T>
std::future<T> spawn(executor& ex, tether::task<T> t, std::stop_token token = {}) {
  std::promise<T> p;
  std::future<T> f = p.get_future();
  struct to_future {
    std::promise<T> p;
    void operator()(task_result<T>&& r) noexcept {
      // Nothing of the result stays here once the future has it: the waiter may be done with
      // it before this thread lets go, and then this thread would free it.
      std::promise<T> mine = std::move(p);
      try {
        if (!r) {
          std::exception_ptr e = r.error();
          r = task_result<T>(std::exception_ptr{});
          mine.set_exception(std::move(e));
        } else if constexpr (std::is_void_v<T>) {
          mine.set_value();
        } else {
          mine.set_value(std::move(r).value());
        }
      } catch (...) {  // T's move threw
        try { mine.set_exception(std::current_exception()); } catch (...) {}  // already satisfied
      }
    }
  };
  if (!token.stop_possible()) token = ex.get_stop_token();
  if (!detail::start_chain(ex, std::move(t), to_future{std::move(p)}, std::move(token)))
    throw executor_stopped("tether: spawn() on executor '" + (ex.name().empty() ? std::string("(unnamed)") : ex.name()) +
                           "', which is stopped");
  return f;
}

// Starts t on ex; on_done(task_result<T>&&) runs once with its outcome, on the chain's home
// when it finishes there (or on the thread that destroys an unfinished chain, with
// executor_stopped). An exception escaping on_done goes to ex's on_error when it can
// still take it, else is written to stderr and dropped. Returns closed once ex is stopped
// (on_done not called; t destroyed unstarted). Never blocks. Thread-safe.
template <class T, class F>
  requires std::is_invocable_v<std::decay_t<F>&, task_result<T>&&>
push_result spawn(executor& ex, tether::task<T> t, F&& on_done, std::stop_token token = {}) {
  struct to_callback {
    std::decay_t<F> fn;
    std::shared_ptr<void> gate;  // ex's: stays valid, refusing, if ex is destroyed meanwhile
    void operator()(task_result<T>&& r) noexcept {
      try {
        std::invoke(fn, std::move(r));
      } catch (...) {
        auto e = std::current_exception();
        try {
          if (detail::coro_access::as_gate(gate).post([e] { std::rethrow_exception(e); }, source_location::current()))
            return;
        } catch (...) {
        }
        std::fputs("tether: a spawn() completion threw after its executor stopped; the exception is dropped\n", stderr);
      }
    }
  };
  if (!token.stop_possible()) token = ex.get_stop_token();
  return detail::start_chain(ex, std::move(t), to_callback{std::forward<F>(on_done), detail::coro_access::gate_of(ex)}, std::move(token))
             ? push_result(status::ok)
             : push_result(status::closed);
}

// Awaitable: resumes the awaiting frame on ex's owner thread; ex becomes the chain's home.
// Throws executor_stopped (staying where it was) if ex is stopped; deadlock_error if ex's
// owner is this thread, blocked in sync_wait() under the awaiting chain.
class schedule {
 public:
  explicit schedule(executor& ex) noexcept : ex_(ex) {}
  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    detail::require_chained<P>();
    detail::coro_chain& c = *h.promise().chain;
    if (c.home != &ex_ && detail::sync_wait_depth > 0 && ex_.running_in_this_thread())
      throw deadlock_error("tether: co_await schedule(executor '" + name() +
                               "') inside sync_wait() on that executor's own owner thread would wait for itself: "
                               "sync_wait blocks the thread that must run it (spawn the task instead)",
                           {name()});
    if (ex_.is_stopped()) {
      refused_ = true;
      return false;
    }
    executor* const before = c.home;
    std::shared_ptr<void> before_gate = c.home_gate;
    detail::move_home(c, ex_);
    detail::resume_job job(h, &c);
    bool ok = false;
    try {
      ok = static_cast<bool>(detail::coro_access::as_gate(c.home_gate).post(std::move(job), source_location::current()));
    } catch (...) {
      job.h = {};
      c.home = before;
      c.home_gate = std::move(before_gate);
      throw;
    }
    if (ok) return true;
    job.h = {};  // refused (stopped meanwhile): stay where we were
    c.home = before;
    c.home_gate = std::move(before_gate);
    refused_ = true;
    return false;
  }
  void await_resume() const {
    if (refused_) throw executor_stopped("tether: co_await schedule(executor '" + name() + "'): the executor is stopped");
  }

 private:
  std::string name() const { return ex_.name().empty() ? std::string("(unnamed)") : ex_.name(); }
  executor& ex_;
  bool refused_ = false;
};

// Awaitable: the chain's stop token (from spawn / sync_wait).
struct get_stop_token {
  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    detail::require_chained<P>();
    token_ = h.promise().chain->token;
    return false;
  }
  std::stop_token await_resume() noexcept { return std::move(token_); }
  std::stop_token token_;
};

namespace detail {

// co_call's awaiter; see call_state.hpp.
template <class F, class R>
class call_awaiter {
 public:
  template <class G>
  call_awaiter(executor& ex, G&& g, const source_location& loc) : ex_(ex), fn_(std::forward<G>(g)), loc_(loc) {}
  call_awaiter(call_awaiter&&) = delete;
  ~call_awaiter() {
    if (chain_ != nullptr) disarm_stop(*chain_, hook_);
    edge_.reset();
    if (state_ != nullptr) state_->unref();
  }

  bool await_ready() const noexcept { return false; }

  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    require_chained<P>();
    coro_chain& c = *h.promise().chain;
    if (ex_.running_in_this_thread()) {  // inline, as call()
      mode_ = ex_.is_stopped() ? mode::stopped : mode::run_inline;
      return false;
    }
    if (c.token.stop_requested()) {  // a stop already requested: never queued
      mode_ = mode::cancelled;
      return false;
    }
    if (sync_wait_depth > 0) coro_access::enter_wait(ex_, edge_);  // this thread waits: see sync_wait()
    auto* s = new call_state<F, R>(std::move(*fn_));
    fn_.reset();
    s->frame = h;
    s->chain = &c;
    s->home = &coro_access::as_gate(c.home_gate);
    s->target_name = ex_.name().empty() ? "(unnamed)" : ex_.name().c_str();
    state_ = s;
    mode_ = mode::queued;
    if (c.token.stop_possible()) {  // a token that can never stop costs nothing
      hook_.fire = &call_canceller<F, R>::fire;
      hook_.target = s;
      chain_ = &c;
      arm_stop(c, hook_);  // may cancel at once
    }
    if (s->phase.load(std::memory_order_acquire) == call_phase::pending) {  // acquire: pairs with [CA1]
      call_job<F, R> job(s);
      try {
        (void)ex_.post(std::move(job), loc_);  // refused: the job's destructor reports it
      } catch (...) {                          // out of memory: not queued
        if (call_state<F, R>* mine = std::exchange(job.state, nullptr)) {
          if (mine->decide(call_phase::refused)) {
            mine->out.fail(std::current_exception());
            mine->finish();
          }
          mine->unref();
        }
      }
    } else {
      s->unref();  // the job's reference: never queued
    }
    return !s->arrive();  // the outcome came first: go on without suspending
  }

  R await_resume() {
    switch (mode_) {
      case mode::run_inline:
        return std::invoke(std::move(*fn_));
      case mode::stopped:
        throw executor_stopped("tether: co_call() on executor '" + ex_.name() + "', which is stopped");
      case mode::cancelled:
        throw operation_cancelled("tether: co_call() on executor '" + ex_.name() +
                                  "' was cancelled by its stop token before it ran; it will not run");
      case mode::queued:
        break;
    }
    if (coro_chain* c = std::exchange(chain_, nullptr)) disarm_stop(*c, hook_);  // waits out a callback still firing
    edge_.reset();
    return state_->take();
  }

 private:
  executor& ex_;
  std::optional<F> fn_;
  source_location loc_;
  call_state<F, R>* state_ = nullptr;
  stop_hook hook_;                 // armed on the chain while queued (arm_stop)
  coro_chain* chain_ = nullptr;    // set while hook_ is armed (the token can stop)
  std::optional<blocking_call> edge_;  // only under sync_wait()
  enum class mode : std::uint8_t { queued, run_inline, stopped, cancelled } mode_ = mode::queued;
};

}  // namespace detail

// Awaitable: runs f() on ex's owner thread and resumes the awaiting frame at home with its
// value (or rethrows its exception). On ex's owner thread f runs inline. Throws
// executor_stopped when ex is stopped or destroys the call unrun, operation_cancelled when
// the chain's stop token is triggered before f ran (f never runs). f is moved into the call.
template <class F>
auto co_call(executor& ex, F&& f, const source_location& loc = source_location::current()) {
  using Fn = std::decay_t<F>;
  using R = std::invoke_result_t<Fn&&>;
  return detail::call_awaiter<Fn, R>(ex, std::forward<F>(f), loc);
}

// Awaitable: co_call() of f(T&) on the confined object's owner.
template <class T, class F>
auto co_with(confined<T>& obj, F&& f, const source_location& loc = source_location::current()) {
  return co_call(
      obj.get_executor(),
      [&obj, fn = std::forward<F>(f)]() mutable -> decltype(auto) { return std::invoke(std::move(fn), obj.local()); },
      loc);
}

namespace detail {

// The awaited receive: take what is there; else suspend until the source notifies (a push or
// the close) or the chain's stop is requested, and try again.
template <class T, class Source, class Take>
tether::task<pop_result<T>> receive(Source& src, Take take) {
  auto& rx = rx_of(src);
  for (;;) {
    pop_result<T> r = take(src);
    if (r.status() != status::empty) co_return std::move(r);
    tether::get_stop_token ask;
    const std::stop_token token = co_await ask;
    if (token.stop_requested()) co_return status::cancelled;
    readable<std::remove_reference_t<decltype(rx)>> wait(rx);  // named: see run_root
    co_await wait;
  }
}

}  // namespace detail

// Awaitables: the queue's (or endpoint's) next item, without blocking a thread - pop_result:
// the value, closed once closed and drained, or cancelled when the chain's stop is requested
// first (an item already there is still taken). The awaiting frame is the source's one
// consumer; a source that a poller watches, or another frame awaits, throws std::logic_error.
// The source must outlive the await.
template <class T>
tether::task<pop_result<T>> co_pop(mpsc_queue<T>& q) {
  return detail::receive<T>(q, [](mpsc_queue<T>& s) { return s.try_pop(); });
}
template <class T>
tether::task<pop_result<T>> co_pop(bounded_mpsc_queue<T>& q) {
  return detail::receive<T>(q, [](bounded_mpsc_queue<T>& s) { return s.try_pop(); });
}
template <class T>
tether::task<pop_result<T>> co_pop(receiver<T>& r) {
  return detail::receive<T>(r, [](receiver<T>& s) { return s.try_pop(); });
}
template <class S, class R>
tether::task<pop_result<R>> co_recv(endpoint<S, R>& e) {
  return detail::receive<R>(e, [](endpoint<S, R>& s) { return s.try_recv(); });
}

namespace detail {

// The queue a full sender waits on for room: the bounded queue itself, or a channel
// direction's (only a bounded one is ever full).
template <class T>
bounded_mpsc_queue<T>& room_queue(bounded_mpsc_queue<T>& q) noexcept { return q; }
template <class T>
bounded_mpsc_queue<T>& room_queue(channel_direction<T>& d) noexcept { return *d.bounded(); }

// The awaited push: try it; when full, suspend until the consumer makes room (or the queue
// closes, or the chain's stop is requested) and try again. v is used only by the push that
// succeeds.
template <class T, class Tx, class V>
tether::task<push_result> send_with_room(Tx& tx, V&& v) {
  for (;;) {
    push_result r = tx.try_push(std::forward<V>(v));  // full: v untouched
    if (r.status() != status::full) co_return r;
    tether::get_stop_token ask;
    const std::stop_token token = co_await ask;
    if (token.stop_requested()) co_return status::cancelled;
    room_in<bounded_mpsc_queue<T>> wait(room_queue(tx));  // named: see run_root
    co_await wait;
  }
}

}  // namespace detail

// Awaitables: push v into a bounded queue (or send it on a channel endpoint), waiting without
// a thread while it is full - push_result ok, closed, or cancelled when the chain's stop is
// requested first; on every outcome but ok v is untouched (moved from only by the push that
// succeeds), so the caller keeps what was not delivered. Any number of frames (and threads)
// may wait for room on one queue; each wake-up of the producers resumes them all and each
// tries again. v is taken by reference: co_await the task in the expression that creates it
// (as `co_await co_push(q, std::move(m))`), so that v outlives the await. The queue (the
// channel) must outlive the await. An unbounded channel never waits.
template <class T>
tether::task<push_result> co_push(bounded_mpsc_queue<T>& q, std::type_identity_t<T>&& v) {
  return detail::send_with_room<T>(q, std::move(v));
}
template <class T>
tether::task<push_result> co_push(bounded_mpsc_queue<T>& q, const std::type_identity_t<T>& v) {
  return detail::send_with_room<T>(q, v);
}
template <class S, class R>
tether::task<push_result> co_send(endpoint<S, R>& e, std::type_identity_t<S>&& v) {
  return detail::send_with_room<S>(detail::source_access::tx_direction(e), std::move(v));
}
template <class S, class R>
tether::task<push_result> co_send(endpoint<S, R>& e, const std::type_identity_t<S>& v) {
  return detail::send_with_room<S>(detail::source_access::tx_direction(e), v);
}

namespace detail {

// The awaited poller wait: a ready source now (run_one: its handler run here, on the home);
// else suspend until a source turns ready or the chain's stop is requested, and look again.
template <class Poller>
tether::task<pop_result<source_id>> poller_wait(Poller& p, bool run) {
  auto& core = coro_access::core_of(p);
  if (core.watches_fds_or_executors())
    throw std::logic_error(
        "tether: co_wait / co_run_one on a poller that watches descriptors or executors (their readiness does "
        "not notify an awaiting frame); wait on it from a thread, or watch them from the frame's home executor");
  for (;;) {
    pop_result<source_id> r = run ? p.try_run_one() : p.try_wait();
    if (r) co_return std::move(r);
    tether::get_stop_token ask;
    const std::stop_token token = co_await ask;
    if (token.stop_requested()) co_return status::cancelled;
    readable<poller_core> wait(core);  // named: see run_root
    co_await wait;
  }
}

}  // namespace detail

// Awaitables: a poller's next ready source (co_run_one also receives one message from it and
// runs its handler, on the frame's home thread), or cancelled when the chain's stop is
// requested first. The awaiting frame is the poller's waiting thread; a poller watching
// descriptors or executors throws std::logic_error (wait on those from a thread).
// (Templates, like every coroutine here: a translation unit that never awaits one compiles none.)
template <class Poller>
  requires std::is_same_v<Poller, poller>
tether::task<pop_result<source_id>> co_wait(Poller& p) {
  return detail::poller_wait(p, false);
}
template <class Poller>
  requires std::is_same_v<Poller, poller>
tether::task<pop_result<source_id>> co_run_one(Poller& p) {
  return detail::poller_wait(p, true);
}

// Runs t to its end on the calling thread and returns its value (rethrows its exception).
// The chain's home is an executor that this call drives; awaits that need another thread
// suspend it until they resume it here. Blocks. Any thread, including an executor's owner
// inside a task (that executor then runs nothing until this returns: see schedule()).
template <class T>
T sync_wait(tether::task<T> t, std::stop_token token = {}) {
  std::optional<task_result<T>> out;
  {
    executor here{adopt_current_thread, executor_options{.name = "tether::sync_wait"}};
    // Stops `here` on its own thread: the outcome may arrive on any thread (or from a chain
    // destroyed elsewhere), and only the owner may stop an executor it is about to destroy.
    struct stop_here : detail::deferred_destroy {
      executor* ex;
      static void run(detail::deferred_destroy* d) noexcept { static_cast<stop_here*>(d)->ex->stop(); }
    } stopper;
    stopper.ex = &here;
    stopper.destroy = &stop_here::run;
    struct into_out {
      std::optional<task_result<T>>* out;
      stop_here* stopper;
      std::shared_ptr<void> gate;
      void operator()(task_result<T>&& r) noexcept {
        out->emplace(std::move(r));
        // `here` runs until stopped, and is not destroyed before: the hand-over cannot fail.
        (void)detail::coro_access::as_gate(gate).defer(stopper);
      }
    };
    struct depth {
      depth() noexcept { ++detail::sync_wait_depth; }
      ~depth() { --detail::sync_wait_depth; }
    } marked;
    if (!detail::start_chain(here, std::move(t), into_out{&out, &stopper, detail::coro_access::gate_of(here)},
                             std::move(token)))
      throw executor_stopped("tether: sync_wait(): its executor refused the task");
    here.run();
  }  // ~executor waits out every poster still inside its gate
  if (!out) throw executor_stopped("tether: sync_wait(): the task was destroyed before it finished");
  return std::move(*out).value();
}

}  // namespace tether
