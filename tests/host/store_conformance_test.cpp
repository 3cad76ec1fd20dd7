// One suite, every store: each case runs against sqlite: and fs: alike. The
// store-specific part is only how a test damages or hand-writes a record.
#define BOOST_TEST_MODULE store_conformance
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <functional>

#include "luagent/error.hpp"
#include "store/fs_store.hpp"
#include "store/store.hpp"
#include "support/test_paths.hpp"

using namespace luagent;
namespace bdata = boost::unit_test::data;

// Named (not anonymous): Boost's data-driven cases capture it in lambdas with linkage.
namespace conformance {

const char* const kSchemes[] = {"sqlite", "fs"};

struct StoreUnderTest {
  test::TempDir dir;
  std::string scheme;
  std::string uri;
  std::unique_ptr<Store> store;

  explicit StoreUnderTest(const std::string& s) : scheme(s) {
    uri = scheme == "sqlite" ? "sqlite:" + (dir / "threads.db").string()
                             : "fs:" + (dir / "threads").string();
    store = open_store(uri);
  }

  void sql(const std::string& statement) {
    sqlite3* db = nullptr;
    BOOST_REQUIRE(sqlite3_open((dir / "threads.db").c_str(), &db) == SQLITE_OK);
    char* error = nullptr;
    int rc = sqlite3_exec(db, statement.c_str(), nullptr, nullptr, &error);
    std::string message = error ? error : "";
    sqlite3_free(error);
    sqlite3_close(db);
    BOOST_REQUIRE_MESSAGE(rc == SQLITE_OK, message);
  }
  std::filesystem::path fs_file(const std::string& id) { return dir / "threads" / (id + ".json"); }
  void write_file(const std::string& id, const std::string& text) {
    std::ofstream(fs_file(id), std::ios::binary | std::ios::trunc) << text;
  }

  /// A thread stored the way an older build (schema 0) stored it.
  std::string write_schema0_thread() {
    std::string id = new_thread_id();
    if (scheme == "sqlite") {
      sql("INSERT INTO threads(id, agent, agent_path, created_ms, schema) VALUES ('" + id +
          "', 'old', '', 1000, 0);"
          "INSERT INTO events(thread_id, seq, type, data, at_ms) VALUES ('" +
          id + "', 1, 'user_input', 'hello from v0', 1000)");
    } else {
      write_file(id,
                 R"({"id":")" + id +
                     R"(","agent":"old","status":"running","created":"1970-01-01T00:00:01.000Z",)"
                     R"("events":[{"id":1,"type":"user_input","data":"hello from v0",)"
                     R"("at":"1970-01-01T00:00:01.000Z"}]})");
    }
    return id;
  }
  /// A thread stored by a newer build (schema kStoreSchemaVersion + 1).
  std::string write_future_thread() {
    std::string id = new_thread_id();
    std::string next = std::to_string(kStoreSchemaVersion + 1);
    if (scheme == "sqlite")
      sql("INSERT INTO threads(id, agent, agent_path, created_ms, schema) VALUES ('" + id +
          "', 'new', '', 1000, " + next + ")");
    else
      write_file(id, R"({"schema":)" + next + R"(,"id":")" + id +
                         R"(","agent":"new","created":1000,"events":[],"shape":"unknown"})");
    return id;
  }
  /// Replaces the data of a thread's first event (a string without quotes or escapes in
  /// it) with arrays nested `depth` deep: past the limit, a damaged or forged store.
  void nest_first_data(const std::string& id, int depth) {
    std::string deep = std::string(depth, '[') + std::string(depth, ']');
    if (scheme == "sqlite") {
      sql("UPDATE events SET data = '" + deep + "' WHERE thread_id = '" + id + "' AND seq = 1");
    } else {
      std::ifstream in(fs_file(id), std::ios::binary);
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      auto at = text.find(R"("data":")");
      BOOST_REQUIRE(at != std::string::npos);
      auto end = text.find('"', at + 8);
      write_file(id, text.replace(at, end + 1 - at, R"("data":)" + deep));
    }
  }
  /// Damages a stored thread the way a torn write or a bad disk would.
  void truncate_record(const std::string& id) {
    if (scheme == "sqlite") {
      sql("UPDATE events SET data = '{\"trunc' WHERE thread_id = '" + id + "'");
    } else {
      auto path = fs_file(id);
      auto size = std::filesystem::file_size(path);
      std::filesystem::resize_file(path, size / 2);
    }
  }
};

}  // namespace conformance

using conformance::kSchemes;
using conformance::StoreUnderTest;

namespace {

Thread new_thread(const std::string& first_message) {
  Thread thread;
  thread.id = new_thread_id();
  thread.agent = "calculator";
  thread.agent_path = "/agents/calculator";
  thread.created_ms = now_ms();
  thread.events.push_back(Event::user(first_message));
  return thread;
}

ErrorCode code_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& error) {
    return error.code();
  }
  return ErrorCode::internal;
}

// Loading `id` fails as corrupt, naming the thread and saying `also` (when not empty).
void expect_corrupt_load(StoreUnderTest& s, const std::string& id, const std::string& also) {
  try {
    s.store->load(id);
    BOOST_ERROR("a damaged thread loaded");
  } catch (const Error& error) {
    BOOST_TEST((error.code() == ErrorCode::corrupt), error.what());
    BOOST_TEST(error.message().find(id) != std::string::npos, error.what());
    if (!also.empty()) BOOST_TEST(error.message().find(also) != std::string::npos, error.what());
  }
}

Event keyed(std::string type, nlohmann::json data, std::string key) {
  Event event = Event::make(std::move(type), std::move(data));
  event.key = std::move(key);
  return event;
}

}  // namespace

BOOST_DATA_TEST_CASE(create_load_append_round_trip, bdata::make(kSchemes), scheme) {
  StoreUnderTest s(scheme);
  Thread thread = new_thread("multiply 3 and 4");
  thread.parent_id = "th_parent";
  thread.parent_event = 3;
  s.store->create(thread);
  BOOST_TEST(thread.events[0].id == 1);
  Event step = Event::make("multiply", {{"intent", "multiply"}, {"a", 3}, {"b", 4}});
  step.version = "abcdef012345";
  auto stored = s.store->append(thread.id, 1, {step, Event::make("tool_response", 12)});
  BOOST_TEST(!stored.replayed);
  BOOST_TEST(stored.events[1].id == 3);
  Thread loaded = s.store->load(thread.id);
  BOOST_TEST(loaded.version() == 3);
  BOOST_TEST(loaded.agent == "calculator");
  BOOST_TEST(loaded.agent_path == "/agents/calculator");
  BOOST_TEST(loaded.parent_id == "th_parent");
  BOOST_TEST(loaded.parent_event == 3);
  BOOST_TEST(loaded.created_ms == thread.created_ms);
  BOOST_TEST(loaded.events[1].data["b"] == 4);
  BOOST_TEST(loaded.events[1].version == "abcdef012345");
  BOOST_TEST(loaded.events[1].at_ms == step.at_ms);
  BOOST_TEST(loaded.events[2].data == 12);
  BOOST_TEST(code_of([&] { s.store->create(thread); }) == ErrorCode::conflict);
}

BOOST_DATA_TEST_CASE(stale_version_is_a_conflict_and_writes_nothing, bdata::make(kSchemes),
                     scheme) {
  StoreUnderTest s(scheme);
  Thread thread = new_thread("x");
  s.store->create(thread);
  s.store->append(thread.id, 1, {Event::make("a", 1)});
  BOOST_TEST(code_of([&] { s.store->append(thread.id, 1, {Event::make("b", 2)}); }) ==
             ErrorCode::conflict);
  BOOST_TEST(s.store->load(thread.id).version() == 2);
}

BOOST_DATA_TEST_CASE(idempotency_key_wins_over_the_version, bdata::make(kSchemes), scheme) {
  StoreUnderTest s(scheme);
  Thread thread = new_thread("x");
  s.store->create(thread);
  auto first = s.store->append(thread.id, 1, {keyed("approval", {{"approved", true}}, "k1")});
  s.store->append(thread.id, 2, {Event::make("tool_response", 6)});
  // The same answer again, with a stale version: the first outcome, nothing written.
  auto again = s.store->append(thread.id, 1, {keyed("approval", {{"approved", true}}, "k1")});
  BOOST_TEST(again.replayed);
  BOOST_TEST(again.events.size() == 2u);
  BOOST_TEST(again.events[0].id == first.events[0].id);
  BOOST_TEST(again.events[1].data == 6);
  // A different payload under the same key is refused.
  BOOST_TEST(code_of([&] {
               s.store->append(thread.id, 3, {keyed("approval", {{"approved", false}}, "k1")});
             }) == ErrorCode::conflict);
  BOOST_TEST(s.store->load(thread.id).version() == 3);
}

BOOST_DATA_TEST_CASE(list_filters_by_status_agent_and_time, bdata::make(kSchemes), scheme) {
  StoreUnderTest s(scheme);
  Thread a = new_thread("a"), b = new_thread("b");
  b.agent = "other";
  s.store->create(a);
  s.store->create(b);
  s.store->append(a.id, 1, {Event::make("await", {{"kind", "approval"}})});
  ListFilter waiting;
  waiting.status = Status::awaiting_approval;
  auto rows = s.store->list(waiting);
  BOOST_TEST_REQUIRE(rows.size() == 1u);
  BOOST_TEST(rows[0].id == a.id);
  BOOST_TEST(rows[0].version == 2);
  ListFilter other;
  other.agent = "other";
  BOOST_TEST(s.store->list(other).size() == 1u);
  ListFilter future;
  future.updated_since_ms = now_ms() + 60000;
  BOOST_TEST(s.store->list(future).empty());
  ListFilter past;
  past.updated_before_ms = now_ms() + 60000;
  BOOST_TEST(s.store->list(past).size() == 2u);
}

BOOST_DATA_TEST_CASE(call_traces_round_trip, bdata::make(kSchemes), scheme) {
  StoreUnderTest s(scheme);
  Thread thread = new_thread("x");
  s.store->create(thread);
  s.store->record_call(thread.id, 1, {{"provider", "replay"}, {"input_tokens", 10}});
  s.store->record_call(thread.id, 3, {{"provider", "replay"}, {"input_tokens", 20}});
  // A long prompt sent twice (a retry, a fork) comes back whole both times.
  std::string prompt(2000, 'p');
  s.store->record_call(thread.id, 4, {{"provider", "openai"}, {"request", prompt}});
  s.store->record_call(thread.id, 5, {{"provider", "openai"}, {"request", prompt}});
  auto calls = s.store->calls(thread.id);
  BOOST_TEST_REQUIRE(calls.size() == 4u);
  BOOST_TEST(calls[0]["event"] == 1);
  BOOST_TEST(calls[1]["input_tokens"] == 20);
  BOOST_TEST(calls[2]["request"] == prompt);
  BOOST_TEST(calls[3]["request"] == prompt);
  BOOST_TEST(calls[3]["event"] == 5);
  if (scheme == "sqlite") {  // stored once, by content hash
    sqlite3* db = nullptr;
    sqlite3_open((s.dir / "threads.db").c_str(), &db);
    sqlite3_stmt* count = nullptr;
    sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM llm_requests", -1, &count, nullptr);
    BOOST_TEST(sqlite3_step(count) == SQLITE_ROW);
    BOOST_TEST(sqlite3_column_int(count, 0) == 1);
    sqlite3_finalize(count);
    sqlite3_close(db);
  }
}

BOOST_DATA_TEST_CASE(unknown_threads_are_not_found, bdata::make(kSchemes), scheme) {
  StoreUnderTest s(scheme);
  BOOST_TEST(code_of([&] { s.store->load("th_nope"); }) == ErrorCode::not_found);
  BOOST_TEST(code_of([&] { s.store->load("../../etc/passwd"); }) == ErrorCode::not_found);
  BOOST_TEST(code_of([&] { s.store->append("th_nope", 0, {Event::make("x", 1)}); }) ==
             ErrorCode::not_found);
}

BOOST_DATA_TEST_CASE(older_schema_loads_newer_and_corrupt_fail_for_that_thread_only,
                     bdata::make(kSchemes), scheme) {
  StoreUnderTest s(scheme);
  Thread good = new_thread("good"), bad = new_thread("bad");
  s.store->create(good);
  s.store->create(bad);
  std::string old_id = s.write_schema0_thread();
  std::string future_id = s.write_future_thread();
  s.truncate_record(bad.id);

  Thread old = s.store->load(old_id);
  BOOST_TEST(old.agent == "old");
  BOOST_TEST(old.events.at(0).data == "hello from v0");
  s.store->append(old_id, 1, {Event::make("note", 1)});  // an old thread takes new events
  BOOST_TEST(s.store->load(old_id).version() == 2);

  BOOST_TEST(code_of([&] { s.store->load(future_id); }) == ErrorCode::schema_version);
  BOOST_TEST(code_of([&] { s.store->append(future_id, 0, {Event::make("x", 1)}); }) ==
             ErrorCode::schema_version);
  BOOST_TEST(code_of([&] { s.store->load(bad.id); }) == ErrorCode::corrupt);
  // Every other thread, and the store as a whole, stay usable.
  BOOST_TEST(s.store->load(good.id).events[0].data == "good");
  s.store->append(good.id, 1, {Event::make("x", 1)});
  auto reopened = open_store(s.uri);
  BOOST_TEST(reopened->load(good.id).version() == 2);
  BOOST_TEST(reopened->list({}).size() >= 2u);
}

// fs: left a thread whose record does not read out of its listing, while sqlite: listed it
// and failed only its load: a damaged thread vanished from `luagent threads` with no word.
// Both list it now, with what can still be read, and its load fails naming the record.
BOOST_DATA_TEST_CASE(a_thread_that_does_not_read_is_listed_and_fails_its_load,
                     bdata::make(kSchemes), scheme) {
  StoreUnderTest s(scheme);
  Thread good = new_thread("good"), bad = new_thread("bad");
  s.store->create(good);
  s.store->create(bad);
  std::string future_id = s.write_future_thread();
  s.truncate_record(bad.id);

  auto listed = s.store->list({});
  auto find = [&](const std::string& id) -> const ThreadSummary* {
    for (const ThreadSummary& summary : listed)
      if (summary.id == id) return &summary;
    return nullptr;
  };
  BOOST_TEST(listed.size() == 3u);
  BOOST_TEST_REQUIRE(find(bad.id));
  BOOST_TEST(find(bad.id)->agent == "calculator");  // fs: from the record's readable beginning
  BOOST_TEST(find(bad.id)->created_ms > 0);
  BOOST_TEST(find(bad.id)->updated_ms > 0);
  BOOST_TEST_REQUIRE(find(future_id));
  BOOST_TEST(find(future_id)->agent == "new");
  BOOST_TEST_REQUIRE(find(good.id));
  BOOST_TEST(find(good.id)->version == 1);
  ListFilter by_agent;
  by_agent.agent = "calculator";
  BOOST_TEST(s.store->list(by_agent).size() == 2u);

  expect_corrupt_load(s, bad.id, scheme == "fs" ? s.fs_file(bad.id).string() : std::string());
}

// Event data nested deeper than the host stores (damage, or a forged store) took every
// command reading it down: copying it out of the record, or writing it, recurses once per
// level (200,000 here). It is a corrupt thread now, listed, and failing its own load only.
BOOST_DATA_TEST_CASE(data_nested_past_the_depth_limit_is_a_corrupt_thread, bdata::make(kSchemes),
                     scheme) {
  StoreUnderTest s(scheme);
  Thread good = new_thread("good"), bad = new_thread("bad");
  s.store->create(good);
  s.store->create(bad);
  s.nest_first_data(bad.id, 200000);
  BOOST_TEST(s.store->list({}).size() == 2u);
  expect_corrupt_load(s, bad.id, "deeper than 100 levels");
  BOOST_TEST(s.store->load(good.id).events.at(0).data == "good");
  // As deep as the host stores still loads: containers down to depth kMaxJsonDepth, the
  // last of them empty, are 101 levels of brackets.
  s.nest_first_data(good.id, 101);
  BOOST_TEST(s.store->load(good.id).version() == 1);
}

// A record that parses but is not a thread, or has nothing readable at all: listed under its
// id (the file's name) and the file's time, and its load names the file.
BOOST_AUTO_TEST_CASE(fs_store_lists_a_record_with_nothing_readable_under_its_file_name) {
  StoreUnderTest s("fs");
  std::string garbage = new_thread_id(), wrong_shape = new_thread_id();
  s.write_file(garbage, "\x01 not a thread");
  s.write_file(wrong_shape, R"({"schema":1,"agent":"calculator","created":1000,"events":7})");
  auto listed = s.store->list({});
  BOOST_TEST_REQUIRE(listed.size() == 2u);
  for (const ThreadSummary& summary : listed) {
    BOOST_TEST(summary.version == 0);
    BOOST_TEST((summary.status == Status::running));
    BOOST_TEST(summary.updated_ms > 0);
    if (summary.id == garbage) {
      BOOST_TEST(summary.agent == "");
      BOOST_TEST(summary.created_ms == summary.updated_ms);  // the file's time stands in
    } else {
      BOOST_TEST(summary.id == wrong_shape);
      BOOST_TEST(summary.agent == "calculator");
      BOOST_TEST(summary.created_ms == 1000);
    }
  }
  for (const std::string& id : {garbage, wrong_shape}) {
    try {
      s.store->load(id);
      BOOST_ERROR("a record that is not a thread loaded");
    } catch (const Error& error) {
      BOOST_TEST((error.code() == ErrorCode::corrupt), error.what());
      BOOST_TEST(error.message().find(s.fs_file(id).string()) != std::string::npos, error.what());
    }
  }
}

BOOST_DATA_TEST_CASE(processes_racing_on_one_version_one_wins, bdata::make(kSchemes), scheme) {
  StoreUnderTest s(scheme);
  Thread thread = new_thread("race");
  s.store->create(thread);
  constexpr int kWriters = 6;
  constexpr int kRounds = 20;
  std::vector<pid_t> children;
  for (int i = 0; i < kWriters; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      int wins = 0;
      try {
        auto store = open_store(s.uri);
        for (int round = 0; round < kRounds; ++round) {
          // Every writer tries to be event round+2; exactly one may be.
          for (;;) {
            std::int64_t version = store->load(thread.id).version();
            if (version > round + 1) break;
            try {
              store->append(thread.id, version, {Event::make("writer", {{"w", i}, {"r", round}})});
              ++wins;
              break;
            } catch (const Error& error) {
              if (error.code() != ErrorCode::conflict) _exit(100);
            }
          }
        }
      } catch (...) {
        _exit(101);
      }
      _exit(wins);
    }
    children.push_back(pid);
  }
  int total = 0;
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    BOOST_REQUIRE(WIFEXITED(status));
    BOOST_REQUIRE(WEXITSTATUS(status) <= kRounds);
    total += WEXITSTATUS(status);
  }
  Thread loaded = s.store->load(thread.id);
  BOOST_TEST(total == kRounds);
  BOOST_TEST(loaded.version() == kRounds + 1);
  for (int round = 0; round < kRounds; ++round)
    BOOST_TEST(loaded.events[round + 1].data["r"] == round);
}

BOOST_AUTO_TEST_CASE(fs_store_writes_a_readable_rendering_and_no_temp_files) {
  StoreUnderTest s("fs");
  Thread thread = new_thread("x");
  s.store->create(thread);
  BOOST_TEST(s.store->wants_rendering());
  s.store->write_rendering(s.store->load(thread.id), "<user_input>\nx\n</user_input>");
  std::ifstream in(s.dir / "threads" / (thread.id + ".txt"));
  std::string first;
  std::getline(in, first);
  BOOST_TEST(first == "<user_input>");
  for (const auto& entry : std::filesystem::directory_iterator(s.dir / "threads"))
    BOOST_TEST(entry.path().string().find(".tmp") == std::string::npos, entry.path());
}

// A mistyped path used to make an empty store, parent folders included; opened existing
// only, a missing store is not_found and nothing is made, while one that exists opens.
BOOST_DATA_TEST_CASE(existing_only_opens_no_missing_store, bdata::make(kSchemes), scheme) {
  test::TempDir dir;
  std::string uri = scheme == "sqlite" ? "sqlite:" + (dir / "missing/threads.db").string()
                                       : "fs:" + (dir / "missing").string();
  BOOST_TEST(code_of([&] { open_store(uri, StoreOpening::existing_only); }) ==
             ErrorCode::not_found);
  BOOST_TEST(!std::filesystem::exists(dir / "missing"));
  conformance::StoreUnderTest s(scheme);
  Thread thread = new_thread("hello");
  s.store->create(thread);
  s.store.reset();
  auto reopened = open_store(s.uri, StoreOpening::existing_only);
  BOOST_TEST(reopened->load(thread.id).version() == 1);
}
