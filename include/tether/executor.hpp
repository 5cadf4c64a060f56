// SPDX-License-Identifier: MIT
// tether/executor.hpp - one owner thread runs the tasks; any thread hands them over.
//
//   tether::executor ex{{.name = "julia"}};            // starts and owns a thread
//   ex.post([] { ... });                                // fire and forget
//   std::future<int> f = ex.submit([] { return 42; }); // result or exception, later
//   int v = ex.call([] { return 42; });                 // blocks; inline on the owner
//
//   tether::executor main_ex{tether::adopt_current_thread, {.wake_fd = true}};
//   loop.watch(main_ex.wake_fd(), [&] { main_ex.poll(); });  // or main_ex.run()
//
// The owner is either a thread the executor starts, or the thread that constructs it with
// adopt_current_thread and then drives it with run(), run_one(), run_until() or poll() - so a
// main thread that already runs another loop (asyncio, libuv, a GUI) can be the owner. A
// tether::poller (select.hpp) can watch an adopting executor, so that its owner waits in one
// place on channels, queues and the executor's tasks and delayed tasks.
//
// Who may call what:
//   post / dispatch / submit / call / post_at / post_after / post_and_reply / stop / join /
//   stats / running_in_this_thread / is_stopped / is_finished / wake_fd - any thread.
//   run / run_one / run_until / run_for / poll - the owner thread of an adopting executor,
//     outside its own tasks (wrong_thread elsewhere; std::logic_error for an executor with its
//     own thread, or from inside one of its tasks).
//
// Guarantees:
//   - Tasks from one posting thread run in the order posted (FIFO per poster).
//   - No lock anywhere: user code, hooks, callbacks and task destructors never run under one.
//   - Nothing accepted is silently dropped: post() returns false once stopped (the callable is
//     not moved from); submit() and call() throw executor_stopped; stop(cancel) destroys
//     pending tasks and their futures / calls report executor_stopped (post()ed ones are
//     counted in stats().tasks_cancelled); delayed tasks report through their timer_handle.
//   - A blocking call() that would close a wait cycle (A's owner in B.call() while B's owner
//     is in A.call(), or longer cycles) throws deadlock_error naming the executors.
//   - Exceptions escaping a post()ed task (or a hook) go to executor_options::on_error; when
//     none is set the process terminates, as for an exception escaping a std::thread.
//
// Stopping: stop(drain) (the default, and what the destructor does) refuses new work, runs
// every task already accepted, runs delayed tasks that are due by then and drops (status
// stopped) delayed tasks that are not, then runs on_stop. stop(cancel) refuses new work and
// destroys everything pending instead of running it.
//
// Memory ordering: every hand-over goes through the queue (a release publish, the owner's
// acquire) and, for call(), the caller's stack slot (detail/wait/call_slot.hpp); the owner side
// is described in detail/executor/executor_core.hpp. Deadlock edges are seq_cst
// (detail/platform/thread_record.hpp).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>

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
#include "result.hpp"

namespace tether {

namespace detail {
struct source_access;  // a poller's view of the executor's queue and timers (detail/select/source_access.hpp)
}  // namespace detail

// Handle to a delayed task; copies share one task. The default-constructed handle refers to
// nothing (status() == cancelled).
class timer_handle {
 public:
  timer_handle() = default;

  // true: the task will never run (it was pending); its callable is destroyed on the owner
  // thread by its deadline. false: it already ran, is running, was cancelled or stopped.
  // Thread-safe.
  bool cancel() noexcept { return state_ && state_->try_transition(detail::timer_phase::cancelled); }

  // stopped: the executor stopped before the task's deadline (or refused it). Thread-safe.
  timer_status status() const noexcept {
    if (!state_) return timer_status::cancelled;
    return static_cast<timer_status>(state_->phase.load(std::memory_order_acquire));  // acquire: pairs with the owner's transitions
  }

 private:
  friend class executor;
  explicit timer_handle(std::shared_ptr<detail::timer_state> s) noexcept : state_(std::move(s)) {}
  std::shared_ptr<detail::timer_state> state_;
};

class TETHER_CAPABILITY("executor") executor : private detail::executor_core {
 public:
  // Starts the owner thread (named after options.name) and runs on_start there.
  executor() : executor(executor_options{}) {}
  explicit executor(executor_options options) : detail::executor_core(std::move(options), false) {
    owner_record_ = detail::acquire_record();
    owner_serial_ = owner_record_->serial.load(std::memory_order_seq_cst);
    try {
      thread_ = std::thread([this] { thread_main(); });
    } catch (...) {
      detail::release_record(owner_record_);
      throw;
    }
  }

  // Adopts the calling thread as the owner; runs on_start here. Drive it with run(),
  // run_one(), run_until(), run_for() or poll() (e.g. when wake_fd() becomes readable).
  explicit executor(adopt_current_thread_t, executor_options options = {})
      : detail::executor_core(std::move(options), true) {
    owner_record_ = &detail::this_thread_record();
    owner_serial_ = detail::tls_serial;
    run_hook(on_start_);
  }

  // stop(drain), then: own thread - joins it; adopting executor on its owner thread - runs
  // the remaining tasks here; elsewhere - waits until the owner has run them (in run/poll).
  // Destroying an executor from one of its own tasks terminates the process.
  ~executor() {
    stop(stop_mode::drain);
    if (running_in_this_thread() && (own_thread_ || in_run_)) {
      std::fprintf(stderr, "tether: executor '%s' destroyed from one of its own tasks\n", name_or_unnamed());
      std::terminate();
    }
    join();
  }

  executor(const executor&) = delete;
  executor& operator=(const executor&) = delete;

  // ---- handing work over (any thread) ------------------------------------------------------

  // Queues f to run on the owner. false once stopped; f is then not moved from.
  // Never blocks. Thread-safe.
  template <class F>
  bool post(F&& f) {
    if (!queue_.emplace(std::forward<F>(f))) return false;
    after_push();
    return true;
  }

  // On the owner thread: runs f now (exceptions propagate to the caller). Elsewhere: post(f).
  // false once stopped. Thread-safe.
  template <class F>
  bool dispatch(F&& f) {
    if (!running_in_this_thread()) return post(std::forward<F>(f));
    if (is_stopped()) return false;
    run_inline<void>([&] { std::invoke(std::forward<F>(f)); });
    return true;
  }

  // Queues f; the future receives its result or exception, or executor_stopped if stop(cancel)
  // destroys it unrun. Throws executor_stopped once stopped. Never blocks. Thread-safe.
  template <class F>
  auto submit(F&& f) -> std::future<std::invoke_result_t<std::decay_t<F>>> {
    using R = std::invoke_result_t<std::decay_t<F>>;
    std::promise<R> promise;
    std::future<R> future = promise.get_future();
    if (!queue_.emplace(std::in_place_type<submit_job<std::decay_t<F>, R>>, core(), std::forward<F>(f),
                        std::move(promise)))
      throw executor_stopped(refusal("submit()"));
    after_push();
    return future;
  }

  // Runs f on the owner and returns its result (rethrows its exception). On the owner thread
  // f runs inline. Elsewhere the caller blocks: f is used in place (not copied), the result
  // comes back through a slot on the caller's stack, and the caller spins briefly first when
  // it is the only caller with nothing queued ahead, else parks at once. Throws
  // deadlock_error instead of blocking when the wait would close a cycle; executor_stopped
  // once stopped or if stop(cancel) destroys the call unrun. Thread-safe.
  template <class F>
  std::invoke_result_t<F&&> call(F&& f) {
    using R = std::invoke_result_t<F&&>;
    if (running_in_this_thread()) {
      if (is_stopped()) throw executor_stopped(refusal("call()"));
      return run_inline<R>(std::forward<F>(f));
    }
    detail::thread_record& me = detail::this_thread_record();
    detail::blocking_call edge(me, owner_record_, owner_serial_, name_id_);  // before the walk
    check_cycle(me);
    detail::call_slot<R> slot;
    struct in_flight {
      std::atomic<std::uint32_t>& n;
      const bool alone;
      explicit in_flight(std::atomic<std::uint32_t>& c)
          : n(c), alone(c.fetch_add(1, std::memory_order_relaxed) == 0) {}  // relaxed: a hint, publishes nothing
      ~in_flight() { n.fetch_sub(1, std::memory_order_relaxed); }           // relaxed: as above
    } caller{callers_};
    if (!queue_.emplace(std::in_place_type<call_job<F, R>>, core(), std::addressof(f), &slot))
      throw executor_stopped(refusal("call()"));
    const bool owner_was_asleep = after_push();
    // Spin first only for a lone caller with nothing queued ahead and an owner that was
    // awake: otherwise the answer is at least a task or a wake-up away, and spinning callers
    // would take the cores that the owner and the other callers (woken, waiting for a core)
    // need - and serve themselves unfairly.
    slot.wait(!owner_was_asleep && caller.alone && queue_.size_approx() <= 1);
    return slot.take();
  }

  // Runs task on this executor, then reply(result) (reply() for void) on reply_to - the
  // continuation comes back to the caller's executor. An exception from task goes to this
  // executor's on_error; one from reply to reply_to's; a reply that reply_to refuses (it
  // stopped) is reported to this executor's on_error as executor_stopped. false once
  // stopped. Thread-safe.
  template <class F, class G>
  bool post_and_reply(F&& task, executor& reply_to, G&& reply) {
    return post([this, &reply_to, fn = std::forward<F>(task), rep = std::forward<G>(reply)]() mutable {
      using R = std::invoke_result_t<std::decay_t<F>>;
      bool accepted;
      if constexpr (std::is_void_v<R>) {
        std::invoke(std::move(fn));
        accepted = reply_to.post(std::move(rep));
      } else {
        accepted = reply_to.post([r = std::move(rep), v = std::invoke(std::move(fn))]() mutable {
          std::invoke(std::move(r), std::move(v));
        });
      }
      if (!accepted)
        throw executor_stopped(std::string("tether: post_and_reply() on executor '") + name_or_unnamed() +
                               "': the reply executor '" + reply_to.name_or_unnamed() +
                               "' stopped before the reply could be posted");
    });
  }

  // Runs f on the owner at (or soon after) `when` / after `delay`. The owner parks until the
  // earliest deadline. Delayed tasks with equal deadlines run in posting order. If the
  // executor is stopped the handle reports timer_status::stopped at once. Thread-safe.
  template <class Clock, class Duration, class F>
  timer_handle post_at(const std::chrono::time_point<Clock, Duration>& when, F&& f) {
    auto state = std::make_shared<detail::timer_state>(detail::to_steady(when), detail::task(std::forward<F>(f)));
    if (queue_.emplace(detail::internal_task, std::in_place_type<timer_registration>, core(), state)) {
      after_push();
    } else {
      state->try_transition(detail::timer_phase::stopped);
      state->fn.reset();
    }
    return timer_handle(std::move(state));
  }
  template <class Rep, class Period, class F>
  timer_handle post_after(const std::chrono::duration<Rep, Period>& delay, F&& f) {
    return post_at(detail::deadline_after(delay), std::forward<F>(f));
  }

  // ---- driving an adopting executor (its owner thread) --------------------------------------

  // Runs tasks until stopped and drained (then on_stop has run). Returns tasks run.
  std::size_t run() { return drive(run_kind::forever, detail::no_deadline, nullptr); }
  // Blocks until one task ran (returns 1) or the executor finished (0).
  std::size_t run_one() { return drive(run_kind::one, detail::no_deadline, nullptr); }
  // Runs every task that is ready (and delayed ones that are due), including ones posted
  // meanwhile; never blocks. Call it when wake_fd() is readable.
  std::size_t poll() { return drive(run_kind::poll, detail::no_deadline, nullptr); }
  // As run(), returning also when `token` is stopped.
  std::size_t run_until(std::stop_token token) {
    return drive(run_kind::until, detail::no_deadline, &token);
  }
  // As run(), returning also at the deadline.
  template <class Clock, class Duration>
  std::size_t run_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return drive(run_kind::until, detail::to_steady(deadline), nullptr);
  }
  template <class Rep, class Period>
  std::size_t run_for(const std::chrono::duration<Rep, Period>& timeout) {
    return drive(run_kind::until, detail::deadline_after(timeout), nullptr);
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  // Refuses new work from now on; drain runs everything accepted, cancel destroys it (see
  // the file comment). Returns true if this call stopped the executor. A cancel after a
  // drain upgrades it. Never blocks. Thread-safe.
  bool stop(stop_mode mode = stop_mode::drain) noexcept {
    if (mode == stop_mode::cancel) cancel_.store(true, std::memory_order_seq_cst);  // before close: seen with it
    const bool first = queue_.close();
    wake_owner();
    if (first && fd_) arm_wake_fd();  // a foreign loop must call poll() once more to finish
    return first;
  }

  // Waits until the executor has finished (every accepted task ran or was cancelled and
  // on_stop ran); joins the own thread. Call stop() first (or have a task do it). On the
  // owner thread of an adopting executor, outside its tasks, it runs the executor here until
  // it finishes; from inside a task it throws deadlock_error. Thread-safe.
  void join() {
    if (running_in_this_thread()) {
      if (own_thread_ || in_run_)
        throw deadlock_error(std::string("tether: join() on executor '") + name_or_unnamed() +
                                 "' from its own owner thread inside one of its tasks would wait for itself",
                             {name_or_unnamed()});
      if (!finished_.load(std::memory_order_seq_cst)) drive(run_kind::forever, detail::no_deadline, nullptr);
      return;
    }
    if (own_thread_) {
      bool expected = false;
      if (join_claimed_.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {  // acq_rel: one joiner claims the thread
        if (thread_.joinable()) thread_.join();  // not joinable: the thread never started
        joined_.store(true, std::memory_order_seq_cst);
        state_wait_.notify_all();
        return;
      }
      detail::park_until(state_wait_, [this] { return joined_.load(std::memory_order_seq_cst); }, detail::no_deadline);
      return;
    }
    detail::park_until(state_wait_, [this] { return finished_.load(std::memory_order_seq_cst); }, detail::no_deadline);
  }

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
  // task falls due (Linux; elsewhere poll() by the next deadline yourself), and once after
  // stop() so that poll() can finish the stop; poll() quiets it. Throws std::logic_error
  // unless constructed with executor_options::wake_fd. Thread-safe.
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
    return s;
  }
 private:
  friend struct detail::source_access;  // tether::poller watches adopting executors (select.hpp)

  // The jobs hold the core (a private base: the conversion must happen here).
  detail::executor_core* core() noexcept { return this; }
};

}  // namespace tether
