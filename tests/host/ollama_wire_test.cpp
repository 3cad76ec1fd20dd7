// Ollama's native /api/chat wire format (NDJSON), driven by the recorded Ollama fixtures.
#define BOOST_TEST_MODULE ollama_wire
#include <boost/test/unit_test.hpp>

#include <filesystem>

#include "llm/json_schema.hpp"
#include "llm/ndjson_parser.hpp"
#include "llm/ollama_wire.hpp"
#include "luagent/error.hpp"
#include "support/wire_fixture_replay.hpp"

using luagent::Error;
using luagent::ErrorCode;
using luagent::llm::CompiledSchema;
using luagent::llm::OllamaStreamDecoder;
using luagent::llm::Reply;
using luagent::llm::Request;
using luagent::llm::StreamChunk;
using luagent::test::ExpectedReply;
using nlohmann::json;

namespace {

// Expected values read off each fixture's response file (streams and bodies).
const std::vector<ExpectedReply> kCases = {
    {"ollama/api_chat_nonstream_docs",
     "Hello! How are you today?",
     "Hello! How are you today?",
     25,
     "",
     0,
     "",
     {},
     {26, 298, 0, 0},
     "stop",
     "llama3.2",
     true},
    {"ollama/api_chat_stream_docs",
     "The",
     "The",
     3,
     "",
     0,
     "",
     {},
     {26, 282, 0, 0},
     "stop",
     "llama3.2",
     true},
    {"ollama/api_chat_tool_call_nonstream_docs",
     "",
     "",
     0,
     "",
     0,
     "",
     {{"ollama_call_0", "get_weather", "{\"city\":\"Tokyo\"}", false}},
     {169, 18, 0, 0},
     "tool_calls",
     "llama3.2",
     true},
    {"ollama/api_chat_tool_call_stream_docs",
     "",
     "",
     0,
     "",
     0,
     "",
     {{"ollama_call_0", "get_weather", "{\"city\":\"Tokyo\"}", false}},
     {169, 15, 0, 0},
     "tool_calls",
     "llama3.2",
     true},
};

struct Decoded {
  Reply reply;
  bool finished = false;
  std::string chunk_text;
};

Decoded decode(const std::vector<std::string_view>& pieces) {
  Decoded out;
  OllamaStreamDecoder decoder(
      [&out](const StreamChunk& chunk) { out.chunk_text += chunk.text_delta; });
  for (const auto piece : pieces) decoder.feed(piece);
  decoder.end_of_body();
  out.finished = decoder.finished();
  out.reply = decoder.take_reply();
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_native_ollama_fixture_decodes_in_any_fragmentation) {
  BOOST_TEST(kCases.size() == 4u);
  for (const ExpectedReply& want : kCases) {
    const auto dir = luagent::test::fixtures_dir() / "llm-wire";
    if (std::filesystem::exists(dir / (want.case_name + ".response.json"))) {
      const json body =
          json::parse(luagent::test::read_wire_fixture(want.case_name, ".response.json"));
      luagent::test::check_reply(luagent::llm::ollama_parse_response(body), want);
      continue;
    }
    std::string body = luagent::test::read_wire_fixture(want.case_name, ".response.ndjson");
    const Decoded whole = decode({body});
    luagent::test::check_reply(whole.reply, want);
    BOOST_TEST_CONTEXT(want.case_name) {
      BOOST_TEST(whole.finished == want.finished);
      BOOST_TEST(whole.chunk_text == whole.reply.text);
      const std::string expected = luagent::test::reply_summary(whole.reply).dump();
      // The same bytes with CRLF line ends and without the final newline must decode alike.
      std::string crlf;
      for (const char c : body) crlf += c == '\n' ? std::string("\r\n") : std::string(1, c);
      while (body.ends_with("\n")) body.pop_back();
      int mismatches = 0;
      for (const std::string& variant : {body, crlf}) {
        luagent::test::for_each_fragmentation(
            variant, [&](const auto& pieces, const std::string& how) {
              const Decoded got = decode(pieces);
              if (luagent::test::reply_summary(got.reply).dump() != expected ||
                  got.finished != whole.finished) {
                if (++mismatches < 3) BOOST_TEST_MESSAGE("differs when fed " << how);
              }
            });
      }
      BOOST_TEST(mismatches == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(error_line_in_a_200_stream_is_a_provider_error) {
  const std::string case_name = "errors/ollama_stream_error_ndjson";
  const json meta = json::parse(luagent::test::read_wire_fixture(case_name, ".meta.json"));
  BOOST_TEST(meta["response"]["status"] == 200);
  const std::string body = luagent::test::read_wire_fixture(case_name, ".response.ndjson");
  int wrong = 0;
  luagent::test::for_each_fragmentation(body, [&](const auto& pieces, const std::string&) {
    std::string text;
    OllamaStreamDecoder decoder([&text](const StreamChunk& c) { text += c.text_delta; });
    try {
      for (const auto piece : pieces) decoder.feed(piece);
      decoder.end_of_body();
      ++wrong;
    } catch (const Error& e) {
      if (e.code() != ErrorCode::provider || text != " Yes.Ican" ||
          e.message().find("an error was encountered while running the model") ==
              std::string::npos) {
        ++wrong;
      }
    }
  });
  BOOST_TEST(wrong == 0);
}

BOOST_AUTO_TEST_CASE(flags_and_functions_of_the_wrong_type_are_read_as_absent) {
  // Found by provider_response_fuzz: `"done": 1` and a `function` that is not an object
  // threw nlohmann's type_error, which no caller catches (out of pump() for a whole reply).
  const Reply reply = luagent::llm::ollama_parse_response(json::parse(
      R"({"message":{"content":"hi","tool_calls":[{"function":5},{"function":{"name":"add"}}]},
          "done":1})"));
  BOOST_TEST(reply.text == "hi");
  BOOST_REQUIRE_EQUAL(reply.tool_calls.size(), 2u);
  BOOST_TEST(reply.tool_calls[0].name == "");
  BOOST_TEST(reply.tool_calls[1].name == "add");
  BOOST_TEST(reply.finish_reason == "tool_calls");
  // A stream whose `done` is not true has not ended: incomplete, not a crash.
  OllamaStreamDecoder decoder([](const StreamChunk&) {});
  decoder.feed(R"({"message":{"content":"a"},"done":"yes"})"
               "\n");
  decoder.end_of_body();
  BOOST_TEST(!decoder.finished());
}

BOOST_AUTO_TEST_CASE(http_errors_are_classified_by_status) {
  BOOST_TEST(
      luagent::llm::ollama_classify_error(404, R"({"error":"model 'x' not found"})").code() ==
      ErrorCode::bad_request);
  BOOST_TEST(luagent::llm::ollama_classify_error(500, R"({"error":"boom"})").message() ==
             "HTTP 500: boom");
  BOOST_TEST(luagent::llm::ollama_classify_error(503, "").code() == ErrorCode::overloaded);
}

BOOST_AUTO_TEST_CASE(ndjson_rejects_garbage_and_oversized_lines) {
  luagent::llm::NdjsonParser parser([](const json&) {}, 16);
  BOOST_CHECK_EXCEPTION(parser.feed("{\"a\":\n"), Error,
                        [](const Error& e) { return e.code() == ErrorCode::provider; });
  luagent::llm::NdjsonParser small([](const json&) {}, 16);
  BOOST_CHECK_EXCEPTION(small.feed(std::string(17, ' ')), Error,
                        [](const Error& e) { return e.code() == ErrorCode::limit; });
  int values = 0;
  luagent::llm::NdjsonParser blank([&values](const json&) { ++values; });
  blank.feed("\n  \r\n{}\n\n[1]");
  BOOST_TEST(values == 1);
  blank.finish();
  BOOST_TEST(values == 2);
}

BOOST_AUTO_TEST_CASE(every_native_request_fixture_is_rendered_with_the_same_essentials) {
  int checked = 0;
  for (const std::string name :
       {"api_chat_nonstream_docs", "api_chat_stream_docs", "api_chat_tool_call_nonstream_docs",
        "api_chat_tool_call_stream_docs"}) {
    const std::string case_name = "ollama/" + name;
    BOOST_TEST_CONTEXT(case_name) {
      const json wire = json::parse(luagent::test::read_wire_fixture(case_name, ".request.json"));
      Request request;
      request.model = wire["model"];
      request.messages = wire["messages"];
      for (const json& tool : wire.value("tools", json::array())) {
        request.tools.push_back({tool["function"]["name"], tool["function"]["description"],
                                 tool["function"]["parameters"]});
      }
      request.stream = wire.value("stream", true);  // Ollama's default is to stream
      const json ours = json::parse(luagent::llm::ollama_request_body(request, "unused"));
      BOOST_TEST(ours["model"] == wire["model"]);
      BOOST_TEST(ours["messages"] == wire["messages"]);
      BOOST_TEST(ours.value("tools", json::array()) == wire.value("tools", json::array()));
      BOOST_TEST(ours["stream"] == wire.value("stream", true));
      ++checked;
    }
  }
  BOOST_TEST(checked == 4);
}

BOOST_AUTO_TEST_CASE(request_maps_tool_turns_and_options) {
  Request request;
  request.messages = json::parse(R"([
    {"role":"user","content":"weather?"},
    {"role":"assistant","content":"","tool_calls":[{"id":"c","name":"get_weather","arguments":"{\"city\":\"Tokyo\"}"}]},
    {"role":"tool","tool_call_id":"c","content":"sunny"}])");
  request.response_schema = std::make_shared<const CompiledSchema>(json{{"type", "object"}});
  request.temperature = 0.25;
  request.max_tokens = 50;
  const json body = json::parse(luagent::llm::ollama_request_body(request, "llama3.2"));
  BOOST_TEST(body["model"] == "llama3.2");
  BOOST_TEST(body["stream"] == false);
  BOOST_TEST(body["messages"][1]["tool_calls"][0]["function"]["arguments"] ==
             json({{"city", "Tokyo"}}));
  BOOST_TEST(body["messages"][2]["tool_name"] == "get_weather");
  BOOST_TEST(body["format"] == json({{"type", "object"}}));
  BOOST_TEST(body["options"] == json({{"temperature", 0.25}, {"num_predict", 50}}));
}
