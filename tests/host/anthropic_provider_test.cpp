// The Anthropic provider end to end: every Anthropic recorded fixture (messages and errors)
// served byte for byte by the loopback WireServer, whole and cut at arbitrary byte
// boundaries, to the real provider over real libcurl.
#define BOOST_TEST_MODULE anthropic_provider
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "llm/anthropic_wire.hpp"
#include "support/provider_harness.hpp"
#include "support/wire_fixture_replay.hpp"

using luagent::Error;
using luagent::ErrorCode;
using luagent::llm::AnthropicProvider;
using luagent::llm::Reply;
using luagent::test::ProviderHarness;
using luagent::test::ScriptedResponse;
using luagent::test::WireServer;
using nlohmann::json;

namespace {

// What the pure codec makes of the same bytes: the provider must return exactly this.
std::variant<Reply, Error> decoded_directly(const std::string& body, bool stream, int status) {
  try {
    if (status < 200 || status >= 300) return luagent::llm::anthropic_classify_error(status, body);
    if (!stream) return luagent::llm::anthropic_parse_response(json::parse(body));
    luagent::llm::AnthropicStreamDecoder decoder;
    decoder.feed(body);
    decoder.end_of_body();
    if (!decoder.finished()) return Error(ErrorCode::incomplete_stream, "cut short");
    return decoder.take_reply();
  } catch (const Error& e) {
    return e;
  }
}

luagent::llm::HttpProviderSettings settings_for(const WireServer& server) {
  auto settings = luagent::test::loopback_settings(server, "/");
  settings.api_key = "sk-ant-test-provider-key";
  return settings;
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_anthropic_fixture_whole_and_fragmented) {
  WireServer server;
  ProviderHarness<AnthropicProvider> harness(settings_for(server));
  int cases = 0;
  for (const auto& [provider, name] : luagent::test::list_fixture_cases()) {
    if (provider != "anthropic-messages" &&
        !(provider == "errors" && name.starts_with("anthropic_")))
      continue;
    ++cases;
    const ScriptedResponse recorded = luagent::test::load_fixture_response(provider, name);
    const bool stream = recorded.body.starts_with("event:") || recorded.body.starts_with("data:");
    const auto expected = decoded_directly(recorded.body, stream, recorded.status);
    for (int plan = 0; plan < 5; ++plan) {
      BOOST_TEST_CONTEXT(provider << "/" << name << " plan " << plan) {
        ScriptedResponse response = recorded;
        if (plan > 0) {
          response.random_fragments = plan == 4 ? 60 : 1 + plan;
          response.seed = static_cast<std::uint64_t>(plan) * 104729;
          response.fragment_delay = std::chrono::milliseconds(1);
        }
        if (plan == 3) response.framing = luagent::test::Framing::chunked;
        server.enqueue(response);
        std::string streamed;
        luagent::llm::ChunkCallback on_chunk;
        if (stream)
          on_chunk = [&](const luagent::llm::StreamChunk& chunk) { streamed += chunk.text_delta; };
        auto outcome = harness.call(luagent::test::user_request("hi", stream), on_chunk);
        BOOST_TEST_REQUIRE(outcome.has_value());
        if (const auto* want = std::get_if<Reply>(&expected)) {
          BOOST_TEST_REQUIRE(outcome->ok(), (outcome->ok() ? "" : outcome->error().what()));
          BOOST_TEST(luagent::test::reply_summary(outcome->reply()) ==
                     luagent::test::reply_summary(*want));
          if (stream) BOOST_TEST(streamed == want->text);
        } else {
          const Error& want_error = std::get<Error>(expected);
          BOOST_TEST_REQUIRE(!outcome->ok());
          BOOST_TEST(outcome->error().code() == want_error.code(), outcome->error().what());
        }
      }
    }
  }
  BOOST_TEST(cases == 12 + 7);
  for (const auto& request : server.requests()) {
    BOOST_TEST(request.path == "/v1/messages");
    BOOST_TEST(request.header("x-api-key") == "sk-ant-test-provider-key");
    BOOST_TEST(request.header("anthropic-version") == "2023-06-01");
    BOOST_TEST(request.header("authorization").empty());
    BOOST_TEST(json::parse(request.body)["max_tokens"] == 4096);
  }
}

BOOST_AUTO_TEST_CASE(recorded_values_reach_the_caller) {
  WireServer server;
  ProviderHarness<AnthropicProvider> harness(settings_for(server));
  server.enqueue(luagent::test::load_fixture_response("anthropic-messages", "text_nonstream"));
  auto text = harness.call(luagent::test::user_request("capital?"));
  BOOST_TEST_REQUIRE(text->ok());
  BOOST_TEST(text->reply().text == "The capital of France is Paris.");
  BOOST_TEST(text->reply().usage.input_tokens == 20);
  BOOST_TEST(text->trace.provider == "anthropic");

  auto tool =
      luagent::test::load_fixture_response("anthropic-messages", "tool_use_stream_sdk_fixture");
  tool.random_fragments = 30;
  server.enqueue(tool);
  std::string shown;
  auto streamed = harness.call(luagent::test::user_request("weather", true),
                               [&](const luagent::llm::StreamChunk& c) { shown += c.text_delta; });
  BOOST_TEST_REQUIRE(streamed->ok());
  BOOST_TEST(shown == "I'll check the current weather in Paris for you.");
  BOOST_TEST_REQUIRE(streamed->reply().tool_calls.size() == 1u);
  BOOST_TEST(streamed->reply().tool_calls[0].arguments == json({{"location", "Paris"}}));
  BOOST_TEST(streamed->reply().finish_reason == "tool_calls");

  // The overloaded error event inside a 200 stream is the same error as an HTTP 529.
  server.enqueue(
      luagent::test::load_fixture_response("errors", "anthropic_stream_error_event_overloaded"));
  auto overloaded = harness.call(luagent::test::user_request("x", true));
  BOOST_TEST_REQUIRE(!overloaded->ok());
  BOOST_TEST(overloaded->error().code() == ErrorCode::overloaded);
}
