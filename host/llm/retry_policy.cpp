#include "llm/retry_policy.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

namespace luagent::llm {
namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// A whole-string decimal number ("1", "0.25", "1e3"); nullopt for anything else.
std::optional<double> parse_number(std::string_view text) {
  text = trim(text);
  if (text.empty() || text.size() > 64) return std::nullopt;
  std::string copy(text);
  char* end = nullptr;
  double value = std::strtod(copy.c_str(), &end);
  if (end != copy.c_str() + copy.size() || !std::isfinite(value)) return std::nullopt;
  return value;
}

std::optional<int> parse_int(std::string_view text, std::size_t min_digits,
                             std::size_t max_digits) {
  if (text.size() < min_digits || text.size() > max_digits) return std::nullopt;
  int value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

std::optional<unsigned> parse_month(std::string_view name) {
  static constexpr std::array<std::string_view, 12> kMonths{
      "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (unsigned i = 0; i < kMonths.size(); ++i)
    if (name == kMonths[i]) return i + 1;
  return std::nullopt;
}

// "hh:mm:ss" as seconds into the day.
std::optional<int> parse_clock(std::string_view text) {
  if (text.size() != 8 || text[2] != ':' || text[5] != ':') return std::nullopt;
  auto hours = parse_int(text.substr(0, 2), 2, 2);
  auto minutes = parse_int(text.substr(3, 2), 2, 2);
  auto seconds = parse_int(text.substr(6, 2), 2, 2);
  if (!hours || !minutes || !seconds || *hours > 23 || *minutes > 59 || *seconds > 60)
    return std::nullopt;
  return *hours * 3600 + *minutes * 60 + *seconds;
}

}  // namespace

RetryPolicy::RetryPolicy(RetryOptions options, std::optional<std::uint64_t> seed)
    : options_(options), random_(seed ? *seed : std::random_device{}()) {
  if (options_.max_retries < 0) throw Error(ErrorCode::usage, "max_retries must not be negative");
  if (options_.initial_delay.count() < 0 || options_.max_delay.count() < 0)
    throw Error(ErrorCode::usage, "retry delays must not be negative");
  if (!(options_.jitter >= 0 && options_.jitter <= 1))
    throw Error(ErrorCode::usage, "retry jitter must be between 0 and 1");
}

bool RetryPolicy::is_retryable_status(int status) {
  return status == 408 || status == 409 || status == 429 || (status >= 500 && status <= 599);
}

bool RetryPolicy::is_retryable_transport_error(ErrorCode code) {
  return code == ErrorCode::network || code == ErrorCode::timeout;
}

std::optional<std::int64_t> RetryPolicy::parse_http_date(std::string_view text) {
  // Split on blanks, commas and the dashes of the RFC 850 form.
  std::vector<std::string_view> tokens;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= text.size() && tokens.size() < 8; ++i) {
    if (i == text.size() || text[i] == ' ' || text[i] == ',' || text[i] == '-') {
      if (i > start) tokens.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  std::optional<int> day, year, clock;
  std::optional<unsigned> month;
  if (tokens.size() == 5 && parse_month(tokens[1])) {  // asctime: Sun Nov  6 08:49:37 1994
    month = parse_month(tokens[1]);
    day = parse_int(tokens[2], 1, 2);
    clock = parse_clock(tokens[3]);
    year = parse_int(tokens[4], 4, 4);
  } else if (tokens.size() == 6 && tokens[5] == "GMT") {  // IMF-fixdate and RFC 850
    day = parse_int(tokens[1], 1, 2);
    month = parse_month(tokens[2]);
    year = parse_int(tokens[3], 2, 4);
    clock = parse_clock(tokens[4]);
    if (year && tokens[3].size() == 2) *year += *year >= 70 ? 1900 : 2000;
  }
  if (!day || !month || !year || !clock) return std::nullopt;
  std::chrono::year_month_day date{std::chrono::year(*year), std::chrono::month(*month),
                                   std::chrono::day(static_cast<unsigned>(*day))};
  if (!date.ok()) return std::nullopt;
  auto days = std::chrono::sys_days(date).time_since_epoch().count();
  return static_cast<std::int64_t>(days) * 86400 + *clock;
}

std::optional<std::chrono::milliseconds> RetryPolicy::server_requested_delay(
    const HttpResponseHead& head, std::chrono::system_clock::time_point now) {
  using std::chrono::milliseconds;
  // retry-after-ms (non-standard, OpenAI/Anthropic) wins over Retry-After when it parses.
  if (auto ms = parse_number(head.header("retry-after-ms")))
    return milliseconds(static_cast<std::int64_t>(std::llround(std::clamp(*ms, -1e12, 1e12))));
  std::string retry_after = head.header("retry-after");
  if (retry_after.empty()) return std::nullopt;
  if (auto seconds = parse_number(retry_after))
    return milliseconds(
        static_cast<std::int64_t>(std::llround(std::clamp(*seconds, -1e9, 1e9) * 1000)));
  if (auto when = parse_http_date(trim(retry_after))) {
    auto target = std::chrono::system_clock::time_point(std::chrono::seconds(*when));
    return std::chrono::duration_cast<milliseconds>(target - now);
  }
  return std::nullopt;
}

std::optional<std::chrono::milliseconds> RetryPolicy::delay_before_retry(
    int attempt, int http_status_or_0, const ErrorCode* transport_error,
    const HttpResponseHead* head) {
  if (attempt < 0 || attempt >= options_.max_retries) return std::nullopt;
  bool retry = false;
  if (transport_error) {
    retry = is_retryable_transport_error(*transport_error);
  } else {
    std::string should_retry = head ? head->header("x-should-retry") : std::string();
    if (should_retry == "true") {
      retry = true;
    } else if (should_retry == "false") {
      retry = false;
    } else {
      retry = is_retryable_status(http_status_or_0);
    }
  }
  if (!retry) return std::nullopt;

  if (head) {
    // A reasonable server hint is obeyed as is; zero, negative or huge ones are ignored.
    if (auto hint = server_requested_delay(*head);
        hint && hint->count() > 0 && *hint <= options_.max_server_delay)
      return *hint;
  }
  double backoff =
      static_cast<double>(options_.initial_delay.count()) * std::pow(2.0, std::min(attempt, 30));
  backoff = std::min(backoff, static_cast<double>(options_.max_delay.count()));
  double factor = 1.0 - options_.jitter * std::uniform_real_distribution<double>(0.0, 1.0)(random_);
  return std::chrono::milliseconds(static_cast<std::int64_t>(backoff * factor));
}

}  // namespace luagent::llm
