// The Anthropic Messages provider: POST {base_url}/v1/messages with x-api-key and
// anthropic-version 2023-06-01.
#pragma once

#include <string>

#include "llm/http_chat_provider.hpp"

namespace luagent::llm {

/// Where requests go when no base_url is configured.
inline constexpr std::string_view kAnthropicDefaultBaseUrl = "https://api.anthropic.com";
/// The API version every request names.
inline constexpr std::string_view kAnthropicApiVersion = "2023-06-01";

class AnthropicProvider final : public HttpChatProvider {
 public:
  /// Registers its transport with `loop`; an empty settings.base_url means api.anthropic.com.
  AnthropicProvider(EventLoop& loop, HttpProviderSettings settings);
  std::string name() const override { return "anthropic"; }

 protected:
  HttpRequest render_request(const Request& request) const override;
  Reply parse_reply(const nlohmann::json& body) const override;
  Error classify_error(int http_status, std::string_view body) const override;
  std::unique_ptr<ReplyStreamDecoder> make_stream_decoder(ChunkCallback on_chunk) const override;
};

}  // namespace luagent::llm
