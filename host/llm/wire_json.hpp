// JSON parsing for provider traffic: bounded depth, and failures reported as luagent::Error.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace luagent::llm {

/// Deepest nesting accepted from the wire; provider bodies and tool arguments are far shallower.
inline constexpr int kMaxWireJsonDepth = 128;

/// Parses `text`; throws Error(provider) naming `what` when it is not JSON, Error(limit) when it
/// nests deeper than kMaxWireJsonDepth.
nlohmann::json parse_wire_json(std::string_view text, std::string_view what);

/// Like parse_wire_json, but returns a discarded value instead of throwing on malformed JSON
/// (still throws Error(limit) on excessive depth).
nlohmann::json try_parse_wire_json(std::string_view text);

/// The JSON of an error response's body, or a discarded value when it is not JSON or nests
/// deeper than kMaxWireJsonDepth: such a body tells nothing, and the error is classified
/// by its HTTP status (a proxy's 429 or 503 stays retryable). Never throws.
nlohmann::json try_parse_error_body(std::string_view text);

/// `object[key]` when it is a string, else "" (wire fields are often absent or null).
std::string string_field(const nlohmann::json& object, std::string_view key);
/// True only when `object[key]` is the boolean true (a wire flag may be absent, null, a
/// number or a string; nlohmann's value() would throw type_error for the last two).
bool flag_field(const nlohmann::json& object, std::string_view key);
/// `object[key]` when it is an integer >= 0, else 0.
std::int64_t count_field(const nlohmann::json& object, std::string_view key);

}  // namespace luagent::llm
