#include "llm/wire_json.hpp"

#include <algorithm>
#include <cstdint>

#include "json_depth.hpp"
#include "luagent/error.hpp"

namespace luagent::llm {
namespace {

nlohmann::json parse_bounded(std::string_view text, bool allow_exceptions) {
  if (json_nesting_depth(text) > static_cast<std::size_t>(kMaxWireJsonDepth)) {
    throw Error(ErrorCode::limit, "JSON from the provider nests deeper than " +
                                      std::to_string(kMaxWireJsonDepth) + " levels");
  }
  return nlohmann::json::parse(text.begin(), text.end(), nullptr, allow_exceptions);
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

nlohmann::json try_parse_error_body(std::string_view text) {
  try {
    return try_parse_wire_json(text);
  } catch (const Error&) {
    return nlohmann::json(nlohmann::json::value_t::discarded);
  }
}

std::string string_field(const nlohmann::json& object, std::string_view key) {
  if (!object.is_object()) return {};
  const auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return {};
  return it->get<std::string>();
}

bool flag_field(const nlohmann::json& object, std::string_view key) {
  if (!object.is_object()) return false;
  const auto it = object.find(key);
  return it != object.end() && it->is_boolean() && it->get<bool>();
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
