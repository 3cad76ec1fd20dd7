// Schemas for structured output: the short form agents write as Lua tables
// (docs/schemas.md), its expansion to JSON Schema, and BAML-style validation that
// coerces what a model almost got right and names the field when it got it wrong.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace luagent::llm {

/// Expands the short form ({a="number", b="string?"}, {"string"}, ...) into JSON Schema;
/// full JSON Schema passes through. Throws Error(usage) naming the path of a bad entry.
nlohmann::json expand_schema(const nlohmann::json& short_form);

/// Builds the schema llm.one_of returns: a oneOf whose branches are each
/// {intent = {const = name}, ...fields}, from a map intent name -> short-form fields.
nlohmann::json one_of_intents(const nlohmann::json& intents);

/// Checks `value` against `schema` (an expanded JSON Schema), coercing near misses in
/// place and appending one note per coercion to `repairs`. Throws Error(invalid_output)
/// with a short message naming the field, fit to show back to the model.
void coerce_and_validate(nlohmann::json& value, const nlohmann::json& schema,
                         std::vector<std::string>& repairs);

}  // namespace luagent::llm
