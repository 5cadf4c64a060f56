// SPDX-License-Identifier: MIT
// tether/detail/router/subshell.hpp - one subshell as the router sees it, and the handler
// and factory it runs, with the user's callables type-erased.
//
// router.hpp holds what users touch (router, reply_sender) and engine.hpp the router's
// engine; this holds what the engine keeps for each subshell: its executor, its handler, the
// counters stats() reports, the cancel code its queued tasks answer with and the stop state of
// the message it runs. Also the virtual handler and factory through which the
// router calls the user's callables without knowing their types, and the static slots where
// the reaper waits for the parent's last answers. Nothing here is public API.
//
// reply_sender and router_engine are only declared here: router.hpp defines both before it
// instantiates anything below.
//
// Who may call what: each router_subshell field as its comment says; router_child_thread_of -
// set on a child subshell's own thread, read by join() on the calling thread.
// Memory ordering: [RA1]/[RA2] and [RC1]/[RC2] on answered and cancel_code are engine.hpp's
// (see its banner); [RS1]/[RS2] on phase are here, next to the code.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <stop_token>
#include <type_traits>
#include <utility>
#include <vector>

#include "../../executor.hpp"
#include "../../router_messages.hpp"
#include "../platform/config.hpp"
#include "../wait/parker.hpp"

namespace tether {

template <class Payload, class Reply>
class reply_sender;

namespace detail {

template <class Payload, class Reply>
class router_engine;

// A payload as the router carries it: moving it never throws. A Payload whose own move may
// throw lives on the heap (allocated by send(), on the sender's thread, where a failure is
// the sender's), so the router thread only ever moves a pointer; any other is held inline.
template <class Payload>
class payload_box {
 public:
  static constexpr bool boxed = !std::is_nothrow_move_constructible_v<Payload>;

  template <class P>
  explicit payload_box(std::in_place_t, P&& p) : v_(make(std::forward<P>(p))) {}
  payload_box(payload_box&&) noexcept = default;
  payload_box& operator=(payload_box&&) noexcept = default;

  Payload& get() noexcept {
    if constexpr (boxed) {
      return *v_;
    } else {
      return v_;
    }
  }

 private:
  using storage = std::conditional_t<boxed, std::unique_ptr<Payload>, Payload>;
  template <class P>
  static storage make(P&& p) {
    if constexpr (boxed) {
      return std::make_unique<Payload>(std::forward<P>(p));
    } else {
      return Payload(std::forward<P>(p));
    }
  }
  storage v_;
};

// The router whose child subshell the calling thread runs, if any (join() refuses there).
inline constinit thread_local const void* router_child_thread_of = nullptr;

template <class Payload, class Reply>
struct router_handler {
  virtual ~router_handler() = default;
  virtual void handle(Payload&& p, reply_sender<Payload, Reply>& reply) = 0;
};

template <class Payload, class Reply>
struct router_factory {
  virtual ~router_factory() = default;
  virtual std::unique_ptr<router_handler<Payload, Reply>> make(subshell_id id) = 0;
};

// One subshell as the router sees it.
template <class Payload, class Reply>
struct router_subshell {
  router_subshell(router_engine<Payload, Reply>* r, subshell_id i, routing_errc unrun) noexcept
      : owner(r), id(i), unrun_code(unrun) {}

  router_engine<Payload, Reply>* const owner;
  const subshell_id id;
  const routing_errc unrun_code;  // for a task destroyed unrun with no cancel code set
  executor* ex = nullptr;          // the parent's executor, or own_ex
  std::unique_ptr<executor> own_ex;  // children only
  // Made, used and destroyed on the subshell's thread (the parent's: see router.hpp's banner).
  std::unique_ptr<router_handler<Payload, Reply>> handler;

  // Router thread only: messages routed here, and those routed in the current inbox batch and
  // not yet handed to the executor (one task per subshell per batch; see serve_inbox()).
  std::uint64_t accepted_local = 0;
  std::vector<std::pair<std::uint64_t, payload_box<Payload>>> staged;
  // A copy of accepted_local for stats and the reaper: written by the router thread.
  std::atomic<std::uint64_t> accepted{0};
  // Raised by whichever thread finishes a message (the subshell's, or the router's when its
  // executor refuses the task); read by stats and the reaper. Off the router's line.
  alignas(detail::cache_line) std::atomic<std::uint64_t> answered{0};
  std::atomic<std::uint64_t> failed{0};  // written as answered; read by stats
  // 0, or the routing_errc with which queued tasks answer instead of running: set by the
  // router thread (delete or shutdown with cancel), read by the subshell's tasks.
  std::atomic<std::uint8_t> cancel_code{0};

  // ---- interruption: the stop state of the message running now ----
  // phase says whether a handler runs and whether its message has a stop state yet. The
  // subshell thread moves it idle -> running -> idle around each handler call without a lock;
  // a stop state is made on demand, by the first stop_token() (subshell thread) or
  // interrupt() (router thread) for that message, so a message nobody asks about or
  // interrupts takes no lock and allocates nothing. Only those two take stop_mutex, and only
  // they move running -> stopping, under it; stop is touched only under it. The mutex is never
  // held while a stop callback runs (request_stop() is called after unlocking).
  // An interrupt hits the message running when it takes effect (its move to stopping, or its
  // read of stopping): one aimed at a message that has just ended and been followed by the
  // next hits the next, as it would under any lock.
  enum : std::uint8_t { idle = 0, running = 1, stopping = 2 };
  std::atomic<std::uint8_t> phase{idle};
  std::mutex stop_mutex;
  std::stop_source stop{std::nostopstate};

  // Subshell thread, before the handler. relaxed: no data is published with it; the stop
  // state is published under stop_mutex, and stats() reads busy as a statistic.
  void begin_message() noexcept { phase.store(running, std::memory_order_relaxed); }
  void end_message() noexcept {
    // acq_rel [RS1]: pairs with the move to stopping ([RS2]), made under stop_mutex. Seeing
    // stopping, we take the lock to drop the stop state; seeing running, no stop state was
    // made for this message (the RMW reads the last value in phase's modification order, so
    // a later move to stopping would have found idle and given up).
    if (phase.exchange(idle, std::memory_order_acq_rel) != stopping) return;
    std::stop_source done{std::nostopstate};
    {
      std::lock_guard lock(stop_mutex);
      done.swap(stop);
    }
  }
  // Any thread: a handler runs now (stats).
  bool busy() const noexcept { return phase.load(std::memory_order_relaxed) != idle; }  // a statistic

  // The running message's token (a token that never stops outside a handler). May throw
  // std::bad_alloc (the first call for a message allocates its stop state).
  std::stop_token stop_token() {
    std::lock_guard lock(stop_mutex);
    if (!make_stop_state()) return {};
    return stop.get_token();
  }
  // Requests stop for the running message; false when none runs. Its stop callbacks run here,
  // on the calling thread, after the lock is released. May throw std::bad_alloc.
  bool interrupt() {
    std::stop_source target{std::nostopstate};
    {
      std::lock_guard lock(stop_mutex);
      if (!make_stop_state()) return false;
      target = stop;
    }
    target.request_stop();
    return true;
  }

 private:
  // Under stop_mutex: true when a message runs, with its stop state made.
  bool make_stop_state() {
    std::uint8_t p = phase.load(std::memory_order_relaxed);  // relaxed: the CAS below decides
    if (p == idle) return false;
    if (p == stopping) return true;
    std::stop_source fresh;  // may throw std::bad_alloc; nothing changed yet
    // acq_rel [RS2]: pairs with [RS1]. Fails when the message ended meanwhile.
    if (!phase.compare_exchange_strong(p, stopping, std::memory_order_acq_rel, std::memory_order_relaxed)) {
      return false;
    }
    stop = std::move(fresh);
    return true;
  }
};

// Where the reaper waits for the parent's last answers (answered == accepted). Static: the
// parent's thread notifies after its last count, when the router may already be gone.
struct alignas(cache_line) router_settle_slot {
  parker settled;
};
inline router_settle_slot router_settle_slots[16];

inline parker& router_settle_parker(const void* subshell) noexcept {
  return router_settle_slots[(reinterpret_cast<std::uintptr_t>(subshell) / cache_line) % 16].settled;
}

template <class Payload, class Reply, class H>
struct router_handler_impl final : router_handler<Payload, Reply> {
  explicit router_handler_impl(H&& h) : fn(std::move(h)) {}
  void handle(Payload&& p, reply_sender<Payload, Reply>& reply) override {
    if constexpr (std::is_invocable_v<H&, Payload&&, reply_sender<Payload, Reply>&>) {
      std::invoke(fn, std::move(p), reply);
    } else if constexpr (std::is_invocable_r_v<Reply, H&, Payload&&, std::stop_token>) {
      reply.send(Reply(std::invoke(fn, std::move(p), reply.stop_token())));
    } else {
      reply.send(Reply(std::invoke(fn, std::move(p))));
    }
  }
  H fn;
};

// A handler of either form (see router.hpp's banner).
template <class H, class Payload, class Reply>
inline constexpr bool router_handler_v = std::is_invocable_v<H&, Payload&&, reply_sender<Payload, Reply>&> ||
                                         std::is_invocable_r_v<Reply, H&, Payload&&, std::stop_token> ||
                                         std::is_invocable_r_v<Reply, H&, Payload&&>;

template <class Payload, class Reply, class F>
struct router_factory_impl final : router_factory<Payload, Reply> {
  explicit router_factory_impl(F&& f) : fn(std::move(f)) {}
  std::unique_ptr<router_handler<Payload, Reply>> make(subshell_id id) override {
    using H = std::decay_t<std::invoke_result_t<F&, subshell_id>>;
    return std::make_unique<router_handler_impl<Payload, Reply, H>>(std::invoke(fn, id));
  }
  F fn;
};

}  // namespace detail

}  // namespace tether
