// The one boundary between C++ and Lua. Debian's Lua is built as C, so lua_error
// and lua_yield longjmp: no C++ object with a destructor may be alive on a frame
// they cross. Every lua_CFunction is therefore written as a Body that throws
// luagent::Error (never luaL_check* / lua_error), and lua_entry<Body> runs it,
// copies any exception into a plain buffer, lets every C++ object die, and only
// then raises the Lua error (or yields) from a frame that owns nothing.
#pragma once

#include <lua.hpp>

#include <cstdint>
#include <string>
#include <string_view>

#include "luagent/error.hpp"

namespace luagent::lua {

/// A Body returns its number of results, or kYield after arranging for the host to
/// resume the coroutine later; the guard then yields and, on resume, runs the
/// continuation given to yield_for_host() under the same guard.
constexpr int kYield = -1;
using Body = int (*)(lua_State* L);

/// Pushes the error table { code=, message=, source=, line= } (metatable gives __tostring).
void push_error(lua_State* L, ErrorCode code, std::string_view message,
                std::string_view source = {}, int line = 0);
/// Reads an error value raised in Lua (our table or a plain string) back into an Error.
Error error_from_lua(lua_State* L, int index);

int run_guarded(lua_State* L, Body body);
int run_continuation(lua_State* L, int status, lua_KContext context);

template <Body F>
int lua_entry(lua_State* L) {
  return run_guarded(L, F);
}

/// Called by a Body before returning kYield: on resume, `continuation` runs (guarded)
/// with the values the host resumed with on top of the stack.
void yield_for_host(lua_State* L, Body continuation);

/// The sentinel a host yield passes up through user coroutines.
void push_host_yield_sentinel(lua_State* L);
bool is_host_yield_sentinel(lua_State* L, int index);

// Argument access for Bodies: each throws Error(usage) naming the argument.
std::string_view arg_string(lua_State* L, int index, const char* function, const char* name);
std::string_view opt_string(lua_State* L, int index, const char* function, const char* name,
                            std::string_view fallback);
lua_Integer arg_integer(lua_State* L, int index, const char* function, const char* name);
void arg_table(lua_State* L, int index, const char* function, const char* name);
void arg_function(lua_State* L, int index, const char* function, const char* name);

/// Pushes tostring() of arguments 1..count joined by `separator`, as print does. A
/// __tostring runs agent code that may raise or allocate: call it before any C++ object
/// with a destructor is alive, and outside a HostCallScope (it runs under the step's limits).
void push_arguments_as_text(lua_State* L, int count, const char* separator);

/// "file.lua:12" of the innermost Lua function on the stack, for error messages.
std::pair<std::string, int> current_location(lua_State* L);

}  // namespace luagent::lua
