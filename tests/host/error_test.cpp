#define BOOST_TEST_MODULE error
#include <boost/test/unit_test.hpp>

#include "luagent/error.hpp"

using luagent::Error;
using luagent::ErrorCode;

BOOST_AUTO_TEST_CASE(names_round_trip) {
  for (int i = 0; i <= static_cast<int>(ErrorCode::internal); ++i) {
    auto code = static_cast<ErrorCode>(i);
    BOOST_TEST(luagent::error_code_from_name(luagent::error_code_name(code)) == code);
  }
  BOOST_TEST(luagent::error_code_from_name("no such code") == ErrorCode::internal);
}

BOOST_AUTO_TEST_CASE(what_names_source_line_and_code) {
  Error error(ErrorCode::syntax, "unexpected symbol near 'x'", "agent.lua", 12);
  BOOST_TEST(std::string(error.what()) == "agent.lua:12: unexpected symbol near 'x' [syntax]");
  BOOST_TEST(error.message() == "unexpected symbol near 'x'");
}
