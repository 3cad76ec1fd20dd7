// What the host needs from the agent language runtime. host/ stays free of Lua:
// the only implementation, the Lua one, lives in bindings/ (make_lua_runtime).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "event_loop.hpp"
#include "host_tools.hpp"
#include "llm/provider.hpp"
#include "luagent/error.hpp"
#include "luagent/thread.hpp"
#include "store/store.hpp"

namespace luagent {

/// A loaded agent: its folder, name, and the content hash of its scripts and prompts.
struct AgentInfo {
  std::string name;
  std::filesystem::path dir;
  std::string version;
};

/// Limits for agent Lua code (DESIGN.md "Limits by default").
struct RuntimeLimits {
  int step_cpu_ms = 5000;
  std::size_t memory_mb = 256;
  int llm_calls_per_step = 0;  // 0: no limit; dev, replay and eval take one decision
};

struct RunCallbacks {
  /// Each event as soon as it is durably stored.
  std::function<void(const Thread& thread, const Event& event)> on_event;
  /// Once, when the step ends: paused, done or failed (the events say which). An Error
  /// here means the step could not record its outcome (a lost compare-and-swap).
  std::function<void(const Thread& thread, const std::optional<Error>& error)> on_finished;
  /// Streamed text of an LLM call made with streaming on (optional).
  std::function<void(const Thread& thread, std::string_view text)> on_chunk;
};

using LogSink = std::function<void(std::string_view level, std::string_view message)>;

struct RuntimeServices {
  Store* store = nullptr;
  /// Makes the store when `store` is still null (a Host opens a missing one on first use)
  /// and returns it; unset, null `store` means there is none.
  std::function<Store&()> open_store;
  llm::Provider* provider = nullptr;  // may be set later with set_provider
  EventLoop* loop = nullptr;
  RuntimeLimits limits;
  LogSink log;
  std::filesystem::path stdlib_dir;  // empty: the built-in search
  const HostTools* tools = nullptr;  // C++ functions agents reach through luagent.host
  /// Cancels a thread as Host::cancel does: a step of this runtime in flight on it stops
  /// first, and the host's callbacks and updates hear of the end. Unset (a runtime with no
  /// Host around it), luagent.threads.cancel writes the cancel to the store only.
  std::function<Event(const std::string& thread_id, const std::string& reason)> cancel_thread;
};

class AgentRuntime {
 public:
  virtual ~AgentRuntime() = default;
  /// Loads the agent in `dir` (agent.lua). Throws not_found, or syntax with file:line.
  virtual AgentInfo load_agent(const std::filesystem::path& dir) = 0;
  /// Runs the agent on `thread` until it pauses, ends or fails; progress happens on the
  /// event loop, `callbacks.on_finished` reports the end. The last `unflushed_events` of
  /// `thread` are committed but not yet on disk (Store::create_unflushed/append_unflushed):
  /// the runtime reports them through `callbacks.on_event` once they are flushed, before
  /// anything the step appends, and fails the step if that flush fails.
  virtual void start_step(const AgentInfo& agent, Thread thread, RunCallbacks callbacks,
                          std::size_t unflushed_events = 0) = 0;
  virtual std::size_t runs_in_flight() const = 0;
  /// Runs ready work (new steps, replies that arrived, runs paused by a time slice) until
  /// none is ready or `deadline` passes; agent Lua code is time-sliced at the deadline and
  /// continued by a later call. Returns the number of resumptions.
  virtual std::size_t run_ready(std::optional<Clock::time_point> deadline) = 0;
  /// True when run_ready() has work now.
  virtual bool has_ready() const = 0;
  /// True while a step of this runtime runs on `thread_id`.
  virtual bool has_step_in_flight(const std::string& thread_id) const = 0;
  /// Ends the step in flight on `thread_id` with a `cancelled` event; false when none is.
  virtual bool cancel_run(const std::string& thread_id, const std::string& reason) = 0;
  virtual void set_provider(llm::Provider* provider) = 0;
  /// The store runs append to. Where it can flush later (Store::defer_batch_sync), group
  /// commits are flushed on a thread of their own: the loop never waits for the disk.
  virtual void set_store(Store* store) = 0;
  /// The thread as luagent.context.xml renders it (what the model would see).
  virtual std::string render_context(const Thread& thread) = 0;
  /// Evaluates a luagent.config.lua (sandboxed) into JSON.
  virtual nlohmann::json load_config(const std::filesystem::path& file) = 0;
  /// A provider whose model is a Lua function (the `script` provider, for tests).
  virtual std::unique_ptr<llm::Provider> make_script_provider(
      const std::filesystem::path& file) = 0;
  /// Where `luagent.*` Lua modules are read from.
  virtual std::filesystem::path stdlib_dir() const = 0;
  /// Drops the cached stdlib modules so new runs read them again; steps in flight keep
  /// the modules they hold. Throws (and keeps the cache) if a module has a syntax error.
  virtual void reload_stdlib() = 0;
};

std::unique_ptr<AgentRuntime> make_lua_runtime(RuntimeServices services);

}  // namespace luagent
