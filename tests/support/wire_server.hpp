// A real HTTP/1.1 server on 127.0.0.1 for tests and benchmarks: POSIX sockets, one thread,
// poll(), keep-alive. It replays scripted responses (recorded fixtures byte for byte, or
// made-up ones) with fragmentation, delays and transport faults, and records every request.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace luagent::test {

struct RecordedRequest {
  std::string method;
  std::string path;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  /// The first header named `name` (case-insensitive), or "" when absent.
  std::string header(const std::string& name) const;
};

enum class Fault {
  none,
  reset_after_bytes,         // send `fault_bytes` body bytes, then RST (SO_LINGER 0)
  stall_after_headers,       // send the head, then nothing (connection stays open)
  stall_after_bytes,         // send `fault_bytes` body bytes, then nothing
  close_without_terminator,  // no length framing: body, then a clean FIN ("read until close")
  refuse,                    // close the connection as soon as the request has arrived
};

enum class Framing { content_length, chunked };

struct ScriptedResponse {
  int status = 200;
  std::string reason = "OK";
  /// Sent as given; Content-Length / Transfer-Encoding / Connection are the server's own.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// Instead of `body`: this many filler bytes, generated as they are sent (huge bodies).
  std::size_t filler_bytes = 0;
  Framing framing = Framing::content_length;
  /// Fragment plan: split the body at these byte offsets (ascending), or, when
  /// random_fragments > 0, into that many pieces at offsets drawn from `seed`.
  std::vector<std::size_t> split_at;
  int random_fragments = 0;
  std::uint64_t seed = 1;
  std::chrono::milliseconds fragment_delay{0};  // pause before each fragment after the first
  std::chrono::milliseconds latency{0};         // pause before the status line
  Fault fault = Fault::none;
  std::size_t fault_bytes = 0;
};

class WireServer {
 public:
  using Handler = std::function<ScriptedResponse(const RecordedRequest&)>;

  /// Binds 127.0.0.1 on `port` (0: an ephemeral port) and starts serving in its own thread.
  explicit WireServer(std::uint16_t port = 0);
  ~WireServer();
  WireServer(const WireServer&) = delete;
  WireServer& operator=(const WireServer&) = delete;

  std::uint16_t port() const { return port_; }
  /// "http://127.0.0.1:<port>" + path.
  std::string url(const std::string& path = "/") const;

  /// Queues a response for the next request (FIFO); used before any handler.
  void enqueue(ScriptedResponse response);
  /// Answers every request the queue does not; runs on the server thread.
  void set_handler(Handler handler);
  /// Benchmark mode: the same response for every request, requests not recorded.
  void set_fixed_response(ScriptedResponse response);

  /// Copies of every request received so far (unless in fixed-response mode).
  std::vector<RecordedRequest> requests() const;
  std::size_t request_count() const { return request_count_.load(); }
  /// Connections accepted so far (keep-alive reuse shows as fewer connections than requests).
  std::size_t connection_count() const { return connection_count_.load(); }

 private:
  struct Connection;
  void serve();
  void on_readable(Connection& connection);
  void on_writable(Connection& connection);
  bool start_next_response(Connection& connection);
  ScriptedResponse response_for(const RecordedRequest& request);

  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> request_count_{0};
  std::atomic<std::size_t> connection_count_{0};
  mutable std::mutex mutex_;  // guards the members below
  std::deque<ScriptedResponse> queue_;
  Handler handler_;
  std::optional<ScriptedResponse> fixed_;
  std::vector<RecordedRequest> recorded_;
  std::thread thread_;
};

/// Reads a recorded case from <fixtures>/llm-wire/<provider>/<name>.*: status, reason and
/// headers from meta.json (framing headers dropped) and the body byte for byte;
/// `.sse-data.jsonl` payloads are re-framed as "data: <line>\n\n" ... "data: [DONE]\n\n".
ScriptedResponse load_fixture_response(const std::string& provider, const std::string& name);

/// Every recorded case as (provider, name), for tests that replay them all.
std::vector<std::pair<std::string, std::string>> list_fixture_cases();

}  // namespace luagent::test
