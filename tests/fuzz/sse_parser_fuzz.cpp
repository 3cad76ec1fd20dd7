// Feeds arbitrary bytes, cut at arbitrary points, into the SSE parser and the OpenAI and
// Anthropic stream decoders (and the NDJSON/Ollama path). luagent::Error is an accepted
// answer to bad input; crashes, sanitizer reports and other exceptions are not.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

#include "llm/anthropic_wire.hpp"
#include "llm/ollama_wire.hpp"
#include "llm/openai_wire.hpp"
#include "llm/sse_parser.hpp"
#include "luagent/error.hpp"

namespace {

// The first byte seeds the cut sizes, so the fuzzer explores fragmentations too.
template <typename Decoder>
void feed_in_pieces(Decoder& decoder, std::string_view body, std::uint8_t seed) {
  std::size_t step = 1 + seed % 17;
  while (!body.empty()) {
    const std::size_t n = std::min(step, body.size());
    decoder.feed(body.substr(0, n));
    body.remove_prefix(n);
    step = 1 + (step * 31 + seed) % 257;
  }
  decoder.end_of_body();
}

template <typename Decoder>
void run(std::string_view body, std::uint8_t seed) {
  try {
    Decoder decoder([](const luagent::llm::StreamChunk&) {});
    feed_in_pieces(decoder, body, seed);
    (void)decoder.finished();
    const luagent::llm::Reply reply = decoder.take_reply();
    (void)reply.text.size();
  } catch (const luagent::Error&) {
  }
}

struct SseOnly {
  explicit SseOnly(const std::function<void(const luagent::llm::StreamChunk&)>&)
      : parser([](const luagent::llm::SseEvent&) {}, {4096, 8192}) {}
  void feed(std::string_view bytes) { parser.feed(bytes); }
  void end_of_body() { parser.finish(); }
  bool finished() const { return true; }
  luagent::llm::Reply take_reply() { return {}; }
  luagent::llm::SseParser parser;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t seed = data[0];
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  run<SseOnly>(body, seed);
  run<luagent::llm::OpenAiStreamDecoder>(body, seed);
  run<luagent::llm::AnthropicStreamDecoder>(body, seed);
  run<luagent::llm::OllamaStreamDecoder>(body, seed);
  return 0;
}
