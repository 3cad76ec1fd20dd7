// The values JSON coming in from C++ may not hold (a host tool's result, a launch or
// resume event's data): one walker finds the first, and says where it is.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace luagent {

/// The first value of a JSON document that luagent cannot take, and where it is.
struct JsonFault {
  enum class Kind { discarded, binary, not_finite, not_utf8, too_deep };
  Kind kind;
  std::string what;  // "NaN", "-infinity", "a string", "a key", "a binary value", ...
  std::string at;    // JSON pointer to it ("/readings/1", a key's member); empty: the top
  std::string why;   // what follows the place: ", which JSON has no form for", ...
  /// "NaN at /readings/1, which JSON has no form for".
  std::string text() const;
};

/// The first fault of `value` in document order, or nullopt: a discarded value (a failed
/// nlohmann parse) or a binary one (no Lua form: either would reach an agent as nil), NaN or
/// infinity, a string or key that is not UTF-8 (no JSON form), and, given `max_depth`, a
/// value nested deeper than that (the top is at depth 0). Walks without recursion.
std::optional<JsonFault> first_json_fault(const nlohmann::json& value,
                                          std::optional<int> max_depth = std::nullopt);

}  // namespace luagent
