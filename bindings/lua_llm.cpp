// luagent.llm: llm.json(prompt, schema, opts), llm.text(prompt, opts),
// llm.chat(messages, opts), llm.one_of(intents).
// A call suspends only the calling coroutine; the runtime resumes it when the
// provider's reply arrives, and the continuation parses, validates and records it.
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <utility>

#include "llm/json_schema.hpp"
#include "llm/lenient_json.hpp"
#include "llm/structured_output.hpp"
#include "lua_guard.hpp"
#include "lua_json_convert.hpp"
#include "lua_modules.hpp"
#include "lua_runtime.hpp"
#include "utf8_text.hpp"

namespace luagent::lua {
namespace {

enum class CallKind { json, text, chat };

// ---------------------------------------------------------------------------
// Compiled schemas. Expanding a short-form schema and moving it between Lua and JSON
// costs more than the rest of a step, and agents pass the same schema every step
// (llm.json(p, llm.one_of(intents))). So a schema is compiled once into a
// `luagent.schema` userdata, and the continuation validates against the compiled form.
// Each table remembers what it was compiled to, next to a description of its content at
// that time: passing the same, unchanged table again costs one walk over it, and a table
// the agent changed is compiled anew. New tables with known content (an agent reloaded,
// a table built afresh each step) find the schema in a per-state cache keyed by content.

constexpr const char* kSchemaType = "luagent.schema";
constexpr const char* kSchemaMemoType = "luagent.schema_memo";
char kOneOfByTableKey;   // weak-keyed: intents table -> memo of its llm.one_of schema
char kSchemaByTableKey;  // weak-keyed: schema table -> memo of its compiled schema
char kSchemaCacheKey;    // registry: the state's SchemaCache userdata

using CompiledSchema = std::shared_ptr<const llm::CompiledSchema>;

struct SchemaHandle {
  CompiledSchema schema;
};

// What a table was compiled to: its content description then; user value 1 holds the
// luagent.schema userdata it got.
struct SchemaMemo {
  std::string content;
};

// Compiled schemas by content ('o' or 's' for one_of or schema, then the description of
// the table, or its JSON text when it has none); bounded, since schemas come from code.
struct SchemaCache {
  std::map<std::string, CompiledSchema, std::less<>> by_content;
};

template <typename T>
int destroy_userdata(lua_State* L) {
  if (auto* object = static_cast<T*>(lua_touserdata(L, 1))) object->~T();
  return 0;
}

// Pushes a new userdata holding a T made from `args`, with the metatable named `type`:
// made on first use with a __gc that runs T's destructor, then handed to `setup`.
template <typename T, typename... Args>
T* push_userdata(lua_State* L, const char* type, void (*setup)(lua_State*), int user_values,
                 Args&&... args) {
  void* memory = lua_newuserdatauv(L, sizeof(T), user_values);
  T* object = new (memory) T{std::forward<Args>(args)...};
  if (luaL_newmetatable(L, type)) {
    lua_pushcfunction(L, destroy_userdata<T>);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "schema");
    lua_setfield(L, -2, "__metatable");
    if (setup) setup(L);
  }
  lua_setmetatable(L, -2);
  return object;
}

int schema_json(lua_State* L) {
  auto* handle = static_cast<SchemaHandle*>(luaL_testudata(L, 1, kSchemaType));
  if (!handle) throw Error(ErrorCode::usage, "schema:json(): call it as a method");
  HostCallScope scope(L);
  push_json(L, handle->schema->json());
  return 1;
}

int schema_tostring(lua_State* L) {
  auto* handle = static_cast<SchemaHandle*>(luaL_testudata(L, 1, kSchemaType));
  std::string text = handle ? handle->schema->json().dump() : std::string("schema");
  HostCallScope scope(L);
  lua_pushlstring(L, text.data(), text.size());
  return 1;
}

void add_schema_methods(lua_State* L) {
  lua_pushcfunction(L, lua_entry<schema_tostring>);
  lua_setfield(L, -2, "__tostring");
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lua_entry<schema_json>);
  lua_setfield(L, -2, "json");
  lua_setfield(L, -2, "__index");
}

// Call under a HostCallScope.
void push_schema(lua_State* L, CompiledSchema schema) {
  push_userdata<SchemaHandle>(L, kSchemaType, add_schema_methods, 0, std::move(schema));
}

constexpr int kMaxDescribedDepth = 32;

void append_raw(std::string& out, const void* bytes, std::size_t size) {
  out.append(static_cast<const char*>(bytes), size);
}

// Appends a description of the table at `index` to `out`: each key and value in
// iteration order, tagged with its type, strings with their length, numbers as bits,
// nested tables inside braces, and whether the table is marked as a JSON array. Equal
// descriptions mean equal content, so to_json would give the same JSON. Returns false
// for what it does not describe (functions, userdata, deep nesting or cycles): such a
// table is converted as usual, which raises the errors due. Reads raw, so no metamethod
// runs; call under a HostCallScope (lua_checkstack may allocate).
bool describe_table(lua_State* L, int index, std::string& out, int depth) {
  if (depth > kMaxDescribedDepth || !lua_checkstack(L, 4)) return false;
  index = lua_absindex(L, index);
  out += '{';
  if (lua_getmetatable(L, index)) {
    push_array_metatable(L);
    bool marked_array = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (marked_array) out += 'A';
  }
  auto describe = [&](int at) {
    switch (lua_type(L, at)) {
      case LUA_TSTRING: {
        std::size_t length = 0;
        const char* text = lua_tolstring(L, at, &length);
        out += 's';
        append_raw(out, &length, sizeof length);
        out.append(text, length);
        return true;
      }
      case LUA_TNUMBER:
        if (lua_isinteger(L, at)) {
          lua_Integer number = lua_tointeger(L, at);
          out += 'i';
          append_raw(out, &number, sizeof number);
        } else {
          lua_Number number = lua_tonumber(L, at);
          out += 'f';
          append_raw(out, &number, sizeof number);
        }
        return true;
      case LUA_TBOOLEAN:
        out += lua_toboolean(L, at) ? 'T' : 'F';
        return true;
      case LUA_TLIGHTUSERDATA:
        if (!is_json_null(L, at)) return false;
        out += 'n';
        return true;
      case LUA_TTABLE:
        return describe_table(L, at, out, depth + 1);
      default:
        return false;
    }
  };
  lua_pushnil(L);
  while (lua_next(L, index)) {
    // describe() calls lua_tolstring on strings only: converting a number key in place
    // would derail lua_next. Table keys have no JSON form; to_json names that error.
    bool described = lua_type(L, -2) != LUA_TTABLE && describe(-2) && describe(-1);
    lua_pop(L, 1);
    if (!described) {
      lua_pop(L, 1);
      return false;
    }
  }
  out += '}';
  return true;
}

SchemaCache& schema_cache(lua_State* L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &kSchemaCacheKey) == LUA_TNIL) {
    lua_pop(L, 1);
    push_userdata<SchemaCache>(L, "luagent.schema_cache", nullptr, 0);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &kSchemaCacheKey);
  }
  auto* cache = static_cast<SchemaCache*>(lua_touserdata(L, -1));
  lua_pop(L, 1);  // the registry keeps it
  return *cache;
}

enum class SchemaKind : char { one_of = 'o', schema = 's' };

CompiledSchema compile_table(lua_State* L, int index, SchemaKind kind) {
  if (kind == SchemaKind::one_of)
    return std::make_shared<const llm::CompiledSchema>(
        llm::one_of_intents(to_json(L, index, "intents")));
  return std::make_shared<const llm::CompiledSchema>(
      llm::expand_schema(to_json(L, index, "schema")));
}

// Pushes the luagent.schema for the table at `index`: the one this table was compiled to
// if its content is unchanged, else one from the content cache, else a new compilation.
void push_schema_of_table(lua_State* L, int index, SchemaKind kind) {
  index = lua_absindex(L, index);
  HostCallScope scope(L);
  std::string key(1, static_cast<char>(kind));
  key.reserve(256);
  bool described = describe_table(L, index, key, 0);
  push_registry_weak_table(L, kind == SchemaKind::one_of ? &kOneOfByTableKey : &kSchemaByTableKey);
  int memos = lua_gettop(L);
  lua_pushvalue(L, index);
  lua_rawget(L, memos);
  auto* memo = static_cast<SchemaMemo*>(luaL_testudata(L, -1, kSchemaMemoType));
  if (described && memo && memo->content == key) {
    lua_getiuservalue(L, -1, 1);
    lua_replace(L, memos);
    lua_settop(L, memos);
    return;
  }
  lua_pop(L, 1);
  SchemaCache& cache = schema_cache(L);
  if (!described)
    key += to_json(L, index, kind == SchemaKind::one_of ? "intents" : "schema").dump();
  CompiledSchema schema;
  if (auto found = cache.by_content.find(key); found != cache.by_content.end()) {
    schema = found->second;
  } else {
    schema = compile_table(L, index, kind);
    if (cache.by_content.size() >= 256) cache.by_content.clear();
    cache.by_content.emplace(key, schema);
  }
  push_schema(L, std::move(schema));
  if (described) {
    lua_pushvalue(L, index);
    push_userdata<SchemaMemo>(L, kSchemaMemoType, nullptr, 1, std::move(key));
    lua_pushvalue(L, -3);
    lua_setiuservalue(L, -2, 1);
    lua_rawset(L, memos);
  }
  lua_replace(L, memos);
}

// The compiled schema of argument `index`: a luagent.schema, or that of a table.
CompiledSchema schema_argument(lua_State* L, int index, const char* function) {
  index = lua_absindex(L, index);
  if (auto* handle = static_cast<SchemaHandle*>(luaL_testudata(L, index, kSchemaType)))
    return handle->schema;
  arg_table(L, index, function, "schema");
  push_schema_of_table(L, index, SchemaKind::schema);
  CompiledSchema schema = static_cast<SchemaHandle*>(lua_touserdata(L, -1))->schema;
  lua_pop(L, 1);
  return schema;
}

// prompt: a string (one user message) or an array of { role =, content = }.
nlohmann::json messages_from(lua_State* L, int index, const char* function) {
  if (lua_type(L, index) == LUA_TSTRING) {
    size_t length = 0;
    const char* text = lua_tolstring(L, index, &length);
    std::string_view prompt(text, length);
    // Checked here, as the message list's strings are: the request is JSON text.
    if (std::size_t bad = first_non_utf8(prompt); bad != std::string_view::npos)
      throw Error(ErrorCode::usage,
                  std::string(function) + ": the prompt is " + describe_non_utf8(prompt, bad));
    return nlohmann::json::array({{{"role", "user"}, {"content", std::string(prompt)}}});
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
        !(message.contains("content") || message.contains("tool_calls")))
      throw Error(ErrorCode::usage,
                  std::string(function) + ": every message needs a string role and a content");
  }
  return messages;
}

// Ranges of the numeric options. Out of range they reached the provider as given or
// wrapped: max_tokens = 2^32 + 5 became 5, timeout = 3e6 s overflowed the milliseconds,
// timeout = 1e-4 became 0 ms, which means "the default".
constexpr std::int64_t kMaxMaxTokens = 10'000'000;
constexpr double kMaxTemperature = 2.0;

[[noreturn]] void bad_option(const char* function, const std::string& key,
                             const std::string& wanted, const nlohmann::json& value) {
  throw Error(ErrorCode::usage, std::string(function) + ": opts." + key + " must be " + wanted +
                                    ", not " + value.dump());
}

int max_tokens_option(const nlohmann::json& value, const char* function) {
  std::int64_t tokens = value.is_number_unsigned() && value.get<std::uint64_t>() > kMaxMaxTokens
                            ? kMaxMaxTokens + 1
                            : value.get<std::int64_t>();
  if (tokens < 1 || tokens > kMaxMaxTokens)
    bad_option(function, "max_tokens", "an integer in [1, " + std::to_string(kMaxMaxTokens) + "]",
               value);
  return static_cast<int>(tokens);
}

int timeout_ms_option(const nlohmann::json& value, const char* function) {
  double seconds = value.get<double>();
  // Rounded up: a tiny positive timeout must not become 0, which means "the default".
  double ms = std::ceil(seconds * 1000);
  if (!std::isfinite(seconds) || seconds <= 0 || ms > std::numeric_limits<int>::max())
    bad_option(function, "timeout",
               "a positive number of seconds up to " +
                   std::to_string(std::numeric_limits<int>::max() / 1000),
               value);
  return static_cast<int>(ms);
}

double temperature_option(const nlohmann::json& value, const char* function) {
  double temperature = value.get<double>();
  if (!std::isfinite(temperature) || temperature < 0 || temperature > kMaxTemperature)
    bad_option(function, "temperature", "a number in [0, 2]", value);
  return temperature;
}

// What a known option of llm.* must be, or nullptr for a name that is no option.
const char* option_type(const std::string& key, CallKind kind) {
  if (key == "model" || (kind == CallKind::chat && key == "tool_choice")) return "a string";
  if (key == "temperature" || key == "timeout") return "a number";
  if (key == "max_tokens") return "an integer";
  if (kind == CallKind::chat && key == "tools") return "a table of tools by name";
  return nullptr;
}

// Reads opts into the request; returns true when opts.stream is a function (left on the
// stack top for the caller to take).
bool read_options(lua_State* L, int index, llm::Request& request, CallKind kind,
                  const char* function) {
  if (lua_isnoneornil(L, index)) return false;
  arg_table(L, index, function, "opts");
  bool has_stream = false;
  // Raw, as the loop below reads the rest: an __index here would run agent code that may
  // raise over the C++ objects the callers hold (the request, leaked outside the memory
  // limit on every call).
  lua_pushliteral(L, "stream");
  lua_rawget(L, index);
  if (lua_type(L, -1) == LUA_TFUNCTION) {
    has_stream = true;
    request.stream = true;
  } else if (!lua_isnil(L, -1)) {
    throw Error(ErrorCode::usage, std::string(function) + ": opts.stream must be a function");
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  while (lua_next(L, index)) {
    std::string key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    if (key == "stream") {
      lua_pop(L, 1);
      continue;
    }
    nlohmann::json value = to_json(L, -1, ("opts." + key).c_str());
    lua_pop(L, 1);
    if (key == "model" && value.is_string())
      request.model = value;
    else if (key == "temperature" && value.is_number())
      request.temperature = temperature_option(value, function);
    else if (key == "max_tokens" && value.is_number_integer())
      request.max_tokens = max_tokens_option(value, function);
    else if (key == "timeout" && value.is_number())
      request.total_timeout_ms = timeout_ms_option(value, function);
    else if (kind == CallKind::chat && key == "tools" && value.is_object()) {
      for (const auto& [name, spec] : value.items()) {
        if (!spec.is_object())
          throw Error(ErrorCode::usage, std::string(function) + ": opts.tools." + name +
                                            " must be { description =, parameters = }");
        llm::ToolSpec tool;
        tool.name = name;
        tool.description = spec.value("description", "");
        tool.parameters = llm::expand_schema(spec.value("parameters", nlohmann::json::object()));
        request.tools.push_back(std::move(tool));
      }
    } else if (kind == CallKind::chat && key == "tool_choice" && value.is_string()) {
      request.tool_choice = value;
    } else if (const char* wanted = option_type(key, kind)) {
      // A known option of the wrong type was "unknown or mistyped", which sent the author
      // looking for a typo in the name.
      throw Error(ErrorCode::usage, std::string(function) + ": opts." + key + " must be " + wanted +
                                        ", not " + value.dump());
    } else {
      throw Error(ErrorCode::usage, std::string(function) + ": unknown or mistyped option '" + key +
                                        "' (model, temperature, max_tokens, timeout, stream" +
                                        (kind == CallKind::chat ? ", tools, tool_choice)" : ")"));
    }
  }
  if (has_stream) {
    lua_pushliteral(L, "stream");
    lua_rawget(L, index);
  }
  return has_stream;
}

// Calls the agent's stream callback with (delta[, partial object]); its errors are
// logged, never raised into the host's loop.
llm::ChunkCallback stream_forwarder(LuaRuntime& runtime, std::uint64_t run_id, CallKind kind) {
  auto text = std::make_shared<std::string>();
  return [&runtime, run_id, kind, text](const llm::StreamChunk& chunk) {
    if (chunk.text_delta.empty()) return;
    Run* run = runtime.find_run(run_id);
    if (!run || run->stream_ref == LUA_NOREF || run->killed) return;
    lua_State* L = runtime.state();
    int top = lua_gettop(L);
    int nargs = 1;
    {
      HostCallScope scope(L);
      lua_rawgeti(L, LUA_REGISTRYINDEX, run->stream_ref);
      lua_pushlstring(L, chunk.text_delta.data(), chunk.text_delta.size());
      if (kind == CallKind::json) {
        *text += chunk.text_delta;
        try {
          push_json(L, llm::parse_lenient_json(*text).value);
        } catch (const Error&) {
          lua_pushnil(L);  // nothing recoverable yet
        }
        nargs = 2;
      }
    }
    // Under the step's CPU limit: a callback that never returns must not stall the host.
    if (runtime.pcall_limited(nargs, 0, 0, run) != LUA_OK)
      runtime.log("warn", std::string("stream callback failed: ") + error_from_lua(L, -1).what());
    lua_settop(L, top);
  };
}

int start_call(lua_State* L, CallKind kind, const char* function, int opts_index,
               llm::Request request, Body continuation) {
  LuaRuntime& runtime = LuaRuntime::from(L);
  Run& run = runtime.require_run(function);
  runtime.require_wait(L, function);
  bool streaming = read_options(L, opts_index, request, kind, function);
  llm::ChunkCallback on_chunk;
  if (streaming) {
    luaL_unref(L, LUA_REGISTRYINDEX, run.stream_ref);
    run.stream_ref = luaL_ref(L, LUA_REGISTRYINDEX);  // pops the function
    on_chunk = stream_forwarder(runtime, run.id, kind);
  }
  lua_settop(L, opts_index);
  runtime.start_llm_call(run, std::move(request), std::move(on_chunk));
  yield_for_host(L, continuation);
  return kYield;
}

// Takes the outcome the runtime stored. Failed calls are recorded and raised.
llm::Outcome take_outcome(lua_State* L, Run*& run_out) {
  LuaRuntime& runtime = LuaRuntime::from(L);
  Run& run = runtime.require_run("llm");
  run_out = &run;
  luaL_unref(L, LUA_REGISTRYINDEX, run.stream_ref);
  run.stream_ref = LUA_NOREF;
  if (!run.outcome) throw Error(ErrorCode::internal, "an LLM call resumed without an outcome");
  llm::Outcome outcome = std::move(*run.outcome);
  run.outcome.reset();
  if (!outcome.ok()) {
    runtime.record_call(run, outcome);
    throw outcome.error();
  }
  return outcome;
}

int llm_json_continue(lua_State* L) {
  Run* run = nullptr;
  llm::Outcome outcome = take_outcome(L, run);
  LuaRuntime& runtime = LuaRuntime::from(L);
  const llm::Reply& reply = outcome.reply();
  CompiledSchema schema = std::move(run->pending_schema);
  if (!reply.refusal.empty()) {
    runtime.record_call(*run, outcome, {{"refusal", reply.refusal}});
    throw Error(ErrorCode::refused, "the model refused: " + reply.refusal);
  }
  llm::StructuredResult parsed;
  try {
    parsed = schema ? llm::parse_structured_output(reply.text, *schema)
                    : llm::parse_structured_output(reply.text, nlohmann::json());
  } catch (const Error& e) {
    runtime.record_call(*run, outcome, {{"invalid_output", e.message()}});
    std::string raw = reply.text.size() > 400 ? reply.text.substr(0, 400) + "..." : reply.text;
    throw Error(e.code(), e.message() + " (model replied: " + raw + ")");
  }
  // Every repair is kept with the raw text, so a surprising value can be traced.
  runtime.record_call(*run, outcome,
                      parsed.repairs.empty() ? nlohmann::json::object()
                                             : nlohmann::json{{"repairs", parsed.repairs}});
  HostCallScope scope(L);
  push_json(L, parsed.value);
  return 1;
}

int llm_json(lua_State* L) {
  llm::Request request;
  request.messages = messages_from(L, 1, "llm.json");
  CompiledSchema schema;
  if (!lua_isnoneornil(L, 2)) {
    schema = schema_argument(L, 2, "llm.json");
    request.response_schema = schema;
  }
  int results = start_call(L, CallKind::json, "llm.json", 3, std::move(request), llm_json_continue);
  LuaRuntime::from(L).require_run("llm.json").pending_schema = std::move(schema);
  return results;
}

int llm_text_continue(lua_State* L) {
  Run* run = nullptr;
  llm::Outcome outcome = take_outcome(L, run);
  LuaRuntime::from(L).record_call(*run, outcome);
  const llm::Reply& reply = outcome.reply();
  if (!reply.refusal.empty())
    throw Error(ErrorCode::refused, "the model refused: " + reply.refusal);
  HostCallScope scope(L);
  lua_pushlstring(L, reply.text.data(), reply.text.size());
  return 1;
}

int llm_text(lua_State* L) {
  llm::Request request;
  request.messages = messages_from(L, 1, "llm.text");
  return start_call(L, CallKind::text, "llm.text", 2, std::move(request), llm_text_continue);
}

int llm_chat_continue(lua_State* L) {
  Run* run = nullptr;
  llm::Outcome outcome = take_outcome(L, run);
  LuaRuntime::from(L).record_call(*run, outcome);
  const llm::Reply& reply = outcome.reply();
  nlohmann::json result = {{"text", reply.text},
                           {"finish_reason", reply.finish_reason},
                           {"model", reply.model},
                           {"usage",
                            {{"input_tokens", reply.usage.input_tokens},
                             {"output_tokens", reply.usage.output_tokens},
                             {"cached_tokens", reply.usage.cached_tokens},
                             {"reasoning_tokens", reply.usage.reasoning_tokens}}}};
  if (!reply.refusal.empty()) result["refusal"] = reply.refusal;
  nlohmann::json calls = nlohmann::json::array();
  for (const auto& call : reply.tool_calls)
    calls.push_back({{"id", call.id}, {"name", call.name}, {"arguments", call.arguments}});
  result["tool_calls"] = std::move(calls);
  HostCallScope scope(L);
  push_json(L, result);
  return 1;
}

int llm_chat(lua_State* L) {
  llm::Request request;
  request.messages = messages_from(L, 1, "llm.chat");
  return start_call(L, CallKind::chat, "llm.chat", 2, std::move(request), llm_chat_continue);
}

int llm_one_of(lua_State* L) {
  arg_table(L, 1, "llm.one_of", "intents");
  push_schema_of_table(L, 1, SchemaKind::one_of);
  return 1;
}

int llm_schema(lua_State* L) {
  if (luaL_testudata(L, 1, kSchemaType)) {
    lua_settop(L, 1);
    return 1;
  }
  arg_table(L, 1, "llm.schema", "schema");
  push_schema_of_table(L, 1, SchemaKind::schema);
  return 1;
}

}  // namespace

int luaopen_luagent_llm(lua_State* L) {
  const luaL_Reg functions[] = {
      {"json", lua_entry<llm_json>},     {"text", lua_entry<llm_text>},
      {"chat", lua_entry<llm_chat>},     {"one_of", lua_entry<llm_one_of>},
      {"schema", lua_entry<llm_schema>}, {nullptr, nullptr}};
  luaL_newlib(L, functions);
  return 1;
}

}  // namespace luagent::lua
