#include "llm/http_chat_provider.hpp"

#include <algorithm>
#include <chrono>

#include "llm/provider_errors.hpp"
#include "llm/wire_json.hpp"

namespace luagent::llm {

double call_cost_usd(const std::map<std::string, ModelPrice>& prices, const std::string& model,
                     const Usage& usage) {
  const ModelPrice* price = nullptr;
  if (auto exact = prices.find(model); exact != prices.end()) {
    price = &exact->second;
  } else {
    std::size_t best = 0;
    for (const auto& [name, candidate] : prices) {
      if (!name.empty() && name.size() > best && model.starts_with(name)) {
        best = name.size();
        price = &candidate;
      }
    }
  }
  if (!price) return 0;
  const auto cached = std::min(usage.cached_tokens, usage.input_tokens);
  const double cached_price = price->cached_input_per_mtok.value_or(price->input_per_mtok);
  return (static_cast<double>(usage.input_tokens - cached) * price->input_per_mtok +
          static_cast<double>(cached) * cached_price +
          static_cast<double>(usage.output_tokens) * price->output_per_mtok) /
         1e6;
}

struct HttpChatProvider::Call {
  DoneCallback done;
  ChunkCallback on_chunk;
  bool streaming = false;
  std::string model;
  CallTrace trace;
  HttpCallId http = 0;
  // Per attempt shown to us (a retried head resets these).
  int status = 0;
  bool collect_body = false;  // error responses and whole bodies are parsed at the end
  std::string body;
  std::unique_ptr<ReplyStreamDecoder> decoder;
  bool delivered = false;        // a chunk reached on_chunk: never retried from here
  std::optional<Error> failure;  // the decoder rejected the stream; the transfer was stopped
  bool cancelled_by_caller = false;
};

HttpChatProvider::HttpChatProvider(EventLoop& loop, HttpProviderSettings settings)
    : settings_(std::move(settings)),
      loop_(loop),
      transport_(std::make_unique<HttpTransport>()),
      alive_(std::make_shared<char>()) {
  RetryOptions retry;
  retry.max_retries = std::max(0, settings_.max_retries);
  retry.initial_delay = std::chrono::milliseconds(std::max(0, settings_.retry_initial_delay_ms));
  retry.max_delay = std::chrono::milliseconds(std::max(0, settings_.retry_max_delay_ms));
  client_ = std::make_unique<RetryingClient>(loop_, *transport_, RetryPolicy(retry));
  loop_.add_driver(transport_.get());
}

HttpChatProvider::~HttpChatProvider() {
  alive_.reset();
  client_.reset();  // cancels its transfers before the transport goes
  loop_.remove_driver(transport_.get());
}

std::string HttpChatProvider::model_for(const Request& request) const {
  return request.model.empty() ? settings_.default_model : request.model;
}

CallId HttpChatProvider::start(Request request, ChunkCallback on_chunk, DoneCallback done) {
  CallId id = next_id_++;
  auto call = std::make_unique<Call>();
  call->done = std::move(done);
  call->on_chunk = std::move(on_chunk);
  call->streaming = request.stream || settings_.always_stream || bool(call->on_chunk);
  request.stream = call->streaming;
  call->model = model_for(request);
  call->trace.provider = name();
  call->trace.model = call->model;
  Call& ref = *call;
  calls_.emplace(id, std::move(call));

  HttpRequest http;
  try {
    http = render_request(request);
  } catch (const Error& e) {
    std::weak_ptr<char> alive = alive_;
    Error error = without_secrets(e);
    loop_.post([this, alive, id, error] {  // never complete from inside start()
      if (!alive.expired()) complete(id, error, nullptr);
    });
    return id;
  }
  ref.trace.request_body = http.body;  // credentials travel in headers only
  ref.trace.request_bytes = static_cast<std::int64_t>(http.body.size());
  http.connect_timeout_ms =
      request.connect_timeout_ms > 0 ? request.connect_timeout_ms : settings_.connect_timeout_ms;
  http.total_timeout_ms =
      request.total_timeout_ms > 0 ? request.total_timeout_ms : settings_.total_timeout_ms;
  http.idle_timeout_ms =
      request.idle_timeout_ms > 0 ? request.idle_timeout_ms : settings_.idle_timeout_ms;
  http.max_response_bytes = settings_.max_response_bytes;

  std::weak_ptr<char> alive = alive_;
  RetryingHandlers handlers;
  handlers.on_head = [this, alive, id](const HttpResponseHead& head) {
    if (!alive.expired()) on_head(id, head);
  };
  handlers.on_body = [this, alive, id](std::string_view bytes) {
    return !alive.expired() && on_body(id, bytes);
  };
  handlers.on_done = [this, alive, id](std::optional<Error> error, const CallReport& report) {
    if (!alive.expired()) on_done(id, std::move(error), report);
  };
  ref.http = client_->start(std::move(http), std::move(handlers));
  return id;
}

void HttpChatProvider::cancel(CallId id) {
  auto found = calls_.find(id);
  if (found == calls_.end() || found->second->cancelled_by_caller) return;
  Call& call = *found->second;
  call.cancelled_by_caller = true;
  if (call.http) client_->cancel(call.http);  // its on_done completes the call
}

void HttpChatProvider::on_head(CallId id, const HttpResponseHead& head) {
  auto found = calls_.find(id);
  if (found == calls_.end()) return;
  Call& call = *found->second;
  call.status = head.status;
  call.body.clear();
  call.failure.reset();
  call.decoder.reset();
  // A server may answer a stream request with one JSON body (an error, or a server that
  // ignores `stream`): read it whole.
  const std::string type = head.header("content-type");
  call.collect_body = head.status < 200 || head.status >= 300 || !call.streaming ||
                      type.find("application/json") != std::string::npos;
  if (!call.collect_body) {
    call.decoder = make_stream_decoder([&call](const StreamChunk& chunk) {
      if (!call.on_chunk) return;
      call.delivered = true;
      call.on_chunk(chunk);
    });
  }
}

bool HttpChatProvider::on_body(CallId id, std::string_view bytes) {
  auto found = calls_.find(id);
  if (found == calls_.end()) return false;
  Call& call = *found->second;
  if (call.failure) return call.delivered;
  if (call.collect_body) {
    call.body.append(bytes);  // bounded by the transport's max_response_bytes
    return false;
  }
  try {
    call.decoder->feed(bytes);
  } catch (const Error& e) {
    call.failure = e;
    client_->cancel(call.http);  // the rest of the stream is of no use
  }
  return call.delivered;
}

void HttpChatProvider::on_done(CallId id, std::optional<Error> error, const CallReport& report) {
  auto found = calls_.find(id);
  if (found == calls_.end()) return;
  Call& call = *found->second;
  call.http = 0;
  std::variant<Reply, Error> result = Error(ErrorCode::internal, "unset");
  try {
    if (call.cancelled_by_caller) {
      throw Error(ErrorCode::cancelled, "the LLM call was cancelled");
    } else if (call.failure) {
      throw *call.failure;
    } else if (error) {
      if (call.streaming && call.delivered && error->code() == ErrorCode::network)
        throw Error(ErrorCode::incomplete_stream,
                    "the stream broke off after part of the reply: " + error->message());
      throw *error;
    } else if (call.status < 200 || call.status >= 300) {
      throw classify_error(call.status, call.body);
    } else if (call.collect_body) {
      result = parse_reply(parse_wire_json(call.body, name() + " response"));
    } else {
      call.decoder->end_of_body();
      if (!call.decoder->finished())
        throw Error(ErrorCode::incomplete_stream,
                    "the " + name() + " stream ended before its terminator (the connection " +
                        "closed early); the partial reply is discarded");
      result = call.decoder->take_reply();
    }
  } catch (const Error& e) {
    result = e;
  }
  complete(id, std::move(result), &report);
}

void HttpChatProvider::complete(CallId id, std::variant<Reply, Error> result,
                                const CallReport* report) {
  auto found = calls_.find(id);
  if (found == calls_.end()) return;
  std::unique_ptr<Call> call = std::move(found->second);
  calls_.erase(found);
  Outcome outcome{Error(ErrorCode::internal, "unset"), std::move(call->trace)};
  if (report) {
    outcome.trace.attempts = report->attempts;
    outcome.trace.latency_ms = static_cast<double>(report->total_latency.count());
  }
  if (auto* reply = std::get_if<Reply>(&result)) {
    if (reply->model.empty()) reply->model = call->model;
    outcome.trace.usage = reply->usage;
    outcome.trace.finish_reason = reply->finish_reason;
    outcome.trace.cost_usd = call_cost_usd(settings_.prices, reply->model, reply->usage);
    if (outcome.trace.cost_usd == 0)
      outcome.trace.cost_usd = call_cost_usd(settings_.prices, call->model, reply->usage);
    outcome.result = std::move(*reply);
  } else {
    outcome.result = without_secrets(std::get<Error>(result));
  }
  if (call->done) call->done(std::move(outcome));
}

Error HttpChatProvider::without_secrets(const Error& error) const {
  std::string message = scrub_secrets(error.message());
  // A key of any shape (a local server's token) is removed even if the scrubber missed it.
  if (settings_.api_key.size() >= 4) {
    for (auto at = message.find(settings_.api_key); at != std::string::npos;
         at = message.find(settings_.api_key, at))
      message.replace(at, settings_.api_key.size(), "***");
  }
  return Error(error.code(), std::move(message), error.source(), error.line());
}

}  // namespace luagent::llm
