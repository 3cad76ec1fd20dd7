// luagent.threads: the thread verbs for agent code — get, list, fork, cancel — on the
// host's store. Launching and resuming stay with the host (they start steps); cancel goes
// through the host (RuntimeServices::cancel_thread), which stops a step in flight.
#include <string>

#include "lua_guard.hpp"
#include "lua_json_convert.hpp"
#include "lua_modules.hpp"
#include "lua_runtime.hpp"
#include "thread_lifecycle.hpp"

namespace luagent::lua {
namespace {

Store& store_of(lua_State* L, const char* function) {
  const RuntimeServices& services = LuaRuntime::from(L).services();
  if (services.store) return *services.store;
  // An agent's top-level code runs when it loads, before a launch has made the store.
  if (services.open_store) return services.open_store();
  throw Error(ErrorCode::config, std::string(function) + ": no store is open");
}

nlohmann::json summary_json(const ThreadSummary& summary) {
  return {{"id", summary.id},
          {"agent", summary.agent},
          {"status", status_name(summary.status)},
          {"events", summary.version},
          {"created", format_utc(summary.created_ms)},
          {"updated", format_utc(summary.updated_ms)}};
}

int threads_get(lua_State* L) {
  std::string id(arg_string(L, 1, "threads.get", "id"));
  check_thread_id(id);
  nlohmann::json json = luagent::to_json(store_of(L, "threads.get").load(id));
  HostCallScope scope(L);
  push_json(L, json, 3);  // the thread, its event list and each event around the event's data
  return 1;
}

int threads_list(lua_State* L) {
  nlohmann::json options =
      lua_isnoneornil(L, 1) ? nlohmann::json::object() : to_json(L, 1, "threads.list options");
  if (!options.is_object())
    throw Error(ErrorCode::usage, "threads.list: options must be a table {status, agent, limit}");
  // A mistyped name ({ staus = "done" }) listed every thread without a word.
  for (const auto& [key, value] : options.items())
    if (key != "status" && key != "agent" && key != "limit")
      throw Error(ErrorCode::usage,
                  "threads.list: unknown option '" + key + "' (status, agent, limit)");
  ListFilter filter;
  if (auto status = options.find("status"); status != options.end()) {
    auto parsed = status->is_string() ? status_from_name(status->get<std::string>()) : std::nullopt;
    if (!parsed)
      throw Error(ErrorCode::usage,
                  "threads.list: status must be one of running, awaiting_human, "
                  "awaiting_approval, done, failed, cancelled");
    filter.status = parsed;
  }
  if (auto agent = options.find("agent"); agent != options.end()) {
    if (!agent->is_string()) throw Error(ErrorCode::usage, "threads.list: agent must be a string");
    filter.agent = agent->get<std::string>();
  }
  if (auto limit = options.find("limit"); limit != options.end()) {
    if (!limit->is_number_integer() || limit->get<std::int64_t>() < 0)
      throw Error(ErrorCode::usage, "threads.list: limit must be a non-negative integer");
    filter.limit = limit->get<std::size_t>();
  }
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& summary : store_of(L, "threads.list").list(filter))
    rows.push_back(summary_json(summary));
  HostCallScope scope(L);
  push_json(L, rows);
  return 1;
}

int threads_fork(lua_State* L) {
  std::string id(arg_string(L, 1, "threads.fork", "id"));
  check_thread_id(id);
  std::int64_t at = arg_integer(L, 2, "threads.fork", "at");
  Thread fork = fork_thread(store_of(L, "threads.fork"), id, at);
  HostCallScope scope(L);
  lua_pushlstring(L, fork.id.data(), fork.id.size());
  return 1;
}

int threads_cancel(lua_State* L) {
  std::string id(arg_string(L, 1, "threads.cancel", "id"));
  check_thread_id(id);
  std::string reason(opt_string(L, 2, "threads.cancel", "reason", ""));
  if (Run* run = LuaRuntime::from(L).current_run(); run && run->thread.id == id)
    throw Error(ErrorCode::usage,
                "threads.cancel: a step cannot cancel its own thread; return from the agent "
                "function (or raise an error) instead");
  // Through the host where there is one, as Host::cancel: a step of this host in flight on
  // the thread (waiting for its LLM reply, say) must stop, not go on behind the cancel.
  const auto& host_cancel = LuaRuntime::from(L).services().cancel_thread;
  nlohmann::json event =
      luagent::to_json(host_cancel ? host_cancel(id, reason)
                                   : cancel_thread(store_of(L, "threads.cancel"), id, reason));
  HostCallScope scope(L);
  push_json(L, event);
  return 1;
}

}  // namespace

int luaopen_luagent_threads(lua_State* L) {
  const luaL_Reg functions[] = {{"get", lua_entry<threads_get>},
                                {"list", lua_entry<threads_list>},
                                {"fork", lua_entry<threads_fork>},
                                {"cancel", lua_entry<threads_cancel>},
                                {nullptr, nullptr}};
  luaL_newlib(L, functions);
  return 1;
}

}  // namespace luagent::lua
