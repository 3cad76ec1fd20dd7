// Store figures, for sqlite: and fs: alike:
// - durable appends per second: one writer; 8 OS threads, each with its own store
//   connection and its own luagent thread (every append is a committed, fsynced write);
// - load latency of a 200-event thread (median of 200 loads) and a load-and-append;
// - bytes stored per event, and per calculator thread (scenario A through the Host and the
//   replay cassette), with and without the LLM call traces.
// Prints figures; asserts nothing about time.
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "luagent/luagent.hpp"
#include "store/store.hpp"
#include "support/bench_arguments.hpp"
#include "support/test_paths.hpp"

using namespace luagent;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

Event sample_event(int i) {
  Event event = Event::make(i % 2 ? "multiply" : "tool_response",
                            i % 2 ? nlohmann::json{{"intent", "multiply"}, {"a", i}, {"b", 4}}
                                  : nlohmann::json{{"call", i - 1}, {"result", i * 4}});
  event.version = "3f9a1c0b7d2e";
  return event;
}

Thread fresh_thread() {
  Thread thread;
  thread.id = new_thread_id();
  thread.agent = "calculator";
  thread.created_ms = now_ms();
  thread.events.push_back(Event::user("multiply 3 and 4"));
  return thread;
}

double appends_per_second(const std::string& uri, int writers, int appends_each) {
  std::vector<std::string> ids;
  {
    auto store = open_store(uri);
    for (int w = 0; w < writers; ++w) {
      Thread thread = fresh_thread();
      store->create(thread);
      ids.push_back(thread.id);
    }
  }
  auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      auto store = open_store(uri);
      for (int i = 0; i < appends_each; ++i) store->append(ids[w], i + 1, {sample_event(i)});
    });
  }
  for (auto& t : threads) t.join();
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return writers * appends_each / seconds;
}

std::uintmax_t folder_bytes(const fs::path& dir, const std::string& skip_suffix = {}) {
  std::uintmax_t total = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir))
    if (entry.is_regular_file() &&
        (skip_suffix.empty() || entry.path().string().find(skip_suffix) == std::string::npos))
      total += entry.file_size();
  return total;
}

// Bytes of a thread's rows in SQLite: the payload of its records (keys and columns), as
// dbstat does not count per thread. Page overhead comes on top (reported separately).
std::int64_t sqlite_bytes(const fs::path& db, const std::string& sql) {
  sqlite3* handle = nullptr;
  sqlite3_open(db.c_str(), &handle);
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(handle, sql.c_str(), -1, &stmt, nullptr);
  std::int64_t bytes = sqlite3_step(stmt) == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : -1;
  sqlite3_finalize(stmt);
  sqlite3_close(handle);
  return bytes;
}

void bench(const std::string& scheme) {
  test::TempDir dir;
  auto uri = [&](const std::string& name) {
    return scheme == "sqlite" ? "sqlite:" + (dir / (name + ".db")).string()
                              : "fs:" + (dir / name).string();
  };
  std::printf("\n== %s ==\n", scheme.c_str());
  std::printf("durable appends/s, 1 writer:        %8.0f\n",
              appends_per_second(uri("one"), 1, 300));
  std::printf("durable appends/s, 8 threads:       %8.0f\n",
              appends_per_second(uri("eight"), 8, 100));

  // A 200-event thread.
  auto store = open_store(uri("big"));
  Thread thread = fresh_thread();
  store->create(thread);
  for (int i = 1; i < 200; ++i) store->append(thread.id, i, {sample_event(i)});
  std::vector<double> loads;
  for (int i = 0; i < 200; ++i) {
    auto start = Clock::now();
    Thread loaded = store->load(thread.id);
    loads.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    if (loaded.version() != 200) std::printf("wrong version!\n");
  }
  std::sort(loads.begin(), loads.end());
  auto start = Clock::now();
  Thread loaded = store->load(thread.id);
  store->append(thread.id, loaded.version(), {Event::make("approval", {{"approved", true}})});
  double load_append = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  std::printf("load 200-event thread: median %.0f us, p95 %.0f us (target <= 1000 us)\n",
              loads[loads.size() / 2], loads[loads.size() * 95 / 100]);
  std::printf("load + durable append (resume): %.0f us\n", load_append);
  if (scheme == "sqlite") {
    auto db = dir / "big.db";
    auto rows =
        sqlite_bytes(db,
                     "SELECT SUM(length(thread_id) + 4 + length(type) + length(data) + "
                     "8 + COALESCE(length(version),0) + COALESCE(length(key),0)) FROM events");
    std::printf("bytes per event (row payload): %.0f\n", rows / 201.0);
  } else {
    std::printf("bytes per event (file): %.0f\n",
                static_cast<double>(fs::file_size(dir / "big" / (thread.id + ".json"))) / 201.0);
  }

  // A calculator thread, scenario A, through the Host with the replay cassette.
  HostConfig config;
  config.store = uri("calc");
  config.provider = "replay";
  config.cassette = test::source_dir() / "examples/calculator/cassette.jsonl";
  config.log = [](std::string_view, std::string_view) {};
  std::string id;
  {
    Host host(config);
    id = host.launch((test::source_dir() / "examples/calculator").string(),
                     Event::user("can you multiply 3 and 4, then divide the result by 2 and then "
                                 "add 12 to that result"));
    host.run_until_idle();
    host.resume(id, Resume::approve());
    host.run_until_idle();
  }
  if (scheme == "sqlite") {
    auto db = dir / "calc.db";
    auto events =
        sqlite_bytes(db,
                     "SELECT SUM(length(thread_id) + 4 + length(type) + length(data) + 8 + "
                     "COALESCE(length(version),0) + COALESCE(length(key),0)) FROM events");
    auto header = sqlite_bytes(
        db, "SELECT SUM(length(id) + length(agent) + length(agent_path) + 16) FROM threads");
    auto traces =
        sqlite_bytes(db, "SELECT SUM(length(trace) + length(thread_id) + 8) FROM llm_calls");
    std::printf(
        "calculator thread (scenario A): %lld bytes without traces, %lld with traces "
        "(row payload; page overhead extra)\n",
        static_cast<long long>(events + header), static_cast<long long>(events + header + traces));
  } else {
    auto folder = dir / "calc";
    auto json = fs::file_size(folder / (id + ".json"));
    auto txt = fs::file_size(folder / (id + ".txt"));
    auto traces = fs::file_size(folder / (id + ".calls.jsonl"));
    std::printf(
        "calculator thread (scenario A): %ju bytes <id>.json, %ju bytes <id>.txt, %ju "
        "bytes traces (total %ju)\n",
        static_cast<std::uintmax_t>(json), static_cast<std::uintmax_t>(txt),
        static_cast<std::uintmax_t>(traces), folder_bytes(folder));
  }
}

}  // namespace

int main(int argc, char** argv) {
  luagent::test::BenchArguments(argc, argv, {});  // takes none: refuses any
  bench("sqlite");
  bench("fs");
  return 0;
}
