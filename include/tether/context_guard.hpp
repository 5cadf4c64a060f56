// SPDX-License-Identifier: MIT
// tether/context_guard.hpp - install a thread-local "current context" for a scope.
//
//   struct julia_tag { using context_type = jl_task_t; };   // or use the context type itself
//   {
//     tether::context_guard<julia_tag> g{task};   // tether::current<julia_tag>() == task
//     ...                                          // nests; restored on exit and on throw
//   }
//
// Each Tag has one slot per thread holding a pointer (nullptr when nothing is installed) and
// a stack of guards. A guard installs its pointer and restores the previous one when it is
// destroyed. Guards must be destroyed in the reverse order of construction on the thread
// that made them; a guard destroyed out of order (possible only through heap or optional
// guards) or on another thread would restore a stale value, so it prints what happened and
// terminates the process instead (as tokio panics for misordered runtime guards).
//
// An executor installs a context around every task with
//   executor_options{.around_task = tether::install_context<julia_tag>(task)}.
//
// Who may call what: current<Tag>() - any thread, for itself. A guard - the thread that
// constructed it.
// Memory ordering: none; every slot is thread-local.
#pragma once

#include <cstdio>
#include <exception>
#include <type_traits>
#include <utility>

#include "detail/platform/thread_record.hpp"

namespace tether {

namespace detail {

template <class Tag, class = void>
struct context_type_of {
  using type = Tag;
};
template <class Tag>
struct context_type_of<Tag, std::void_t<typename Tag::context_type>> {
  using type = typename Tag::context_type;
};

template <class Tag>
struct context_slot {
  static inline constinit thread_local typename context_type_of<Tag>::type* value = nullptr;
  static inline constinit thread_local const void* top = nullptr;  // innermost live guard
};

[[noreturn]] inline void context_order_violation(const char* tag) noexcept {
  std::fprintf(stderr,
               "tether: context_guard<%s> destroyed out of order or on another thread than the one "
               "that installed it; restoring would leave a stale context. Keep guards scoped.\n",
               tag);
  std::terminate();
}

}  // namespace detail

// The context type a guard for Tag installs: Tag::context_type if Tag declares one, else Tag.
template <class Tag>
using context_t = typename detail::context_type_of<Tag>::type;

// The pointer installed by the innermost live context_guard<Tag> on this thread, or nullptr.
template <class Tag>
context_t<Tag>* current() noexcept {
  return detail::context_slot<Tag>::value;
}

template <class Tag>
class context_guard {
  using slot = detail::context_slot<Tag>;

 public:
  explicit context_guard(context_t<Tag>* value) noexcept : previous_(slot::value), outer_(slot::top) {
    slot::value = value;
    slot::top = this;
  }
  ~context_guard() {
    if (slot::top != this) detail::context_order_violation(detail::type_name<Tag>().c_str());
    slot::value = previous_;
    slot::top = outer_;
  }
  context_guard(const context_guard&) = delete;
  context_guard& operator=(const context_guard&) = delete;

  // The value this guard replaced (what current<Tag>() returns after it).
  context_t<Tag>* previous() const noexcept { return previous_; }

 private:
  context_t<Tag>* previous_;
  const void* outer_;
};

// An around_task wrapper for executor_options: installs `value` for Tag around every task.
template <class Tag>
auto install_context(context_t<Tag>* value) {
  return [value](auto&& run) {
    context_guard<Tag> guard{value};
    std::forward<decltype(run)>(run)();
  };
}

}  // namespace tether
