// Provider-neutral shapes of an LLM call. Providers translate these to and from
// their wire formats (host/llm/openai_*.cpp, anthropic_*.cpp); the Lua binding
// (bindings/lua_llm.cpp) builds Requests and reads Replies.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace luagent::llm {

class CompiledSchema;  // llm/json_schema.hpp

/// A tool the model may call: name, description and a JSON Schema for its arguments.
struct ToolSpec {
  std::string name;
  std::string description;
  nlohmann::json parameters = nlohmann::json::object();
};

struct Request {
  std::string model;  // empty: the provider's configured default
  /// Neutral chat messages, OpenAI-like: [{role: system|user|assistant|tool, content: string,
  /// tool_calls?: [{id, name, arguments(object)}], tool_call_id?: string}].
  nlohmann::json messages = nlohmann::json::array();
  std::vector<ToolSpec> tools;
  /// null (provider default), "auto", "required", "none", or a tool name.
  nlohmann::json tool_choice;
  /// JSON Schema the reply must satisfy (llm.json); null for free text. Shared with the
  /// llm.json call that compiled it, so a request neither copies nor re-dumps it.
  std::shared_ptr<const CompiledSchema> response_schema;
  std::optional<double> temperature;
  std::optional<int> max_tokens;
  bool stream = false;
  // Timeouts in milliseconds; 0 means the provider's default.
  int connect_timeout_ms = 0;
  int total_timeout_ms = 0;
  int idle_timeout_ms = 0;
};

struct ToolCall {
  std::string id;
  std::string name;
  nlohmann::json arguments = nlohmann::json::object();  // parsed (leniently) from the wire
  std::string raw_arguments;                            // as the model sent them
  /// The reply ended (max_tokens) before the arguments were complete: raw_arguments is a
  /// prefix and `arguments` is whatever could be recovered from it (null if nothing).
  bool truncated = false;
};

/// Token counts normalised across providers.
struct Usage {
  std::int64_t input_tokens = 0;
  std::int64_t output_tokens = 0;
  std::int64_t cached_tokens = 0;
  std::int64_t reasoning_tokens = 0;
};

struct Reply {
  std::string text;       // the assistant's text (concatenated text blocks)
  std::string refusal;    // non-empty when the model refused
  std::string reasoning;  // thinking text, where the provider exposes it
  std::vector<ToolCall> tool_calls;
  /// Normalised: "stop", "length", "tool_calls", "content_filter", or the provider's own.
  std::string finish_reason;
  Usage usage;
  std::string model;  // as the provider reported it
  /// Provider blocks that must be sent back verbatim on the next turn
  /// (Anthropic thinking / redacted_thinking with signatures).
  nlohmann::json carried_blocks = nlohmann::json::array();
};

/// One piece of a streamed reply, as it arrives.
struct StreamChunk {
  std::string text_delta;
  std::string reasoning_delta;
  std::string refusal_delta;
};

/// What a call records for the thread's trace (provenance).
struct CallTrace {
  std::string provider;
  std::string model;
  std::string request_body;  // rendered request, without credentials
  std::int64_t request_bytes = 0;
  double latency_ms = 0;
  int attempts = 0;
  Usage usage;
  double cost_usd = 0;
  std::string finish_reason;
};

}  // namespace luagent::llm
