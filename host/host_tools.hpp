// The registry of C++ host tools (Host::tool / Host::async_tool) and the shared state
// behind a ToolReply. Plain C++: bindings/lua_host.cpp is the Lua side.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "event_loop.hpp"
#include "llm/json_schema.hpp"
#include "luagent/host_tool.hpp"

namespace luagent {

struct HostTool {
  std::string name;
  nlohmann::json schema;  // the arguments, as JSON Schema or the intents shorthand
  ToolFunction sync;      // exactly one of sync / async is set
  AsyncToolFunction async;
  /// `schema` expanded and compiled by HostTools::add; null when there is no schema.
  std::shared_ptr<const llm::CompiledSchema> compiled_schema;

  /// The arguments as the tool's function gets them: checked against the schema and
  /// coerced as llm.json replies are (near misses fixed, unknown fields dropped, so an
  /// intent table from llm.one_of can be passed as it is). Throws usage naming the field.
  nlohmann::json checked_args(nlohmann::json args) const;
};

/// Posts to the host's loop from any thread until the host closes it (on destruction),
/// so a ToolReply that outlives its Host is harmless.
class LoopGate {
 public:
  explicit LoopGate(EventLoop* loop) : loop_(loop) {}
  /// Queues `task` on the loop; false when the host is gone.
  bool post(EventLoop::Task task);
  void close();

 private:
  std::mutex mutex_;
  EventLoop* loop_;
};

class HostTools {
 public:
  /// Registers a tool. Throws usage for a bad name or schema (naming the bad entry),
  /// conflict for a duplicate.
  void add(HostTool tool);
  const HostTool* find(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::map<std::string, HostTool>& all() const { return tools_; }
  std::shared_ptr<LoopGate> gate;

 private:
  std::map<std::string, HostTool> tools_;
};

/// What in a tool's result the agent cannot take, and where ("NaN at /readings/2, which
/// ..."), or empty when nothing: a discarded or binary value (no Lua form: either would
/// reach the agent as nil), NaN or infinity, a string or key that is not UTF-8 (no JSON
/// form: the agent's thread:push would refuse them later, not naming the tool), or a value
/// nested deeper than kMaxJsonDepth (Lua stops there, and copying it on its way to the
/// agent, recursively, could overflow the host's stack). The walk is first_json_fault's
/// (json_faults.hpp), which launch and resume events go through too.
std::string unrepresentable_in(const nlohmann::json& result);

/// One asynchronous call's answer slot. `deliver` runs once: with the result, or with
/// an error message (fail(), or the last ToolReply dropped unanswered).
struct ToolReply::State {
  std::string tool;  // the tool's name, for ok()'s refusals
  std::mutex mutex;
  bool answered = false;
  std::function<void(std::optional<nlohmann::json> result, std::string error)> deliver;
  ~State();
};

}  // namespace luagent
