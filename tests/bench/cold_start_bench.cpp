// Cold start (issue 6): time from starting the real CLI, `luagent run AGENT MESSAGE`, to
// its first LLM request arriving at a loopback OpenAI-compatible server. The clock starts
// just before fork(); the server's handler stamps the arrival of each process's first
// request (steady_clock is CLOCK_MONOTONIC, shared by both processes). The calculator
// agent runs with provider openai pointed at the server through OPENAI_BASE_URL; each
// run works in the same folder (the store exists after a first, unmeasured run).
// Usage: cold_start_bench [runs=20]
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "support/bench_arguments.hpp"
#include "support/calculator_wire.hpp"
#include "support/test_paths.hpp"
#include "support/wire_server.hpp"

using namespace luagent;
using Clock = std::chrono::steady_clock;

namespace {

std::int64_t ticks(Clock::time_point at) {
  return at.time_since_epoch().count();
}

// Starts the CLI with `args` (after the binary) in `dir`; returns its pid.
pid_t start_cli(const std::filesystem::path& dir, const std::string& base_url,
                std::vector<std::string> args) {
  std::string binary = test::cli_path().string();
  pid_t pid = fork();
  if (pid < 0) std::abort();
  if (pid == 0) {
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, STDIN_FILENO);
    dup2(devnull, STDOUT_FILENO);
    dup2(devnull, STDERR_FILENO);
    if (chdir(dir.c_str()) != 0) _exit(127);
    setenv("OPENAI_BASE_URL", base_url.c_str(), 1);
    setenv("OPENAI_API_KEY", "cold-start-bench", 1);
    args.insert(args.begin(), binary);
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

// Waits up to 10 s for `pid`; returns its exit code (kills it past the deadline).
int finish(pid_t pid) {
  auto deadline = Clock::now() + std::chrono::seconds(10);
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (Clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

double percentile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  auto index = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  test::BenchArguments args(argc, argv, {test::BenchArgument::integer("runs", 20, 1, 10'000)});
  int runs = static_cast<int>(args.integer("runs"));
  test::CalculatorModel model(test::source_dir() / "examples/calculator/cassette.jsonl");
  test::WireServer server;
  std::atomic<std::int64_t> first_arrival{0};
  auto answer = model.handler();
  server.set_handler([&](const test::RecordedRequest& request) {
    std::int64_t none = 0;
    first_arrival.compare_exchange_strong(none, ticks(Clock::now()));
    return answer(request);
  });
  test::TempDir dir;
  test::write_calculator_agent(dir / "calculator", server.url("/v1"));

  std::vector<double> millis;
  int failures = 0;
  for (int i = 0; i <= runs; ++i) {  // run 0 warms the page cache and creates the store
    first_arrival = 0;
    auto before = Clock::now();
    pid_t pid = start_cli(dir.path(), server.url("/v1"), {"run", "calculator", test::kScenarioA});
    int code = finish(pid);
    std::int64_t arrived = first_arrival.load();
    // Scenario A pauses before divide: the CLI exits 10 (kExitWaiting, "awaiting approval").
    if (arrived == 0 || code != 10) {
      std::fprintf(stderr, "run %d: exit code %d, %s\n", i, code,
                   arrived == 0 ? "no LLM request arrived" : "request arrived");
      ++failures;
      continue;
    }
    double ms = static_cast<double>(arrived - ticks(before)) *
                static_cast<double>(Clock::period::num) / Clock::period::den * 1e3;
    if (i > 0) millis.push_back(ms);
  }
  // The floor: fork, exec, dynamic linking and exit of `luagent --help` (no Host at all).
  std::vector<double> help_millis;
  for (int i = 0; i < runs; ++i) {
    auto before = Clock::now();
    int code = finish(start_cli(dir.path(), server.url("/v1"), {"--help"}));
    if (code == 0)
      help_millis.push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - before).count());
  }
  if (millis.empty()) {
    std::fprintf(stderr, "cold_start_bench: no run reached the server\n");
    return 1;
  }
  std::printf(
      "cold_start_bench: luagent run -> first LLM request, %zu runs: p50 %.2f ms, p90 %.2f ms, "
      "max %.2f ms, min %.2f ms (target <= 20 ms)%s\n",
      millis.size(), percentile(millis, 0.5), percentile(millis, 0.9),
      *std::max_element(millis.begin(), millis.end()),
      *std::min_element(millis.begin(), millis.end()), failures ? "; some runs FAILED" : "");
  if (!help_millis.empty())
    std::printf("floor: `luagent --help` fork to exit, %zu runs: p50 %.2f ms, p90 %.2f ms\n",
                help_millis.size(), percentile(help_millis, 0.5), percentile(help_millis, 0.9));
  return failures ? 1 : 0;
}
