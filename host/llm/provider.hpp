// The provider interface. Every call is asynchronous: start() returns at once and
// the completion runs later on the host's EventLoop thread. Offline providers
// (replay, script) complete through the same loop, so agent code cannot tell them
// from the HTTP providers.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <variant>

#include "llm/llm_types.hpp"
#include "luagent/error.hpp"

namespace luagent::llm {

using CallId = std::uint64_t;

struct Outcome {
  std::variant<Reply, Error> result;  // Error codes: rate_limited, timeout, network, ...
  CallTrace trace;

  bool ok() const { return std::holds_alternative<Reply>(result); }
  const Reply& reply() const { return std::get<Reply>(result); }
  const Error& error() const { return std::get<Error>(result); }
};

using ChunkCallback = std::function<void(const StreamChunk&)>;
using DoneCallback = std::function<void(Outcome)>;

class Provider {
 public:
  virtual ~Provider() = default;
  virtual std::string name() const = 0;
  /// Starts a call. `on_chunk` (may be empty) sees streamed pieces; `done` runs exactly
  /// once, on the loop thread, never from inside start().
  virtual CallId start(Request request, ChunkCallback on_chunk, DoneCallback done) = 0;
  /// Cancels an in-flight call: its `done` runs with ErrorCode::cancelled (unless it
  /// already completed). Unknown ids are ignored.
  virtual void cancel(CallId id) = 0;
};

}  // namespace luagent::llm
