// Schemas for structured output: the short form agents write as Lua tables
// (docs/schemas.md), its expansion to JSON Schema, and BAML-style validation that
// coerces what a model almost got right and names the field when it got it wrong.
#pragma once

#include <memory>
#include <optional>
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
/// with a short message naming the field, fit to show back to the model; `subject` names
/// the value as a whole ("reply: expected an object", "arguments: ...").
void coerce_and_validate(nlohmann::json& value, const nlohmann::json& schema,
                         std::vector<std::string>& repairs, std::string_view subject = "reply");

/// An expanded schema prepared once for the many replies checked against it. Most replies
/// already fit; checking that needs no text (paths, messages) and finds a discriminated
/// oneOf's branch by name. A reply that does not plainly fit, or a schema part the quick
/// check does not model ($ref, a malformed keyword), goes through the full validation.
class CompiledSchema {
 public:
  /// `subject` names the value as a whole in a schema error, as in coerce_and_validate.
  explicit CompiledSchema(nlohmann::json schema, std::string_view subject = "reply");
  ~CompiledSchema();
  CompiledSchema(const CompiledSchema&) = delete;
  CompiledSchema& operator=(const CompiledSchema&) = delete;

  const nlohmann::json& json() const { return schema_; }
  /// json().dump(), made once for the requests that send the schema; nullptr when the
  /// schema has no JSON text (invalid UTF-8: dumping it throws, as it always did).
  const std::string* text() const { return text_ ? &*text_ : nullptr; }
  /// True only when coerce_and_validate would accept `value` as it is: no repair, no
  /// change, no error. False means "run the full validation", not "invalid".
  bool fits_as_is(const nlohmann::json& value) const;

  struct Node;  // one schema object of the tree, in json_schema.cpp

 private:
  nlohmann::json schema_;  // the nodes point into it, so it never moves
  std::optional<std::string> text_;
  std::vector<std::unique_ptr<Node>> nodes_;
  const Node* root_ = nullptr;
};

/// coerce_and_validate against a compiled schema: a reply that fits as it is costs only
/// the quick check; any other gets exactly the repairs and errors of the full validation.
void coerce_and_validate(nlohmann::json& value, const CompiledSchema& schema,
                         std::vector<std::string>& repairs, std::string_view subject = "reply");

}  // namespace luagent::llm
