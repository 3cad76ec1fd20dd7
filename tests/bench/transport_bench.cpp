// Client-side cost of an LLM-shaped HTTP call: 2,000 POSTs (JSON body built with nlohmann,
// JSON reply parsed with nlohmann) against the wire server's fixed-completion mode, at
// concurrency 1 and 50, through (a) a bare libcurl multi loop and (b) HttpTransport on the
// EventLoop. The server runs in a forked child and every client variant in its own forked
// child, so getrusage(RUSAGE_SELF) and ru_maxrss measure that client alone.
#include <curl/curl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "event_loop.hpp"
#include "llm/http_transport.hpp"
#include "support/bare_curl_loop.hpp"
#include "support/bench_arguments.hpp"
#include "support/bench_process.hpp"
#include "support/wire_server.hpp"

namespace {

constexpr int kCalls = 2000;
constexpr int kWarmupCalls = 50;

struct Figures {
  double wall_s = 0;
  double cpu_us_per_call = 0;
  double user_us_per_call = 0;
  double sys_us_per_call = 0;
  long peak_rss_kib = 0;
  int failures = 0;
};

std::string request_body(int index) {
  nlohmann::json body = {
      {"model", "gpt-4o-mini"},
      {"messages",
       {{{"role", "system"}, {"content", "You are a terse assistant."}},
        {{"role", "user"}, {"content", "Say hello, call number " + std::to_string(index)}}}},
      {"temperature", 0.2},
      {"max_tokens", 64}};
  return body.dump();
}

// What a provider would pull out of the reply; false when it is not the expected shape.
bool read_reply(const std::string& bytes) {
  nlohmann::json reply = nlohmann::json::parse(bytes, nullptr, false);
  if (reply.is_discarded()) return false;
  const auto& choices = reply.value("choices", nlohmann::json::array());
  return !choices.empty() && choices[0]["message"]["content"].is_string();
}

double micros(const timeval& t) {
  return t.tv_sec * 1e6 + t.tv_usec;
}

// --- (a) bare libcurl multi ---

int run_bare(const std::string& url, int calls, int concurrency) {
  auto result = luagent::test::run_bare_curl_loop(
      url, calls, concurrency,
      [](long index) { return nlohmann::json::parse(request_body(static_cast<int>(index))); },
      [](const nlohmann::json& reply) { return luagent::test::has_completion_text(reply); });
  return static_cast<int>(result.failures);
}

// --- (b) HttpTransport on the EventLoop ---

int run_transport(const std::string& url, int calls, int concurrency) {
  luagent::EventLoop loop;
  luagent::llm::HttpTransport transport;
  loop.add_driver(&transport);
  int started = 0, finished = 0, failures = 0;
  std::function<void()> launch = [&] {
    luagent::llm::HttpRequest request;
    request.url = url;
    request.headers = {{"content-type", "application/json"}};
    request.body = request_body(started++);
    auto reply = std::make_shared<std::string>();
    auto status = std::make_shared<int>(0);
    luagent::llm::HttpHandlers handlers;
    handlers.on_head = [status](const luagent::llm::HttpResponseHead& head) {
      *status = head.status;
    };
    handlers.on_body = [reply](std::string_view bytes) { reply->append(bytes); };
    handlers.on_done = [&, reply, status](std::optional<luagent::Error> error) {
      if (error || *status != 200 || !read_reply(*reply)) ++failures;
      ++finished;
      if (started < calls) launch();
    };
    transport.start(std::move(request), std::move(handlers));
  };
  for (int i = 0; i < concurrency && started < calls; ++i) launch();
  while (finished < calls) loop.turn(std::chrono::milliseconds(1000));
  loop.remove_driver(&transport);
  return failures;
}

// Runs one variant in a forked child and returns its figures.
Figures measure(bool bare, const std::string& url, int concurrency) {
  Figures failed;
  failed.failures = -1;
  return luagent::test::in_child(
      [&] {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        auto run = bare ? &run_bare : &run_transport;
        run(url, kWarmupCalls, concurrency);  // connections, allocator pools, page faults
        rusage before{}, after{};
        getrusage(RUSAGE_SELF, &before);
        auto start = std::chrono::steady_clock::now();
        Figures figures;
        figures.failures = run(url, kCalls, concurrency);
        figures.wall_s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        getrusage(RUSAGE_SELF, &after);
        double user = micros(after.ru_utime) - micros(before.ru_utime);
        double sys = micros(after.ru_stime) - micros(before.ru_stime);
        figures.user_us_per_call = user / kCalls;
        figures.sys_us_per_call = sys / kCalls;
        figures.cpu_us_per_call = (user + sys) / kCalls;
        figures.peak_rss_kib = after.ru_maxrss;
        return figures;
      },
      failed);
}

}  // namespace

int main(int argc, char** argv) {
  luagent::test::BenchArguments(argc, argv, {});  // takes none: refuses any
  luagent::test::ForkedWireServer server([](luagent::test::WireServer& wire) {
    wire.set_fixed_response(luagent::test::load_fixture_response("openai-chat", "text_nonstream"));
  });
  std::string url = server.base_url() + "/chat/completions";

  std::printf(
      "transport_bench: %d POSTs per row (+%d warm-up), fixed completion from a forked "
      "server; client CPU only\n",
      kCalls, kWarmupCalls);
  std::printf("%-26s %5s %9s %10s %12s %10s %10s %10s %5s\n", "client", "conc", "wall_s", "calls/s",
              "cpu_us/call", "user_us", "sys_us", "peak_MiB", "fail");
  for (int concurrency : {1, 50}) {
    for (bool bare : {true, false}) {
      Figures f = measure(bare, url, concurrency);
      std::printf("%-26s %5d %9.3f %10.0f %12.1f %10.1f %10.1f %10.1f %5d\n",
                  bare ? "bare curl multi+nlohmann" : "HttpTransport+nlohmann", concurrency,
                  f.wall_s, kCalls / f.wall_s, f.cpu_us_per_call, f.user_us_per_call,
                  f.sys_us_per_call, f.peak_rss_kib / 1024.0, f.failures);
    }
  }
  return 0;
}
