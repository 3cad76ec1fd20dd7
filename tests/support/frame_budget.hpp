// The frame-budget scenario shared by tests/integration/frame_budget_test.cpp and
// tests/bench/frame_budget_bench.cpp: N calculator agents in flight against a loopback
// OpenAI-compatible server answering after 50-500 ms, plus one agent whose tool spins in
// a tight Lua loop between its LLM calls, all driven by a 60 Hz loop calling pump(budget)
// and approving each pause from updates(). Reports how long every pump call took.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace luagent::test {

struct FrameBudgetFigures {
  std::vector<double> pump_us;  // every pump call, in order (wall clock)
  /// The CPU time the calling thread spent in each pump call: on a shared machine a pump
  /// can take long on the wall clock because the thread was not running at all.
  std::vector<double> pump_cpu_us;
  /// Context switches of the calling thread during each pump call: involuntary ones mean
  /// the scheduler took the CPU away (a shared machine), voluntary ones that the pump
  /// waited in the kernel (a lock, a blocking syscall).
  std::vector<long> pump_preemptions;
  std::vector<long> pump_waits;
  int threads = 0;
  int finished_correctly = 0;  // done with "The result is 18."
  std::vector<std::string> problems;
  double wall_s = 0;
  std::size_t requests = 0;

  double percentile(double p) const;      // of pump_us
  double cpu_percentile(double p) const;  // of pump_cpu_us
  double max() const;
  /// "pumps 1234, p50 .. p99 .. p99.9 .. max .. us".
  std::string summary() const;
};

/// What the grinder's tight loop does: add integers (no allocation), or build 200-byte
/// strings (garbage by the megabyte, which the collector must keep up with in the budget).
enum class Grinding { integers, strings };

/// Runs the scenario with the store in `work_dir` (tmpfs keeps fsync out of the figures).
FrameBudgetFigures run_frame_budget(const std::filesystem::path& work_dir, int agents,
                                    std::chrono::microseconds budget,
                                    std::chrono::milliseconds frame = std::chrono::milliseconds(16),
                                    std::chrono::seconds limit = std::chrono::seconds(120),
                                    Grinding grinding = Grinding::integers);

}  // namespace luagent::test
