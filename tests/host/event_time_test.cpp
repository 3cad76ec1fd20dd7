// Event times: format_utc writes what parse_utc reads, for any millisecond.
#define BOOST_TEST_MODULE event_time
#include <boost/test/unit_test.hpp>

#include <limits>
#include <random>

#include "luagent/error.hpp"
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

// `luagent threads --since 2026-13-45T99:99:99.000Z` used to list from some other instant
// (timegm normalised the fields); ".5Z" read as 5 ms. Anything format_utc would not write
// is refused, naming the text.
BOOST_AUTO_TEST_CASE(times_that_name_no_instant_are_refused) {
  for (const char* text :
       {"2026-13-45T99:99:99.000Z", "2026-02-30T00:00:00.000Z", "2026-01-01T24:00:00.000Z",
        "2026-01-01T00:60:00.000Z", "2026-01-01T00:00:00.5Z", "2026-1-01T00:00:00.000Z",
        "2026-01-01T00:00:00.000", "2026-01-01 00:00:00.000Z", "yesterday", ""}) {
    try {
      parse_utc(text);
      BOOST_ERROR("accepted " << text);
    } catch (const luagent::Error& e) {
      BOOST_TEST((e.code() == luagent::ErrorCode::usage));
      BOOST_TEST(
          std::string(e.what()).find(std::string("time '") + text + "'") != std::string::npos,
          e.what());
    }
  }
  BOOST_CHECK_EQUAL(parse_utc("2024-02-29T23:59:59.999Z"), 1709251199999);
}

// A stored time outside ISO 8601's four-digit years (another process, a damaged row) is
// written as the nearest one inside them: the extremes of int64 overflowed floor<days>
// (UBSan), and years past 32767 wrapped to negative ones.
BOOST_AUTO_TEST_CASE(times_beyond_four_digit_years_are_written_as_the_nearest_inside) {
  BOOST_CHECK_EQUAL(format_utc(std::numeric_limits<std::int64_t>::min()),
                    "0000-01-01T00:00:00.000Z");
  BOOST_CHECK_EQUAL(format_utc(-62'167'219'200'001), "0000-01-01T00:00:00.000Z");
  BOOST_CHECK_EQUAL(format_utc(1'000'000'000'000'000), "9999-12-31T23:59:59.999Z");
  BOOST_CHECK_EQUAL(format_utc(std::numeric_limits<std::int64_t>::max()),
                    "9999-12-31T23:59:59.999Z");
}
