// A replaced global operator new / delete that fails one chosen allocation on demand.
//
// Include this header in exactly one translation unit of a program: it defines the
// replacement functions (every standard form of operator new and new[]: plain, aligned,
// nothrow and aligned nothrow, with their matching deletes), which must not be inline.
//
// Off by default: every allocation is a plain malloc / posix_memalign. arm(scope, n):
//   scope::this_thread - the n-th allocation from now on made by the calling thread fails;
//   scope::any_thread  - the n-th allocation from now on made by any thread fails;
//   n == 0             - nothing fails, allocations are only counted (a counting pass).
// A failure throws std::bad_alloc (a nothrow form returns nullptr) and disarms: one failure
// per arming. disarm() ends the armed region and returns how many allocations it saw (up
// to and including the failed one). injected() says whether the failure happened.
//
// The hooks read thread_local and atomic state only (no allocation, no lock), so they are
// safe on any thread, including ones the library starts.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace fault_alloc {

enum class scope { this_thread, any_thread };

namespace state {
// this_thread arming: set and read by the armed thread only.
inline thread_local bool tl_armed = false;
inline thread_local long tl_countdown = 0;  // > 0: fail when it reaches 1
inline thread_local long tl_seen = 0;
// any_thread arming.
inline std::atomic<bool> any_armed{false};
inline std::atomic<long> any_countdown{0};
inline std::atomic<long> any_seen{0};
inline std::atomic<long> failures{0};  // injected failures since the last arm()
}  // namespace state

// true: this allocation must fail.
inline bool should_fail() noexcept {
  using namespace state;
  if (tl_armed) {
    ++tl_seen;
    if (tl_countdown > 0 && --tl_countdown == 0) {
      failures.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
  }
  if (any_armed.load(std::memory_order_relaxed)) {
    any_seen.fetch_add(1, std::memory_order_relaxed);
    long n = any_countdown.load(std::memory_order_relaxed);
    while (n > 0) {
      if (any_countdown.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) {
        if (n == 1) {
          failures.fetch_add(1, std::memory_order_relaxed);
          return true;
        }
        break;
      }
    }
  }
  return false;
}

inline void arm(scope s, long n) noexcept {
  using namespace state;
  failures.store(0);
  if (s == scope::this_thread) {
    tl_seen = 0;
    tl_countdown = n;
    tl_armed = true;
  } else {
    any_seen.store(0);
    any_countdown.store(n);
    any_armed.store(true);
  }
}

// Ends the armed region of scope s; returns the allocations it saw.
inline long disarm(scope s) noexcept {
  using namespace state;
  if (s == scope::this_thread) {
    tl_armed = false;
    tl_countdown = 0;
    return tl_seen;
  }
  any_armed.store(false);
  any_countdown.store(0);
  return any_seen.load();
}

inline bool injected() noexcept { return state::failures.load() != 0; }

inline void* allocate(std::size_t size) noexcept {
  if (should_fail()) return nullptr;
  return std::malloc(size == 0 ? 1 : size);
}
inline void* allocate_aligned(std::size_t size, std::align_val_t align) noexcept {
  if (should_fail()) return nullptr;
  void* p = nullptr;
  std::size_t a = static_cast<std::size_t>(align);
  if (a < sizeof(void*)) a = sizeof(void*);
  return posix_memalign(&p, a, size == 0 ? 1 : size) == 0 ? p : nullptr;
}

// Not inlined into the deletes: g++ would otherwise see free() on the result of new at every
// inlined delete and warn (-Wmismatched-new-delete), though new here is malloc.
__attribute__((noinline)) inline void release(void* p) noexcept { std::free(p); }

}  // namespace fault_alloc

// ---- the replacement functions ----------------------------------------------------------------

void* operator new(std::size_t size) {
  if (void* p = fault_alloc::allocate(size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
  if (void* p = fault_alloc::allocate(size)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, std::align_val_t align) {
  if (void* p = fault_alloc::allocate_aligned(size, align)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size, std::align_val_t align) {
  if (void* p = fault_alloc::allocate_aligned(size, align)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return fault_alloc::allocate(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return fault_alloc::allocate(size); }
void* operator new(std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
  return fault_alloc::allocate_aligned(size, align);
}
void* operator new[](std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
  return fault_alloc::allocate_aligned(size, align);
}

void operator delete(void* p) noexcept { fault_alloc::release(p); }
void operator delete[](void* p) noexcept { fault_alloc::release(p); }
void operator delete(void* p, std::size_t) noexcept { fault_alloc::release(p); }
void operator delete[](void* p, std::size_t) noexcept { fault_alloc::release(p); }
void operator delete(void* p, std::align_val_t) noexcept { fault_alloc::release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { fault_alloc::release(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { fault_alloc::release(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { fault_alloc::release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { fault_alloc::release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { fault_alloc::release(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { fault_alloc::release(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { fault_alloc::release(p); }
