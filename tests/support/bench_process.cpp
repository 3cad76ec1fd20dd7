#include "support/bench_process.hpp"

#include <sys/resource.h>

#include <csignal>
#include <string>

#include "support/calculator_wire.hpp"
#include "support/test_paths.hpp"

namespace luagent::test {

double process_cpu_us() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6 +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

double process_system_cpu_us() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_stime.tv_sec) * 1e6 +
         static_cast<double>(usage.ru_stime.tv_usec);
}

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

long raise_open_file_limit() {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  getrlimit(RLIMIT_NOFILE, &limit);
  return static_cast<long>(limit.rlim_cur);
}

ForkedWireServer::ForkedWireServer(const std::function<void(WireServer&)>& configure) {
  int fds[2];
  if (pipe(fds) != 0) std::abort();
  pid_ = fork();
  if (pid_ < 0) std::abort();
  if (pid_ == 0) {
    close(fds[0]);
    raise_open_file_limit();
    WireServer server;
    configure(server);
    int port = server.port();
    if (write(fds[1], &port, sizeof port) != sizeof port) _exit(1);
    close(fds[1]);
    pause();  // serves from its own thread until SIGTERM
    _exit(0);
  }
  close(fds[1]);
  if (read(fds[0], &port_, sizeof port_) != sizeof port_) std::abort();
  close(fds[0]);
}

ForkedWireServer::~ForkedWireServer() {
  kill(pid_, SIGTERM);
  waitpid(pid_, nullptr, 0);
}

std::string ForkedWireServer::base_url() const {
  return "http://127.0.0.1:" + std::to_string(port_) + "/v1";
}

ForkedCalculatorServer::ForkedCalculatorServer(std::chrono::milliseconds latency)
    : ForkedWireServer([latency](WireServer& server) {
        // The model lives as long as the child process, which never returns from here.
        static CalculatorModel model(source_dir() / "examples/calculator/cassette.jsonl");
        server.set_handler(model.handler([latency](std::size_t) { return latency; }));
      }) {}

}  // namespace luagent::test
