// SPDX-License-Identifier: MIT
// tether/detail/platform/source_location.hpp - tether::source_location: where a call came from.
//
// std::source_location where the standard library provides it (g++ 11+, clang 15+);
// otherwise - clang 14 with libstdc++, whose <source_location> needs a builtin clang 14 lacks -
// a class with the same four accessors, filled by the __builtin_FILE / _FUNCTION / _LINE /
// _COLUMN builtins that both compilers have. Either way `tether::source_location::current()`
// as a defaulted argument names the caller's line. (The two are different types: a program
// that mixes translation units of both compilers must not pass them between them.)
//
// Who may call what: a value; any thread.
// Memory ordering: none.
#pragma once

#include <cstdint>
#if __has_include(<source_location>)
#include <source_location>
#endif

namespace tether {

#if defined(__cpp_lib_source_location)
using source_location = std::source_location;
#else
class source_location {
 public:
  constexpr source_location() noexcept = default;
  static constexpr source_location current(const char* file = __builtin_FILE(),
                                           const char* function = __builtin_FUNCTION(),
                                           std::uint_least32_t line = __builtin_LINE(),
                                           std::uint_least32_t column = __builtin_COLUMN()) noexcept {
    source_location l;
    l.file_ = file;
    l.function_ = function;
    l.line_ = line;
    l.column_ = column;
    return l;
  }
  constexpr const char* file_name() const noexcept { return file_; }
  constexpr const char* function_name() const noexcept { return function_; }
  constexpr std::uint_least32_t line() const noexcept { return line_; }
  constexpr std::uint_least32_t column() const noexcept { return column_; }

 private:
  const char* file_ = "";
  const char* function_ = "";
  std::uint_least32_t line_ = 0;
  std::uint_least32_t column_ = 0;
};
#endif

}  // namespace tether
