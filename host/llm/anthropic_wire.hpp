// The Anthropic Messages API wire format: request rendering, reply parsing, stream decoding,
// error classification. Pure: bytes and JSON in, luagent::llm values out; no I/O.
//
// Structured output (Request::response_schema) is requested with a forced tool named
// kAnthropicJsonToolName whose input_schema is the schema; the decoders turn that tool's input
// back into Reply::text (streamed as text deltas), so callers see JSON text as with OpenAI.
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

/// The tool that carries structured output; never reported as a tool call.
inline constexpr std::string_view kAnthropicJsonToolName = "luagent_json_output";

/// Renders `request` as a /v1/messages body: system messages hoisted to `system`, tool calls
/// and results as tool_use / tool_result blocks (consecutive results in ONE user message),
/// an assistant message's `carried_blocks` (thinking) sent back first and verbatim.
/// Throws Error(usage) on malformed neutral messages.
std::string anthropic_request_body(const Request& request, const std::string& default_model,
                                   int default_max_tokens);

/// Reads a non-streamed message body. Throws the classified Error for an error body,
/// Error(provider) when it is not a message.
Reply anthropic_parse_response(const nlohmann::json& body);

/// Maps an error body (HTTP error, or an `error` event in a 200 stream with http_status 200)
/// to an Error by `error.type`, then by status. The message never contains API keys.
Error anthropic_classify_error(int http_status, std::string_view body);

/// Normalises Anthropic usage: input counts cache reads and writes too (as OpenAI's
/// prompt_tokens does), cached = cache_read_input_tokens.
Usage anthropic_usage(const nlohmann::json& usage);

/// Accumulates a streamed message (SSE events) into a Reply.
class AnthropicStreamDecoder {
 public:
  using ChunkCallback = std::function<void(const StreamChunk&)>;

  /// `on_chunk` (may be empty) sees each text / thinking delta as it arrives.
  explicit AnthropicStreamDecoder(ChunkCallback on_chunk = {});
  AnthropicStreamDecoder(const AnthropicStreamDecoder&) = delete;
  AnthropicStreamDecoder& operator=(const AnthropicStreamDecoder&) = delete;
  ~AnthropicStreamDecoder();

  /// Applies one SSE event. Throws the classified Error for an `error` event,
  /// Error(provider) for data that is not JSON, Error(limit) for an oversized reply.
  void on_event(const SseEvent& event);
  /// Convenience for transports: parses raw body bytes with an internal SseParser.
  void feed(std::string_view bytes);
  /// Convenience for transports: the body ended (flushes a last event without blank line).
  void end_of_body();

  /// True once message_stop arrived; a stream that ends without it was cut short.
  bool finished() const { return done_; }
  /// The reply accumulated so far (call once, after the stream ended).
  Reply take_reply();

 private:
  struct Block {
    std::string type;
    std::string id;
    std::string name;
    std::string input_json;  // input_json_delta fragments: JSON only once the block stopped
    std::string thinking;
    std::string signature;
    nlohmann::json whole;  // redacted_thinking arrives complete in content_block_start
    bool stopped = false;
  };
  void apply(const nlohmann::json& event);
  void apply_delta(Block& block, const nlohmann::json& delta);
  void emit_text(const std::string& text);
  void emit_reasoning(const std::string& text);
  void count_bytes(std::size_t n);

  ChunkCallback on_chunk_;
  std::unique_ptr<SseParser> sse_;
  Reply reply_;
  std::map<std::int64_t, Block> blocks_;             // keyed by the event's content block index
  nlohmann::json usage_ = nlohmann::json::object();  // latest value of every usage field
  std::string stop_reason_;
  std::size_t accumulated_bytes_ = 0;
  bool done_ = false;
};

}  // namespace luagent::llm
