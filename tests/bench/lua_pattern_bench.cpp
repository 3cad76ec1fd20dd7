// Our string.find/match/gmatch/gsub against Lua's own on the patterns the stdlib uses
// (context.lua's YAML and header checks, prompt.lua's lexer and trims). Prints the time per
// round for each; for figures that do not depend on the machine's load, run each side under
// callgrind: `valgrind --tool=callgrind build/tests/lua_pattern_bench lua 2000` and `ours`.
#include <lua.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bindings/lua_string.hpp"
#include "support/bench_arguments.hpp"

namespace {

constexpr const char* kRound = R"lua(
local find, match, gsub, gmatch = string.find, string.match, string.gsub, string.gmatch
local words = { "plain", "with space", " leading", "trailing ", "key: value", "#comment",
  "-dash", "12.5", "multi\nline", "tab\there", "quote'd", "a_longer_identifier_like_this" }
local body = ("The quick brown fox jumps over the lazy dog.\n"):rep(20)
local template = "Hello {{ name }}, you have {{ count }} new {% if many %}messages{% end %}."
return function()
  local hits = 0
  for _, s in ipairs(words) do
    if s == "" or find(s, "^%s") or find(s, "%s$") or find(s, "%c")
        or find(s, "^[%-%?:,%[%]{}#&%*!|>'\"%%@`]") or find(s, ":%s") or find(s, ":$")
        or find(s, "%s#") or find(s, "^[%+%-]?%.?%d") then
      hits = hits + 1
    end
    if find(s, "^[^ \t\n\r][^\n\r]*$") then hits = hits + 1 end
    if find(s, "\n", 1, true) then hits = hits + 1 end
    hits = hits + #(match(s, "^%s*(.-)%s*$"))
    hits = hits + #(gsub(s, '[%c"\\]', function(c) return "\\" .. c:byte() end))
  end
  for line in (body .. "\n"):gmatch("(.-)\n") do hits = hits + #line end
  local pos = 1
  while true do
    local s = find(template, "{[{%%#]", pos)
    if not s then break end
    hits = hits + s
    pos = s + 2
  end
  for word in gmatch(template, "[%w_]+") do hits = hits + #word end
  hits = hits + select(2, gsub(body, "%s+$", ""))
  hits = hits + (find(body, "lazy dog", 1, true) or 0)
  return hits
end
)lua";

void no_probe(lua_State*) {}

}  // namespace

int main(int argc, char** argv) {
  luagent::test::BenchArguments args(
      argc, argv,
      {luagent::test::BenchArgument::word("patterns", {"lua", "ours"}),
       luagent::test::BenchArgument::integer("rounds", 20000, 1, 100'000'000)});
  const bool ours = args.word("patterns") == "ours";
  const int rounds = static_cast<int>(args.integer("rounds"));
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  if (ours) luagent::lua::install_string_patterns(L, no_probe);
  if (luaL_loadstring(L, kRound) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    std::fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return 1;
  }
  long long checksum = 0;
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < rounds; ++i) {
    lua_pushvalue(L, -1);
    if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
      std::fprintf(stderr, "%s\n", lua_tostring(L, -1));
      return 1;
    }
    checksum += lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  const double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - started).count();
  std::printf("%s: %d rounds, %.2f us per round (checksum %lld)\n", ours ? "ours" : "lua", rounds,
              us / rounds, checksum);
  lua_close(L);
  return 0;
}
