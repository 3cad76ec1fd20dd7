// The HTTP providers under transport faults and error responses, over real sockets on
// 127.0.0.1: refused connections, resets, stalls, cut streams, retried 429/5xx/529, errors that
// must not be retried, garbage and oversized bodies; API keys never leak; record -> replay.
#define BOOST_TEST_MODULE llm_faults
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "llm/openai_wire.hpp"
#include "llm/provider_factory.hpp"
#include "llm/replay_provider.hpp"
#include "support/provider_harness.hpp"
#include "support/test_paths.hpp"

using luagent::ErrorCode;
using luagent::llm::AnthropicProvider;
using luagent::llm::OpenAiProvider;
using luagent::test::Fault;
using luagent::test::load_fixture_response;
using luagent::test::ProviderHarness;
using luagent::test::ScriptedResponse;
using luagent::test::user_request;
using luagent::test::WireServer;
using std::chrono::milliseconds;
using Stopwatch = std::chrono::steady_clock;

namespace {

luagent::llm::HttpProviderSettings fast(const WireServer& server, int retries = 2) {
  auto settings = luagent::test::loopback_settings(server, "/v1");
  settings.max_retries = retries;
  settings.idle_timeout_ms = 300;
  return settings;
}

ScriptedResponse ok_text() {
  return load_fixture_response("openai-chat", "text_nonstream");
}

long elapsed_ms(Stopwatch::time_point since) {
  return static_cast<long>(
      std::chrono::duration_cast<milliseconds>(Stopwatch::now() - since).count());
}

std::string file_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace

BOOST_AUTO_TEST_CASE(connection_refused_is_a_network_error_after_retries) {
  std::string dead_url;
  {
    WireServer gone;
    dead_url = gone.url("/v1");
  }  // nothing listens on that port any more
  WireServer unused;
  auto settings = fast(unused, 1);
  settings.base_url = dead_url;
  ProviderHarness<OpenAiProvider> harness(settings);
  auto started = Stopwatch::now();
  auto outcome = harness.call(user_request("x"));
  BOOST_TEST_REQUIRE(!outcome->ok());
  BOOST_TEST(outcome->error().code() == ErrorCode::network, outcome->error().what());
  BOOST_TEST(outcome->trace.attempts == 2);
  BOOST_TEST(elapsed_ms(started) < 1500);
}

BOOST_AUTO_TEST_CASE(server_closing_on_the_request_is_retried_then_succeeds) {
  WireServer server;
  ProviderHarness<OpenAiProvider> harness(fast(server));
  ScriptedResponse refuse;
  refuse.fault = Fault::refuse;
  server.enqueue(refuse);
  server.enqueue(ok_text());
  auto outcome = harness.call(user_request("x"));
  BOOST_TEST_REQUIRE(outcome->ok(), (outcome->ok() ? "" : outcome->error().what()));
  BOOST_TEST(outcome->trace.attempts == 2);
  BOOST_TEST(server.request_count() == 2u);
}

BOOST_AUTO_TEST_CASE(reset_mid_stream_after_output_is_incomplete_and_not_retried) {
  WireServer server;
  ProviderHarness<OpenAiProvider> harness(fast(server));
  ScriptedResponse cut = load_fixture_response("openai-chat", "text_stream");
  cut.fault = Fault::reset_after_bytes;
  cut.fault_bytes = cut.body.size() / 2;
  server.enqueue(cut);
  server.enqueue(ok_text());  // must not be fetched: output was already shown
  std::string shown;
  auto outcome = harness.call(user_request("x", true),
                              [&](const luagent::llm::StreamChunk& c) { shown += c.text_delta; });
  BOOST_TEST_REQUIRE(!outcome->ok());
  BOOST_TEST(outcome->error().code() == ErrorCode::incomplete_stream, outcome->error().what());
  BOOST_TEST(!shown.empty());
  BOOST_TEST(server.request_count() == 1u);
}

BOOST_AUTO_TEST_CASE(reset_mid_stream_before_output_is_retried_with_a_fresh_decoder) {
  WireServer server;
  ProviderHarness<OpenAiProvider> harness(fast(server));
  ScriptedResponse cut = load_fixture_response("openai-chat", "text_stream");
  cut.fault = Fault::reset_after_bytes;
  cut.fault_bytes = cut.body.size() / 2;
  server.enqueue(cut);
  server.enqueue(load_fixture_response("openai-chat", "text_stream"));
  auto outcome = harness.call(user_request("x", true));  // no chunk callback: nothing shown
  BOOST_TEST_REQUIRE(outcome->ok(), (outcome->ok() ? "" : outcome->error().what()));
  BOOST_TEST(outcome->trace.attempts == 2);
  // The first attempt's half must not be in the reply twice.
  auto whole = load_fixture_response("openai-chat", "text_stream");
  luagent::llm::OpenAiStreamDecoder decoder;
  decoder.feed(whole.body);
  decoder.end_of_body();
  BOOST_TEST(outcome->reply().text == decoder.take_reply().text);
}

BOOST_AUTO_TEST_CASE(stalls_after_headers_and_mid_stream_time_out) {
  WireServer server;
  ProviderHarness<OpenAiProvider> harness(fast(server, 0));
  for (Fault fault : {Fault::stall_after_headers, Fault::stall_after_bytes}) {
    ScriptedResponse stall = load_fixture_response("openai-chat", "text_stream");
    stall.fault = fault;
    stall.fault_bytes = 120;
    server.enqueue(stall);
    auto started = Stopwatch::now();
    auto outcome = harness.call(user_request("x", true), [](const luagent::llm::StreamChunk&) {});
    BOOST_TEST_REQUIRE(!outcome->ok());
    BOOST_TEST(outcome->error().code() == ErrorCode::timeout, outcome->error().what());
    BOOST_TEST(elapsed_ms(started) >= 250);
    BOOST_TEST(elapsed_ms(started) < 2000);
  }
}

BOOST_AUTO_TEST_CASE(clean_eof_without_terminator_is_incomplete_stream) {
  WireServer server;
  ProviderHarness<OpenAiProvider> harness(fast(server));
  for (const char* provider : {"openai", "anthropic"}) {
    BOOST_TEST_CONTEXT(provider) {
      ScriptedResponse cut;
      if (std::string(provider) == "openai") {
        cut = load_fixture_response("openai-chat", "text_stream");
        cut.body = cut.body.substr(0, cut.body.find("data: [DONE]"));
      } else {
        cut = load_fixture_response("anthropic-messages", "text_stream");
        cut.body = cut.body.substr(0, cut.body.find("event: message_stop"));
      }
      cut.fault = Fault::close_without_terminator;
      server.enqueue(cut);
      std::optional<luagent::llm::Outcome> outcome;
      std::string shown;
      auto on_chunk = [&](const luagent::llm::StreamChunk& c) { shown += c.text_delta; };
      if (std::string(provider) == "openai") {
        outcome = harness.call(user_request("x", true), on_chunk);
      } else {
        ProviderHarness<AnthropicProvider> anthropic(fast(server));
        outcome = anthropic.call(user_request("x", true), on_chunk);
      }
      BOOST_TEST_REQUIRE(!outcome->ok());
      BOOST_TEST(outcome->error().code() == ErrorCode::incomplete_stream, outcome->error().what());
      BOOST_TEST(!shown.empty());  // text was streamed, but never returned as a final reply
    }
  }
}

BOOST_AUTO_TEST_CASE(rate_limits_are_retried_after_the_servers_delay) {
  WireServer server;
  ProviderHarness<OpenAiProvider> harness(fast(server));
  ScriptedResponse limited = load_fixture_response("errors", "openai_429_rate_limit_exceeded");

  // retry-after-ms
  limited.headers = {{"content-type", "application/json"}, {"retry-after-ms", "150"}};
  server.enqueue(limited);
  server.enqueue(ok_text());
  auto started = Stopwatch::now();
  auto outcome = harness.call(user_request("x"));
  BOOST_TEST_REQUIRE(outcome->ok(), (outcome->ok() ? "" : outcome->error().what()));
  BOOST_TEST(outcome->trace.attempts == 2);
  BOOST_TEST(elapsed_ms(started) >= 140);

  // Retry-After in seconds
  limited.headers = {{"content-type", "application/json"}, {"Retry-After", "1"}};
  server.enqueue(limited);
  server.enqueue(ok_text());
  started = Stopwatch::now();
  outcome = harness.call(user_request("x"));
  BOOST_TEST_REQUIRE(outcome->ok());
  BOOST_TEST(elapsed_ms(started) >= 950);
  BOOST_TEST(elapsed_ms(started) < 3000);

  // Retry-After as an HTTP-date two seconds ahead (whole seconds: waits 1-2 s)
  std::time_t when = std::time(nullptr) + 2;
  char date[64];
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", std::gmtime(&when));
  limited.headers = {{"content-type", "application/json"}, {"Retry-After", date}};
  server.enqueue(limited);
  server.enqueue(ok_text());
  started = Stopwatch::now();
  outcome = harness.call(user_request("x"));
  BOOST_TEST_REQUIRE(outcome->ok());
  BOOST_TEST(outcome->trace.attempts == 2);
  BOOST_TEST(elapsed_ms(started) >= 900);
  BOOST_TEST(elapsed_ms(started) < 4000);
  BOOST_TEST(server.request_count() == 6u);
}

BOOST_AUTO_TEST_CASE(server_errors_and_overload_are_retried) {
  WireServer server;
  ProviderHarness<OpenAiProvider> openai(fast(server));
  server.enqueue(load_fixture_response("errors", "openai_500_server_error"));
  server.enqueue(ok_text());
  auto outcome = openai.call(user_request("x"));
  BOOST_TEST_REQUIRE(outcome->ok());
  BOOST_TEST(outcome->trace.attempts == 2);

  ProviderHarness<AnthropicProvider> anthropic(fast(server));
  server.enqueue(load_fixture_response("errors", "anthropic_529_overloaded_error"));
  server.enqueue(load_fixture_response("errors", "anthropic_529_overloaded_error"));
  server.enqueue(load_fixture_response("anthropic-messages", "text_nonstream"));
  outcome = anthropic.call(user_request("x"));
  BOOST_TEST_REQUIRE(outcome->ok(), (outcome->ok() ? "" : outcome->error().what()));
  BOOST_TEST(outcome->trace.attempts == 3);
  BOOST_TEST(outcome->reply().text == "The capital of France is Paris.");

  // Retries run out: the last error is the answer.
  for (int i = 0; i < 3; ++i)
    server.enqueue(load_fixture_response("errors", "anthropic_529_overloaded_error"));
  outcome = anthropic.call(user_request("x"));
  BOOST_TEST_REQUIRE(!outcome->ok());
  BOOST_TEST(outcome->error().code() == ErrorCode::overloaded);
  BOOST_TEST(outcome->trace.attempts == 3);
}

BOOST_AUTO_TEST_CASE(auth_and_context_length_errors_are_not_retried) {
  WireServer server;
  ProviderHarness<OpenAiProvider> harness(fast(server, 3));
  server.enqueue(load_fixture_response("errors", "openai_401_invalid_api_key"));
  auto outcome = harness.call(user_request("x"));
  BOOST_TEST(outcome->error().code() == ErrorCode::auth);
  BOOST_TEST(server.request_count() == 1u);
  server.enqueue(load_fixture_response("errors", "openai_400_context_length_exceeded"));
  outcome = harness.call(user_request("x"));
  BOOST_TEST(outcome->error().code() == ErrorCode::context_length_exceeded);
  BOOST_TEST(outcome->trace.attempts == 1);
  BOOST_TEST(server.request_count() == 2u);
}

BOOST_AUTO_TEST_CASE(invalid_and_oversized_bodies_are_clear_errors) {
  WireServer server;
  auto settings = fast(server, 0);
  settings.max_response_bytes = 1 << 20;
  ProviderHarness<OpenAiProvider> harness(settings);
  ScriptedResponse garbage;
  garbage.headers = {{"content-type", "application/json"}};
  garbage.body = "{\"choices\": [ {\"message\": ";
  server.enqueue(garbage);
  auto outcome = harness.call(user_request("x"));
  BOOST_TEST_REQUIRE(!outcome->ok());
  BOOST_TEST(outcome->error().code() == ErrorCode::provider, outcome->error().what());

  ScriptedResponse huge;
  huge.headers = {{"content-type", "application/json"}};
  huge.filler_bytes = std::size_t{50} << 20;
  server.enqueue(huge);
  auto started = Stopwatch::now();
  outcome = harness.call(user_request("x"));
  BOOST_TEST_REQUIRE(!outcome->ok());
  BOOST_TEST(outcome->error().code() == ErrorCode::limit, outcome->error().what());
  BOOST_TEST(elapsed_ms(started) < 3000);

  huge.headers = {{"content-type", "text/event-stream"}};
  server.enqueue(huge);
  outcome = harness.call(user_request("x", true));
  BOOST_TEST_REQUIRE(!outcome->ok());
  BOOST_TEST((outcome->error().code() == ErrorCode::limit ||
              outcome->error().code() == ErrorCode::incomplete_stream),
             outcome->error().what());
}

BOOST_AUTO_TEST_CASE(the_api_key_never_leaks) {
  std::random_device random;
  const std::string secret =
      "luagent-secret-" + std::to_string(random()) + std::to_string(random());
  ::setenv("OPENAI_API_KEY", secret.c_str(), 1);
  luagent::test::TempDir dir;
  WireServer server;
  // A hostile server echoes the credentials it got into its error message.
  server.set_handler([](const luagent::test::RecordedRequest& request) {
    ScriptedResponse response;
    response.status = 401;
    response.reason = "Unauthorized";
    response.headers = {{"content-type", "application/json"}};
    nlohmann::json body = {
        {"error",
         {{"message", "Incorrect API key provided: " + request.header("authorization") + " (raw " +
                          request.header("authorization").substr(7) + ")"},
          {"type", "invalid_request_error"},
          {"code", "invalid_api_key"}}}};
    response.body = body.dump();
    return response;
  });
  luagent::EventLoop loop;
  auto make = [&](const std::string& url) {
    auto inner = luagent::llm::make_http_provider(
        "openai", {{"base_url", url}, {"model", "m"}, {"max_retries", 0}}, loop);
    return std::make_unique<luagent::llm::RecordingProvider>(std::move(inner),
                                                             dir / "cassette.jsonl");
  };
  std::string dead_url;
  {
    WireServer gone;
    dead_url = gone.url("/v1");
  }
  std::string everything;
  for (const std::string& url : {server.url("/v1"), dead_url}) {
    auto provider = make(url);
    std::optional<luagent::llm::Outcome> outcome;
    provider->start(user_request("x"), {},
                    [&](luagent::llm::Outcome o) { outcome = std::move(o); });
    luagent::test::run_loop_until(loop, [&] { return outcome.has_value(); });
    BOOST_TEST_REQUIRE(outcome.has_value());
    BOOST_TEST_REQUIRE(!outcome->ok());
    everything += outcome->error().what() + std::string("\n") + outcome->trace.request_body +
                  outcome->trace.provider + outcome->trace.model + "\n";
  }
  BOOST_TEST(server.requests().at(0).header("authorization") == "Bearer " + secret);
  everything += file_text(dir / "cassette.jsonl");
  BOOST_TEST(everything.find("Incorrect API key provided") != std::string::npos, everything);
  BOOST_TEST(everything.find(secret) == std::string::npos, everything);
  BOOST_TEST(everything.find(secret.substr(0, 20)) == std::string::npos);
  ::unsetenv("OPENAI_API_KEY");
}

BOOST_AUTO_TEST_CASE(recorded_calls_replay_offline_with_identical_results) {
  luagent::test::TempDir dir;
  const auto cassette = dir / "calls.jsonl";
  const std::vector<std::pair<std::string, std::string>> recorded = {
      {"openai-chat", "text_nonstream"},
      {"openai-chat", "json_object_stream"},
      {"errors", "openai_401_invalid_api_key"}};
  std::vector<luagent::llm::Outcome> live;
  {
    WireServer server;
    ProviderHarness<OpenAiProvider> harness(fast(server, 0));
    luagent::llm::RecordingProvider recording(std::move(harness.provider), cassette);
    for (std::size_t i = 0; i < recorded.size(); ++i) {
      server.enqueue(load_fixture_response(recorded[i].first, recorded[i].second));
      std::optional<luagent::llm::Outcome> outcome;
      recording.start(user_request("question " + std::to_string(i), i == 1), {},
                      [&](luagent::llm::Outcome o) { outcome = std::move(o); });
      luagent::test::run_loop_until(harness.loop, [&] { return outcome.has_value(); });
      BOOST_TEST_REQUIRE(outcome.has_value());
      live.push_back(std::move(*outcome));
    }
  }
  luagent::EventLoop offline;
  luagent::llm::ReplayProvider replay(offline, cassette);
  for (std::size_t i = recorded.size(); i-- > 0;) {  // any order
    std::optional<luagent::llm::Outcome> outcome;
    replay.start(user_request("question " + std::to_string(i), i == 1), {},
                 [&](luagent::llm::Outcome o) { outcome = std::move(o); });
    luagent::test::run_loop_until(offline, [&] { return outcome.has_value(); });
    BOOST_TEST_REQUIRE(outcome.has_value());
    BOOST_TEST_CONTEXT(recorded[i].second) {
      BOOST_TEST(outcome->ok() == live[i].ok());
      if (live[i].ok()) {
        BOOST_TEST(outcome->reply().text == live[i].reply().text);
        BOOST_TEST(outcome->reply().finish_reason == live[i].reply().finish_reason);
        BOOST_TEST(!live[i].reply().text.empty());
      } else {
        BOOST_TEST(outcome->error().code() == live[i].error().code());
        BOOST_TEST(outcome->error().message() == live[i].error().message());
      }
    }
  }
}

// A cassette is a file people edit by hand: each wrong shape is a config error at its
// line, said when the cassette is read, never an internal error, or a pump() that throws
// when the call it answers comes.
BOOST_AUTO_TEST_CASE(malformed_cassette_lines_are_named_where_they_are) {
  const std::string ok_request = R"("request":{"messages":[{"role":"user","content":"hi"}]})";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[1]", "line is not a JSON object"},
      {R"({"request":5,"response":{"text":"x"}})", "a line needs a \"request\" object"},
      {R"({"request":{"messages":5},"response":{"text":"x"}})",
       "\"request\" needs a \"messages\" array"},
      {R"({"request":{"messages":[],"response_schema":5},"response":{"text":"x"}})",
       "\"request.response_schema\" must be an object"},
      {R"({"request":{"messages":[],"tools":{}},"response":{"text":"x"}})",
       "\"request.tools\" must be an array"},
      {R"({"request":{"messages":[],"tools":[5]},"response":{"text":"x"}})",
       "each of \"request.tools\" must be an object with a \"name\""},
      {R"({"request":{"messages":[],"tools":[{"name":5}]},"response":{"text":"x"}})",
       "\"request.tools[].name\" must be a string"},
      {"{" + ok_request + R"(,"response":{"text":5}})", "\"response\" needs a string \"text\""},
      {"{" + ok_request + R"(,"response":{"text":"x","finish_reason":1}})",
       "\"response.finish_reason\" must be a string"},
      {"{" + ok_request + R"(,"response":{"text":"x","usage":[]}})",
       "\"response.usage\" must be an object"},
      {"{" + ok_request + R"(,"response":{"text":"x","usage":{"input_tokens":"3"}}})",
       "\"response.usage.input_tokens\" must be a whole number of tokens"},
      {"{" + ok_request + R"(,"response":{"text":"x","usage":{"output_tokens":-1}}})",
       "\"response.usage.output_tokens\" must be a whole number of tokens"},
      {"{" + ok_request + "}", "a line needs \"response\" or \"error\""},
      {"{" + ok_request + R"(,"error":"x"})", "\"error\" must be an object"},
      {"{" + ok_request + R"(,"error":{"code":7}})", "\"error.code\" must be a string"},
      {"{" + ok_request + R"(,"error":{"code":"bogus"}})",
       "\"error.code\" 'bogus' is not an error code (see docs/errors.md)"},
      {"{" + ok_request + R"(,"error":{"code":"rate_limited","message":[]}})",
       "\"error.message\" must be a string"},
  };
  for (const auto& [line, said] : cases) {
    BOOST_TEST_CONTEXT(line) {
      // A good line and a blank one first: the bad line is line 3.
      std::istringstream in("{" + ok_request + R"(,"response":{"text":"fine"}})" + "\n\n" + line +
                            "\n");
      try {
        luagent::llm::read_cassette(in, "hand.jsonl");
        BOOST_FAIL("accepted");
      } catch (const luagent::Error& error) {
        BOOST_TEST(error.code() == ErrorCode::config);
        BOOST_TEST(error.message() == "malformed cassette: " + said);
        BOOST_TEST(error.source() == "hand.jsonl");
        BOOST_TEST(error.line() == 3);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(a_cassette_is_read_up_to_its_limit) {
  const std::string line =
      R"({"request":{"messages":[]},"response":{"text":"x","usage":{"input_tokens":2}}})"
      "\n";
  std::istringstream fits(line + line);
  auto answers = luagent::llm::read_cassette(fits, "two.jsonl", 2 * line.size());
  BOOST_TEST_REQUIRE(answers.size() == 1u);
  BOOST_TEST(answers.begin()->second.size() == 2u);
  BOOST_TEST(answers.begin()->second[0].usage.input_tokens == 2);
  std::istringstream endless(line + line + "x");  // as /dev/zero would be, once past it
  try {
    luagent::llm::read_cassette(endless, "big.jsonl", 2 * line.size());
    BOOST_FAIL("accepted");
  } catch (const luagent::Error& error) {
    BOOST_TEST(error.code() == ErrorCode::config);
    BOOST_TEST(error.message() == "the cassette big.jsonl is larger than " +
                                      std::to_string(2 * line.size()) + " bytes");
  }
}
