// Replaying the recorded LLM wire fixtures (../shared/fixtures/llm-wire) through the decoders:
// reading case files, cutting bodies into fragments, and checking a Reply against hard-coded
// expectations. Header-only; include after <boost/test/unit_test.hpp>.
#pragma once

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "llm/llm_types.hpp"
#include "support/test_paths.hpp"

namespace luagent::test {

/// The bytes of `<fixtures>/llm-wire/<case_name><suffix>`, e.g. ("openai-chat/text_stream",
/// ".response.sse").
inline std::string read_wire_fixture(const std::string& case_name, const std::string& suffix) {
  const auto path = fixtures_dir() / "llm-wire" / (case_name + suffix);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read fixture " + path.string());
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// A `.response.sse-data.jsonl` capture (data payloads only) re-framed as an SSE body.
inline std::string sse_from_data_lines(const std::string& jsonl) {
  std::string body;
  std::istringstream in(jsonl);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) body += "data: " + line + "\n\n";
  }
  return body + "data: [DONE]\n\n";
}

/// Calls `run` with the body cut into pieces in many ways: whole, one byte at a time, at every
/// single boundary (bodies up to `exhaustive_limit` bytes) and at seeded random boundaries.
inline void for_each_fragmentation(
    std::string_view body,
    const std::function<void(const std::vector<std::string_view>&, const std::string& how)>& run,
    std::size_t exhaustive_limit = 4096) {
  run({body}, "whole");
  std::vector<std::string_view> bytes;
  for (std::size_t i = 0; i < body.size(); ++i) bytes.push_back(body.substr(i, 1));
  run(bytes, "one byte at a time");
  if (body.size() <= exhaustive_limit) {
    for (std::size_t cut = 1; cut < body.size(); ++cut) {
      run({body.substr(0, cut), body.substr(cut)}, "split at " + std::to_string(cut));
    }
  }
  std::mt19937 random(0x5eed + static_cast<unsigned>(body.size()));
  for (int round = 0; round < 40; ++round) {
    std::uniform_int_distribution<std::size_t> size(1, round % 2 == 0 ? 7 : 300);
    std::vector<std::string_view> pieces;
    for (std::size_t at = 0; at < body.size();) {
      const std::size_t n = std::min(size(random), body.size() - at);
      pieces.push_back(body.substr(at, n));
      at += n;
    }
    run(pieces, "random split round " + std::to_string(round));
  }
}

struct ExpectedCall {
  std::string id;
  std::string name;
  std::string raw_arguments;
  bool truncated;
};

struct ExpectedUsage {
  std::int64_t input, output, cached, reasoning;
};

/// What a case's reply must hold. Long texts are checked by their ends and byte length.
struct ExpectedReply {
  std::string case_name;
  std::string text_begins;
  std::string text_ends;
  std::size_t text_bytes;
  std::string refusal;
  std::size_t reasoning_bytes;
  std::string reasoning_begins;
  std::vector<ExpectedCall> calls;
  ExpectedUsage usage;
  std::string finish_reason;
  std::string model;
  bool finished;  // the stream reached its proper end ([DONE], message_stop, done:true)
  std::vector<std::string> carried = {};  // "<type>:<signature or data prefix>"
};

/// Every field of a Reply in one comparable value.
inline nlohmann::json reply_summary(const llm::Reply& reply) {
  nlohmann::json calls = nlohmann::json::array();
  for (const auto& call : reply.tool_calls) {
    calls.push_back({call.id, call.name, call.arguments, call.raw_arguments, call.truncated});
  }
  return {{"text", reply.text},
          {"refusal", reply.refusal},
          {"reasoning", reply.reasoning},
          {"calls", calls},
          {"finish", reply.finish_reason},
          {"usage",
           {reply.usage.input_tokens, reply.usage.output_tokens, reply.usage.cached_tokens,
            reply.usage.reasoning_tokens}},
          {"model", reply.model},
          {"carried", reply.carried_blocks}};
}

inline void check_reply(const llm::Reply& reply, const ExpectedReply& want) {
  BOOST_TEST_CONTEXT(want.case_name) {
    BOOST_TEST(reply.text.size() == want.text_bytes);
    BOOST_TEST(reply.text.starts_with(want.text_begins));
    BOOST_TEST(reply.text.ends_with(want.text_ends));
    BOOST_TEST(reply.refusal == want.refusal);
    BOOST_TEST(reply.reasoning.size() == want.reasoning_bytes);
    BOOST_TEST(reply.reasoning.starts_with(want.reasoning_begins));
    BOOST_TEST(reply.finish_reason == want.finish_reason);
    BOOST_TEST(reply.model == want.model);
    BOOST_TEST(reply.usage.input_tokens == want.usage.input);
    BOOST_TEST(reply.usage.output_tokens == want.usage.output);
    BOOST_TEST(reply.usage.cached_tokens == want.usage.cached);
    BOOST_TEST(reply.usage.reasoning_tokens == want.usage.reasoning);
    BOOST_TEST_REQUIRE(reply.tool_calls.size() == want.calls.size());
    for (std::size_t i = 0; i < want.calls.size(); ++i) {
      const auto& got = reply.tool_calls[i];
      const auto& call = want.calls[i];
      BOOST_TEST(got.id == call.id);
      BOOST_TEST(got.name == call.name);
      BOOST_TEST(got.raw_arguments == call.raw_arguments);
      BOOST_TEST(got.truncated == call.truncated);
      if (call.truncated) {
        BOOST_TEST(got.arguments.is_null());
      } else {
        BOOST_TEST(got.arguments == nlohmann::json::parse(call.raw_arguments));
        BOOST_TEST(got.arguments.is_object());
      }
    }
    BOOST_TEST_REQUIRE(reply.carried_blocks.size() == want.carried.size());
    for (std::size_t i = 0; i < want.carried.size(); ++i) {
      const auto& block = reply.carried_blocks[i];
      const std::string type = block.value("type", "");
      const std::string secret = block.value(type == "thinking" ? "signature" : "data", "");
      BOOST_TEST(type + ":" + secret.substr(0, 24) == want.carried[i]);
    }
  }
}

}  // namespace luagent::test
