// Frame budget at 60 Hz: 500 calculator agents (50-500 ms model latency, one grinding a
// tight Lua loop between calls) driven by pump(2ms); prints the pump-time distribution.
// Usage: frame_budget_bench [agents] [budget_us]
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "support/frame_budget.hpp"
#include "support/test_paths.hpp"

int main(int argc, char** argv) {
  int agents = argc > 1 ? std::atoi(argv[1]) : 500;
  long budget_us = argc > 2 ? std::atol(argv[2]) : 2000;
  std::filesystem::path work = std::filesystem::is_directory("/dev/shm")
                                   ? std::filesystem::path("/dev/shm")
                                   : std::filesystem::temp_directory_path();
  work /= "luagent-frame-bench-" + std::to_string(::getpid());
  std::filesystem::create_directories(work);
  auto figures =
      luagent::test::run_frame_budget(work, agents, std::chrono::microseconds(budget_us));
  std::filesystem::remove_all(work);
  std::printf("frame_budget agents=%d budget=%ldus: %s\n", agents, budget_us,
              figures.summary().c_str());
  for (const auto& problem : figures.problems) std::printf("  %s\n", problem.c_str());
  return figures.finished_correctly == figures.threads ? 0 : 1;
}
