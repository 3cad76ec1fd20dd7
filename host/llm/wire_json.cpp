#include "llm/wire_json.hpp"

#include <algorithm>
#include <cstdint>

#include "luagent/error.hpp"

namespace luagent::llm {
namespace {

nlohmann::json parse_bounded(std::string_view text, bool allow_exceptions) {
  // The callback sees every value with its depth, so nesting is refused before it is built.
  const nlohmann::json::parser_callback_t depth_guard = [](int depth, nlohmann::json::parse_event_t,
                                                           nlohmann::json&) {
    if (depth > kMaxWireJsonDepth) {
      throw Error(ErrorCode::limit, "JSON from the provider nests deeper than " +
                                        std::to_string(kMaxWireJsonDepth) + " levels");
    }
    return true;
  };
  return nlohmann::json::parse(text.begin(), text.end(), depth_guard, allow_exceptions);
}

std::string excerpt(std::string_view text) {
  constexpr std::size_t kMax = 120;
  std::string out(text.substr(0, kMax));
  if (text.size() > kMax) out += "...";
  return out;
}

}  // namespace

nlohmann::json parse_wire_json(std::string_view text, std::string_view what) {
  try {
    return parse_bounded(text, true);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::provider,
                "malformed JSON in " + std::string(what) + " (" + e.what() + "): " + excerpt(text));
  }
}

nlohmann::json try_parse_wire_json(std::string_view text) {
  return parse_bounded(text, false);
}

std::string string_field(const nlohmann::json& object, std::string_view key) {
  if (!object.is_object()) return {};
  const auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

std::int64_t count_field(const nlohmann::json& object, std::string_view key) {
  if (!object.is_object()) return 0;
  const auto it = object.find(key);
  if (it == object.end()) return 0;
  if (it->is_number_unsigned()) {
    const auto value = it->get<std::uint64_t>();
    return value > static_cast<std::uint64_t>(INT64_MAX) ? INT64_MAX
                                                         : static_cast<std::int64_t>(value);
  }
  if (it->is_number_integer()) return std::max<std::int64_t>(0, it->get<std::int64_t>());
  return 0;
}

}  // namespace luagent::llm
