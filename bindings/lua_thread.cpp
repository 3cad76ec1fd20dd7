// The `thread` object an agent function receives (factor 5, 6, 7, 12):
// thread.id, thread.agent, thread:events(), thread:last([type]), thread:push(type, data),
// thread:await(kind, payload), thread:resumed(), thread:execute(call, fn), thread:status().
// Every push is a durable, compare-and-swap append before the call returns.
#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "failpoint.hpp"
#include "lua_guard.hpp"
#include "lua_json_convert.hpp"
#include "lua_modules.hpp"
#include "lua_runtime.hpp"
#include "utf8_text.hpp"

namespace luagent::lua {
namespace {

char kThreadMetatableKey;

struct ThreadHandle {
  std::uint64_t run_id;
};

Run& checked_run(lua_State* L, const char* function) {
  auto* handle = static_cast<ThreadHandle*>(luaL_testudata(L, 1, "luagent.thread"));
  if (!handle)
    throw Error(ErrorCode::usage, std::string(function) +
                                      ": call it as a method, thread:" + (function + 7) + "(...)");
  Run* run = LuaRuntime::from(L).current_run();
  if (!run || run->id != handle->run_id)
    throw Error(ErrorCode::usage,
                std::string(function) + ": this thread object belongs to a step that has ended");
  return *run;
}

void push_event(lua_State* L, const Event& event) {
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, event.id);
  lua_setfield(L, -2, "id");
  lua_pushlstring(L, event.type.data(), event.type.size());
  lua_setfield(L, -2, "type");
  push_json(L, event.data);
  lua_setfield(L, -2, "data");
  std::string at = format_utc(event.at_ms);
  lua_pushlstring(L, at.data(), at.size());
  lua_setfield(L, -2, "at");
  if (!event.version.empty()) {
    lua_pushlstring(L, event.version.data(), event.version.size());
    lua_setfield(L, -2, "version");
  }
}

// Remembers that the Lua table at `index` is the data of event `id`, so that
// thread:execute(step, fn) and thread:await(kind, step) can name the call.
void remember_call(lua_State* L, Run& run, int index, std::int64_t id) {
  if (lua_type(L, index) != LUA_TTABLE) return;
  index = lua_absindex(L, index);
  lua_rawgeti(L, LUA_REGISTRYINDEX, run.calls_ref);
  lua_pushvalue(L, index);
  lua_pushinteger(L, id);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

std::int64_t recall_call(lua_State* L, Run& run, int index) {
  if (lua_type(L, index) != LUA_TTABLE) return 0;
  index = lua_absindex(L, index);
  lua_rawgeti(L, LUA_REGISTRYINDEX, run.calls_ref);
  lua_pushvalue(L, index);
  lua_rawget(L, -2);
  std::int64_t id = lua_tointeger(L, -1);
  lua_pop(L, 2);
  return id;
}

int thread_index(lua_State* L) {
  auto* handle = static_cast<ThreadHandle*>(luaL_testudata(L, 1, "luagent.thread"));
  std::string_view key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
  if (handle && (key == "id" || key == "agent")) {
    Run& run = checked_run(L, "thread.id");
    const std::string& value = key == "id" ? run.thread.id : run.agent.name;
    lua_pushlstring(L, value.data(), value.size());
    return 1;
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kThreadMetatableKey);
  lua_getfield(L, -1, "methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

int thread_events(lua_State* L) {
  Run& run = checked_run(L, "thread:events");
  HostCallScope scope(L);
  const auto& events = run.thread.events;
  lua_createtable(L, static_cast<int>(events.size()), 0);
  for (std::size_t i = 0; i < events.size(); ++i) {
    push_event(L, events[i]);
    lua_rawseti(L, -2, static_cast<lua_Integer>(i + 1));
  }
  return 1;
}

int thread_last(lua_State* L) {
  Run& run = checked_run(L, "thread:last");
  std::string_view type = opt_string(L, 2, "thread:last", "type", "");
  HostCallScope scope(L);
  const auto& events = run.thread.events;
  for (auto it = events.rbegin(); it != events.rend(); ++it) {
    if (type.empty() || it->type == type) {
      push_event(L, *it);
      return 1;
    }
  }
  lua_pushnil(L);
  return 1;
}

int thread_status(lua_State* L) {
  Run& run = checked_run(L, "thread:status");
  std::string_view name = status_name(run.thread.status());
  lua_pushlstring(L, name.data(), name.size());
  return 1;
}

void refuse_after_await(Run& run, const char* function) {
  if (run.awaiting)
    throw Error(ErrorCode::usage, std::string(function) +
                                      ": the thread is waiting (thread:await was called); end "
                                      "the step with `return thread:await(...)`");
}

// The event types whose meaning the host relies on (status, exactly once): a pushed one
// would forge a tool's start or result, or end the thread behind the host's back.
void refuse_host_event_type(const std::string& type) {
  static constexpr std::pair<std::string_view, std::string_view> kHostTypes[] = {
      {event_type::await, "return thread:await(kind, payload)"},
      {event_type::tool_started, "thread:execute(call, fn)"},
      {event_type::tool_response, "thread:execute(call, fn)"},
      {event_type::outcome_unknown, "thread:execute(call, fn)"},
      {event_type::done, "return from the agent function"},
      {event_type::failed, "error(...)"},
      {event_type::cancelled, "threads.cancel(id) for another thread"},
  };
  for (const auto& [host_type, instead] : kHostTypes)
    if (type == host_type)
      throw Error(ErrorCode::usage, "thread:push: '" + type +
                                        "' events are written by luagent itself; use " +
                                        std::string(instead));
}

// push, await and a tool's result append behind (LuaRuntime::append_behind): the agent
// goes on at once and the loop turn's group commit makes them durable before anyone
// outside hears of them. Only a tool's start waits for its commit (exactly once).
int thread_push(lua_State* L) {
  Run& run = checked_run(L, "thread:push");
  refuse_after_await(run, "thread:push");
  std::string type(arg_string(L, 2, "thread:push", "type"));
  if (type.empty()) throw Error(ErrorCode::usage, "thread:push: the event type is empty");
  // A type is a name: "done\0x" prints as "done" in a terminal, and readers of the store
  // that use C strings (sqlite3 the shell) stop at the NUL.
  if (type.find('\0') != std::string::npos)
    throw Error(ErrorCode::usage, "thread:push: the event type contains a NUL byte");
  if (std::size_t bad = first_non_utf8(type); bad != std::string::npos)
    throw Error(ErrorCode::usage, "thread:push: the event type is " + describe_non_utf8(type, bad));
  refuse_host_event_type(type);
  nlohmann::json data = to_json(L, 3, "thread:push data");
  LuaRuntime& runtime = LuaRuntime::from(L);
  std::vector<Event> stored =
      runtime.append_behind(run, {Event::make(std::move(type), std::move(data))});
  HostCallScope scope(L);
  remember_call(L, run, 3, stored.front().id);
  push_event(L, stored.front());
  return 1;
}

int thread_await(lua_State* L) {
  Run& run = checked_run(L, "thread:await");
  refuse_after_await(run, "thread:await");
  // The tool's result is appended when it returns, after the await: the thread would end
  // the step neither paused nor done, with nothing left to resume it.
  if (!run.running_calls.empty())
    throw Error(ErrorCode::usage,
                "thread:await: called inside a tool that thread:execute runs, or while such a "
                "tool is paused in a coroutine; let the tool return, then "
                "`return thread:await(...)` in the agent function");
  std::string kind(arg_string(L, 2, "thread:await", "kind"));
  if (kind != "human" && kind != "approval")
    throw Error(ErrorCode::usage,
                "thread:await: kind must be \"human\" or \"approval\", got \"" + kind + "\"");
  nlohmann::json data = {{"kind", kind}};
  nlohmann::json payload = to_json(L, 3, "thread:await payload");
  if (!payload.is_null()) data["payload"] = std::move(payload);
  if (std::int64_t call = recall_call(L, run, 3)) data["call"] = call;
  LuaRuntime::from(L).append_behind(run,
                                    {Event::make(std::string(event_type::await), std::move(data))});
  run.awaiting = true;  // no more pushes: the step must end
  lua_settop(L, 1);
  return 1;
}

// The await that this step resumes, and the answer to it: only when the answer is
// what started this step (the last event before the step began).
int thread_resumed(lua_State* L) {
  Run& run = checked_run(L, "thread:resumed");
  const auto& events = run.thread.events;
  std::int64_t n = run.step_start_version;
  if (n >= 1) {
    // A step recovering from a crash inside an idempotent tool: the call was approved to
    // run and may run again, so hand it back as if just approved.
    const Event& last = events[static_cast<std::size_t>(n - 1)];
    std::int64_t call = last.data.is_object() ? last.data.value("call", std::int64_t{0}) : 0;
    if (last.type == event_type::tool_started && last.data.value("idempotent", false) &&
        call >= 1 && call <= n) {
      HostCallScope scope(L);
      push_json(L, events[static_cast<std::size_t>(call - 1)].data);
      remember_call(L, run, -1, call);
      lua_createtable(L, 0, 2);
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "approved");
      lua_pushliteral(L, "retry");
      lua_setfield(L, -2, "type");
      return 2;
    }
  }
  if (n < 2) return 0;
  const Event& answer = events[static_cast<std::size_t>(n - 1)];
  const Event& await = events[static_cast<std::size_t>(n - 2)];
  if (await.type != event_type::await) return 0;
  HostCallScope scope(L);
  push_json(L, await.data.value("payload", nlohmann::json()));
  if (auto call = await.data.find("call"); call != await.data.end() && call->is_number_integer())
    remember_call(L, run, -1, call->get<std::int64_t>());
  if (answer.data.is_string()) {
    lua_createtable(L, 0, 2);
    push_json(L, answer.data);
    lua_setfield(L, -2, "text");
  } else {
    push_json(L, answer.data);
    if (!lua_istable(L, -1)) {
      lua_pop(L, 1);
      lua_createtable(L, 0, 1);
    }
  }
  lua_pushlstring(L, answer.type.data(), answer.type.size());
  lua_setfield(L, -2, "type");
  return 2;
}

// thread:_tool_begin(call, idempotent) -> "recorded", result, error | "unknown" | "run", call_id
// The exactly-once half of thread:execute that must be atomic with the store.
// After thread:execute's start was stored: "run", call (the tool may run now, its start
// is durable) or "unknown" (a crash left the call without a result).
int thread_tool_begin_stored(lua_State* L) {
  LuaRuntime& runtime = LuaRuntime::from(L);
  std::vector<Event> stored = runtime.take_appended(runtime.require_run("thread:execute"));
  const Event& event = stored.front();
  if (event.type == event_type::outcome_unknown) {
    lua_pushliteral(L, "unknown");
    return 1;
  }
  failpoint("after_tool_start");
  std::int64_t call = event.data.value("call", std::int64_t{0});
  Run& run = runtime.require_run("thread:execute");
  run.running_calls.push_back(call);
  lua_pushliteral(L, "run");
  lua_pushinteger(L, call);
  // The tool gets the call as recorded, not the agent's table: one changed after its
  // push ran a charge of 1,000,000 that the thread records as 10, and a retry after a
  // crash (which reads the record) would do another thing again.
  HostCallScope scope(L);
  push_json(L, run.thread.events.at(static_cast<std::size_t>(call - 1)).data);
  return 3;
}

int thread_tool_begin(lua_State* L) {
  Run& run = checked_run(L, "thread:execute");
  refuse_after_await(run, "thread:execute");
  bool idempotent = lua_toboolean(L, 3);
  std::int64_t call = recall_call(L, run, 2);
  if (!call)
    throw Error(ErrorCode::usage,
                "thread:execute: the call is not an event of this thread; push it first "
                "(thread:push(step.intent, step)) or pass the call thread:resumed() returned");
  // Its tool_started is on record and its result is not yet: taken for a crash, it would
  // get outcome_unknown (or, idempotent, a second run) and then the running tool's result.
  if (std::find(run.running_calls.begin(), run.running_calls.end(), call) !=
      run.running_calls.end())
    throw Error(ErrorCode::usage,
                "thread:execute: the call of event " + std::to_string(call) + " ('" +
                    run.thread.events.at(static_cast<std::size_t>(call - 1)).type +
                    "') is still running: its tool has not returned, and its result is recorded "
                    "when it does; call thread:execute for it again only after that (not from "
                    "inside the tool, nor while a coroutine running the tool is suspended)");
  int attempts = 0;
  for (const Event& event : run.thread.events) {
    if (!event.data.is_object() || event.data.value("call", std::int64_t{0}) != call) continue;
    if (event.type == event_type::tool_response) {
      HostCallScope scope(L);
      lua_pushliteral(L, "recorded");
      push_json(L, event.data.value("result", nlohmann::json()));
      push_json(L, event.data.value("error", nlohmann::json()));
      return 3;
    }
    if (event.type == event_type::outcome_unknown) {
      lua_pushliteral(L, "unknown");
      return 1;
    }
    if (event.type == event_type::tool_started) ++attempts;
  }
  LuaRuntime& runtime = LuaRuntime::from(L);
  if (attempts > 0 && !idempotent) {
    // Started in an earlier step that never recorded a result: a crash. Do not guess.
    return runtime.append_then(
        L, run, {Event::make(std::string(event_type::outcome_unknown), {{"call", call}})},
        thread_tool_begin_stored);
  }
  // An idempotent tool is simply run again; each attempt is on record.
  nlohmann::json started = {{"call", call}};
  if (idempotent) started["idempotent"] = true;
  if (attempts > 0) started["attempt"] = attempts + 1;
  return runtime.append_then(
      L, run, {Event::make(std::string(event_type::tool_started), std::move(started))},
      thread_tool_begin_stored);
}

// thread:_tool_end(call_id, ok, result_or_error) -> result | nil, error
int thread_tool_end(lua_State* L) {
  Run& run = checked_run(L, "thread:execute");
  failpoint("after_tool_run");
  std::int64_t call = arg_integer(L, 2, "thread:execute", "call id");
  if (auto running = std::find(run.running_calls.begin(), run.running_calls.end(), call);
      running != run.running_calls.end())
    run.running_calls.erase(running);
  bool ok = lua_toboolean(L, 3);
  nlohmann::json data = {{"call", call}};
  if (ok) {
    try {
      data["result"] = to_json(L, 4, "tool result");
    } catch (const Error& e) {
      ok = false;
      data["error"] = "the tool returned a value with no JSON form: " + e.message();
    }
  } else {
    Error error = error_from_lua(L, 4);
    data["error"] = error.source().empty() ? error.message()
                                           : error.source() + ":" + std::to_string(error.line()) +
                                                 ": " + error.message();
  }
  std::vector<Event> stored = LuaRuntime::from(L).append_behind(
      run, {Event::make(std::string(event_type::tool_response), std::move(data))});
  const nlohmann::json& recorded = stored.front().data;
  HostCallScope scope(L);
  if (recorded.contains("result")) {
    push_json(L, recorded["result"]);
    return 1;
  }
  lua_pushnil(L);
  push_json(L, recorded.value("error", nlohmann::json()));
  return 2;
}

// usage_error(message): raises Error(usage) as every binding does (an error table
// with the luagent.error metatable), for the checks the Lua half makes.
int thread_usage_error(lua_State* L) {
  throw Error(ErrorCode::usage, std::string(arg_string(L, 1, "thread:execute", "message")));
}

// The Lua half of thread:execute, so that a tool may itself call the LLM (yield).
constexpr const char* kExecuteSource = R"lua(
local begin, finish, usage_error = ...
return function(thread, call, fn, options)
  if type(fn) ~= "function" then
    usage_error("thread:execute: argument #2 (fn) must be a function, got " .. type(fn))
  end
  if options ~= nil and type(options) ~= "table" then
    usage_error("thread:execute: argument #3 (options) must be a table, got " .. type(options))
  end
  local state, a, b = begin(thread, call, options ~= nil and options.idempotent == true)
  if state == "recorded" then
    if b ~= nil then return nil, b end
    return a
  elseif state == "unknown" then
    return nil, "outcome_unknown"
  end
  return finish(thread, a, pcall(fn, b))
end
)lua";

}  // namespace

void push_thread_object(lua_State* L, std::uint64_t run_id) {
  auto* handle = static_cast<ThreadHandle*>(lua_newuserdatauv(L, sizeof(ThreadHandle), 0));
  handle->run_id = run_id;
  if (luaL_newmetatable(L, "luagent.thread")) {
    const luaL_Reg methods[] = {{"events", lua_entry<thread_events>},
                                {"last", lua_entry<thread_last>},
                                {"status", lua_entry<thread_status>},
                                {"push", lua_entry<thread_push>},
                                {"await", lua_entry<thread_await>},
                                {"resumed", lua_entry<thread_resumed>},
                                {nullptr, nullptr}};
    luaL_newlib(L, methods);
    if (luaL_loadbufferx(L, kExecuteSource, std::strlen(kExecuteSource), "=thread:execute", "t") !=
        LUA_OK)
      lua_error(L);
    lua_pushcfunction(L, lua_entry<thread_tool_begin>);
    lua_pushcfunction(L, lua_entry<thread_tool_end>);
    lua_pushcfunction(L, lua_entry<thread_usage_error>);
    lua_call(L, 3, 1);
    lua_setfield(L, -2, "execute");
    lua_setfield(L, -2, "methods");
    lua_pushcfunction(L, lua_entry<thread_index>);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "thread");
    lua_setfield(L, -2, "__metatable");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &kThreadMetatableKey);
  }
  lua_setmetatable(L, -2);
}

}  // namespace luagent::lua
