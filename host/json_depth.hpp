// How deep JSON that Lua code sees may nest. Converting JSON to Lua and back recurses once
// per level, and so does nlohmann's writer in the stores: a bound keeps all of them far
// from the end of the C stack. The host refuses deeper event data where it comes in
// (check_outside_event), so nothing stored is too deep for a step to read.
#pragma once

#include <cstddef>
#include <string_view>

namespace luagent {

/// Levels below the top value: the top is at depth 0, its items at 1, and so on.
inline constexpr int kMaxJsonDepth = 100;
/// The most levels of brackets in the text of a value within kMaxJsonDepth: a container
/// may sit at the deepest level (empty), one more than its depth.
inline constexpr std::size_t kMaxJsonBracketNesting = kMaxJsonDepth + 1;

/// The deepest nesting of arrays and objects in `text`, counting brackets outside strings
/// (exact for any text a JSON parser accepts; a top-level array is 1): checked before
/// parsing, it lets the parser run without a per-value callback, and refuses text too deep
/// for the recursive code after it (copies, the writer, the conversion to Lua).
std::size_t json_nesting_depth(std::string_view text);

/// json_nesting_depth(text) > max_depth, without reading text too short to hold that many
/// levels as JSON (each takes two brackets): most of what the stores read.
inline bool nested_deeper_than(std::string_view text, std::size_t max_depth) {
  return text.size() > 2 * max_depth + 1 && json_nesting_depth(text) > max_depth;
}

}  // namespace luagent
