#include "llm/retrying_client.hpp"

namespace luagent::llm {
namespace {

// The error body of a response that will be retried is kept only to hand over if the
// retries run out; past this size the rest is dropped (error bodies are small).
constexpr std::size_t kMaxHeldErrorBody = 64 * 1024;

std::chrono::milliseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

}  // namespace

struct RetryingClient::Call {
  HttpRequest request;  // kept whole: each attempt sends a copy
  RetryingHandlers handlers;
  int attempt = 0;
  TransferId transfer = 0;
  EventLoop::TimerId timer = 0;
  bool delivered = false;
  bool cancelled = false;
  Clock::time_point started;
  Clock::time_point attempt_started;
  std::chrono::milliseconds next_wait{0};
  // Per attempt: a retryable response is held back from the consumer.
  std::optional<HttpResponseHead> head;
  bool holding = false;
  std::optional<std::chrono::milliseconds> held_retry_delay;
  std::string held_body;
  CallReport report;
};

RetryingClient::RetryingClient(EventLoop& loop, HttpTransport& transport, RetryPolicy policy)
    : loop_(loop),
      transport_(transport),
      policy_(std::move(policy)),
      alive_(std::make_shared<char>()) {}

RetryingClient::~RetryingClient() {
  alive_.reset();
  for (auto& [id, call] : calls_) {
    if (call->transfer) transport_.cancel(call->transfer);
    if (call->timer) loop_.cancel_timer(call->timer);
  }
}

HttpCallId RetryingClient::start(HttpRequest request, RetryingHandlers handlers) {
  HttpCallId id = next_id_++;
  auto call = std::make_unique<Call>();
  call->request = std::move(request);
  call->handlers = std::move(handlers);
  call->started = Clock::now();
  calls_.emplace(id, std::move(call));
  start_attempt(id);
  return id;
}

void RetryingClient::start_attempt(HttpCallId id) {
  auto it = calls_.find(id);
  if (it == calls_.end()) return;
  Call& call = *it->second;
  call.timer = 0;
  call.attempt_started = Clock::now();
  call.head.reset();
  call.holding = false;
  call.held_retry_delay.reset();
  call.held_body.clear();
  std::weak_ptr<char> alive = alive_;
  HttpHandlers handlers;
  handlers.on_head = [this, alive, id](const HttpResponseHead& head) {
    if (!alive.expired()) on_attempt_head(id, head);
  };
  handlers.on_body = [this, alive, id](std::string_view bytes) {
    if (!alive.expired()) on_attempt_body(id, bytes);
  };
  handlers.on_done = [this, alive, id](std::optional<Error> error) {
    if (!alive.expired()) on_attempt_done(id, std::move(error));
  };
  call.transfer = transport_.start(call.request, std::move(handlers));
}

void RetryingClient::on_attempt_head(HttpCallId id, const HttpResponseHead& head) {
  auto it = calls_.find(id);
  if (it == calls_.end()) return;
  Call& call = *it->second;
  call.head = head;
  // Decided on the head, so a retryable error body never reaches the consumer's decoder.
  call.held_retry_delay = policy_.delay_before_retry(call.attempt, head.status, nullptr, &head);
  call.holding = call.held_retry_delay.has_value();
  if (!call.holding && call.handlers.on_head) call.handlers.on_head(head);
}

void RetryingClient::on_attempt_body(HttpCallId id, std::string_view bytes) {
  auto it = calls_.find(id);
  if (it == calls_.end()) return;
  Call& call = *it->second;
  if (call.holding) {
    std::size_t room = kMaxHeldErrorBody - std::min(kMaxHeldErrorBody, call.held_body.size());
    call.held_body.append(bytes.substr(0, room));
    return;
  }
  if (call.handlers.on_body && call.handlers.on_body(bytes)) call.delivered = true;
}

void RetryingClient::on_attempt_done(HttpCallId id, std::optional<Error> error) {
  auto it = calls_.find(id);
  if (it == calls_.end()) return;
  Call& call = *it->second;
  call.transfer = 0;
  AttemptReport attempt;
  attempt.status = call.head ? call.head->status : 0;
  if (error) attempt.error = error->code();
  attempt.latency = since(call.attempt_started);
  attempt.waited_before = call.next_wait;
  call.report.history.push_back(attempt);
  call.report.attempts = static_cast<int>(call.report.history.size());
  call.report.final_status = attempt.status;

  if (call.cancelled) {
    finish(id, Error(ErrorCode::cancelled, "HTTP call cancelled"));
    return;
  }
  std::optional<std::chrono::milliseconds> delay;
  if (error) {
    // Once the consumer has shown anything, a retry would show it twice.
    if (!call.delivered) {
      ErrorCode code = error->code();
      delay = policy_.delay_before_retry(call.attempt, 0, &code, nullptr);
    }
  } else if (call.holding) {
    delay = call.held_retry_delay;
  }
  if (delay) {
    ++call.attempt;
    call.next_wait = *delay;
    std::weak_ptr<char> alive = alive_;
    call.timer = loop_.after(*delay, [this, alive, id] {
      if (!alive.expired()) start_attempt(id);
    });
    return;
  }
  if (call.holding) {
    // Not retried after all (the transfer failed in a way that must not be retried): the
    // consumer still deserves the error response.
    if (call.handlers.on_head) call.handlers.on_head(*call.head);
    if (call.handlers.on_body && !call.held_body.empty()) call.handlers.on_body(call.held_body);
  }
  finish(id, std::move(error));
}

void RetryingClient::cancel(HttpCallId id) {
  auto it = calls_.find(id);
  if (it == calls_.end() || it->second->cancelled) return;
  Call& call = *it->second;
  call.cancelled = true;
  if (call.transfer) {
    transport_.cancel(call.transfer);  // its on_done finishes the call
    return;
  }
  if (call.timer) {
    loop_.cancel_timer(call.timer);
    call.timer = 0;
  }
  std::weak_ptr<char> alive = alive_;
  loop_.post([this, alive, id] {  // never call back from inside cancel()
    if (!alive.expired()) finish(id, Error(ErrorCode::cancelled, "HTTP call cancelled"));
  });
}

void RetryingClient::finish(HttpCallId id, std::optional<Error> error) {
  auto it = calls_.find(id);
  if (it == calls_.end()) return;
  std::unique_ptr<Call> call = std::move(it->second);
  calls_.erase(it);
  call->report.total_latency = since(call->started);
  if (call->handlers.on_done) call->handlers.on_done(std::move(error), call->report);
}

}  // namespace luagent::llm
