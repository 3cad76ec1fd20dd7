// Ollama's native /api/chat wire format (NDJSON streaming). Ollama's OpenAI-compatible /v1
// endpoint is served by openai_wire.hpp. Pure: bytes and JSON in, luagent::llm values out.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "llm/llm_types.hpp"
#include "llm/ndjson_parser.hpp"
#include "luagent/error.hpp"

namespace luagent::llm {

/// Renders `request` as an /api/chat body. `stream` is always explicit (Ollama streams by
/// default); the schema goes to `format`, temperature / max_tokens to `options`.
/// tool_choice has no Ollama equivalent and is dropped. Throws Error(usage) on bad messages.
std::string ollama_request_body(const Request& request, const std::string& default_model);

/// Reads a non-streamed /api/chat body (stream:false). Throws the classified Error for an
/// error body, Error(provider) when it has no message.
Reply ollama_parse_response(const nlohmann::json& body);

/// Maps an Ollama error ({"error":"text"}, HTTP status or 200 for an error line in a stream).
Error ollama_classify_error(int http_status, std::string_view body);

/// Accumulates a streamed /api/chat reply (one JSON object per line) into a Reply.
class OllamaStreamDecoder {
 public:
  using ChunkCallback = std::function<void(const StreamChunk&)>;

  /// `on_chunk` (may be empty) sees each text / thinking delta as it arrives.
  explicit OllamaStreamDecoder(ChunkCallback on_chunk = {});
  OllamaStreamDecoder(const OllamaStreamDecoder&) = delete;
  OllamaStreamDecoder& operator=(const OllamaStreamDecoder&) = delete;
  ~OllamaStreamDecoder();

  /// Applies one parsed line. Throws the classified Error for an {"error": ...} line.
  void on_line(const nlohmann::json& line);
  /// Convenience for transports: parses raw body bytes with an internal NdjsonParser.
  void feed(std::string_view bytes);
  /// Convenience for transports: the body ended (parses a last line without newline).
  void end_of_body();

  /// True once the `done: true` object arrived.
  bool finished() const { return done_; }
  /// The reply accumulated so far (call once, after the stream ended).
  Reply take_reply();

 private:
  ChunkCallback on_chunk_;
  std::unique_ptr<NdjsonParser> ndjson_;
  Reply reply_;
  std::string done_reason_;
  std::size_t accumulated_bytes_ = 0;
  bool done_ = false;
};

}  // namespace luagent::llm
