// SPDX-License-Identifier: MIT
// tether/executor.hpp - one owner thread runs the tasks; any thread hands them over.
//
//   tether::executor ex{{.name = "julia"}};            // starts and owns a thread
//   ex.post([] { ... });                                // push_result: ok, or closed
//   std::future<int> f = ex.submit([] { return 42; }); // result or exception, later
//   int v = ex.call([] { return 42; });                 // blocks; inline on the owner
//
//   tether::executor main_ex{tether::adopt_current_thread, {.wake_fd = true}};
//   loop.watch(main_ex.wake_fd(), [&] { main_ex.try_run(); });  // or main_ex.run()
//
// Who may call what: handing work over (post, dispatch, submit, call, post_at / post_after,
// post_and_reply), stop, the join family, stats, is_* and wake_fd - any thread. The run
// family (run, try_run, run_for, run_until; run_one, try_run_one, run_one_for,
// run_one_until) - the owner of an adopting executor, outside its own tasks.
//
// Guarantees: tasks from one posting thread run in the order posted, and so do tasks posted
// from different threads when one post happens-before the other (inline dispatch() and
// timed tasks aside); no lock is held around user code, hooks or task destructors; nothing
// accepted is dropped silently - a refused post returns closed with the callable not moved
// from, submit() / call() throw executor_stopped, stop(cancel) reports each destroyed task
// (futures, calls, replies, stats), delayed tasks report through their timer_handle; a
// call() that would close a wait cycle throws deadlock_error; exceptions escaping post()ed
// tasks and hooks go to on_error (unset: the process terminates).
//
// Memory ordering: every hand-over goes through the queue (a release publish, the owner's
// acquire), so whatever a poster did before post() happens-before the task; a task
// happens-before what its future, call() or reply observes. Details beside the code
// (detail/executor/executor_core.hpp, detail/wait/call_slot.hpp).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>

#include "detail/wait/call_slot.hpp"
#include "detail/platform/config.hpp"
#include "detail/executor/executor_core.hpp"
#include "detail/platform/futex.hpp"
#include "detail/wait/parker.hpp"
#include "detail/executor/task.hpp"
#include "detail/platform/thread_record.hpp"
#include "detail/executor/timer_heap.hpp"
#include "errors.hpp"
#include "executor_options.hpp"
#include "executor_stats.hpp"
#include "result.hpp"

namespace tether {

namespace detail {
struct source_access;  // a poller's view of the executor's queue and timers (detail/select/source_access.hpp)
struct coro_access;    // coroutines resume through the reply gate (detail/coro/chain.hpp)
}  // namespace detail

template <class T>
class confined;

// Handle to a delayed task; copies share one task. The default-constructed handle refers to
// nothing (status() == cancelled).
class timer_handle {
 public:
  timer_handle() = default;

  // true: the task will never run (it was pending); its callable is destroyed on the owner
  // thread by its deadline or sooner. false: it already ran, is running, was cancelled,
  // stopped or failed. Thread-safe.
  bool cancel() noexcept { return state_ && state_->try_transition(detail::timer_phase::cancelled); }

  // stopped: the executor stopped before the task's deadline (or refused it); failed: the
  // owner could not register it (out of memory). Thread-safe.
  timer_status status() const noexcept {
    if (!state_) return timer_status::cancelled;
    return static_cast<timer_status>(state_->phase.load(std::memory_order_acquire));  // [ET2] acquire: pairs with [ET1]
  }

 private:
  friend class executor;
  explicit timer_handle(std::shared_ptr<detail::timer_state> s) noexcept : state_(std::move(s)) {}
  std::shared_ptr<detail::timer_state> state_;
};

// What a post_and_reply() reply receives: the task's value, or the exception that ended it
// (its own, or executor_stopped when stop(cancel) destroyed it unrun).
template <class R>
class task_result {
 public:
  explicit task_result(std::exception_ptr e) noexcept : error_(std::move(e)) {}
  template <class... Args>
  explicit task_result(std::in_place_t, Args&&... args) : value_(std::in_place, std::forward<Args>(args)...) {}

  bool has_value() const noexcept { return !error_; }
  explicit operator bool() const noexcept { return has_value(); }
  // The value; rethrows the task's exception when there is none.
  R& value() & {
    if (error_) std::rethrow_exception(error_);
    return *value_;
  }
  R&& value() && {
    if (error_) std::rethrow_exception(error_);
    return std::move(*value_);
  }
  const std::exception_ptr& error() const noexcept { return error_; }

 private:
  std::optional<R> value_;
  std::exception_ptr error_;
};

template <>
class task_result<void> {
 public:
  task_result() noexcept = default;
  explicit task_result(std::exception_ptr e) noexcept : error_(std::move(e)) {}
  bool has_value() const noexcept { return !error_; }
  explicit operator bool() const noexcept { return has_value(); }
  void value() const {
    if (error_) std::rethrow_exception(error_);
  }
  const std::exception_ptr& error() const noexcept { return error_; }

 private:
  std::exception_ptr error_;
};

namespace detail {
template <class R>
using call_value_t = std::conditional_t<std::is_void_v<R>, std::monostate,
                                        std::conditional_t<std::is_reference_v<R>,
                                                           std::reference_wrapper<std::remove_reference_t<R>>, R>>;
}  // namespace detail

// What call_for / call_until return: the callable's value (void: std::monostate; a
// reference: std::reference_wrapper), or timeout / cancelled / closed.
template <class R>
using call_result = pop_result<detail::call_value_t<R>>;

class TETHER_CAPABILITY("executor") executor : private detail::executor_core {
 public:
  // Starts the owner thread (named after options.name) and runs on_start there.
  executor() : executor(executor_options{}) {}
  explicit executor(executor_options options)
      : detail::executor_core(std::move(options), false), gate_(std::make_shared<reply_gate>(this)) {
    owner_record_ = detail::acquire_record();
    owner_serial_ = owner_record_->serial.load(std::memory_order_seq_cst);
    try {
      thread_ = std::thread([this] { thread_main(); });
    } catch (...) {
      detail::release_record(owner_record_);
      throw;
    }
  }

  // Adopts the calling thread as the owner; runs on_start here. Drive it with the run family
  // (e.g. try_run() when wake_fd() becomes readable).
  explicit executor(adopt_current_thread_t, executor_options options = {})
      : detail::executor_core(std::move(options), true), gate_(std::make_shared<reply_gate>(this)) {
    owner_record_ = &detail::this_thread_record();
    owner_serial_ = detail::tls_serial;
    run_hook(on_start_);
  }

  // stop(drain), then: own thread - joins it; adopting executor on its owner thread - runs
  // the remaining tasks here; elsewhere - waits until the owner has run them (in its run
  // family). Replies still on their way here are refused from now on (their senders'
  // on_error learns). Destroying an executor from one of its own tasks terminates the process.
  ~executor() {
    stop(stop_mode::drain);
    if (running_in_this_thread() && (own_thread_ || in_run_)) {
      std::fprintf(stderr, "tether: executor '%s' destroyed from one of its own tasks\n", name_or_unnamed());
      std::terminate();
    }
    gate_->close();
    join();
    gate_->bury_orphans();  // the owner runs nothing of ours any more
  }

  executor(const executor&) = delete;
  executor& operator=(const executor&) = delete;

  // ---- handing work over (any thread) ------------------------------------------------------
  //
  // Each takes a last, defaulted `loc` (tether::source_location::current(): the caller's
  // line; std::source_location where the standard library has it).
  // With tracing on (executor_options::metrics, a task hook or long_task_threshold) the task
  // carries it, with the time it was accepted, to the hooks and long-task reports; otherwise
  // it is ignored and the task is queued exactly as without it.

  // Queues f to run on the owner: ok; closed once stopped (f is then not moved from). Never
  // blocks. Thread-safe.
  template <class F>
  push_result post(F&& f, const source_location& loc = source_location::current()) {
    if (!tracing_) [[likely]] {
      if (!queue_.emplace(std::forward<F>(f))) return status::closed;
    } else if (!emplace_traced<std::decay_t<F>>(loc, std::forward<F>(f))) {
      return status::closed;
    }
    after_push();
    return status::ok;
  }

  // On the owner thread: runs f now (exceptions propagate to the caller), ok. Elsewhere:
  // post(f). closed once stopped (f not moved from). Thread-safe.
  // Inline runs are not traced (they never wait in the queue).
  template <class F>
  push_result dispatch(F&& f, const source_location& loc = source_location::current()) {
    if (!running_in_this_thread()) return post(std::forward<F>(f), loc);
    if (is_stopped()) return status::closed;
    run_inline<void>([&] { std::invoke(std::forward<F>(f)); });
    return status::ok;
  }

  // Queues f; the future receives its result or exception, or executor_stopped if stop(cancel)
  // destroys it unrun. Throws executor_stopped once stopped. Never blocks. Thread-safe.
  template <class F>
  auto submit(F&& f, const source_location& loc = source_location::current())
      -> std::future<std::invoke_result_t<std::decay_t<F>>> {
    using R = std::invoke_result_t<std::decay_t<F>>;
    using job = submit_job<std::decay_t<F>, R>;
    std::promise<R> promise;
    std::future<R> future = promise.get_future();
    const push_result ok = !tracing_ ? queue_.emplace(std::in_place_type<job>, core(), std::forward<F>(f), std::move(promise))
                              : emplace_traced<job>(loc, core(), std::forward<F>(f), std::move(promise));
    if (!ok) throw executor_stopped(refusal("submit()"));
    after_push();
    return future;
  }

  // Runs f on the owner and returns its result (rethrows its exception). On the owner thread
  // f runs inline. Elsewhere the caller blocks: f is used in place (not copied), the result
  // comes back through a slot on the caller's stack. Throws deadlock_error instead of
  // blocking when the wait would close a cycle; executor_stopped once stopped or if
  // stop(cancel) destroys the call unrun. Inline calls are not traced. Thread-safe.
  template <class F>
  std::invoke_result_t<F&&> call(F&& f, const source_location& loc = source_location::current()) {
    using R = std::invoke_result_t<F&&>;
    if (running_in_this_thread()) {
      if (is_stopped()) throw executor_stopped(refusal("call()"));
      return run_inline<R>(std::forward<F>(f));
    }
    detail::thread_record& me = detail::this_thread_record();
    detail::blocking_call edge(me, owner_record_, owner_serial_, name_id_);  // before the walk
    check_cycle(me);
    detail::call_slot<R> slot;
    slot.count_wakes_in(woken_callers_);  // see executor_core::pace_callers
    struct in_flight {
      std::atomic<std::uint32_t>& n;
      const bool alone;
      explicit in_flight(std::atomic<std::uint32_t>& c)
          : n(c), alone(c.fetch_add(1, std::memory_order_relaxed) == 0) {}  // relaxed: a hint, publishes nothing
      ~in_flight() { n.fetch_sub(1, std::memory_order_relaxed); }           // relaxed: as above
    } caller{callers_};
    const push_result ok = !tracing_ ? queue_.emplace(std::in_place_type<call_job<F, R>>, core(), std::addressof(f), &slot)
                              : emplace_traced<call_job<F, R>>(loc, core(), std::addressof(f), &slot);
    if (!ok) throw executor_stopped(refusal("call()"));
    const bool owner_was_asleep = after_push();
    // Spin first only for a lone caller with nothing queued ahead and an owner that was
    // awake: otherwise the answer is at least a task or a wake-up away, and spinning callers
    // would take the cores that the owner and the other callers (woken, waiting for a core)
    // need - and serve themselves unfairly.
    slot.wait(!owner_was_asleep && caller.alone && queue_.size_approx() <= 1);
    return slot.take();
  }

  // As call(f), abandoned when `token` is stopped before the owner starts f: the caller
  // returns at once with operation_cancelled and f never runs. Once f has started the caller
  // waits for it (f is used in place) and gets its result. A stop already requested throws
  // without queueing anything. Costs one allocation more than call(f) when the token can be
  // stopped (the outcome must outlive an abandoning caller). Thread-safe.
  template <class F>
  std::invoke_result_t<F&&> call(F&& f, std::stop_token token, const source_location& loc = source_location::current()) {
    using R = std::invoke_result_t<F&&>;
    if (!token.stop_possible()) return call(std::forward<F>(f), loc);
    call_result<R> r = call_abandonable<R, F>(f, detail::no_deadline, &token, loc);
    switch (r.status()) {
      case status::cancelled:
        throw operation_cancelled(std::string("tether: call() on executor '") + name_or_unnamed() +
                                  "' was cancelled by its stop token before it ran; it will not run");
      case status::closed:
        throw executor_stopped(refusal("call()"));
      default:
        break;
    }
    return unwrap_call_value<R>(std::move(r));
  }

  // As call(f), giving up at the deadline (or on a stop request): the value, or timeout /
  // cancelled when f had not started (it never runs), or closed when the executor is stopped
  // or stop(cancel) destroys the call unrun. Once f has started the caller waits for it.
  // f's exception is rethrown. void calls give std::monostate, reference calls a
  // std::reference_wrapper. A huge timeout waits forever. Thread-safe.
  template <class Rep, class Period, class F>
  call_result<std::invoke_result_t<F&&>> call_for(const std::chrono::duration<Rep, Period>& timeout, F&& f,
                                                  std::stop_token token = {},
                                                  const source_location& loc = source_location::current()) {
    return call_abandonable<std::invoke_result_t<F&&>, F>(f, detail::deadline_after(timeout), &token, loc);
  }
  template <class Clock, class Duration, class F>
  call_result<std::invoke_result_t<F&&>> call_until(const std::chrono::time_point<Clock, Duration>& deadline, F&& f,
                                                    std::stop_token token = {},
                                                    const source_location& loc = source_location::current()) {
    return call_abandonable<std::invoke_result_t<F&&>, F>(f, detail::to_steady(deadline), &token, loc);
  }

  // Runs task here, then reply(task_result<R>) on reply_to - the continuation comes back to
  // the caller's executor and learns every outcome: the value, the task's exception, or
  // executor_stopped when stop(cancel) destroys the task unrun. Returns closed when this
  // executor or reply_to is stopped (task and reply not moved from). reply_to must be alive
  // at the call; it may be destroyed afterwards (a shared gate is checked, not a dangling
  // reference): a reply that reply_to refuses - stopped or destroyed - is reported to this
  // executor's on_error as executor_stopped. An exception from reply goes to reply_to's
  // on_error; a reply destroyed unrun by reply_to's stop(cancel) counts in its
  // stats().tasks_cancelled. Never blocks. Thread-safe.
  // The reply carries `loc` too (to reply_to's hooks, if it traces).
  template <class F, class G>
  push_result post_and_reply(F&& task, executor& reply_to, G&& reply,
                             const source_location& loc = source_location::current()) {
    using R = std::decay_t<std::invoke_result_t<std::decay_t<F>>>;
    static_assert(std::is_invocable_v<std::decay_t<G>&&, task_result<R>&&>,
                  "tether: post_and_reply(task, reply_to, reply): reply must accept a tether::task_result<R>");
    using job = reply_job<std::decay_t<F>, std::decay_t<G>, R>;
    if (reply_to.is_stopped()) return status::closed;
    const push_result ok = !tracing_ ? queue_.emplace(std::in_place_type<job>, this, reply_to.gate_, std::forward<F>(task),
                                               std::forward<G>(reply), loc)
                              : emplace_traced<job>(loc, this, reply_to.gate_, std::forward<F>(task),
                                                    std::forward<G>(reply), loc);
    if (!ok) return status::closed;
    after_push();
    return status::ok;
  }

  // Runs f on the owner at (or soon after) `when` / after `delay` (a huge delay saturates:
  // never, until cancelled or stopped). The owner parks until the earliest deadline.
  // Delayed tasks with equal deadlines run in posting order. If the executor is stopped the
  // handle reports timer_status::stopped at once. Thread-safe.
  // A delayed task's queue delay counts from its deadline.
  template <class Clock, class Duration, class F>
  timer_handle post_at(const std::chrono::time_point<Clock, Duration>& when, F&& f,
                       const source_location& loc = source_location::current()) {
    // The state first and the callable last: a std::bad_alloc leaves f with the caller.
    auto state = std::make_shared<detail::timer_state>(detail::to_steady(when));
    using plain = timer_registration<std::decay_t<F>>;
    using traced = timer_registration<detail::traced_job<std::decay_t<F>>>;
    const push_result ok =
        !tracing_ ? queue_.emplace(detail::internal_task, std::in_place_type<plain>, core(), state, std::forward<F>(f))
                  : queue_.emplace(detail::internal_task, std::in_place_type<traced>, core(), state,
                                   detail::task_trace{detail::ticks_now(), loc}, std::forward<F>(f));
    if (ok)
      after_push();
    else
      state->try_transition(detail::timer_phase::stopped);  // refused: f untouched
    return timer_handle(std::move(state));
  }
  template <class Rep, class Period, class F>
  timer_handle post_after(const std::chrono::duration<Rep, Period>& delay, F&& f,
                          const source_location& loc = source_location::current()) {
    return post_at(detail::deadline_after(delay), std::forward<F>(f), loc);
  }

  // ---- the run family: driving an adopting executor (its owner thread) ------------------------
  //
  // Each returns how many tasks ran (delayed ones included). run* blocks until the executor
  // has finished (stopped and drained; on_stop has run); the _for / _until forms return at
  // the deadline too (checked between batches, so a busy executor still returns; a huge
  // timeout waits forever); try_* never blocks: it runs what is ready now (and what is posted
  // meanwhile) and due delayed tasks. The *_one forms return after one task. Call try_run()
  // when wake_fd() is readable. wrong_thread off the owner thread; std::logic_error for an
  // executor with its own thread, or from inside one of its tasks.

  std::size_t run() { return drive(SIZE_MAX, detail::no_deadline, true, nullptr); }
  std::size_t try_run() { return drive(SIZE_MAX, detail::no_deadline, false, nullptr); }
  template <class Rep, class Period>
  std::size_t run_for(const std::chrono::duration<Rep, Period>& timeout) {
    return drive(SIZE_MAX, detail::deadline_after(timeout), true, nullptr);
  }
  template <class Clock, class Duration>
  std::size_t run_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return drive(SIZE_MAX, detail::to_steady(deadline), true, nullptr);
  }
  // As run(), returning also when `token` is stopped.
  std::size_t run_until(std::stop_token token) { return drive(SIZE_MAX, detail::no_deadline, true, &token); }

  std::size_t run_one() { return drive(1, detail::no_deadline, true, nullptr); }
  std::size_t try_run_one() { return drive(1, detail::no_deadline, false, nullptr); }
  template <class Rep, class Period>
  std::size_t run_one_for(const std::chrono::duration<Rep, Period>& timeout) {
    return drive(1, detail::deadline_after(timeout), true, nullptr);
  }
  template <class Clock, class Duration>
  std::size_t run_one_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return drive(1, detail::to_steady(deadline), true, nullptr);
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  // Refuses new work from now on. stop(drain) (the default, and what the destructor does)
  // runs every task already accepted, runs delayed tasks that are due by then and stops
  // (status stopped) the others, then runs on_stop; stop(cancel) destroys everything pending
  // instead of running it, each reporting (see the file comment). A cancel after a drain
  // upgrades it. Returns true if this call stopped the executor. Never blocks. Thread-safe.
  bool stop(stop_mode mode = stop_mode::drain) noexcept {
    if (mode == stop_mode::cancel) cancel_.store(true, std::memory_order_seq_cst);  // before close: seen with it
    const bool first = queue_.close();
    wake_owner();
    if (first && fd_) arm_wake_fd();  // a foreign loop must call try_run() once more to finish
    if (mode == stop_mode::cancel) cancel_requested_.request_stop();  // running work may end early
    return first;
  }

  // A token that stop(cancel) stops: a long task can watch it (stop_requested(), or a
  // std::stop_callback handing it to its runtime) and end early. Its callbacks run on the
  // thread that calls stop(cancel); keep them short. Thread-safe.
  std::stop_token get_stop_token() const noexcept { return cancel_requested_.get_token(); }

  // The join family waits until the executor has finished (every accepted task ran or was
  // cancelled, and on_stop ran) and joins the own thread; stop() it first (or have a task do
  // it). join() waits for good; try_join() never blocks (beyond joining a thread that has
  // finished); join_for / join_until give up at the deadline (a huge timeout waits forever).
  // The bool ones return true once finished. On the owner thread of an adopting executor,
  // outside its tasks, they run the executor here (try_join: what is ready); from inside one
  // of its tasks they throw deadlock_error. Thread-safe.
  void join() { (void)join_until_steady(detail::no_deadline, true); }
  bool try_join() { return join_until_steady(detail::no_deadline, false); }
  template <class Rep, class Period>
  bool join_for(const std::chrono::duration<Rep, Period>& timeout) {
    return join_until_steady(detail::deadline_after(timeout), true);
  }
  template <class Clock, class Duration>
  bool join_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return join_until_steady(detail::to_steady(deadline), true);
  }
  // As join(), giving up when `token` is stopped: true once finished, false if cancelled.
  bool join(std::stop_token token) { return join_until_steady(detail::no_deadline, true, &token); }

  // stop() was called: no more work is accepted. Thread-safe.
  bool is_stopped() const noexcept { return queue_.is_closed(); }
  // Every accepted task ran or was cancelled, and on_stop ran. Thread-safe.
  bool is_finished() const noexcept { return finished_.load(std::memory_order_seq_cst); }

  // ---- identity and observation ---------------------------------------------------------------

  // true on the owner thread (one thread-local read and a compare). Thread-safe.
  bool running_in_this_thread() const noexcept { return executor_core::running_in_this_thread(); }

  // Throws wrong_thread naming both threads unless called on the owner thread. For clang's
  // -Wthread-safety, asserts the executor capability. `what` names the object in the
  // message (default: the executor itself). Thread-safe.
  void check_owner(std::string_view what = {}) const TETHER_ASSERT_CAPABILITY(this) { check_owner_thread(what); }

  const std::string& name() const noexcept { return name_; }

  // The descriptor a foreign loop watches: readable while tasks are pending, when a delayed
  // task falls due (Linux; elsewhere call try_run() by the next deadline yourself), and once
  // after stop() so that try_run() can finish the stop; try_run() quiets it. Throws
  // std::logic_error unless constructed with executor_options::wake_fd. Thread-safe.
  int wake_fd() const {
    if (!fd_) throw std::logic_error("tether: executor '" + std::string(name_or_unnamed()) +
                                     "' has no wake fd; construct it with executor_options{.wake_fd = true}");
    return fd_->fd();
  }

  executor_stats stats() const noexcept {
    executor_stats s;
    // relaxed (all loads here): statistics written by the owner; nothing is read through them.
    s.tasks_run = ran_.load(std::memory_order_relaxed);              // relaxed: statistic
    s.tasks_cancelled = cancelled_.load(std::memory_order_relaxed);  // relaxed: statistic
    s.queue_depth = queue_.size_approx();
    s.timers_pending = timers_pending_.load(std::memory_order_relaxed);  // relaxed: statistic
    s.tasks_posted = s.tasks_run + s.tasks_cancelled + s.queue_depth + s.timers_pending;
    s.wait_time = std::chrono::nanoseconds(wait_ns_.load(std::memory_order_relaxed));  // relaxed: statistic
    // A wait in progress counts too (else an idle executor would report none).
    if (const auto since = parked_since_ns_.load(std::memory_order_relaxed); since != 0)  // relaxed: statistic
      s.wait_time += std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::max(clock::duration(0), clock::now().time_since_epoch() - clock::duration(since)));
    s.run_time = std::chrono::nanoseconds(run_ns_.load(std::memory_order_relaxed));  // relaxed: statistic
    s.callers_blocked = callers_.load(std::memory_order_relaxed);      // relaxed: statistic
    s.callers_woken = woken_callers_.load(std::memory_order_relaxed);  // relaxed: statistic
    s.owner_yields = owner_yields_.load(std::memory_order_relaxed);    // relaxed: statistic
    if (metrics_) {
      s.metrics = true;
      s.queue_delay = metrics_->delay.summary(clock_->ns_per_tick);
      s.task_time = metrics_->run.summary(clock_->ns_per_tick);
      s.queue_depth_max = metrics_->depth_max.load(std::memory_order_relaxed);  // relaxed: statistic
      s.long_tasks = metrics_->long_tasks.load(std::memory_order_relaxed);                                // relaxed: statistic
    }
    return s;
  }

 private:
  friend struct detail::source_access;  // tether::poller watches adopting executors (select.hpp)
  friend struct detail::coro_access;    // a coroutine's resumption goes through gate_ (coroutine.hpp)
  template <class T>
  friend class confined;  // hands its T's destruction over with defer_destroy()

  // The jobs hold the core (a private base: the conversion must happen here).
  detail::executor_core* core() noexcept { return this; }

  // Lets a reply reach an executor that may be destroyed meanwhile ("rundown protection"):
  // a poster enters (state + 2) and posts only if the executor is not closing; close() marks
  // it (bit 0) and waits until the posters inside have left. Shared by the executor and every
  // reply on its way to it.
  struct reply_gate {
    explicit reply_gate(executor* e) noexcept : ex(e) {}
    template <class F>
    push_result post(F&& f, const source_location& loc) {
      struct inside {
        reply_gate& g;
        ~inside() { g.leave(); }
      };
      const std::uint32_t before = state.fetch_add(2, std::memory_order_seq_cst);
      inside guard{*this};
      if (before & 1) return status::closed;
      return ex->post(std::forward<F>(f), loc);
    }
    // defer_destroy() through the gate.
    enum class deferral : std::uint8_t {
      deferred,    // the owner will run d
      owner_done,  // the executor has finished: its owner runs nothing of it any more
      closing,     // its destructor has begun: see adopt_orphan()
    };
    deferral defer(detail::deferred_destroy* d) noexcept {
      const std::uint32_t before = state.fetch_add(2, std::memory_order_seq_cst);
      const deferral r = (before & 1) != 0      ? deferral::closing
                         : ex->defer_destroy(d) ? deferral::deferred
                                                : deferral::owner_done;
      leave();
      return r;
    }
    // The last poster out of a closing gate wakes close() through a static parker, not the
    // gate: once the count drops, close() may return and the gate be freed (a poster need
    // not own a reference to it; coroutine resumptions do not).
    void leave() noexcept {
      if (state.fetch_sub(2, std::memory_order_seq_cst) == 3) exit_parker(this).notify_all();
    }
    void close() noexcept {
      state.fetch_or(1, std::memory_order_seq_cst);
      detail::park_until(exit_parker(this), [this] { return state.load(std::memory_order_seq_cst) == 1; },
                         detail::no_deadline);  // posters inside: a post() each, which never blocks
    }
    // Coroutine chains whose resumption was refused while this executor's owner may still be
    // running (its destructor closed the gate, then joins): they are destroyed once the owner
    // has stopped (bury_orphans, after the join), never while it might be inside one of their
    // frames. adopt_orphan: false once buried (the caller destroys d itself).
    bool adopt_orphan(detail::deferred_destroy* d) noexcept {
      detail::deferred_destroy* head = orphans.load(std::memory_order_seq_cst);
      do {
        if (head == &buried) return false;
        d->next = head;
      } while (!orphans.compare_exchange_weak(head, d, std::memory_order_seq_cst));
      return true;
    }
    void bury_orphans() noexcept {
      for (detail::deferred_destroy* d = orphans.exchange(&buried, std::memory_order_seq_cst); d != nullptr;) {
        detail::deferred_destroy* next = d->next;
        d->destroy(d);
        d = next;
      }
    }
    static detail::parker& exit_parker(const reply_gate* g) noexcept { return detail::exit_parker_for(g); }
    executor* const ex;
    std::atomic<std::uint32_t> state{0};  // bit 0: closing; above it: posters inside, times 2
    std::atomic<detail::deferred_destroy*> orphans{nullptr};  // &buried once the owner stopped
    detail::deferred_destroy buried{};                         // a marker, never run
  };

  // post_and_reply(): runs the task, then posts the reply with its outcome through the reply
  // executor's gate; destroyed unrun (stop(cancel)) it still posts the reply, with
  // executor_stopped. A refused reply is reported to this executor's on_error.
  template <class F, class G, class R>
  struct reply_job {
    template <class F2, class G2>
    reply_job(executor* from, std::shared_ptr<reply_gate> to, F2&& f, G2&& g, const source_location& l)
        : fn(std::forward<F2>(f)), rep(std::forward<G2>(g)), gate(std::move(to)), ex(from), loc(l) {}
    reply_job(reply_job&& o) noexcept(std::is_nothrow_move_constructible_v<F> && std::is_nothrow_move_constructible_v<G>)
        : fn(std::move(o.fn)), rep(std::move(o.rep)), gate(std::move(o.gate)), ex(o.ex), loc(o.loc),
          pending(std::exchange(o.pending, false)) {}
    void operator()() {
      pending = false;
      deliver(outcome());
    }
    ~reply_job() {
      if (!pending) return;
      try {
        deliver(task_result<R>(std::make_exception_ptr(executor_stopped(ex->dropped("post_and_reply()")))));
      } catch (...) {
        ex->report_current_exception();  // on the owner, which destroys cancelled tasks
      }
    }
    task_result<R> outcome() {
      try {
        if constexpr (std::is_void_v<R>) {
          std::invoke(std::move(fn));
          return task_result<R>();
        } else {
          return task_result<R>(std::in_place, std::invoke(std::move(fn)));
        }
      } catch (...) {
        return task_result<R>(std::current_exception());
      }
    }
    void deliver(task_result<R>&& r) {
      if (!gate->post([g = std::move(rep), r = std::move(r)]() mutable { std::invoke(std::move(g), std::move(r)); }, loc))
        throw executor_stopped(std::string("tether: post_and_reply() on executor '") + ex->name_or_unnamed() +
                               "': the reply executor was stopped or destroyed before the reply could be posted");
    }
    F fn;
    G rep;
    std::shared_ptr<reply_gate> gate;
    executor* ex;
    source_location loc;  // the caller of post_and_reply(), for the reply's trace
    bool pending = true;
  };

  // The one loop behind call(f, token), call_for and call_until: the outcome lives in a
  // shared abandonable_call, so a caller that gives up may return before the owner reaches
  // the job (which then runs nothing).
  template <class R, class F>
  call_result<R> call_abandonable(std::remove_reference_t<F>& f, detail::steady_time deadline, const std::stop_token* token,
                                  const source_location& loc) {
    if (token->stop_requested()) return status::cancelled;
    if (running_in_this_thread()) {
      if (is_stopped()) return status::closed;
      return wrap_call_value<R>([&]() -> R { return run_inline<R>(std::forward<F>(f)); });
    }
    if (deadline != detail::no_deadline && clock::now() >= deadline) return status::timeout;
    detail::thread_record& me = detail::this_thread_record();
    detail::blocking_call edge(me, owner_record_, owner_serial_, name_id_);
    check_cycle(me);
    auto* state = new detail::abandonable_call<R>();
    using job = abandonable_call_job<F, R>;
    push_result ok = status::closed;
    try {
      ok = !tracing_ ? queue_.emplace(std::in_place_type<job>, core(), std::addressof(f), state)
                     : emplace_traced<job>(loc, core(), std::addressof(f), state);
    } catch (...) {
      delete state;  // not queued: nobody else holds it
      throw;
    }
    if (!ok) {
      delete state;
      return status::closed;
    }
    after_push();
    struct owner_of {
      detail::abandonable_call<R>* s;
      ~owner_of() { s->unref(); }
    } release{state};
    using phase = typename detail::abandonable_call<R>::phase;
    phase p;
    {
      std::optional<std::stop_callback<detail::abandon_on_stop<R>>> on_stop;
      if (token->stop_possible()) on_stop.emplace(*token, detail::abandon_on_stop<R>{state});
      p = state->wait_until(deadline);
      if (p != phase::done && p != phase::cancelled) {  // the deadline
        if (state->abandon()) return status::timeout;
        p = state->wait_until(detail::no_deadline);  // started meanwhile: wait for it
      }
    }
    if (p == phase::cancelled) return status::cancelled;
    if (state->refused()) return status::closed;
    return wrap_call_value<R>([&]() -> R { return state->take(); });
  }

  // R into call_result<R> and back (void: std::monostate; references: reference_wrapper).
  template <class R, class G>
  static call_result<R> wrap_call_value(G&& get) {
    if constexpr (std::is_void_v<R>) {
      get();
      return call_result<R>(std::in_place);
    } else if constexpr (std::is_reference_v<R>) {
      return call_result<R>(std::in_place, std::ref(get()));
    } else {
      return call_result<R>(std::in_place, get());
    }
  }
  template <class R>
  static R unwrap_call_value(call_result<R>&& r) {
    if constexpr (std::is_void_v<R>) {
      return;
    } else if constexpr (std::is_reference_v<R>) {
      return static_cast<R>((*r).get());
    } else {
      return std::move(*r);
    }
  }

  // The join family's one deadline loop; block false: try_join().
  bool join_until_steady(detail::steady_time deadline, bool block, const std::stop_token* token = nullptr) {
    if (running_in_this_thread()) {
      if (own_thread_ || in_run_)
        throw deadlock_error(std::string("tether: join() on executor '") + name_or_unnamed() +
                                 "' from its own owner thread inside one of its tasks would wait for itself",
                             {name_or_unnamed()});
      if (!finished_.load(std::memory_order_seq_cst)) drive(SIZE_MAX, deadline, block, token);
      return finished_.load(std::memory_order_seq_cst);
    }
    if (!block) deadline = clock::now();  // park_until checks once, then times out
    if (token == nullptr || !token->stop_possible()) return join_wait(deadline, [] { return false; });
    detail::stop_wake stop(token);  // only here: g++ 12 sees an unset optional on the other path
    stop.arm(state_wait_);
    return join_wait(deadline, [&] { return stop.requested(); });
  }

  // join_until_steady off the owner thread: waits until finished (and joins the own thread),
  // or the deadline, or stopped() holds.
  template <class Stopped>
  bool join_wait(detail::steady_time deadline, const Stopped& stopped) {
    const auto finished = [&] { return finished_.load(std::memory_order_seq_cst) || stopped(); };
    const auto done = [this] { return finished_.load(std::memory_order_seq_cst); };
    if (!own_thread_) return detail::park_until(state_wait_, finished, deadline) && done();
    if (!detail::park_until(state_wait_, finished, deadline) || !done()) return false;
    bool expected = false;
    if (join_claimed_.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {  // acq_rel: one joiner claims the thread
      if (thread_.joinable()) thread_.join();  // finished: the thread is on its way out
      joined_.store(true, std::memory_order_seq_cst);
      state_wait_.notify_all();
      return true;
    }
    return detail::park_until(state_wait_, [&] { return joined_.load(std::memory_order_seq_cst) || stopped(); },
                              deadline) &&
           joined_.load(std::memory_order_seq_cst);
  }

  std::shared_ptr<reply_gate> gate_;  // set once by the constructor
  std::stop_source cancel_requested_;  // stop(cancel) requests it: get_stop_token()
};

}  // namespace tether
