// libFuzzer target: the lenient parser and the structured-output path must never crash,
// hang or leak on any reply, and whatever they return must serialise. Validation against
// the compiled schema must give exactly what validation against its JSON gives.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "llm/json_schema.hpp"
#include "llm/lenient_json.hpp"
#include "llm/structured_output.hpp"
#include "luagent/error.hpp"
#include "structured_outcome.hpp"

namespace {

const nlohmann::json& calculator_schema() {
  static const nlohmann::json schema = luagent::llm::one_of_intents(nlohmann::json::parse(R"({
    "add": {"a": "number", "b": "number"},
    "multiply": {"a": "number", "b": "integer", "tags?": ["string"]},
    "done_for_now": {"message": "string", "ok": "boolean?"}})"));
  return schema;
}

// Keywords the calculator does not use, some of them malformed, for the comparison.
const nlohmann::json& varied_schema() {
  static const nlohmann::json schema = nlohmann::json::parse(R"({
    "anyOf": [
      {"type": "object", "properties": {"user_name": {"type": "string"},
                                        "tags": {"type": "array", "items": {"enum": ["a", 1]},
                                                 "maxItems": 3},
                                        "pair": {"items": [{"type": "integer"}, {"const": "x"}]},
                                        "bad": {"type": "wat"}},
       "required": ["user_name"], "additionalProperties": {"type": ["number", "null"]}},
      {"type": "array", "items": {"allOf": [{"type": "number"}, {"type": "integer"}]},
       "minItems": 1},
      {"type": "boolean"}]})");
  return schema;
}

template <const nlohmann::json& (*schema)()>
const luagent::llm::CompiledSchema& compiled() {
  static const luagent::llm::CompiledSchema compiled(schema());
  return compiled;
}

}  // namespace

using luagent::fuzz::structured_outcome;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    auto result = luagent::llm::parse_lenient_json(text);
    (void)result.value.dump();  // throws (and so crashes the fuzzer) on invalid UTF-8
  } catch (const luagent::Error&) {
  }
  // dump() throws (and so crashes the fuzzer) if a result does not serialise.
  if (structured_outcome(text, calculator_schema()) !=
      structured_outcome(text, compiled<calculator_schema>()))
    std::abort();
  if (structured_outcome(text, varied_schema()) !=
      structured_outcome(text, compiled<varied_schema>()))
    std::abort();
  return 0;
}
