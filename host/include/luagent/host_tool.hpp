// Host tools: C++ functions an agent calls from Lua (require "luagent.host").
// A synchronous tool returns its result; an asynchronous one gets a ToolReply and
// answers later, from any thread, while only the calling agent's coroutine waits.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace luagent {

/// The answer handle of one asynchronous tool call. Copyable; answer once, from any
/// thread. When the last copy is destroyed unanswered, the call fails in the agent.
/// A reply moved from answers nothing: its ok(), fail() and answered() throw usage.
class ToolReply {
 public:
  struct State;  // host-internal
  /// Made by the host for each call; a null state throws Error(usage).
  explicit ToolReply(std::shared_ptr<State> state);

  /// Completes the call with `result`; the agent's coroutine resumes at the next pump.
  /// Throws usage naming the tool, and leaves the call open, for a result holding a
  /// discarded or binary value (neither has a Lua form), NaN or infinity, or a string or
  /// key that is not UTF-8 (neither has a JSON form); conflict once the call is answered.
  void ok(nlohmann::json result) const;
  /// Completes the call with an error the agent sees as a Lua error (code "runtime").
  void fail(std::string message) const;
  /// True once ok() or fail() was called.
  bool answered() const;

 private:
  std::shared_ptr<State> state_;
};

/// A synchronous host tool: runs on the host's thread inside the agent's step; what it
/// throws becomes a Lua error in the agent (the host stays usable), as does a result
/// ToolReply::ok would refuse.
using ToolFunction = std::function<nlohmann::json(const nlohmann::json& args)>;
/// An asynchronous host tool: starts the work and answers through `reply` later.
using AsyncToolFunction = std::function<void(const nlohmann::json& args, ToolReply reply)>;

}  // namespace luagent
