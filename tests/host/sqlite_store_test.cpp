#define BOOST_TEST_MODULE sqlite_store
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include "luagent/error.hpp"
#include "store/store.hpp"
#include "support/test_paths.hpp"

using namespace luagent;

namespace {

Thread new_thread(const std::string& first_message) {
  Thread thread;
  thread.id = new_thread_id();
  thread.agent = "calculator";
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

}  // namespace

BOOST_AUTO_TEST_CASE(create_load_append_round_trip) {
  test::TempDir dir;
  auto store = open_store("sqlite:" + (dir / "sub/threads.db").string());
  Thread thread = new_thread("add 3 and 4");
  store->create(thread);
  BOOST_TEST(thread.events.at(0).id == 1);

  auto appended = store->append(thread.id, 1,
                                {Event::make("add", {{"intent", "add"}, {"a", 3}, {"b", 4}}),
                                 Event::make("await", {{"kind", "approval"}})});
  BOOST_TEST(appended.events.size() == 2u);
  BOOST_TEST(appended.events[1].id == 3);

  Thread loaded = store->load(thread.id);
  BOOST_TEST(loaded.agent == "calculator");
  BOOST_TEST(loaded.version() == 3);
  BOOST_TEST(loaded.events[1].data["a"] == 3);
  BOOST_TEST(loaded.events[0].data == "add 3 and 4");
  BOOST_TEST(loaded.status() == Status::awaiting_approval);
  BOOST_TEST(to_json(loaded) == to_json(thread_from_json(to_json(loaded))));
}

BOOST_AUTO_TEST_CASE(stale_version_is_a_conflict_and_writes_nothing) {
  test::TempDir dir;
  auto store = open_store("sqlite:" + (dir / "t.db").string());
  Thread thread = new_thread("hi");
  store->create(thread);
  store->append(thread.id, 1, {Event::make("a", 1)});
  BOOST_TEST(code_of([&] { store->append(thread.id, 1, {Event::make("b", 2)}); }) ==
             ErrorCode::conflict);
  BOOST_TEST(store->load(thread.id).version() == 2);
}

BOOST_AUTO_TEST_CASE(two_processes_racing_on_one_version_one_wins) {
  test::TempDir dir;
  std::string uri = "sqlite:" + (dir / "race.db").string();
  Thread thread = new_thread("race");
  open_store(uri)->create(thread);
  constexpr int kWriters = 6;
  std::vector<pid_t> children;
  for (int i = 0; i < kWriters; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      int code = 3;
      try {
        auto store = open_store(uri);
        store->append(thread.id, 1, {Event::make("writer", i)});
        code = 0;
      } catch (const Error& error) {
        code = error.code() == ErrorCode::conflict ? 1 : 2;
      }
      _exit(code);
    }
    children.push_back(pid);
  }
  int winners = 0, losers = 0;
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    BOOST_REQUIRE(WIFEXITED(status));
    if (WEXITSTATUS(status) == 0) ++winners;
    if (WEXITSTATUS(status) == 1) ++losers;
  }
  BOOST_TEST(winners == 1);
  BOOST_TEST(losers == kWriters - 1);
  BOOST_TEST(open_store(uri)->load(thread.id).version() == 2);
}

BOOST_AUTO_TEST_CASE(idempotency_key_returns_first_outcome) {
  test::TempDir dir;
  auto store = open_store("sqlite:" + (dir / "t.db").string());
  Thread thread = new_thread("hi");
  store->create(thread);
  Event approve = Event::make("approval", {{"approved", true}});
  approve.key = "hook-1";
  auto first = store->append(thread.id, 1, {approve});
  BOOST_TEST(!first.replayed);
  store->append(thread.id, 2, {Event::make("tool_response", 6)});
  // Same key, stale version: the first outcome, not a conflict.
  auto again = store->append(thread.id, 1, {approve});
  BOOST_TEST(again.replayed);
  BOOST_TEST(again.events.size() == 2u);
  BOOST_TEST(again.events[1].type == "tool_response");
  Event other = Event::make("approval", {{"approved", false}});
  other.key = "hook-1";
  BOOST_TEST(code_of([&] { store->append(thread.id, 3, {other}); }) == ErrorCode::conflict);
  BOOST_TEST(store->load(thread.id).version() == 3);
}

BOOST_AUTO_TEST_CASE(list_derives_status_and_filters) {
  test::TempDir dir;
  auto store = open_store("sqlite:" + (dir / "t.db").string());
  Thread a = new_thread("a"), b = new_thread("b");
  store->create(a);
  store->create(b);
  store->append(b.id, 1, {Event::make("done", nullptr)});
  ListFilter done;
  done.status = Status::done;
  auto rows = store->list(done);
  BOOST_REQUIRE(rows.size() == 1u);
  BOOST_TEST(rows[0].id == b.id);
  BOOST_TEST(store->list({}).size() == 2u);
}

BOOST_AUTO_TEST_CASE(bad_uris_and_unknown_threads_are_clear_errors) {
  BOOST_TEST(code_of([] { open_store("mysql://x"); }) == ErrorCode::config);
  BOOST_TEST(code_of([] { open_store("nothing"); }) == ErrorCode::config);
  BOOST_TEST(code_of([] { open_store("sqlite:/proc/no/such/dir/x.db"); }) == ErrorCode::config);
  test::TempDir dir;
  auto store = open_store("sqlite:" + (dir / "t.db").string());
  BOOST_TEST(code_of([&] { store->load("th_nope"); }) == ErrorCode::not_found);
  BOOST_TEST(code_of([&] { store->append("th_nope", 0, {Event::make("x", 1)}); }) ==
             ErrorCode::not_found);
}

// A folder named as a sqlite: store said only "unable to open database file", and for a
// command that reads (existing_only) it was a not_found, as if nothing were there.
BOOST_AUTO_TEST_CASE(a_folder_named_as_a_sqlite_store_is_said_to_be_a_folder) {
  test::TempDir dir;
  std::filesystem::create_directory(dir / "threads.db");
  for (StoreOpening opening : {StoreOpening::existing_only, StoreOpening::create_if_missing}) {
    try {
      open_store("sqlite:" + (dir / "threads.db").string(), opening);
      BOOST_FAIL("a folder opened as a SQLite store");
    } catch (const Error& error) {
      BOOST_TEST(error.code() == ErrorCode::config);
      BOOST_TEST(
          error.message().find((dir / "threads.db").string() +
                               " is a folder; a sqlite: store is a file") != std::string::npos,
          error.message());
    }
  }
}

BOOST_AUTO_TEST_CASE(corrupted_row_fails_that_thread_only) {
  test::TempDir dir;
  std::string path = (dir / "t.db").string();
  auto store = open_store("sqlite:" + path);
  Thread good = new_thread("good"), bad = new_thread("bad");
  store->create(good);
  store->create(bad);
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  std::string sql = "UPDATE events SET data = '{\"trunc' WHERE thread_id = '" + bad.id + "'";
  BOOST_REQUIRE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
  BOOST_TEST(code_of([&] { store->load(bad.id); }) == ErrorCode::corrupt);
  BOOST_TEST(store->load(good.id).events[0].data == "good");
}

BOOST_AUTO_TEST_CASE(status_is_derived_from_the_last_event) {
  std::vector<Event> events{Event::user("x")};
  BOOST_TEST(derive_status(events) == Status::running);
  events.push_back(Event::make("await", {{"kind", "human"}}));
  BOOST_TEST(derive_status(events) == Status::awaiting_human);
  events.push_back(Event::make("human_response", "more"));
  BOOST_TEST(derive_status(events) == Status::running);
  events.push_back(Event::make("failed", {{"code", "runtime"}}));
  BOOST_TEST(derive_status(events) == Status::failed);
}

// Deferred flushing (the host's group commits): batches commit without fsync,
// sync_committed() flushes, and the log is checkpointed there, so it stays bounded (SQLite's
// own automatic checkpoint is off in this mode).
BOOST_AUTO_TEST_CASE(deferred_sync_flushes_and_keeps_the_log_bounded) {
  test::TempDir dir;
  auto path = dir / "threads.db";
  auto store = open_store("sqlite:" + path.string());
  BOOST_REQUIRE(store->defer_batch_sync());
  Thread thread = new_thread("many");
  store->create(thread);
  const std::string payload(2000, 'x');  // about half a page per event
  std::int64_t version = 1;
  for (int batch = 0; batch < 3000; ++batch) {
    std::vector<AppendBatchItem> items{{thread.id, version, {Event::make("note", payload)}}};
    auto results = store->append_batch(items);
    BOOST_REQUIRE(std::holds_alternative<AppendResult>(results.at(0)));
    ++version;
    store->sync_committed();
  }
  BOOST_TEST(store->load(thread.id).version() == version);
  // 3000 commits of a page or more each: 12 MB and up without checkpoints.
  auto wal_bytes = std::filesystem::file_size(path.string() + "-wal");
  BOOST_TEST(wal_bytes < std::uintmax_t{8} << 20, "the log is " << wal_bytes << " bytes");
  // Another connection reads everything that was flushed.
  auto reader = open_store("sqlite:" + path.string());
  BOOST_TEST(reader->load(thread.id).version() == version);
}

// create() and append() flush before returning but leave checkpoints to sync_committed()
// (the host's syncer thread), so the host's own thread never copies the log into the
// database; only a log four times as long as the syncer lets grow is checkpointed there.
BOOST_AUTO_TEST_CASE(deferred_sync_leaves_checkpoints_to_the_syncer_up_to_a_bound) {
  test::TempDir dir;
  auto path = dir / "threads.db";
  auto store = open_store("sqlite:" + path.string());
  BOOST_REQUIRE(store->defer_batch_sync());
  Thread thread = new_thread("long");
  store->create(thread);
  const std::string payload(30000, 'x');  // eight pages and more per commit
  std::int64_t version = 1;
  auto append_many = [&](int commits) {
    for (int i = 0; i < commits; ++i)
      version = store->append(thread.id, version, {Event::make("note", payload)}).events.back().id;
  };
  auto wal_bytes = [&] { return std::filesystem::file_size(path.string() + "-wal"); };
  append_many(250);  // 2000 pages and more: twice the syncer's threshold
  BOOST_TEST(wal_bytes() > std::uintmax_t{6} << 20, "the log is " << wal_bytes() << " bytes");
  append_many(1250);  // 12000 pages and more: 48 MB without checkpoints
  BOOST_TEST(wal_bytes() < std::uintmax_t{24} << 20, "the log is " << wal_bytes() << " bytes");
  auto reader = open_store("sqlite:" + path.string());
  BOOST_TEST(reader->load(thread.id).version() == version);
}

// An append skips looking up the version and schema of a thread this connection wrote
// last, as long as no other connection has committed since; these check that another
// connection's commit, and a rolled-back batch, are never missed.
BOOST_AUTO_TEST_CASE(append_sees_what_another_connection_committed) {
  test::TempDir dir;
  std::string path = (dir / "t.db").string();
  auto mine = open_store("sqlite:" + path);
  auto theirs = open_store("sqlite:" + path);
  Thread thread = new_thread("shared");
  mine->create(thread);
  mine->append(thread.id, 1, {Event::make("a", 1)});
  theirs->append(thread.id, 2, {Event::make("b", 2)});
  BOOST_TEST(code_of([&] { mine->append(thread.id, 2, {Event::make("c", 3)}); }) ==
             ErrorCode::conflict);
  BOOST_TEST(mine->append(thread.id, 3, {Event::make("c", 3)}).events.at(0).id == 4);
  // A newer build takes the thread over: this build must stop writing to it.
  sqlite3* db = nullptr;
  BOOST_REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  std::string sql = "UPDATE threads SET schema = " + std::to_string(kStoreSchemaVersion + 1) +
                    " WHERE id = '" + thread.id + "'";
  BOOST_REQUIRE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(db);
  BOOST_TEST(code_of([&] { mine->append(thread.id, 4, {Event::make("d", 4)}); }) ==
             ErrorCode::schema_version);
}

BOOST_AUTO_TEST_CASE(a_rolled_back_batch_leaves_every_version_as_it_was) {
  test::TempDir dir;
  auto store = open_store("sqlite:" + (dir / "t.db").string());
  Thread first = new_thread("first"), second = new_thread("second");
  store->create(first);
  store->create(second);
  // The second item breaks the key index, which fails the whole commit.
  Event once = Event::make("approval", {{"approved", true}});
  once.key = "hook-1";
  std::vector<AppendBatchItem> items{{first.id, 1, {Event::make("a", 1)}},
                                     {second.id, 1, {once, once}}};
  auto results = store->append_batch(items);
  BOOST_REQUIRE(results.size() == 2u);
  BOOST_TEST(std::holds_alternative<Error>(results[0]));
  BOOST_TEST(store->load(first.id).version() == 1);
  BOOST_TEST(store->append(first.id, 1, {Event::make("a", 1)}).events.at(0).id == 2);
  BOOST_TEST(store->append(second.id, 1, {once}).events.at(0).id == 2);
}

// A long request body is kept once, under its SHA-256, however many calls sent it; the
// calls read back with the body in place.
BOOST_AUTO_TEST_CASE(long_request_bodies_are_stored_once_under_their_sha256) {
  test::TempDir dir;
  auto store = open_store("sqlite:" + (dir / "t.db").string());
  Thread thread = new_thread("hi");
  store->create(thread);
  const std::string body = "{\"messages\":[]}" + std::string(300, 'x');
  for (int i = 0; i < 2; ++i) store->record_call(thread.id, 1, {{"request", body}, {"model", "m"}});
  auto calls = store->calls(thread.id);
  BOOST_TEST_REQUIRE(calls.size() == 2u);
  for (const auto& call : calls) BOOST_TEST(call.value("request", "") == body);
  sqlite3* db = nullptr;
  BOOST_TEST_REQUIRE(sqlite3_open((dir / "t.db").c_str(), &db) == SQLITE_OK);
  std::vector<std::string> hashes;
  sqlite3_exec(
      db, "SELECT hash FROM llm_requests",
      [](void* out, int, char** values, char**) {
        static_cast<std::vector<std::string>*>(out)->push_back(values[0]);
        return 0;
      },
      &hashes, nullptr);
  sqlite3_close(db);
  BOOST_TEST(hashes == (std::vector<std::string>{
                           "16efc74780141e001ebe0655bda7e3ae89680238629cccfc29d90aeaa4dbd472"}),
             boost::test_tools::per_element());
}

// try_append_batch() (the event loop's group commit) never waits for another connection's
// write lock: it writes nothing and leaves the batch whole, to be tried again.
BOOST_AUTO_TEST_CASE(try_append_batch_leaves_the_batch_whole_while_another_writer_holds_the_lock) {
  test::TempDir dir;
  auto path = dir / "threads.db";
  auto store = open_store("sqlite:" + path.string());
  Thread thread = new_thread("hi");
  store->create(thread);
  sqlite3* other = nullptr;
  BOOST_REQUIRE(sqlite3_open(path.c_str(), &other) == SQLITE_OK);
  BOOST_REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  std::vector<AppendBatchItem> items{{thread.id, 1, {Event::make("note", "kept")}}};
  std::vector<CallRecord> calls{{thread.id, 2, {{"model", "m"}}}};
  auto started = std::chrono::steady_clock::now();
  BOOST_TEST(!store->try_append_batch(items, calls).has_value());
  BOOST_TEST((std::chrono::steady_clock::now() - started < std::chrono::seconds(1)));
  BOOST_REQUIRE(items.at(0).events.size() == 1u);
  BOOST_TEST(items[0].events[0].data == "kept");
  BOOST_REQUIRE(calls.size() == 1u);
  BOOST_TEST(calls[0].trace["model"] == "m");
  BOOST_TEST(store->load(thread.id).version() == 1);
  BOOST_REQUIRE(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(other);
  auto results = store->try_append_batch(items, calls);
  BOOST_REQUIRE(results.has_value());
  BOOST_REQUIRE(std::holds_alternative<AppendResult>(results->at(0)));
  BOOST_TEST(store->load(thread.id).version() == 2);
  BOOST_TEST(store->calls(thread.id).size() == 1u);
}

// Only a taken id is "already exists": any other refusal of the new thread's row (a
// read-only file, here a trigger) says what it was, naming the file.
BOOST_AUTO_TEST_CASE(a_new_thread_refused_for_another_reason_is_not_said_to_exist) {
  test::TempDir dir;
  auto path = dir / "threads.db";
  auto store = open_store("sqlite:" + path.string());
  sqlite3* other = nullptr;
  BOOST_REQUIRE(sqlite3_open(path.c_str(), &other) == SQLITE_OK);
  BOOST_REQUIRE(sqlite3_exec(other,
                             "CREATE TRIGGER refuse BEFORE INSERT ON threads "
                             "BEGIN SELECT RAISE(ABORT, 'no new threads today'); END",
                             nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(other);
  Thread thread = new_thread("hi");
  try {
    store->create(thread);
    BOOST_ERROR("created");
  } catch (const Error& error) {
    BOOST_TEST(error.message().find("already exists") == std::string::npos, error.what());
    BOOST_TEST(error.message().find("no new threads today") != std::string::npos, error.what());
    BOOST_TEST(error.message().find(path.string()) != std::string::npos, error.what());
  }
}

// Opening a store whose schema is this build's takes no write lock: a command that only
// reads (threads, show) used to wait behind any other process's write, up to the busy
// timeout, and then fail as a configuration error.
BOOST_AUTO_TEST_CASE(opening_a_current_store_waits_for_no_writer) {
  test::TempDir dir;
  auto path = dir / "threads.db";
  Thread thread = new_thread("hi");
  open_store("sqlite:" + path.string())->create(thread);
  sqlite3* writer = nullptr;
  BOOST_REQUIRE(sqlite3_open(path.c_str(), &writer) == SQLITE_OK);
  BOOST_REQUIRE(sqlite3_exec(writer, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  auto started = std::chrono::steady_clock::now();
  auto reader = open_store("sqlite:" + path.string());
  BOOST_TEST(reader->list({}).size() == 1u);
  BOOST_TEST(reader->load(thread.id).version() == 1);
  BOOST_TEST((std::chrono::steady_clock::now() - started < std::chrono::seconds(1)));
  sqlite3_exec(writer, "COMMIT", nullptr, nullptr, nullptr);
  sqlite3_close(writer);
}
