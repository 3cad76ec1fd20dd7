// luagent.log: leveled messages to the host's log sink (stderr in the CLI).
#include <string>

#include "lua_guard.hpp"
#include "lua_modules.hpp"
#include "lua_runtime.hpp"

namespace luagent::lua {
namespace {

template <const char* Level>
int log_at(lua_State* L) {
  push_arguments_as_text(L, lua_gettop(L), " ");
  size_t length = 0;
  const char* line = lua_tolstring(L, -1, &length);
  LuaRuntime::from(L).log(Level, {line, length});
  return 0;
}

constexpr char kDebug[] = "debug";
constexpr char kInfo[] = "info";
constexpr char kWarn[] = "warn";
constexpr char kError[] = "error";

}  // namespace

int luaopen_luagent_log(lua_State* L) {
  const luaL_Reg functions[] = {{"debug", lua_entry<log_at<kDebug>>},
                                {"info", lua_entry<log_at<kInfo>>},
                                {"warn", lua_entry<log_at<kWarn>>},
                                {"error", lua_entry<log_at<kError>>},
                                {nullptr, nullptr}};
  luaL_newlib(L, functions);
  return 1;
}

}  // namespace luagent::lua
