// Concurrency benchmark (issue 6): N calculator runs (scenario A, approved as soon as each
// pauses before divide) all in flight at once in one Host, against a loopback
// OpenAI-compatible server (a forked child) that answers every request after `latency`.
// Reports how many finished correctly, wall time (the floor is latency x 4 LLM steps),
// the host's CPU, its peak RSS and RSS per in-flight run ((peak - baseline) / N, baseline
// taken after a warm-up run, before launching). Each repeat runs in its own forked child.
// The store is SQLite in a temp dir, or in CONCURRENCY_BENCH_STORE_DIR (e.g. /dev/shm).
// The host's soft descriptor limit is raised to the hard one, or set to
// CONCURRENCY_BENCH_OPEN_FILES (e.g. 1024, a common default: runs beyond what it allows
// wait for a connection).
// Usage: concurrency_bench [runs=10000] [latency_ms=200] [repeats=1]
#include <curl/curl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "luagent/luagent.hpp"
#include "support/bench_arguments.hpp"
#include "support/bench_process.hpp"
#include "support/calculator_wire.hpp"
#include "support/test_paths.hpp"

using namespace luagent;
using Clock = std::chrono::steady_clock;

namespace {

struct Figures {
  int correct = 0;
  long steps = 0;
  double launch_s = 0;  // time to launch all N (each launch writes the thread's first event)
  double wall_s = 0;    // from the first launch to the last run ending
  double cpu_s = 0;     // host process user+sys over the same span
  double baseline_rss_mib = 0;
  double peak_rss_mib = 0;
  long open_file_limit = 0;
};

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

Figures run_host(const std::string& base_url, int runs, long open_files) {
  Figures figures;
  figures.open_file_limit = test::raise_open_file_limit();
  if (open_files > 0) {
    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = static_cast<rlim_t>(open_files);
    if (setrlimit(RLIMIT_NOFILE, &limit) == 0) figures.open_file_limit = open_files;
  }
  test::TempDir dir;
  test::write_calculator_agent(dir / "calculator", base_url);
  HostConfig config;
  const char* store_dir = std::getenv("CONCURRENCY_BENCH_STORE_DIR");
  // A folder of its own there, removed at the end with the database's -wal and -shm files.
  test::TempDir store_folder(store_dir ? std::filesystem::path(store_dir) : dir.path());
  config.store = "sqlite:" + (store_folder / "concurrency.db").string();
  config.agents_dir = dir.path();
  config.config_file = dir / "calculator/luagent.config.lua";
  config.collect_updates = false;
  Host host(config);
  int target = 1, ended = 0;
  host.on_event([&](const Thread& thread, const Event& event) {
    if (event.type == "await") {
      std::string id = thread.id;
      host.post([&host, id] { host.resume(id, Resume::approve()); });
    } else if (event.type == "done" || event.type == "failed") {
      host.post([&] {
        if (++ended == target) host.stop();
      });
    }
  });
  // Warm-up: one run loads and compiles the agent and opens the store; not measured.
  host.launch("calculator", Event::user(test::kScenarioA));
  host.run();

  figures.baseline_rss_mib = test::peak_rss_mib();
  target = 1 + runs;
  std::vector<std::string> ids;
  ids.reserve(static_cast<std::size_t>(runs));
  double cpu_before = test::process_cpu_us();
  auto start = Clock::now();
  for (int i = 0; i < runs; ++i)
    ids.push_back(host.launch("calculator", Event::user(test::kScenarioA)));
  figures.launch_s = seconds_since(start);
  host.run();
  figures.wall_s = seconds_since(start);
  figures.cpu_s = (test::process_cpu_us() - cpu_before) / 1e6;
  figures.peak_rss_mib = test::peak_rss_mib();
  for (const auto& id : ids) {
    figures.steps += static_cast<long>(host.calls(id).size());
    if (test::answered_scenario_a(host.get(id))) ++figures.correct;
  }
  return figures;
}

// The server alone: N bare libcurl requests (the first step's body) all in flight at
// once. Finishing near `latency` shows the server's delay does not serialise connections.
double bare_round_seconds(const std::string& base_url, int runs, const std::string& body) {
  test::raise_open_file_limit();
  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURLM* multi = curl_multi_init();
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  std::string url = base_url + "/chat/completions";
  auto discard = +[](char*, std::size_t size, std::size_t count, void*) { return size * count; };
  std::vector<CURL*> handles;
  auto start = Clock::now();
  for (int i = 0; i < runs; ++i) {
    CURL* easy = curl_easy_init();
    curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_multi_add_handle(multi, easy);
    handles.push_back(easy);
  }
  int ok = 0, finished = 0, running = 1;
  while (finished < runs && seconds_since(start) < 60) {
    curl_multi_perform(multi, &running);
    int left = 0;
    while (CURLMsg* message = curl_multi_info_read(multi, &left)) {
      if (message->msg != CURLMSG_DONE) continue;
      ++finished;
      long status = 0;
      curl_easy_getinfo(message->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      if (message->data.result == CURLE_OK && status > 0) ++ok;  // any answer: timing only
    }
    if (finished < runs) curl_multi_poll(multi, nullptr, 0, 100, nullptr);
  }
  double elapsed = seconds_since(start);
  for (CURL* easy : handles) {
    curl_multi_remove_handle(multi, easy);
    curl_easy_cleanup(easy);
  }
  curl_multi_cleanup(multi);
  curl_slist_free_all(headers);
  return ok == runs ? elapsed : -static_cast<double>(ok);  // negative: only -x answered
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  test::BenchArguments args(argc, argv,
                            {test::BenchArgument::integer("runs", 10000, 1, 1'000'000),
                             test::BenchArgument::integer("latency_ms", 200, 0, 600'000),
                             test::BenchArgument::integer("repeats", 1, 1, 1'000)});
  int runs = static_cast<int>(args.integer("runs"));
  int latency_ms = static_cast<int>(args.integer("latency_ms"));
  int repeats = static_cast<int>(args.integer("repeats"));
  long open_files = 0;
  if (const char* text = std::getenv("CONCURRENCY_BENCH_OPEN_FILES")) {
    const long hard_limit = test::raise_open_file_limit();  // the soft limit, raised to it
    char* end = nullptr;
    open_files = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || open_files < 64 || open_files > hard_limit) {
      std::fprintf(stderr,
                   "CONCURRENCY_BENCH_OPEN_FILES must be a whole number from 64 to the hard "
                   "descriptor limit (%ld), not '%s'\n",
                   hard_limit, text);
      return 2;
    }
  }
  test::ForkedCalculatorServer server{std::chrono::milliseconds(latency_ms)};
  // The first step's request, as the agent sends it: a user message the model answers.
  std::string body = R"({"model":"calculator-model","messages":[{"role":"user","content":")" +
                     std::string(test::kScenarioA) + R"("}]})";
  double bare =
      test::in_child([&] { return bare_round_seconds(server.base_url(), runs, body); }, -1.0);
  std::printf(
      "server check: %d bare libcurl requests in flight at once answered in %.2f s "
      "(latency %d ms; a negative figure is minus the number answered)\n",
      runs, bare, latency_ms);
  std::vector<double> wall, cpu, peak, per_run;
  bool ok = true;
  for (int r = 0; r < repeats; ++r) {
    Figures f = test::in_child([&] { return run_host(server.base_url(), runs, open_files); },
                               Figures{-1, 0, 0, 0, 0, 0, 0, 0});
    double per_run_kib = (f.peak_rss_mib - f.baseline_rss_mib) * 1024.0 / runs;
    std::printf(
        "run %d: %d/%d correct, %ld LLM steps, wall %.2f s (launching %.2f s; floor %.2f s = "
        "4 x %d ms), host CPU %.2f s (%.0f us/step), peak RSS %.1f MiB (baseline %.1f MiB), "
        "%.1f KiB per in-flight run, open-file limit %ld\n",
        r + 1, f.correct, runs, f.steps, f.wall_s, f.launch_s, 4 * latency_ms / 1000.0, latency_ms,
        f.cpu_s, f.cpu_s * 1e6 / static_cast<double>(std::max(1L, f.steps)), f.peak_rss_mib,
        f.baseline_rss_mib, per_run_kib, f.open_file_limit);
    std::fflush(stdout);
    ok = ok && f.correct == runs;
    wall.push_back(f.wall_s);
    cpu.push_back(f.cpu_s);
    peak.push_back(f.peak_rss_mib);
    per_run.push_back(per_run_kib);
  }
  std::printf(
      "concurrency_bench runs=%d latency=%d ms (median of %d): wall %.2f s, host CPU %.2f s, "
      "peak RSS %.1f MiB, %.1f KiB per in-flight run (target: all correct, peak <= 1024 MiB)\n",
      runs, latency_ms, repeats, median(wall), median(cpu), median(peak), median(per_run));
  return ok ? 0 : 1;
}
