// libFuzzer target: schemas as agents write them (docs/schemas.md). Input: a schema as
// JSON text (the short form or full JSON Schema), a NUL byte, then a model's reply.
// Expanding any schema ends in a schema or a luagent::Error; compiling an expanded one
// never throws anything else; and validating the reply against the compiled schema gives
// exactly what validating it against the schema's JSON gives (value, repairs or error).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string_view>

#include <nlohmann/json.hpp>

#include "llm/json_schema.hpp"
#include "luagent/error.hpp"
#include "structured_outcome.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t separator = input.find('\0');
  if (separator == std::string_view::npos) return 0;
  const auto short_form =
      nlohmann::json::parse(input.substr(0, separator), nullptr, /*allow_exceptions=*/false);
  if (short_form.is_discarded()) return 0;
  const std::string_view reply = input.substr(separator + 1);

  nlohmann::json schema;
  std::unique_ptr<luagent::llm::CompiledSchema> compiled;
  try {
    schema = luagent::llm::expand_schema(short_form);
    compiled = std::make_unique<luagent::llm::CompiledSchema>(schema);
  } catch (const luagent::Error&) {
    return 0;
  }
  if (luagent::fuzz::structured_outcome(reply, schema) !=
      luagent::fuzz::structured_outcome(reply, *compiled))
    std::abort();
  return 0;
}
