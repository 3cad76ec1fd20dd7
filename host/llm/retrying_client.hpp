// One logical HTTP call = one or more attempts through HttpTransport, with RetryPolicy
// deciding whether and when to try again (backoff waits are EventLoop timers, never a
// sleep). The provider layer (OpenAI, Anthropic, ...) calls this; it still sees raw bytes.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "event_loop.hpp"
#include "llm/http_transport.hpp"
#include "llm/retry_policy.hpp"
#include "luagent/error.hpp"

namespace luagent::llm {

using HttpCallId = std::uint64_t;

struct AttemptReport {
  int status = 0;                  // 0: no response head arrived
  std::optional<ErrorCode> error;  // the transport failure, if any
  std::chrono::milliseconds latency{0};
  std::chrono::milliseconds waited_before{0};  // backoff before this attempt
};

struct CallReport {
  int attempts = 0;
  int final_status = 0;
  std::chrono::milliseconds total_latency{0};  // from start() to on_done, backoff included
  std::vector<AttemptReport> history;
};

struct RetryingHandlers {
  /// The head of an attempt whose body goes to the consumer. May come more than once per
  /// call (a retried 2xx stream that broke before delivery): reset any decoder state here.
  /// Heads of attempts that will be retried (429, 5xx, ...) are never shown.
  std::function<void(const HttpResponseHead&)> on_head;
  /// Body bytes. Return true once anything derived from them reached the end consumer
  /// (a chunk shown to the user): from then on the call is never retried.
  std::function<bool(std::string_view)> on_body;
  /// Exactly once. nullopt: an HTTP exchange completed (the status is in the last head and
  /// in report.final_status); else network, timeout, limit, cancelled, usage.
  std::function<void(std::optional<Error>, const CallReport&)> on_done;
};

class RetryingClient {
 public:
  /// Both must outlive the client; the transport must be registered with the loop.
  RetryingClient(EventLoop& loop, HttpTransport& transport, RetryPolicy policy = RetryPolicy{});
  /// Drops calls in flight without calling their handlers.
  ~RetryingClient();
  RetryingClient(const RetryingClient&) = delete;
  RetryingClient& operator=(const RetryingClient&) = delete;

  /// Starts a call; handlers run on the loop thread, never from inside start().
  HttpCallId start(HttpRequest request, RetryingHandlers handlers);
  /// Cancels a call (in a transfer or waiting to retry): on_done gets ErrorCode::cancelled
  /// unless it already ran. Unknown ids are ignored.
  void cancel(HttpCallId id);
  /// Calls started and not yet finished.
  std::size_t in_flight() const { return calls_.size(); }

 private:
  struct Call;
  void start_attempt(HttpCallId id);
  void on_attempt_head(HttpCallId id, const HttpResponseHead& head);
  void on_attempt_body(HttpCallId id, std::string_view bytes);
  void on_attempt_done(HttpCallId id, std::optional<Error> error);
  void finish(HttpCallId id, std::optional<Error> error);

  EventLoop& loop_;
  HttpTransport& transport_;
  RetryPolicy policy_;
  HttpCallId next_id_ = 1;
  std::unordered_map<HttpCallId, std::unique_ptr<Call>> calls_;
  std::shared_ptr<char> alive_;  // callbacks hold a weak_ptr: they do nothing once we are gone
};

}  // namespace luagent::llm
