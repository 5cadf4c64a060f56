// One include for Catch2 v2 (Debian's 2.13) and v3.
#pragma once
#if TETHER_CATCH_VERSION >= 3
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
