// libFuzzer target: the sandbox's string.find/match/gmatch/gsub against Lua 5.4's own. The
// input is split into a subject (<= 255 bytes), a pattern (<= 64) and a replacement; both
// states run all four functions and must give the same values or the same error message.
// Ours runs on a work budget: when it gives up (limit), Lua's own may take hours on the
// same input, so that input is not compared.
//
// Input layout: byte 0 options (bits 0-2: init - 3 (from -3 to 4), bit 3: plain, bits 4-5:
// replacement kind: string, function, table, string with init as max n), byte 1 subject
// length, byte 2 pattern length (mod 65), then the subject, the pattern, the replacement.
#include <lua.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bindings/lua_string.hpp"
#include "luagent/error.hpp"

namespace {

constexpr const char* kRunAll = R"lua(
local function render(ok, ...)
  local out = { ok and "ok" or "error" }
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "table" then v = "table:" .. tostring(v.code) else v = type(v) .. ":" .. tostring(v) end
    out[#out + 1] = v
  end
  return table.concat(out, "|")
end
local function all_matches(s, p, init)
  local out = {}
  for a, b in string.gmatch(s, p, init) do
    out[#out + 1] = tostring(a) .. "," .. tostring(b)
    if #out > 300 then break end
  end
  return table.concat(out, ";")
end
local by_kind = {
  [1] = function(...) return select("#", ...) .. tostring((...)) end,
  [2] = setmetatable({}, { __index = function(_, k)
    if #tostring(k) % 3 == 0 then return false end
    return tostring(k) .. "!"
  end }),
}
return function(s, p, r, init, plain, kind)
  return table.concat({
    render(pcall(string.find, s, p, init, plain)),
    render(pcall(string.match, s, p, init)),
    render(pcall(all_matches, s, p, init)),
    render(pcall(string.gsub, s, p, by_kind[kind] or r, kind == 3 and init or nil)),
  }, "\n")
end
)lua";

int probes_left = 0;

void budget_probe(lua_State*) {
  if (--probes_left < 0) throw luagent::Error(luagent::ErrorCode::limit, "budget spent");
}

lua_State* make_state(bool ours) {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  if (ours) luagent::lua::install_string_patterns(L, budget_probe, 4096);
  if (luaL_loadstring(L, kRunAll) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    std::fprintf(stderr, "%s\n", lua_tostring(L, -1));
    std::abort();
  }
  lua_setglobal(L, "run_all");
  return L;
}

std::string run(lua_State* L, const std::string& subject, const std::string& pattern,
                const std::string& replacement, int init, bool plain, int kind) {
  lua_getglobal(L, "run_all");
  lua_pushlstring(L, subject.data(), subject.size());
  lua_pushlstring(L, pattern.data(), pattern.size());
  lua_pushlstring(L, replacement.data(), replacement.size());
  lua_pushinteger(L, init);
  lua_pushboolean(L, plain);
  lua_pushinteger(L, kind);
  if (lua_pcall(L, 6, 1, 0) != LUA_OK) {
    std::fprintf(stderr, "run_all failed: %s\n", lua_tostring(L, -1));
    std::abort();
  }
  std::string out = lua_tostring(L, -1);
  lua_pop(L, 1);
  lua_gc(L, LUA_GCCOLLECT);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static lua_State* const oracle = make_state(false);
  static lua_State* const ours = make_state(true);
  if (size < 3) return 0;
  const int init = (data[0] & 7) - 3;
  const bool plain = (data[0] & 8) != 0;
  const int kind = (data[0] >> 4) & 3;
  const char* bytes = reinterpret_cast<const char*>(data) + 3;
  std::size_t left = size - 3;
  const std::size_t subject_size = std::min<std::size_t>(data[1], left);
  std::string subject(bytes, subject_size);
  bytes += subject_size;
  left -= subject_size;
  const std::size_t pattern_size = std::min<std::size_t>(data[2] % 65, left);
  std::string pattern(bytes, pattern_size);
  bytes += pattern_size;
  left -= pattern_size;
  std::string replacement(bytes, std::min<std::size_t>(left, 32));

  probes_left = 256;
  const std::string mine = run(ours, subject, pattern, replacement, init, plain, kind);
  if (mine.find("table:limit") != std::string::npos) return 0;
  const std::string expected = run(oracle, subject, pattern, replacement, init, plain, kind);
  if (mine != expected) {
    std::fprintf(stderr, "pattern %s\nours:\n%s\nLua's:\n%s\n", pattern.c_str(), mine.c_str(),
                 expected.c_str());
    std::abort();
  }
  return 0;
}
