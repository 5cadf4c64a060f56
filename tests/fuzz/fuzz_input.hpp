// Reads a libFuzzer input as a stream of small numbers, and stops a run on a broken invariant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace tether_fuzz {

class input {
 public:
  input(const std::uint8_t* data, std::size_t size) noexcept : p_(data), end_(data + size) {}
  bool empty() const noexcept { return p_ == end_; }
  // The next byte (0 once the input is used up).
  std::uint8_t byte() noexcept { return p_ == end_ ? 0 : *p_++; }
  // A number in [0, n).
  std::size_t below(std::size_t n) noexcept { return n == 0 ? 0 : byte() % n; }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

// A broken invariant: say which and abort (libFuzzer saves the input as a crash).
[[noreturn]] inline void broken(const char* what, long long a = 0, long long b = 0) {
  std::fprintf(stderr, "invariant broken: %s (%lld, %lld)\n", what, a, b);
  std::abort();
}
inline void require(bool ok, const char* what, long long a = 0, long long b = 0) {
  if (!ok) broken(what, a, b);
}

}  // namespace tether_fuzz
