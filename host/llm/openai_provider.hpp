// The OpenAI Chat Completions provider: POST {base_url}/chat/completions with a Bearer key.
// With a base_url it also reaches Ollama (/v1), llama.cpp's server, vLLM and other servers
// that speak the same wire format.
#pragma once

#include <string>

#include "llm/http_chat_provider.hpp"

namespace luagent::llm {

/// Where requests go when no base_url is configured.
inline constexpr std::string_view kOpenAiDefaultBaseUrl = "https://api.openai.com/v1";

class OpenAiProvider final : public HttpChatProvider {
 public:
  /// Registers its transport with `loop`; an empty settings.base_url means api.openai.com.
  OpenAiProvider(EventLoop& loop, HttpProviderSettings settings);
  std::string name() const override { return "openai"; }

 protected:
  HttpRequest render_request(const Request& request) const override;
  Reply parse_reply(const nlohmann::json& body) const override;
  Error classify_error(int http_status, std::string_view body) const override;
  std::unique_ptr<ReplyStreamDecoder> make_stream_decoder(ChunkCallback on_chunk) const override;
};

}  // namespace luagent::llm
