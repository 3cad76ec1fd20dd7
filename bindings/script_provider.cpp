// The `script` provider: a Lua function plays the model (for tests and offline
// development). The file returns function(request) -> text | { text = ... };
// request = { messages = {...}, schema = {...} | nil, model = "..." }.
// It runs in its own restricted environment, outside every agent's coroutine.
#include <algorithm>
#include <cstring>
#include <fstream>

#include "bounded_read.hpp"
#include "llm/json_schema.hpp"
#include "llm/replay_provider.hpp"
#include "lua_guard.hpp"
#include "lua_json_convert.hpp"
#include "lua_runtime.hpp"
#include "utf8_text.hpp"

namespace luagent::lua {
namespace {

class ScriptProvider final : public llm::Provider {
 public:
  ScriptProvider(LuaRuntime& runtime, int function_ref, std::string name)
      : runtime_(runtime), function_ref_(function_ref), name_(std::move(name)) {}
  ~ScriptProvider() override { luaL_unref(runtime_.state(), LUA_REGISTRYINDEX, function_ref_); }

  std::string name() const override { return "script"; }

  llm::CallId start(llm::Request request, llm::ChunkCallback on_chunk,
                    llm::DoneCallback done) override {
    llm::CallId id = next_id_++;
    live_.push_back(id);
    runtime_.services().loop->post([this, id, request = std::move(request),
                                    on_chunk = std::move(on_chunk), done = std::move(done)] {
      auto found = std::find(live_.begin(), live_.end(), id);
      if (found == live_.end()) return;  // cancelled
      live_.erase(found);
      llm::Outcome outcome = call_model(request);
      if (on_chunk && outcome.ok()) on_chunk(llm::StreamChunk{outcome.reply().text, {}, {}});
      done(std::move(outcome));
    });
    return id;
  }

  void cancel(llm::CallId id) override {
    auto found = std::find(live_.begin(), live_.end(), id);
    if (found != live_.end()) live_.erase(found);
  }

 private:
  llm::Outcome call_model(const llm::Request& request) {
    lua_State* L = runtime_.state();
    llm::Outcome outcome{Error(ErrorCode::internal, "unset"), {}};
    outcome.trace.provider = "script";
    outcome.trace.model = request.model.empty() ? name_ : request.model;
    outcome.trace.attempts = 1;
    outcome.trace.request_body = llm::cassette_key(request);  // the rendered prompt
    outcome.trace.request_bytes = static_cast<std::int64_t>(outcome.trace.request_body.size());
    StackTopRestorer restore(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, function_ref_);
    try {
      HostCallScope scope(L);
      nlohmann::json table = {{"messages", request.messages}, {"model", outcome.trace.model}};
      if (request.response_schema) table["schema"] = request.response_schema->json();
      // One level around the message list, which was checked on its own: a prompt nested
      // as deep as llm.* accepts must reach the model.
      push_json(L, table, 1);
    } catch (const Error& error) {
      // The call fails, as any provider's would; thrown, it left the pump and the thread
      // running with no step.
      outcome.result = Error(error.code(), "the script model's request: " + error.message());
      return outcome;
    }
    // Under the CPU limit, as an agent file's top level: a model that never returns
    // would otherwise hold the pump that delivers its reply for good.
    if (runtime_.pcall_limited(1, 1, 0) != LUA_OK) {
      Error error = error_from_lua(L, -1);
      outcome.result =
          Error(error.code() == ErrorCode::runtime ? ErrorCode::provider : error.code(),
                "the script model failed: " + error.message(), error.source(), error.line());
    } else if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TTABLE) {
      // Raw: nothing protects this read, so a raising __index would abort the host.
      if (lua_type(L, -1) == LUA_TTABLE) {
        lua_pushliteral(L, "text");
        lua_rawget(L, -2);
      }
      llm::Reply reply;
      if (lua_type(L, -1) == LUA_TSTRING) {
        size_t length = 0;
        const char* text = lua_tolstring(L, -1, &length);
        reply.text.assign(text, length);
      }
      reply.finish_reason = "stop";
      // A model's reply is JSON text on every other provider's wire: UTF-8 only.
      if (std::size_t bad = first_non_utf8(reply.text); bad != std::string::npos)
        outcome.result = Error(ErrorCode::provider,
                               "the script model's reply is " + describe_non_utf8(reply.text, bad));
      else
        outcome.result = std::move(reply);
    } else {
      outcome.result = Error(ErrorCode::provider,
                             "the script model must return a string or "
                             "{ text = ... }");
    }
    return outcome;
  }

  LuaRuntime& runtime_;
  int function_ref_;
  std::string name_;
  std::vector<llm::CallId> live_;
  llm::CallId next_id_ = 1;
};

}  // namespace

std::unique_ptr<llm::Provider> LuaRuntime::make_script_provider(const std::filesystem::path& file) {
  lua_State* L = L_;
  // A folder opens and then throws from inside the stream (an "internal error"); a device
  // such as /dev/zero would be read until memory ran out.
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec))
    throw Error(ErrorCode::config,
                "the script model " + file.string() + " is a folder, not a Lua file");
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorCode::config, "cannot read the script model " + file.string());
  std::string source;
  if (!read_at_most(in, kMaxSourceBytes, source))
    throw Error(ErrorCode::config, "the script model " + file.string() + " is larger than " +
                                       std::to_string(kMaxSourceBytes / (1024 * 1024)) + " MiB");
  std::string chunkname = "@" + file.filename().string();
  if (luaL_loadbufferx(L, source.data(), source.size(), chunkname.c_str(), "t") != LUA_OK) {
    Error error = error_from_lua(L, -1);
    lua_pop(L, 1);
    throw Error(ErrorCode::config, error.message(), error.source(), error.line());
  }
  push_run_environment();
  lua_setupvalue(L, -2, 1);
  if (pcall_limited(0, 1, 0) != LUA_OK || lua_type(L, -1) != LUA_TFUNCTION) {
    std::string message =
        lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "it must return a function(request)";
    lua_pop(L, 1);
    throw Error(ErrorCode::config, "the script model " + file.string() + ": " + message);
  }
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return std::make_unique<ScriptProvider>(*this, ref, file.stem().string());
}

}  // namespace luagent::lua
