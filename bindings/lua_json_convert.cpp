#include "lua_json_convert.hpp"

#include <cmath>
#include <string>
#include <vector>

#include "lua_runtime.hpp"
#include "luagent/error.hpp"
#include "utf8_text.hpp"

namespace luagent::lua {
namespace {

char kNullKey;
char kArrayMetatableKey;

void check_stack(lua_State* L, int slots) {
  if (!lua_checkstack(L, slots))
    throw Error(ErrorCode::limit, "Lua stack exhausted while converting JSON");
}

void push_value(lua_State* L, const nlohmann::json& value, int depth, bool in_array) {
  if (depth > kMaxJsonDepth)
    throw Error(ErrorCode::limit,
                "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  check_stack(L, 3);
  switch (value.type()) {
    case nlohmann::json::value_t::null:
      if (in_array)
        push_json_null(L);
      else
        lua_pushnil(L);
      break;
    case nlohmann::json::value_t::boolean:
      lua_pushboolean(L, value.get<bool>());
      break;
    case nlohmann::json::value_t::number_integer:
      lua_pushinteger(L, value.get<std::int64_t>());
      break;
    case nlohmann::json::value_t::number_unsigned: {
      auto number = value.get<std::uint64_t>();
      if (number <= static_cast<std::uint64_t>(LUA_MAXINTEGER))
        lua_pushinteger(L, static_cast<lua_Integer>(number));
      else
        lua_pushnumber(L, static_cast<lua_Number>(number));
      break;
    }
    case nlohmann::json::value_t::number_float:
      lua_pushnumber(L, value.get<double>());
      break;
    case nlohmann::json::value_t::string: {
      const auto& text = value.get_ref<const std::string&>();
      lua_pushlstring(L, text.data(), text.size());
      break;
    }
    case nlohmann::json::value_t::array: {
      check_memory_limit(L);
      lua_createtable(L, static_cast<int>(value.size()), 0);
      lua_Integer i = 0;
      for (const auto& item : value) {
        push_value(L, item, depth + 1, true);
        lua_rawseti(L, -2, ++i);
      }
      push_array_metatable(L);
      lua_setmetatable(L, -2);
      break;
    }
    case nlohmann::json::value_t::object: {
      check_memory_limit(L);
      lua_createtable(L, 0, static_cast<int>(value.size()));
      for (const auto& [key, item] : value.items()) {
        if (item.is_null()) continue;
        lua_pushlstring(L, key.data(), key.size());
        push_value(L, item, depth + 1, false);
        lua_rawset(L, -3);
      }
      break;
    }
    case nlohmann::json::value_t::binary:
    case nlohmann::json::value_t::discarded:
      lua_pushnil(L);
      break;
  }
}

struct Converter {
  lua_State* L;
  std::vector<const void*> open_tables;  // the current path, for cycle detection
  std::string path;

  [[noreturn]] void fail(ErrorCode code, const std::string& why) {
    throw Error(code, (path.empty() ? std::string("value") : path) + ": " + why);
  }

  // JSON strings are UTF-8; other bytes would fail much later, when the store writes them.
  std::string_view checked_text(const char* text, size_t length) {
    std::string_view view(text, length);
    if (std::size_t bad = first_non_utf8(view); bad != std::string_view::npos)
      fail(ErrorCode::usage, describe_non_utf8(view, bad) +
                                 "; encode binary data (as hex or base64) before storing it");
    return view;
  }

  nlohmann::json convert(int index, int depth) {
    // Every value, a table's scalars too: push_value refuses the same depth on the way back,
    // so a value one level too deep would be stored and fail every later step reading it.
    if (depth > kMaxJsonDepth)
      fail(ErrorCode::limit, "nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    index = lua_absindex(L, index);
    switch (lua_type(L, index)) {
      case LUA_TNONE:
      case LUA_TNIL:
        return nullptr;
      case LUA_TBOOLEAN:
        return static_cast<bool>(lua_toboolean(L, index));
      case LUA_TNUMBER:
        if (lua_isinteger(L, index)) return static_cast<std::int64_t>(lua_tointeger(L, index));
        {
          double number = lua_tonumber(L, index);
          if (!std::isfinite(number)) fail(ErrorCode::usage, "NaN and infinity have no JSON form");
          return number;
        }
      case LUA_TSTRING: {
        size_t length = 0;
        const char* text = lua_tolstring(L, index, &length);
        return std::string(checked_text(text, length));
      }
      case LUA_TLIGHTUSERDATA:
        if (is_json_null(L, index)) return nullptr;
        fail(ErrorCode::usage, "a userdata has no JSON form");
      case LUA_TTABLE:
        return convert_table(index, depth);
      default:
        fail(ErrorCode::usage, std::string("a ") + luaL_typename(L, index) + " has no JSON form");
    }
  }

  nlohmann::json convert_table(int index, int depth) {
    const void* table = lua_topointer(L, index);
    for (const void* open : open_tables)
      if (open == table) fail(ErrorCode::usage, "the table contains itself (a cycle)");
    check_stack(L, 4);
    open_tables.push_back(table);

    bool marked_array = false;
    if (lua_getmetatable(L, index)) {
      push_array_metatable(L);
      marked_array = lua_rawequal(L, -1, -2);
      lua_pop(L, 2);
    }
    lua_Integer length = static_cast<lua_Integer>(lua_rawlen(L, index));
    // Count keys to tell an array (exactly 1..n) from an object.
    lua_Integer count = 0;
    bool all_strings = true;
    lua_pushnil(L);
    while (lua_next(L, index)) {
      ++count;
      if (lua_type(L, -2) != LUA_TSTRING) all_strings = false;
      lua_pop(L, 1);
    }
    nlohmann::json result;
    std::size_t path_length = path.size();
    if ((count == length && (length > 0 || marked_array))) {
      result = nlohmann::json::array();
      for (lua_Integer i = 1; i <= length; ++i) {
        lua_rawgeti(L, index, i);
        path += "[" + std::to_string(i) + "]";
        result.push_back(convert(-1, depth + 1));
        path.resize(path_length);
        lua_pop(L, 1);
      }
    } else {
      if (!all_strings && length > 0)
        fail(ErrorCode::usage, "a table mixes array items and keys; JSON needs one or the other");
      result = nlohmann::json::object();
      lua_pushnil(L);
      while (lua_next(L, index)) {
        std::string key;
        if (lua_type(L, -2) == LUA_TSTRING) {
          size_t n = 0;
          const char* text = lua_tolstring(L, -2, &n);
          key.assign(checked_text(text, n));
        } else if (lua_type(L, -2) == LUA_TNUMBER && lua_isinteger(L, -2)) {
          key = std::to_string(lua_tointeger(L, -2));
        } else {
          fail(ErrorCode::usage, std::string("a ") + luaL_typename(L, -2) +
                                     " key has no JSON form (keys must be strings)");
        }
        path += (path.empty() ? "" : ".") + key;
        nlohmann::json item = convert(-1, depth + 1);
        path.resize(path_length);
        // Only an integer key and a string key can meet here ([2] and ["2"]): keeping
        // either would drop the other's value without a word.
        if (!item.is_null() && !result.emplace(key, std::move(item)).second)
          fail(ErrorCode::usage, "the keys " + key + " and \"" + key +
                                     "\" would both be the JSON key \"" + key + "\"");
        lua_pop(L, 1);
      }
    }
    open_tables.pop_back();
    return result;
  }
};

}  // namespace

void push_json_null(lua_State* L) {
  lua_pushlightuserdata(L, &kNullKey);
}

bool is_json_null(lua_State* L, int index) {
  return lua_type(L, index) == LUA_TLIGHTUSERDATA && lua_touserdata(L, index) == &kNullKey;
}

void push_array_metatable(lua_State* L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &kArrayMetatableKey) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 2);
  lua_pushliteral(L, "luagent.json.array");
  lua_setfield(L, -2, "__name");
  // Shared by every array of every run: protected, as the error metatable is.
  lua_pushliteral(L, "luagent.json.array");
  lua_setfield(L, -2, "__metatable");
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kArrayMetatableKey);
}

void push_json(lua_State* L, const nlohmann::json& value, int wrapping_levels) {
  push_value(L, value, -wrapping_levels, false);
}

nlohmann::json to_json(lua_State* L, int index, const char* what) {
  Converter converter{L, {}, what};
  return converter.convert(index, 0);
}

}  // namespace luagent::lua
