#include "json_faults.hpp"

#include <cmath>
#include <cstddef>
#include <vector>

#include "utf8_text.hpp"

namespace luagent {
namespace {

// What is wrong with one value itself (its items are looked at on their own), with no place
// yet; nullopt when nothing is.
std::optional<JsonFault> fault_of(const nlohmann::json& value) {
  if (value.is_discarded())
    return JsonFault{JsonFault::Kind::discarded,
                     "a discarded value",
                     {},
                     " (what nlohmann::json::parse returns for text that is not JSON; check the "
                     "parse first)"};
  if (value.is_binary())
    return JsonFault{
        JsonFault::Kind::binary,
        "a binary value",
        {},
        ", which Lua and JSON have no form for (encode the bytes, as hex or base64, first)"};
  // Lua has them, but an agent could not push them into its thread: JSON has no form for
  // them, and the refusal would come later, far from where they came in.
  if (value.is_number_float() && !std::isfinite(value.get<double>())) {
    double number = value.get<double>();
    return JsonFault{JsonFault::Kind::not_finite,
                     std::isnan(number) ? "NaN" : (number > 0 ? "infinity" : "-infinity"),
                     {},
                     ", which JSON has no form for"};
  }
  if (value.is_string()) {
    const auto& text = value.get_ref<const std::string&>();
    if (std::size_t bad = first_non_utf8(text); bad != std::string::npos)
      return JsonFault{
          JsonFault::Kind::not_utf8, "a string", {}, " that is " + describe_non_utf8(text, bad)};
  }
  return std::nullopt;
}

}  // namespace

std::string JsonFault::text() const {
  return what + (at.empty() ? "" : " at " + at) + why;
}

std::optional<JsonFault> first_json_fault(const nlohmann::json& value,
                                          std::optional<int> max_depth) {
  // Depth first without recursion (the value may nest deeply), keeping the containers being
  // walked on a stack: the path to a bad value is read off it, so it costs nothing until
  // there is one to report.
  struct Level {
    const nlohmann::json* container;
    nlohmann::json::const_iterator item;
    std::size_t index;
  };
  std::vector<Level> levels;
  auto placed = [&](JsonFault fault) {
    nlohmann::json::json_pointer path;
    for (const Level& level : levels)
      path.push_back(level.container->is_object() ? level.item.key() : std::to_string(level.index));
    fault.at = path.to_string();
    return fault;
  };
  const nlohmann::json* at = &value;
  for (;;) {
    if (max_depth && levels.size() > static_cast<std::size_t>(*max_depth))
      return placed({JsonFault::Kind::too_deep,
                     "a value nested deeper than " + std::to_string(*max_depth) + " levels",
                     {},
                     {}});
    if (auto fault = fault_of(*at)) return placed(std::move(*fault));
    if (at->is_structured() && !at->empty()) {
      levels.push_back({at, at->cbegin(), 0});
    } else {
      // The next item: of this container, or of the nearest one around it not yet done.
      while (!levels.empty()) {
        Level& level = levels.back();
        ++level.item;
        ++level.index;
        if (level.item != level.container->cend()) break;
        levels.pop_back();
      }
      if (levels.empty()) return std::nullopt;
    }
    const Level& level = levels.back();
    if (level.container->is_object()) {
      const std::string& key = level.item.key();
      if (std::size_t bad = first_non_utf8(key); bad != std::string::npos)
        return placed(
            {JsonFault::Kind::not_utf8, "a key", {}, " that is " + describe_non_utf8(key, bad)});
    }
    at = &*level.item;
  }
}

}  // namespace luagent
