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
//     when it is still draining (defer_destroy); by the home's destructor once its owner has
//     stopped, when the destructor has begun (the owner may still be inside one of the
//     chain's frames, finishing an await: never destroyed under it); else, the home gone,
//     here, by the thread that would have resumed it. The root reports executor_stopped to
//     whoever started it;
//   - out of memory for the post: the same allocation-free hand-over resumes the frame on the
//     owner instead, when the owner next finds its queue empty;
//   - a posted resumption destroyed unrun (stop(cancel), on the owner): destroys the chain.
//
// Who may call what: resume_on() - whoever decided the awaited outcome, once per suspension.
// Memory ordering: the executor's hand-over (a release publish, the owner's acquire) orders
// everything before resume_on() before the frame resumes; defer_destroy() is seq_cst.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <stop_token>
#include <thread>
#include <utility>

#include "../../executor.hpp"
#include "../executor/executor_core.hpp"
#include "../platform/fence.hpp"
#include "../platform/thread_record.hpp"
#include "../wait/parker.hpp"

namespace tether::detail {

struct coro_chain;

// A suspended await that a stop request on the chain's token cancels (co_call arms one per
// suspension). fire() runs on the requesting thread; it may resume the frame elsewhere or
// destroy the chain where it stands.
struct stop_hook {
  void (*fire)(stop_hook&) noexcept = nullptr;
  void* target = nullptr;             // what fire() cancels
  std::atomic<bool> fired{false};     // set by the chain's stop callback once fire() returned
  bool* destroyed = nullptr;          // the callback's flag while fire() runs (see disarm_stop)
};
inline thread_local const stop_hook* firing_hook = nullptr;  // the hook this thread's fire() runs

// The chain's one stop callback (registered at its first armed await, not per await: a
// std::stop_callback costs a lock of the stop state to register and one to remove).
struct chain_stop {
  coro_chain* chain;
  void operator()() noexcept;
};

// The shared state of one chain. Lives in the root frame's promise.
struct coro_chain : deferred_destroy {
  executor* home = nullptr;            // where the chain's frames run now
  std::shared_ptr<void> home_gate;     // home's reply gate (coro_access::gate_of)
  std::stop_token token;               // from spawn() / sync_wait(); awaits observe it
  std::coroutine_handle<> root;        // destroying it destroys every frame of the chain
  std::coroutine_handle<> waiting;     // the frame an allocation-free resumption resumes
  // The armed hook (a stop_hook*), | 1 once the stop callback took it to fire; 0: none. A
  // chain runs one frame at a time, so at most one await is armed.
  std::atomic<std::uintptr_t> armed{0};
  std::optional<std::stop_callback<chain_stop>> on_stop;  // last: removed before the rest goes
};

// Outline: take the armed hook (mark it | 1), fire it, then - unless fire() destroyed the
// chain here - say so through the hook. Touches neither the chain nor this callback after
// fire(): either may be gone.
inline void chain_stop::operator()() noexcept {
  full_fence();  // request_stop()'s write before the load below; pairs with arm_stop()'s fence
  std::atomic<std::uintptr_t>& armed = chain->armed;
  std::uintptr_t w = armed.load(std::memory_order_relaxed);  // relaxed: the CAS below decides
  do {
    if (w == 0 || (w & 1) != 0) return;  // nothing armed
  } while (!armed.compare_exchange_weak(w, w | 1, std::memory_order_acq_rel));  // acq_rel: the hook's setup
  stop_hook& h = *reinterpret_cast<stop_hook*>(w);
  bool destroyed = false;
  h.destroyed = &destroyed;
  const stop_hook* const outer = std::exchange(firing_hook, &h);
  h.fire(h);
  firing_hook = outer;
  if (destroyed) return;
  h.destroyed = nullptr;
  h.fired.store(true, std::memory_order_release);  // release: fire()'s effects before disarm_stop() returns
  exit_parker_for(&h).notify_all();               // a static parker: h may be gone once fired is seen
}

// Arms h for the chain's current await (its home thread, after the await is set up; the
// chain's token can stop). If the stop was requested before the callback could see h, fires
// h here (as a std::stop_callback constructed on a stopped token runs at once).
inline void arm_stop(coro_chain& c, stop_hook& h) {
  // release: h's fields before the callback's acq_rel CAS takes it (the order against the
  // stop request comes from the fences).
  c.armed.store(reinterpret_cast<std::uintptr_t>(&h), std::memory_order_release);
  if (!c.on_stop) {
    c.on_stop.emplace(c.token, chain_stop{&c});  // fires h at once if the stop came first
    return;
  }
  full_fence();  // our arming before the load below; pairs with chain_stop's fence
  if (!c.token.stop_requested()) return;
  std::uintptr_t w = reinterpret_cast<std::uintptr_t>(&h);
  // acq_rel: one of this CAS and the callback's takes h (the callback ran before we armed).
  if (c.armed.compare_exchange_strong(w, 0, std::memory_order_acq_rel)) h.fire(h);
}

// Disarms h when its await ends (resumed, or its frame destroyed). If the stop callback took
// h, waits until fire() has returned - unless this is fire() itself destroying the chain.
inline void disarm_stop(coro_chain& c, stop_hook& h) noexcept {
  std::uintptr_t w = reinterpret_cast<std::uintptr_t>(&h);
  // acq_rel: against the callback's CAS, which takes h first or finds nothing armed.
  if (c.armed.compare_exchange_strong(w, 0, std::memory_order_acq_rel)) return;  // never taken
  if (w != (reinterpret_cast<std::uintptr_t>(&h) | 1)) return;  // not armed (or fired by arm_stop)
  if (firing_hook == &h) {
    *h.destroyed = true;  // inside fire(), on this thread: it must not touch h afterwards
    return;
  }
  park_until(exit_parker_for(&h), [&h] { return h.fired.load(std::memory_order_acquire); }, no_deadline);  // acquire: pairs with chain_stop
  c.armed.store(0, std::memory_order_relaxed);  // relaxed: the chain's own thread re-arms it
}

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

  // A poller's engine (select.hpp; a template, so this header needs not include it).
  template <class Poller>
  static auto& core_of(Poller& p) noexcept {
    return p.core_;
  }

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

inline void destroy_orphan(coro_chain& c, bool here) noexcept;

// Destroys the chain where it is safe: on the home's owner while it runs (defer), by the
// home's destructor once its owner has stopped (the owner may still be inside one of the
// chain's frames, finishing an await), or here once the owner is done.
inline void destroy_refused(coro_access::gate& gate, coro_chain& c, bool destroy_here) noexcept {
  c.destroy = &destroy_chain_deferred;
  switch (gate.defer(&c)) {
    case coro_access::gate::deferral::deferred:
      return;
    case coro_access::gate::deferral::closing:
      if (gate.adopt_orphan(&c)) return;
      break;  // buried already: the owner has stopped
    case coro_access::gate::deferral::owner_done:
      break;
  }
  destroy_orphan(c, destroy_here);
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
inline void resume_on(coro_chain& c, std::coroutine_handle<> frame, bool destroy_here = true,
                      coro_access::gate* home = nullptr) noexcept {
  // The gate, not the executor: it stays valid (refusing) if the home is being destroyed.
  // Not copied: c (which holds it) lives until the frame resumes, and once we are inside
  // the gate a live home's destructor waits for us to leave before it lets its own
  // reference go, so the gate outlives this call even if the resumed frame ends the chain.
  // `home`: the same gate, read from c by the awaiting thread before it suspended.
  auto& gate = home != nullptr ? *home : coro_access::as_gate(c.home_gate);
  resume_job job(frame, &c);
  bool refused = false;
  try {
    refused = !gate.post(std::move(job), source_location::current());
  } catch (...) {  // out of memory: resume through the allocation-free hand-over
    if (job.h) {
      job.h = {};
      c.waiting = frame;
      c.destroy = &resume_chain_deferred;
      if (gate.defer(&c) == coro_access::gate::deferral::deferred) return;
      destroy_refused(gate, c, destroy_here);  // the home is going: nobody is left to resume it
    }
    return;
  }
  if (!refused) return;
  job.h = {};  // not moved from: it still holds the frame
  destroy_refused(gate, c, destroy_here);
}

// sync_wait() blocks its thread while its own executor runs the chain: an executor owned by
// that thread cannot run anything the chain posts to it until sync_wait returns.
inline thread_local int sync_wait_depth = 0;

}  // namespace tether::detail
