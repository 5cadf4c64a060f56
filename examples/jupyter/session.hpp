// SPDX-License-Identifier: MIT
// examples/jupyter/session.hpp - one subshell's request handler: what a shell request does
// to the Guile runtime, and what it publishes on iopub.
//
// The router makes one session per subshell on that subshell's thread (the parent's on the
// thread that constructs the router, so its Guile mode comes from the parent executor's
// on_start instead). A session runs one request at a time, in the order its subshell received
// them; different sessions run at once over the one shared top-level module.
//
// Who may call what: shared_state - any thread (as each member says); a session - its
// subshell's thread only.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include <tether/executor.hpp>
#include <tether/mpsc_queue.hpp>

#include "wire.hpp"

namespace tether_jupyter {

using steady_clock = std::chrono::steady_clock;

// What travels through the router to a subshell: the request, and when the main thread read it
// off the socket (stop_on_error aborts what was received before the error).
struct shell_request {
  message msg;
  steady_clock::time_point received{};
};

// Shared by the main thread and every session.
class shared_state {
 public:
  shared_state(std::string session_id, tether::executor& interrupter)
      : session(std::move(session_id)), interrupter_(interrupter) {}

  const std::string session;          // header.session of everything the kernel sends
  tether::mpsc_queue<message> iopub;  // any thread pushes; the main thread sends

  void publish(const message& parent, std::string_view msg_type, json content) {
    (void)iopub.push(make_iopub(parent, msg_type, std::move(content), session));
  }
  void status(const message& parent, const char* state) { publish(parent, "status", {{"execution_state", state}}); }

  // The In[] counter, one for the whole kernel (every subshell shares the history).
  int next_execution_count() { return execution_count_.fetch_add(1, std::memory_order_relaxed) + 1; }
  int execution_count() const { return execution_count_.load(std::memory_order_relaxed); }

  void record_history(int line, const std::string& input, std::optional<std::string> output);
  json history(const json& request);

  // Posts an interrupt of cell to the thread in Guile mode that delivers them.
  void interrupt(void* guile_thread, std::uint64_t cell);

  // Set once by the main thread when a shutdown_request came: cells not yet started are
  // refused instead of run (the running ones are interrupted).
  std::atomic<bool> shutting_down{false};

 private:
  struct history_entry {
    int line;
    std::string input;
    std::optional<std::string> output;
  };
  std::atomic<int> execution_count_{0};  // relaxed: a counter, nothing is published with it
  std::mutex history_mutex_;              // guards history_; never held around user code
  std::vector<history_entry> history_;
  tether::executor& interrupter_;
};

class session {
 public:
  explicit session(shared_state& shared) : shared_(shared) {}

  // Handles one shell request: publishes its iopub messages (busy first) and returns the reply.
  // The caller sends the reply, then publishes idle. stop_of: the request's std::stop_token
  // (tether::reply_sender::stop_token(), asked for only by a cell that runs), stopped when an
  // interrupt_request names this subshell while the request runs.
  message handle(shell_request&& r, const std::function<std::stop_token()>& stop_of);

 private:
  message execute(shell_request& r, const std::function<std::stop_token()>& stop_of);

  shared_state& shared_;
  steady_clock::time_point abort_before_{};  // stop_on_error: requests received before this are aborted
};

// kernel_info_reply's content (any thread: no Guile call).
json kernel_info_content();

}  // namespace tether_jupyter
