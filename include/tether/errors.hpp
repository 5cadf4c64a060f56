// SPDX-License-Identifier: MIT
// tether/errors.hpp - the exceptions tether throws for misuse and for refused work.
//
// Each message says what happened, who was involved (threads by id and name, executors by
// name) and what to do instead.
//
//   wrong_thread      (std::logic_error)   - an object confined to one thread was used from
//                                             another; thrown by thread_checker, confined<T>,
//                                             executor::check_owner and the owner-only calls.
//   deadlock_error    (std::logic_error)   - a blocking call() would complete a wait cycle and
//                                             never return; thrown instead of hanging.
//   executor_stopped  (std::runtime_error) - the executor no longer accepts work (submit, call),
//                                             or stop(cancel) destroyed a task before it ran
//                                             (delivered through that task's future, call or
//                                             post_and_reply reply), or a reply executor
//                                             refused a reply (to the sender's on_error).
//   operation_cancelled (std::runtime_error) - a stop request abandoned an awaited call before
//                                             it ran (co_call, co_with); the call never runs.
//   (post, dispatch and post_and_reply report refusal as a value: push_result, closed; waits
//   that return a status report a stop request as status::cancelled.)
//
// Who may call what: these are plain exception types; any thread.
// Memory ordering: none (no shared state).
#pragma once

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tether {

class wrong_thread : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

class deadlock_error : public std::logic_error {
 public:
  // executors: the names of the executors in the cycle, starting with the one called.
  deadlock_error(const std::string& what, std::vector<std::string> executors)
      : std::logic_error(what), executors_(std::move(executors)) {}
  const std::vector<std::string>& executors() const noexcept { return executors_; }

 private:
  std::vector<std::string> executors_;
};

class executor_stopped : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class operation_cancelled : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace tether
