#include "llm/structured_output.hpp"

#include "llm/json_schema.hpp"
#include "llm/lenient_json.hpp"
#include "luagent/error.hpp"

namespace luagent::llm {
namespace {

bool wants_plain_string(const nlohmann::json& schema) {
  return schema.is_object() && schema.contains("type") && schema["type"] == "string";
}

std::string trimmed(std::string_view text) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!text.empty() && space(text.front())) text.remove_prefix(1);
  while (!text.empty() && space(text.back())) text.remove_suffix(1);
  return std::string(text);
}

// `validate` is coerce_and_validate against the schema that `schema` is the JSON of.
template <typename Validate>
StructuredResult parse_and_validate(std::string_view text, const nlohmann::json& schema,
                                    Validate validate) {
  LenientResult parsed;
  try {
    parsed = parse_lenient_json(text);
  } catch (const Error& error) {
    // A schema that asks for a bare string is satisfied by prose: the reply is the string.
    if (error.code() != ErrorCode::invalid_output || !wants_plain_string(schema)) throw;
    StructuredResult result{trimmed(text), {"used the whole reply as the string"}, true};
    try {
      (void)result.value.dump();  // refuses invalid UTF-8, which no caller could serialise
    } catch (const nlohmann::json::exception&) {
      throw error;
    }
    validate(result.value, result.repairs);
    return result;
  }
  StructuredResult result{std::move(parsed.value), std::move(parsed.repairs), parsed.complete};
  if (!schema.is_null()) validate(result.value, result.repairs);
  return result;
}

}  // namespace

StructuredResult parse_structured_output(std::string_view text, const nlohmann::json& schema) {
  return parse_and_validate(text, schema, [&](nlohmann::json& value, auto& repairs) {
    coerce_and_validate(value, schema, repairs);
  });
}

StructuredResult parse_structured_output(std::string_view text, const CompiledSchema& schema) {
  return parse_and_validate(text, schema.json(), [&](nlohmann::json& value, auto& repairs) {
    coerce_and_validate(value, schema, repairs);
  });
}

}  // namespace luagent::llm
