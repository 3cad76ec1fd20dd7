#include "llm/delayed_provider.hpp"

namespace luagent::llm {

DelayedProvider::DelayedProvider(std::unique_ptr<Provider> inner, EventLoop& loop,
                                 std::chrono::milliseconds delay)
    : inner_(std::move(inner)), loop_(loop), delay_(delay) {}

CallId DelayedProvider::start(Request request, ChunkCallback on_chunk, DoneCallback done) {
  CallId id = next_id_++;
  waiting_[id] =
      loop_.after(delay_, [this, id, request = std::move(request), on_chunk = std::move(on_chunk),
                           done = std::move(done)]() mutable {
        waiting_.erase(id);
        double delay_ms = static_cast<double>(delay_.count());
        started_[id] = inner_->start(std::move(request), std::move(on_chunk),
                                     [this, id, delay_ms, done = std::move(done)](Outcome outcome) {
                                       started_.erase(id);
                                       outcome.trace.latency_ms += delay_ms;
                                       done(std::move(outcome));
                                     });
      });
  return id;
}

void DelayedProvider::cancel(CallId id) {
  if (auto found = waiting_.find(id); found != waiting_.end()) {
    loop_.cancel_timer(found->second);
    waiting_.erase(found);
  } else if (auto running = started_.find(id); running != started_.end()) {
    inner_->cancel(running->second);
    started_.erase(running);
  }
}

}  // namespace luagent::llm
