// JSON <-> Lua conversion with limits: bounded depth, lua_checkstack before every
// push, cycles and non-finite numbers refused with an error that names the path.
#pragma once

#include <lua.hpp>

#include <nlohmann/json.hpp>

#include "json_depth.hpp"  // kMaxJsonDepth, shared with the host's checks of event data

namespace luagent::lua {

/// Pushes `value`. JSON null becomes nil inside objects and luagent.json.null inside arrays;
/// arrays get a metatable marking them as arrays so they round-trip (even when empty).
/// `wrapping_levels`: how many levels of `value` the host built around data that was
/// checked against kMaxJsonDepth on its own (an event list around event data is two).
void push_json(lua_State* L, const nlohmann::json& value, int wrapping_levels = 0);
/// Converts the Lua value at `index`. Tables with keys 1..n are arrays, other tables objects
/// (string keys; integer keys become strings). Throws Error(usage) for functions,
/// userdata, cycles, NaN/inf, strings that are not UTF-8, depth over kMaxJsonDepth, or
/// mixed keys.
nlohmann::json to_json(lua_State* L, int index, const char* what = "value");

/// Pushes luagent.json.null (a unique light userdata).
void push_json_null(lua_State* L);
bool is_json_null(lua_State* L, int index);
/// Pushes the metatable that marks a table as a JSON array.
void push_array_metatable(lua_State* L);

}  // namespace luagent::lua
