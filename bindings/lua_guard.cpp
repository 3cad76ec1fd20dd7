#include "lua_guard.hpp"

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>

#include "lua_runtime.hpp"

namespace luagent::lua {
namespace {

// Registry keys: addresses of these objects are unique light userdata.
char kErrorMetatableKey;
char kHostYieldKey;

// Fixed-size and trivially destructible, so it may live on the guard's frame when
// lua_error longjmps past it.
struct CaughtError {
  ErrorCode code = ErrorCode::internal;
  int line = 0;
  char message[1024] = {};
  char source[256] = {};

  void set(ErrorCode c, const char* text, const char* src, int ln) {
    code = c;
    line = ln;
    std::snprintf(message, sizeof message, "%s", text);
    std::snprintf(source, sizeof source, "%s", src);
  }
};

int error_tostring(lua_State* L) {
  lua_getfield(L, 1, "message");
  lua_getfield(L, 1, "source");
  lua_getfield(L, 1, "line");
  lua_getfield(L, 1, "code");
  const char* message = lua_tostring(L, -4);
  const char* source = lua_tostring(L, -3);
  lua_Integer line = lua_tointeger(L, -2);
  const char* code = lua_tostring(L, -1);
  if (source && *source && line > 0)
    lua_pushfstring(L, "%s:%d: %s [%s]", source, static_cast<int>(line), message ? message : "?",
                    code ? code : "internal");
  else if (source && *source)
    lua_pushfstring(L, "%s: %s [%s]", source, message ? message : "?", code ? code : "internal");
  else
    lua_pushfstring(L, "%s [%s]", message ? message : "?", code ? code : "internal");
  return 1;
}

void push_error_metatable(lua_State* L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &kErrorMetatableKey) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 3);
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "luagent.error");
  lua_setfield(L, -2, "__name");
  // Shared by every run: a script that could reach it could give every later error a
  // __gc (agent code outside the CPU limit) or another run's errors its own __tostring.
  lua_pushliteral(L, "luagent.error");
  lua_setfield(L, -2, "__metatable");
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kErrorMetatableKey);
}

// Runs a body, catching every C++ exception into `caught`. Returns true on success.
bool call_catching(lua_State* L, Body body, int& results, CaughtError& caught) {
  try {
    check_memory_limit(L);
    results = body(L);
    return true;
  } catch (const Error& e) {
    caught.set(e.code(), e.message().c_str(), e.source().c_str(), e.line());
  } catch (const std::bad_alloc&) {
    caught.set(ErrorCode::limit, "out of memory", "", 0);
  } catch (const std::exception& e) {
    caught.set(ErrorCode::internal, e.what(), "", 0);
  } catch (...) {
    caught.set(ErrorCode::internal, "unknown C++ exception", "", 0);
  }
  return false;
}

int finish(lua_State* L, bool ok, int results, const CaughtError& caught, Body continuation) {
  if (!ok) {
    push_error(L, caught.code, caught.message, caught.source, caught.line);
    return lua_error(L);
  }
  if (results == kYield) {
    push_host_yield_sentinel(L);
    return lua_yieldk(L, 1, reinterpret_cast<lua_KContext>(continuation), run_continuation);
  }
  return results;
}

// The continuation a Body asked for, stashed until the guard yields.
thread_local Body pending_continuation = nullptr;

}  // namespace

void push_error(lua_State* L, ErrorCode code, std::string_view message, std::string_view source,
                int line) {
  lua_createtable(L, 0, 4);
  std::string_view name = error_code_name(code);
  lua_pushlstring(L, name.data(), name.size());
  lua_setfield(L, -2, "code");
  lua_pushlstring(L, message.data(), message.size());
  lua_setfield(L, -2, "message");
  if (!source.empty()) {
    lua_pushlstring(L, source.data(), source.size());
    lua_setfield(L, -2, "source");
  }
  if (line > 0) {
    lua_pushinteger(L, line);
    lua_setfield(L, -2, "line");
  }
  push_error_metatable(L);
  lua_setmetatable(L, -2);
}

Error error_from_lua(lua_State* L, int index) {
  index = lua_absindex(L, index);
  if (lua_type(L, index) == LUA_TTABLE) {
    // Raw reads: the host reads errors where nothing protects it (a step's coroutine that
    // died, a stream callback's pcall), so an agent's __index there would crash or stall it.
    for (const char* field : {"code", "message", "source", "line"}) {
      lua_pushstring(L, field);
      lua_rawget(L, index);
    }
    std::string code = lua_isstring(L, -4) ? lua_tostring(L, -4) : "runtime";
    std::string message =
        lua_isstring(L, -3) ? lua_tostring(L, -3) : "error object without message";
    std::string source = lua_isstring(L, -2) ? lua_tostring(L, -2) : "";
    int line = static_cast<int>(lua_tointeger(L, -1));
    lua_pop(L, 4);
    // `internal` means a bug in luagent: only the host's own errors say so. A table an
    // agent raised ({ code = "internal" }) is its own runtime error.
    bool raised_by_host = false;
    if (lua_getmetatable(L, index)) {
      push_error_metatable(L);
      raised_by_host = lua_rawequal(L, -1, -2);
      lua_pop(L, 2);
    }
    ErrorCode parsed = error_code_from_name(code);
    if (parsed == ErrorCode::internal && (code != "internal" || !raised_by_host))
      parsed = ErrorCode::runtime;
    return Error(parsed, message, source, line);
  }
  const char* text = lua_tostring(L, index);
  std::string message = text ? text : std::string("error object is a ") + luaL_typename(L, index);
  // Lua's own "chunk:line: message" prefix becomes source and line.
  std::string source;
  int line = 0;
  auto first = message.find(':');
  if (first != std::string::npos) {
    auto second = message.find(':', first + 1);
    if (second != std::string::npos && second > first + 1 &&
        message.find_first_not_of("0123456789", first + 1) == second) {
      source = message.substr(0, first);
      line = std::atoi(message.c_str() + first + 1);
      message = message.substr(second + 1);
      if (!message.empty() && message[0] == ' ') message.erase(0, 1);
    }
  }
  return Error(ErrorCode::runtime, message, source, line);
}

int run_guarded(lua_State* L, Body body) {
  int results = 0;
  CaughtError caught;
  pending_continuation = nullptr;
  bool ok = call_catching(L, body, results, caught);
  return finish(L, ok, results, caught, pending_continuation);
}

int run_continuation(lua_State* L, int /*status*/, lua_KContext context) {
  auto body = reinterpret_cast<Body>(context);
  int results = 0;
  CaughtError caught;
  pending_continuation = nullptr;
  bool ok = call_catching(L, body, results, caught);
  return finish(L, ok, results, caught, pending_continuation);
}

void yield_for_host(lua_State* /*L*/, Body continuation) {
  pending_continuation = continuation;
}

void push_host_yield_sentinel(lua_State* L) {
  lua_pushlightuserdata(L, &kHostYieldKey);
}

bool is_host_yield_sentinel(lua_State* L, int index) {
  return lua_type(L, index) == LUA_TLIGHTUSERDATA && lua_touserdata(L, index) == &kHostYieldKey;
}

namespace {
[[noreturn]] void bad_argument(lua_State* L, int index, const char* function, const char* name,
                               const char* expected) {
  throw Error(ErrorCode::usage, std::string(function) + ": argument #" + std::to_string(index) +
                                    " (" + name + ") must be " + expected + ", got " +
                                    luaL_typename(L, index));
}
}  // namespace

std::string_view arg_string(lua_State* L, int index, const char* function, const char* name) {
  if (lua_type(L, index) != LUA_TSTRING) bad_argument(L, index, function, name, "a string");
  size_t length = 0;
  const char* text = lua_tolstring(L, index, &length);
  return {text, length};
}

std::string_view opt_string(lua_State* L, int index, const char* function, const char* name,
                            std::string_view fallback) {
  if (lua_isnoneornil(L, index)) return fallback;
  return arg_string(L, index, function, name);
}

lua_Integer arg_integer(lua_State* L, int index, const char* function, const char* name) {
  int is_integer = 0;
  lua_Integer value = lua_tointegerx(L, index, &is_integer);
  if (!is_integer) bad_argument(L, index, function, name, "an integer");
  return value;
}

void arg_table(lua_State* L, int index, const char* function, const char* name) {
  if (lua_type(L, index) != LUA_TTABLE) bad_argument(L, index, function, name, "a table");
}

void arg_function(lua_State* L, int index, const char* function, const char* name) {
  if (lua_type(L, index) != LUA_TFUNCTION) bad_argument(L, index, function, name, "a function");
}

void push_arguments_as_text(lua_State* L, int count, const char* separator) {
  lua_pushliteral(L, "");
  for (int i = 1; i <= count; ++i) {
    if (i > 1) lua_pushstring(L, separator);
    luaL_tolstring(L, i, nullptr);
    lua_concat(L, i > 1 ? 3 : 2);
  }
}

std::pair<std::string, int> current_location(lua_State* L) {
  lua_Debug ar;
  for (int level = 0; lua_getstack(L, level, &ar); ++level) {
    lua_getinfo(L, "Sl", &ar);
    if (ar.currentline > 0) return {ar.short_src, ar.currentline};
  }
  return {"", 0};
}

}  // namespace luagent::lua
