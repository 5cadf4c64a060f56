// SPDX-License-Identifier: MIT
// tether/detail/coro/chain.hpp - what the tasks of one started coroutine share, and how they resume.
//
// spawn() and sync_wait() start a root frame that awaits the user's task; every task that
// task awaits joins the same chain. A chain runs one frame at a time, so it has one place to
// run (its home executor, which schedule() moves), one stop token, and one frame whose
// destruction destroys them all (the root: each frame owns the tasks it awaits).
//
// Resuming a suspended frame means posting it to its home, through the home's reply gate (a
// poster cannot outlive an executor being destroyed; sync_wait's own executor relies on
// that). Every way it can fail still answers, and exactly once:
//   - the home refuses (stopped, or destroyed): the chain is destroyed - on the home's owner
//     when it is still draining (defer_destroy), else here, by the thread that would have
//     resumed it; the root reports executor_stopped to whoever started it;
//   - out of memory for the post: the same allocation-free hand-over resumes the frame on the
//     owner instead, when the owner next finds its queue empty;
//   - a posted resumption destroyed unrun (stop(cancel), on the owner): destroys the chain.
//
// Who may call what: resume_on() - whoever decided the awaited outcome, once per suspension.
// Memory ordering: the executor's hand-over (a release publish, the owner's acquire) orders
// everything before resume_on() before the frame resumes; defer_destroy() is seq_cst.
#pragma once

#include <coroutine>
#include <cstdio>
#include <memory>
#include <optional>
#include <stop_token>
#include <thread>
#include <utility>

#include "../../executor.hpp"
#include "../executor/executor_core.hpp"
#include "../platform/thread_record.hpp"

namespace tether::detail {

// The shared state of one chain. Lives in the root frame's promise.
struct coro_chain : deferred_destroy {
  executor* home = nullptr;            // where the chain's frames run now
  std::shared_ptr<void> home_gate;     // home's reply gate (coro_access::gate_of)
  std::stop_token token;               // from spawn() / sync_wait(); awaits observe it
  std::coroutine_handle<> root;        // destroying it destroys every frame of the chain
  std::coroutine_handle<> waiting;     // the frame an allocation-free resumption resumes
};

// Every promise that may await tether's awaitables derives from this.
struct chained_promise {
  coro_chain* chain = nullptr;
};

template <class P>
inline constexpr bool is_chained = std::is_base_of_v<chained_promise, P>;

// tether's private view of the executor (its reply gate).
struct coro_access {
  using gate = executor::reply_gate;
  static std::shared_ptr<void> gate_of(executor& ex) { return ex.gate_; }
  static gate& as_gate(const std::shared_ptr<void>& g) noexcept { return *static_cast<gate*>(g.get()); }

  // A thread blocked in sync_wait() waits for ex's owner while its chain awaits a call there:
  // the deadlock detector's edge, as a blocking call() has (throws deadlock_error when the
  // edge closes a cycle).
  static void enter_wait(executor& ex, std::optional<blocking_call>& edge) {
    thread_record& me = this_thread_record();
    edge.emplace(me, ex.owner_record_, ex.owner_serial_, ex.name_id_);
    ex.check_cycle(me);
  }
};

// Sets the chain's home (schedule, spawn).
inline void move_home(coro_chain& c, executor& ex) {
  if (c.home == &ex) return;
  c.home_gate = coro_access::gate_of(ex);
  c.home = &ex;
}

// The posted resumption. Run: resumes the frame. Destroyed unrun (stop(cancel), on the
// owner): destroys the chain instead, so the frame never resumes on a stopped executor.
struct resume_job {
  resume_job(std::coroutine_handle<> frame, coro_chain* c) noexcept : h(frame), chain(c) {}
  resume_job(resume_job&& o) noexcept : h(std::exchange(o.h, {})), chain(o.chain) {}
  resume_job& operator=(resume_job&&) = delete;
  void operator()() { std::exchange(h, {}).resume(); }
  ~resume_job() {
    if (h) chain->root.destroy();
  }
  std::coroutine_handle<> h;
  coro_chain* chain;
};

inline void destroy_chain_deferred(deferred_destroy* d) noexcept { static_cast<coro_chain*>(d)->root.destroy(); }
inline void resume_chain_deferred(deferred_destroy* d) noexcept {
  static_cast<coro_chain*>(d)->waiting.resume();  // frames catch their own exceptions
}

// Destroys the chain when nobody is left to run it: here, or - for a caller that must not
// destroy frames where it stands (a notifier inside a parker listener the frame would
// detach, see readable.hpp) - on a thread of its own. No thread to be had: the chain is
// leaked, reachable, with a line on stderr.
inline void destroy_orphan(coro_chain& c, bool here) noexcept {
  if (here) {
    c.root.destroy();
    return;
  }
  try {
    std::thread([root = c.root] { root.destroy(); }).detach();
  } catch (...) {
    keep_leaked(&c);
    std::fputs("tether: a coroutine whose executor had finished could not be destroyed (no thread); it is leaked\n",
               stderr);
  }
}

// Resumes `frame` (a frame of chain c) on c's home. See the file comment for refusals.
// destroy_here: false when the caller must not destroy frames itself (destroy_orphan).
inline void resume_on(coro_chain& c, std::coroutine_handle<> frame, bool destroy_here = true) noexcept {
  // The gate, not the executor: it stays valid (refusing) if the home is being destroyed.
  // Copied: resuming the frame may end the chain (and free c) before post() returns.
  const std::shared_ptr<void> keep = c.home_gate;
  auto& gate = coro_access::as_gate(keep);
  resume_job job(frame, &c);
  bool refused = false;
  try {
    refused = !gate.post(std::move(job), source_location::current());
  } catch (...) {  // out of memory: resume through the allocation-free hand-over
    if (job.h) {
      job.h = {};
      c.waiting = frame;
      c.destroy = &resume_chain_deferred;
      if (gate.defer(&c)) return;
      destroy_orphan(c, destroy_here);  // the home finished meanwhile: nobody is left to resume it
    }
    return;
  }
  if (!refused) return;
  job.h = {};  // not moved from: it still holds the frame
  c.destroy = &destroy_chain_deferred;
  if (gate.defer(&c)) return;       // the owner destroys the chain
  destroy_orphan(c, destroy_here);  // the home finished (or is gone)
}

// sync_wait() blocks its thread while its own executor runs the chain: an executor owned by
// that thread cannot run anything the chain posts to it until sync_wait returns.
inline thread_local int sync_wait_depth = 0;

}  // namespace tether::detail
