#include "llm/http_transport.hpp"

#include <curl/curl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <mutex>

namespace luagent::llm {
namespace {

constexpr std::size_t kMaxHeaderBytes = 64 * 1024;  // a whole response header block
constexpr std::size_t kMaxHeaderCount = 200;
constexpr std::size_t kMaxIdleHandles = 64;  // pooled easy handles kept after use
constexpr rlim_t kMaxConnectionBudget = rlim_t{1} << 20;

// See HttpTransport::connection_budget. Past the soft descriptor limit a new socket fails
// (EMFILE), and the call with it: 3,000 agents under the common default of 1,024 saw two
// in three of their calls fail so.
std::size_t connection_budget_from_descriptor_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY)
    return kMaxConnectionBudget;
  const rlim_t reserve = std::min<rlim_t>(limit.rlim_cur / 4, 256);
  return static_cast<std::size_t>(
      std::clamp<rlim_t>(limit.rlim_cur - reserve, 1, kMaxConnectionBudget));
}

// Ready sockets taken per epoll_wait: bounds one pass; the rest stay ready (level-triggered).
constexpr int kMaxReadyEvents = 256;

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() &&
         (text.back() == ' ' || text.back() == '\t' || text.back() == '\r' || text.back() == '\n'))
    text.remove_suffix(1);
  return text;
}

bool is_token(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

// scheme://host:port of a URL: enough to say where a failure happened without echoing a
// path, query or userinfo that may carry an API key.
std::string safe_origin(const std::string& url) {
  CURLU* handle = curl_url();
  if (!handle) throw Error(ErrorCode::internal, "out of memory parsing the request URL");
  std::string origin;
  if (curl_url_set(handle, CURLUPART_URL, url.c_str(), 0) == CURLUE_OK) {
    char* scheme = nullptr;
    char* host = nullptr;
    char* port = nullptr;
    curl_url_get(handle, CURLUPART_SCHEME, &scheme, 0);
    curl_url_get(handle, CURLUPART_HOST, &host, 0);
    curl_url_get(handle, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
    if (scheme && host && port &&
        (std::string_view(scheme) == "http" || std::string_view(scheme) == "https"))
      origin = std::string(scheme) + "://" + host + ":" + port;
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
  }
  curl_url_cleanup(handle);
  if (origin.empty())
    throw Error(ErrorCode::usage, "the request URL is not an absolute http:// or https:// URL");
  return origin;
}

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

std::string HttpResponseHead::header(std::string_view name) const {
  for (const auto& [key, value] : headers)
    if (iequals(key, name)) return value;
  return {};
}

struct HttpTransport::Transfer {
  TransferId id = 0;
  HttpTransport* owner = nullptr;
  HttpRequest request;  // owns the body: CURLOPT_POSTFIELDS points into it, without a copy
  HttpHandlers handlers;
  std::string origin;  // printable: scheme://host:port
  CURL* easy = nullptr;
  curl_slist* header_list = nullptr;
  HttpResponseHead head;
  std::size_t header_bytes = 0;
  std::size_t body_bytes = 0;
  bool head_delivered = false;
  bool in_multi = false;
  bool cancel_requested = false;
  bool completion_queued = false;    // its Completion waits in completions_: nothing more to do
  std::optional<Error> abort_error;  // why a callback stopped the transfer, or a setup failure
  Clock::time_point last_activity;

  std::string where() const { return request.method + " " + origin; }

  // Handlers run inside libcurl's C callbacks, which an exception must never cross.
  template <typename Fn>
  bool call_safely(Fn&& fn) {
    try {
      fn();
      return true;
    } catch (const Error& error) {
      abort_error = error;
    } catch (const std::exception& error) {
      abort_error = Error(ErrorCode::internal, std::string("HTTP handler threw: ") + error.what());
    } catch (...) {
      abort_error = Error(ErrorCode::internal, "HTTP handler threw a non-standard exception");
    }
    return false;
  }

  bool deliver_head() {
    head_delivered = true;
    if (!handlers.on_head) return true;
    return call_safely([&] { handlers.on_head(head); });
  }
};

HttpTransport::HttpTransport()
    : connection_budget_(connection_budget_from_descriptor_limit()),
      ready_events_(kMaxReadyEvents) {
  init_curl_once();
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0)
    throw Error(ErrorCode::internal, std::string("epoll_create1 failed: ") + std::strerror(errno));
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_event wake_event{};
  wake_event.events = EPOLLIN;
  wake_event.data.fd = wake_fd_;
  if (wake_fd_ < 0 || epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &wake_event) != 0) {
    std::string reason = std::strerror(errno);
    if (wake_fd_ >= 0) close(wake_fd_);
    close(epoll_fd_);
    throw Error(ErrorCode::internal, "cannot set up the transport's wakeup eventfd: " + reason);
  }
  multi_ = curl_multi_init();
  if (!multi_) {
    close(wake_fd_);
    close(epoll_fd_);
    throw Error(ErrorCode::internal, "curl_multi_init failed");
  }
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &HttpTransport::on_socket);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &HttpTransport::on_timer);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  // Idle cached connections count too: at the budget, libcurl closes the oldest of them
  // before it opens another.
  curl_multi_setopt(multi_, CURLMOPT_MAX_TOTAL_CONNECTIONS, static_cast<long>(connection_budget_));
}

HttpTransport::~HttpTransport() {
  for (auto& [id, transfer] : transfers_) {
    if (transfer->in_multi) curl_multi_remove_handle(multi_, transfer->easy);
    if (transfer->easy) curl_easy_cleanup(transfer->easy);
    curl_slist_free_all(transfer->header_list);
  }
  for (CURL* easy : idle_handles_) curl_easy_cleanup(easy);
  // Closing cached connections calls on_socket, so the epoll fd outlives the multi handle.
  curl_multi_cleanup(multi_);
  close(wake_fd_);
  close(epoll_fd_);
}

// libcurl opens and closes its connection sockets through these, so the transport knows
// when a socket number it keeps in the epoll set stops being that socket (a closed
// socket leaves the set by itself; its number may come back as another socket).
struct HttpTransport::SocketHooks {
  static curl_socket_t open(void* user, curlsocktype /*purpose*/, curl_sockaddr* address) {
    auto& self = *static_cast<HttpTransport*>(user);
    int socket = ::socket(address->family, address->socktype, address->protocol);
    if (socket >= 0) self.own_sockets_[socket] = OwnSocket{};
    return socket >= 0 ? socket : CURL_SOCKET_BAD;
  }
  static int close(void* user, curl_socket_t socket) {
    auto& self = *static_cast<HttpTransport*>(user);
    self.own_sockets_.erase(socket);
    return ::close(socket);
  }
};

// Puts `socket` in the epoll set for `events`, or changes what it is there for.
bool HttpTransport::watch_socket(int socket, std::uint32_t events) {
  epoll_event event{};
  event.events = events;
  event.data.fd = socket;
  auto own = own_sockets_.find(socket);
  if (own != own_sockets_.end()) {
    own->second.watched = true;
    if (own->second.in_epoll == events) return true;  // a cached connection, reused
    int operation = own->second.in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(epoll_fd_, operation, socket, &event) != 0) return false;
    own->second.in_epoll = events;
    return true;
  }
  int result = epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, socket, &event);
  if (result != 0 && errno == EEXIST) result = epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, socket, &event);
  return result == 0;
}

// libcurl tells us which sockets to watch for what; we mirror that into the epoll set.
int HttpTransport::on_socket(CURL* /*easy*/, int socket, int what, void* user, void* socket_data) {
  auto& self = *static_cast<HttpTransport*>(user);
  if (what == CURL_POLL_REMOVE) {
    auto own = self.own_sockets_.find(socket);
    if (own != self.own_sockets_.end()) {
      // Usually the connection goes back to libcurl's cache: it stays in the set, and
      // drive_curl drops it if it stirs before libcurl wants it again.
      own->second.watched = false;
      return 0;
    }
    // Already closed sockets were dropped from the set by the kernel: ENOENT/EBADF is fine.
    epoll_ctl(self.epoll_fd_, EPOLL_CTL_DEL, socket, nullptr);
    return 0;
  }
  std::uint32_t events =
      (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
  if (self.own_sockets_.count(socket)) return self.watch_socket(socket, events) ? 0 : -1;
  // Others (a resolver's pipe): socket_data is our own marker, set once the socket is in
  // the epoll set.
  epoll_event event{};
  event.events = events;
  event.data.fd = socket;
  int operation = socket_data ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  int result = epoll_ctl(self.epoll_fd_, operation, socket, &event);
  if (result != 0 && errno == EEXIST)
    result = epoll_ctl(self.epoll_fd_, EPOLL_CTL_MOD, socket, &event);
  if (result != 0 && errno == ENOENT)
    result = epoll_ctl(self.epoll_fd_, EPOLL_CTL_ADD, socket, &event);
  if (result != 0) return -1;  // libcurl fails the transfers on this socket
  if (!socket_data) curl_multi_assign(self.multi_, socket, &self);
  return 0;
}

// libcurl keeps one timer for the whole multi handle; it must not be acted on from here.
int HttpTransport::on_timer(CURLM* /*multi*/, long timeout_ms, void* user) {
  auto& self = *static_cast<HttpTransport*>(user);
  if (timeout_ms < 0) {
    self.curl_timer_due_.reset();
  } else {
    self.curl_timer_due_ = Clock::now() + std::chrono::milliseconds(timeout_ms);
  }
  return 0;
}

CURL* HttpTransport::take_easy_handle() {
  if (!idle_handles_.empty()) {
    CURL* easy = idle_handles_.back();
    idle_handles_.pop_back();
    return easy;
  }
  CURL* easy = curl_easy_init();
  if (!easy) throw Error(ErrorCode::internal, "curl_easy_init failed");
  return easy;
}

void HttpTransport::recycle_easy_handle(CURL* easy) {
  // Connections live in the multi handle's cache, so a reset handle keeps nothing alive.
  if (idle_handles_.size() < kMaxIdleHandles) {
    curl_easy_reset(easy);
    idle_handles_.push_back(easy);
  } else {
    curl_easy_cleanup(easy);
  }
}

TransferId HttpTransport::start(HttpRequest request, HttpHandlers handlers) {
  TransferId id = next_id_++;
  auto transfer = std::make_unique<Transfer>();
  Transfer& t = *transfer;
  t.id = id;
  t.owner = this;
  t.request = std::move(request);
  t.handlers = std::move(handlers);
  t.last_activity = Clock::now();
  transfers_.emplace(id, std::move(transfer));
  try {
    const HttpRequest& r = t.request;
    if (!is_token(r.method)) throw Error(ErrorCode::usage, "HTTP method is not a valid token");
    t.origin = safe_origin(r.url);
    if (r.connect_timeout_ms < 0 || r.total_timeout_ms < 0 || r.idle_timeout_ms < 0)
      throw Error(ErrorCode::usage, "HTTP timeouts must not be negative");
    for (const auto& [name, value] : r.headers) {
      if (!is_token(name))
        throw Error(ErrorCode::usage, "HTTP header name '" + name + "' is not a valid token");
      // The value may be a credential: name the header, never print the value.
      if (value.find_first_of("\r\n") != std::string::npos || value.find('\0') != std::string::npos)
        throw Error(ErrorCode::usage, "HTTP header '" + name + "' has a line break in its value");
      std::string line = name + ": " + value;
      curl_slist* extended = curl_slist_append(t.header_list, line.c_str());
      if (!extended) throw Error(ErrorCode::internal, "out of memory building HTTP headers");
      t.header_list = extended;
    }
    // No "Expect: 100-continue" round trip before large bodies.
    if (curl_slist* extended = curl_slist_append(t.header_list, "Expect:"))
      t.header_list = extended;

    t.easy = take_easy_handle();
    CURL* e = t.easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, &t);
    curl_easy_setopt(e, CURLOPT_URL, r.url.c_str());
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    // A transfer that ends while its host name is being looked up (cancelled, timed out,
    // the host shutting down) leaves the lookup thread to finish alone: without this,
    // libcurl waits for it inside the loop, as long as the system resolver takes.
    curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(r.connect_timeout_ms));
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, static_cast<long>(r.total_timeout_ms));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t.header_list);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &HttpTransport::on_header_line);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &HttpTransport::on_body_bytes);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, &SocketHooks::open);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, this);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, &SocketHooks::close);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, this);
    if (r.method == "GET" && r.body.empty()) {
      curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, r.body.data());
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
      if (r.method != "POST") curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r.method.c_str());
    }
    // Handed to libcurl by the next perform(), within its deadline (and never from inside
    // libcurl's own callbacks, which it forbids).
    waiting_to_start_.push_back(id);
  } catch (const Error& error) {
    // Reported like any failure, at the next perform(), never from inside start().
    t.abort_error = error;
    queue_completion(t, Ending::stopped);
  }
  return id;
}

void HttpTransport::add_to_multi(Transfer& transfer) {
  transfer.last_activity = Clock::now();
  if (curl_multi_add_handle(multi_, transfer.easy) != CURLM_OK) {
    transfer.abort_error = Error(ErrorCode::internal, "curl_multi_add_handle failed");
    queue_completion(transfer, Ending::stopped);
    return;
  }
  transfer.in_multi = true;
  ++in_multi_;
  int idle = transfer.request.idle_timeout_ms;
  if (idle > 0)
    push_idle_deadline(transfer.last_activity + std::chrono::milliseconds(idle), transfer.id);
}

// Handing a transfer to libcurl costs little, but the drive that follows does its real
// work: for a new connection a socket, a connect and the request's first write, about
// 40 us each on loopback here, all inside one libcurl call. Forty agents asking at once
// would cost a pump 1.6 ms it had not planned for. So with a deadline, transfers are handed
// over only while their estimated cost fits before it (at least one per call: every call
// makes progress); the rest wait, in order, for the next call.
std::size_t HttpTransport::add_waiting_transfers(std::optional<Clock::time_point> deadline) {
  if (in_multi_ >= connection_budget_) return 0;  // a transfer ending makes room
  std::size_t allowed = std::min(waiting_to_start_.size(), connection_budget_ - in_multi_);
  if (deadline) {
    double left_ns = std::chrono::duration<double, std::nano>(*deadline - Clock::now()).count();
    double affordable = std::max(left_ns, 0.0) / start_cost_ns_;
    allowed = std::clamp<std::size_t>(static_cast<std::size_t>(affordable), 1, allowed);
  }
  std::size_t added = 0;
  while (added < allowed && !waiting_to_start_.empty()) {
    TransferId id = waiting_to_start_.front();
    waiting_to_start_.pop_front();
    auto it = transfers_.find(id);
    if (it == transfers_.end() || it->second->completion_queued) continue;  // stopped already
    add_to_multi(*it->second);
    ++added;
  }
  return added;
}

void HttpTransport::queue_completion(Transfer& transfer, Ending ending, int curl_code) {
  if (transfer.completion_queued) return;  // the first ending stands; see ending_error
  transfer.completion_queued = true;
  completions_.push_back(Completion{transfer.id, ending, curl_code});
}

void HttpTransport::cancel(TransferId id) {
  auto it = transfers_.find(id);
  if (it == transfers_.end() || it->second->cancel_requested) return;
  it->second->cancel_requested = true;
  queue_completion(*it->second, Ending::stopped);
}

bool HttpTransport::active() const {
  return !transfers_.empty();
}

void HttpTransport::wakeup() {
  std::uint64_t one = 1;
  // A full counter (EAGAIN) still leaves the eventfd readable, which is all a wakeup needs.
  [[maybe_unused]] auto written = write(wake_fd_, &one, sizeof one);
}

void HttpTransport::wait(std::chrono::milliseconds max_wait) {
  ready_from_wait_ = false;
  if (has_queued_work()) return;
  auto timeout = std::max(max_wait, std::chrono::milliseconds(0));
  auto now = Clock::now();
  auto bound_by = [&](Clock::time_point due) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(due - now);
    timeout = std::clamp(left, std::chrono::milliseconds(0), timeout);
  };
  if (curl_timer_due_) bound_by(*curl_timer_due_);
  // The heap top may be stale (its transfer got bytes since): then we wake early once and
  // perform() pushes the real deadline. Never late.
  if (!idle_heap_.empty()) bound_by(idle_heap_.front().due);
  int count = epoll_wait(epoll_fd_, ready_events_.data(), kMaxReadyEvents,
                         static_cast<int>(timeout.count()));
  ready_count_ = std::max(count, 0);  // EINTR: nothing ready, perform() polls again anyway
  ready_from_wait_ = count > 0;
}

void HttpTransport::drive_curl(Clock::time_point now, std::optional<Clock::time_point> deadline) {
  if (!ready_from_wait_) {
    // Called without a wait (a pump's zero-wait turn): poll without blocking.
    ready_count_ = std::max(epoll_wait(epoll_fd_, ready_events_.data(), kMaxReadyEvents, 0), 0);
  }
  ready_from_wait_ = false;
  int running = 0;
  for (int i = 0; i < ready_count_; ++i) {
    // Replies that arrive together (a server catching up, a batch of handshakes) are read
    // while the deadline lasts, at least one a call. The set is level-triggered: the
    // sockets left stay ready, and the next epoll_wait lists them first.
    if (i > 0 && deadline && Clock::now() >= *deadline) break;
    const epoll_event& event = ready_events_[i];
    if (event.data.fd == wake_fd_) {
      std::uint64_t count = 0;
      [[maybe_unused]] auto drained = read(wake_fd_, &count, sizeof count);
      continue;
    }
    auto own = own_sockets_.find(event.data.fd);
    if (own != own_sockets_.end() && !own->second.watched) {
      // An idle cached connection stirred (the server closed it, most likely). The set is
      // level-triggered: out it goes, or it would end every wait. libcurl finds out
      // itself when it next looks at the connection.
      if (own->second.in_epoll) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, event.data.fd, nullptr);
      own->second.in_epoll = 0;
      continue;
    }
    int flags = 0;
    if (event.events & (EPOLLIN | EPOLLHUP)) flags |= CURL_CSELECT_IN;
    if (event.events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
    if (event.events & EPOLLERR) flags |= CURL_CSELECT_ERR;
    // A socket closed while acting on an earlier one is unknown to libcurl: it ignores it.
    curl_multi_socket_action(multi_, event.data.fd, flags, &running);
  }
  ready_count_ = 0;
  if (curl_timer_due_ && *curl_timer_due_ <= now) {
    curl_timer_due_.reset();  // on_timer may set a new one from inside the call
    curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
  }
}

void HttpTransport::collect_curl_results() {
  int queued = 0;
  while (CURLMsg* message = curl_multi_info_read(multi_, &queued)) {
    if (message->msg != CURLMSG_DONE) continue;
    Transfer* transfer = nullptr;
    curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, reinterpret_cast<char**>(&transfer));
    if (transfer) queue_completion(*transfer, Ending::curl_result, message->data.result);
  }
}

void HttpTransport::push_idle_deadline(Clock::time_point due, TransferId id) {
  idle_heap_.push_back(IdleDeadline{due, id});
  std::push_heap(idle_heap_.begin(), idle_heap_.end(),
                 [](const IdleDeadline& a, const IdleDeadline& b) { return a.due > b.due; });
}

// Entries of finished transfers linger until they come due; when they outnumber the live
// transfers, rebuild from those (O(n), paid for by the n pushes since the last rebuild).
void HttpTransport::compact_idle_deadlines() {
  if (idle_heap_.size() < 64 || idle_heap_.size() <= 2 * transfers_.size()) return;
  idle_heap_.clear();
  for (const auto& [id, transfer] : transfers_) {
    int idle = transfer->request.idle_timeout_ms;
    if (transfer->in_multi && idle > 0 && !transfer->completion_queued)
      idle_heap_.push_back(
          IdleDeadline{transfer->last_activity + std::chrono::milliseconds(idle), id});
  }
  std::make_heap(idle_heap_.begin(), idle_heap_.end(),
                 [](const IdleDeadline& a, const IdleDeadline& b) { return a.due > b.due; });
}

// The idle timer is ours, not CURLOPT_LOW_SPEED_*: libcurl's low-speed check has one-second
// granularity and its progress callback runs only about once a second on a silent
// connection, while we want millisecond bounds (and short ones in tests). Every received
// byte stamps last_activity; the heap holds one deadline per transfer, re-checked against
// last_activity only when it comes due, and wait() never sleeps past the earliest one.
void HttpTransport::expire_idle_transfers(Clock::time_point now) {
  auto later = [](const IdleDeadline& a, const IdleDeadline& b) { return a.due > b.due; };
  while (!idle_heap_.empty() && idle_heap_.front().due <= now) {
    std::pop_heap(idle_heap_.begin(), idle_heap_.end(), later);
    TransferId id = idle_heap_.back().id;
    idle_heap_.pop_back();
    auto it = transfers_.find(id);
    if (it == transfers_.end()) continue;
    Transfer& t = *it->second;
    if (!t.in_multi || t.completion_queued) continue;
    auto due = t.last_activity + std::chrono::milliseconds(t.request.idle_timeout_ms);
    if (due > now) {
      push_idle_deadline(due, id);
    } else {
      queue_completion(t, Ending::idle);
    }
  }
  compact_idle_deadlines();
}

std::optional<Error> HttpTransport::ending_error(Transfer& t, const Completion& completion) {
  if (t.cancel_requested) return Error(ErrorCode::cancelled, t.where() + ": cancelled");
  switch (completion.ending) {
    case Ending::stopped:
      if (t.abort_error) return t.abort_error;
      return Error(ErrorCode::internal, t.where() + ": transfer stopped without cause");
    case Ending::idle:
      return Error(ErrorCode::timeout, t.where() + ": no data for " +
                                           std::to_string(t.request.idle_timeout_ms) +
                                           " ms (idle timeout)");
    case Ending::curl_result:
      break;
  }
  auto code = static_cast<CURLcode>(completion.curl_code);
  if (t.abort_error) return t.abort_error;
  if (code == CURLE_OK) {
    // A body-less response (204, HEAD, empty 200) never passed through on_body_bytes.
    if (!t.head_delivered && !t.deliver_head()) return t.abort_error;
    return std::nullopt;
  }
  if (code == CURLE_OPERATION_TIMEDOUT) {
    curl_off_t connected_us = 0;
    curl_easy_getinfo(t.easy, CURLINFO_CONNECT_TIME_T, &connected_us);
    return connected_us == 0
               ? Error(ErrorCode::timeout, t.where() + ": no connection within " +
                                               std::to_string(t.request.connect_timeout_ms) +
                                               " ms (connect timeout)")
               : Error(ErrorCode::timeout, t.where() + ": not complete within " +
                                               std::to_string(t.request.total_timeout_ms) +
                                               " ms (total timeout)");
  }
  if (code == CURLE_URL_MALFORMAT || code == CURLE_UNSUPPORTED_PROTOCOL)
    return Error(ErrorCode::usage, t.where() + ": " + curl_easy_strerror(code));
  // curl_easy_strerror is a fixed text per code: it never echoes the URL or headers.
  return Error(ErrorCode::network, t.where() + ": " + curl_easy_strerror(code));
}

std::size_t HttpTransport::perform(std::optional<Clock::time_point> deadline) {
  const std::size_t added = add_waiting_transfers(deadline);
  auto driving = Clock::now();
  drive_curl(driving, deadline);
  if (added > 0) {
    // The whole drive is charged to the new transfers: an estimate on the high side.
    double ns = std::chrono::duration<double, std::nano>(Clock::now() - driving).count();
    start_cost_ns_ = 0.8 * start_cost_ns_ + 0.2 * (ns / static_cast<double>(added));
  }
  collect_curl_results();
  expire_idle_transfers(Clock::now());

  // Deliver what was decided before this point, oldest first. Completions queued by the
  // handlers themselves (a cancel() in on_done) wait for the next call: bounded work.
  std::exception_ptr first_failure;
  std::size_t deliverable = completions_.size();
  std::size_t delivered = 0;
  while (delivered < deliverable) {
    if (delivered > 0 && deadline && Clock::now() >= *deadline) break;
    Completion completion = completions_.front();
    completions_.pop_front();
    ++delivered;
    auto it = transfers_.find(completion.id);
    if (it == transfers_.end()) continue;
    try {
      finish(completion.id, ending_error(*it->second, completion));
    } catch (...) {
      if (!first_failure) first_failure = std::current_exception();
    }
  }
  if (first_failure) std::rethrow_exception(first_failure);
  return delivered;
}

void HttpTransport::finish(TransferId id, std::optional<Error> error) {
  auto it = transfers_.find(id);
  if (it == transfers_.end()) return;
  std::unique_ptr<Transfer> transfer = std::move(it->second);
  transfers_.erase(it);
  if (transfer->in_multi) {
    curl_multi_remove_handle(multi_, transfer->easy);
    --in_multi_;
  }
  if (transfer->easy) recycle_easy_handle(transfer->easy);
  curl_slist_free_all(transfer->header_list);
  auto on_done = std::move(transfer->handlers.on_done);
  transfer.reset();  // the transfer is gone before its owner hears about it: re-entrancy safe
  if (on_done) on_done(std::move(error));
}

std::size_t HttpTransport::on_header_line(char* data, std::size_t size, std::size_t count,
                                          void* user) {
  auto& t = *static_cast<Transfer*>(user);
  std::size_t length = size * count;
  if (t.cancel_requested) return 0;
  t.last_activity = Clock::now();
  t.header_bytes += length;
  if (t.header_bytes > kMaxHeaderBytes || t.head.headers.size() >= kMaxHeaderCount) {
    t.abort_error = Error(ErrorCode::limit, t.where() + ": response headers exceed " +
                                                std::to_string(kMaxHeaderBytes) + " bytes or " +
                                                std::to_string(kMaxHeaderCount) + " fields");
    return 0;
  }
  std::string_view line(data, length);
  if (line.starts_with("HTTP/")) {
    // A new header block: after a 1xx, the final response replaces everything.
    t.head = HttpResponseHead{};
    auto space = line.find(' ');
    if (space != std::string_view::npos) {
      std::string_view rest = line.substr(space + 1);
      int status = 0;
      std::size_t digits = 0;
      while (digits < rest.size() && digits < 3 && rest[digits] >= '0' && rest[digits] <= '9')
        status = status * 10 + (rest[digits++] - '0');
      t.head.status = digits == 3 ? status : 0;
      t.head.reason = std::string(trim(rest.substr(digits)));
    }
    return length;
  }
  std::string_view content = trim(line);
  if (content.empty()) {
    if (t.head.status >= 200 && !t.head_delivered && !t.deliver_head()) return 0;
    return length;
  }
  if ((line.front() == ' ' || line.front() == '\t') && !t.head.headers.empty()) {
    t.head.headers.back().second += ' ';  // obsolete line folding
    t.head.headers.back().second += content;
    return length;
  }
  auto colon = content.find(':');
  if (colon == std::string_view::npos) return length;  // not a header; ignore
  t.head.headers.emplace_back(std::string(trim(content.substr(0, colon))),
                              std::string(trim(content.substr(colon + 1))));
  return length;
}

std::size_t HttpTransport::on_body_bytes(char* data, std::size_t size, std::size_t count,
                                         void* user) {
  auto& t = *static_cast<Transfer*>(user);
  std::size_t length = size * count;
  if (t.cancel_requested) return 0;
  if (!t.head_delivered && !t.deliver_head()) return 0;
  if (t.cancel_requested) return 0;  // cancelled from on_head
  if (length >
      t.request.max_response_bytes - std::min(t.body_bytes, t.request.max_response_bytes)) {
    t.abort_error =
        Error(ErrorCode::limit, t.where() + ": response body exceeds the limit of " +
                                    std::to_string(t.request.max_response_bytes) + " bytes");
    return 0;
  }
  t.body_bytes += length;
  t.last_activity = Clock::now();
  if (t.handlers.on_body && !t.call_safely([&] { t.handlers.on_body({data, length}); })) return 0;
  if (t.cancel_requested) return 0;
  return length;
}

}  // namespace luagent::llm
