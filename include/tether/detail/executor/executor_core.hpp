// SPDX-License-Identifier: MIT
// tether/detail/executor/executor_core.hpp - the owner's side of tether::executor.
//
// executor.hpp holds what callers use (post, submit, call, stop, ...); this holds what they
// feed: the queue of tasks, the owner's loop (due delayed tasks, ready tasks in batches, the
// wake fd, parking when idle), the stop sequence, the queued job types and the counters.
// executor derives from executor_core privately; nothing here is public API.
//
// Who may call what: the owner-side functions (loop, idle_until, run_*, finish_stop,
// quiet_wake_fd, settle_deferred_destroys) - the owner thread only; after_push / wake_owner /
// arm_wake_fd - any producer, after a successful push; defer_destroy - any thread.
//
// Memory ordering: the queue's release publish of each task pairs with the owner's acquire
// (mpsc_queue.hpp). [EA1]/[EA2]: an idle owner raises asleep_ and then checks the queue; a
// producer pushes (a seq_cst claim) and then checks asleep_ - all seq_cst, so one of them
// sees the other (the parker's fence covers the owner's final re-check). [EW1]/[EW2]: the
// wake-fd flag is flipped with acq_rel exchanges on both sides, so the owner's clearing
// exchange synchronizes with every producer whose set came before it (their tasks are
// visible to the owner's re-scan) and every later producer sees the clear and signals again.
// The deferred-destroy stack (defer_destroy) is seq_cst throughout, like asleep_.
// Statistics are relaxed counters written only by the owner; so are the metrics (histograms,
// depth high-water mark, long tasks), which any thread reads through stats().
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "../../errors.hpp"
#include "../../executor_options.hpp"
#include "../../mpsc_queue.hpp"
#include "../../result.hpp"
#include "../wait/call_slot.hpp"
#include "../platform/config.hpp"
#include "../platform/futex.hpp"
#include "../wait/parker.hpp"
#include "task.hpp"
#include "../platform/thread_record.hpp"
#include "timer_heap.hpp"
#include "latency_histogram.hpp"
#include "owner_counter.hpp"
#include "../platform/tick_clock.hpp"
#include "../platform/wake_fd.hpp"

namespace tether::detail {

// The owner's idle wait uses park() (never the adaptive park_until), so every spin phase runs
// in full: park_spin_checks() (parker.hpp) re-checks, then the yields.

// A destruction that needs no allocation to hand over: the node lives in the object to be
// destroyed (confined<T> keeps one beside its T), and destroy(node) frees both.
struct deferred_destroy {
  deferred_destroy* next = nullptr;
  void (*destroy)(deferred_destroy*) noexcept = nullptr;
};

// Nodes whose executor had finished when they were handed over: leaked on purpose (nobody may
// destroy them on the wrong thread), kept reachable here so that leak checkers and debuggers
// find them. Pushed with a seq_cst compare-exchange; never popped.
inline std::atomic<deferred_destroy*> leaked_destroys{nullptr};

inline void keep_leaked(deferred_destroy* d) noexcept {
  deferred_destroy* head = leaked_destroys.load(std::memory_order_seq_cst);
  do d->next = head;
  while (!leaked_destroys.compare_exchange_weak(head, d, std::memory_order_seq_cst));
}

class executor_core {
 protected:
  using clock = std::chrono::steady_clock;

  executor_core(executor_options&& o, bool adopted)
      : own_thread_(!adopted),
        name_(std::move(o.name)),
        name_id_(detail::intern_name(name_)),
        on_start_(std::move(o.on_start)),
        on_stop_(std::move(o.on_stop)),
        around_task_(std::move(o.around_task)),
        on_error_(std::move(o.on_error)),
        fd_(o.wake_fd ? std::make_unique<detail::wake_fd>() : nullptr),
        tracing_(o.metrics || o.before_task || o.after_task || o.on_long_task || o.long_task_threshold.count() > 0),
        clock_(tracing_ ? &detail::tick_clock() : nullptr),
        metrics_(o.metrics ? std::make_unique<metrics_state>() : nullptr),
        before_task_(std::move(o.before_task)),
        after_task_(std::move(o.after_task)),
        on_long_task_(std::move(o.on_long_task)),
        on_park_(std::move(o.on_park)),
        on_unpark_(std::move(o.on_unpark)),
        long_task_ticks_(o.long_task_threshold.count() > 0
                             ? std::max<detail::tick_t>(1, clock_->from_ns(o.long_task_threshold.count()))
                             : 0),
        depth_sample_ticks_(tracing_ ? clock_->from_ns(depth_sample_ns) : 0) {}

  // ---- identity ----------------------------------------------------------------------------

  bool running_in_this_thread() const noexcept { return tls_serial == owner_serial_; }

  void check_owner_thread(std::string_view what) const {
    if (running_in_this_thread()) return;
    std::string subject = std::string("executor '") + name_or_unnamed() + "'";
    if (!what.empty()) subject = std::string(what) + " confined to " + subject;
    throw wrong_thread(wrong_thread_message(subject, owner_record_, owner_serial_,
                                            "hand the work over with post(), submit() or call()"));
  }

  // ---- queued job types ----------------------------------------------------------------------

  // submit(): fulfils the promise, or fails it with executor_stopped if destroyed unrun.
  template <class F, class R>
  struct submit_job {
    template <class G>
    submit_job(const executor_core* e, G&& g, std::promise<R>&& p) : fn(std::forward<G>(g)), promise(std::move(p)), ex(e) {}
    submit_job(submit_job&& o) noexcept(std::is_nothrow_move_constructible_v<F>)
        : fn(std::move(o.fn)), promise(std::move(o.promise)), ex(o.ex), done(std::exchange(o.done, true)) {}
    void operator()() {
      done = true;
      try {
        if constexpr (std::is_void_v<R>) {
          std::invoke(std::move(fn));
          promise.set_value();
        } else {
          promise.set_value(std::invoke(std::move(fn)));
        }
      } catch (...) {
        promise.set_exception(std::current_exception());
      }
    }
    ~submit_job() {
      if (done) return;
      try {
        promise.set_exception(std::make_exception_ptr(executor_stopped(ex->dropped("submit()"))));
      } catch (...) {
        try {
          promise.set_exception(std::current_exception());  // out of memory: bad_alloc instead
        } catch (...) {  // cannot happen (the promise is unsatisfied); its destructor reports
        }
      }
    }
    F fn;
    std::promise<R> promise;
    const executor_core* ex;
    bool done = false;
  };

  // call(): runs the caller's callable in place (it outlives the call) into the caller's slot.
  template <class F, class R>
  struct call_job {
    call_job(const executor_core* e, std::remove_reference_t<F>* f, detail::call_slot<R>* s) noexcept : fn(f), slot(s), ex(e) {}
    call_job(call_job&& o) noexcept : fn(o.fn), slot(std::exchange(o.slot, nullptr)), ex(o.ex) {}
    void operator()() {
      ex->pace_callers();
      std::exchange(slot, nullptr)->run(std::forward<F>(*fn));
    }
    ~call_job() {
      if (slot == nullptr) return;
      try {
        slot->fail(std::make_exception_ptr(executor_stopped(ex->dropped("call()"))));
      } catch (...) {
        slot->fail(std::current_exception());  // out of memory: the caller gets bad_alloc
      }
    }
    std::remove_reference_t<F>* fn;
    detail::call_slot<R>* slot;
    const executor_core* ex;
  };

  // call(f, stop_token): as call_job, into a shared abandonable_call; an abandoned call is
  // skipped (f may be gone with its caller).
  template <class F, class R>
  struct abandonable_call_job {
    abandonable_call_job(const executor_core* e, std::remove_reference_t<F>* f, detail::abandonable_call<R>* s) noexcept
        : fn(f), state(s), ex(e) {}
    abandonable_call_job(abandonable_call_job&& o) noexcept : fn(o.fn), state(std::exchange(o.state, nullptr)), ex(o.ex) {}
    void operator()() {
      detail::abandonable_call<R>* s = std::exchange(state, nullptr);
      if (s->claim()) s->run(std::forward<F>(*fn));
      s->unref();
    }
    ~abandonable_call_job() {
      if (state == nullptr) return;
      if (state->claim()) {
        try {
          state->fail_refused(std::make_exception_ptr(executor_stopped(ex->dropped("call()"))));
        } catch (...) {
          state->fail_refused(std::current_exception());  // out of memory: the caller gets bad_alloc
        }
      }
      state->unref();
    }
    std::remove_reference_t<F>* fn;
    detail::abandonable_call<R>* state;
    const executor_core* ex;
  };

  // post_at(): carries the callable to the owner, which stores it in the timer's state and
  // inserts the timer into its heap; destroyed unrun -> stopped. The callable travels in the
  // registration, not in the state, so that every allocation on the caller's side (the state,
  // the queue's node) happens before the callable is moved: a std::bad_alloc leaves it with
  // the caller. If the owner cannot store or insert it (out of memory) the task is not lost
  // silently: its handle reads failed and its callable is destroyed here, on the owner.
  template <class F>
  struct timer_registration {
    template <class... G>
    timer_registration(executor_core* e, std::shared_ptr<detail::timer_state> s, G&&... g)
        : ex(e), state(std::move(s)), fn(std::forward<G>(g)...) {}
    timer_registration(timer_registration&& o) noexcept(std::is_nothrow_move_constructible_v<F>)
        : ex(o.ex), state(std::move(o.state)), fn(std::move(o.fn)) {}
    executor_core* ex;
    std::shared_ptr<detail::timer_state> state;
    F fn;
    void operator()() noexcept {
      std::shared_ptr<detail::timer_state> s = std::move(state);
      try {
        s->fn = detail::task(std::move(fn));  // may allocate: a callable too large to store inline
        ex->timers_.push(s);                  // a copy: s stays ours if the push throws
      } catch (...) {
        if (s->try_transition(detail::timer_phase::failed)) add(ex->cancelled_, 1);
        s->fn.reset();
        return;
      }
      ex->timers_pending_.store(ex->timers_.size(), std::memory_order_relaxed);  // relaxed: statistic
    }
    ~timer_registration() {
      if (state) state->try_transition(detail::timer_phase::stopped);
    }
  };

  // ---- producer side -------------------------------------------------------------------------

  // Tracing on: queues Job (built from args) inside a traced_job stamped now, from `where`.
  // closed once stopped (args untouched).
  template <class Job, class... Args>
  push_result emplace_traced(const source_location& where, Args&&... args) {
    return queue_.emplace(std::in_place_type<detail::traced_job<Job>>, detail::task_trace{detail::ticks_now(), where},
                          std::forward<Args>(args)...);
  }

  // Returns true if the owner was asleep and this push woke it: its answer is then at least
  // a wake-up away.
  bool after_push() noexcept {
    const bool woke = wake_owner();
    if (fd_) arm_wake_fd();
    return woke;
  }

  // Wakes an owner parked in idle_until(); of the producers that find it asleep, only the
  // one that lowers the flag makes the system call. True if that was this call and the
  // owner was (about to be) asleep in the kernel, not still spinning.
  bool wake_owner() noexcept {
    // [EA2] seq_cst: our push (a seq_cst claim) precedes this load; pairs with [EA1].
    if (asleep_.load(std::memory_order_seq_cst) && asleep_.exchange(false, std::memory_order_seq_cst)) {
      woken_at_.store(clock::now().time_since_epoch().count(), std::memory_order_relaxed);  // relaxed: a hint
      return owner_wait_.notify_one();
    }
    return false;
  }

  // Only the producer that flips the flag false -> true writes the descriptor: one write per
  // batch, however many tasks are posted before the owner drains.
  void arm_wake_fd() noexcept {
    // release publishes our task to the owner's [EW2]; acquire sees its clear.
    if (!wake_pending_.exchange(true, std::memory_order_acq_rel)) fd_->signal();  // [EW1] acq_rel: pairs with [EW2]
  }

  // A destruction handed to the owner without allocating (confined<T>'s fallback when its
  // hand-over post cannot be queued): pushed on an intrusive stack that the owner settles
  // whenever it finds the queue empty (settle_deferred_destroys) and once more, closing it,
  // when it finishes. False once closed (the executor finished): nobody is left to run it.
  // Never blocks. Thread-safe.
  bool defer_destroy(detail::deferred_destroy* d) noexcept {
    detail::deferred_destroy* head = deferred_.load(std::memory_order_seq_cst);
    do {
      if (head == &deferred_closed_) return false;
      d->next = head;
    } while (!deferred_.compare_exchange_weak(head, d, std::memory_order_seq_cst));  // publishes *d to the owner's exchange
    after_push();
    return true;
  }

  // ---- owner side ----------------------------------------------------------------------------

  void thread_main() {
    detail::adopt_record(owner_record_);
    if (!name_.empty()) detail::set_this_thread_name(name_);
    run_hook(on_start_);
    in_run_ = true;
    loop(SIZE_MAX, detail::no_deadline, true, nullptr);
    in_run_ = false;
  }

  // The run family's entry on an adopting executor's owner: checks who calls, then loop().
  std::size_t drive(std::size_t max, detail::steady_time deadline, bool block, const std::stop_token* token) {
    if (own_thread_)
      throw std::logic_error("tether: executor '" + std::string(name_or_unnamed()) +
                             "' runs its own thread; run()/try_run() are for executors constructed with adopt_current_thread");
    check_owner_thread({});
    if (in_run_)
      throw std::logic_error("tether: run()/try_run() on executor '" + std::string(name_or_unnamed()) +
                             "' from inside one of its own tasks");
    in_run_ = true;
    struct leave {
      bool& flag;
      ~leave() { flag = false; }
    } leave_run{in_run_};
    if (token == nullptr) return loop(max, deadline, block, nullptr);
    // A stop request wakes a parked owner with an empty task (skipped when run).
    std::stop_callback wake(*token, [this]() noexcept {
      try {
        if (queue_.push(detail::task{})) after_push();
      } catch (...) {  // out of memory: the owner notices the token at its next wake-up
      }
    });
    return loop(max, deadline, block, token);
  }

  // The one deadline loop behind every run* / try_run* call and the own thread: runs up to
  // `want` user tasks; returns at `deadline` (checked between batches, so a busy executor
  // still returns), when `token` is stopped, or - with block false (the try_ forms) - as soon
  // as nothing is ready instead of parking.
  //
  // Outline:
  //   1. finished, token stopped, or the deadline passed (after the first round) -> return;
  //   2. run due delayed tasks, then up to a batch of ready tasks;
  //   3. queue closed and drained -> finish the stop (timers, on_stop) and return;
  //   4. nothing ready: settle the hand-overs of defer_destroy() (re-scan if it took new
  //      ones); quiet the wake fd (re-scan if a producer signalled); the try_ forms return
  //      here;
  //   5. park in idle_until(min(deadline, next timer)), then go round again.
  std::size_t loop(std::size_t want, detail::steady_time deadline, bool block, const std::stop_token* token) {
    std::size_t n = 0;
    for (bool first = true;; first = false) {
      if (finished_.load(std::memory_order_relaxed)) return n;  // relaxed: only the owner writes it
      if (token != nullptr && token->stop_requested()) return n;
      if (!first && deadline != detail::no_deadline && clock::now() >= deadline) return n;
      n += run_due_timers(want - n);
      if (n >= want) return n;
      const ready_step step = run_ready(want - n);
      n += step.ran;
      if (step.closed) {
        finish_stop();
        return n;
      }
      if (n >= want) return n;
      if (step.more) continue;
      if (settle_deferred_destroys()) continue;
      if (quiet_wake_fd()) continue;
      if (!block) {
        if (timers_.next_deadline() <= clock::now()) continue;  // registered just now, and due
        return n;
      }
      // A stop request's wake-up task may have been taken (and skipped) by this round's
      // run_ready, after the check at the top: look again before parking, or the owner would
      // sleep with the request seen by nobody. (The request is made before that task is
      // pushed, so having taken the task, this load sees it.)
      if (token != nullptr && token->stop_requested()) return n;
      const detail::steady_time until = std::min(deadline, timers_.next_deadline());
      if (until != detail::no_deadline && clock::now() >= until) {
        if (clock::now() >= deadline) return n;
        continue;  // a timer is due
      }
      const auto t0 = clock::now();
      parked_since_ns_.store(t0.time_since_epoch().count(), std::memory_order_relaxed);  // relaxed: statistic
      clock::duration ran_for{0};
      const bool woken = idle_until(until, n, ran_for);
      parked_since_ns_.store(0, std::memory_order_relaxed);  // relaxed: statistic
      add(wait_ns_, clock::now() - t0 - ran_for);  // a task it ran counts as run time only
      if (n >= want) return n;
      if (woken) continue;
      if (deadline != detail::no_deadline && clock::now() >= deadline) return n;
    }
  }

  // Parks the owner until work may be ready, the queue closed, or `until`; false on timeout.
  // Adds to `ran` the task it ran, if any, and to `ran_for` the time that task took.
  //
  // Outline:
  //   0. an owner that keeps catching up with a streaming poster pauses first (stream_);
  //   1. a task claimed but not yet published (a producer between its claim and its
  //      publish): wait in the queue's own pop, which parks on that slot;
  //   2. otherwise raise asleep_ and park on owner_wait_ until a producer lowers it (only
  //      that one producer pays the wake-up system call: the rest see it lowered) or the
  //      queue shows work. While raised, producers flip it; the spin phase catches most.
  // The ring's tail line is the one every push writes. An owner whose last idle period ended
  // within its first quick_checks looks (tasks coming from another core faster than it can
  // look away: coroutine sessions answered by a runtime) reads it (size_approx, is_closed)
  // only when the head shows nothing - in 1, and from the moment asleep_ is up, where the
  // handshake needs it (a claimed slot is seen there before it is published); before that
  // it watches the head, whose line the next task brings anyway. Otherwise (a call answered,
  // the next one a round trip away) it watches the tail from the start: the claim shows
  // there before the task is written, and the owner reaches for the slot sooner.
  bool idle_until(detail::steady_time until, std::size_t& ran, clock::duration& ran_for) {
    if (callers_.load(std::memory_order_relaxed) > 1) {  // relaxed: a hint
      if (const auto y = yield_to_woken_callers(until)) return *y;
    }
    // Spin only while idle periods stay short (after one that outlasted the spin, park at
    // once), while spinning catches the work (see after_idle()), and while at most one caller
    // is blocked in call(): with the queue empty, several callers in call() have all been
    // answered and need cores to come back - a spinning owner would take one from the very
    // threads that feed it.
    const bool spin = spin_when_idle_ && skip_spins_ == 0 && callers_.load(std::memory_order_relaxed) <= 1;  // relaxed: a hint
    // relaxed: the owner's own counter.
    if (spin && stream_.before_wait(static_cast<std::uint32_t>(ran_.load(std::memory_order_relaxed))))
      detail::stream_watch::pause();
    const bool head_only = spin && work_came_quickly_;
    if ((!head_only || !queue_.head_has_item()) && queue_.size_approx() != 0) {
      if (on_park_) run_hook(on_park_);
      pop_result<detail::task> r = queue_.pop_until(until);
      if (on_unpark_) run_hook(on_unpark_);
      if (r) {
        const auto t1 = clock::now();
        ran += run_item(*r);
        r = status::empty;  // destroy the task before timing stops
        ran_for = clock::now() - t1;
        add(run_ns_, ran_for);
      }
      // work_came_quickly_ and stream_ keep what the last parked period said: recording this
      // path as a quick period was tried and measured no different (bench/README.md).
      return !r.is_timeout();
    }
    // Spinning, the flag is raised halfway through park_until's spin: short gaps between
    // tasks cost producers nothing, and it is up (before the parker's fence) when the owner
    // sleeps. Parking at once, it is raised first.
    const int raise_at = spin ? raise_asleep_at : 0;
    int checks = 0;
    // Stores only when needed, here and below: producers read this line on every push, and
    // an owner that rewrote it on every idle period would pull it from them each time.
    if (woken_at_.load(std::memory_order_relaxed) != 0)  // relaxed: a heuristic's input
      woken_at_.store(0, std::memory_order_relaxed);      // relaxed: as above
    if (raise_at == 0) asleep_.store(true, std::memory_order_seq_cst);  // [EA1]
    if (on_park_) run_hook(on_park_);
    const auto t0 = clock::now();
    const bool woken = detail::park(
        owner_wait_,
        [this, &checks, raise_at, head_only] {
          if (++checks == raise_at) asleep_.store(true, std::memory_order_seq_cst);  // [EA1] pairs with [EA2]
          else if (checks > raise_at && !asleep_.load(std::memory_order_seq_cst)) return true;
          if (head_only && checks < raise_at)  // until the flag is up (above)
            return deferred_.load(std::memory_order_seq_cst) != nullptr || queue_.head_has_item();
          return has_work();
        },
        until, spin);
    if (asleep_.load(std::memory_order_relaxed))        // relaxed: only saves producers a wake
      asleep_.store(false, std::memory_order_relaxed);  // relaxed: as above
    // The idle period ended when work arrived (stamped by the waking producer), not when
    // the owner got the core back: a slow wake-up must not keep the owner from spinning.
    const clock::rep woke = woken_at_.load(std::memory_order_relaxed);  // relaxed: as above
    const auto end = woke != 0 ? clock::time_point(clock::duration(woke)) : clock::now();
    after_idle(spin, woken, checks <= detail::park_spin_checks(), end - t0 < short_idle);
    stream_.after_wait(spin && woken && checks == 1);
    work_came_quickly_ = woken && checks <= quick_checks;
    if (on_unpark_) run_hook(on_unpark_);
    return woken;
  }

  // Before the owner parks with several callers blocked: callers it answered that have not
  // run yet will call again as soon as they get a core, and on 2 cores they wait for the
  // owner's. So while any are counted (woken_callers_), the owner gives its core away rather
  // than parking: their next calls find it awake - no wake-up system call on their side, no
  // sleep and wake on the owner's. At most woken_yields yields, each followed by a look at
  // the queue (and at `until`, so a due timer is not held up): true when work came (or a
  // close or a handed-over destruction), false at `until`; nothing when no woken caller is
  // left or the yields ran out (then the owner parks as usual). Measured: bench/README.md,
  // "Many callers".
  std::optional<bool> yield_to_woken_callers(detail::steady_time until) noexcept {
    for (int i = 0; i < woken_yields; ++i) {
      if (woken_callers_.load(std::memory_order_relaxed) == 0) return std::nullopt;  // relaxed: a hint
      yield_to_callers();
      if (has_work()) return true;
      if (until != detail::no_deadline && clock::now() >= until) return false;
    }
    return std::nullopt;
  }
  static constexpr int woken_yields = 64;

  // What ends an idle period: a handed-over destruction, a task, or the close.
  bool has_work() const noexcept {
    return deferred_.load(std::memory_order_seq_cst) != nullptr || queue_.size_approx() != 0 || queue_.is_closed();
  }

  // The owner gives its core to callers it answered (pace_callers, yield_to_woken_callers).
  void yield_to_callers() const noexcept {
    std::this_thread::yield();
    // relaxed: a statistic; owner-only writes, so no read-modify-write.
    owner_yields_.store(owner_yields_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

  // Whether the next idle periods spin. A long period turns the spin off until a short one
  // comes. A short period whose work arrived only after the pause phase (while the owner
  // yielded or slept) means the spin failed: whoever brought the work needed the core the
  // owner spun on (more runnable threads than cores: a thread pinned beside it, a preempted
  // producer). Then the next skip_spins_ periods park at once; the one after probes with a
  // spin, and each failed probe doubles the count (detail::next_spin_skips), so an owner
  // that shares its core wastes a spin only now and then, and one whose spin catches work
  // again spins every time.
  void after_idle(bool spun, bool woken, bool caught_spinning, bool short_period) noexcept {
    spin_when_idle_ = short_period;
    if (!woken) return;  // a deadline, not work: says nothing about the spin
    if (!spun) {
      if (skip_spins_ > 0) --skip_spins_;
      return;
    }
    if (caught_spinning) {
      spin_skip_step_ = 0;
    } else if (short_period) {
      spin_skip_step_ = detail::next_spin_skips(spin_skip_step_);  // the parker's counts: the same trade-off
      skip_spins_ = spin_skip_step_;
    }
  }

  static constexpr int raise_asleep_at = detail::park_spin_checks() / 2;  // 0: before parking at all
  static constexpr int quick_checks = 2;  // an idle period that ended within these: work_came_quickly_
  // An idle period this short would have ended inside park_until's spin.
  static constexpr std::chrono::microseconds short_idle{50};

  // Before answering a call, on the owner: with many callers and few cores, a fast owner wakes
  // callers faster than the cores can run them. The answered ones then wait to run in the
  // kernel's run queue, in no order tether controls, and the unlucky ones for milliseconds:
  // the tail latency of every caller. So while the callers it woke and that have not run yet
  // number at least pace_floor() and an eighth of the callers in call(), the owner gives its
  // core away once before it answers the next: callers then wait in the queue, which is
  // first in, first out, and the run queue stays short. (Measured: bench/README.md,
  // "Many callers".) A caller that spins is never counted, so one or two callers pay
  // nothing but one load per call.
  void pace_callers() const noexcept {
    const std::uint32_t woken = woken_callers_.load(std::memory_order_relaxed);  // relaxed: a hint
    if (woken >= pace_floor() && woken >= callers_.load(std::memory_order_relaxed) / 8)  // relaxed: as above
      yield_to_callers();
  }
  // Twice the cores: fewer woken callers than that can all run at once, or soon.
  static std::uint32_t pace_floor() noexcept {
    static const std::uint32_t floor = 2 * std::max(1u, std::thread::hardware_concurrency());
    return floor;
  }

  struct ready_step {
    std::size_t ran;
    bool more;    // stopped at the batch limit: there may be more
    bool closed;  // closed and drained
  };

  ready_step run_ready(std::size_t max_user) {
    constexpr std::size_t batch = 64;
    const std::size_t limit = std::min(batch, max_user);
    std::size_t ran = 0;
    clock::time_point t0{};
    if (metrics_) note_depth(queue_.size_approx());  // once per batch: the tail's line is the producers'
    // Inside a batch a traced task starts when the one before it ended (run_traced).
    struct batch_scope {
      detail::tick_t& chain;
      batch_scope(detail::tick_t& c) noexcept : chain(c) { chain = 0; }
      ~batch_scope() { chain = no_chain; }
    } scope{chain_};
    const std::size_t taken = queue_.try_pop_each(
        [&](detail::task&& t) {
          if (t0 == clock::time_point{}) t0 = clock::now();
          ran += run_item(t);  // t is destroyed by the queue right after, still inside the batch
        },
        limit);
    if (taken == limit) {
      add(run_ns_, clock::now() - t0);
      return {ran, true, false};
    }
    pop_result<detail::task> r = queue_.try_pop();  // fewer than asked: empty, in flight or closed?
    if (r) {
      if (t0 == clock::time_point{}) t0 = clock::now();
      ran += run_item(*r);
      r = status::empty;
      add(run_ns_, clock::now() - t0);
      return {ran, true, false};
    }
    if (taken != 0) add(run_ns_, clock::now() - t0);
    return {ran, false, r.is_closed()};
  }

  // Runs (or, after stop(cancel), destroys) one dequeued item; returns 1 if it ran a task.
  std::size_t run_item(detail::task& t) {
    if (!t) return 0;  // a wake-up marker
    if (t.is_internal()) {
      try {
        t();
      } catch (...) {
        report_current_exception();
      }
      return 0;
    }
    if (cancel_.load(std::memory_order_relaxed)) {  // relaxed: racing a cancel either way is fine
      t.reset();
      add(cancelled_, 1);
      return 0;
    }
    if (tracing_) [[unlikely]]
      run_traced(t, 0);
    else
      run_user(t);
    add(ran_, 1);
    return 1;
  }

  std::size_t run_due_timers(std::size_t max) {
    if (timers_.empty()) return 0;
    std::size_t n = 0;
    const auto now = clock::now();
    while (n < max) {
      std::shared_ptr<detail::timer_state> t = timers_.pop_due(now);
      if (!t) break;
      if (t->try_transition(detail::timer_phase::running)) {
        if (tracing_) [[unlikely]]
          run_traced(t->fn, clock_->from_steady(t->when));
        else
          run_user(t->fn);
        t->phase.store(detail::timer_phase::ran, std::memory_order_release);  // release: pairs with status()
        add(ran_, 1);
        ++n;
      }
      t->fn.reset();
    }
    timers_pending_.store(timers_.size(), std::memory_order_relaxed);  // relaxed: statistic
    if (n != 0) add(run_ns_, clock::now() - now);
    return n;
  }

  // The queue is closed and drained: settle the delayed tasks, run on_stop, finish.
  void finish_stop() {
    const bool cancelled = cancel_.load(std::memory_order_seq_cst);
    const auto now = clock::now();
    for (std::shared_ptr<detail::timer_state>& t : timers_.take_all()) {
      if (!cancelled && t->when <= now && t->try_transition(detail::timer_phase::running)) {
        if (tracing_) [[unlikely]]
          run_traced(t->fn, clock_->from_steady(t->when));
        else
          run_user(t->fn);
        t->phase.store(detail::timer_phase::ran, std::memory_order_release);  // release: pairs with status()
        add(ran_, 1);
      } else if (t->try_transition(detail::timer_phase::stopped)) {
        add(cancelled_, 1);
      }
      t->fn.reset();
    }
    timers_pending_.store(0, std::memory_order_relaxed);  // relaxed: statistic
    // Every task is done: destroy every hand-over and close the stack (later ones are refused).
    destroy_all(std::exchange(deferred_taken_, nullptr));
    destroy_all(deferred_.exchange(&deferred_closed_, std::memory_order_seq_cst));
    if (fd_) {
      fd_->arm(detail::no_deadline);
      wake_pending_.store(false, std::memory_order_release);  // release: nothing pairs; quiet for good
    }
    run_hook(on_stop_);
    finished_.store(true, std::memory_order_seq_cst);  // seq_cst: the parker handshake's store half
    state_wait_.notify_all();
  }

  // Called when the queue was just found empty. A hand-over may be destroyed only after
  // every task its thread posted before it, so: destroy what an earlier call took (the queue
  // has been found empty since that take, so those tasks have run), then take the newer
  // ones; true if it took any (the caller re-scans the queue before the next settle).
  bool settle_deferred_destroys() noexcept {
    destroy_all(std::exchange(deferred_taken_, nullptr));
    if (deferred_.load(std::memory_order_seq_cst) == nullptr) return false;
    deferred_taken_ = deferred_.exchange(nullptr, std::memory_order_seq_cst);
    return true;
  }

  // Runs the destructions of a list taken from deferred_, oldest first, outside around_task
  // (like the destruction of a cancelled task).
  static void destroy_all(detail::deferred_destroy* d) noexcept {
    detail::deferred_destroy* fifo = nullptr;
    while (d != nullptr) fifo = std::exchange(d, std::exchange(d->next, fifo));  // reverse: oldest first
    while (fifo != nullptr) {
      detail::deferred_destroy* next = fifo->next;
      fifo->destroy(fifo);
      fifo = next;
    }
  }

  // Quiets the wake fd until the next delayed deadline (or the next signal); true if a
  // producer signalled since the last quiet (the caller re-scans: its task may be waiting).
  //
  // Outline:
  //   1. no signal since the last quiet and the deadline unchanged -> nothing to do (a
  //      producer that sets the flag after our load signals the fd itself);
  //   2. arm the fd for the next deadline, which also forgets pending signals;
  //   3. clear the flag: producers that set it after this signal after our arm.
  bool quiet_wake_fd() {
    if (!fd_) return false;
    const detail::steady_time next = timers_.next_deadline();
    // A stale `false` is harmless: that producer's signal comes after this load.
    if (!wake_pending_.load(std::memory_order_acquire) && next == armed_deadline_) return false;  // [EW3] acquire: as [EW2], pairs with [EW1]
    fd_->arm(next);
    armed_deadline_ = next;
    // Acquire pairs with every [EW1] before it (their tasks are visible to our re-scan);
    // release lets later producers see the clear, so they signal after our arm.
    return wake_pending_.exchange(false, std::memory_order_acq_rel);  // [EW2] acq_rel: pairs with [EW1]
  }

  // Tracing on: runs a user task as run_user() does, timing it and calling the task hooks.
  // `due`: a delayed task's deadline (its queue delay counts from then), else 0.
  //
  // Outline:
  //   1. copy the trace (the task's storage is moved from once it runs), stamp the start;
  //   2. before_task (then re-stamp: the hook's time is not the task's);
  //   3. run it; stamp the end; record delay and run time in the histograms;
  //   4. after_task; a long task is counted, its queue depth sampled and reported; a task
  //      of depth_sample_ns or more samples the depth for the high-water mark.
  void run_traced(detail::task& t, detail::tick_t due) {
    const detail::task_trace* tr = t.trace();
    if (tr == nullptr) {  // not stamped (a task queued as such): nothing to measure
      run_user(t);
      return;
    }
    const detail::task_trace trace = *tr;
    const detail::tick_t ready = std::max(trace.enqueued, due);
    // In a batch, the previous task's end (a clock reading saved per task; what the owner did
    // in between - destroying that task, popping this one - counts as this task's).
    detail::tick_t start = chain_ > 0 ? chain_ : detail::ticks_now();
    // A task posted after the previous one ended has a start stamp older than its own post
    // stamp; the readings of two cores may also differ by a few ticks. Neither is a queue
    // delay below zero.
    const detail::tick_t delay = start > ready ? start - ready : 0;
    task_info info;
    const bool hooks = before_task_ || after_task_ || on_long_task_;
    if (hooks)
      info = task_info{trace.where, clock_->to_steady(trace.enqueued), std::chrono::nanoseconds(clock_->to_ns(delay)), {}};
    if (before_task_) {
      run_task_hook(before_task_, info);
      start = detail::ticks_now();
    }
    const std::size_t depth_before = on_long_task_ ? queue_.size_approx() : 0;
    run_user(t);
    const detail::tick_t end = detail::ticks_now();
    const detail::tick_t ran = end - start;
    if (metrics_) {  // in ticks; stats() scales them
      metrics_->delay.record(delay);
      metrics_->run.record(ran);
    }
    if (hooks) info.run_time = std::chrono::nanoseconds(clock_->to_ns(ran));
    if (after_task_) run_task_hook(after_task_, info);
    if (long_task_ticks_ != 0 && ran >= long_task_ticks_) {
      const std::size_t depth_after = queue_.size_approx();
      if (metrics_) {
        note_depth(depth_after);
        add(metrics_->long_tasks, 1);
      }
      if (on_long_task_) {
        try {
          on_long_task_(long_task_report{info, depth_before, depth_after});
        } catch (...) {
          report_current_exception();
        }
      }
    } else if (metrics_ && ran >= depth_sample_ticks_) {
      note_depth(queue_.size_approx());
    }
    if (chain_ != no_chain) chain_ = hooks ? detail::ticks_now() : end;  // the hooks' time is not the next task's
  }

  void run_task_hook(const std::function<void(const task_info&)>& hook, const task_info& info) {
    try {
      hook(info);
    } catch (...) {
      report_current_exception();
    }
  }

  // Raises the depth high-water mark. Owner only.
  void note_depth(std::size_t depth) noexcept {
    detail::owner_raise(metrics_->depth_max, depth);
  }

  // Runs a user task through around_task; exceptions go to the error policy.
  void run_user(detail::task& t) {
    const bool outer = in_task_;
    in_task_ = true;
    try {
      if (around_task_) {
        bool ran = false;
        around_task_(task_view(t, ran));
        if (!ran) throw std::logic_error("tether: executor '" + std::string(name_or_unnamed()) +
                                         "': around_task returned without running the task");
      } else {
        t();
      }
    } catch (...) {
      in_task_ = outer;
      report_current_exception();
      return;
    }
    in_task_ = outer;
  }

  // On the owner thread: runs f now, through around_task unless already inside a task.
  template <class R, class F>
  R run_inline(F&& f) {
    if (in_task_ || !around_task_) {
      const bool outer = in_task_;
      in_task_ = true;
      struct restore {
        bool& flag;
        bool value;
        ~restore() { flag = value; }
      } r{in_task_, outer};
      return std::invoke(std::forward<F>(f));
    }
    detail::call_slot<R> slot;
    detail::task t([&] { slot.run(std::forward<F>(f)); });
    bool ran = false;
    {
      in_task_ = true;
      struct restore {
        bool& flag;
        ~restore() { flag = false; }
      } r{in_task_};
      around_task_(task_view(t, ran));
    }
    if (!ran)
      throw std::logic_error("tether: executor '" + std::string(name_or_unnamed()) +
                             "': around_task returned without running the task");
    return slot.take();
  }

  void run_hook(const std::function<void()>& hook) {
    if (!hook) return;
    try {
      hook();
    } catch (...) {
      report_current_exception();
    }
  }

  // Called inside a catch block.
  void report_current_exception() {
    if (on_error_) {
      on_error_(std::current_exception());
      return;
    }
    std::fprintf(stderr,
                 "tether: an exception escaped a task of executor '%s' and no on_error handler is set\n",
                 name_or_unnamed());
    std::terminate();  // inside the catch block: the runtime prints the exception
  }

  void check_cycle(detail::thread_record& me) const {
    const detail::wait_cycle c = detail::find_cycle(&me, owner_record_, owner_serial_);
    if (c.size == 0) return;
    std::vector<std::string> names{name_or_unnamed()};
    std::string msg = "tether: call() on executor '" + names[0] + "' from " + detail::describe_this_thread() +
                      " would never return: ";
    std::string current = names[0];
    for (std::size_t i = 0; i < c.size; ++i) {
      const detail::wait_link& l = c.links[i];
      const std::string next = l.name != nullptr ? l.name : "(unnamed)";
      msg += "'" + current + "' is owned by " + detail::describe_thread(l.from, l.from_serial) +
             ", which is blocked in call() on '" + next + "'; ";
      names.push_back(next);
      current = next;
    }
    msg += "'" + current + "' is owned by this thread. Make one direction of the cycle asynchronous "
           "(post(), submit() or post_and_reply()).";
    throw deadlock_error(msg, std::move(names));
  }

  std::string refusal(const char* what) const {
    return std::string("tether: executor '") + name_or_unnamed() + "' is stopped and no longer accepts work; " +
           what + " refused";
  }
  std::string dropped(const char* what) const {
    return std::string("tether: executor '") + name_or_unnamed() + "' was stopped (cancel) before a task given to " +
           what + " could run";
  }
  const char* name_or_unnamed() const noexcept { return name_.empty() ? "(unnamed)" : name_.c_str(); }

  // Owner-written counters: load + store, no read-modify-write.
  template <class Rep, class Period>
  static void add(std::atomic<std::uint64_t>& c, std::chrono::duration<Rep, Period> d) noexcept {
    add(c, static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()));
  }
  static void add(std::atomic<std::uint64_t>& c, std::uint64_t v) noexcept { detail::owner_add(c, v); }

  const bool own_thread_;
  const std::string name_;
  const char* const name_id_;  // interned copy for deadlock edges (nullptr: unnamed)
  const std::function<void()> on_start_;
  const std::function<void()> on_stop_;
  const std::function<void(task_view)> around_task_;
  const std::function<void(std::exception_ptr)> on_error_;
  const std::unique_ptr<detail::wake_fd> fd_;
  // Metrics and tracing, fixed at construction.
  struct metrics_state {
    // Written by the owner (run_traced, note_depth), read by stats().
    detail::latency_histogram delay;  // accepted -> started, ticks
    detail::latency_histogram run;    // started -> returned, ticks
    std::atomic<std::size_t> depth_max{0};
    std::atomic<std::uint64_t> long_tasks{0};
  };
  // A task this long (or longer) makes the owner sample the queue depth after it: a backlog
  // worth recording builds up while the owner is busy, and one cross-core read per 10 us of
  // work costs nothing measurable.
  static constexpr std::int64_t depth_sample_ns = 10'000;
  const bool tracing_;                             // tasks carry a task_trace
  const detail::tick_calibration* const clock_;    // set when tracing_
  const std::unique_ptr<metrics_state> metrics_;   // set with executor_options::metrics
  const std::function<void(const task_info&)> before_task_;
  const std::function<void(const task_info&)> after_task_;
  const std::function<void(const long_task_report&)> on_long_task_;
  const std::function<void()> on_park_;
  const std::function<void()> on_unpark_;
  const detail::tick_t long_task_ticks_;     // 0: no threshold
  const detail::tick_t depth_sample_ticks_;
  static constexpr detail::tick_t no_chain = -1;  // chain_ outside a batch

  detail::thread_record* owner_record_ = nullptr;  // set once by the constructor
  std::uint64_t owner_serial_ = 0;                 // set once by the constructor

  mpsc_queue<detail::task> queue_;

  // Set by producers that find it clear (then they signal fd_), cleared by the owner.
  alignas(detail::cache_line) std::atomic<bool> wake_pending_{false};
  // Raised by the owner before it parks in idle_until(); lowered by the producer that wakes
  // it (or by the owner when it wakes up).
  std::atomic<bool> asleep_{false};
  // The owner parks here when idle. Symmetric fences: producers notify it only after they
  // flipped asleep_ (a seq_cst exchange, [EA2]), so the full fence costs them nothing extra,
  // while the owner - which parks whenever it runs dry - is spared a membarrier per park.
  detail::parker owner_wait_{detail::fences::symmetric};
  // When the producer that lowered asleep_ did so (steady ticks; 0: none since the owner
  // parked). Written by that producer, read by the owner to judge how long it was idle.
  std::atomic<clock::rep> woken_at_{0};
  // Callers blocked in call() right now (a spin-or-park hint): written by each caller.
  alignas(detail::cache_line) std::atomic<std::uint32_t> callers_{0};
  // Callers in call() whose answer woke them and who have not run since (pace_callers): raised
  // by the owner's wake-up, lowered by the caller once it runs (call_slot::count_wakes_in).
  std::atomic<std::uint32_t> woken_callers_{0};
  mutable std::atomic<std::uint64_t> owner_yields_{0};  // pace_callers' yields: owner writes, stats() reads
  // Destructions handed over by defer_destroy(): pushed by any thread, emptied by the owner;
  // &deferred_closed_ once the owner finished.
  std::atomic<detail::deferred_destroy*> deferred_{nullptr};
  detail::deferred_destroy deferred_closed_{};  // a marker, never run
  detail::deferred_destroy* deferred_taken_ = nullptr;  // owner only: taken, destroyed at the next settle
  // Set once by stop(cancel); read by the owner.
  std::atomic<bool> cancel_{false};
  // Set once by the owner when finished; read by joiners and is_finished().
  std::atomic<bool> finished_{false};
  // Own thread: claimed by the one joiner that calls thread_.join(); joined_ set after it.
  std::atomic<bool> join_claimed_{false};
  std::atomic<bool> joined_{false};
  detail::parker state_wait_;  // joiners park here

  // Owner only.
  alignas(detail::cache_line) detail::timer_heap timers_;
  detail::steady_time armed_deadline_ = detail::no_deadline;  // what fd_ is armed for
  bool spin_when_idle_ = true;  // the last idle period was short
  std::uint16_t skip_spins_ = 0;      // idle periods left that park at once (after_idle)
  std::uint16_t spin_skip_step_ = 0;  // the last count set; 0: the last spin caught its work
  bool in_run_ = false;   // inside run()/try_run() (or the own thread's loop)
  bool in_task_ = false;  // inside a task (inline calls then skip around_task)
  bool work_came_quickly_ = false;  // the last idle period ended within quick_checks (idle_until)
  // Inside run_ready(), the end of the last traced task of the batch (0: none yet); no_chain
  // outside a batch. Here, not beside owner_serial_: it is written per batch, and every
  // caller's running_in_this_thread() reads owner_serial_.
  detail::tick_t chain_ = no_chain;

  // Statistics: written by the owner, read by stats().
  std::atomic<std::uint64_t> ran_{0};
  // Owner only. An owner that keeps catching up with a streaming poster finds the queue empty
  // after nearly every task and, looking at once, pulls the line the poster is writing: the
  // two hand a line back and forth per task. So it follows a queue consumer's stream policy
  // (park_until_streaming in parker.hpp): after stream_quick_waits idle periods in a row that
  // ended at its first look, it pauses before looking, until an idle period follows a single
  // task (a ping-pong) or the pause was not enough.
  detail::stream_watch stream_;
  std::atomic<std::uint64_t> cancelled_{0};
  std::atomic<std::uint64_t> wait_ns_{0};
  std::atomic<std::uint64_t> run_ns_{0};
  std::atomic<clock::rep> parked_since_ns_{0};  // steady-clock ticks when the owner parked; 0: awake
  std::atomic<std::size_t> timers_pending_{0};

  std::thread thread_;  // last: started once everything above exists
};

}  // namespace tether::detail
