#define BOOST_TEST_MODULE retrying_client
#include <boost/test/unit_test.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ctime>
#include <memory>
#include <optional>
#include <string>

#include "event_loop.hpp"
#include "llm/retrying_client.hpp"
#include "support/loop_runner.hpp"
#include "support/wire_server.hpp"

using namespace std::chrono_literals;
using luagent::ErrorCode;
using luagent::EventLoop;
using luagent::llm::CallReport;
using luagent::llm::HttpRequest;
using luagent::llm::HttpResponseHead;
using luagent::llm::HttpTransport;
using luagent::llm::RetryingClient;
using luagent::llm::RetryingHandlers;
using luagent::llm::RetryOptions;
using luagent::llm::RetryPolicy;
using luagent::test::Fault;
using luagent::test::ScriptedResponse;
using luagent::test::WireServer;

namespace {

struct Outcome {
  std::vector<int> heads;  // status of every head shown to the consumer
  std::string body;        // bytes since the last head
  bool done = false;
  std::optional<luagent::Error> error;
  CallReport report;
};

RetryOptions fast_backoff() {
  RetryOptions options;
  options.initial_delay = 40ms;
  options.jitter = 0;
  return options;
}

struct Harness {
  EventLoop loop;
  HttpTransport transport;
  RetryingClient client;

  explicit Harness(RetryOptions options = fast_backoff())
      : client(loop, transport, RetryPolicy(options, 7)) {
    loop.add_driver(&transport);
  }
  ~Harness() { loop.remove_driver(&transport); }

  std::shared_ptr<Outcome> call(HttpRequest request, bool consumer_shows_bytes = false,
                                luagent::llm::HttpCallId* id = nullptr) {
    auto outcome = std::make_shared<Outcome>();
    RetryingHandlers handlers;
    handlers.on_head = [outcome](const HttpResponseHead& head) {
      outcome->heads.push_back(head.status);
      outcome->body.clear();
    };
    handlers.on_body = [outcome, consumer_shows_bytes](std::string_view bytes) {
      outcome->body.append(bytes);
      return consumer_shows_bytes;
    };
    handlers.on_done = [outcome](std::optional<luagent::Error> error, const CallReport& report) {
      BOOST_TEST(!outcome->done, "on_done ran twice");
      outcome->done = true;
      outcome->error = std::move(error);
      outcome->report = report;
    };
    auto started = client.start(std::move(request), std::move(handlers));
    if (id) *id = started;
    return outcome;
  }

  void wait_for(const std::shared_ptr<Outcome>& outcome, std::chrono::milliseconds limit = 5s) {
    BOOST_REQUIRE(luagent::test::run_loop_until(
        loop, [&] { return outcome->done; }, limit));
  }
};

HttpRequest post(const WireServer& server) {
  HttpRequest request;
  request.url = server.url("/v1/chat/completions");
  request.headers = {{"content-type", "application/json"}};
  request.body = R"({"model":"m"})";
  request.idle_timeout_ms = 500;
  return request;
}

ScriptedResponse ok(std::string body = R"({"ok":true})") {
  ScriptedResponse response;
  response.headers = {{"content-type", "application/json"}};
  response.body = std::move(body);
  return response;
}

ScriptedResponse status(int code, std::vector<std::pair<std::string, std::string>> headers = {}) {
  ScriptedResponse response;
  response.status = code;
  response.reason = "Scripted";
  response.headers = std::move(headers);
  response.body = R"({"error":")" + std::to_string(code) + "\"}";
  return response;
}

long elapsed_ms(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

std::string http_date(std::time_t when) {
  std::tm parts{};
  gmtime_r(&when, &parts);
  char text[64];
  std::strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &parts);
  return text;
}

// Waits `expected_ms` (the server asked for it) before the second, successful attempt.
void check_honoured_wait(ScriptedResponse first, long min_ms, long max_ms) {
  WireServer server;
  server.enqueue(std::move(first));
  server.enqueue(ok());
  Harness harness;
  auto start = std::chrono::steady_clock::now();
  auto outcome = harness.call(post(server));
  harness.wait_for(outcome);
  long took = elapsed_ms(start);
  BOOST_TEST(!outcome->error.has_value());
  BOOST_TEST(outcome->heads == std::vector<int>{200});  // the 429 never reached the consumer
  BOOST_TEST(outcome->body == R"({"ok":true})");
  BOOST_TEST(server.request_count() == 2u);
  BOOST_TEST(outcome->report.attempts == 2);
  BOOST_TEST(outcome->report.history[0].status == 429);
  BOOST_TEST(took >= min_ms);
  BOOST_TEST(took <= max_ms);
}

}  // namespace

BOOST_AUTO_TEST_CASE(rate_limited_with_retry_after_ms_waits_that_long) {
  check_honoured_wait(status(429, {{"retry-after-ms", "300"}}), 300, 700);
}

BOOST_AUTO_TEST_CASE(rate_limited_with_retry_after_seconds_waits_that_long) {
  check_honoured_wait(status(429, {{"Retry-After", "1"}}), 1000, 1500);
}

BOOST_AUTO_TEST_CASE(rate_limited_with_retry_after_http_date_waits_until_then) {
  // Whole seconds on the wire: "now + 2 s" lands between 1 and 2 s from now.
  std::string when = http_date(std::time(nullptr) + 2);
  check_honoured_wait(status(429, {{"Retry-After", when}}), 950, 2500);
}

BOOST_AUTO_TEST_CASE(server_error_then_success_is_retried) {
  WireServer server;
  server.enqueue(luagent::test::load_fixture_response("errors", "openai_500_server_error"));
  server.enqueue(ok());
  Harness harness;
  auto outcome = harness.call(post(server));
  harness.wait_for(outcome);
  BOOST_TEST(!outcome->error.has_value());
  BOOST_TEST(outcome->heads == std::vector<int>{200});
  BOOST_TEST(server.request_count() == 2u);
  BOOST_TEST(outcome->report.history[1].waited_before.count() == 40);
  // Every attempt sent the same request.
  auto requests = server.requests();
  BOOST_TEST(requests[0].body == requests[1].body);
}

BOOST_AUTO_TEST_CASE(overloaded_529_is_retried) {
  WireServer server;
  server.enqueue(luagent::test::load_fixture_response("errors", "anthropic_529_overloaded_error"));
  server.enqueue(luagent::test::load_fixture_response("errors", "anthropic_529_overloaded_error"));
  server.enqueue(ok());
  Harness harness;
  auto outcome = harness.call(post(server));
  harness.wait_for(outcome);
  BOOST_TEST(!outcome->error.has_value());
  BOOST_TEST(server.request_count() == 3u);
  BOOST_TEST(outcome->report.attempts == 3);
  BOOST_TEST(outcome->report.history[2].waited_before.count() == 80);  // doubled
}

BOOST_AUTO_TEST_CASE(unauthorized_is_not_retried_and_reaches_the_consumer_verbatim) {
  WireServer server;
  auto recorded = luagent::test::load_fixture_response("errors", "openai_401_invalid_api_key");
  server.enqueue(recorded);
  server.enqueue(ok());
  Harness harness;
  auto outcome = harness.call(post(server));
  harness.wait_for(outcome);
  BOOST_TEST(!outcome->error.has_value());  // the exchange worked; the provider maps the 401
  BOOST_TEST(outcome->heads == std::vector<int>{401});
  BOOST_TEST((outcome->body == recorded.body));
  BOOST_TEST(outcome->report.final_status == 401);
  BOOST_TEST(server.request_count() == 1u);
}

BOOST_AUTO_TEST_CASE(bad_request_is_not_retried) {
  WireServer server;
  server.enqueue(
      luagent::test::load_fixture_response("errors", "anthropic_400_invalid_request_error"));
  server.enqueue(ok());
  Harness harness;
  auto outcome = harness.call(post(server));
  harness.wait_for(outcome);
  BOOST_TEST(outcome->heads == std::vector<int>{400});
  BOOST_TEST(server.request_count() == 1u);
}

BOOST_AUTO_TEST_CASE(server_can_veto_a_retry) {
  WireServer server;
  server.enqueue(status(503, {{"x-should-retry", "false"}}));
  server.enqueue(ok());
  Harness harness;
  auto outcome = harness.call(post(server));
  harness.wait_for(outcome);
  BOOST_TEST(outcome->heads == std::vector<int>{503});
  BOOST_TEST(server.request_count() == 1u);
}

BOOST_AUTO_TEST_CASE(retries_run_out_and_the_last_error_response_is_delivered) {
  WireServer server;
  auto recorded = luagent::test::load_fixture_response("errors", "anthropic_500_api_error");
  for (int i = 0; i < 4; ++i) server.enqueue(recorded);
  Harness harness;
  auto outcome = harness.call(post(server));
  harness.wait_for(outcome);
  BOOST_TEST(!outcome->error.has_value());
  BOOST_TEST(outcome->heads == std::vector<int>{500});
  BOOST_TEST((outcome->body == recorded.body));
  BOOST_TEST(server.request_count() == 3u);  // 1 + max_retries (2)
  BOOST_TEST(outcome->report.attempts == 3);
}

BOOST_AUTO_TEST_CASE(connection_refused_is_retried_then_reported_as_network) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  HttpRequest request;
  request.url = "http://127.0.0.1:" + std::to_string(ntohs(address.sin_port)) + "/";
  Harness harness;
  auto outcome = harness.call(request);
  harness.wait_for(outcome);
  BOOST_REQUIRE(outcome->error.has_value());
  BOOST_TEST(outcome->error->code() == ErrorCode::network);
  BOOST_TEST(outcome->report.attempts == 3);
  BOOST_TEST(outcome->heads.empty());
}

BOOST_AUTO_TEST_CASE(stream_broken_after_delivery_is_not_retried) {
  WireServer server;
  auto stream = luagent::test::load_fixture_response("openai-chat", "text_stream");
  stream.fault = Fault::reset_after_bytes;
  stream.fault_bytes = 200;
  server.enqueue(stream);
  server.enqueue(luagent::test::load_fixture_response("openai-chat", "text_stream"));
  Harness harness;
  auto outcome = harness.call(post(server), /*consumer_shows_bytes=*/true);
  harness.wait_for(outcome);
  BOOST_REQUIRE(outcome->error.has_value());
  BOOST_TEST(outcome->error->code() == ErrorCode::network);
  BOOST_TEST(server.request_count() == 1u);
  BOOST_TEST(outcome->report.attempts == 1);
}

BOOST_AUTO_TEST_CASE(stream_broken_before_delivery_is_retried_from_the_start) {
  WireServer server;
  auto recorded = luagent::test::load_fixture_response("openai-chat", "text_stream");
  auto broken = recorded;
  broken.fault = Fault::stall_after_bytes;
  broken.fault_bytes = 200;
  server.enqueue(broken);
  server.enqueue(recorded);
  Harness harness;
  auto outcome = harness.call(post(server), /*consumer_shows_bytes=*/false);
  harness.wait_for(outcome);
  BOOST_TEST(!outcome->error.has_value());
  BOOST_TEST(outcome->heads == (std::vector<int>{200, 200}));  // decoder told to start over
  BOOST_TEST((outcome->body == recorded.body));
  BOOST_TEST(server.request_count() == 2u);
  BOOST_REQUIRE(outcome->report.history.size() == 2u);
  BOOST_TEST((outcome->report.history[0].error == ErrorCode::timeout));
}

BOOST_AUTO_TEST_CASE(cancel_during_backoff_reports_cancelled) {
  WireServer server;
  server.enqueue(status(429, {{"retry-after", "5"}}));
  Harness harness;
  luagent::llm::HttpCallId id = 0;
  auto outcome = harness.call(post(server), false, &id);
  BOOST_REQUIRE(luagent::test::run_loop_until(harness.loop, [&] {
    return server.request_count() == 1 && harness.transport.in_flight() == 0;
  }));
  auto start = std::chrono::steady_clock::now();
  harness.client.cancel(id);
  BOOST_TEST(!outcome->done);  // never from inside cancel()
  harness.wait_for(outcome, 1s);
  BOOST_TEST(outcome->error->code() == ErrorCode::cancelled);
  BOOST_TEST(elapsed_ms(start) < 500);
  BOOST_TEST(server.request_count() == 1u);
  BOOST_TEST(harness.client.in_flight() == 0u);
}

BOOST_AUTO_TEST_CASE(cancel_during_a_transfer_reports_cancelled) {
  WireServer server;
  ScriptedResponse stalled = ok();
  stalled.fault = Fault::stall_after_headers;
  server.enqueue(stalled);
  Harness harness;
  luagent::llm::HttpCallId id = 0;
  auto outcome = harness.call(post(server), false, &id);
  BOOST_REQUIRE(
      luagent::test::run_loop_until(harness.loop, [&] { return !outcome->heads.empty(); }));
  harness.client.cancel(id);
  harness.wait_for(outcome, 1s);
  BOOST_TEST(outcome->error->code() == ErrorCode::cancelled);
  BOOST_TEST(outcome->report.attempts == 1);
  BOOST_TEST(server.request_count() == 1u);
}
