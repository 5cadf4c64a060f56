#include <tether/result.hpp>

#include <memory>
#include <string>

#include "catch.hpp"

TEST_CASE("push_result converts to true only for ok", "[result]") {
  CHECK(static_cast<bool>(tether::push_result(tether::status::ok)));
  CHECK_FALSE(static_cast<bool>(tether::push_result(tether::status::full)));
  CHECK(tether::push_result(tether::status::full).is_full());
  CHECK(tether::push_result(tether::status::timeout).is_timeout());
  CHECK(tether::push_result(tether::status::closed).is_closed());
  CHECK(tether::push_result(tether::status::cancelled).is_cancelled());
  CHECK_FALSE(static_cast<bool>(tether::push_result(tether::status::cancelled)));
}

TEST_CASE("pop_result holds a value or says why not", "[result]") {
  tether::pop_result<std::unique_ptr<int>> r(std::in_place, std::make_unique<int>(7));
  REQUIRE(r.has_value());
  CHECK(**r == 7);
  auto taken = std::move(r).take();
  REQUIRE(taken.has_value());
  CHECK(**taken == 7);

  tether::pop_result<std::string> t(tether::status::timeout);
  CHECK_FALSE(t);
  CHECK(t.is_timeout());
  CHECK_THROWS_WITH(t.value(), Catch::Contains("timeout"));
  CHECK(std::string(tether::to_string(tether::status::closed)) == "closed");

  tether::pop_result<std::string> c(tether::status::cancelled);
  CHECK_FALSE(c);
  CHECK(c.is_cancelled());
  CHECK_FALSE(c.is_timeout());
  CHECK_THROWS_WITH(c.value(), Catch::Contains("cancelled"));
}
