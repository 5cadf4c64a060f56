// SPDX-License-Identifier: MIT
// tether/detail/platform/config.hpp - cache-line size, CPU pause and the annotation seam.
//
// Nothing here changes what a header means: the macros below only add attributes that
// clang's -Wthread-safety understands and that other compilers never see.
#pragma once

#include <cstddef>
#include <new>

#include "../../version.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

// Clang thread-safety capability attributes (empty on other compilers).
#if defined(__clang__)
#define TETHER_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define TETHER_THREAD_ANNOTATION(x)
#endif
#define TETHER_CAPABILITY(name) TETHER_THREAD_ANNOTATION(capability(name))
#define TETHER_REQUIRES(...) TETHER_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define TETHER_ASSERT_CAPABILITY(x) TETHER_THREAD_ANNOTATION(assert_capability(x))
#define TETHER_GUARDED_BY(x) TETHER_THREAD_ANNOTATION(guarded_by(x))

namespace tether::detail {

// 64 bytes on every x86-64 and most AArch64 parts. std::hardware_destructive_interference_size
// is not used: g++ warns that its value may change between compiler versions (ABI hazard).
inline constexpr std::size_t cache_line = 64;

// One iteration of a spin-wait: tells the CPU we are spinning (saves power, frees the
// sibling hyper-thread) without giving up the time slice.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Asks for the cache line at p in a writable state ahead of a store: a line this core still
// holds shared (written earlier, read since by another core) is otherwise upgraded on the
// store itself, one round trip at a time, where no hardware prefetcher helps. A hint only.
inline void prefetch_for_write(const void* p) noexcept {
#if defined(__x86_64__)
  // prefetchw: every x86-64 decodes it (a no-op on CPUs without it); the builtin would emit it
  // only when the translation unit is compiled for a CPU that has it.
  asm volatile("prefetchw %0" ::"m"(*static_cast<const char*>(p)));
#elif defined(__GNUC__)
  __builtin_prefetch(p, 1, 3);
#endif
}

}  // namespace tether::detail
