// What llm.json does with a reply once it has arrived: lenient parse, then coercion and
// validation against the schema, with every repair listed for the trace.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace luagent::llm {

struct StructuredResult {
  nlohmann::json value;
  std::vector<std::string> repairs;  // parse repairs, then coercions ("field \"a\": ...")
  bool complete = true;              // false: the reply was cut off and closed by the parser
};

/// Parses `text` leniently and validates it against `schema` (an expanded JSON Schema;
/// null skips validation). Throws Error(invalid_output) whose message starts with a
/// one-line reason; Error(limit) for oversized or too deeply nested replies.
StructuredResult parse_structured_output(std::string_view text, const nlohmann::json& schema);

class CompiledSchema;

/// The same against a compiled schema: a reply that fits it as it is is checked without
/// the full validation; results and errors are those of the overload above.
StructuredResult parse_structured_output(std::string_view text, const CompiledSchema& schema);

}  // namespace luagent::llm
