// Process plumbing shared by the benchmark programs: the calculator model served from a
// forked child, a measured body run in its own forked child (so peak RSS and CPU are its
// own), the process's CPU and RSS figures, and the open-file limit many sockets need.
#pragma once

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <type_traits>

namespace luagent::test {

/// This process's user+system CPU time so far, in microseconds (getrusage).
double process_cpu_us();
/// The system (kernel) part of process_cpu_us(): syscalls, fsync, page faults.
double process_system_cpu_us();
/// This process's peak resident set so far, in MiB (getrusage ru_maxrss).
double peak_rss_mib();
/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
long raise_open_file_limit();

class WireServer;

/// A loopback WireServer in a forked child, so its CPU is not the benchmark's. The child
/// runs `configure` on the server, raises its open-file limit (for thousands of
/// connections) and serves until the object dies.
class ForkedWireServer {
 public:
  explicit ForkedWireServer(const std::function<void(WireServer&)>& configure);
  /// Stops the child (SIGTERM) and reaps it.
  ~ForkedWireServer();
  ForkedWireServer(const ForkedWireServer&) = delete;
  ForkedWireServer& operator=(const ForkedWireServer&) = delete;

  int port() const { return port_; }
  /// "http://127.0.0.1:<port>/v1": the base URL an openai provider is given.
  std::string base_url() const;

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

/// The calculator model (examples/calculator cassette) served over the OpenAI wire; every
/// reply waits `latency` first.
class ForkedCalculatorServer : public ForkedWireServer {
 public:
  explicit ForkedCalculatorServer(std::chrono::milliseconds latency = {});
};

/// Runs `body` in a forked child and returns the trivially copyable value it returns;
/// `failed` is returned when the child dies before answering.
template <typename Body, typename Result = std::invoke_result_t<Body>>
Result in_child(Body body, Result failed) {
  static_assert(std::is_trivially_copyable_v<Result>, "results travel through a pipe");
  int fds[2];
  if (pipe(fds) != 0) std::abort();
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    Result result = body();
    if (write(fds[1], &result, sizeof result) != static_cast<ssize_t>(sizeof result)) _exit(1);
    _exit(0);
  }
  close(fds[1]);
  Result result{};
  if (read(fds[0], &result, sizeof result) != static_cast<ssize_t>(sizeof result)) result = failed;
  close(fds[0]);
  waitpid(pid, nullptr, 0);
  return result;
}

}  // namespace luagent::test
