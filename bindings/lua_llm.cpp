// luagent.llm: llm.json(prompt, schema, opts), llm.text(prompt, opts), llm.one_of(intents).
// A call suspends only the calling coroutine; the runtime resumes it when the
// provider's reply arrives, and the continuation parses and validates it.
#include <string>

#include "llm/json_schema.hpp"
#include "llm/structured_output.hpp"
#include "lua_guard.hpp"
#include "lua_json_convert.hpp"
#include "lua_modules.hpp"
#include "lua_runtime.hpp"

namespace luagent::lua {
namespace {

// prompt: a string (one user message) or an array of { role =, content = }.
nlohmann::json messages_from(lua_State* L, int index, const char* function) {
  if (lua_type(L, index) == LUA_TSTRING) {
    size_t length = 0;
    const char* text = lua_tolstring(L, index, &length);
    return nlohmann::json::array({{{"role", "user"}, {"content", std::string(text, length)}}});
  }
  if (lua_type(L, index) != LUA_TTABLE)
    throw Error(ErrorCode::usage, std::string(function) +
                                      ": argument #1 (prompt) must be a string or a list of "
                                      "{ role =, content = } messages, got " +
                                      luaL_typename(L, index));
  nlohmann::json messages = to_json(L, index, "prompt");
  if (!messages.is_array() || messages.empty())
    throw Error(ErrorCode::usage, std::string(function) + ": the message list is empty");
  for (const auto& message : messages) {
    if (!message.is_object() || !message.contains("role") || !message["role"].is_string() ||
        !message.contains("content"))
      throw Error(ErrorCode::usage,
                  std::string(function) + ": every message needs a string role and a content");
  }
  return messages;
}

void read_options(lua_State* L, int index, llm::Request& request, const char* function) {
  if (lua_isnoneornil(L, index)) return;
  arg_table(L, index, function, "opts");
  nlohmann::json opts = to_json(L, index, "opts");
  if (!opts.is_object()) return;
  for (const auto& [key, value] : opts.items()) {
    if (key == "model" && value.is_string())
      request.model = value;
    else if (key == "temperature" && value.is_number())
      request.temperature = value.get<double>();
    else if (key == "max_tokens" && value.is_number_integer())
      request.max_tokens = value.get<int>();
    else if (key == "timeout" && value.is_number())
      request.total_timeout_ms = static_cast<int>(value.get<double>() * 1000);
    else
      throw Error(ErrorCode::usage, std::string(function) + ": unknown or mistyped option '" + key +
                                        "' (model, temperature, max_tokens, timeout)");
  }
}

// Takes the outcome the runtime stored, or raises its error in the agent.
llm::Reply take_reply(lua_State* L) {
  Run& run = LuaRuntime::from(L).require_run("llm");
  if (!run.outcome) throw Error(ErrorCode::internal, "an LLM call resumed without an outcome");
  llm::Outcome outcome = std::move(*run.outcome);
  run.outcome.reset();
  if (!outcome.ok()) throw outcome.error();
  return outcome.reply();
}

int llm_json_continue(lua_State* L) {
  llm::Reply reply = take_reply(L);
  // The schema travels on the stack, as argument #2 of the original call.
  nlohmann::json schema;
  if (lua_type(L, 2) == LUA_TTABLE) schema = llm::expand_schema(to_json(L, 2, "schema"));
  if (!reply.refusal.empty())
    throw Error(ErrorCode::refused, "the model refused: " + reply.refusal);
  llm::StructuredResult parsed;
  try {
    parsed = llm::parse_structured_output(reply.text, schema);
  } catch (const Error& e) {
    std::string raw = reply.text.size() > 400 ? reply.text.substr(0, 400) + "..." : reply.text;
    throw Error(e.code(), e.message() + " (model replied: " + raw + ")");
  }
  for (const auto& repair : parsed.repairs)
    LuaRuntime::from(L).log("debug", "llm.json repaired: " + repair);
  HostCallScope scope(L);
  push_json(L, parsed.value);
  return 1;
}

int llm_json(lua_State* L) {
  LuaRuntime& runtime = LuaRuntime::from(L);
  Run& run = runtime.require_run("llm.json");
  llm::Request request;
  request.messages = messages_from(L, 1, "llm.json");
  if (!lua_isnoneornil(L, 2)) {
    arg_table(L, 2, "llm.json", "schema");
    request.response_schema = llm::expand_schema(to_json(L, 2, "schema"));
  }
  read_options(L, 3, request, "llm.json");
  lua_settop(L, 3);
  runtime.start_llm_call(run, std::move(request));
  yield_for_host(L, llm_json_continue);
  return kYield;
}

int llm_text_continue(lua_State* L) {
  llm::Reply reply = take_reply(L);
  if (!reply.refusal.empty())
    throw Error(ErrorCode::refused, "the model refused: " + reply.refusal);
  HostCallScope scope(L);
  lua_pushlstring(L, reply.text.data(), reply.text.size());
  return 1;
}

int llm_text(lua_State* L) {
  LuaRuntime& runtime = LuaRuntime::from(L);
  Run& run = runtime.require_run("llm.text");
  llm::Request request;
  request.messages = messages_from(L, 1, "llm.text");
  read_options(L, 2, request, "llm.text");
  runtime.start_llm_call(run, std::move(request));
  yield_for_host(L, llm_text_continue);
  return kYield;
}

int llm_one_of(lua_State* L) {
  arg_table(L, 1, "llm.one_of", "intents");
  nlohmann::json schema = llm::one_of_intents(to_json(L, 1, "intents"));
  HostCallScope scope(L);
  push_json(L, schema);
  return 1;
}

}  // namespace

int luaopen_luagent_llm(lua_State* L) {
  const luaL_Reg functions[] = {{"json", lua_entry<llm_json>},
                                {"text", lua_entry<llm_text>},
                                {"one_of", lua_entry<llm_one_of>},
                                {nullptr, nullptr}};
  luaL_newlib(L, functions);
  return 1;
}

}  // namespace luagent::lua
