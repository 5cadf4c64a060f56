// Shared helpers for tether's tests: stress scaling, instance counting, CPU time.
#pragma once

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace tether_test {

// TETHER_STRESS_SCALE (default 1.0) multiplies stress sizes; sanitizer runs set it below 1.
inline double stress_scale() {
  const char* s = std::getenv("TETHER_STRESS_SCALE");
  if (s == nullptr || *s == '\0') return 1.0;
  const double v = std::strtod(s, nullptr);
  return v > 0 ? v : 1.0;
}

inline std::size_t scaled(std::size_t n, std::size_t minimum = 1000) {
  const auto v = static_cast<std::size_t>(static_cast<double>(n) * stress_scale());
  return v < minimum ? minimum : v;
}

// CPU time (user + system) used so far by the calling thread.
inline std::chrono::microseconds thread_cpu_time() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return std::chrono::seconds(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         std::chrono::microseconds(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

// Counts live instances so tests can prove no leak and no double destruction.
struct counted {
  static inline std::atomic<long> live{0};
  static inline std::atomic<long> destroyed_twice{0};

  explicit counted(std::uint64_t v = 0) : value(v) { live.fetch_add(1); }
  counted(const counted& o) : value(o.value) { live.fetch_add(1); }
  counted(counted&& o) noexcept : value(o.value) { live.fetch_add(1); }
  counted& operator=(const counted&) = default;
  counted& operator=(counted&&) noexcept = default;
  ~counted() {
    if (alive != magic) destroyed_twice.fetch_add(1);
    alive = 0;
    live.fetch_sub(1);
  }

  static constexpr std::uint32_t magic = 0x7e7e7e7e;
  std::uint64_t value;
  std::uint32_t alive = magic;
};

}  // namespace tether_test
