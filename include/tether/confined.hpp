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
// any, propagates). The destructor does not block: it hands T to the owner, which destroys
// it after every task posted before (inline when destroyed on the owner). Destroy confined
// objects before their executor stops; if it no longer accepts work, T is destroyed on the
// destroying thread, as no owner is left to do it.
//
// Memory ordering: whatever executor hand-offs give: T's construction happens-before every
// task that uses it (call() returns after it), and those tasks happen-before its
// destruction (queued after them).
#pragma once

#include <functional>
#include <future>
#include <memory>
#include <type_traits>
#include <utility>

#include "detail/platform/config.hpp"
#include "detail/platform/thread_record.hpp"
#include "errors.hpp"
#include "executor.hpp"

namespace tether {

template <class T>
class TETHER_CAPABILITY("confined object") confined {
 public:
  template <class... Args>
  explicit confined(executor& owner, Args&&... args) : ex_(owner) {
    value_ = ex_.call([&] { return std::make_unique<T>(std::forward<Args>(args)...); });
  }

  ~confined() {
    if (!value_) return;
    auto destroy = [v = std::move(value_)]() mutable noexcept { v.reset(); };
    if (!ex_.dispatch(std::move(destroy))) destroy();  // not moved from when refused
  }

  confined(const confined&) = delete;
  confined& operator=(const confined&) = delete;

  // Runs f(T&) on the owner and returns its result (rethrows its exception); inline on the
  // owner thread. Blocks elsewhere; deadlock_error / executor_stopped as executor::call.
  template <class F>
  std::invoke_result_t<F&&, T&> with(F&& f) {
    T* v = value_.get();
    return ex_.call([&]() -> std::invoke_result_t<F&&, T&> { return std::invoke(std::forward<F>(f), *v); });
  }

  // Queues f(T&); the future carries the result or exception (executor_stopped when
  // refused or cancelled). Never blocks. Throws executor_stopped once stopped.
  template <class F>
  auto async_with(F&& f) {
    return ex_.submit([v = value_.get(), fn = std::forward<F>(f)]() mutable -> decltype(auto) {
      return std::invoke(std::move(fn), *v);
    });
  }

  // Queues f(T&), fire and forget (exceptions go to the executor's on_error). false once
  // stopped.
  template <class F>
  bool post_with(F&& f) {
    return ex_.post([v = value_.get(), fn = std::forward<F>(f)]() mutable { std::invoke(std::move(fn), *v); });
  }

  // T itself, on the owner thread; throws wrong_thread naming both threads elsewhere.
  T& local() {
    check_owner();
    return *value_;
  }

  // Throws wrong_thread unless on the owner thread; asserts the capability for clang's
  // -Wthread-safety.
  void check_owner() const TETHER_ASSERT_CAPABILITY(this) {
    ex_.check_owner("tether::confined<" + detail::type_name<T>() + ">");
  }

  executor& get_executor() const noexcept { return ex_; }

 private:
  executor& ex_;
  std::unique_ptr<T> value_;  // written at construction and destruction only
};

}  // namespace tether
