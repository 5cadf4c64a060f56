// SPDX-License-Identifier: MIT
// tether/version.hpp - the library version (CMakeLists.txt reads it from here).
#pragma once

#define TETHER_VERSION_MAJOR 0
#define TETHER_VERSION_MINOR 1
#define TETHER_VERSION_PATCH 0
// One number for comparisons: major * 10000 + minor * 100 + patch.
#define TETHER_VERSION (TETHER_VERSION_MAJOR * 10000 + TETHER_VERSION_MINOR * 100 + TETHER_VERSION_PATCH)
