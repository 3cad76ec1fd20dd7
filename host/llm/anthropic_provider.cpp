#include "llm/anthropic_provider.hpp"

#include "llm/anthropic_wire.hpp"

namespace luagent::llm {

AnthropicProvider::AnthropicProvider(EventLoop& loop, HttpProviderSettings settings)
    : HttpChatProvider(loop, std::move(settings)) {
  if (settings_.base_url.empty()) settings_.base_url = std::string(kAnthropicDefaultBaseUrl);
  while (!settings_.base_url.empty() && settings_.base_url.back() == '/')
    settings_.base_url.pop_back();
  // Accept a base_url written the OpenAI way (".../v1") without doubling the version.
  if (settings_.base_url.ends_with("/v1")) settings_.base_url.resize(settings_.base_url.size() - 3);
}

HttpRequest AnthropicProvider::render_request(const Request& request) const {
  if (model_for(request).empty())
    throw Error(ErrorCode::config,
                "no model for the anthropic provider (set LUAGENT_MODEL, --model or model = ... "
                "in luagent.config.lua)");
  HttpRequest http;
  http.url = settings_.base_url + "/v1/messages";
  http.body =
      anthropic_request_body(request, settings_.default_model, settings_.default_max_tokens);
  http.headers.emplace_back("content-type", "application/json");
  http.headers.emplace_back("anthropic-version", std::string(kAnthropicApiVersion));
  if (request.stream) http.headers.emplace_back("accept", "text/event-stream");
  if (!settings_.api_key.empty()) http.headers.emplace_back("x-api-key", settings_.api_key);
  return http;
}

Reply AnthropicProvider::parse_reply(const nlohmann::json& body) const {
  return anthropic_parse_response(body);
}

Error AnthropicProvider::classify_error(int http_status, std::string_view body) const {
  return anthropic_classify_error(http_status, body);
}

std::unique_ptr<ReplyStreamDecoder> AnthropicProvider::make_stream_decoder(
    ChunkCallback on_chunk) const {
  return std::make_unique<CodecStreamDecoder<AnthropicStreamDecoder>>(std::move(on_chunk));
}

}  // namespace luagent::llm
