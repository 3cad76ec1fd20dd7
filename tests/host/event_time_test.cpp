// Event times: format_utc writes what parse_utc reads, for any millisecond.
#define BOOST_TEST_MODULE event_time
#include <boost/test/unit_test.hpp>

#include <random>

#include "luagent/thread.hpp"

using luagent::format_utc;
using luagent::parse_utc;

BOOST_AUTO_TEST_CASE(known_instants_are_written_as_iso_8601_utc) {
  BOOST_CHECK_EQUAL(format_utc(0), "1970-01-01T00:00:00.000Z");
  BOOST_CHECK_EQUAL(format_utc(951782400123), "2000-02-29T00:00:00.123Z");
  BOOST_CHECK_EQUAL(format_utc(1735689599999), "2024-12-31T23:59:59.999Z");
  BOOST_CHECK_EQUAL(format_utc(253402300799999), "9999-12-31T23:59:59.999Z");
}

BOOST_AUTO_TEST_CASE(times_before_1970_round_down_to_the_earlier_millisecond) {
  BOOST_CHECK_EQUAL(format_utc(-1), "1969-12-31T23:59:59.999Z");
  BOOST_CHECK_EQUAL(format_utc(-86400000), "1969-12-31T00:00:00.000Z");
}

BOOST_AUTO_TEST_CASE(every_written_time_reads_back_to_the_same_millisecond) {
  std::mt19937_64 random(7);
  std::uniform_int_distribution<std::int64_t> any_ms(-2208988800000, 4102444800000);  // 1900-2100
  for (int i = 0; i < 20000; ++i) {
    std::int64_t ms = any_ms(random);
    BOOST_REQUIRE_EQUAL(parse_utc(format_utc(ms)), ms);
  }
}
