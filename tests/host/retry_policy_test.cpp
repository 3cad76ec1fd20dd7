#define BOOST_TEST_MODULE retry_policy
#include <boost/test/unit_test.hpp>

#include <chrono>

#include "llm/retry_policy.hpp"

using namespace std::chrono_literals;
using luagent::ErrorCode;
using luagent::llm::HttpResponseHead;
using luagent::llm::RetryOptions;
using luagent::llm::RetryPolicy;

namespace {

HttpResponseHead head_with(int status, std::vector<std::pair<std::string, std::string>> headers) {
  HttpResponseHead head;
  head.status = status;
  head.headers = std::move(headers);
  return head;
}

RetryOptions no_jitter() {
  RetryOptions options;
  options.jitter = 0;
  return options;
}

}  // namespace

BOOST_AUTO_TEST_CASE(retryable_statuses_match_the_sdks) {
  RetryPolicy policy({}, 1);
  for (int status : {408, 409, 429, 500, 502, 503, 504, 529}) {
    BOOST_TEST_CONTEXT("status " << status) {
      BOOST_TEST(RetryPolicy::is_retryable_status(status));
      BOOST_TEST(policy.delay_before_retry(0, status, nullptr, nullptr).has_value());
    }
  }
  for (int status : {200, 201, 204, 301, 400, 401, 403, 404, 413, 422}) {
    BOOST_TEST_CONTEXT("status " << status) {
      BOOST_TEST(!RetryPolicy::is_retryable_status(status));
      BOOST_TEST(!policy.delay_before_retry(0, status, nullptr, nullptr).has_value());
    }
  }
}

BOOST_AUTO_TEST_CASE(transport_errors_retry_only_network_and_timeout) {
  RetryPolicy policy({}, 1);
  for (ErrorCode code : {ErrorCode::network, ErrorCode::timeout})
    BOOST_TEST(policy.delay_before_retry(0, 0, &code, nullptr).has_value());
  for (ErrorCode code : {ErrorCode::cancelled, ErrorCode::limit, ErrorCode::usage})
    BOOST_TEST(!policy.delay_before_retry(0, 0, &code, nullptr).has_value());
}

BOOST_AUTO_TEST_CASE(default_allows_two_retries) {
  RetryPolicy policy({}, 1);
  BOOST_TEST(policy.options().max_retries == 2);
  BOOST_TEST(policy.delay_before_retry(0, 500, nullptr, nullptr).has_value());
  BOOST_TEST(policy.delay_before_retry(1, 500, nullptr, nullptr).has_value());
  BOOST_TEST(!policy.delay_before_retry(2, 500, nullptr, nullptr).has_value());
}

BOOST_AUTO_TEST_CASE(backoff_doubles_from_half_a_second_up_to_eight) {
  RetryOptions options = no_jitter();
  options.max_retries = 10;
  RetryPolicy policy(options, 1);
  std::vector<long> expected{500, 1000, 2000, 4000, 8000, 8000, 8000};
  for (int attempt = 0; attempt < static_cast<int>(expected.size()); ++attempt)
    BOOST_TEST(policy.delay_before_retry(attempt, 503, nullptr, nullptr)->count() ==
               expected[attempt]);
}

BOOST_AUTO_TEST_CASE(jitter_only_shortens_by_up_to_a_quarter_and_is_seedable) {
  RetryOptions options;
  options.max_retries = 10;
  RetryPolicy first(options, 42), second(options, 42), other(options, 43);
  bool any_shortened = false, any_different = false;
  for (int i = 0; i < 200; ++i) {
    int attempt = i % 5;
    long full = std::min(500L << attempt, 8000L);
    long a = first.delay_before_retry(attempt, 429, nullptr, nullptr)->count();
    long b = second.delay_before_retry(attempt, 429, nullptr, nullptr)->count();
    long c = other.delay_before_retry(attempt, 429, nullptr, nullptr)->count();
    BOOST_TEST(a == b);  // same seed, same sequence
    BOOST_TEST(a <= full);
    BOOST_TEST(a >= full * 3 / 4);
    any_shortened |= a < full;
    any_different |= a != c;
  }
  BOOST_TEST(any_shortened);
  BOOST_TEST(any_different);
}

BOOST_AUTO_TEST_CASE(server_hints_are_obeyed_when_reasonable) {
  RetryPolicy policy(no_jitter(), 1);
  auto delay = [&](std::vector<std::pair<std::string, std::string>> headers) {
    HttpResponseHead head = head_with(429, std::move(headers));
    return policy.delay_before_retry(0, 429, nullptr, &head)->count();
  };
  BOOST_TEST(delay({{"retry-after-ms", "250"}}) == 250);
  BOOST_TEST(delay({{"Retry-After-Ms", "1234.4"}}) == 1234);
  BOOST_TEST(delay({{"Retry-After", "1"}}) == 1000);
  BOOST_TEST(delay({{"retry-after", "2.5"}}) == 2500);
  BOOST_TEST(delay({{"retry-after-ms", "300"}, {"retry-after", "7"}}) == 300);  // ms wins
  BOOST_TEST(delay({{"retry-after", "60"}}) == 60000);
  // Out of (0, 60 s]: ignored, the backoff applies.
  BOOST_TEST(delay({{"retry-after", "61"}}) == 500);
  BOOST_TEST(delay({{"retry-after", "0"}}) == 500);
  BOOST_TEST(delay({{"retry-after", "-3"}}) == 500);
  BOOST_TEST(delay({{"retry-after", "soon"}}) == 500);
  BOOST_TEST(delay({{"retry-after-ms", "nan"}}) == 500);
  BOOST_TEST(delay({{"retry-after", "1e400"}}) == 500);
}

BOOST_AUTO_TEST_CASE(retry_after_http_date_is_measured_from_now) {
  HttpResponseHead head = head_with(503, {{"Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT"}});
  auto now = std::chrono::system_clock::time_point(std::chrono::seconds(784111777 - 3));
  auto hint = RetryPolicy::server_requested_delay(head, now);
  BOOST_REQUIRE(hint.has_value());
  BOOST_TEST(hint->count() == 3000);
  auto later = std::chrono::system_clock::time_point(std::chrono::seconds(784111777 + 10));
  BOOST_TEST(RetryPolicy::server_requested_delay(head, later)->count() == -10000);
}

BOOST_AUTO_TEST_CASE(http_date_parses_all_three_forms) {
  BOOST_TEST(*RetryPolicy::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777);
  BOOST_TEST(*RetryPolicy::parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777);
  BOOST_TEST(*RetryPolicy::parse_http_date("Sun Nov  6 08:49:37 1994") == 784111777);
  BOOST_TEST(*RetryPolicy::parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT") == 0);
  for (const char* bad :
       {"", "tomorrow", "Sun, 31 Feb 2025 00:00:00 GMT", "Sun, 06 Nov 1994 25:00:00 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 PST"})
    BOOST_TEST(!RetryPolicy::parse_http_date(bad).has_value(), "accepted '" << bad << "'");
}

BOOST_AUTO_TEST_CASE(x_should_retry_overrides_the_status) {
  RetryPolicy policy({}, 1);
  HttpResponseHead no = head_with(429, {{"x-should-retry", "false"}});
  BOOST_TEST(!policy.delay_before_retry(0, 429, nullptr, &no).has_value());
  HttpResponseHead yes = head_with(400, {{"X-Should-Retry", "true"}});
  BOOST_TEST(policy.delay_before_retry(0, 400, nullptr, &yes).has_value());
  HttpResponseHead other = head_with(400, {{"x-should-retry", "maybe"}});
  BOOST_TEST(!policy.delay_before_retry(0, 400, nullptr, &other).has_value());
  // It never extends the retry budget.
  BOOST_TEST(!policy.delay_before_retry(2, 400, nullptr, &yes).has_value());
}

BOOST_AUTO_TEST_CASE(bad_options_are_usage_errors) {
  RetryOptions negative;
  negative.max_retries = -1;
  BOOST_CHECK_EXCEPTION(RetryPolicy{negative}, luagent::Error,
                        [](const luagent::Error& e) { return e.code() == ErrorCode::usage; });
  RetryOptions jitter;
  jitter.jitter = 1.5;
  BOOST_CHECK_EXCEPTION(RetryPolicy{jitter}, luagent::Error,
                        [](const luagent::Error& e) { return e.code() == ErrorCode::usage; });
}
