// When and how long to wait before retrying an LLM HTTP call, as the official OpenAI and
// Anthropic SDKs do it: retry connection errors, timeouts, 408, 409, 429 and 5xx (529
// included); exponential backoff with downward jitter; the server's retry-after-ms /
// Retry-After honoured when reasonable; x-should-retry overrides the status.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string_view>

#include "llm/http_transport.hpp"
#include "luagent/error.hpp"

namespace luagent::llm {

struct RetryOptions {
  int max_retries = 2;  // retries after the first attempt
  std::chrono::milliseconds initial_delay{500};
  std::chrono::milliseconds max_delay{8000};
  double jitter = 0.25;  // the backoff is scaled by a factor in (1 - jitter, 1]
  std::chrono::milliseconds max_server_delay{60000};  // larger server hints are ignored
};

class RetryPolicy {
 public:
  /// `seed` makes the jitter reproducible (tests); without one it comes from random_device.
  explicit RetryPolicy(RetryOptions options = {}, std::optional<std::uint64_t> seed = {});

  /// How long to wait before retrying after attempt number `attempt` (0 = the first) failed,
  /// or nullopt when it must not be retried. Give the HTTP status (0 when there was no
  /// response), the transport error code (nullptr when the exchange completed) and the
  /// response head when there was one.
  std::optional<std::chrono::milliseconds> delay_before_retry(int attempt, int http_status_or_0,
                                                              const ErrorCode* transport_error,
                                                              const HttpResponseHead* head);

  /// True for statuses the SDKs retry: 408, 409, 429 and every 5xx (529 included).
  static bool is_retryable_status(int status);
  /// True for transport failures worth another attempt: network and timeout.
  static bool is_retryable_transport_error(ErrorCode code);
  /// The server's requested wait from retry-after-ms or Retry-After (seconds, fractional
  /// seconds, or an HTTP-date measured against `now`); nullopt when absent or unparsable.
  static std::optional<std::chrono::milliseconds> server_requested_delay(
      const HttpResponseHead& head,
      std::chrono::system_clock::time_point now = std::chrono::system_clock::now());
  /// Seconds since the epoch of an HTTP-date (IMF-fixdate, RFC 850 or asctime form).
  static std::optional<std::int64_t> parse_http_date(std::string_view text);

  const RetryOptions& options() const { return options_; }

 private:
  RetryOptions options_;
  std::mt19937_64 random_;
};

}  // namespace luagent::llm
