// luagent.source: read files of the running agent's own folder (prompt files), with a
// content version so luagent.prompt recompiles only what changed.
#include <string>

#include "lua_guard.hpp"
#include "lua_modules.hpp"
#include "lua_runtime.hpp"

namespace luagent::lua {
namespace {

int source_read(lua_State* L) {
  std::string path(arg_string(L, 1, "source.read", "path"));
  std::string version;
  std::string text = LuaRuntime::from(L).read_agent_file(path, &version);
  HostCallScope scope(L);
  lua_pushlstring(L, text.data(), text.size());
  lua_pushlstring(L, version.data(), version.size());
  return 2;
}

}  // namespace

int luaopen_luagent_source(lua_State* L) {
  const luaL_Reg functions[] = {{"read", lua_entry<source_read>}, {nullptr, nullptr}};
  luaL_newlib(L, functions);
  return 1;
}

bool open_builtin_module(lua_State* L, std::string_view name) {
  struct Builtin {
    std::string_view name;
    lua_CFunction open;
  };
  static constexpr Builtin kBuiltins[] = {
      {"luagent.json", luaopen_luagent_json},       {"luagent.log", luaopen_luagent_log},
      {"luagent.llm", luaopen_luagent_llm},         {"luagent.source", luaopen_luagent_source},
      {"luagent.threads", luaopen_luagent_threads}, {"luagent.host", luaopen_luagent_host}};
  for (const Builtin& builtin : kBuiltins) {
    if (builtin.name == name) {
      lua_pushcfunction(L, builtin.open);
      lua_call(L, 0, 1);
      return true;
    }
  }
  return false;
}

}  // namespace luagent::lua
