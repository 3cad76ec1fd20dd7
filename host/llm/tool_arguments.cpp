#include "llm/tool_arguments.hpp"

#include "llm/wire_json.hpp"

namespace luagent::llm {

nlohmann::json parse_tool_arguments(std::string_view raw) {
  if (raw.find_first_not_of(" \t\r\n") == std::string_view::npos) return nlohmann::json::object();
  nlohmann::json value = try_parse_wire_json(raw);
  if (value.is_discarded()) return nullptr;
  return value;
}

}  // namespace luagent::llm
