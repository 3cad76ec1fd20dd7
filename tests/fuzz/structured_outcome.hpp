// What parse_structured_output makes of a reply, flattened to text, for the fuzz targets
// that compare its two paths (the full validation and a compiled schema's quick check).
#pragma once

#include <string>
#include <string_view>

#include "llm/structured_output.hpp"
#include "luagent/error.hpp"

namespace luagent::fuzz {

/// The value, whether it was complete, and its repairs; or the error's code and message.
/// Throws (crashing the fuzzer) when a result does not serialise.
template <typename Schema>
std::string structured_outcome(std::string_view text, const Schema& schema) {
  try {
    auto result = llm::parse_structured_output(text, schema);
    std::string outcome = result.value.dump() + (result.complete ? " complete" : " cut");
    for (const auto& repair : result.repairs) outcome += "\n" + repair;
    return outcome;
  } catch (const Error& error) {
    return "error " + std::to_string(static_cast<int>(error.code())) + ": " + error.message();
  }
}

}  // namespace luagent::fuzz
