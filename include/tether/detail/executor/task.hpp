// SPDX-License-Identifier: MIT
// tether/detail/executor/task.hpp - a move-only, small-buffer `void()` callable: what executors queue.
//
// Like std::move_only_function<void()> (C++23), with a buffer sized so that a task fills one
// cache line: callables of up to 56 bytes whose move constructor does not throw live inside
// the task (no allocation); larger ones, over-aligned ones and ones with a throwing move go to
// the heap. A task is invoked at most once, as an rvalue, so `&&`-qualified call operators and
// move-only captures both work.
//
// A task may be marked internal (executor bookkeeping, e.g. "insert this timer"): the
// executor runs it without the user's around_task wrapper and does not count it.
//
// A task may carry a trace (traced_job<F>: where it was posted from and when), which the
// executor reads through trace() when tracing is on; a plain task is the same 64 bytes, and
// only the static table of a traced callable says where its trace is.
//
// Who may call what: a task is a value; one thread at a time.
// Memory ordering: none (no shared state).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "../platform/source_location.hpp"
#include "../platform/tick_clock.hpp"

namespace tether::detail {

// Where and when a traced task was accepted.
struct task_trace {
  tick_t enqueued;              // tick_clock reading at post time
  source_location where;   // the caller of post / submit / call / ...
};

// A callable with its trace; what a tracing executor queues instead of the callable alone.
template <class F>
struct traced_job {
  template <class... Args>
  explicit traced_job(const task_trace& t, Args&&... args) : trace(t), fn(std::forward<Args>(args)...) {}
  traced_job(traced_job&&) = default;
  void operator()() { std::invoke(std::move(fn)); }
  task_trace trace;
  F fn;
};

template <class F>
inline constexpr bool is_traced_job = false;
template <class F>
inline constexpr bool is_traced_job<traced_job<F>> = true;

struct internal_task_t {
  explicit internal_task_t() = default;
};
inline constexpr internal_task_t internal_task{};

class task {
 public:
  static constexpr std::size_t buffer_size = 56;
  static constexpr std::size_t buffer_align = alignof(void*);

  // True if F is stored inside the task (no allocation).
  template <class F>
  static constexpr bool stored_inline = sizeof(F) <= buffer_size && alignof(F) <= buffer_align &&
                                        std::is_nothrow_move_constructible_v<F>;

  task() noexcept = default;

  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, task> &&
                                              !std::is_same_v<std::decay_t<F>, internal_task_t>>>
  task(F&& f) {  // NOLINT: implicit, like std::function
    emplace<std::decay_t<F>, false>(std::forward<F>(f));
  }

  template <class F, class... Args>
  explicit task(std::in_place_type_t<F>, Args&&... args) {
    emplace<F, false>(std::forward<Args>(args)...);
  }

  template <class F, class... Args>
  task(internal_task_t, std::in_place_type_t<F>, Args&&... args) {
    emplace<F, true>(std::forward<Args>(args)...);
  }

  task(task&& other) noexcept : ops_(other.ops_) {
    if (ops_ != nullptr) {
      ops_->relocate(other.buffer_, buffer_);
      other.ops_ = nullptr;
    }
  }
  task& operator=(task&& other) noexcept {
    if (this != &other) {
      reset();
      if (other.ops_ != nullptr) {
        other.ops_->relocate(other.buffer_, buffer_);
        ops_ = other.ops_;
        other.ops_ = nullptr;
      }
    }
    return *this;
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;
  ~task() { reset(); }

  explicit operator bool() const noexcept { return ops_ != nullptr; }
  bool is_internal() const noexcept { return ops_ != nullptr && ops_->internal; }
  bool is_inline() const noexcept { return ops_ != nullptr && ops_->inline_storage; }

  // The callable's trace; nullptr unless it is a traced_job.
  const task_trace* trace() const noexcept {
    return ops_ != nullptr && ops_->trace != nullptr ? ops_->trace(buffer_) : nullptr;
  }

  // Runs the callable (at most once). Precondition: not empty.
  void operator()() { ops_->invoke(buffer_); }

  // Destroys the callable now (its destructor runs here).
  void reset() noexcept {
    if (ops_ != nullptr) {
      const ops* o = ops_;
      ops_ = nullptr;
      o->destroy(buffer_);
    }
  }

 private:
  struct ops {
    void (*invoke)(void* buffer);
    void (*relocate)(void* from, void* to) noexcept;  // move-construct into `to`, destroy `from`
    void (*destroy)(void* buffer) noexcept;
    const task_trace* (*trace)(const void* buffer) noexcept;  // nullptr: not traced
    bool internal;
    bool inline_storage;
  };

  template <class F, class Ops>
  static constexpr auto trace_fn() noexcept -> const task_trace* (*)(const void*) noexcept {
    if constexpr (is_traced_job<F>) return &Ops::trace;
    else return nullptr;
  }

  template <class F, bool Internal>
  struct inline_ops {
    static F* get(void* b) noexcept { return std::launder(static_cast<F*>(b)); }
    static void invoke(void* b) { std::invoke(std::move(*get(b))); }
    static void relocate(void* from, void* to) noexcept {
      ::new (to) F(std::move(*get(from)));
      get(from)->~F();
    }
    static void destroy(void* b) noexcept { get(b)->~F(); }
    static const task_trace* trace(const void* b) noexcept {
      return &std::launder(static_cast<const F*>(b))->trace;
    }
    static constexpr ops table{&invoke, &relocate, &destroy, trace_fn<F, inline_ops>(), Internal, true};
  };

  template <class F, bool Internal>
  struct heap_ops {
    static F*& get(void* b) noexcept { return *std::launder(static_cast<F**>(b)); }
    static void invoke(void* b) { std::invoke(std::move(*get(b))); }
    static void relocate(void* from, void* to) noexcept { ::new (to) F*(get(from)); }
    static void destroy(void* b) noexcept { delete get(b); }
    static const task_trace* trace(const void* b) noexcept {
      return &(*std::launder(static_cast<F* const*>(b)))->trace;
    }
    static constexpr ops table{&invoke, &relocate, &destroy, trace_fn<F, heap_ops>(), Internal, false};
  };

  template <class F, bool Internal, class... Args>
  void emplace(Args&&... args) {
    static_assert(std::is_invocable_v<F&&>, "tether: a task must be callable with no arguments");
    static_assert(std::is_nothrow_destructible_v<F>, "tether: a task's destructor must not throw");
    if constexpr (stored_inline<F>) {
      ::new (static_cast<void*>(buffer_)) F(std::forward<Args>(args)...);
      ops_ = &inline_ops<F, Internal>::table;
    } else {
      ::new (static_cast<void*>(buffer_)) F*(new F(std::forward<Args>(args)...));
      ops_ = &heap_ops<F, Internal>::table;
    }
  }

  alignas(buffer_align) unsigned char buffer_[buffer_size];
  const ops* ops_ = nullptr;
};

static_assert(sizeof(task) == 64, "a task fills one cache line");

}  // namespace tether::detail
