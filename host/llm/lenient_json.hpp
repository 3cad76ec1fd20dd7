// Recovers a JSON value from what a model actually wrote: fenced blocks, prose around
// the object, comments, trailing commas, single quotes, Python literals, and replies
// cut off mid-stream. Every change made to the text is reported as a short repair note.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace luagent::llm {

/// Bounds that keep parsing of untrusted model output cheap and non-recursive.
struct LenientOptions {
  std::size_t max_bytes = std::size_t{8} << 20;  // larger replies fail with ErrorCode::limit
  int max_depth = 128;                           // deeper nesting fails with ErrorCode::limit
};

struct LenientResult {
  nlohmann::json value;
  std::vector<std::string> repairs;  // one short note per kind of change ("removed markdown fence")
  bool complete = true;              // false: the reply was cut off and open values were closed
  int objects_found = 1;             // top-level values of the chosen kind found in the reply
};

/// Parses `text` as leniently as a careful human would; throws Error(invalid_output) when
/// no JSON value can be recovered and Error(limit) when the size or depth bound is crossed.
LenientResult parse_lenient_json(std::string_view text, const LenientOptions& options = {});

}  // namespace luagent::llm
