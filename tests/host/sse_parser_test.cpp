// The SSE parser against the WHATWG event-stream rules, in every fragmentation.
#define BOOST_TEST_MODULE sse_parser
#include <boost/test/unit_test.hpp>

#include "llm/sse_parser.hpp"

using namespace std::string_view_literals;
#include "luagent/error.hpp"
#include "support/wire_fixture_replay.hpp"

using luagent::Error;
using luagent::ErrorCode;
using luagent::llm::parse_sse;
using luagent::llm::SseEvent;
using luagent::llm::SseLimits;
using luagent::llm::SseParser;

namespace {

std::string show(const std::vector<SseEvent>& events) {
  std::string out;
  for (const auto& e : events) out += "[" + e.event + "|" + e.data + "|" + e.id + "]";
  return out;
}

// Parses `body` whole and in every fragmentation; all must give `expected`.
void expect_events(const std::string& body, const std::string& expected) {
  BOOST_TEST(show(parse_sse(body)) == expected);
  int mismatches = 0;
  luagent::test::for_each_fragmentation(body, [&](const auto& pieces, const std::string& how) {
    std::vector<SseEvent> events;
    SseParser parser([&events](const SseEvent& e) { events.push_back(e); });
    for (const auto piece : pieces) parser.feed(piece);
    parser.finish();
    if (show(events) != expected && ++mismatches < 3)
      BOOST_TEST_MESSAGE("differs when fed " << how);
  });
  BOOST_TEST(mismatches == 0);
}

}  // namespace

BOOST_AUTO_TEST_CASE(line_endings_lf_crlf_and_cr_are_equivalent) {
  const std::string expected = "[message|a|][ping|b|]";
  expect_events("data: a\n\nevent: ping\ndata: b\n\n", expected);
  expect_events("data: a\r\n\r\nevent: ping\r\ndata: b\r\n\r\n", expected);
  expect_events("data: a\r\revent: ping\rdata: b\r\r", expected);
  expect_events("data: a\r\n\nevent: ping\rdata: b\n\r\n", expected);
}

BOOST_AUTO_TEST_CASE(comments_multiline_data_and_fields) {
  expect_events(": keep-alive\n\ndata: one\ndata:two\ndata\n\n", "[message|one\ntwo\n|]");
  expect_events("data:  two spaces\n\n", "[message| two spaces|]");
  expect_events("id: 7\nevent: x\ndata: d\n\ndata: e\n\n", "[x|d|7][message|e|7]");
  expect_events("event: only-type\n\ndata: after\n\n", "[message|after|]");
  expect_events("unknown: field\ndata: v\n\n", "[message|v|]");
  expect_events("data\n\n", "[message||]");
  expect_events(
      "\xEF\xBB\xBF"
      "data: bom\n\n",
      "[message|bom|]");
  expect_events(
      "\xEF\xBB"
      "data: x\n\n",
      "");  // not a BOM: the line is an unknown field
}

BOOST_AUTO_TEST_CASE(retry_and_id_fields) {
  SseParser parser([](const SseEvent&) {});
  parser.feed("retry: 1500\nretry: soon\nid: abc\nid: a\0b\n\n"sv);
  BOOST_TEST(parser.retry_ms() == 1500);
  BOOST_TEST(parser.last_event_id() == "abc");
}

BOOST_AUTO_TEST_CASE(finish_flushes_an_unterminated_last_event) {
  expect_events("data: a\n\ndata: [DONE]", "[message|a|][message|[DONE]|]");
  expect_events("data: a\n\ndata: [DONE]\n", "[message|a|][message|[DONE]|]");
  expect_events("data: a\r", "[message|a|]");
  expect_events("", "");
}

BOOST_AUTO_TEST_CASE(oversized_lines_and_events_are_limit_errors) {
  SseLimits limits;
  limits.max_line_bytes = 32;
  limits.max_event_bytes = 40;
  SseParser lines([](const SseEvent&) {}, limits);
  lines.feed("data: short\n");
  BOOST_CHECK_EXCEPTION(
      for (int i = 0; i < 10; ++i) lines.feed("xxxxx"), Error, [](const Error& e) {
        return e.code() == ErrorCode::limit && e.message().find("line") != std::string::npos;
      });
  SseParser events([](const SseEvent&) {}, limits);
  BOOST_CHECK_EXCEPTION(
      for (int i = 0; i < 10; ++i) events.feed("data: 0123456789\n"), Error, [](const Error& e) {
        return e.code() == ErrorCode::limit && e.message().find("event") != std::string::npos;
      });
}

BOOST_AUTO_TEST_CASE(recorded_streams_frame_into_the_expected_event_counts) {
  const auto anthropic = parse_sse(luagent::test::read_wire_fixture(
      "anthropic-messages/tool_use_stream_sdk_fixture", ".response.sse"));
  BOOST_TEST_REQUIRE(!anthropic.empty());
  BOOST_TEST(anthropic.front().event == "message_start");
  BOOST_TEST(anthropic.back().event == "message_stop");
  const auto vllm = parse_sse(
      luagent::test::read_wire_fixture("vllm/text_stream_usage_every_chunk", ".response.sse"));
  BOOST_TEST(vllm.back().data == "[DONE]");  // recorded without its final blank line
}
