// What the HTTP LLM providers (OpenAI Chat Completions, Anthropic Messages) have in common:
// one HttpTransport on the host's EventLoop, SDK-style retries through RetryingClient, a
// streamed or whole reply decoded by the provider's wire codec, classified errors, the call's
// trace with its cost, cancellation. Subclasses say only how their wire format looks.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "event_loop.hpp"
#include "llm/http_transport.hpp"
#include "llm/provider.hpp"
#include "llm/retrying_client.hpp"

namespace luagent::llm {

/// US dollars per million tokens of one model.
struct ModelPrice {
  double input_per_mtok = 0;
  double output_per_mtok = 0;
  std::optional<double> cached_input_per_mtok;  // absent: cached input costs as much as input
};

struct HttpProviderSettings {
  std::string base_url;  // empty: the provider's public endpoint
  /// From the environment only (OPENAI_API_KEY, ANTHROPIC_API_KEY); may be empty for local
  /// servers. Sent in a header, never rendered into bodies, traces or errors.
  std::string api_key;
  std::string default_model;
  int default_max_tokens = 4096;  // Anthropic requires max_tokens on every request
  int connect_timeout_ms = 10000;
  int total_timeout_ms = 600000;
  int idle_timeout_ms = 120000;  // silence tolerated before the first / between bytes
  int max_retries = 2;
  int retry_initial_delay_ms = 500;
  int retry_max_delay_ms = 8000;
  std::size_t max_response_bytes = std::size_t{32} << 20;
  bool always_stream = false;  // LUAGENT_STREAM=1: stream even without a chunk callback
  std::map<std::string, ModelPrice> prices;  // by model name (longest prefix of the reply's)
};

/// The cost of `usage` on `model` from `prices` (exact name first, else the longest price key
/// the model name starts with, e.g. "gpt-4o" for "gpt-4o-2024-08-06"); 0 when unpriced.
double call_cost_usd(const std::map<std::string, ModelPrice>& prices, const std::string& model,
                     const Usage& usage);

/// A streamed reply decoder behind one interface (the codecs' decoders share no base class).
class ReplyStreamDecoder {
 public:
  virtual ~ReplyStreamDecoder() = default;
  /// Raw body bytes; throws the classified Error for an error event or malformed data.
  virtual void feed(std::string_view bytes) = 0;
  /// The body ended; flushes a last event that had no blank line after it.
  virtual void end_of_body() = 0;
  /// True once the stream's terminator ([DONE], message_stop) arrived.
  virtual bool finished() const = 0;
  /// The accumulated reply (once, after the end).
  virtual Reply take_reply() = 0;
};

/// Adapts any codec decoder with feed / end_of_body / finished / take_reply.
template <class Decoder>
class CodecStreamDecoder final : public ReplyStreamDecoder {
 public:
  explicit CodecStreamDecoder(ChunkCallback on_chunk) : decoder_(std::move(on_chunk)) {}
  void feed(std::string_view bytes) override { decoder_.feed(bytes); }
  void end_of_body() override { decoder_.end_of_body(); }
  bool finished() const override { return decoder_.finished(); }
  Reply take_reply() override { return decoder_.take_reply(); }

 private:
  Decoder decoder_;
};

class HttpChatProvider : public Provider {
 public:
  ~HttpChatProvider() override;
  HttpChatProvider(const HttpChatProvider&) = delete;
  HttpChatProvider& operator=(const HttpChatProvider&) = delete;

  /// Starts a call: streamed when request.stream, settings.always_stream or `on_chunk` is set.
  CallId start(Request request, ChunkCallback on_chunk, DoneCallback done) override;
  /// Cancels a call in flight; its `done` gets ErrorCode::cancelled.
  void cancel(CallId id) override;
  /// Calls started whose `done` has not run yet.
  std::size_t in_flight() const { return calls_.size(); }
  /// The settings this provider was made with (api_key included: keep it to yourself).
  const HttpProviderSettings& settings() const { return settings_; }

 protected:
  /// Registers an HttpTransport of its own with `loop`; `loop` must outlive the provider.
  HttpChatProvider(EventLoop& loop, HttpProviderSettings settings);

  /// The HTTP request for `request` (URL, headers with credentials, body); throws Error(usage).
  virtual HttpRequest render_request(const Request& request) const = 0;
  /// A whole (non-streamed) 2xx body as a Reply; throws the classified Error.
  virtual Reply parse_reply(const nlohmann::json& body) const = 0;
  /// An error response (status >= 300) as an Error.
  virtual Error classify_error(int http_status, std::string_view body) const = 0;
  /// A fresh stream decoder forwarding deltas to `on_chunk`.
  virtual std::unique_ptr<ReplyStreamDecoder> make_stream_decoder(ChunkCallback on_chunk) const = 0;

  /// The request model, or the configured default when the request names none.
  std::string model_for(const Request& request) const;

  HttpProviderSettings settings_;

 private:
  struct Call;
  void on_head(CallId id, const HttpResponseHead& head);
  bool on_body(CallId id, std::string_view bytes);
  void on_done(CallId id, std::optional<Error> error, const CallReport& report);
  void complete(CallId id, std::variant<Reply, Error> result, const CallReport* report);
  Error without_secrets(const Error& error) const;

  EventLoop& loop_;
  std::unique_ptr<HttpTransport> transport_;
  std::unique_ptr<RetryingClient> client_;
  std::unordered_map<CallId, std::unique_ptr<Call>> calls_;
  CallId next_id_ = 1;
  std::shared_ptr<char> alive_;  // posted tasks hold a weak_ptr: nothing runs once we are gone
};

}  // namespace luagent::llm
