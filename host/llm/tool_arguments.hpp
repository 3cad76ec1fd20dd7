// Tool-call arguments as the model sent them -> a JSON value. The one seam where a lenient
// parser (fences, trailing commas, partial JSON) plugs in for every provider.
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

namespace luagent::llm {

/// Parses tool-call arguments: "" (a call without arguments) gives {}, valid JSON gives its
/// value, anything else gives null (the caller keeps the raw text in ToolCall::raw_arguments).
nlohmann::json parse_tool_arguments(std::string_view raw);

}  // namespace luagent::llm
