// libFuzzer target: the prompt template compiler (stdlib/luagent/prompt.lua), which turns
// a template an agent's author wrote into Lua code and loads it. Any template must either
// compile or fail with a luagent error table whose code is not "internal"; a compiled one,
// rendered with each of a few sets of variables, must give a string or such an error. A
// plain string error ("attempt to index a nil value") or "internal" means generated code
// that is wrong. Simple templates get a second, generated messages() function: it must
// give what splitting the rendered output gives.
//
// libFuzzer sees coverage only of instrumented C and C++, and Debian's Lua is not: a line
// hook feeds it the Lua lines run (prompt.lua's and the generated code's), each pair of
// consecutive lines as one of libFuzzer's extra counters, so that it keeps the inputs that
// reach new parts of the compiler.
//
// Input layout: byte 0 options (bit 0: strict), then the template's source.
#include <lua.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

constexpr std::size_t kLineCounters = 1 << 16;
__attribute__((section("__libfuzzer_extra_counters"))) std::uint8_t line_pairs[kLineCounters];

void count_line(lua_State* L, lua_Debug* ar) {
  static std::uint64_t previous = 0;
  if (lua_getinfo(L, "S", ar) == 0) return;
  std::uint64_t here = 1469598103934665603u;  // FNV-1a of the chunk's name, then the line
  for (const char* c = ar->source; *c; ++c)
    here = (here ^ static_cast<unsigned char>(*c)) * 1099511628211u;
  here = (here ^ static_cast<std::uint64_t>(ar->currentline)) * 1099511628211u;
  ++line_pairs[(here ^ (previous >> 1)) % kLineCounters];
  previous = here;
}

constexpr const char* kCheck = R"lua(
-- Includes read from these files (in place of the host's luagent.source).
local FILES = {
  ["part.prompt"] = "[{{ name | upper }}{% for i in items %}{{ loop.index }}{% endfor %}]",
  ["roles.prompt"] = '{{ role "assistant" }}\nhello {{ x }}\n',
  ["self.prompt"] = '{% include "self.prompt" %}',
  ["broken.prompt"] = "{% if %}",
}
package.preload["luagent.source"] = function()
  return { read = function(path)
    local text = FILES[path]
    if not text then error({ code = "not_found", message = "no file " .. path }, 0) end
    return text, 1
  end }
end
local prompt = require "luagent.prompt"
local VARS = {
  {},
  { x = 1, name = "Ada", s = "", n = 0 / 0, big = 2 ^ 63, neg = -3, flag = true, off = false,
    items = { 1, "two", { y = "z" } }, t = { a = { b = "c" }, [1] = "one" }, empty = {} },
}

-- Nil when e is an error a template may raise; otherwise what is wrong with it.
local function wrong_error(e, where)
  if type(e) ~= "table" then return where .. " raised a " .. type(e) .. ": " .. tostring(e) end
  if type(e.code) ~= "string" or e.code == "internal" then
    return where .. " raised code " .. tostring(e.code) .. ": " .. tostring(e.message)
  end
  if type(e.message) ~= "string" then return where .. " raised an error with no message" end
  return nil
end

local function same(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function show(messages)
  local out = {}
  for i, m in ipairs(messages) do out[i] = m.role .. "=" .. string.format("%q", m.content) end
  return table.concat(out, " ")
end

return function(source, strict)
  local ok, t = pcall(prompt.template, source, { strict = strict, name = "fuzz.prompt" })
  if not ok then return wrong_error(t, "compiling") end
  for _, vars in ipairs(VARS) do
    local rendered, out = pcall(t.render, t, vars)
    if rendered and type(out) ~= "string" then return "render gave a " .. type(out) end
    if not rendered then
      local wrong = wrong_error(out, "render")
      if wrong then return wrong end
    end
    local split, messages = pcall(t.messages, t, vars)
    if not split then
      local wrong = wrong_error(messages, "messages")
      if wrong then return wrong end
    elseif t.messages_fn then
      -- The same template without its generated messages(): the general path.
      local generated = t.messages_fn
      t.messages_fn = nil
      local also, expected = pcall(t.messages, t, vars)
      t.messages_fn = generated
      if not also then return "only the generated messages() rendered: " .. tostring(expected) end
      if not same(messages, expected) then
        return "generated messages() gave " .. show(messages) .. ", the rendering " .. show(expected)
      end
    end
  end
  return nil
end
)lua";

lua_State* make_state() {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, LUAGENT_STDLIB_SOURCE_DIR "/?.lua");
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  if (luaL_loadstring(L, kCheck) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    std::fprintf(stderr, "%s\n", lua_tostring(L, -1));
    std::abort();
  }
  lua_setglobal(L, "check");
  lua_sethook(L, count_line, LUA_MASKLINE, 0);
  return L;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static lua_State* const L = make_state();
  if (size < 1) return 0;
  lua_getglobal(L, "check");
  lua_pushlstring(L, reinterpret_cast<const char*>(data) + 1, size - 1);
  lua_pushboolean(L, data[0] & 1);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    std::fprintf(stderr, "check failed: %s\n", lua_tostring(L, -1));
    std::abort();
  }
  if (!lua_isnil(L, -1)) {
    std::fprintf(stderr, "template:\n%.*s\n%s\n", static_cast<int>(size - 1),
                 reinterpret_cast<const char*>(data) + 1, lua_tostring(L, -1));
    std::abort();
  }
  lua_pop(L, 1);
  lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
