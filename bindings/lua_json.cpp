// luagent.json: encode/decode with the same conversion rules and limits the host uses.
#include <string>

#include "lua_guard.hpp"
#include "lua_json_convert.hpp"
#include "lua_modules.hpp"
#include "lua_runtime.hpp"

namespace luagent::lua {
namespace {

int json_encode(lua_State* L) {
  lua_settop(L, 2);
  bool pretty =
      lua_type(L, 2) == LUA_TTABLE && (lua_getfield(L, 2, "indent"), lua_toboolean(L, -1));
  nlohmann::json value = to_json(L, 1, "json.encode");
  std::string text =
      value.dump(pretty ? 2 : -1, ' ', false, nlohmann::json::error_handler_t::replace);
  HostCallScope scope(L);
  lua_pushlstring(L, text.data(), text.size());
  return 1;
}

int json_decode(lua_State* L) {
  std::string_view text = arg_string(L, 1, "json.decode", "text");
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // parse_error, and out_of_range for a number no double holds ("1e400"): both are the
    // text's fault, not a bug in luagent.
    throw Error(ErrorCode::usage, std::string("json.decode: ") + e.what());
  }
  HostCallScope scope(L);
  try {
    push_json(L, value);
  } catch (const Error& e) {
    // Too deep for Lua: named like the parse errors above, so a script sees whose it is.
    throw Error(e.code(), "json.decode: " + e.message());
  }
  return 1;
}

int json_array(lua_State* L) {
  if (lua_isnoneornil(L, 1))
    lua_createtable(L, 0, 0);
  else
    arg_table(L, 1, "json.array", "items");
  lua_settop(L, 1);
  push_array_metatable(L);
  lua_setmetatable(L, 1);
  return 1;
}

}  // namespace

int luaopen_luagent_json(lua_State* L) {
  const luaL_Reg functions[] = {{"encode", lua_entry<json_encode>},
                                {"decode", lua_entry<json_decode>},
                                {"array", lua_entry<json_array>},
                                {nullptr, nullptr}};
  luaL_newlib(L, functions);
  push_json_null(L);
  lua_setfield(L, -2, "null");
  return 1;
}

}  // namespace luagent::lua
