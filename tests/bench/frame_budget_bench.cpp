// Frame budget at 60 Hz: 500 calculator agents (50-500 ms model latency, one grinding a
// tight Lua loop between calls) driven by pump(2ms); prints the pump-time distribution.
// Usage: frame_budget_bench [agents] [budget_us] [integers|strings] (the grinder's loop:
// adding integers, or building strings, which makes garbage by the megabyte)
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "support/bench_arguments.hpp"
#include "support/frame_budget.hpp"
#include "support/test_paths.hpp"

int main(int argc, char** argv) {
  luagent::test::BenchArguments args(
      argc, argv,
      {luagent::test::BenchArgument::integer("agents", 500, 1, 100'000),
       luagent::test::BenchArgument::integer("budget_us", 2000, 0, 1'000'000),
       luagent::test::BenchArgument::word("grinding", {"integers", "strings"})});
  int agents = static_cast<int>(args.integer("agents"));
  long budget_us = static_cast<long>(args.integer("budget_us"));
  std::string grinding = args.word("grinding");
  std::filesystem::path work = std::filesystem::is_directory("/dev/shm")
                                   ? std::filesystem::path("/dev/shm")
                                   : std::filesystem::temp_directory_path();
  work /= "luagent-frame-bench-" + std::to_string(::getpid());
  std::filesystem::create_directories(work);
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
