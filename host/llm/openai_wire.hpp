// The OpenAI Chat Completions wire format (also spoken by Ollama /v1, llama.cpp's server, vLLM,
// Groq, ...): request rendering, reply parsing, stream decoding, error classification.
// Pure: bytes and JSON in, luagent::llm values out; no I/O.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "llm/llm_types.hpp"
#include "llm/sse_parser.hpp"
#include "luagent/error.hpp"

namespace luagent::llm {

/// Renders `request` as a /v1/chat/completions body; `default_model` is used when
/// request.model is empty. Throws Error(usage) on malformed neutral messages.
std::string openai_request_body(const Request& request, const std::string& default_model);

/// Reads a non-streamed chat.completion body (choice 0). Throws the classified Error when the
/// body is an error object, Error(provider) when it has no usable choice.
Reply openai_parse_response(const nlohmann::json& body);

/// Maps an error response (or an error payload inside a 200 stream, http_status 200) to an
/// Error: by `error.code` first, then `error.type`, then the status. The message never
/// contains API keys.
Error openai_classify_error(int http_status, std::string_view body);

/// Normalises an OpenAI-style `usage` object; llama.cpp's `timings` is used only when `usage`
/// is absent or null.
Usage openai_usage(const nlohmann::json& usage, const nlohmann::json& timings = nullptr);

/// Maps a provider's finish/stop reason onto Reply::finish_reason's vocabulary.
std::string openai_finish_reason(std::string_view reason, bool has_tool_calls);

/// Accumulates a streamed chat completion (SSE events) into a Reply.
class OpenAiStreamDecoder {
 public:
  using ChunkCallback = std::function<void(const StreamChunk&)>;

  /// `on_chunk` (may be empty) sees each text / reasoning / refusal delta as it arrives.
  explicit OpenAiStreamDecoder(ChunkCallback on_chunk = {});
  OpenAiStreamDecoder(const OpenAiStreamDecoder&) = delete;
  OpenAiStreamDecoder& operator=(const OpenAiStreamDecoder&) = delete;
  ~OpenAiStreamDecoder();

  /// Applies one SSE event. Throws the classified Error for an error payload in the stream,
  /// Error(provider) for a data line that is not JSON, Error(limit) for an oversized reply.
  void on_event(const SseEvent& event);
  /// Convenience for transports: parses raw body bytes with an internal SseParser.
  void feed(std::string_view bytes);
  /// Convenience for transports: the body ended (flushes a last event without blank line).
  void end_of_body();

  /// True once `data: [DONE]` arrived; a stream that ends without it was cut short.
  bool finished() const { return done_; }
  /// The reply accumulated so far (call once, after the stream ended).
  Reply take_reply();

 private:
  struct PartialCall {
    std::string id;
    std::string name;
    std::string arguments;
  };
  void apply_chunk(const nlohmann::json& chunk);
  void apply_tool_call_delta(const nlohmann::json& delta);
  void emit(std::string StreamChunk::*field, const std::string& text);
  void count_bytes(std::size_t n);

  ChunkCallback on_chunk_;
  std::unique_ptr<SseParser> sse_;
  Reply reply_;
  std::map<std::int64_t, PartialCall> calls_;  // keyed by tool_calls[].index
  bool saw_usage_ = false;
  nlohmann::json timings_;
  std::string finish_reason_;
  std::size_t accumulated_bytes_ = 0;
  bool done_ = false;
};

/// Bounds on what one streamed reply may accumulate (shared by all stream decoders).
inline constexpr std::size_t kMaxReplyBytes = 64u << 20;
inline constexpr std::size_t kMaxToolCalls = 512;

}  // namespace luagent::llm
