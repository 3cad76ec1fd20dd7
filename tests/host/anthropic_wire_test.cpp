// The Anthropic Messages wire format, driven by every recorded Anthropic fixture in
// ../shared/fixtures/llm-wire.
#define BOOST_TEST_MODULE anthropic_wire
#include <boost/test/unit_test.hpp>

#include <filesystem>

#include "llm/anthropic_wire.hpp"
#include "llm/json_schema.hpp"
#include "luagent/error.hpp"
#include "support/wire_fixture_replay.hpp"

using luagent::Error;
using luagent::ErrorCode;
using luagent::llm::AnthropicStreamDecoder;
using luagent::llm::CompiledSchema;
using luagent::llm::Reply;
using luagent::llm::Request;
using luagent::llm::StreamChunk;
using luagent::test::ExpectedReply;
using nlohmann::json;

namespace {

// Expected values read off each fixture's response file (streams and bodies).
const std::vector<ExpectedReply> kCases = {
    {"anthropic-messages/max_tokens_during_tool_input_stream",
     "I'll create a comprehensive tax guide fo",
     "d taxes.txt. Let me do that for you now.",
     135,
     "",
     0,
     "",
     {{"toolu_01EKqbqmZrGRXy18eN7m9kvY", "make_file",
       "{\"filename\": \"taxes.txt\", \"lines_of_text\": [\n\"# COMPREHENSIVE TAX GUIDE FOR "
       "INDIVIDUALS WITH MULTIPLE W-2s\",\n\"\",\n\"## INTRODUCTION\",\n\"\",\n\"Filing taxes",
       true}},
     {450, 124, 0, 0},
     "length",
     "claude-3-7-sonnet-20250219",
     true,
     {}},
    {"anthropic-messages/parallel_tool_use_nonstream",
     "I'll help you find out who is the younge",
     "ntity information to compare their ages.",
     156,
     "",
     0,
     "",
     {{"toolu_0167cfEnoQaPviGdVXA95zcu", "retrieve_entity_info", "{\"name\":\"Alice\"}", false},
      {"toolu_01EEe2V5HD1Ac4rKiUR4HD2T", "retrieve_entity_info", "{\"name\":\"Bob\"}", false},
      {"toolu_01XFyAjstT3966qvRynZyVPo", "retrieve_entity_info", "{\"name\":\"Charlie\"}", false},
      {"toolu_013mnQZbgtK2oe3Mo3XKJsx3", "retrieve_entity_info", "{\"name\":\"Daisy\"}", false}},
     {423, 202, 0, 0},
     "tool_calls",
     "claude-haiku-4-5-20251001",
     true,
     {}},
    {"anthropic-messages/redacted_thinking_stream",
     "I notice that you've sent what appears t",
     "oday with a legitimate task or question?",
     359,
     "",
     0,
     "",
     {},
     {92, 189, 0, 0},
     "stop",
     "claude-sonnet-4-5-20250929",
     true,
     {"redacted_thinking:EqkECkYIBxgCKkA8AZ4noDfV", "redacted_thinking:EtgBCkYIBxgCKkDQfGkwzflE"}},
    {"anthropic-messages/server_and_client_tool_use_stream",
     "Let me search for a tool that can provid",
     "urrent USD to EUR exchange rate for you.",
     158,
     "",
     0,
     "",
     {{"toolu_01EFn5wTNBYA8Reni8rbmnHT", "get_exchange_rate",
       "{\"from_currency\": \"USD\", \"to_currency\": \"EUR\"}", false}},
     {1591, 175, 0, 0},
     "tool_calls",
     "claude-sonnet-4-6",
     true,
     {}},
    {"anthropic-messages/text_nonstream",
     "The capital of France is Paris.",
     "The capital of France is Paris.",
     31,
     "",
     0,
     "",
     {},
     {20, 10, 0, 0},
     "stop",
     "claude-3-opus-20240229",
     true,
     {}},
    {"anthropic-messages/text_stream",
     "The current exchange rate is **1 USD = 0",
     "this rate may change throughout the day.",
     227,
     "",
     0,
     "",
     {},
     {1007, 59, 0, 0},
     "stop",
     "claude-sonnet-4-6",
     true,
     {}},
    {"anthropic-messages/thinking_nonstream",
     "Here's how to cross the street safely:\n\n",
     "ou, so stay alert and make safe choices.",
     1062,
     "",
     134,
     "This is a straightforward ques",
     {},
     {43, 321, 0, 0},
     "stop",
     "claude-sonnet-4-5-20250929",
     true,
     {"thinking:Eq8CCkYICxgCKkDdadQOXMzN"}},
    {"anthropic-messages/thinking_stream",
     "Here are the basic steps for safely cros",
     "safety over speed when crossing streets.",
     1021,
     "",
     202,
     "This is a straightforward ques",
     {},
     {43, 282, 0, 0},
     "stop",
     "claude-sonnet-4-20250514",
     true,
     {"thinking:EvMCCkYICxgCKkCHP2cSuEdc"}},
    {"anthropic-messages/tool_result_followup_nonstream",
     "Based on the retrieved information, we c",
     " youngest among the four family members.",
     340,
     "",
     0,
     "",
     {},
     {771, 77, 0, 0},
     "stop",
     "claude-haiku-4-5-20251001",
     true,
     {}},
    {"anthropic-messages/tool_use_nonstream",
     "",
     "",
     0,
     "",
     0,
     "",
     {{"toolu_01X9wcHKKAZD9tBC711xipPa", "get_user_country", "{}", false}},
     {445, 23, 0, 0},
     "tool_calls",
     "claude-sonnet-4-5-20250929",
     true,
     {}},
    {"anthropic-messages/tool_use_stream_docs",
     "Okay, let's check the weather for San Francisco, CA:",
     "Okay, let's check the weather for San Francisco, CA:",
     52,
     "",
     0,
     "",
     {{"toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather",
       "{\"location\": \"San Francisco, CA\", \"unit\": \"fahrenheit\"}", false}},
     {472, 89, 0, 0},
     "tool_calls",
     "claude-opus-4-1-20250805",
     true,
     {}},
    {"anthropic-messages/tool_use_stream_sdk_fixture",
     "I'll check the current weather in Paris for you.",
     "I'll check the current weather in Paris for you.",
     48,
     "",
     0,
     "",
     {{"toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", "{\"location\": \"Paris\"}", false}},
     {377, 65, 0, 0},
     "tool_calls",
     "claude-sonnet-4-20250514",
     true,
     {}},
};

struct Decoded {
  Reply reply;
  bool finished = false;
  std::string chunk_text;
  std::string chunk_reasoning;
};

Decoded decode(const std::vector<std::string_view>& pieces) {
  Decoded out;
  AnthropicStreamDecoder decoder([&out](const StreamChunk& chunk) {
    out.chunk_text += chunk.text_delta;
    out.chunk_reasoning += chunk.reasoning_delta;
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

BOOST_AUTO_TEST_CASE(every_anthropic_fixture_decodes_in_any_fragmentation) {
  BOOST_TEST(kCases.size() == 12u);
  for (const ExpectedReply& want : kCases) {
    const auto dir = luagent::test::fixtures_dir() / "llm-wire";
    if (std::filesystem::exists(dir / (want.case_name + ".response.json"))) {
      const json body =
          json::parse(luagent::test::read_wire_fixture(want.case_name, ".response.json"));
      luagent::test::check_reply(luagent::llm::anthropic_parse_response(body), want);
      continue;
    }
    const std::string body = luagent::test::read_wire_fixture(want.case_name, ".response.sse");
    const Decoded whole = decode({body});
    luagent::test::check_reply(whole.reply, want);
    BOOST_TEST_CONTEXT(want.case_name) {
      BOOST_TEST(whole.finished == want.finished);
      BOOST_TEST(whole.chunk_text == whole.reply.text);
      BOOST_TEST(whole.chunk_reasoning == whole.reply.reasoning);
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

BOOST_AUTO_TEST_CASE(thinking_blocks_are_carried_whole) {
  const Decoded got = decode(
      {luagent::test::read_wire_fixture("anthropic-messages/thinking_stream", ".response.sse")});
  BOOST_TEST_REQUIRE(got.reply.carried_blocks.size() == 1u);
  const json& block = got.reply.carried_blocks[0];
  BOOST_TEST(block["thinking"] == got.reply.reasoning);
  BOOST_TEST(block["signature"].get<std::string>().size() > 300u);
  const Decoded redacted = decode({luagent::test::read_wire_fixture(
      "anthropic-messages/redacted_thinking_stream", ".response.sse")});
  BOOST_TEST(redacted.reply.carried_blocks[0]["type"] == "redacted_thinking");
  BOOST_TEST(redacted.reply.reasoning.empty());
}

BOOST_AUTO_TEST_CASE(stream_without_message_stop_is_not_finished) {
  std::string body =
      luagent::test::read_wire_fixture("anthropic-messages/text_stream", ".response.sse");
  body.erase(body.find("event: message_stop"));
  BOOST_TEST(!decode({body}).finished);
}

BOOST_AUTO_TEST_CASE(cache_reads_count_as_input_and_as_cached) {
  const luagent::llm::Usage usage =
      luagent::llm::anthropic_usage({{"input_tokens", 10},
                                     {"cache_read_input_tokens", 100},
                                     {"cache_creation_input_tokens", 5},
                                     {"output_tokens", 7}});
  BOOST_TEST(usage.input_tokens == 115);
  BOOST_TEST(usage.cached_tokens == 100);
  BOOST_TEST(usage.output_tokens == 7);
}

BOOST_AUTO_TEST_CASE(overloaded_error_event_in_a_200_stream) {
  const std::string case_name = "errors/anthropic_stream_error_event_overloaded";
  BOOST_TEST(meta_status(case_name) == 200);
  const std::string body = luagent::test::read_wire_fixture(case_name, ".response.sse");
  int wrong = 0;
  luagent::test::for_each_fragmentation(body, [&](const auto& pieces, const std::string&) {
    AnthropicStreamDecoder decoder;
    try {
      for (const auto piece : pieces) decoder.feed(piece);
      decoder.end_of_body();
      ++wrong;
    } catch (const Error& e) {
      if (e.code() != ErrorCode::overloaded ||
          e.message().find("overloaded_error: Overloaded") == std::string::npos)
        ++wrong;
    }
  });
  BOOST_TEST(wrong == 0);
}

BOOST_AUTO_TEST_CASE(http_error_fixtures_are_classified) {
  struct Case {
    std::string name;
    ErrorCode code;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"errors/anthropic_400_invalid_request_error", ErrorCode::bad_request,
       "effort level 'xhigh'. Supported levels: high, low, max, medium. (request_id "
       "req_011Ca7jT9AHpgXgdv8igm4z9)"},
      {"errors/anthropic_401_authentication_error", ErrorCode::auth,
       "authentication_error: invalid x-api-key"},
      {"errors/anthropic_404_not_found_error", ErrorCode::bad_request,
       "not_found_error: model: claude-sonet-4-5"},
      {"errors/anthropic_429_rate_limit_error", ErrorCode::rate_limited,
       "20,000 input tokens per minute"},
      {"errors/anthropic_500_api_error", ErrorCode::provider,
       "Internal server error (request_id req_011CcLLdL8STNSDEk7Wk9Z7L)"},
      {"errors/anthropic_529_overloaded_error", ErrorCode::overloaded,
       "HTTP 529: overloaded_error: Overloaded"},
  };
  for (const Case& c : cases) {
    BOOST_TEST_CONTEXT(c.name) {
      const int status = meta_status(c.name);
      const Error error = luagent::llm::anthropic_classify_error(
          status, luagent::test::read_wire_fixture(c.name, ".response.json"));
      BOOST_TEST(error.code() == c.code);
      BOOST_TEST(error.message().find(c.says) != std::string::npos, error.message());
      BOOST_TEST(error.message().starts_with("HTTP " + std::to_string(status) + ": "));
    }
  }
}

BOOST_AUTO_TEST_CASE(prompt_too_long_is_context_length_exceeded) {
  const Error error = luagent::llm::anthropic_classify_error(
      400,
      R"({"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}})");
  BOOST_TEST(error.code() == ErrorCode::context_length_exceeded);
  BOOST_TEST(luagent::llm::anthropic_classify_error(502, "<html></html>").code() ==
             ErrorCode::provider);
}

BOOST_AUTO_TEST_CASE(structured_output_tool_becomes_text) {
  AnthropicStreamDecoder decoder;
  decoder.on_event(
      {"content_block_start",
       R"({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"luagent_json_output","input":{}}})",
       ""});
  decoder.on_event(
      {"content_block_delta",
       R"({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\": 1}"}})",
       ""});
  decoder.on_event({"content_block_stop", R"({"type":"content_block_stop","index":0})", ""});
  decoder.on_event(
      {"message_delta",
       R"({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":3}})",
       ""});
  decoder.on_event({"message_stop", R"({"type":"message_stop"})", ""});
  const Reply reply = decoder.take_reply();
  BOOST_TEST(reply.text == "{\"a\": 1}");
  BOOST_TEST(reply.tool_calls.empty());
  BOOST_TEST(reply.finish_reason == "stop");
}

// ---- request rendering -------------------------------------------------------------------

namespace {

// Server tools (web search, tool search) have a `type` and are outside the neutral model.
json client_tools(const json& wire) {
  json tools = json::array();
  for (const json& tool : wire.value("tools", json::array())) {
    if (!tool.contains("type")) tools.push_back(tool);
  }
  return tools;
}

// A recorded message's blocks as luagent renders them: the client-side kinds only, with all
// text joined into one block (the neutral message has one content string).
json modelled_blocks(const json& message) {
  const json blocks = message["content"].is_string()
                          ? json::array({{{"type", "text"}, {"text", message["content"]}}})
                          : message["content"];
  json out = json::array();
  std::ptrdiff_t text_at = -1;
  for (json block : blocks) {
    const std::string type = block["type"];
    if (type == "text" && text_at >= 0) {
      out[text_at]["text"] =
          out[text_at]["text"].get<std::string>() + block["text"].get<std::string>();
      continue;
    }
    if (type != "text" && type != "tool_use" && type != "tool_result") continue;
    if (type == "text") text_at = static_cast<std::ptrdiff_t>(out.size());
    if (block.value("is_error", true) == false) block.erase("is_error");  // false is the default
    block.erase("cache_control");
    out.push_back(block);
  }
  return out;
}

// The neutral Request a caller would build for a recorded Messages request body.
Request neutral_from_anthropic(const json& wire) {
  Request request;
  request.model = wire["model"];
  if (wire.contains("system"))
    request.messages.push_back({{"role", "system"}, {"content", wire["system"]}});
  for (const json& message : wire["messages"]) {
    const json content = message["content"].is_string()
                             ? json::array({{{"type", "text"}, {"text", message["content"]}}})
                             : message["content"];
    json current = {{"role", message["role"]}, {"content", ""}};
    for (const json& block : content) {
      if (block["type"] == "text") {
        current["content"] =
            current["content"].get<std::string>() + block["text"].get<std::string>();
      } else if (block["type"] == "tool_use") {
        current["tool_calls"].push_back(
            {{"id", block["id"]}, {"name", block["name"]}, {"arguments", block["input"]}});
      } else if (block["type"] == "tool_result") {
        request.messages.push_back({{"role", "tool"},
                                    {"tool_call_id", block["tool_use_id"]},
                                    {"content", block["content"]},
                                    {"is_error", block.value("is_error", false)}});
      }
    }
    if (current["content"] != "" || current.contains("tool_calls"))
      request.messages.push_back(current);
  }
  for (const json& tool : client_tools(wire)) {
    request.tools.push_back({tool["name"], tool.value("description", ""), tool["input_schema"]});
  }
  if (wire.contains("tool_choice")) {
    const std::string type = wire["tool_choice"]["type"];
    request.tool_choice = type == "any"    ? json("required")
                          : type == "tool" ? wire["tool_choice"]["name"]
                                           : json(type);
  }
  request.max_tokens = wire["max_tokens"].get<int>();
  request.stream = wire.value("stream", false);
  return request;
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_anthropic_request_fixture_is_rendered_with_the_same_essentials) {
  int checked = 0;
  for (const char* dir : {"anthropic-messages", "errors"}) {
    for (const auto& entry :
         std::filesystem::directory_iterator(luagent::test::fixtures_dir() / "llm-wire" / dir)) {
      const std::string file = entry.path().filename().string();
      if (!file.ends_with(".request.json")) continue;
      const std::string case_name = std::string(dir) + "/" + file.substr(0, file.size() - 13);
      if (case_name.starts_with("errors/") && !case_name.starts_with("errors/anthropic")) continue;
      BOOST_TEST_CONTEXT(case_name) {
        const json wire = json::parse(luagent::test::read_wire_fixture(case_name, ".request.json"));
        const json ours = json::parse(
            luagent::llm::anthropic_request_body(neutral_from_anthropic(wire), "unused", 1));
        BOOST_TEST(ours["model"] == wire["model"]);
        BOOST_TEST(ours["max_tokens"] == wire["max_tokens"]);
        BOOST_TEST(ours.value("system", json()) == wire.value("system", json()));
        BOOST_TEST_REQUIRE(ours["messages"].size() == wire["messages"].size());
        for (std::size_t i = 0; i < wire["messages"].size(); ++i) {
          const json& w = wire["messages"][i];
          const json& o = ours["messages"][i];
          BOOST_TEST(o["role"] == w["role"]);
          const json wblocks = modelled_blocks(w);
          BOOST_TEST(o["content"] == wblocks);
        }
        const json tools = client_tools(wire);
        BOOST_TEST_REQUIRE(ours.value("tools", json::array()).size() == tools.size());
        for (std::size_t i = 0; i < tools.size(); ++i) {
          BOOST_TEST(ours["tools"][i]["name"] == tools[i]["name"]);
          BOOST_TEST(ours["tools"][i]["input_schema"] == tools[i]["input_schema"]);
          BOOST_TEST(ours["tools"][i].value("description", "") ==
                     tools[i].value("description", ""));
        }
        BOOST_TEST(ours.value("tool_choice", json()) == wire.value("tool_choice", json()));
        BOOST_TEST(ours.value("stream", false) == wire.value("stream", false));
        ++checked;
      }
    }
  }
  BOOST_TEST(checked == 12);
}

BOOST_AUTO_TEST_CASE(tool_results_merge_into_one_user_message_and_thinking_goes_back_first) {
  Request request;
  request.messages = json::parse(R"([
    {"role":"system","content":"one"},
    {"role":"user","content":"hi"},
    {"role":"system","content":"two"},
    {"role":"assistant","content":"calling","tool_calls":[{"id":"a","name":"f","arguments":{}},{"id":"b","name":"f","arguments":"{\"x\":1}"}],
     "carried_blocks":[{"type":"thinking","thinking":"hmm","signature":"SIG"},{"type":"redacted_thinking","data":"RED"}]},
    {"role":"tool","tool_call_id":"a","content":"A"},
    {"role":"tool","tool_call_id":"b","content":"B","is_error":true},
    {"role":"user","content":"and?"}])");
  request.tool_choice = "required";
  const json body = json::parse(luagent::llm::anthropic_request_body(request, "claude", 1024));
  BOOST_TEST(body["model"] == "claude");
  BOOST_TEST(body["max_tokens"] == 1024);
  BOOST_TEST(body["system"] == "one\n\ntwo");
  BOOST_TEST(body["tool_choice"] == json({{"type", "any"}}));
  BOOST_TEST_REQUIRE(body["messages"].size() == 3u);
  const json& assistant = body["messages"][1]["content"];
  BOOST_TEST(assistant[0] ==
             json({{"type", "thinking"}, {"thinking", "hmm"}, {"signature", "SIG"}}));
  BOOST_TEST(assistant[1]["type"] == "redacted_thinking");
  BOOST_TEST(assistant[2] == json({{"type", "text"}, {"text", "calling"}}));
  BOOST_TEST(assistant[4]["input"] == json({{"x", 1}}));
  const json& results = body["messages"][2];
  BOOST_TEST(results["role"] == "user");
  BOOST_TEST_REQUIRE(results["content"].size() == 3u);
  BOOST_TEST(results["content"][0] ==
             json({{"type", "tool_result"}, {"tool_use_id", "a"}, {"content", "A"}}));
  BOOST_TEST(results["content"][1]["is_error"] == true);
  BOOST_TEST(results["content"][2]["text"] == "and?");
}

BOOST_AUTO_TEST_CASE(response_schema_forces_the_output_tool) {
  Request request;
  request.messages = json::parse(R"([{"role":"user","content":"hi"}])");
  request.response_schema = std::make_shared<const CompiledSchema>(json{{"type", "object"}});
  json body = json::parse(luagent::llm::anthropic_request_body(request, "claude", 1024));
  BOOST_TEST(body["tool_choice"] == json({{"type", "tool"}, {"name", "luagent_json_output"}}));
  BOOST_TEST(body["tools"][0]["input_schema"] == json({{"type", "object"}}));
  request.tools.push_back({"f", "", {{"type", "object"}}});
  body = json::parse(luagent::llm::anthropic_request_body(request, "claude", 1024));
  BOOST_TEST(body["tool_choice"] == json({{"type", "any"}}));
  BOOST_TEST(body["tools"].size() == 2u);
}

BOOST_AUTO_TEST_CASE(bad_requests_are_usage_errors) {
  Request request;
  request.messages = json::parse(R"([{"role":"tool","content":"x"}])");
  BOOST_CHECK_EXCEPTION(luagent::llm::anthropic_request_body(request, "m", 10), Error,
                        [](const Error& e) {
                          return e.code() == ErrorCode::usage &&
                                 e.message().find("tool_call_id") != std::string::npos;
                        });
  // A non-boolean is_error was a nlohmann type_error (internal) out of the request builder.
  request.messages =
      json::parse(R"([{"role":"tool","tool_call_id":"c","content":"x","is_error":1}])");
  BOOST_CHECK_EXCEPTION(
      luagent::llm::anthropic_request_body(request, "m", 10), Error, [](const Error& e) {
        return e.code() == ErrorCode::usage &&
               e.message().find(".is_error must be a boolean") != std::string::npos;
      });
  request.messages = json::array();
  BOOST_CHECK_EXCEPTION(
      luagent::llm::anthropic_request_body(request, "m", 0), Error,
      [](const Error& e) { return e.message().find("max_tokens") != std::string::npos; });
}
