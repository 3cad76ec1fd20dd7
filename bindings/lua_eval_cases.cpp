// Loads `luagent eval` case files (host/eval_cases.hpp) in the sandbox and runs their
// check functions.
#include <cstring>
#include <fstream>

#include "bounded_read.hpp"
#include "eval_cases.hpp"
#include "lua_guard.hpp"
#include "lua_json_convert.hpp"
#include "lua_runtime.hpp"

namespace luagent::lua {
namespace {

// Splits each case into plain data (JSON) and its check function.
constexpr const char* kSplitCases = R"lua(
local cases, file = ...
if type(cases) ~= "table" then
  error({ code = "usage", message = file .. " must return a list of cases, got " .. type(cases) }, 0)
end
local data, checks = {}, {}
for i, c in ipairs(cases) do
  if type(c) ~= "table" then
    error({ code = "usage", message = file .. ": case " .. i .. " is a " .. type(c) .. ", not a table" }, 0)
  end
  local copy, expect = {}, {}
  for k, v in pairs(c) do if k ~= "expect" then copy[k] = v end end
  if c.expect ~= nil and type(c.expect) ~= "table" then
    error({ code = "usage", message = file .. ": case " .. i .. ": expect must be a table" }, 0)
  end
  for k, v in pairs(c.expect or {}) do
    if k == "check" then
      if type(v) ~= "function" then
        error({ code = "usage", message = file .. ": case " .. i .. ": expect.check must be a function" }, 0)
      end
      checks[i] = v
    else
      expect[k] = v
    end
  end
  copy.expect = expect
  data[i] = copy
end
return data, checks
)lua";

class LuaEvalCaseFile final : public EvalCaseFile {
 public:
  LuaEvalCaseFile(LuaRuntime& runtime, std::vector<EvalCase> cases, int checks_ref)
      : runtime_(runtime), cases_(std::move(cases)), checks_ref_(checks_ref) {}
  ~LuaEvalCaseFile() override { luaL_unref(runtime_.state(), LUA_REGISTRYINDEX, checks_ref_); }
  const std::vector<EvalCase>& cases() const override { return cases_; }

  std::optional<std::string> check(std::size_t index, const nlohmann::json& step) override {
    lua_State* L = runtime_.state();
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, checks_ref_);
    if (lua_rawgeti(L, -1, static_cast<lua_Integer>(index + 1)) != LUA_TFUNCTION) {
      lua_settop(L, top);
      return std::nullopt;
    }
    {
      HostCallScope scope(L);
      push_json(L, step);
    }
    std::optional<std::string> failure;
    // Under the CPU limit, as agent code is: an endless check would hang eval for good.
    if (runtime_.pcall_limited(1, 2, 0) != LUA_OK) {
      failure = "check raised: " + std::string(error_from_lua(L, -1).what());
    } else if (!lua_toboolean(L, -2)) {
      const char* why = lua_tostring(L, -1);
      failure = why ? std::string("check: ") + why : "check returned false";
    }
    lua_settop(L, top);
    return failure;
  }

 private:
  LuaRuntime& runtime_;
  std::vector<EvalCase> cases_;
  int checks_ref_;
};

}  // namespace
}  // namespace luagent::lua

namespace luagent {

std::unique_ptr<EvalCaseFile> load_eval_cases(AgentRuntime& runtime,
                                              const std::filesystem::path& file) {
  auto& lua_runtime = dynamic_cast<lua::LuaRuntime&>(runtime);
  lua_State* L = lua_runtime.state();
  // A folder opens and then throws from inside the stream ("internal error"); an endless
  // file (/dev/zero) would be read until memory ran out.
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec))
    throw Error(ErrorCode::usage,
                "the case file " + file.string() + " is a folder; give the Lua file of cases");
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorCode::not_found, "cannot read the case file " + file.string());
  std::string source;
  if (!read_at_most(in, lua::kMaxSourceBytes, source))
    throw Error(ErrorCode::usage, "the case file " + file.string() + " is larger than " +
                                      std::to_string(lua::kMaxSourceBytes / (1024 * 1024)) +
                                      " MiB");
  int top = lua_gettop(L);
  std::string chunkname = "@" + file.filename().string();
  if (luaL_loadbufferx(L, source.data(), source.size(), chunkname.c_str(), "t") != LUA_OK) {
    Error error = lua::error_from_lua(L, -1);
    lua_settop(L, top);
    throw Error(ErrorCode::syntax, error.message(), error.source(), error.line());
  }
  lua_runtime.push_sandbox_environment();
  lua_setupvalue(L, -2, 1);
  if (lua_runtime.pcall_limited(0, 1, 0) != LUA_OK) {
    Error error = lua::error_from_lua(L, -1);
    lua_settop(L, top);
    throw Error(ErrorCode::usage, "loading " + file.filename().string() + ": " + error.message(),
                error.source(), error.line());
  }
  luaL_loadbufferx(L, lua::kSplitCases, std::strlen(lua::kSplitCases), "=eval.cases", "t");
  lua_insert(L, -2);
  lua_pushstring(L, file.filename().c_str());
  if (lua_pcall(L, 2, 2, 0) != LUA_OK) {
    Error error = lua::error_from_lua(L, -1);
    lua_settop(L, top);
    throw error;
  }
  int checks_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  nlohmann::json data;
  try {
    lua::HostCallScope scope(L);
    data = lua::to_json(L, -1, "cases");
  } catch (const Error& e) {
    lua_settop(L, top);
    luaL_unref(L, LUA_REGISTRYINDEX, checks_ref);
    throw Error(ErrorCode::usage, file.filename().string() + ": " + e.message());
  }
  lua_settop(L, top);
  std::vector<EvalCase> cases;
  if (!data.is_array() || data.empty())
    throw Error(ErrorCode::usage, file.filename().string() + " has no cases");
  {
    for (std::size_t i = 0; i < data.size(); ++i) {
      const auto& item = data[i];
      EvalCase c;
      c.name = item.value("name", "case " + std::to_string(i + 1));
      c.agent = item.value("agent", "");
      c.input = item.value("input", nlohmann::json());
      c.expect = item.value("expect", nlohmann::json::object());
      if (c.expect.is_array() && c.expect.empty()) c.expect = nlohmann::json::object();
      if (c.agent.empty())
        throw Error(ErrorCode::usage,
                    file.filename().string() + ": case '" + c.name + "' needs agent = \"folder\"");
      if (!c.input.is_string() && !c.input.is_array())
        throw Error(ErrorCode::usage, file.filename().string() + ": case '" + c.name +
                                          "' needs input = \"message\" or a list of events");
      cases.push_back(std::move(c));
    }
  }
  auto result = std::make_unique<lua::LuaEvalCaseFile>(lua_runtime, std::move(cases), checks_ref);
  // Which cases carry a check: ask the table once.
  lua_rawgeti(L, LUA_REGISTRYINDEX, checks_ref);
  auto& loaded = const_cast<std::vector<EvalCase>&>(result->cases());
  for (std::size_t i = 0; i < loaded.size(); ++i) {
    loaded[i].has_check = lua_rawgeti(L, -1, static_cast<lua_Integer>(i + 1)) == LUA_TFUNCTION;
    lua_pop(L, 1);
  }
  lua_settop(L, top);
  return result;
}

}  // namespace luagent
