// The OpenAI Chat Completions wire format, driven by every recorded OpenAI-shaped fixture
// (OpenAI, Ollama /v1, llama.cpp server, vLLM, Groq) in ../shared/fixtures/llm-wire.
#define BOOST_TEST_MODULE openai_wire
#include <boost/test/unit_test.hpp>

#include <filesystem>

#include "llm/json_schema.hpp"
#include "llm/openai_wire.hpp"
#include "luagent/error.hpp"
#include "support/wire_fixture_replay.hpp"

using luagent::Error;
using luagent::ErrorCode;
using luagent::llm::CompiledSchema;
using luagent::llm::OpenAiStreamDecoder;
using luagent::llm::Reply;
using luagent::llm::Request;
using luagent::llm::StreamChunk;
using luagent::test::ExpectedReply;
using nlohmann::json;

namespace {

// Expected values read off each fixture's response file.
const std::vector<ExpectedReply> kStreamCases = {
    {"llamacpp-server/text_stream",
     "<|channel|>analysis<|message|>User says ",
     "ns or need assistance, just let me know.",
     222,
     "",
     0,
     "",
     {},
     {82, 43, 0, 0},
     "stop",
     "gpt-3.5-turbo",
     true},
    {"llamacpp-server/tool_call_stream_content_leak",
     "Hi there! Let me check the current weath",
     "tool_call>\n<function=get_current_weather",
     111,
     "",
     0,
     "",
     {{"emGvNsMhrq1M2MOwwmEiS9MHA7L1XNrE", "get_current_weather",
       "{\"location\":\"Washington DC\"}", false}},
     {329, 35, 314, 0},
     "tool_calls",
     "qwen3-coder-30b-instruct",
     true},
    {"openai-chat/finish_length_stream",
     "{\"",
     "{\"",
     2,
     "",
     0,
     "",
     {},
     {79, 1, 0, 0},
     "length",
     "gpt-4o-2024-08-06",
     true},
    {"openai-chat/json_object_stream",
     "\n  {\n    \"location\": \"San Francisco, CA\"",
     "\"condition\": \"Cloudy\"\n      }\n    ]\n  }\n",
     615,
     "",
     0,
     "",
     {},
     {19, 177, 0, 0},
     "stop",
     "gpt-4o-2024-08-06",
     true},
    {"openai-chat/logprobs_stream",
     "Foo!",
     "Foo!",
     4,
     "",
     0,
     "",
     {},
     {9, 2, 0, 0},
     "stop",
     "gpt-4o-2024-08-06",
     true},
    {"openai-chat/multiple_choices_n3_stream",
     "{\"city\":\"San Francisco\",\"temperature\":65,\"units\":\"f\"}",
     "{\"city\":\"San Francisco\",\"temperature\":65,\"units\":\"f\"}",
     53,
     "",
     0,
     "",
     {},
     {79, 42, 0, 0},
     "stop",
     "gpt-4o-2024-08-06",
     true},
    {"openai-chat/parallel_tool_calls_stream_fragments",
     "",
     "",
     0,
     "",
     0,
     "",
     {{"call_JMW1whyEaYG438VE1OIflxA2", "GetWeatherArgs",
       "{\"city\": \"Edinburgh\", \"country\": \"GB\", \"units\": \"c\"}", false},
      {"call_DNYTawLBoN8fj3KN6qU9N1Ou", "get_stock_price",
       "{\"ticker\": \"AAPL\", \"exchange\": \"NASDAQ\"}", false}},
     {149, 60, 0, 0},
     "tool_calls",
     "gpt-4o-2024-08-06",
     true},
    {"openai-chat/parallel_tool_calls_stream_include_usage",
     "",
     "",
     0,
     "",
     0,
     "",
     {{"call_q2UyBRP7eXNTzAoR8lEhjc9Z", "get_country", "{}", false},
      {"call_b51ijcpFkDiTQG1bQzsrmtW5", "get_product_name", "{}", false}},
     {364, 40, 0, 0},
     "tool_calls",
     "gpt-4o-2024-08-06",
     true},
    {"openai-chat/refusal_stream",
     "",
     "",
     0,
     "I'm sorry, I can't assist with that request.",
     0,
     "",
     {},
     {79, 11, 0, 0},
     "stop",
     "gpt-4o-2024-08-06",
     true},
    {"openai-chat/structured_output_json_schema_stream",
     "{\"city\":\"San Francisco\",\"temperature\":61,\"units\":\"f\"}",
     "{\"city\":\"San Francisco\",\"temperature\":61,\"units\":\"f\"}",
     53,
     "",
     0,
     "",
     {},
     {79, 14, 0, 0},
     "stop",
     "gpt-4o-2024-08-06",
     true},
    {"openai-chat/text_stream",
     "I'm unable to provide real-time weather ",
     "liable weather website or a weather app.",
     159,
     "",
     0,
     "",
     {},
     {14, 30, 0, 0},
     "stop",
     "gpt-4o-2024-08-06",
     true},
    {"openai-chat/text_stream_after_tool_result_include_usage",
     "The capital of the UK is London.",
     "The capital of the UK is London.",
     32,
     "",
     0,
     "",
     {},
     {78, 9, 0, 0},
     "stop",
     "gpt-4o-mini-2024-07-18",
     true},
    {"openai-chat/tool_call_stream_fragments_include_usage",
     "",
     "",
     0,
     "",
     0,
     "",
     {{"call_ZR5UUuTt3pf61kjwAJIYdVMj", "get_capital", "{\"country\":\"UK\"}", false}},
     {53, 15, 0, 0},
     "tool_calls",
     "gpt-4o-mini-2024-07-18",
     true},
    {"vllm/text_stream_usage_every_chunk",
     "Hello Sam. It's nice to meet you. Is the",
     "help you with or would you like to chat?",
     99,
     "",
     0,
     "",
     {},
     {46, 26, 0, 0},
     "stop",
     "meta-llama/Meta-Llama-3.1-70B-Instruct",
     true},
};

const std::vector<ExpectedReply> kBodyCases = {
    {"llamacpp-server/text_nonstream",
     "<|channel|>analysis<|message|>The user j",
     "ssage|>Got it! How can I help you today?",
     218,
     "",
     0,
     "",
     {},
     {82, 43, 0, 0},
     "stop",
     "gpt-3.5-turbo",
     true},
    {"ollama/v1_chat_json_schema_nonstream",
     "{ \"city\": \"Paris\", \"country\": \"France\" }",
     "{ \"city\": \"Paris\", \"country\": \"France\" }",
     40,
     "",
     508,
     "Okay, the user is asking for t",
     {},
     {136, 15, 0, 0},
     "stop",
     "qwen3:0.6b",
     true},
    {"ollama/v1_chat_tool_calls_nonstream",
     "",
     "",
     0,
     "",
     763,
     "The conversation: user asked \"",
     {{"call_o2vnpxrw", "final_result", "{\"city\":\"Paris\",\"country\":\"France\"}", false}},
     {206, 194, 0, 0},
     "tool_calls",
     "gpt-oss:20b",
     true},
    {"openai-chat/finish_length_nonstream",
     "{\"",
     "{\"",
     2,
     "",
     0,
     "",
     {},
     {79, 1, 0, 0},
     "length",
     "gpt-4o-2024-08-06",
     true},
    {"openai-chat/parallel_tool_calls_nonstream",
     "",
     "",
     0,
     "",
     0,
     "",
     {{"call_fdNz3vOBKYgOIpMdWotB9MjY", "GetWeatherArgs",
       "{\"city\": \"Edinburgh\", \"country\": \"GB\", \"units\": \"c\"}", false},
      {"call_h1DWI1POMJLb0KwIyQHWXD4p", "get_stock_price",
       "{\"ticker\": \"AAPL\", \"exchange\": \"NASDAQ\"}", false}},
     {149, 60, 0, 0},
     "tool_calls",
     "gpt-4o-2024-08-06",
     true},
    {"openai-chat/reasoning_model_nonstream",
     "Hello there! How can I help you today?",
     "Hello there! How can I help you today?",
     38,
     "",
     0,
     "",
     {},
     {7, 87, 0, 64},
     "stop",
     "o3-mini-2025-01-31",
     true},
    {"openai-chat/refusal_nonstream",
     "",
     "",
     0,
     "I'm very sorry, but I can't assist with that.",
     0,
     "",
     {},
     {79, 12, 0, 0},
     "stop",
     "gpt-4o-2024-08-06",
     true},
    {"openai-chat/structured_output_json_schema_nonstream",
     "{\"city\":\"Mexico City\",\"country\":\"Mexico\"}",
     "{\"city\":\"Mexico City\",\"country\":\"Mexico\"}",
     41,
     "",
     0,
     "",
     {},
     {92, 15, 0, 0},
     "stop",
     "gpt-4o-2024-08-06",
     true},
    {"openai-chat/text_nonstream",
     "The capital of France is Paris.",
     "The capital of France is Paris.",
     31,
     "",
     0,
     "",
     {},
     {24, 8, 0, 0},
     "stop",
     "gpt-4o-2024-08-06",
     true},
    {"openai-chat/tool_call_nonstream",
     "",
     "",
     0,
     "",
     0,
     "",
     {{"call_iXFttys57ap0o16JSlC8yhYo", "get_user_country", "{}", false}},
     {68, 12, 0, 0},
     "tool_calls",
     "gpt-4o-2024-08-06",
     true},
    {"openai-chat/tool_result_followup_nonstream",
     "",
     "",
     0,
     "",
     0,
     "",
     {{"call_gmD2oUZUzSoCkmNmp3JPUF7R", "final_result",
       "{\"city\": \"Mexico City\", \"country\": \"Mexico\"}", false}},
     {89, 36, 0, 0},
     "tool_calls",
     "gpt-4o-2024-08-06",
     true},
    {"vllm/text_nonstream",
     "Random Number Generator Produces Smallest Possible Result",
     "Random Number Generator Produces Smallest Possible Result",
     57,
     "",
     0,
     "",
     {},
     {146, 10, 0, 0},
     "stop",
     "meta-llama/Meta-Llama-3.1-70B-Instruct",
     true},
};

std::string stream_body(const std::string& case_name) {
  const auto sse = luagent::test::fixtures_dir() / "llm-wire" / (case_name + ".response.sse");
  if (std::filesystem::exists(sse))
    return luagent::test::read_wire_fixture(case_name, ".response.sse");
  return luagent::test::sse_from_data_lines(
      luagent::test::read_wire_fixture(case_name, ".response.sse-data.jsonl"));
}

struct Decoded {
  Reply reply;
  bool finished = false;
  std::string chunk_text;
  std::string chunk_reasoning;
  std::string chunk_refusal;
};

Decoded decode(const std::vector<std::string_view>& pieces) {
  Decoded out;
  OpenAiStreamDecoder decoder([&out](const StreamChunk& chunk) {
    out.chunk_text += chunk.text_delta;
    out.chunk_reasoning += chunk.reasoning_delta;
    out.chunk_refusal += chunk.refusal_delta;
  });
  for (const auto piece : pieces) decoder.feed(piece);
  decoder.end_of_body();
  out.finished = decoder.finished();
  out.reply = decoder.take_reply();
  return out;
}

int meta_status(const std::string& case_name) {
  return json::parse(
      luagent::test::read_wire_fixture(case_name, ".meta.json"))["response"]["status"];
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_openai_shaped_stream_fixture_decodes_in_any_fragmentation) {
  BOOST_TEST(kStreamCases.size() == 14u);
  for (const ExpectedReply& want : kStreamCases) {
    const std::string body = stream_body(want.case_name);
    const Decoded whole = decode({body});
    luagent::test::check_reply(whole.reply, want);
    BOOST_TEST_CONTEXT(want.case_name) {
      BOOST_TEST(whole.finished == want.finished);
      BOOST_TEST(whole.chunk_text == whole.reply.text);
      BOOST_TEST(whole.chunk_reasoning == whole.reply.reasoning);
      BOOST_TEST(whole.chunk_refusal == whole.reply.refusal);
      const std::string expected = luagent::test::reply_summary(whole.reply).dump();
      int mismatches = 0;
      luagent::test::for_each_fragmentation(body, [&](const auto& pieces, const std::string& how) {
        const Decoded got = decode(pieces);
        if (luagent::test::reply_summary(got.reply).dump() != expected ||
            got.finished != whole.finished || got.chunk_text != whole.chunk_text) {
          if (++mismatches < 3) BOOST_TEST_MESSAGE("differs when fed " << how);
        }
      });
      BOOST_TEST(mismatches == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(every_openai_shaped_body_fixture_parses) {
  BOOST_TEST(kBodyCases.size() == 12u);
  for (const ExpectedReply& want : kBodyCases) {
    const json body =
        json::parse(luagent::test::read_wire_fixture(want.case_name, ".response.json"));
    luagent::test::check_reply(luagent::llm::openai_parse_response(body), want);
  }
}

BOOST_AUTO_TEST_CASE(stream_without_done_is_not_finished) {
  std::string body = stream_body("openai-chat/text_stream");
  body.erase(body.find("data: [DONE]"));
  const Decoded got = decode({body});
  BOOST_TEST(!got.finished);
  BOOST_TEST(got.reply.text.starts_with("I'm unable"));
}

BOOST_AUTO_TEST_CASE(choices_other_than_zero_are_ignored_event_by_event) {
  OpenAiStreamDecoder decoder;
  decoder.on_event({"message", R"({"choices":[{"index":1,"delta":{"content":"one"}}]})", ""});
  decoder.on_event(
      {"message", R"({"choices":[{"index":0,"delta":{"content":"zero"}}],"usage":null})", ""});
  decoder.on_event(
      {"message", R"({"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}})", ""});
  BOOST_TEST(!decoder.finished());
  decoder.on_event({"message", "[DONE]", ""});
  BOOST_TEST(decoder.finished());
  const Reply reply = decoder.take_reply();
  BOOST_TEST(reply.text == "zero");
  BOOST_TEST(reply.usage.input_tokens == 3);
  BOOST_TEST(reply.usage.output_tokens == 4);
}

BOOST_AUTO_TEST_CASE(tool_call_deltas_are_keyed_by_index_not_position) {
  // Index 1 arrives first in the array and the id only on the first delta of each call.
  OpenAiStreamDecoder decoder;
  decoder.on_event({"message", R"({"choices":[{"index":0,"delta":{"tool_calls":[
      {"index":1,"id":"b","function":{"name":"second","arguments":"{\"x\""}},
      {"index":0,"id":"a","function":{"name":"first","arguments":""}}]}}]})",
                    ""});
  decoder.on_event({"message", R"({"choices":[{"index":0,"delta":{"tool_calls":[
      {"index":0,"function":{"arguments":"{}"}},{"index":1,"function":{"arguments":":1}"}}]},
      "finish_reason":"tool_calls"}]})",
                    ""});
  const Reply reply = decoder.take_reply();
  BOOST_TEST_REQUIRE(reply.tool_calls.size() == 2u);
  BOOST_TEST(reply.tool_calls[0].id == "a");
  BOOST_TEST(reply.tool_calls[0].arguments == json::object());
  BOOST_TEST(reply.tool_calls[1].name == "second");
  BOOST_TEST(reply.tool_calls[1].arguments == json({{"x", 1}}));
}

BOOST_AUTO_TEST_CASE(truncated_tool_arguments_keep_the_raw_prefix) {
  OpenAiStreamDecoder decoder;
  decoder.on_event({"message", R"({"choices":[{"index":0,"delta":{"tool_calls":[
      {"index":0,"id":"a","function":{"name":"f","arguments":"{\"city\": \"Par"}}]},
      "finish_reason":"length"}]})",
                    ""});
  const Reply reply = decoder.take_reply();
  BOOST_TEST_REQUIRE(reply.tool_calls.size() == 1u);
  BOOST_TEST(reply.tool_calls[0].truncated);
  BOOST_TEST(reply.tool_calls[0].arguments.is_null());
  BOOST_TEST(reply.tool_calls[0].raw_arguments == "{\"city\": \"Par");
  BOOST_TEST(reply.finish_reason == "length");
}

BOOST_AUTO_TEST_CASE(malformed_chunk_is_a_provider_error) {
  OpenAiStreamDecoder decoder;
  try {
    decoder.on_event({"message", "{\"choices\": [", ""});
    BOOST_FAIL("no error");
  } catch (const Error& e) {
    BOOST_TEST(e.code() == ErrorCode::provider);
    BOOST_TEST(e.message().find("malformed JSON") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(deeply_nested_chunk_is_refused) {
  OpenAiStreamDecoder decoder;
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  try {
    decoder.on_event({"message", deep, ""});
    BOOST_FAIL("no error");
  } catch (const Error& e) {
    BOOST_TEST(e.code() == ErrorCode::limit);
  }
}

BOOST_AUTO_TEST_CASE(groq_error_event_inside_a_200_stream_is_classified) {
  const std::string case_name = "errors/openai_compat_stream_error_event_groq";
  const std::string body = luagent::test::read_wire_fixture(case_name, ".response.sse");
  BOOST_TEST(meta_status(case_name) == 200);
  int wrong = 0;
  luagent::test::for_each_fragmentation(
      body,
      [&](const auto& pieces, const std::string& how) {
        std::string reasoning;
        OpenAiStreamDecoder decoder([&](const StreamChunk& c) { reasoning += c.reasoning_delta; });
        try {
          for (const auto piece : pieces) decoder.feed(piece);
          decoder.end_of_body();
          ++wrong;
          BOOST_TEST_MESSAGE("no error when fed " << how);
        } catch (const Error& e) {
          const bool right = e.code() == ErrorCode::bad_request &&
                             e.message().find("tool_use_failed") != std::string::npos &&
                             e.message().find("Tool call validation failed") != std::string::npos &&
                             reasoning.starts_with("We need to call the tool") &&
                             !decoder.finished();
          if (!right) ++wrong;
        }
      },
      0);
  BOOST_TEST(wrong == 0);
}

BOOST_AUTO_TEST_CASE(http_error_fixtures_are_classified) {
  struct Case {
    std::string name;
    ErrorCode code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"errors/openai_400_context_length_exceeded", ErrorCode::context_length_exceeded,
       "maximum context length is 4097 tokens"},
      {"errors/openai_401_invalid_api_key", ErrorCode::auth, "Incorrect API key provided: sk-***."},
      {"errors/openai_404_model_not_found", ErrorCode::bad_request,
       "`gpt-5.2-proo` does not exist"},
      {"errors/openai_400_unsupported_value", ErrorCode::bad_request, "(param messages[0].role)"},
      {"errors/openai_429_rate_limit_exceeded", ErrorCode::rate_limited, "Please try again in 6ms"},
      {"errors/openai_500_server_error", ErrorCode::provider, "e5c949c8ec2c86be225544e5eefcbe4d"},
  };
  for (const Case& c : cases) {
    BOOST_TEST_CONTEXT(c.name) {
      const int status = meta_status(c.name);
      const Error error = luagent::llm::openai_classify_error(
          status, luagent::test::read_wire_fixture(c.name, ".response.json"));
      BOOST_TEST(error.code() == c.code);
      BOOST_TEST(error.message().find(c.says) != std::string::npos, error.message());
      BOOST_TEST(error.message().starts_with("HTTP " + std::to_string(status) + ": "));
      BOOST_TEST(error.message().find("sk-REDACTED") == std::string::npos);
    }
  }
}

BOOST_AUTO_TEST_CASE(classification_falls_back_to_the_status_and_scrubs_keys) {
  using luagent::llm::openai_classify_error;
  BOOST_TEST(openai_classify_error(529, "").code() == ErrorCode::overloaded);
  BOOST_TEST(openai_classify_error(503, "<html>busy</html>").code() == ErrorCode::overloaded);
  BOOST_TEST(openai_classify_error(502, "<html>bad gateway</html>").code() == ErrorCode::provider);
  BOOST_TEST(openai_classify_error(408, "{}").code() == ErrorCode::timeout);
  BOOST_TEST(openai_classify_error(403, R"({"error":{"message":"no"}})").code() == ErrorCode::auth);
  BOOST_TEST(openai_classify_error(409, R"({"error":"lock"})").code() == ErrorCode::provider);
  BOOST_TEST(openai_classify_error(400, R"({"error":{"code":"insufficient_quota"}})").code() ==
             ErrorCode::rate_limited);
  const Error leaked = openai_classify_error(
      401,
      R"({"error":{"message":"Incorrect API key provided: sk-proj-AbC123_xyz-789. Bearer tok3n"}})");
  BOOST_TEST(leaked.message().find("AbC123") == std::string::npos, leaked.message());
  BOOST_TEST(leaked.message().find("tok3n") == std::string::npos, leaked.message());
  BOOST_TEST(leaked.message().find("sk-***.") != std::string::npos, leaked.message());
}

// ---- request rendering -------------------------------------------------------------------

namespace {

// The neutral Request a caller would build for a recorded OpenAI-shaped request body.
Request neutral_from_openai(const json& wire) {
  Request request;
  request.model = wire.value("model", "");
  for (const json& message : wire["messages"]) {
    json neutral = {{"role", message["role"]}, {"content", message.value("content", json())}};
    if (message.contains("tool_calls")) {
      neutral["tool_calls"] = json::array();
      for (const json& call : message["tool_calls"]) {
        neutral["tool_calls"].push_back(
            {{"id", call["id"]},
             {"name", call["function"]["name"]},
             {"arguments", json::parse(call["function"]["arguments"].get<std::string>())}});
      }
    }
    if (message.contains("tool_call_id")) neutral["tool_call_id"] = message["tool_call_id"];
    request.messages.push_back(neutral);
  }
  for (const json& tool : wire.value("tools", json::array())) {
    request.tools.push_back({tool["function"]["name"], tool["function"].value("description", ""),
                             tool["function"].value("parameters", json::object())});
  }
  if (wire.contains("tool_choice")) {
    const json& choice = wire["tool_choice"];
    request.tool_choice = choice.is_string() ? choice : choice["function"]["name"];
  }
  if (wire.contains("response_format") && wire["response_format"]["type"] == "json_schema") {
    request.response_schema =
        std::make_shared<const CompiledSchema>(wire["response_format"]["json_schema"]["schema"]);
  }
  if (wire.contains("max_tokens")) request.max_tokens = wire["max_tokens"].get<int>();
  if (wire.contains("temperature")) request.temperature = wire["temperature"].get<double>();
  request.stream = wire.value("stream", false);
  return request;
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_openai_shaped_request_fixture_is_rendered_with_the_same_essentials) {
  int checked = 0;
  for (const char* dir : {"openai-chat", "ollama", "llamacpp-server", "errors"}) {
    for (const auto& entry :
         std::filesystem::directory_iterator(luagent::test::fixtures_dir() / "llm-wire" / dir)) {
      const std::string file = entry.path().filename().string();
      if (!file.ends_with(".request.json")) continue;
      const std::string case_name = std::string(dir) + "/" + file.substr(0, file.size() - 13);
      if (case_name.starts_with("ollama/api_") || case_name.starts_with("errors/anthropic"))
        continue;
      BOOST_TEST_CONTEXT(case_name) {
        const json wire = json::parse(luagent::test::read_wire_fixture(case_name, ".request.json"));
        const std::string text =
            luagent::llm::openai_request_body(neutral_from_openai(wire), "default-model");
        const json ours = json::parse(text);
        // Written member by member, the body is still exactly the compact, key-sorted dump.
        BOOST_TEST(ours.dump() == text);
        BOOST_TEST(ours["model"] == wire.value("model", "default-model"));
        BOOST_TEST_REQUIRE(ours["messages"].size() == wire["messages"].size());
        for (std::size_t i = 0; i < wire["messages"].size(); ++i) {
          const json& w = wire["messages"][i];
          const json& o = ours["messages"][i];
          BOOST_TEST(o["role"] == w["role"]);
          BOOST_TEST(o["content"] == w.value("content", json()));
          BOOST_TEST(o.value("tool_call_id", json()) == w.value("tool_call_id", json()));
          BOOST_TEST_REQUIRE(o.value("tool_calls", json::array()).size() ==
                             w.value("tool_calls", json::array()).size());
          for (std::size_t k = 0; k < w.value("tool_calls", json::array()).size(); ++k) {
            const json& wc = w["tool_calls"][k];
            const json& oc = o["tool_calls"][k];
            BOOST_TEST(oc["id"] == wc["id"]);
            BOOST_TEST(oc["type"] == "function");
            BOOST_TEST(oc["function"]["name"] == wc["function"]["name"]);
            BOOST_TEST(oc["function"]["arguments"].is_string());
            BOOST_TEST(json::parse(oc["function"]["arguments"].get<std::string>()) ==
                       json::parse(wc["function"]["arguments"].get<std::string>()));
          }
        }
        BOOST_TEST_REQUIRE(ours.value("tools", json::array()).size() ==
                           wire.value("tools", json::array()).size());
        for (std::size_t i = 0; i < wire.value("tools", json::array()).size(); ++i) {
          BOOST_TEST(ours["tools"][i]["type"] == "function");
          BOOST_TEST(ours["tools"][i]["function"]["name"] == wire["tools"][i]["function"]["name"]);
          BOOST_TEST(ours["tools"][i]["function"]["parameters"] ==
                     wire["tools"][i]["function"]["parameters"]);
        }
        BOOST_TEST(ours.value("tool_choice", json()) == wire.value("tool_choice", json()));
        if (wire.contains("response_format") && wire["response_format"]["type"] == "json_schema") {
          BOOST_TEST(ours["response_format"]["type"] == "json_schema");
          BOOST_TEST(ours["response_format"]["json_schema"]["schema"] ==
                     wire["response_format"]["json_schema"]["schema"]);
          BOOST_TEST(ours["response_format"]["json_schema"]["strict"] == false);
        }
        BOOST_TEST(ours.value("max_tokens", json()) == wire.value("max_tokens", json()));
        BOOST_TEST(ours.value("stream", false) == wire.value("stream", false));
        if (wire.value("stream", false))
          BOOST_TEST(ours["stream_options"]["include_usage"] == true);
        ++checked;
      }
    }
  }
  BOOST_TEST(checked == 26);
}

BOOST_AUTO_TEST_CASE(request_maps_neutral_shapes_onto_the_wire) {
  Request request;
  request.messages = json::parse(R"([
    {"role":"system","content":"be brief"},
    {"role":"user","content":"hi"},
    {"role":"assistant","content":"","tool_calls":[{"id":"c1","name":"f","arguments":{"a":[1,2]}}],
     "carried_blocks":[{"type":"thinking","thinking":"x","signature":"s"}]},
    {"role":"tool","tool_call_id":"c1","content":"done"}])");
  request.tools.push_back({"f", "does f", {{"type", "object"}}});
  request.tool_choice = "f";
  request.response_schema = std::make_shared<const CompiledSchema>(json{{"type", "object"}});
  request.temperature = 0.5;
  request.max_tokens = 100;
  request.stream = true;
  const std::string text = luagent::llm::openai_request_body(request, "m");
  const json body = json::parse(text);
  BOOST_TEST(body.dump() == text);
  BOOST_TEST(body["model"] == "m");
  BOOST_TEST(body["messages"][2]["content"].is_null());
  BOOST_TEST(!body["messages"][2].contains("carried_blocks"));
  BOOST_TEST(body["messages"][2]["tool_calls"][0]["function"]["arguments"] == R"({"a":[1,2]})");
  BOOST_TEST(body["messages"][3] ==
             json({{"role", "tool"}, {"tool_call_id", "c1"}, {"content", "done"}}));
  BOOST_TEST(
      body["tools"][0] ==
      json({{"type", "function"},
            {"function",
             {{"name", "f"}, {"description", "does f"}, {"parameters", {{"type", "object"}}}}}}));
  BOOST_TEST(body["tool_choice"] == json({{"type", "function"}, {"function", {{"name", "f"}}}}));
  BOOST_TEST(body["response_format"]["json_schema"]["strict"] == false);
  BOOST_TEST(body["temperature"] == 0.5);
  BOOST_TEST(body["max_tokens"] == 100);
  BOOST_TEST(body["stream_options"]["include_usage"] == true);
}

// The schema goes out as the text made once with the compiled schema; a schema with no
// JSON text (invalid UTF-8) fails the body as it always did.
BOOST_AUTO_TEST_CASE(response_schema_is_sent_as_its_compiled_text) {
  Request request;
  request.messages = json::parse(R"([{"role":"user","content":"hi"}])");
  const json schema = {{"type", "object"}, {"properties", {{"a", {{"type", "number"}}}}}};
  request.response_schema = std::make_shared<const CompiledSchema>(schema);
  BOOST_REQUIRE(request.response_schema->text() != nullptr);
  BOOST_TEST(*request.response_schema->text() == schema.dump());
  const std::string text = luagent::llm::openai_request_body(request, "m");
  BOOST_TEST(text.find("\"schema\":" + schema.dump() + ",") != std::string::npos, text);
  request.response_schema =
      std::make_shared<const CompiledSchema>(json{{"description", std::string("\xff")}});
  BOOST_TEST(request.response_schema->text() == nullptr);
  BOOST_CHECK_THROW(luagent::llm::openai_request_body(request, "m"), std::exception);
}

BOOST_AUTO_TEST_CASE(bad_requests_are_usage_errors) {
  Request request;
  request.messages = json::parse(R"([{"role":"wizard","content":"hi"}])");
  BOOST_CHECK_EXCEPTION(luagent::llm::openai_request_body(request, "m"), Error, [](const Error& e) {
    return e.code() == ErrorCode::usage &&
           e.message().find("messages[0].role") != std::string::npos;
  });
  request.messages = json::parse(R"([{"role":"user","content":"hi"}])");
  BOOST_CHECK_EXCEPTION(luagent::llm::openai_request_body(request, ""), Error,
                        [](const Error& e) { return e.code() == ErrorCode::usage; });
  request.messages = json::parse(R"([{"role":"tool","content":"x"}])");
  BOOST_CHECK_EXCEPTION(luagent::llm::openai_request_body(request, "m"), Error, [](const Error& e) {
    return e.message().find("tool_call_id") != std::string::npos;
  });
}
