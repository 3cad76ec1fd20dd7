// luagent.log: leveled messages to the host's log sink (stderr in the CLI).
#include <string>

#include "lua_guard.hpp"
#include "lua_modules.hpp"
#include "lua_runtime.hpp"

namespace luagent::lua {
namespace {

template <const char* Level>
int log_at(lua_State* L) {
  int n = lua_gettop(L);
  std::string line;
  {
    HostCallScope scope(L);
    for (int i = 1; i <= n; ++i) {
      if (i > 1) line += ' ';
      line += luaL_tolstring(L, i, nullptr);
      lua_pop(L, 1);
    }
  }
  LuaRuntime::from(L).log(Level, line);
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
