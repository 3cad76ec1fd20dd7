// How deep JSON that Lua code sees may nest. Converting JSON to Lua and back recurses once
// per level, and so does nlohmann's writer in the stores: a bound keeps all of them far
// from the end of the C stack. The host refuses deeper event data where it comes in
// (check_outside_event), so nothing stored is too deep for a step to read.
#pragma once

namespace luagent {

/// Levels below the top value: the top is at depth 0, its items at 1, and so on.
inline constexpr int kMaxJsonDepth = 100;

}  // namespace luagent
