// libFuzzer target: the decoders of whole (non-streamed) provider bodies — OpenAI-style,
// Anthropic and Ollama replies, and the error bodies of each — i.e. whatever a server, a
// proxy in front of it, or a broken local model sends back. Decoding must never crash and
// may throw only luagent::Error; classifying an error body must never throw at all; and
// what a decoded reply holds must serialise (the host records it as provenance, so a
// string nlohmann cannot dump would end the step in an internal error).
// Input: the first byte picks the HTTP status, the rest is the body.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "llm/anthropic_wire.hpp"
#include "llm/ollama_wire.hpp"
#include "llm/openai_wire.hpp"
#include "llm/wire_json.hpp"
#include "luagent/error.hpp"

namespace {

// Every part of a reply the host later turns into JSON text or Lua values.
void use(const luagent::llm::Reply& reply) {
  nlohmann::json record = {{"text", reply.text},           {"refusal", reply.refusal},
                           {"reasoning", reply.reasoning}, {"finish_reason", reply.finish_reason},
                           {"model", reply.model},         {"carried", reply.carried_blocks}};
  for (const auto& call : reply.tool_calls)
    record["calls"].push_back({{"id", call.id},
                               {"name", call.name},
                               {"arguments", call.arguments},
                               {"raw", call.raw_arguments}});
  (void)record.dump();  // throws type_error on text that is not UTF-8: a finding
}

template <typename Decode>
void decode(Decode decode_body, const nlohmann::json& body) {
  try {
    use(decode_body(body));
  } catch (const luagent::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The statuses providers answer with, plus a few no server should send.
  constexpr int kStatuses[] = {200, 400, 401, 403, 404, 408, 413, 422,
                               429, 500, 502, 503, 529, 0,   99,  999};
  const int status = kStatuses[data[0] % (sizeof kStatuses / sizeof kStatuses[0])];
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);

  // Its message goes into the failed event: it must serialise too.
  (void)nlohmann::json(luagent::llm::openai_classify_error(status, body).message()).dump();
  (void)nlohmann::json(luagent::llm::anthropic_classify_error(status, body).message()).dump();
  (void)nlohmann::json(luagent::llm::ollama_classify_error(status, body).message()).dump();

  nlohmann::json parsed;
  try {
    parsed = luagent::llm::parse_wire_json(body, "the response");
  } catch (const luagent::Error&) {
    return 0;
  }
  decode(luagent::llm::openai_parse_response, parsed);
  decode(luagent::llm::anthropic_parse_response, parsed);
  decode(luagent::llm::ollama_parse_response, parsed);
  return 0;
}
