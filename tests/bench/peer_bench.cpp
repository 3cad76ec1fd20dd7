// Peer benchmark (issue 6): N=1000 calculator threads at concurrency 50 against a
// loopback OpenAI-compatible server with no latency. Each thread pauses before divide,
// is reloaded from the SQLite store, approved and resumed, and finishes (4 LLM steps).
// Reports the host process's own CPU (user+sys, getrusage) per LLM step and its peak RSS,
// and the same for a bare libcurl multi + nlohmann loop posting the same request bodies.
// It also reports the durability floor: the CPU of the two acknowledged writes each thread
// needs (its launch and its approval, each flushed before the call returns), measured as
// bare pwrite + fdatasync of one page beside the store, with no SQLite and no agent. No
// host that keeps "acknowledged means durable" can spend less per step than bare + floor.
// The server runs in a forked child; each variant in its own forked child, 3 times.
// Environment: PEER_BENCH_STORE_DIR (where the SQLite file goes; default a temp dir on
// disk), PEER_BENCH_LAUNCH_WAITS_FOR_DISK=0 (HostConfig::launch_waits_for_disk off).
// Usage: peer_bench [threads] [concurrency] [repeats]
#include <curl/curl.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "luagent/luagent.hpp"
#include "support/bare_curl_loop.hpp"
#include "support/bench_arguments.hpp"
#include "support/bench_process.hpp"
#include "support/calculator_wire.hpp"
#include "support/test_paths.hpp"

using namespace luagent;

namespace {

struct Figures {
  double cpu_us_per_step = 0;
  double system_us_per_step = 0;  // the kernel's share of cpu_us_per_step
  double peak_rss_mib = 0;
  long steps = 0;
  int correct = 0;
};

// Where the SQLite file (and the durability floor's file) go: PEER_BENCH_STORE_DIR when
// set (=/dev/shm separates SQLite's fsync cost from the rest), else `otherwise`.
std::filesystem::path store_parent(const std::filesystem::path& otherwise) {
  const char* store_dir = std::getenv("PEER_BENCH_STORE_DIR");
  return store_dir && *store_dir ? std::filesystem::path(store_dir) : otherwise;
}

Figures run_host(const std::string& base_url, int threads, int concurrency,
                 bool launch_waits_for_disk) {
  test::TempDir dir;
  test::write_calculator_agent(dir / "calculator", base_url);
  HostConfig config;
  // A folder of its own, removed at the end with the database's -wal and -shm files.
  test::TempDir store_folder(store_parent(dir.path()));
  config.store = "sqlite:" + (store_folder / "threads.db").string();
  config.agents_dir = dir.path();
  config.config_file = dir / "calculator/luagent.config.lua";
  config.collect_updates = false;
  config.launch_waits_for_disk = launch_waits_for_disk;
  Host host(config);
  int target = 1, launched = 0, ended = 0;
  std::vector<std::string> ids;
  auto launch_next = [&] {
    ids.push_back(host.launch("calculator", Event::user(test::kScenarioA)));
    ++launched;
  };
  host.on_event([&](const Thread& thread, const Event& event) {
    if (event.type == "await") {
      std::string id = thread.id;
      host.post([&host, id] {
        Thread stored = host.get(id);  // reloaded from the store, as another process would
        if (stored.status() == Status::awaiting_approval) host.resume(id, Resume::approve());
      });
    } else if (event.type == "done" || event.type == "failed") {
      host.post([&] {
        ++ended;
        if (launched < target)
          launch_next();
        else if (ended == launched)
          host.stop();
      });
    }
  });
  launch_next();  // warm-up: one thread, not measured
  host.run();
  target = 1 + threads;
  double before = test::process_cpu_us();
  double system_before = test::process_system_cpu_us();
  for (int i = 0; i < concurrency && launched < target; ++i) launch_next();
  host.run();
  double used = test::process_cpu_us() - before;
  double system_used = test::process_system_cpu_us() - system_before;
  Figures figures;
  for (std::size_t i = 1; i < ids.size(); ++i) {
    figures.steps += static_cast<long>(host.calls(ids[i]).size());
    if (test::answered_scenario_a(host.get(ids[i]))) ++figures.correct;
  }
  figures.cpu_us_per_step = used / static_cast<double>(std::max(1L, figures.steps));
  figures.system_us_per_step = system_used / static_cast<double>(std::max(1L, figures.steps));
  figures.peak_rss_mib = test::peak_rss_mib();
  return figures;
}

// --- the bare loop: libcurl multi + nlohmann, the same request bodies, no agent ---

Figures run_bare(const std::string& base_url, const std::vector<std::string>& bodies, long steps,
                 int concurrency) {
  double before = test::process_cpu_us();
  double system_before = test::process_system_cpu_us();
  // Each request is built as a client would (JSON, then serialised) from the bodies the
  // host sent.
  auto result = test::run_bare_curl_loop(
      base_url + "/chat/completions", steps, concurrency,
      [&](long index) {
        return nlohmann::json::parse(bodies[static_cast<std::size_t>(index) % bodies.size()]);
      },
      [](const nlohmann::json& reply) { return test::has_completion_text(reply); });
  Figures figures;
  double used = test::process_cpu_us() - before;
  figures.steps = result.completed + result.failures;
  figures.correct = static_cast<int>(result.completed);
  figures.cpu_us_per_step = used / static_cast<double>(std::max(1L, figures.steps));
  figures.system_us_per_step = (test::process_system_cpu_us() - system_before) /
                               static_cast<double>(std::max(1L, figures.steps));
  figures.peak_rss_mib = test::peak_rss_mib();
  return figures;
}

// --- the durability floor: what the acknowledged writes alone cost ---

// Two durable one-page writes per thread (launch, approval) in a file beside where the
// store would be, overwriting pages already on disk as SQLite's log does once it wraps.
// Returns CPU µs per LLM step (`steps_per_thread` steps a thread), or -1 on an I/O error.
double durability_floor_us(int threads, int steps_per_thread) {
  test::TempDir dir(store_parent(std::filesystem::temp_directory_path()));
  const std::string path = (dir / "floor.dat").string();
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  constexpr int kPages = 64;
  std::string page(4096, 'x');
  bool ok = true;
  for (int i = 0; i < kPages; ++i)
    ok = ok && ::pwrite(fd, page.data(), page.size(), static_cast<off_t>(i) * 4096) ==
                   static_cast<ssize_t>(page.size());
  ok = ok && ::fsync(fd) == 0;
  double before = test::process_cpu_us();
  for (int i = 0; ok && i < 2 * threads; ++i) {
    ok = ::pwrite(fd, page.data(), page.size(), static_cast<off_t>(i % kPages) * 4096) ==
         static_cast<ssize_t>(page.size());
    ok = ok && ::fdatasync(fd) == 0;
  }
  double used = test::process_cpu_us() - before;
  ::close(fd);
  if (!ok) return -1;
  return used / (static_cast<double>(threads) * steps_per_thread);
}

// The request bodies one calculator thread sends, captured from a recording server.
std::vector<std::string> capture_bodies() {
  test::CalculatorModel model(test::source_dir() / "examples/calculator/cassette.jsonl");
  test::WireServer server;
  server.set_handler(model.handler());
  test::TempDir dir;
  test::write_calculator_agent(dir / "calculator", server.url("/v1"));
  HostConfig config;
  config.store = "sqlite:" + (dir / "threads.db").string();
  config.agents_dir = dir.path();
  config.config_file = dir / "calculator/luagent.config.lua";
  Host host(config);
  auto id = host.launch("calculator", Event::user(test::kScenarioA));
  host.run_until_idle();
  host.resume(id, Resume::approve());
  host.run_until_idle();
  std::vector<std::string> bodies;
  for (const auto& request : server.requests()) bodies.push_back(request.body);
  return bodies;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  test::BenchArguments args(argc, argv,
                            {test::BenchArgument::integer("threads", 1000, 1, 1'000'000),
                             test::BenchArgument::integer("concurrency", 50, 1, 100'000),
                             test::BenchArgument::integer("repeats", 3, 1, 1'000)});
  int threads = static_cast<int>(args.integer("threads"));
  int concurrency = static_cast<int>(args.integer("concurrency"));
  int repeats = static_cast<int>(args.integer("repeats"));
  // PEER_BENCH_LAUNCH_WAITS_FOR_DISK=0: launch and resume return once committed (their
  // events are flushed with the next group commit) instead of after an fsync each.
  bool launch_waits_for_disk = true;
  if (const char* waits = std::getenv("PEER_BENCH_LAUNCH_WAITS_FOR_DISK")) {
    std::string value = waits;
    if (value != "0" && value != "1") {
      std::fprintf(stderr, "PEER_BENCH_LAUNCH_WAITS_FOR_DISK must be 0 or 1, not '%s'\n", waits);
      return 2;
    }
    launch_waits_for_disk = value == "1";
  }
  std::vector<std::string> bodies = capture_bodies();
  if (bodies.size() != 4) {
    std::fprintf(stderr, "expected 4 LLM steps per thread, captured %zu\n", bodies.size());
    return 1;
  }
  test::ForkedCalculatorServer server;
  std::string base_url = server.base_url();
  std::vector<double> host_cpu, host_rss, bare_cpu, bare_rss, floor_cpu;
  bool ok = true;
  for (int r = 0; r < repeats; ++r) {
    Figures host = test::in_child(
        [&] { return run_host(base_url, threads, concurrency, launch_waits_for_disk); },
        Figures{0, 0, 0, 0, -1});
    Figures bare =
        test::in_child([&] { return run_bare(base_url, bodies, host.steps, concurrency); },
                       Figures{0, 0, 0, 0, -1});
    double floor = test::in_child(
        [&] { return durability_floor_us(threads, static_cast<int>(bodies.size())); }, -1.0);
    std::printf(
        "run %d: host %.1f us/step (kernel %.1f; %ld steps, %d/%d correct, peak RSS %.1f MiB); "
        "bare %.1f us/step (kernel %.1f; %ld steps, peak RSS %.1f MiB); durability floor %.1f "
        "us/step\n",
        r + 1, host.cpu_us_per_step, host.system_us_per_step, host.steps, host.correct, threads,
        host.peak_rss_mib, bare.cpu_us_per_step, bare.system_us_per_step, bare.steps,
        bare.peak_rss_mib, floor);
    ok = ok && host.correct == threads && bare.correct == bare.steps && floor >= 0;
    floor_cpu.push_back(floor);
    host_cpu.push_back(host.cpu_us_per_step);
    host_rss.push_back(host.peak_rss_mib);
    bare_cpu.push_back(bare.cpu_us_per_step);
    bare_rss.push_back(bare.peak_rss_mib);
  }
  double h = median(host_cpu), b = median(bare_cpu), f = median(floor_cpu);
  std::printf(
      "peer_bench threads=%d concurrency=%d (median of %d): host %.1f us CPU per LLM step, "
      "peak RSS %.1f MiB; bare libcurl+nlohmann %.1f us per step, peak RSS %.1f MiB; ratio "
      "%.2fx (targets: <= 100 us, <= 1.35x, <= 40 MiB); durability floor %.1f us per step "
      "(bare + floor %.1f)\n",
      threads, concurrency, repeats, h, median(host_rss), b, median(bare_rss), h / b, f, b + f);
  return ok ? 0 : 1;
}
