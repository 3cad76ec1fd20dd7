// Frame budget at 60 Hz: 500 calculator agents (50-500 ms model latency, one grinding a
// tight Lua loop between calls) driven by pump(2ms); prints the pump-time distribution.
// Usage: frame_budget_bench [agents] [budget_us] [integers|strings] (the grinder's loop:
// adding integers, or building strings, which makes garbage by the megabyte)
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

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
  std::string grinding = argc > 3 ? argv[3] : "integers";
  if (grinding != "integers" && grinding != "strings") {
    std::fprintf(stderr, "the grinder's loop is 'integers' or 'strings', not '%s'\n",
                 grinding.c_str());
    return 2;
  }
  auto figures = luagent::test::run_frame_budget(
      work, agents, std::chrono::microseconds(budget_us), std::chrono::milliseconds(16),
      std::chrono::seconds(120),
      grinding == "strings" ? luagent::test::Grinding::strings : luagent::test::Grinding::integers);
  std::filesystem::remove_all(work);
  std::printf("frame_budget agents=%d budget=%ldus grinding=%s: %s\n", agents, budget_us,
              grinding.c_str(), figures.summary().c_str());
  for (const auto& problem : figures.problems) std::printf("  %s\n", problem.c_str());
  return figures.finished_correctly == figures.threads ? 0 : 1;
}
