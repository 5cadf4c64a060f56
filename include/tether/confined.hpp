// SPDX-License-Identifier: MIT
// tether/confined.hpp - a T that lives, is used and dies on one executor's owner thread.
//
//   tether::executor owner{{.name = "lua"}};
//   tether::confined<lua_vm> vm{owner};                          // constructed on the owner
//   int n = vm.with([](lua_vm& l) { return l.eval("return 6*7"); });   // from any thread
//   std::future<int> f = vm.async_with([](lua_vm& l) { return l.top(); });
//   vm.post_with([](lua_vm& l) { l.gc(); });
//
// For runtimes that must only ever be touched by the thread that created them (Julia's C
// API, a lua_State, Tk): every access goes through the owner, so no caller can touch T from
// the wrong thread by accident.
//
// Who may call what: with / async_with / post_with - any thread (with() runs inline on the
// owner and blocks elsewhere, deadlock-checked as executor::call). local() / check_owner() -
// the owner thread only (wrong_thread elsewhere). The destructor - any thread.
//
// Lifetime: the constructor blocks until T is constructed on the owner (its exception, if
// any, propagates). The destructor does not block and cannot fail: on the owner thread it
// destroys T at once; elsewhere it hands T to the owner, which destroys it after every task
// posted before. The hand-over needs no allocation when the queue cannot take it (out of
// memory, or the executor is stopped but still draining): a node kept beside T since
// construction goes on an intrusive list the owner empties before it finishes. Once the
// executor has finished, nobody may destroy T on the right thread, so T is leaked on purpose
// (as Chromium's SequenceBound does), never destroyed on the wrong thread: a line on stderr
// names the type and the executor, and the object stays reachable for leak checkers. So
// destroy confined objects before their executor finishes.
//
// Memory ordering: whatever executor hand-offs give: T's construction happens-before every
// task that uses it (call() returns after it), and those tasks happen-before its
// destruction (queued after them).
#pragma once

#include <cstdio>
#include <functional>
#include <future>
#include <memory>
#include <stop_token>
#include <type_traits>
#include <utility>

#include "detail/platform/config.hpp"
#include "detail/platform/thread_record.hpp"
#include "errors.hpp"
#include "executor.hpp"
#include "result.hpp"

namespace tether {

template <class T>
class TETHER_CAPABILITY("confined object") confined {
 public:
  template <class... Args>
  explicit confined(executor& owner, Args&&... args) : ex_(owner) {
    node_ = ex_.call([&] { return std::make_unique<node>(std::forward<Args>(args)...); });
  }

  ~confined() {
    if (!node_) return;
    node* n = node_.release();
    if (ex_.running_in_this_thread()) {
      node::destroy_node(n);
      return;
    }
    destroy_job job{n};
    try {
      (void)ex_.post(std::move(job));  // accepted: job is moved from (its node null)
    } catch (...) {  // out of memory: the allocation-free hand-over below
    }
    if (job.n == nullptr) return;
    job.n = nullptr;
    if (ex_.defer_destroy(n)) return;
    detail::keep_leaked(n);  // reachable, for leak checkers
    try {
      std::fprintf(stderr,
                   "tether: confined<%s> destroyed after its executor '%s' finished; the object is leaked, "
                   "not destroyed on the wrong thread (destroy confined objects before their executor stops)\n",
                   detail::type_name<T>().c_str(), ex_.name().empty() ? "(unnamed)" : ex_.name().c_str());
    } catch (...) {  // out of memory for the type's name
      std::fputs("tether: a confined object outlived its executor and is leaked\n", stderr);
    }
  }

  confined(const confined&) = delete;
  confined& operator=(const confined&) = delete;

  // Each takes a last, defaulted `loc` (the caller's line), which reaches the executor's
  // metrics hooks and long-task reports as the task's posted-from location.

  // Runs f(T&) on the owner and returns its result (rethrows its exception); inline on the
  // owner thread. Blocks elsewhere; deadlock_error / executor_stopped as executor::call.
  template <class F>
  std::invoke_result_t<F&&, T&> with(F&& f, const source_location& loc = source_location::current()) {
    T* v = &node_->value;
    return ex_.call([&]() -> std::invoke_result_t<F&&, T&> { return std::invoke(std::forward<F>(f), *v); }, loc);
  }

  // As with(f), abandoned when `token` is stopped before f starts (operation_cancelled; f
  // never runs); see executor::call(f, stop_token).
  template <class F>
  std::invoke_result_t<F&&, T&> with(F&& f, std::stop_token token, const source_location& loc = source_location::current()) {
    T* v = &node_->value;
    return ex_.call([&]() -> std::invoke_result_t<F&&, T&> { return std::invoke(std::forward<F>(f), *v); },
                    std::move(token), loc);
  }

  // Queues f(T&); the future carries the result or exception (executor_stopped when
  // refused or cancelled). Never blocks. Throws executor_stopped once stopped.
  template <class F>
  auto async_with(F&& f, const source_location& loc = source_location::current()) {
    return ex_.submit(
        [v = &node_->value, fn = std::forward<F>(f)]() mutable -> decltype(auto) { return std::invoke(std::move(fn), *v); },
        loc);
  }

  // Queues f(T&), fire and forget (exceptions go to the executor's on_error): ok, or closed
  // once stopped (f not moved from).
  template <class F>
  push_result post_with(F&& f, const source_location& loc = source_location::current()) {
    return ex_.post([v = &node_->value, fn = std::forward<F>(f)]() mutable { std::invoke(std::move(fn), *v); }, loc);
  }

  // T itself, on the owner thread; throws wrong_thread naming both threads elsewhere.
  T& local() {
    check_owner();
    return node_->value;
  }

  // Throws wrong_thread unless on the owner thread; asserts the capability for clang's
  // -Wthread-safety.
  void check_owner() const TETHER_ASSERT_CAPABILITY(this) {
    // The name (a demangling, an allocation) only for the error: every call on the owner passes here.
    if (ex_.running_in_this_thread()) return;
    ex_.check_owner("tether::confined<" + detail::type_name<T>() + ">");
  }

  executor& get_executor() const noexcept { return ex_; }

 private:
  // T and the hand-over node its destruction needs, allocated together on the owner.
  struct node : detail::deferred_destroy {
    template <class... Args>
    explicit node(Args&&... args) : value(std::forward<Args>(args)...) {
      destroy = &destroy_node;
    }
    static void destroy_node(detail::deferred_destroy* d) noexcept { delete static_cast<node*>(d); }
    T value;
  };

  // The queued destruction: run, or destroyed unrun by stop(cancel) (on the owner), it
  // destroys T.
  struct destroy_job {
    explicit destroy_job(node* p) noexcept : n(p) {}
    destroy_job(destroy_job&& o) noexcept : n(std::exchange(o.n, nullptr)) {}
    void operator()() noexcept { node::destroy_node(std::exchange(n, nullptr)); }
    ~destroy_job() {
      if (n != nullptr) node::destroy_node(n);
    }
    node* n;
  };

  executor& ex_;
  std::unique_ptr<node> node_;  // written at construction and destruction only
};

}  // namespace tether
