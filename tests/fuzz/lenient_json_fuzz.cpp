// libFuzzer target: the lenient parser and the structured-output path must never crash,
// hang or leak on any reply, and whatever they return must serialise.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "llm/json_schema.hpp"
#include "llm/lenient_json.hpp"
#include "llm/structured_output.hpp"
#include "luagent/error.hpp"

namespace {

const nlohmann::json& calculator_schema() {
  static const nlohmann::json schema = luagent::llm::one_of_intents(nlohmann::json::parse(R"({
    "add": {"a": "number", "b": "number"},
    "multiply": {"a": "number", "b": "integer", "tags?": ["string"]},
    "done_for_now": {"message": "string", "ok": "boolean?"}})"));
  return schema;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    auto result = luagent::llm::parse_lenient_json(text);
    (void)result.value.dump();  // throws (and so crashes the fuzzer) on invalid UTF-8
  } catch (const luagent::Error&) {
  }
  try {
    auto result = luagent::llm::parse_structured_output(text, calculator_schema());
    (void)result.value.dump();
  } catch (const luagent::Error&) {
  }
  return 0;
}
