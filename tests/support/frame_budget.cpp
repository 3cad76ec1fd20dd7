#include "support/frame_budget.hpp"

#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <utility>

#include "luagent/luagent.hpp"
#include "support/calculator_wire.hpp"
#include "support/test_paths.hpp"

namespace luagent::test {

namespace {
double thread_cpu_us() {
  timespec now{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) * 1e6 + static_cast<double>(now.tv_nsec) / 1e3;
}

// This thread's context switches so far: {involuntary, voluntary}.
std::pair<long, long> thread_context_switches() {
  rusage usage{};
  ::getrusage(RUSAGE_THREAD, &usage);
  return {usage.ru_nivcsw, usage.ru_nvcsw};
}
}  // namespace

namespace {
double percentile_of(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  auto index = static_cast<std::size_t>(p / 100.0 * static_cast<double>(values.size() - 1));
  return values[index];
}
}  // namespace

double FrameBudgetFigures::percentile(double p) const {
  return percentile_of(pump_us, p);
}

double FrameBudgetFigures::cpu_percentile(double p) const {
  return percentile_of(pump_cpu_us, p);
}

double FrameBudgetFigures::max() const {
  return pump_us.empty() ? 0 : *std::max_element(pump_us.begin(), pump_us.end());
}

std::string FrameBudgetFigures::summary() const {
  std::ostringstream out;
  int over_3ms = static_cast<int>(
      std::count_if(pump_us.begin(), pump_us.end(), [](double us) { return us > 3000; }));
  int cpu_over_3ms = static_cast<int>(
      std::count_if(pump_cpu_us.begin(), pump_cpu_us.end(), [](double us) { return us > 3000; }));
  double cpu_max =
      pump_cpu_us.empty() ? 0 : *std::max_element(pump_cpu_us.begin(), pump_cpu_us.end());
  // Of the pumps over 3 ms on the wall clock but not on the CPU: where the time went.
  int preempted = 0, waited = 0;
  const auto any_wait =
      std::count_if(pump_waits.begin(), pump_waits.end(), [](long n) { return n > 0; });
  for (std::size_t i = 0; i < pump_us.size() && i < pump_preemptions.size(); ++i) {
    if (pump_us[i] <= 3000 || pump_cpu_us[i] > 3000) continue;
    if (pump_preemptions[i] > 0) ++preempted;
    if (pump_waits[i] > 0) ++waited;
  }
  out << "threads " << threads << ", finished correctly " << finished_correctly << ", requests "
      << requests << ", wall " << wall_s << " s; pumps " << pump_us.size() << ": p50 "
      << percentile(50) << " us, p99 " << percentile(99) << " us, p99.9 " << percentile(99.9)
      << " us, max " << max() << " us, over 3 ms: " << over_3ms
      << "; on-CPU time of the pumping thread: p99 " << cpu_percentile(99) << " us, max " << cpu_max
      << " us, over 3 ms: " << cpu_over_3ms << "; of the " << over_3ms - cpu_over_3ms
      << " over 3 ms on the wall clock only, preempted by the scheduler: " << preempted
      << ", waited in the kernel: " << waited
      << "; pumps that waited in the kernel at all: " << any_wait;
  return out.str();
}

FrameBudgetFigures run_frame_budget(const std::filesystem::path& work_dir, int agents,
                                    std::chrono::microseconds budget,
                                    std::chrono::milliseconds frame, std::chrono::seconds limit,
                                    Grinding grinding) {
  using Clock = std::chrono::steady_clock;
  FrameBudgetFigures figures;
  CalculatorModel model(source_dir() / "examples/calculator/cassette.jsonl");
  WireServer server;
  // 50..500 ms, spread over the requests so replies arrive all the time.
  server.set_handler(model.handler([](std::size_t n) {
    return std::chrono::milliseconds(50 + static_cast<int>((n * 7919) % 451));
  }));
  write_calculator_agent(work_dir / "calculator", server.url("/v1"));
  // The grinder: the same agent, but multiply first spins ~30M Lua instructions adding
  // integers, or builds 300,000 200-byte strings (about 135 MB of garbage).
  write_calculator_agent(work_dir / "grinder", server.url("/v1"));
  {
    std::ifstream in(work_dir / "grinder/agent.lua");
    std::stringstream text;
    text << in.rdbuf();
    std::string source = text.str();
    const std::string from = "multiply = function(c) return c.a * c.b end";
    auto at = source.find(from);
    if (at == std::string::npos) throw std::runtime_error("calculator agent.lua changed shape");
    const char* loop = grinding == Grinding::integers
                           ? "local x = 0 for i = 1, 30000000 do x = x + i % 3 end "
                           : "local t = {} for i = 1, 300000 do t[i % 100 + 1] = "
                             "('x'):rep(200) .. i end ";
    source.replace(at, from.size(),
                   std::string("multiply = function(c) ") + loop + "return c.a * c.b end");
    std::ofstream(work_dir / "grinder/agent.lua") << source;
  }

  HostConfig config;
  config.store = "sqlite:" + (work_dir / "frames.db").string();
  config.agents_dir = work_dir;
  config.config_file = work_dir / "calculator/luagent.config.lua";
  config.log = [](std::string_view level, std::string_view message) {
    if (level == "error")
      std::fprintf(stderr, "[%.*s] %.*s\n", int(level.size()), level.data(), int(message.size()),
                   message.data());
  };
  Host host(config);

  std::vector<std::string> ids;
  ids.push_back(host.launch("grinder", Event::user(kScenarioA)));
  for (int i = 1; i < agents; ++i)
    ids.push_back(host.launch("calculator", Event::user(kScenarioA)));
  figures.threads = static_cast<int>(ids.size());
  std::map<std::string, bool> ended;

  auto start = Clock::now();
  auto next_frame = start;
  while (ended.size() < ids.size() && Clock::now() - start < limit) {
    auto before = Clock::now();
    double cpu_before = thread_cpu_us();
    auto switches_before = thread_context_switches();
    host.pump(budget);
    figures.pump_us.push_back(
        std::chrono::duration<double, std::micro>(Clock::now() - before).count());
    figures.pump_cpu_us.push_back(thread_cpu_us() - cpu_before);
    auto switches_after = thread_context_switches();
    figures.pump_preemptions.push_back(switches_after.first - switches_before.first);
    figures.pump_waits.push_back(switches_after.second - switches_before.second);
    for (const Update& update : host.updates()) {
      if (update.kind == Update::Kind::paused) {
        host.resume(update.thread_id, Resume::approve());  // immediate approval
      } else if (update.kind == Update::Kind::done || update.kind == Update::Kind::failed) {
        ended[update.thread_id] = true;
      }
    }
    next_frame += frame;
    std::this_thread::sleep_until(next_frame);
  }
  figures.wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  figures.requests = server.request_count();
  for (const std::string& id : ids) {
    Thread thread = host.get(id);
    bool correct = thread.status() == Status::done && thread.events.size() >= 2 &&
                   thread.events[thread.events.size() - 2].data.dump().find("The result is 18.") !=
                       std::string::npos;
    if (correct)
      ++figures.finished_correctly;
    else if (figures.problems.size() < 5)
      figures.problems.push_back(id + " ended " + std::string(status_name(thread.status())) + ": " +
                                 thread.events.back().data.dump());
  }
  return figures;
}

}  // namespace luagent::test
