#include "llm/openai_provider.hpp"

#include "llm/openai_wire.hpp"

namespace luagent::llm {
namespace {

std::string without_trailing_slashes(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

}  // namespace

OpenAiProvider::OpenAiProvider(EventLoop& loop, HttpProviderSettings settings)
    : HttpChatProvider(loop, std::move(settings)) {
  if (settings_.base_url.empty()) settings_.base_url = std::string(kOpenAiDefaultBaseUrl);
  settings_.base_url = without_trailing_slashes(settings_.base_url);
}

HttpRequest OpenAiProvider::render_request(const Request& request) const {
  if (model_for(request).empty())
    throw Error(ErrorCode::config,
                "no model for the openai provider (set LUAGENT_MODEL, --model or model = ... in "
                "luagent.config.lua)");
  HttpRequest http;
  http.url = settings_.base_url + "/chat/completions";
  http.body = openai_request_body(request, settings_.default_model);
  http.headers.emplace_back("Content-Type", "application/json");
  http.headers.emplace_back("Accept", request.stream ? "text/event-stream" : "application/json");
  // Local servers (Ollama, llama.cpp) need no key; sending an empty Bearer would confuse some.
  if (!settings_.api_key.empty())
    http.headers.emplace_back("Authorization", "Bearer " + settings_.api_key);
  return http;
}

Reply OpenAiProvider::parse_reply(const nlohmann::json& body) const {
  return openai_parse_response(body);
}

Error OpenAiProvider::classify_error(int http_status, std::string_view body) const {
  return openai_classify_error(http_status, body);
}

std::unique_ptr<ReplyStreamDecoder> OpenAiProvider::make_stream_decoder(
    ChunkCallback on_chunk) const {
  return std::make_unique<CodecStreamDecoder<OpenAiStreamDecoder>>(std::move(on_chunk));
}

}  // namespace luagent::llm
