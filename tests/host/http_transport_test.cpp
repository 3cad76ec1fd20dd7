#define BOOST_TEST_MODULE http_transport
#include <boost/test/unit_test.hpp>

#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "event_loop.hpp"
#include "llm/http_transport.hpp"
#include "support/bench_process.hpp"
#include "support/loop_runner.hpp"
#include "support/wire_server.hpp"

using namespace std::chrono_literals;
using luagent::ErrorCode;
using luagent::EventLoop;
using luagent::llm::HttpHandlers;
using luagent::llm::HttpRequest;
using luagent::llm::HttpResponseHead;
using luagent::llm::HttpTransport;
using luagent::test::Fault;
using luagent::test::Framing;
using luagent::test::ScriptedResponse;
using luagent::test::WireServer;

namespace {

struct Outcome {
  std::optional<HttpResponseHead> head;
  std::string body;
  int body_calls = 0;
  bool done = false;
  std::optional<luagent::Error> error;
};

struct Client {
  EventLoop loop;
  HttpTransport transport;

  Client() { loop.add_driver(&transport); }
  ~Client() { loop.remove_driver(&transport); }

  std::shared_ptr<Outcome> fetch(HttpRequest request, luagent::llm::TransferId* id = nullptr) {
    auto outcome = std::make_shared<Outcome>();
    HttpHandlers handlers;
    handlers.on_head = [outcome](const HttpResponseHead& head) { outcome->head = head; };
    handlers.on_body = [outcome](std::string_view bytes) {
      outcome->body.append(bytes);
      ++outcome->body_calls;
    };
    handlers.on_done = [outcome](std::optional<luagent::Error> error) {
      BOOST_TEST(!outcome->done, "on_done ran twice");
      outcome->done = true;
      outcome->error = std::move(error);
    };
    auto started = transport.start(std::move(request), std::move(handlers));
    if (id) *id = started;
    return outcome;
  }

  void wait_for(const std::shared_ptr<Outcome>& outcome, std::chrono::milliseconds limit = 5s) {
    BOOST_REQUIRE(luagent::test::run_loop_until(
        loop, [&] { return outcome->done; }, limit));
  }
};

HttpRequest post(const WireServer& server, const std::string& path, std::string body = "{}") {
  HttpRequest request;
  request.url = server.url(path);
  request.headers = {{"content-type", "application/json"}, {"x-test", "yes"}};
  request.body = std::move(body);
  return request;
}

ScriptedResponse text_response(std::string body) {
  ScriptedResponse response;
  response.headers = {{"content-type", "text/plain"}};
  response.body = std::move(body);
  return response;
}

std::chrono::milliseconds elapsed_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start);
}

long peak_rss_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

// A loopback port that nobody listens on: bound once to learn it, then released.
std::uint16_t unused_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

// A transfer whose response never gets past its headers, once they have arrived: the
// loop then waits in the transport with a transfer in flight, for as long as a test likes.
std::shared_ptr<Outcome> start_stalled_transfer(Client& client, WireServer& server) {
  ScriptedResponse stalled = text_response("never sent");
  stalled.fault = Fault::stall_after_headers;
  server.enqueue(stalled);
  HttpRequest request = post(server, "/stall");
  request.idle_timeout_ms = 0;
  auto outcome = client.fetch(request);
  BOOST_REQUIRE(
      luagent::test::run_loop_until(client.loop, [&] { return outcome->head.has_value(); }));
  return outcome;
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_fixture_arrives_byte_identical_whole_and_fragmented) {
  WireServer server;
  Client client;
  auto cases = luagent::test::list_fixture_cases();
  BOOST_REQUIRE_GE(cases.size(), 50u);
  std::size_t requests = 0;
  for (const auto& [provider, name] : cases) {
    ScriptedResponse recorded = luagent::test::load_fixture_response(provider, name);
    BOOST_REQUIRE(!recorded.body.empty());
    ScriptedResponse whole = recorded;
    ScriptedResponse chunked_random = recorded;
    chunked_random.framing = Framing::chunked;
    chunked_random.random_fragments = 17;
    chunked_random.seed = requests + 7;
    ScriptedResponse split_slowly = recorded;
    split_slowly.split_at = {1, 2, 3, recorded.body.size() / 2, recorded.body.size() - 1};
    split_slowly.fragment_delay = 1ms;
    for (const ScriptedResponse& variant : {whole, chunked_random, split_slowly}) {
      server.enqueue(variant);
      std::string request_body = R"({"case":")" + provider + "/" + name + "\"}";
      auto outcome = client.fetch(post(server, "/v1/" + name, request_body));
      client.wait_for(outcome);
      BOOST_TEST_CONTEXT(provider << "/" << name) {
        BOOST_TEST(!outcome->error.has_value());
        BOOST_REQUIRE(outcome->head.has_value());
        BOOST_TEST(outcome->head->status == recorded.status);
        std::string content_type;
        for (const auto& [key, value] : recorded.headers)
          if (key == "content-type") content_type = value;
        BOOST_TEST(outcome->head->header("Content-Type") == content_type);
        BOOST_TEST((outcome->body == recorded.body), "body differs from the fixture");
        auto seen = server.requests().back();
        BOOST_TEST(seen.method == "POST");
        BOOST_TEST(seen.path == "/v1/" + name);
        BOOST_TEST(seen.body == request_body);
        BOOST_TEST(seen.header("x-test") == "yes");
      }
      ++requests;
    }
  }
  BOOST_TEST(server.request_count() == requests);
  // Keep-alive: one connection served every sequential request.
  BOOST_TEST(server.connection_count() == 1u);
}

BOOST_AUTO_TEST_CASE(fragments_arrive_as_separate_body_callbacks) {
  WireServer server;
  Client client;
  ScriptedResponse response = text_response("data: one\n\ndata: two\n\ndata: three\n\n");
  response.split_at = {5, 11, 20};
  response.fragment_delay = 20ms;
  server.enqueue(response);
  auto outcome = client.fetch(post(server, "/stream"));
  client.wait_for(outcome);
  BOOST_TEST(!outcome->error.has_value());
  BOOST_TEST(outcome->body == response.body);
  BOOST_TEST(outcome->body_calls == 4);  // streamed as they came, not buffered to the end
}

BOOST_AUTO_TEST_CASE(two_hundred_concurrent_transfers_on_one_thread) {
  WireServer server;
  server.set_handler([](const luagent::test::RecordedRequest& request) {
    ScriptedResponse response = text_response("reply to " + request.body);
    response.framing = request.body.size() % 2 ? Framing::chunked : Framing::content_length;
    response.latency = 20ms;
    return response;
  });
  Client client;
  std::vector<std::shared_ptr<Outcome>> outcomes;
  for (int i = 0; i < 200; ++i)
    outcomes.push_back(client.fetch(post(server, "/c", "request " + std::to_string(i))));
  BOOST_TEST(client.transport.in_flight() == 200u);
  BOOST_REQUIRE(luagent::test::run_loop_until(client.loop,
                                              [&] { return client.transport.in_flight() == 0; }));
  for (int i = 0; i < 200; ++i) {
    BOOST_TEST(!outcomes[i]->error.has_value());
    BOOST_TEST(outcomes[i]->body == "reply to request " + std::to_string(i));
  }
  BOOST_TEST(server.request_count() == 200u);
}

BOOST_AUTO_TEST_CASE(connection_refused_is_a_network_error_without_secrets) {
  Client client;
  HttpRequest request;
  request.url = "http://user:hunter2@127.0.0.1:" + std::to_string(unused_port()) +
                "/v1/chat?key=sk-secret-in-query";
  request.headers = {{"authorization", "Bearer sk-secret-in-header"}};
  auto outcome = client.fetch(request);
  client.wait_for(outcome);
  BOOST_REQUIRE(outcome->error.has_value());
  BOOST_TEST(outcome->error->code() == ErrorCode::network);
  std::string message = outcome->error->message();
  BOOST_TEST(message.find("127.0.0.1") != std::string::npos);
  BOOST_TEST(message.find("sk-secret") == std::string::npos);
  BOOST_TEST(message.find("hunter2") == std::string::npos);
  BOOST_TEST(!outcome->head.has_value());
}

BOOST_AUTO_TEST_CASE(reset_mid_stream_is_a_network_error_after_the_bytes_sent) {
  WireServer server;
  Client client;
  ScriptedResponse response = text_response(std::string(1000, 'a'));
  response.fault = Fault::reset_after_bytes;
  response.fault_bytes = 100;
  server.enqueue(response);
  auto outcome = client.fetch(post(server, "/reset"));
  client.wait_for(outcome);
  BOOST_REQUIRE(outcome->error.has_value());
  BOOST_TEST(outcome->error->code() == ErrorCode::network);
  BOOST_TEST(outcome->head->status == 200);
  BOOST_TEST(outcome->body.size() <= 100u);
}

BOOST_AUTO_TEST_CASE(stall_after_headers_fires_the_idle_timer) {
  WireServer server;
  Client client;
  ScriptedResponse response = text_response("never sent");
  response.fault = Fault::stall_after_headers;
  server.enqueue(response);
  HttpRequest request = post(server, "/stall");
  request.idle_timeout_ms = 300;
  auto start = std::chrono::steady_clock::now();
  auto outcome = client.fetch(request);
  client.wait_for(outcome, 3s);
  auto took = elapsed_since(start);
  BOOST_REQUIRE(outcome->error.has_value());
  BOOST_TEST(outcome->error->code() == ErrorCode::timeout);
  BOOST_TEST(outcome->error->message().find("idle") != std::string::npos);
  BOOST_TEST(outcome->head->status == 200);
  BOOST_TEST(outcome->body.empty());
  BOOST_TEST(took.count() >= 300);
  BOOST_TEST(took.count() < 600);
}

BOOST_AUTO_TEST_CASE(stall_mid_stream_fires_the_idle_timer_measured_from_the_last_byte) {
  WireServer server;
  Client client;
  ScriptedResponse response = text_response(std::string(100, 'b'));
  response.split_at = {10};
  response.fragment_delay = 200ms;  // below the idle bound: no timeout between fragments
  response.fault = Fault::stall_after_bytes;
  response.fault_bytes = 20;
  server.enqueue(response);
  HttpRequest request = post(server, "/stall-mid");
  request.idle_timeout_ms = 300;
  auto start = std::chrono::steady_clock::now();
  auto outcome = client.fetch(request);
  client.wait_for(outcome, 3s);
  auto took = elapsed_since(start);
  BOOST_REQUIRE(outcome->error.has_value());
  BOOST_TEST(outcome->error->code() == ErrorCode::timeout);
  BOOST_TEST(outcome->body == std::string(20, 'b'));
  // Timer restarted by the second fragment at ~200 ms: fires at ~500 ms, not ~300 ms.
  BOOST_TEST(took.count() >= 480);
  BOOST_TEST(took.count() < 800);
}

BOOST_AUTO_TEST_CASE(total_timeout_bounds_a_slow_response) {
  WireServer server;
  Client client;
  ScriptedResponse response = text_response("late");
  response.latency = 2s;
  server.enqueue(response);
  HttpRequest request = post(server, "/slow");
  request.total_timeout_ms = 300;
  request.idle_timeout_ms = 0;
  auto start = std::chrono::steady_clock::now();
  auto outcome = client.fetch(request);
  client.wait_for(outcome, 3s);
  BOOST_REQUIRE(outcome->error.has_value());
  BOOST_TEST(outcome->error->code() == ErrorCode::timeout);
  BOOST_TEST(outcome->error->message().find("total timeout") != std::string::npos);
  BOOST_TEST(elapsed_since(start).count() < 700);
}

BOOST_AUTO_TEST_CASE(clean_eof_without_length_or_terminator_delivers_every_byte) {
  WireServer server;
  Client client;
  ScriptedResponse response = luagent::test::load_fixture_response(
      "anthropic-messages", "max_tokens_during_tool_input_stream");
  response.fault = Fault::close_without_terminator;
  response.random_fragments = 5;
  server.enqueue(response);
  auto outcome = client.fetch(post(server, "/eof"));
  client.wait_for(outcome);
  BOOST_TEST(!outcome->error.has_value());
  BOOST_TEST((outcome->body == response.body));
}

BOOST_AUTO_TEST_CASE(fifty_megabyte_body_hits_the_limit_in_bounded_memory) {
  WireServer server;
  Client client;
  ScriptedResponse response;
  response.filler_bytes = 50u << 20;
  server.enqueue(response);
  std::size_t received = 0;
  bool done = false;
  std::optional<luagent::Error> error;
  long rss_before = peak_rss_kib();
  auto start = std::chrono::steady_clock::now();
  HttpHandlers handlers;
  handlers.on_body = [&](std::string_view bytes) { received += bytes.size(); };
  handlers.on_done = [&](std::optional<luagent::Error> e) {
    done = true;
    error = std::move(e);
  };
  client.transport.start(post(server, "/huge"), std::move(handlers));  // default limit: 32 MiB
  BOOST_REQUIRE(luagent::test::run_loop_until(
      client.loop, [&] { return done; }, 10s));
  BOOST_REQUIRE(error.has_value());
  BOOST_TEST(error->code() == ErrorCode::limit);
  BOOST_TEST(error->message().find("limit") != std::string::npos);
  BOOST_TEST(received <= (32u << 20));
  BOOST_TEST(received > (31u << 20));
  BOOST_TEST(elapsed_since(start).count() < 5000);
  BOOST_TEST(peak_rss_kib() - rss_before < 8 * 1024,
             "peak RSS grew by " << peak_rss_kib() - rss_before << " KiB");
}

BOOST_AUTO_TEST_CASE(cancel_in_flight_reports_cancelled_once) {
  WireServer server;
  Client client;
  ScriptedResponse response = text_response("never");
  response.fault = Fault::stall_after_headers;
  server.enqueue(response);
  luagent::llm::TransferId id = 0;
  auto outcome = client.fetch(post(server, "/cancel"), &id);
  BOOST_REQUIRE(
      luagent::test::run_loop_until(client.loop, [&] { return outcome->head.has_value(); }));
  client.transport.cancel(id);
  BOOST_TEST(!outcome->done);  // never from inside cancel()
  client.wait_for(outcome, 1s);
  BOOST_REQUIRE(outcome->error.has_value());
  BOOST_TEST(outcome->error->code() == ErrorCode::cancelled);
  client.transport.cancel(id);  // already finished: ignored
  client.loop.turn(10ms);
  BOOST_TEST(client.transport.in_flight() == 0u);
}

BOOST_AUTO_TEST_CASE(handlers_may_cancel_and_start_transfers) {
  WireServer server;
  Client client;
  ScriptedResponse slow = text_response("0123456789");
  slow.split_at = {2, 4, 6, 8};
  slow.fragment_delay = 10ms;
  server.set_handler([slow](const luagent::test::RecordedRequest& request) {
    if (request.path == "/first") return slow;
    return text_response("reply to " + request.path);
  });

  auto first = std::make_shared<Outcome>();
  std::shared_ptr<Outcome> second, third;
  luagent::llm::TransferId first_id = 0;
  HttpHandlers handlers;
  handlers.on_body = [&](std::string_view bytes) {
    first->body.append(bytes);
    ++first->body_calls;
    client.transport.cancel(first_id);                     // from inside libcurl's callback
    second = client.fetch(post(server, "/from-on-body"));  // likewise
  };
  handlers.on_done = [&](std::optional<luagent::Error> error) {
    first->done = true;
    first->error = std::move(error);
    third = client.fetch(post(server, "/from-on-done"));
  };
  first_id = client.transport.start(post(server, "/first"), std::move(handlers));
  BOOST_REQUIRE(luagent::test::run_loop_until(
      client.loop, [&] { return first->done && second && second->done && third && third->done; }));
  BOOST_TEST(first->body_calls == 1);  // nothing after cancel()
  BOOST_TEST(first->error->code() == ErrorCode::cancelled);
  BOOST_TEST(second->body == "reply to /from-on-body");
  BOOST_TEST(third->body == "reply to /from-on-done");
}

BOOST_AUTO_TEST_CASE(bad_requests_fail_with_usage_errors_after_start_returns) {
  Client client;
  HttpRequest bad_url;
  bad_url.url = "not a url";
  auto outcome = client.fetch(bad_url);
  BOOST_TEST(!outcome->done);
  client.wait_for(outcome);
  BOOST_TEST(outcome->error->code() == ErrorCode::usage);

  HttpRequest injected;
  injected.url = "http://127.0.0.1:1/";
  injected.headers = {{"authorization", "Bearer sk-x\r\nX-Evil: 1"}};
  auto injected_outcome = client.fetch(injected);
  client.wait_for(injected_outcome);
  BOOST_TEST(injected_outcome->error->code() == ErrorCode::usage);
  BOOST_TEST(injected_outcome->error->message().find("sk-x") == std::string::npos);

  HttpRequest ftp;
  ftp.url = "ftp://127.0.0.1/";
  auto ftp_outcome = client.fetch(ftp);
  client.wait_for(ftp_outcome);
  BOOST_TEST(ftp_outcome->error->code() == ErrorCode::usage);
}

BOOST_AUTO_TEST_CASE(body_less_response_still_reports_its_head) {
  WireServer server;
  Client client;
  ScriptedResponse response;
  response.status = 204;
  response.reason = "No Content";
  server.enqueue(response);
  auto outcome = client.fetch(post(server, "/empty"));
  client.wait_for(outcome);
  BOOST_TEST(!outcome->error.has_value());
  BOOST_REQUIRE(outcome->head.has_value());
  BOOST_TEST(outcome->head->status == 204);
  BOOST_TEST(outcome->head->reason == "No Content");
}

BOOST_AUTO_TEST_CASE(server_closing_without_a_response_is_a_network_error) {
  WireServer server;
  Client client;
  ScriptedResponse response;
  response.fault = Fault::refuse;
  server.enqueue(response);
  server.enqueue(response);  // libcurl may retry once on a fresh connection by itself
  auto outcome = client.fetch(post(server, "/refused"));
  client.wait_for(outcome);
  BOOST_REQUIRE(outcome->error.has_value());
  BOOST_TEST(outcome->error->code() == ErrorCode::network);
  BOOST_TEST(!outcome->head.has_value());
  BOOST_TEST(server.request_count() >= 1u);
}

BOOST_AUTO_TEST_CASE(idle_timer_fires_for_one_stalled_transfer_among_hundreds_streaming) {
  // Every transfer has the same 300 ms idle bound; the streaming ones get a byte every
  // 100 ms for ~600 ms, so they outlive their first deadline and must be re-armed from
  // their last byte, while the stalled one must expire on time.
  WireServer server;
  ScriptedResponse streaming = text_response("0123456");
  streaming.split_at = {1, 2, 3, 4, 5, 6};
  streaming.fragment_delay = 100ms;
  ScriptedResponse stalled = text_response("never sent");
  stalled.fault = Fault::stall_after_headers;
  server.set_handler([=](const luagent::test::RecordedRequest& request) {
    return request.path == "/stalled" ? stalled : streaming;
  });
  Client client;
  std::vector<std::shared_ptr<Outcome>> outcomes;
  constexpr int kStreaming = 300;
  for (int i = 0; i < kStreaming; ++i) {
    HttpRequest request = post(server, "/stream");
    request.idle_timeout_ms = 300;
    outcomes.push_back(client.fetch(request));
  }
  HttpRequest request = post(server, "/stalled");
  request.idle_timeout_ms = 300;
  auto start = std::chrono::steady_clock::now();
  auto stalled_outcome = client.fetch(request);
  client.wait_for(stalled_outcome, 3s);
  auto took = elapsed_since(start);
  BOOST_REQUIRE(stalled_outcome->error.has_value());
  BOOST_TEST(stalled_outcome->error->code() == ErrorCode::timeout);
  BOOST_TEST(stalled_outcome->error->message().find("idle") != std::string::npos);
  BOOST_TEST(took.count() >= 300);
  BOOST_TEST(took.count() < 1000);
  BOOST_REQUIRE(luagent::test::run_loop_until(
      client.loop, [&] { return client.transport.in_flight() == 0; }, 10s));
  int failed = 0;
  for (const auto& outcome : outcomes) {
    if (outcome->error || outcome->body != streaming.body) ++failed;
  }
  BOOST_TEST(failed == 0, failed << " streaming transfers failed (e.g. a premature idle timeout)");
}

BOOST_AUTO_TEST_CASE(completions_past_the_deadline_wait_for_the_next_perform_in_order) {
  WireServer server;
  server.set_handler([](const luagent::test::RecordedRequest& request) {
    ScriptedResponse response = text_response("reply to " + request.body);
    response.latency = 50ms;  // all answered together: many completions in one pass
    return response;
  });
  Client client;
  constexpr int kTransfers = 40;
  std::vector<int> finished_order;  // by last body byte: the order libcurl completes them
  std::vector<int> delivered_order;
  std::vector<bool> done(kTransfers, false);
  for (int i = 0; i < kTransfers; ++i) {
    HttpHandlers handlers;
    handlers.on_body = [&, i](std::string_view) { finished_order.push_back(i); };
    handlers.on_done = [&, i](std::optional<luagent::Error> error) {
      BOOST_TEST(!error.has_value());
      BOOST_TEST(!done[i], "on_done ran twice");
      done[i] = true;
      delivered_order.push_back(i);
      std::this_thread::sleep_for(2ms);  // a handler with real cost
    };
    client.transport.start(post(server, "/c", std::to_string(i)), std::move(handlers));
  }
  // Turn with a budget until everything is delivered; a budget of 5 ms must hold back
  // some of a burst of 40 two-millisecond handlers.
  bool held_back = false;
  std::size_t most_in_one_turn = 0;
  auto give_up = std::chrono::steady_clock::now() + 10s;
  while (delivered_order.size() < kTransfers && std::chrono::steady_clock::now() < give_up) {
    std::size_t before = delivered_order.size();
    client.loop.turn(20ms, std::chrono::steady_clock::now() + 5ms);
    most_in_one_turn = std::max(most_in_one_turn, delivered_order.size() - before);
    if (client.transport.queued_completions() > 0) {
      held_back = true;
      BOOST_TEST(client.loop.busy());
      // Queued completions are activity: a long wait must return at once.
      auto start = std::chrono::steady_clock::now();
      std::size_t delivered_before = delivered_order.size();
      client.loop.turn(2s, std::chrono::steady_clock::now() - 1ms);  // deadline passed
      BOOST_TEST(elapsed_since(start).count() < 500);
      BOOST_TEST(delivered_order.size() == delivered_before + 1);  // exactly one per perform
    }
  }
  BOOST_REQUIRE(delivered_order.size() == std::size_t{kTransfers});
  BOOST_TEST(held_back);
  BOOST_TEST(most_in_one_turn < std::size_t{kTransfers});
  BOOST_TEST(finished_order == delivered_order);  // nothing lost, nothing reordered
  BOOST_TEST(client.transport.in_flight() == 0u);
  BOOST_TEST(!client.loop.busy());
}

BOOST_AUTO_TEST_CASE(cancellations_are_delivered_one_per_perform_in_call_order_past_deadline) {
  WireServer server;
  ScriptedResponse stalled = text_response("never sent");
  stalled.fault = Fault::stall_after_headers;
  server.set_handler([=](const luagent::test::RecordedRequest&) { return stalled; });
  Client client;
  constexpr int kTransfers = 6;
  std::vector<luagent::llm::TransferId> ids;
  std::vector<std::shared_ptr<Outcome>> outcomes;
  std::vector<luagent::llm::TransferId> delivered;
  for (int i = 0; i < kTransfers; ++i) {
    luagent::llm::TransferId id = 0;
    outcomes.push_back(client.fetch(post(server, "/stall"), &id));
    ids.push_back(id);
  }
  BOOST_REQUIRE(luagent::test::run_loop_until(client.loop, [&] {
    return std::all_of(outcomes.begin(), outcomes.end(),
                       [](auto& o) { return o->head.has_value(); });
  }));
  std::vector<luagent::llm::TransferId> cancel_order = {ids[3], ids[0], ids[5],
                                                        ids[1], ids[4], ids[2]};
  for (auto id : cancel_order) client.transport.cancel(id);
  BOOST_TEST(client.transport.queued_completions() == std::size_t{kTransfers});
  std::vector<luagent::llm::TransferId> delivered_order;
  for (int turn = 0; turn < kTransfers; ++turn) {
    auto start = std::chrono::steady_clock::now();
    client.loop.turn(2s, std::chrono::steady_clock::now() - 1ms);
    BOOST_TEST(elapsed_since(start).count() < 500);  // never blocks with completions queued
    for (int i = 0; i < kTransfers; ++i)
      if (outcomes[i]->done && std::find(delivered_order.begin(), delivered_order.end(), ids[i]) ==
                                   delivered_order.end())
        delivered_order.push_back(ids[i]);
    BOOST_TEST(delivered_order.size() == std::size_t(turn + 1));  // exactly one per perform
  }
  BOOST_TEST(delivered_order == cancel_order);
  for (const auto& outcome : outcomes) BOOST_TEST(outcome->error->code() == ErrorCode::cancelled);
  BOOST_TEST(client.transport.in_flight() == 0u);
}

// Handing a burst of transfers to libcurl at once costs a pump their connects in one
// call; with a deadline they are handed over while their cost fits, at least one a call.
BOOST_AUTO_TEST_CASE(transfers_past_the_deadline_wait_to_start_one_per_perform_in_order) {
  WireServer server;
  server.set_handler(
      [](const luagent::test::RecordedRequest& request) { return text_response(request.body); });
  Client client;
  constexpr int kTransfers = 12;
  std::vector<luagent::llm::TransferId> ids;
  std::vector<std::shared_ptr<Outcome>> outcomes;
  for (int i = 0; i < kTransfers; ++i) {
    luagent::llm::TransferId id = 0;
    outcomes.push_back(client.fetch(post(server, "/c", std::to_string(i)), &id));
    ids.push_back(id);
  }
  BOOST_TEST(client.transport.waiting_to_start() == std::size_t{kTransfers});
  client.transport.cancel(ids[0]);  // stopped while it waits: skipped, never sent
  for (int turn = 1; turn < kTransfers; ++turn) {
    auto start = std::chrono::steady_clock::now();
    client.loop.turn(2s, std::chrono::steady_clock::now() - 1ms);  // deadline passed
    BOOST_TEST(elapsed_since(start).count() < 500);  // never blocks with transfers waiting
    BOOST_TEST(client.transport.waiting_to_start() == std::size_t(kTransfers - 1 - turn));
  }
  BOOST_TEST(outcomes[0]->done);
  BOOST_TEST(outcomes[0]->error->code() == ErrorCode::cancelled);
  for (int i = 1; i < kTransfers; ++i) client.wait_for(outcomes[i]);
  for (int i = 1; i < kTransfers; ++i) {
    BOOST_TEST(!outcomes[i]->error.has_value());
    BOOST_TEST(outcomes[i]->body == std::to_string(i));
  }
  BOOST_TEST(server.request_count() == std::size_t{kTransfers - 1});
  BOOST_TEST(!client.loop.busy());
}

BOOST_AUTO_TEST_CASE(wakeup_from_another_thread_interrupts_wait) {
  Client client;
  auto start = std::chrono::steady_clock::now();
  std::thread waker([&] {
    std::this_thread::sleep_for(100ms);
    client.transport.wakeup();
  });
  client.transport.wait(5s);
  auto took = elapsed_since(start);
  waker.join();
  BOOST_TEST(took.count() >= 90);
  BOOST_TEST(took.count() < 2000);

  // Through the loop, with a transfer in flight so the loop waits in the transport.
  WireServer server;
  auto outcome = start_stalled_transfer(client, server);
  std::atomic<bool> posted_ran{false};
  start = std::chrono::steady_clock::now();
  std::thread poster([&] {
    std::this_thread::sleep_for(100ms);
    client.loop.post([&] { posted_ran = true; });
  });
  while (!posted_ran && elapsed_since(start) < 5s) client.loop.turn(5s);
  took = elapsed_since(start);
  poster.join();
  BOOST_TEST(posted_ran.load());
  BOOST_TEST(took.count() < 2000);
  BOOST_TEST(client.transport.in_flight() == 1u);
}

BOOST_AUTO_TEST_CASE(a_reused_connection_and_a_reused_socket_number_both_work) {
  // Sequential requests ride one kept-alive connection (its socket stays in the epoll
  // set between them); responses that close the connection make libcurl open a new
  // socket each time, usually under the number the last one had.
  WireServer server;
  Client client;
  for (int i = 0; i < 4; ++i) {
    server.enqueue(text_response("kept " + std::to_string(i)));
    auto outcome = client.fetch(post(server, "/kept"));
    client.wait_for(outcome, 3s);
    BOOST_TEST(!outcome->error.has_value());
    BOOST_TEST(outcome->body == "kept " + std::to_string(i));
  }
  BOOST_TEST(server.connection_count() == 1u);
  for (int i = 0; i < 4; ++i) {
    ScriptedResponse closing = text_response("closed " + std::to_string(i));
    closing.fault = Fault::close_without_terminator;  // "Connection: close", then FIN
    server.enqueue(closing);
    auto outcome = client.fetch(post(server, "/closing"));
    client.wait_for(outcome, 3s);
    BOOST_TEST(!outcome->error.has_value());
    BOOST_TEST(outcome->body == "closed " + std::to_string(i));
  }
  BOOST_TEST(server.connection_count() >= 4u);
}

BOOST_AUTO_TEST_CASE(an_idle_connection_the_server_closes_does_not_spin_the_loop) {
  Client client;
  {
    WireServer gone;
    gone.enqueue(text_response("once"));
    auto outcome = client.fetch(post(gone, "/once"));
    client.wait_for(outcome, 3s);
    BOOST_REQUIRE(!outcome->error.has_value());
  }  // the server closes the connection libcurl keeps for reuse: its socket turns readable
  WireServer server;
  auto outcome = start_stalled_transfer(client, server);
  // With a transfer in flight the loop waits in epoll; a readable idle socket left in the
  // (level-triggered) set would end every wait at once.
  int turns = 0;
  auto start = std::chrono::steady_clock::now();
  while (elapsed_since(start) < 300ms) {
    client.loop.turn(100ms);
    ++turns;
  }
  BOOST_TEST(turns < 20, turns << " turns in 300 ms");
  BOOST_TEST(!outcome->done);
}

BOOST_AUTO_TEST_CASE(a_post_from_another_thread_wakes_a_loop_without_transfers) {
  Client client;  // nothing in flight: the loop waits on its condition variable
  std::atomic<bool> posted_ran{false};
  auto start = std::chrono::steady_clock::now();
  std::thread poster([&] {
    std::this_thread::sleep_for(100ms);
    client.loop.post([&] { posted_ran = true; });
  });
  while (!posted_ran && elapsed_since(start) < 5s) client.loop.turn(5s);
  auto took = elapsed_since(start);
  poster.join();
  BOOST_TEST(posted_ran.load());
  BOOST_TEST(took.count() < 2000);
  // A post from the loop's own thread runs at the next turn without waiting.
  bool ran_here = false;
  client.loop.post([&] { ran_here = true; });
  start = std::chrono::steady_clock::now();
  client.loop.turn(2s);
  BOOST_TEST(ran_here);
  BOOST_TEST(elapsed_since(start).count() < 1000);
}

// Past the soft descriptor limit a new socket fails (EMFILE), and the call with it: 3,000
// agents under the common default limit of 1,024 lost two calls in three so. Transfers
// beyond the transport's connection budget wait their turn instead. The server runs in a
// process of its own, so that only the client's sockets count against the lowered limit.
BOOST_AUTO_TEST_CASE(more_transfers_than_the_descriptor_limit_allows_wait_their_turn) {
  luagent::test::ForkedWireServer server([](WireServer& wire) {
    wire.set_handler([](const luagent::test::RecordedRequest&) {
      ScriptedResponse response = text_response("ok");
      response.latency = 50ms;
      return response;
    });
  });
  struct LoweredSoftLimit {
    rlimit saved{};
    explicit LoweredSoftLimit(rlim_t soft) {
      getrlimit(RLIMIT_NOFILE, &saved);
      rlimit lowered = saved;
      lowered.rlim_cur = std::min(soft, saved.rlim_max);
      setrlimit(RLIMIT_NOFILE, &lowered);
    }
    ~LoweredSoftLimit() { setrlimit(RLIMIT_NOFILE, &saved); }
  } limit(128);
  Client client;
  BOOST_TEST(client.transport.connection_budget() == 96u);  // 128 less a quarter
  std::vector<std::shared_ptr<Outcome>> outcomes;
  for (int i = 0; i < 300; ++i) {
    HttpRequest request;
    request.url = "http://127.0.0.1:" + std::to_string(server.port()) + "/v1/x";
    request.body = "{}";
    outcomes.push_back(client.fetch(std::move(request)));
  }
  BOOST_REQUIRE(luagent::test::run_loop_until(
      client.loop,
      [&] {
        return std::all_of(outcomes.begin(), outcomes.end(), [](auto& o) { return o->done; });
      },
      30s));
  int failed = 0;
  for (const auto& outcome : outcomes)
    if (outcome->error || outcome->body != "ok") ++failed;
  BOOST_TEST(
      failed == 0, failed << " of 300 transfers failed, e.g. " << [&] {
        for (const auto& o : outcomes)
          if (o->error) return std::string(o->error->what());
        return std::string("-");
      }());
}

// Replies that arrive together (a server catching up, a batch of connections finishing
// their handshakes) are read from libcurl only while the deadline lasts: a perform() with
// 1 ms left used to read all 200 waiting here, several milliseconds of work, before it
// looked at the clock. The rest stay ready for the next ones, and none is lost.
BOOST_AUTO_TEST_CASE(a_burst_of_replies_is_read_only_while_the_deadline_lasts) {
  WireServer server;
  server.set_handler([](const luagent::test::RecordedRequest&) {
    ScriptedResponse response = text_response(std::string(2000, 'x'));
    response.latency = 500ms;
    return response;
  });
  Client client;
  constexpr std::size_t kTransfers = 200;  // under the 256 events one epoll_wait returns
  std::vector<std::shared_ptr<Outcome>> outcomes;
  for (std::size_t i = 0; i < kTransfers; ++i) outcomes.push_back(client.fetch(post(server, "/x")));
  BOOST_REQUIRE(luagent::test::run_loop_until(
      client.loop, [&] { return server.request_count() == kTransfers; }, 5s));
  // libcurl's own timers for these transfers come due 200 ms after they connect (happy
  // eyeballs); run out, they would have it read every transfer in the first call. So the
  // loop turns past them first, then stands still while the replies arrive.
  for (auto until = std::chrono::steady_clock::now() + 300ms;
       std::chrono::steady_clock::now() < until;)
    client.loop.turn(10ms);
  std::this_thread::sleep_for(500ms);  // every reply is in its socket's buffer by now
  auto count_read = [&] {
    return client.transport.queued_completions() +
           static_cast<std::size_t>(
               std::count_if(outcomes.begin(), outcomes.end(), [](auto& o) { return o->done; }));
  };
  BOOST_REQUIRE(count_read() == 0u);
  client.loop.turn(0ms, std::chrono::steady_clock::now() + 1ms);
  const std::size_t read = count_read();
  BOOST_TEST(read > 0u);
  BOOST_TEST(read < kTransfers, read << " of " << kTransfers << " replies read in one 1 ms turn");
  BOOST_REQUIRE(luagent::test::run_loop_until(
      client.loop, [&] { return count_read() == kTransfers && client.transport.in_flight() == 0; },
      5s));
  for (const auto& outcome : outcomes) {
    BOOST_TEST(!outcome->error);
    BOOST_TEST(outcome->body.size() == 2000u);
  }
}
