#!/usr/bin/env bash
# Proves the ways in: installed package (find_package), add_subdirectory, FetchContent with a
# local source dir, a copied include/ with only -I, the single header, and pkg-config.
# Usage: run.sh <tether source dir> <scratch dir> <c++ compiler>
set -euo pipefail
src=$(cd "$1" && pwd); work=$2; cxx=${3:-c++}
rm -rf "$work"; mkdir -p "$work"
app="$src/tests/consumers/app"
gen=(-G Ninja -DCMAKE_CXX_COMPILER="$cxx")

echo "== installed package: cmake --install, then find_package(tether)"
cmake -S "$src" -B "$work/tether-build" "${gen[@]}" -DTETHER_BUILD_TESTS=OFF -DTETHER_BUILD_BENCH=OFF \
  -DTETHER_BUILD_EXAMPLES=OFF >/dev/null
cmake --install "$work/tether-build" --prefix "$work/prefix" >/dev/null
cmake -S "$app" -B "$work/find_package" "${gen[@]}" -DTETHER_MODE=find_package \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/find_package" >/dev/null
"$work/find_package/consumer"

echo "== add_subdirectory(tether)"
cmake -S "$app" -B "$work/add_subdirectory" "${gen[@]}" -DTETHER_MODE=add_subdirectory -DTETHER_SOURCE="$src" >/dev/null
cmake --build "$work/add_subdirectory" >/dev/null
test ! -e "$work/add_subdirectory/tether/tests" || { echo "tests were configured in a subproject build"; exit 1; }
"$work/add_subdirectory/consumer"

echo "== FetchContent with a local SOURCE_DIR"
cmake -S "$app" -B "$work/fetchcontent" "${gen[@]}" -DTETHER_MODE=fetchcontent -DTETHER_SOURCE="$src" >/dev/null
cmake --build "$work/fetchcontent" >/dev/null
"$work/fetchcontent/consumer"

echo "== vendored: a copied include/ and nothing but -I and -pthread"
cp -r "$src/include" "$work/vendored-include"
"$cxx" -std=c++20 -Wall -Wextra -Wpedantic -Werror -I"$work/vendored-include" "$app/main.cpp" \
  -o "$work/vendored" -pthread
"$work/vendored"

echo "== single header"
"$cxx" -std=c++20 -Wall -Wextra -Wpedantic -Werror -DTETHER_SINGLE_HEADER -I"$src/single_include" \
  "$app/main.cpp" -o "$work/single" -pthread
"$work/single"

if command -v pkg-config >/dev/null; then
  echo "== pkg-config"
  # shellcheck disable=SC2046
  "$cxx" -Wall -Wextra -Wpedantic -Werror "$app/main.cpp" -o "$work/pkgconfig" \
    $(PKG_CONFIG_PATH="$work/prefix/share/pkgconfig" pkg-config --cflags --libs tether)
  "$work/pkgconfig"
fi
echo "all ways in work"
