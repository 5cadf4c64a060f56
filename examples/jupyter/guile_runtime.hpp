// SPDX-License-Identifier: MIT
// examples/jupyter/guile_runtime.hpp - GNU Guile as the kernel's runtime, one evaluating
// thread per subshell.
//
// Guile keeps its per-thread state in thread-local storage: a thread that never entered
// "Guile mode" must not call it. Every subshell thread calls enter_guile_mode() once (the
// executor's on_start hook) and evaluates only there; all of them share the top-level module
// (guile-user), so a variable defined in one subshell is visible in every other. Output ports
// are per thread: while run_cell() runs, what the cell writes to its current output and error
// ports goes to the sink of that call, line by line.
//
// Interrupting: each evaluating thread has a guile_target; interrupt(target, cell) - called
// on another thread in Guile mode (the kernel keeps one for that) - queues a Guile async on
// the target thread that throws 'kernel-interrupt there if that cell is still the one
// running. It reaches the thread at Guile's next safe point, also inside (sleep n).
//
// Who may call what: every function below - a thread that has called enter_guile_mode(),
// except cell_id_source (any thread).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tether_jupyter {

// Puts the calling thread in Guile mode (scm_init_guile), once; the first call in the process
// also initialises Guile and defines the kernel's helpers. Sets the thread's current module to
// guile-user and its output and error ports to the per-thread capturing ports.
void enter_guile_mode();

// Where a cell's output goes. stream: name is "stdout" or "stderr". The others serve the
// procedures enter_guile_mode() defines in guile-user for rich output:
//   (jupyter-display mime text)   - display_data with one representation (and text/plain)
//   (jupyter-clear-output [wait]) - clear_output
//   (jupyter-page text)           - a "page" payload on the execute reply
struct cell_io {
  std::function<void(std::string_view name, std::string text)> stream;
  std::function<void(std::string mime, std::string text)> display;
  std::function<void(bool wait)> clear_output;
  std::function<void(std::string text)> page;
};

struct cell_outcome {
  bool ok = true;
  bool interrupted = false;
  std::optional<std::string> result;  // ok: the last value, written; none when unspecified
  std::string ename, evalue;          // error
  std::vector<std::string> traceback; // error
};

// Evaluates every form of code in guile-user, in order; the value of the last one is the
// result. cell: an id unique in the process (interrupt() names it).
cell_outcome run_cell(std::string_view code, std::uint64_t cell, const cell_io& io);

// "complete", "incomplete" or "invalid".
std::string completeness(std::string_view code);

struct completion {
  std::vector<std::string> matches;
  std::size_t cursor_start = 0;  // in code points, as the protocol counts
  std::size_t cursor_end = 0;
};
// The bindings visible from the top-level module that start with the word before cursor_pos.
completion complete(std::string_view code, std::size_t cursor_pos);

// What the name at cursor_pos is bound to, with its documentation; none if unbound.
std::optional<std::string> inspect(std::string_view code, std::size_t cursor_pos);

// The evaluating thread, as interrupt() names it.
struct guile_target {
  void* thread = nullptr;  // the thread's SCM object (protected from the collector)
  explicit operator bool() const noexcept { return thread != nullptr; }
};
guile_target this_guile_thread();

// Queues an interrupt of cell on target; it takes effect only if that cell still runs.
void interrupt(guile_target target, std::uint64_t cell);

// Process-wide source of cell ids (never 0).
std::uint64_t next_cell_id();

}  // namespace tether_jupyter
