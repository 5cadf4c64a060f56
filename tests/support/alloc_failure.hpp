// Out-of-memory on demand, one thread at a time: while a failing_allocations scope is alive
// on a thread, every operator new on that thread throws std::bad_alloc (other threads
// allocate normally).
//
// The header replaces the global operator new / delete (plain, aligned and nothrow), so include it in
// exactly one translation unit of a test program. They are kept out of line, so that g++ does
// not see malloc paired with operator delete (-Wmismatched-new-delete).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

namespace tether_test {

inline thread_local bool allocations_fail = false;
inline thread_local long allocations_refused = 0;

struct failing_allocations {
  failing_allocations() noexcept { allocations_fail = true; }
  ~failing_allocations() { allocations_fail = false; }
  failing_allocations(const failing_allocations&) = delete;
  failing_allocations& operator=(const failing_allocations&) = delete;
};

inline void* checked_alloc(std::size_t n, std::size_t align) {
  if (allocations_fail) {
    ++allocations_refused;
    throw std::bad_alloc();
  }
  if (n == 0) n = 1;
  void* p = align <= alignof(std::max_align_t) ? std::malloc(n) : std::aligned_alloc(align, (n + align - 1) / align * align);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

}  // namespace tether_test

[[gnu::noinline]] void* operator new(std::size_t n) { return tether_test::checked_alloc(n, alignof(std::max_align_t)); }
[[gnu::noinline]] void* operator new[](std::size_t n) { return tether_test::checked_alloc(n, alignof(std::max_align_t)); }
[[gnu::noinline]] void* operator new(std::size_t n, std::align_val_t a) { return tether_test::checked_alloc(n, static_cast<std::size_t>(a)); }
[[gnu::noinline]] void* operator new[](std::size_t n, std::align_val_t a) { return tether_test::checked_alloc(n, static_cast<std::size_t>(a)); }
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
[[gnu::noinline]] void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return tether_test::checked_alloc(n, alignof(std::max_align_t));
  } catch (...) {
    return nullptr;
  }
}
[[gnu::noinline]] void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return tether_test::checked_alloc(n, alignof(std::max_align_t));
  } catch (...) {
    return nullptr;
  }
}
[[gnu::noinline]] void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return tether_test::checked_alloc(n, static_cast<std::size_t>(a));
  } catch (...) {
    return nullptr;
  }
}
[[gnu::noinline]] void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return tether_test::checked_alloc(n, static_cast<std::size_t>(a));
  } catch (...) {
    return nullptr;
  }
}
[[gnu::noinline]] void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
