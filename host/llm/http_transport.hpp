// Asynchronous HTTP/1.1 client on ONE libcurl multi handle, driven by the EventLoop as
// an IoDriver: no thread per request, every callback runs on the loop thread inside
// perform(). It moves bytes only; what the bytes mean (SSE, JSON, provider errors) is
// the business of the codecs above it.
//
// libcurl is driven through its socket interface (curl_multi_socket_action) on an epoll
// set the transport owns, and idle deadlines sit in a heap, so one loop pass costs in
// proportion to the sockets that are ready and the deadlines that are due, not to the
// number of transfers in flight (thousands, when every agent waits on a model).
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "event_loop.hpp"
#include "luagent/error.hpp"

typedef void CURLM;  // libcurl's own opaque typedefs, so this header needs no curl.h
typedef void CURL;

namespace luagent::llm {

using TransferId = std::uint64_t;

struct HttpRequest {
  std::string method = "POST";
  std::string url;  // http:// or https://; may carry secrets, so it never appears in errors
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  int connect_timeout_ms = 10000;
  int total_timeout_ms = 600000;
  /// Longest silence (no response byte) tolerated, counted from the start of the transfer;
  /// 0 disables. Our own timer, checked in perform(): see http_transport.cpp.
  int idle_timeout_ms = 60000;
  std::size_t max_response_bytes = std::size_t{32} << 20;  // body bytes; over it: limit error
};

struct HttpResponseHead {
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;  // in arrival order, names as sent

  /// The first header named `name` (case-insensitive), or "" when absent.
  std::string header(std::string_view name) const;
};

struct HttpHandlers {
  /// Once per transfer, when the final (non-1xx) header block has arrived.
  std::function<void(const HttpResponseHead&)> on_head;
  /// Body bytes as they arrive (after on_head); never called after cancel().
  std::function<void(std::string_view)> on_body;
  /// Exactly once: nullopt when the exchange completed (any HTTP status), else an Error
  /// with code network, timeout, limit or cancelled.
  std::function<void(std::optional<Error>)> on_done;
};

class HttpTransport : public IoDriver {
 public:
  HttpTransport();
  ~HttpTransport() override;
  HttpTransport(const HttpTransport&) = delete;
  HttpTransport& operator=(const HttpTransport&) = delete;

  /// Starts a transfer; handlers run later on the loop thread, never from inside start().
  /// Safe to call from inside any handler.
  TransferId start(HttpRequest request, HttpHandlers handlers);
  /// Stops a transfer: no more on_body, and on_done(cancelled) at the next perform()
  /// unless it already finished. Unknown ids are ignored. Safe from inside any handler.
  void cancel(TransferId id);
  /// Transfers started and not yet reported through on_done.
  std::size_t in_flight() const { return transfers_.size(); }
  /// Completions decided but not yet delivered (perform() ran out of its deadline).
  std::size_t queued_completions() const { return completions_.size(); }
  /// Transfers started but not yet handed to libcurl (perform() had no room for them, in
  /// its deadline or in the connection budget).
  std::size_t waiting_to_start() const { return waiting_to_start_.size(); }
  /// How many transfers libcurl may have at once, each on a connection of its own at most:
  /// the soft descriptor limit (RLIMIT_NOFILE, read when the transport is made) less a
  /// quarter of it, at most 256, for the rest of the process. More wait, in order, without
  /// their timeouts running, instead of failing to open a socket.
  std::size_t connection_budget() const { return connection_budget_; }

  bool active() const override;
  bool has_queued_work() const override {
    return !completions_.empty() || (!waiting_to_start_.empty() && in_multi_ < connection_budget_);
  }
  void wait(std::chrono::milliseconds max_wait) override;
  std::size_t perform(std::optional<Clock::time_point> deadline) override;
  void wakeup() override;

 private:
  struct Transfer;

  // Why a transfer ends. The error itself is decided at delivery, so a cancel() that comes
  // between the decision and the delivery still wins, as it always has.
  enum class Ending { curl_result, stopped, idle };
  struct Completion {
    TransferId id;
    Ending ending;
    int curl_code;  // CURLcode, for Ending::curl_result
  };
  struct IdleDeadline {
    Clock::time_point due;
    TransferId id;
  };

  void add_to_multi(Transfer& transfer);
  std::size_t add_waiting_transfers(std::optional<Clock::time_point> deadline);
  void queue_completion(Transfer& transfer, Ending ending, int curl_code = 0);
  void drive_curl(Clock::time_point now, std::optional<Clock::time_point> deadline);
  void collect_curl_results();
  void expire_idle_transfers(Clock::time_point now);
  void push_idle_deadline(Clock::time_point due, TransferId id);
  void compact_idle_deadlines();
  std::optional<Error> ending_error(Transfer& transfer, const Completion& completion);
  void finish(TransferId id, std::optional<Error> error);
  CURL* take_easy_handle();
  void recycle_easy_handle(CURL* easy);
  static std::size_t on_header_line(char* data, std::size_t size, std::size_t count, void* user);
  static std::size_t on_body_bytes(char* data, std::size_t size, std::size_t count, void* user);
  static int on_socket(CURL* easy, int socket, int what, void* user, void* socket_data);
  struct SocketHooks;  // libcurl's open/close socket callbacks (need curl.h's types)
  bool watch_socket(int socket, std::uint32_t events);
  static int on_timer(CURLM* multi, long timeout_ms, void* user);

  CURLM* multi_ = nullptr;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;  // eventfd in the epoll set: wakeup() from any thread
  TransferId next_id_ = 1;
  std::unordered_map<TransferId, std::unique_ptr<Transfer>> transfers_;
  std::deque<TransferId> waiting_to_start_;  // started, not yet in the multi handle
  std::size_t in_multi_ = 0;                 // transfers in the multi handle
  std::size_t connection_budget_ = 0;
  // What handing one transfer to libcurl costs in the drive that follows, estimated from
  // earlier drives (see add_waiting_transfers); first a guess.
  static constexpr double kStartCostGuessNs = 100'000;
  double start_cost_ns_ = kStartCostGuessNs;
  std::deque<Completion> completions_;               // decided, in order, not yet delivered
  std::vector<IdleDeadline> idle_heap_;              // min-heap on due; entries may be stale (lazy)
  std::optional<Clock::time_point> curl_timer_due_;  // libcurl's single timer
  std::vector<epoll_event> ready_events_;            // sized once; filled by epoll_wait
  int ready_count_ = 0;
  bool ready_from_wait_ = false;     // wait() polled: perform() uses its events
  std::vector<CURL*> idle_handles_;  // reset easy handles kept for reuse
  // Sockets libcurl opened through SocketHooks, until it closes them through SocketHooks:
  // what each has in the epoll set (0: not in it) and whether libcurl watches it. Such a
  // socket stays in the set while its connection idles in libcurl's cache, so reusing the
  // connection for the next request costs no epoll_ctl when it wants the same events.
  struct OwnSocket {
    std::uint32_t in_epoll = 0;
    bool watched = false;
  };
  std::unordered_map<int, OwnSocket> own_sockets_;
};

}  // namespace luagent::llm
