// The OpenAI provider end to end: every OpenAI-shaped recorded fixture (OpenAI, Ollama /v1,
// llama.cpp server, vLLM, OpenAI errors) served byte for byte by the loopback WireServer, whole
// and cut at arbitrary byte boundaries, to the real provider over real libcurl.
#define BOOST_TEST_MODULE openai_provider
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "llm/openai_wire.hpp"
#include "support/provider_harness.hpp"
#include "support/wire_fixture_replay.hpp"

using luagent::Error;
using luagent::ErrorCode;
using luagent::llm::OpenAiProvider;
using luagent::llm::Reply;
using luagent::test::ProviderHarness;
using luagent::test::ScriptedResponse;
using luagent::test::WireServer;
using nlohmann::json;

namespace {

bool openai_shaped(const std::string& provider, const std::string& name) {
  if (provider == "openai-chat" || provider == "llamacpp-server" || provider == "vllm") return true;
  if (provider == "ollama") return name.starts_with("v1_");
  if (provider == "errors") return name.starts_with("openai_");
  return false;
}

// What the pure codec makes of the same bytes: the provider must return exactly this.
std::variant<Reply, Error> decoded_directly(const std::string& body, bool stream, int status) {
  try {
    if (status < 200 || status >= 300) return luagent::llm::openai_classify_error(status, body);
    if (!stream) return luagent::llm::openai_parse_response(json::parse(body));
    luagent::llm::OpenAiStreamDecoder decoder;
    decoder.feed(body);
    decoder.end_of_body();
    if (!decoder.finished()) return Error(ErrorCode::incomplete_stream, "cut short");
    return decoder.take_reply();
  } catch (const Error& e) {
    return e;
  }
}

luagent::llm::HttpProviderSettings settings_for(const WireServer& server) {
  auto settings = luagent::test::loopback_settings(server, "/v1");
  settings.api_key = "sk-test-provider-key";
  return settings;
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_openai_shaped_fixture_whole_and_fragmented) {
  WireServer server;
  ProviderHarness<OpenAiProvider> harness(settings_for(server));
  int cases = 0;
  for (const auto& [provider, name] : luagent::test::list_fixture_cases()) {
    if (!openai_shaped(provider, name)) continue;
    ++cases;
    const ScriptedResponse recorded = luagent::test::load_fixture_response(provider, name);
    const bool stream = recorded.body.starts_with("data:") || recorded.body.starts_with("event:");
    const auto expected = decoded_directly(recorded.body, stream, recorded.status);
    // Whole, then four seeded cuttings into 2..40 pieces sent as separate writes.
    for (int plan = 0; plan < 5; ++plan) {
      BOOST_TEST_CONTEXT(provider << "/" << name << " plan " << plan) {
        ScriptedResponse response = recorded;
        if (plan > 0) {
          response.random_fragments = plan == 4 ? 40 : 1 + plan;
          response.seed = static_cast<std::uint64_t>(plan) * 7919;
          response.fragment_delay = std::chrono::milliseconds(1);
        }
        if (plan == 2) response.framing = luagent::test::Framing::chunked;
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
          BOOST_TEST(outcome->trace.finish_reason == want->finish_reason);
          BOOST_TEST(outcome->trace.usage.output_tokens == want->usage.output_tokens);
        } else {
          const Error& want_error = std::get<Error>(expected);
          BOOST_TEST_REQUIRE(!outcome->ok());
          BOOST_TEST(outcome->error().code() == want_error.code(), outcome->error().what());
          BOOST_TEST(outcome->error().message() == want_error.message());
        }
        BOOST_TEST(outcome->trace.attempts == 1);
      }
    }
  }
  BOOST_TEST(cases == 19 + 2 + 3 + 2 + 7);
  // What went over the wire: the right path, the key in its header only, stream as asked.
  auto requests = server.requests();
  BOOST_TEST_REQUIRE(!requests.empty());
  for (const auto& request : requests) {
    BOOST_TEST(request.method == "POST");
    BOOST_TEST(request.path == "/v1/chat/completions");
    BOOST_TEST(request.header("authorization") == "Bearer sk-test-provider-key");
    BOOST_TEST(request.body.find("sk-test-provider-key") == std::string::npos);
    BOOST_TEST(json::parse(request.body)["model"] == "test-model");
  }
}

// The differential test above trusts the codec; these pin down values a user sees.
BOOST_AUTO_TEST_CASE(recorded_values_reach_the_caller) {
  WireServer server;
  ProviderHarness<OpenAiProvider> harness(settings_for(server));

  server.enqueue(luagent::test::load_fixture_response("openai-chat", "text_nonstream"));
  auto text = harness.call(luagent::test::user_request("capital?"));
  BOOST_TEST_REQUIRE(text->ok());
  BOOST_TEST(text->reply().text == "The capital of France is Paris.");
  BOOST_TEST(text->reply().finish_reason == "stop");
  BOOST_TEST(text->reply().usage.input_tokens == 24);
  BOOST_TEST(text->reply().usage.output_tokens == 8);
  BOOST_TEST(text->trace.provider == "openai");
  BOOST_TEST(text->trace.model == "test-model");
  BOOST_TEST(json::parse(text->trace.request_body)["messages"][0]["content"] == "capital?");
  BOOST_TEST(text->trace.request_bytes ==
             static_cast<std::int64_t>(text->trace.request_body.size()));

  auto stream_case =
      luagent::test::load_fixture_response("openai-chat", "parallel_tool_calls_stream_fragments");
  stream_case.random_fragments = 25;
  server.enqueue(stream_case);
  auto calls = harness.call(luagent::test::user_request("weather and stock", true));
  BOOST_TEST_REQUIRE(calls->ok());
  BOOST_TEST_REQUIRE(calls->reply().tool_calls.size() == 2u);
  BOOST_TEST(calls->reply().tool_calls[0].name == "GetWeatherArgs");
  BOOST_TEST(calls->reply().tool_calls[0].arguments ==
             json({{"city", "Edinburgh"}, {"country", "GB"}, {"units", "c"}}));
  BOOST_TEST(calls->reply().tool_calls[1].id == "call_DNYTawLBoN8fj3KN6qU9N1Ou");
  BOOST_TEST(calls->reply().tool_calls[1].arguments["exchange"] == "NASDAQ");
  BOOST_TEST(calls->reply().finish_reason == "tool_calls");
  BOOST_TEST(calls->reply().usage.input_tokens == 149);

  server.enqueue(luagent::test::load_fixture_response("ollama", "v1_chat_tool_calls_nonstream"));
  auto ollama = harness.call(luagent::test::user_request("Paris"));
  BOOST_TEST_REQUIRE(ollama->ok());
  BOOST_TEST(ollama->reply().tool_calls.at(0).arguments ==
             json({{"city", "Paris"}, {"country", "France"}}));
  BOOST_TEST(ollama->reply().model == "gpt-oss:20b");

  server.enqueue(luagent::test::load_fixture_response("vllm", "text_stream_usage_every_chunk"));
  auto vllm = harness.call(luagent::test::user_request("hello", true));
  BOOST_TEST_REQUIRE(vllm->ok());
  BOOST_TEST(vllm->reply().text.size() == 99u);
  BOOST_TEST(vllm->reply().usage.output_tokens == 26);
}

BOOST_AUTO_TEST_CASE(error_fixtures_become_classified_errors) {
  WireServer server;
  ProviderHarness<OpenAiProvider> harness(settings_for(server));
  const std::vector<std::pair<std::string, ErrorCode>> cases = {
      {"openai_400_context_length_exceeded", ErrorCode::context_length_exceeded},
      {"openai_401_invalid_api_key", ErrorCode::auth},
      {"openai_404_model_not_found", ErrorCode::bad_request},
      {"openai_400_unsupported_value", ErrorCode::bad_request},
      {"openai_429_rate_limit_exceeded", ErrorCode::rate_limited},
      {"openai_500_server_error", ErrorCode::provider},
      {"openai_compat_stream_error_event_groq", ErrorCode::bad_request},
  };
  for (const auto& [name, code] : cases) {
    BOOST_TEST_CONTEXT(name) {
      server.enqueue(luagent::test::load_fixture_response("errors", name));
      auto outcome =
          harness.call(luagent::test::user_request("x", name.find("stream") != std::string::npos));
      BOOST_TEST_REQUIRE(outcome.has_value());
      BOOST_TEST_REQUIRE(!outcome->ok());
      BOOST_TEST(outcome->error().code() == code, outcome->error().what());
    }
  }
}

BOOST_AUTO_TEST_CASE(prices_give_the_cost_and_cancel_reports_cancelled) {
  WireServer server;
  auto settings = settings_for(server);
  settings.prices["gpt-4o"] = {2.5, 10.0, 1.25};
  ProviderHarness<OpenAiProvider> harness(settings);
  server.enqueue(luagent::test::load_fixture_response("openai-chat", "text_nonstream"));
  auto priced = harness.call(luagent::test::user_request("capital?"));
  BOOST_TEST_REQUIRE(priced->ok());
  // gpt-4o-2024-08-06 is priced by its "gpt-4o" prefix: 24 in, 8 out.
  BOOST_TEST(priced->trace.cost_usd == (24 * 2.5 + 8 * 10.0) / 1e6,
             boost::test_tools::tolerance(1e-12));

  ScriptedResponse slow = luagent::test::load_fixture_response("openai-chat", "text_stream");
  slow.latency = std::chrono::milliseconds(3000);
  server.enqueue(slow);
  std::optional<luagent::llm::Outcome> outcome;
  auto id = harness.provider->start(luagent::test::user_request("x", true), {},
                                    [&](luagent::llm::Outcome o) { outcome = std::move(o); });
  harness.loop.turn(std::chrono::milliseconds(50));
  auto started = std::chrono::steady_clock::now();
  harness.provider->cancel(id);
  luagent::test::run_loop_until(harness.loop, [&] { return outcome.has_value(); });
  BOOST_TEST_REQUIRE(outcome.has_value());
  BOOST_TEST(outcome->error().code() == ErrorCode::cancelled);
  BOOST_TEST((std::chrono::steady_clock::now() - started < std::chrono::milliseconds(1000)));
  BOOST_TEST(harness.provider->in_flight() == 0u);
}
