// parse_wire_json: provider bodies parse as nlohmann parses them, malformed text is a
// provider error naming what it was, and nesting beyond kMaxWireJsonDepth is refused
// before any of it is built — brackets inside strings do not count.
#define BOOST_TEST_MODULE wire_json
#include <boost/test/unit_test.hpp>

#include <string>

#include "llm/anthropic_wire.hpp"
#include "llm/ollama_wire.hpp"
#include "llm/openai_wire.hpp"
#include "llm/wire_json.hpp"
#include "luagent/error.hpp"

using namespace luagent;
using namespace luagent::llm;

namespace {

std::string nested(int depth, const std::string& inner = "1") {
  return std::string(static_cast<std::size_t>(depth), '[') + inner +
         std::string(static_cast<std::size_t>(depth), ']');
}

ErrorCode code_of(const std::string& text) {
  try {
    parse_wire_json(text, "a test body");
  } catch (const Error& e) {
    return e.code();
  }
  BOOST_FAIL("no error for " + text.substr(0, 40));
  return ErrorCode::internal;
}

}  // namespace

BOOST_AUTO_TEST_CASE(parses_as_nlohmann_does) {
  std::string body = R"({"choices":[{"message":{"content":"a [ { \" \\ ] }"}}],"n":1.5})";
  BOOST_TEST(parse_wire_json(body, "body") == nlohmann::json::parse(body));
  BOOST_TEST(parse_wire_json(nested(kMaxWireJsonDepth), "body") ==
             nlohmann::json::parse(nested(kMaxWireJsonDepth)));
}

BOOST_AUTO_TEST_CASE(nesting_beyond_the_limit_is_a_limit_error) {
  BOOST_TEST((code_of(nested(kMaxWireJsonDepth + 1)) == ErrorCode::limit));
  BOOST_TEST((code_of("{\"a\":" + nested(kMaxWireJsonDepth) + "}") == ErrorCode::limit));
  BOOST_CHECK_THROW(try_parse_wire_json(nested(kMaxWireJsonDepth + 1)), Error);
}

BOOST_AUTO_TEST_CASE(an_error_body_nested_too_deep_is_classified_by_its_status) {
  // Found by provider_response_fuzz: the depth limit escaped from classify_error, so a
  // proxy's 429 or 503 with such a body failed the call as `limit`, never retried.
  const std::string body = nested(kMaxWireJsonDepth + 1);
  BOOST_TEST(try_parse_error_body(body).is_discarded());
  BOOST_TEST((luagent::llm::openai_classify_error(429, body).code() == ErrorCode::rate_limited));
  BOOST_TEST((luagent::llm::anthropic_classify_error(503, body).code() == ErrorCode::overloaded));
  BOOST_TEST((luagent::llm::ollama_classify_error(429, body).code() == ErrorCode::rate_limited));
  BOOST_TEST((luagent::llm::openai_classify_error(200, body).code() == ErrorCode::provider));
}

BOOST_AUTO_TEST_CASE(brackets_in_strings_and_escaped_quotes_do_not_count) {
  std::string deep_text = "\"" + std::string(500, '[') + "\\\"" + std::string(500, '{') + "\"";
  BOOST_TEST(parse_wire_json("[" + deep_text + "]", "body")[0].get<std::string>().size() == 1001u);
  // Closing brackets inside a string do not hide the nesting that follows.
  BOOST_TEST((code_of("[\"]]]]\"," + nested(kMaxWireJsonDepth) + "]") == ErrorCode::limit));
}

BOOST_AUTO_TEST_CASE(malformed_text_is_a_provider_error_naming_it) {
  try {
    parse_wire_json("{\"a\": ", "the reply");
    BOOST_FAIL("accepted");
  } catch (const Error& e) {
    BOOST_TEST((e.code() == ErrorCode::provider));
    BOOST_TEST(std::string(e.what()).find("the reply") != std::string::npos, e.what());
  }
  BOOST_TEST(try_parse_wire_json("{\"a\": ").is_discarded());
}
