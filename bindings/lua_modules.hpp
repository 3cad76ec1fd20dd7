// The built-in Lua modules (one bindings/lua_<module>.cpp each) and the thread object.
#pragma once

#include <lua.hpp>

#include <cstdint>
#include <string_view>

namespace luagent::lua {

int luaopen_luagent_json(lua_State* L);
int luaopen_luagent_log(lua_State* L);
int luaopen_luagent_llm(lua_State* L);
int luaopen_luagent_source(lua_State* L);
int luaopen_luagent_threads(lua_State* L);
int luaopen_luagent_host(lua_State* L);

/// Pushes the module `name` if it is built in (C++), leaving it on the stack; false if not.
bool open_builtin_module(lua_State* L, std::string_view name);

/// Pushes the `thread` object an agent function receives, bound to run `run_id`.
void push_thread_object(lua_State* L, std::uint64_t run_id);

}  // namespace luagent::lua
