// A provider that answers `delay` later than the one it wraps: network latency for
// offline providers (the script model), so load tests keep many calls in flight.
#pragma once

#include <chrono>
#include <map>
#include <memory>

#include "event_loop.hpp"
#include "llm/provider.hpp"

namespace luagent::llm {

class DelayedProvider final : public Provider {
 public:
  DelayedProvider(std::unique_ptr<Provider> inner, EventLoop& loop,
                  std::chrono::milliseconds delay);
  std::string name() const override { return inner_->name(); }
  CallId start(Request request, ChunkCallback on_chunk, DoneCallback done) override;
  void cancel(CallId id) override;

 private:
  std::unique_ptr<Provider> inner_;
  EventLoop& loop_;
  std::chrono::milliseconds delay_;
  CallId next_id_ = 1;
  std::map<CallId, EventLoop::TimerId> waiting_;  // not yet passed to the inner provider
  std::map<CallId, CallId> started_;              // our id -> the inner provider's
};

}  // namespace luagent::llm
