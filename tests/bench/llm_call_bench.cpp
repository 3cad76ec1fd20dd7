// Client-side cost of a whole LLM call through the OpenAI provider (request rendering,
// RetryingClient, HttpTransport on the EventLoop, reply decoding, trace) against a bare
// libcurl multi + nlohmann loop doing the same POSTs. 2,000 calls at concurrency 1 and 50 per
// row, a fixed completion from the wire server in a forked child, each client variant in its
// own forked child so getrusage and ru_maxrss measure that client alone. Then the memory one
// in-flight call costs: RSS with 1,000 calls waiting on a slow server, minus RSS before.
#include <curl/curl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "event_loop.hpp"
#include "llm/openai_provider.hpp"
#include "support/bare_curl_loop.hpp"
#include "support/bench_arguments.hpp"
#include "support/bench_process.hpp"
#include "support/wire_server.hpp"

namespace {

constexpr int kCalls = 2000;
constexpr int kWarmupCalls = 50;
constexpr int kInFlight = 1000;

struct Figures {
  double cpu_us_per_call = 0;
  long peak_rss_kib = 0;
  int failures = 0;
};

nlohmann::json prompt(int index) {
  return nlohmann::json::array(
      {{{"role", "system"}, {"content", "You are a terse assistant."}},
       {{"role", "user"}, {"content", "Say hello, call number " + std::to_string(index)}}});
}

double micros(const timeval& t) {
  return t.tv_sec * 1e6 + t.tv_usec;
}

long current_rss_kib() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

// --- the bare loop: what any C++ client must at least do ---

int run_bare(const std::string& base_url, int calls, int concurrency) {
  auto result = luagent::test::run_bare_curl_loop(
      base_url + "/chat/completions", calls, concurrency,
      [](long index) {
        return nlohmann::json{{"model", "gpt-4o-mini"},
                              {"messages", prompt(static_cast<int>(index))}};
      },
      [](const nlohmann::json& reply) { return luagent::test::has_completion_text(reply); },
      {"Authorization: Bearer sk-bench"});
  return static_cast<int>(result.failures);
}

// --- the provider path ---

luagent::llm::HttpProviderSettings bench_settings(const std::string& base_url) {
  luagent::llm::HttpProviderSettings settings;
  settings.base_url = base_url;
  settings.api_key = "sk-bench";
  settings.default_model = "gpt-4o-mini";
  settings.prices["gpt-4o"] = {2.5, 10.0, 1.25};
  return settings;
}

int run_provider(const std::string& base_url, int calls, int concurrency) {
  luagent::EventLoop loop;
  luagent::llm::OpenAiProvider provider(loop, bench_settings(base_url));
  int started = 0, finished = 0, failures = 0;
  std::function<void()> launch = [&] {
    luagent::llm::Request request;
    request.messages = prompt(started++);
    provider.start(std::move(request), {}, [&](luagent::llm::Outcome outcome) {
      if (!outcome.ok() || outcome.reply().text.empty()) ++failures;
      ++finished;
      if (started < calls) launch();
    });
  };
  for (int i = 0; i < concurrency && started < calls; ++i) launch();
  while (finished < calls) loop.turn(std::chrono::milliseconds(1000));
  return failures;
}

Figures measure(bool bare, const std::string& base_url, int concurrency) {
  Figures failed;
  failed.failures = -1;
  return luagent::test::in_child(
      [&] {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        auto run = bare ? &run_bare : &run_provider;
        run(base_url, kWarmupCalls, concurrency);
        rusage before{}, after{};
        getrusage(RUSAGE_SELF, &before);
        Figures figures;
        figures.failures = run(base_url, kCalls, concurrency);
        getrusage(RUSAGE_SELF, &after);
        figures.cpu_us_per_call = (micros(after.ru_utime) - micros(before.ru_utime) +
                                   micros(after.ru_stime) - micros(before.ru_stime)) /
                                  kCalls;
        figures.peak_rss_kib = after.ru_maxrss;
        return figures;
      },
      failed);
}

// RSS growth per call while kInFlight calls wait on a server that answers after 3 s.
double kib_per_in_flight_call(const std::string& slow_base_url) {
  double failed = -1;
  return luagent::test::in_child(
      [&] {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        luagent::EventLoop loop;
        luagent::llm::OpenAiProvider provider(loop, bench_settings(slow_base_url));
        run_provider(slow_base_url, 1, 1);  // libraries loaded, allocator warmed
        long before = current_rss_kib();
        int finished = 0;
        for (int i = 0; i < kInFlight; ++i) {
          luagent::llm::Request request;
          request.messages = prompt(i);
          provider.start(std::move(request), {}, [&](luagent::llm::Outcome) { ++finished; });
        }
        auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
        while (std::chrono::steady_clock::now() < until) loop.turn(std::chrono::milliseconds(50));
        double per_call = static_cast<double>(current_rss_kib() - before) / kInFlight;
        if (provider.in_flight() != static_cast<std::size_t>(kInFlight)) per_call = -1;
        return per_call;
      },
      failed);
}

}  // namespace

int main(int argc, char** argv) {
  luagent::test::BenchArguments(argc, argv, {});  // takes none: refuses any
  auto completion = luagent::test::load_fixture_response("openai-chat", "text_nonstream");
  luagent::test::ForkedWireServer fast(
      [&](luagent::test::WireServer& wire) { wire.set_fixed_response(completion); });
  luagent::test::ForkedWireServer slow([&](luagent::test::WireServer& wire) {
    auto delayed = completion;
    delayed.latency = std::chrono::milliseconds(3000);
    wire.set_fixed_response(delayed);
  });

  std::printf("llm_call_bench: %d calls per row (+%d warm-up), client CPU only\n", kCalls,
              kWarmupCalls);
  std::printf("%-28s %5s %12s %10s %5s\n", "client", "conc", "cpu_us/call", "peak_MiB", "fail");
  for (int concurrency : {1, 50}) {
    Figures bare = measure(true, fast.base_url(), concurrency);
    Figures ours = measure(false, fast.base_url(), concurrency);
    std::printf("%-28s %5d %12.1f %10.1f %5d\n", "bare curl multi+nlohmann", concurrency,
                bare.cpu_us_per_call, bare.peak_rss_kib / 1024.0, bare.failures);
    std::printf("%-28s %5d %12.1f %10.1f %5d\n", "OpenAiProvider", concurrency,
                ours.cpu_us_per_call, ours.peak_rss_kib / 1024.0, ours.failures);
    std::printf("%-28s %5d %12.2f\n", "ratio provider/bare", concurrency,
                ours.cpu_us_per_call / bare.cpu_us_per_call);
  }
  std::printf("memory per in-flight call (%d waiting): %.1f KiB\n", kInFlight,
              kib_per_in_flight_call(slow.base_url()));
  return 0;
}
