// SPDX-License-Identifier: MIT
// tether/executor_options.hpp - how an executor is set up, and what it reports.
//
//   tether::executor ex{{.name = "julia",
//                        .on_start = [] { init_runtime(); },
//                        .around_task = tether::install_context<julia_tag>(task),
//                        .on_error = [](std::exception_ptr e) { log(e); }}};
//
// The vocabulary of executor.hpp: the adopt_current_thread tag, stop modes, executor_options,
// the task_view an around_task wrapper receives and timer_status; executor_stats and the
// records the tracing hooks receive are in executor_stats.hpp (included).
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
#include "executor_stats.hpp"

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

  // ---- metrics and tracing (docs/executor.md, "Metrics and tracing") ----
  // Record queue delay and run time histograms, the queue depth high-water mark and long
  // tasks, for stats(). Off: the task path is exactly the untraced one.
  bool metrics = false;
  // Tracing is on when metrics is, or any of the task hooks or long_task_threshold below is
  // set: each task then carries where it was posted from and when. The hooks run on the owner thread,
  // with no lock held; an exception from one goes to on_error.
  std::function<void(const task_info&)> before_task{};  // just before the task (run_time 0)
  std::function<void(const task_info&)> after_task{};   // just after it returned or threw
  // Tasks that ran for long_task_threshold or longer (zero: never) are counted in
  // stats().long_tasks and passed to on_long_task (if set).
  std::chrono::nanoseconds long_task_threshold{0};
  std::function<void(const long_task_report&)> on_long_task{};
  // The owner thread is about to park (nothing to run) / has woken up. Need no tracing.
  std::function<void()> on_park{};
  std::function<void()> on_unpark{};
};

// What became of a delayed task (timer_handle::status()). failed: the owner could not
// register it (out of memory growing its timer heap); it never runs.
enum class timer_status : std::uint8_t { pending, running, ran, cancelled, stopped, failed };

}  // namespace tether
