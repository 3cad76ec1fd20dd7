// The pattern matcher on its own, without Lua: its search rules, its work meter and probe,
// and that a probe's exception leaves nothing behind. (tests/lua/lua_string_test compares
// every feature and error with Lua's own matcher.)
#define BOOST_TEST_MODULE lua_pattern
#include <boost/test/unit_test.hpp>

#include <string>

#include "luagent/error.hpp"
#include "text/lua_pattern.hpp"

using namespace luagent;
using text::PatternMatch;
using text::PatternSearch;
using text::PatternWorkMeter;

namespace {

struct CountingProbe final : text::PatternWorkProbe {
  int calls = 0;
  int throw_after = -1;  // never
  void keep_going() override {
    if (++calls == throw_after) throw Error(ErrorCode::limit, "budget spent");
  }
};

bool find(std::string_view subject, std::string_view pattern, PatternMatch& match,
          std::size_t from = 0) {
  PatternWorkMeter meter(nullptr, 1 << 16);
  PatternSearch search;
  search.subject = subject;
  search.anchored = !pattern.empty() && pattern[0] == '^';
  search.pattern = search.anchored ? pattern.substr(1) : pattern;
  search.from = from;
  return text::find_pattern(search, match, meter);
}

std::string error_of(std::string_view subject, std::string_view pattern) {
  PatternMatch match;
  try {
    find(subject, pattern, match);
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

}  // namespace

BOOST_AUTO_TEST_CASE(finds_the_first_match_with_its_captures) {
  PatternMatch match;
  BOOST_REQUIRE(find("key = value", "(%w+)%s*=%s*()(%w+)", match));
  BOOST_TEST(match.start == 0u);
  BOOST_TEST(match.end == 11u);
  BOOST_TEST(match.capture_count == 3);
  BOOST_TEST(match.captures[0].start == 0u);
  BOOST_TEST(match.captures[0].length == 3);
  BOOST_TEST(match.captures[1].length == text::PatternCapture::kPosition);
  BOOST_TEST(match.captures[1].start == 6u);
  BOOST_TEST(match.captures[2].length == 5);
  BOOST_REQUIRE(find("xxabab", "(ab)%1", match));
  BOOST_TEST(match.start == 2u);
  BOOST_TEST(!find("xxabab", "^ab", match));
  BOOST_TEST(find("xxabab", "^ab", match, 2));
}

BOOST_AUTO_TEST_CASE(an_empty_match_at_the_previous_end_does_not_count) {
  PatternMatch match;
  PatternWorkMeter meter(nullptr, 1 << 16);
  PatternSearch search;
  search.subject = "ab";
  search.pattern = "x*";
  search.from = 1;
  search.no_empty_match_at = 1;
  BOOST_REQUIRE(text::find_pattern(search, match, meter));
  BOOST_TEST(match.start == 2u);
  BOOST_TEST(match.end == 2u);
}

BOOST_AUTO_TEST_CASE(malformed_patterns_give_lua_s_messages_where_the_search_reaches_them) {
  BOOST_TEST(error_of("abc", "a%") == "malformed pattern (ends with '%')");
  BOOST_TEST(error_of("xbc", "a%") == "");  // never reached, as in Lua
  BOOST_TEST(error_of("abc", "[a") == "malformed pattern (missing ']')");
  BOOST_TEST(error_of("abc", "%f") == "missing '[' after '%f' in pattern");
  BOOST_TEST(error_of("abc", "%b") == "malformed pattern (missing arguments to '%b')");
  BOOST_TEST(error_of("abc", "(a)%2") == "invalid capture index %2");
  BOOST_TEST(error_of("abc", "a)") == "invalid pattern capture");
  BOOST_TEST(error_of("a", std::string(66, '(')) == "too many captures");
  BOOST_TEST(error_of(std::string(300, 'a'), [] {
               std::string p;
               for (int i = 0; i < 200; ++i) p += "a?";
               return p;
             }()) == "pattern too complex");
}

BOOST_AUTO_TEST_CASE(the_probe_runs_every_interval_and_may_stop_the_match) {
  CountingProbe probe;
  probe.throw_after = 5;
  PatternWorkMeter meter(&probe, 1000);
  PatternSearch search;
  const std::string subject(200, 'a');
  search.subject = subject;
  search.pattern = ".-.-.-.-x";
  PatternMatch match;
  BOOST_CHECK_THROW(text::find_pattern(search, match, meter), Error);
  BOOST_TEST(probe.calls == 5);
  // The same meter and a fresh search go on: nothing was left half done.
  probe.throw_after = -1;
  search.pattern = "a+$";
  BOOST_REQUIRE(text::find_pattern(search, match, meter));
  BOOST_TEST(match.end == 200u);
}

BOOST_AUTO_TEST_CASE(plain_find_is_linear_and_metered) {
  CountingProbe probe;
  PatternWorkMeter meter(&probe, 1 << 16);
  const std::string hay(4'000'000, 'a');
  const std::string needle = std::string(2'000'000, 'a') + "b";
  BOOST_TEST(text::find_plain(hay, needle, 0, meter) == std::string_view::npos);
  BOOST_TEST(probe.calls == 1);  // one look at the clock per crossing is enough
  BOOST_TEST(text::find_plain(hay, "aa", 3'999'998, meter) == 3'999'998u);
  BOOST_TEST(text::find_plain(hay, "", 4'000'000, meter) == 4'000'000u);
  BOOST_TEST(text::find_plain(hay, "", 4'000'001, meter) == std::string_view::npos);
  BOOST_TEST(text::has_no_pattern_specials("a)b]c"));
  BOOST_TEST(!text::has_no_pattern_specials("a.b"));
  BOOST_TEST(!text::has_no_pattern_specials(std::string_view("a\0%", 3)));
}
