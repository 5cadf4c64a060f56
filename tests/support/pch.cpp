// Compiles tests/support/catch.hpp once as the tests' precompiled header.
