// luagent.host: the C++ tools the embedding program registered (Host::tool,
// Host::async_tool). host.call(name, args) runs one; an asynchronous tool suspends only
// the calling coroutine until the program answers its ToolReply.
#include <memory>
#include <string>

#include "lua_guard.hpp"
#include "lua_json_convert.hpp"
#include "lua_modules.hpp"
#include "lua_runtime.hpp"

namespace luagent::lua {
namespace {

std::string registered_list(const HostTools* tools) {
  std::string list;
  if (tools)
    for (const std::string& name : tools->names()) list += (list.empty() ? "" : ", ") + name;
  return list.empty() ? "none" : list;
}

// Runs on the host's thread (posted through the LoopGate): hands the answer to the run.
void deliver_answer(LuaRuntime& runtime, std::uint64_t run_id, std::uint64_t call,
                    std::optional<nlohmann::json> result, std::string error) {
  Run* run = runtime.find_run(run_id);
  // Cancelled meanwhile, or the call failed before its answer came and the run went on.
  if (!run || !run->waiting_host || run->host_calls != call) return;
  if (result)
    run->host_result = std::move(*result);
  else
    run->host_error = std::move(error);
  runtime.schedule(*run);
}

int host_call_continue(lua_State* L) {
  LuaRuntime& runtime = LuaRuntime::from(L);
  Run& run = runtime.require_run("host.call");
  run.waiting_host = false;
  std::string name(arg_string(L, 1, "host.call", "name"));
  if (run.host_error) {
    std::string message = std::move(*run.host_error);
    run.host_error.reset();
    throw Error(ErrorCode::runtime, "host tool '" + name + "' failed: " + message);
  }
  nlohmann::json result = std::move(run.host_result).value_or(nullptr);
  run.host_result.reset();
  HostCallScope scope(L);
  push_json(L, result);
  return 1;
}

// host.call(name, args): stack [name, args?].
int host_call(lua_State* L) {
  LuaRuntime& runtime = LuaRuntime::from(L);
  std::string name(arg_string(L, 1, "host.call", "name"));
  const HostTools* tools = runtime.services().tools;
  const HostTool* tool = tools ? tools->find(name) : nullptr;
  if (!tool)
    throw Error(ErrorCode::not_found, "host.call: no host tool '" + name +
                                          "' (registered: " + registered_list(tools) + ")");
  nlohmann::json args = tool->checked_args(lua_isnoneornil(L, 2) ? nlohmann::json::object()
                                                                 : to_json(L, 2, "host.call args"));
  if (tool->sync) {
    nlohmann::json result;
    try {
      result = tool->sync(args);
    } catch (const Error& e) {
      throw Error(e.code(), "host tool '" + name + "' failed: " + e.message());
    } catch (const std::exception& e) {
      throw Error(ErrorCode::runtime, "host tool '" + name + "' failed: " + e.what());
    } catch (...) {
      throw Error(ErrorCode::runtime,
                  "host tool '" + name + "' failed: it threw something not a std::exception");
    }
    if (std::string why = unrepresentable_in(result); !why.empty())
      throw Error(ErrorCode::runtime, "host tool '" + name + "' returned " + why);
    HostCallScope scope(L);
    push_json(L, result);
    return 1;
  }
  Run& run = runtime.require_run("host.call");
  runtime.require_wait(L, "host tool '" + name + "'");
  auto state = std::make_shared<ToolReply::State>();
  state->tool = name;
  std::weak_ptr<LoopGate> gate = tools->gate;
  LuaRuntime* runtime_ptr = &runtime;
  std::uint64_t run_id = run.id;
  std::uint64_t call = ++run.host_calls;
  state->deliver = [gate, runtime_ptr, run_id, call](std::optional<nlohmann::json> result,
                                                     std::string error) {
    if (auto open = gate.lock())
      open->post([runtime_ptr, run_id, call, result = std::move(result),
                  error = std::move(error)]() mutable {
        deliver_answer(*runtime_ptr, run_id, call, std::move(result), std::move(error));
      });
  };
  run.waiting_host = true;
  run.host_result.reset();
  run.host_error.reset();
  std::optional<std::string> thrown;
  try {
    tool->async(args, ToolReply(state));
  } catch (const std::exception& e) {
    thrown = e.what();
  } catch (...) {
    thrown = "it threw something not a std::exception";
  }
  if (thrown) {
    run.waiting_host = false;
    {
      std::lock_guard lock(state->mutex);
      state->answered = true;  // no late answer may resume a call that already failed
    }
    throw Error(ErrorCode::runtime, "host tool '" + name + "' failed: " + *thrown);
  }
  lua_settop(L, 1);  // the name stays for the continuation's messages
  yield_for_host(L, host_call_continue);
  return kYield;
}

// host.tool(name) -> function(args): the tool as a plain function, e.g. for
// thread:execute(call, host.tool("trade")).
int host_tool_function(lua_State* L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_settop(L, 2);
  return host_call(L);
}

int host_tool(lua_State* L) {
  std::string name(arg_string(L, 1, "host.tool", "name"));
  const HostTools* tools = LuaRuntime::from(L).services().tools;
  if (!tools || !tools->find(name))
    throw Error(ErrorCode::not_found, "host.tool: no host tool '" + name +
                                          "' (registered: " + registered_list(tools) + ")");
  lua_settop(L, 1);
  lua_pushcclosure(L, lua_entry<host_tool_function>, 1);
  return 1;
}

// host.tools() -> { name = schema }: ready to merge into llm.one_of's intents.
int host_tools(lua_State* L) {
  nlohmann::json all = nlohmann::json::object();
  if (const HostTools* tools = LuaRuntime::from(L).services().tools)
    for (const auto& [name, tool] : tools->all())
      all[name] = tool.schema.is_null() ? nlohmann::json::object() : tool.schema;
  HostCallScope scope(L);
  push_json(L, all);
  return 1;
}

}  // namespace

int luaopen_luagent_host(lua_State* L) {
  const luaL_Reg functions[] = {{"call", lua_entry<host_call>},
                                {"tool", lua_entry<host_tool>},
                                {"tools", lua_entry<host_tools>},
                                {nullptr, nullptr}};
  luaL_newlib(L, functions);
  return 1;
}

}  // namespace luagent::lua
