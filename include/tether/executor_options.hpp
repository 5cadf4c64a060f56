// SPDX-License-Identifier: MIT
// tether/executor_options.hpp - how an executor is set up, and what it reports.
//
//   tether::executor ex{{.name = "julia",
//                        .on_start = [] { init_runtime(); },
//                        .around_task = tether::install_context<julia_tag>(task),
//                        .on_error = [](std::exception_ptr e) { log(e); }}};
//
// The vocabulary of executor.hpp: the adopt_current_thread tag, stop modes, executor_options,
// the task_view an around_task wrapper receives, executor_stats and timer_status.
//
// Who may call what: plain values; any thread. A task_view - the owner thread, inside
// around_task, exactly once.
// Memory ordering: none (no shared state).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>

#include "detail/executor/task.hpp"

namespace tether {

namespace detail {
class executor_core;
}  // namespace detail

// Constructing an executor with this tag makes the calling thread its owner.
struct adopt_current_thread_t {
  explicit adopt_current_thread_t() = default;
};
inline constexpr adopt_current_thread_t adopt_current_thread{};

// stop(drain): run everything accepted, then stop; stop(cancel): destroy it unrun.
enum class stop_mode : std::uint8_t { drain, cancel };
inline constexpr stop_mode drain = stop_mode::drain;
inline constexpr stop_mode cancel = stop_mode::cancel;

// The task an around_task wrapper must run, exactly once.
class task_view {
 public:
  void operator()() const {
    if (*ran_) throw std::logic_error("tether::task_view: a task may run only once");
    *ran_ = true;
    (*task_)();
  }

 private:
  friend class detail::executor_core;
  task_view(detail::task& t, bool& ran) noexcept : task_(&t), ran_(&ran) {}
  detail::task* task_;
  bool* ran_;
};

struct executor_options {
  std::string name{};                // in thread names, error messages and deadlock reports
  std::function<void()> on_start{};  // owner thread, before the first task
  std::function<void()> on_stop{};   // owner thread, after the last task
  // Wraps every task (install context guards here); must call its argument exactly once.
  std::function<void(task_view)> around_task{};
  // Receives exceptions escaping post()ed tasks and hooks, on the owner thread. Unset: the
  // process terminates. An exception it throws leaves run() (or terminates the own thread).
  std::function<void(std::exception_ptr)> on_error{};
  bool wake_fd = false;  // export a descriptor readable while tasks are pending (wake_fd())
};

// Snapshot of an executor's counters; every field may be stale (relaxed reads).
struct executor_stats {
  std::uint64_t tasks_posted = 0;     // approx: run + cancelled + queued + delayed pending
  std::uint64_t tasks_run = 0;
  std::uint64_t tasks_cancelled = 0;  // destroyed unrun by stop(cancel), or delayed and stopped / failed
  std::size_t queue_depth = 0;        // approx
  std::size_t timers_pending = 0;     // delayed tasks waiting for their deadline
  std::chrono::nanoseconds wait_time{0};  // owner parked, waiting for work
  std::chrono::nanoseconds run_time{0};   // owner running tasks
};

// What became of a delayed task (timer_handle::status()). failed: the owner could not
// register it (out of memory growing its timer heap); it never runs.
enum class timer_status : std::uint8_t { pending, running, ran, cancelled, stopped, failed };

}  // namespace tether
