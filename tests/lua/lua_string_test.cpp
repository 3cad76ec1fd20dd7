// The sandbox's string.find/match/gmatch/gsub against Lua 5.4's own, case by case: a plain
// lua_State with luaL_openlibs is the oracle, a second one with install_string_patterns is
// ours, and every case must give the same values or the same error message.
#define BOOST_TEST_MODULE lua_string
#include <boost/test/unit_test.hpp>

#include <lua.hpp>

#include <string>

#include "bindings/lua_string.hpp"
#include "luagent/error.hpp"

namespace {

// Renders what a call returned or raised, one "type:value" per result, so two states'
// outcomes compare as strings. Error tables show their code and message.
constexpr const char* kHelpers = R"lua(
local function render(ok, ...)
  local out = { ok and "ok" or "error" }
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "table" then
      v = "table" .. (v.code and (":" .. tostring(v.code) .. ":" .. tostring(v.message)) or "")
    else
      v = type(v) .. ":" .. tostring(v)
    end
    out[#out + 1] = v
  end
  return table.concat(out, "|")
end
function check(f) return render(pcall(f)) end
-- Every iteration of a gmatch, at most 100 of them.
function collect(iterator)
  local out = {}
  for _ = 1, 100 do
    local r = table.pack(iterator())
    if r[1] == nil then break end
    for i = 1, r.n do out[#out + 1] = type(r[i]) .. ":" .. tostring(r[i]) end
    out[#out + 1] = ";"
  end
  return table.concat(out, ",")
end
)lua";

int probes_left = 0;

// Our probe in these tests: a work budget instead of a clock.
void budget_probe(lua_State*) {
  if (--probes_left < 0) throw luagent::Error(luagent::ErrorCode::limit, "budget spent");
}

struct LuaState {
  lua_State* L = luaL_newstate();
  explicit LuaState(bool ours) {
    luaL_openlibs(L);
    if (ours) luagent::lua::install_string_patterns(L, budget_probe, 1024);
    BOOST_REQUIRE(luaL_dostring(L, kHelpers) == LUA_OK);
  }
  ~LuaState() { lua_close(L); }

  std::string run(const std::string& expression) {
    probes_left = 1000;
    std::string chunk = "return check(function() return " + expression + "\nend)";
    if (luaL_loadbuffer(L, chunk.data(), chunk.size(), "=case") != LUA_OK)
      return std::string("load: ") + lua_tostring(L, -1);
    if (lua_pcall(L, 0, 1, 0) != LUA_OK) return std::string("raise: ") + lua_tostring(L, -1);
    std::string out = lua_tostring(L, -1);
    lua_pop(L, 1);
    return out;
  }
};

const char* const kCases[] = {
    // find: plain, patterns, init
    R"~(string.find("hello world", "o w"))~",
    R"~(string.find("hello world", "o", 6))~",
    R"~(string.find("hello", "l", -2))~",
    R"~(string.find("hello", "l", -100))~",
    R"~(string.find("hello", "l", 0))~",
    R"~(string.find("hello", "", 6))~",
    R"~(string.find("hello", "", 7))~",
    R"~(string.find("hello", "", 100))~",
    R"~(string.find("", ""))~",
    R"~(string.find("a.b", ".", 1, true))~",
    R"~(string.find("a.b", "%.", 1))~",
    R"~(string.find("a+b", "+", 1, true))~",
    R"~(string.find("a)b", "a)"))~",
    R"~(string.find("a\0b", "\0b"))~",
    R"~(string.find("a\0b", "%z"))~",
    R"~(string.find("a\0b", "[%z]"))~",
    R"~(string.find("abc", "%Z+"))~",
    R"~(string.find("hello", "(l)(l)"))~",
    R"~(string.find("hello", "()ll()"))~",
    R"~(string.find("hello", "^h"))~",
    R"~(string.find("hello", "^e"))~",
    R"~(string.find("hello", "^e", 2))~",
    R"~(string.find("hello", "o$"))~",
    R"~(string.find("hello", "l$"))~",
    R"~(string.find("a$b", "$b"))~",
    R"~(string.find("a^b", "a^b"))~",
    R"~(string.find("a^b", "^^"))~",
    R"~(string.find(("x"):rep(1000) .. "y", "x*y"))~",
    R"~(string.find(12345, 34))~",
    R"~(string.find("abc", "b", "2"))~",
    // classes, C locale
    R"~(string.find("ab12 \t;X\127\200", "%d+"))~",
    R"~(string.match("ab12 \t;X\127\200", "%s+"))~",
    R"~(string.match("\1ab12 ;X", "%c"))~",
    R"~(string.match("ab12 ;X", "%p"))~",
    R"~(string.match("ab12 ;X", "%u"))~",
    R"~(string.match("ab12 ;X", "%l+"))~",
    R"~(string.match("ab12 ;X", "%w+"))~",
    R"~(string.match("zzfF9g", "%x+"))~",
    R"~(string.match(" \t\200é;x", "%g+"))~",
    R"~(string.match("abc123", "%A+"))~",
    R"~(string.match("abc 123", "%S+%s%D*(%d)"))~",
    R"~(string.match("a;b", "%W"))~",
    R"~(string.match("aB", "%L"))~",
    R"~(string.match("aB", "%U"))~",
    R"~(string.match("aB\1", "%C+"))~",
    R"~(string.match("a;b", "%P+"))~",
    R"~(string.match("fg", "%X"))~",
    R"~(string.match("\200\255", "%a"))~",
    R"~(string.match("a%b", "%%"))~",
    R"~(string.match("a]b", "%]"))~",
    R"~(string.match("a.b", "%.b"))~",
    // sets
    R"~(string.match("hello", "[aeiou]+"))~",
    R"~(string.match("hello", "[^aeiou]+"))~",
    R"~(string.match("x-y", "[a-]+"))~",
    R"~(string.match("]x", "[]x]+"))~",
    R"~(string.match("]x^", "[^]x]"))~",
    R"~(string.match("a^b", "[b^]+"))~",
    R"~(string.match("A1b2", "[%d%u]+"))~",
    R"~(string.match("a-z", "[%a-z]+"))~",
    R"~(string.match("\200\201a", "[\128-\255]+"))~",
    R"~(string.match("abc", "[c-a]"))~",
    R"~(string.match("a%]", "[%%%]]+"))~",
    R"~(string.match("-", "[-]"))~",
    R"~(string.match("b", "[a-c-e]"))~",
    R"~(string.match("d", "[a-c-e]"))~",
    R"~(string.match("-", "[a-c-e]"))~",
    // quantifiers
    R"~(string.match("aaab", "a*"))~",
    R"~(string.match("aaab", "a-b"))~",
    R"~(string.match("aaab", "a+"))~",
    R"~(string.match("b", "a+"))~",
    R"~(string.match("aaab", "a?a?a?a?b"))~",
    R"~(string.match("<a><b>", "<(.-)>"))~",
    R"~(string.match("<a><b>", "<(.*)>"))~",
    R"~(string.match("  x  ", "^%s*(.-)%s*$"))~",
    R"~(string.match("key = value", "(%w+)%s*=%s*(%w+)"))~",
    R"~(string.match("aaa", "a-$"))~",
    R"~(string.match("ab", ".-"))~",
    R"~(string.match("abc", "a*?"))~",
    R"~(string.match("a*", "a*%*"))~",
    // captures, positions, back-references
    R"~(string.match("hello", "()"))~",
    R"~(string.match("hello", "(h)(e)(l)(l)(o)"))~",
    R"~(string.match("hello", "((h)(e))"))~",
    R"~(string.match("abcabc", "(abc)%1"))~",
    R"~(string.match("xyzxyz", "(.)(.)(.)%1%2%3"))~",
    R"~(string.match("aa", "()a%1"))~",
    R"~(string.match([["quoted" and 'single']], "([\"'])(.-)%1"))~",
    R"~(string.match("abab", "((a)b)%2"))~",
    // %b and %f
    R"~(string.match("f(a(b)c)d", "%b()"))~",
    R"~(string.match("f(a(b c)d", "%b()"))~",
    R"~(string.match("[[x]]", "%b[]"))~",
    R"~(string.match("aXbXc", "%bXX"))~",
    R"~(string.find("THE (quick) fox", "%f[%a]%a+"))~",
    R"~(string.find("THE (quick) fox", "%f[%a]%a+", 5))~",
    R"~(string.match("hello world", "%f[%w]%w+$"))~",
    R"~(string.find("abc", "%f[%z]"))~",
    R"~(string.find("abc", "%f[^%z]"))~",
    R"~(string.find("a b", "%f[%s]"))~",
    // match: init, no captures
    R"~(string.match("hello", "l+", 4))~",
    R"~(string.match("hello", "l+", 10))~",
    R"~(string.match("hello", ".", -1))~",
    R"~(string.match("hello", "^(h)"))~",
    // gmatch
    R"~(collect(string.gmatch("one two  three", "%a+")))~",
    R"~(collect(string.gmatch("k1=v1, k2=v2", "(%w+)=(%w+)")))~",
    R"~(collect(string.gmatch("abc", "")))~",
    R"~(collect(string.gmatch("abc", ".-")))~",
    R"~(collect(string.gmatch("abc", "()")))~",
    R"~(collect(string.gmatch("a,b,,c", "([^,]*)")))~",
    R"~(collect(string.gmatch("^a^b", "^.")))~",
    R"~(collect(string.gmatch("hello world", "%a+", 3)))~",
    R"~(collect(string.gmatch("hello world", "%a+", -5)))~",
    R"~(collect(string.gmatch("hello", ".", 10)))~",
    R"~(collect(string.gmatch("hello", ".", 6)))~",
    R"~(collect(string.gmatch("hello", "", 6)))~",
    R"~(collect(string.gmatch("abc", "%")))~",
    R"~(collect(string.gmatch("line1\nline2\n", "(.-)\n")))~",
    // gsub: string replacement
    R"~(string.gsub("hello world", "o", "0"))~",
    R"~(string.gsub("hello world", "(o)", "[%1]"))~",
    R"~(string.gsub("hello world", "o", "%0%0"))~",
    R"~(string.gsub("hello", "", "-"))~",
    R"~(string.gsub("abc", ".-", "-"))~",
    R"~(string.gsub("abc", "%w*", "-"))~",
    R"~(string.gsub("hello world", "%w+", "%0 %0", 1))~",
    R"~(string.gsub("hello world", "%w+", "x", 0))~",
    R"~(string.gsub("hello world", "%w+", "x", -1))~",
    R"~(string.gsub("hello", "^h", "H"))~",
    R"~(string.gsub("hhh", "^h", "H"))~",
    R"~(string.gsub("hello", "^x", "H"))~",
    R"~(string.gsub("hello", "^", ">"))~",
    R"~(string.gsub("hello", "$", "<"))~",
    R"~(string.gsub("hello", "l", "%%"))~",
    R"~(string.gsub("hello", "()l", "%1"))~",
    R"~(string.gsub("hello", "l", 5))~",
    R"~(string.gsub("hello", "l", 2.5))~",
    R"~(string.gsub("hello", "x", "y"))~",
    R"~(string.gsub("abc", "(a)(b)(c)", "%3%2%1"))~",
    R"~(string.gsub("abc", "b", "%1"))~",
    R"~(string.gsub("", "", "x"))~",
    R"~(string.gsub("a b", "(%w)", "%1%1", 1.0))~",
    // gsub: table and function replacement
    R"~(string.gsub("$name is $age", "%$(%w+)", {name = "Ann", age = 7}))~",
    R"~(string.gsub("$name $x", "%$(%w+)", {name = false}))~",
    R"~(string.gsub("abc", "%w", {a = 1, b = true}))~",
    R"~(string.gsub("abc", "%w", setmetatable({}, {__index = function(_, k) return k:upper() end})))~",
    R"~(string.gsub("abc", "%w", function(c) return c:byte() end))~",
    R"~(string.gsub("abc", "%w", function(c) if c == "b" then return nil end return "" end))~",
    R"~(string.gsub("a=1, b=2", "(%w+)=(%w+)", function(k, v) return v .. "=" .. k end))~",
    R"~(string.gsub("abc", "()", function(p) return p end))~",
    R"~(string.gsub("abc", "b", function() return {} end))~",
    R"~(string.gsub("abc", "b", {b = {}}))~",
    R"~(string.gsub("abc", "b", function() error("inner") end))~",
    R"~(string.gsub("abc", "b", function() error({code = "mine"}) end))~",
    R"~((function() local t = {} local ok, e = pcall(string.gsub, "a", "a", function() error(t) end) return ok, e == t end)())~",
    R"~(coroutine.wrap(function() return string.gsub("a", "a", function() coroutine.yield(1) end) end)())~",
    R"~(string.gsub("abc", "b", function(...) return select("#", ...) end))~",
    // method calls
    R"~(("hello"):find("l"))~",
    R"~(("hello"):match("(h)(e)"))~",
    R"~(("hello"):gsub("l", "L"))~",
    R"~(collect(("a b"):gmatch("%a")))~",
    // argument errors
    R"~(string.find())~",
    R"~(string.find("a"))~",
    R"~(string.find({}, "a"))~",
    R"~(string.find("a", "a", "x"))~",
    R"~(string.find("a", "a", 1.5))~",
    R"~(("a"):find({}))~",
    R"~(string.match(nil, "a"))~",
    R"~(string.gmatch("a"))~",
    R"~(string.gmatch("a", "a", {}))~",
    R"~(string.gsub("a", "a"))~",
    R"~(string.gsub("a", "a", true))~",
    R"~(string.gsub("a", "a", "x", "y"))~",
    R"~(string.gsub("a", "a", nil, "y"))~",
    R"~(("a"):gsub("a"))~",
    R"~(pcall(string.find, nil, "a"))~",
    // pattern errors, raised where Lua raises them and only then
    R"~(string.find("abc", "a%"))~",
    R"~(string.find("xbc", "a%"))~",
    R"~(string.match("abc", "%"))~",
    R"~(string.match("abc", "[a"))~",
    R"~(string.match("abc", "[a%"))~",
    R"~(string.match("abc", "[%"))~",
    R"~(string.match("abc", "[^"))~",
    R"~(string.match("abc", "[]"))~",
    R"~(string.match("abc", "[^]"))~",
    R"~(string.match("abc", "x[a"))~",
    R"~(string.match("abc", "%f"))~",
    R"~(string.match("abc", "%fa"))~",
    R"~(string.match("abc", "%f[a"))~",
    R"~(string.match("abc", "%b"))~",
    R"~(string.match("abc", "%ba"))~",
    R"~(string.match("abc", "x%b"))~",
    R"~(string.match("abc", "%1"))~",
    R"~(string.match("abc", "%0"))~",
    R"~(string.match("abc", "(a)%2"))~",
    R"~(string.match("abc", "(a%1)"))~",
    R"~(string.match("abc", "()%1"))~",
    R"~(string.match("abc", "a)"))~",
    R"~(string.match("abc", "x)"))~",
    R"~(string.match("abc", "(a"))~",
    R"~(string.find("abc", "(a"))~",
    R"~(string.match("abc", "(x"))~",
    R"~(string.match("abc", "(a)(b"))~",
    R"~(collect(string.gmatch("abc", "(a")))~",
    R"~(string.gsub("abc", "(a", "x"))~",
    R"~(string.gsub("abc", "(a", function() return "x" end))~",
    R"~(string.gsub("abc", "a", "%2"))~",
    R"~(string.gsub("abc", "(a)", "%2"))~",
    R"~(string.gsub("abc", "a", "%"))~",
    R"~(string.gsub("abc", "a", "%x"))~",
    R"~(string.gsub("abc", "x", "%x"))~",
    R"~(string.gsub("abc", "(a", {}))~",
    R"~(string.match("a", ("()"):rep(32)))~",
    R"~(string.match("a", ("()"):rep(33)))~",
    R"~(string.match("a", ("(a?)"):rep(33)))~",
    R"~(string.match(("a"):rep(300), ("a?"):rep(198)))~",
    R"~(string.match(("a"):rep(300), ("a?"):rep(199)))~",
    R"~(string.match(("a"):rep(300), ("a?"):rep(200)))~",
    R"~(string.match(("a"):rep(300), ("a?"):rep(300)))~",
    R"~(string.match(("a"):rep(300), ("a*"):rep(199)))~",
    R"~(string.match(("a"):rep(300), ("a*"):rep(200)))~",
    R"~(string.match(("a"):rep(300), ("a-"):rep(199)))~",
    R"~(string.match(("a"):rep(300), ("a-"):rep(200)))~",
    R"~(string.match(("a"):rep(300), ("b?"):rep(300)))~",
    R"~(string.match(("a"):rep(300), ("a"):rep(300)))~",
    R"~(string.match(("a"):rep(50), ("(a)"):rep(20)))~",
    R"~(string.match(("a"):rep(50), ("()"):rep(30) .. ("a?"):rep(150)))~",
};

}  // namespace

BOOST_AUTO_TEST_CASE(every_case_gives_lua_s_own_results_and_errors) {
  LuaState oracle(false);
  LuaState ours(true);
  for (const char* expression : kCases) {
    const std::string expected = oracle.run(expression);
    BOOST_TEST(ours.run(expression) == expected, expression);
    if (std::getenv("SHOW_CASES")) BOOST_TEST_MESSAGE(expression << "  =>  " << expected);
  }
}

// A differential test of two copies of one implementation would pass whatever it does:
// make sure the second state really runs ours (it gives up where Lua's would not).
BOOST_AUTO_TEST_CASE(ours_is_the_one_installed_and_it_stops_a_runaway_match) {
  LuaState ours(true);
  BOOST_TEST(ours.run(R"~(string.find(string.rep("a", 200), ".-.-.-.-x"))~") ==
             "error|table:limit:budget spent");
  BOOST_TEST(ours.run(R"~(("a"):rep(200):match(".-.-.-.-x"))~") ==
             "error|table:limit:budget spent");
  BOOST_TEST(ours.run(R"~(collect(("a"):rep(200):gmatch(".-.-.-.-x")))~") ==
             "error|table:limit:budget spent");
  BOOST_TEST(ours.run(R"~(("a"):rep(200):gsub(".-.-.-.-x", ""))~") ==
             "error|table:limit:budget spent");
  // A loop of short matches spends the same budget.
  BOOST_TEST(ours.run(R"~((function() local s = ("a"):rep(100)
      for _ = 1, 1e6 do s:find(".-.-b") end end)())~") == "error|table:limit:budget spent");
}

// Plain find is linear in the subject: the needle that makes a naive search O(n*m).
BOOST_AUTO_TEST_CASE(plain_find_is_linear) {
  LuaState ours(true);
  BOOST_TEST(ours.run(R"~(("a"):rep(1e6):find(("a"):rep(5e5) .. "b", 1, true))~") == "ok|nil:nil");
  BOOST_TEST(ours.run(R"~(("a"):rep(1e6):find(("a"):rep(5e5), 1, true))~") ==
             "ok|number:1|number:500000");
}
