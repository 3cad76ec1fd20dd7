// Group commit: events that runs append in the same loop turn are committed together,
// in one transaction, and nobody outside hears of an event before it is durable.
#define BOOST_TEST_MODULE group_commit
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>

#include <fstream>
#include <map>

#include "luagent/luagent.hpp"
#include "support/test_paths.hpp"

using namespace luagent;

namespace {

constexpr int kRuns = 20;

// Each run pushes three notes, runs a tool (its start must be durable before it runs),
// then pushes a fourth. `check` sees each note as the host reports it.
void run_pushers(const std::string& store_uri, const test::TempDir& dir,
                 const std::function<void(const Thread&, const Event&)>& check,
                 bool launch_waits_for_disk = true) {
  auto folder = dir / "pusher";
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "agent.lua") << R"lua(
return function(thread)
  local last
  for n = 1, 3 do
    last = { n = n }
    thread:push("note", last)
  end
  thread:execute(last, function() return 1 end)
  thread:push("note", { n = 4 })
end
)lua";
  HostConfig config;
  config.store = store_uri;
  config.launch_waits_for_disk = launch_waits_for_disk;
  Host host(config);
  host.on_event([&](const Thread& thread, const Event& event) {
    if (event.type == "note" || !launch_waits_for_disk) check(thread, event);
  });
  for (int i = 0; i < kRuns; ++i) host.launch(folder.string(), Event::user(std::to_string(i)));
  host.run_until_idle();
  for (const auto& summary : host.list())
    BOOST_TEST(summary.status == Status::done, summary.id << " is " << summary.status);
}

int count_rows(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* statement = nullptr;
  BOOST_REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &statement, nullptr) == SQLITE_OK);
  BOOST_REQUIRE(sqlite3_step(statement) == SQLITE_ROW);
  int count = sqlite3_column_int(statement, 0);
  sqlite3_finalize(statement);
  return count;
}

}  // namespace

BOOST_AUTO_TEST_CASE(appends_of_one_turn_commit_together) {
  test::TempDir dir;
  auto path = dir / "t.db";
  sqlite3* reader = nullptr;
  int reported = 0, notes_at_first_report = -1;
  run_pushers("sqlite:" + path.string(), dir, [&](const Thread& thread, const Event& event) {
    if (!reader) BOOST_REQUIRE(sqlite3_open(path.c_str(), &reader) == SQLITE_OK);
    // Reported means durable: another connection already reads it from the file.
    BOOST_TEST(count_rows(reader, "SELECT COUNT(*) FROM events WHERE thread_id = '" + thread.id +
                                      "' AND seq = " + std::to_string(event.id)) == 1);
    // The first turn's pushes of every run went in one commit, before any was reported
    // (one commit per push would show a single note here).
    if (reported++ == 0)
      notes_at_first_report = count_rows(reader, "SELECT COUNT(*) FROM events WHERE type = 'note'");
  });
  BOOST_TEST(reported == 4 * kRuns);
  BOOST_TEST(notes_at_first_report == 3 * kRuns);
  BOOST_TEST(count_rows(reader, "SELECT COUNT(*) FROM events WHERE type = 'note'") == 4 * kRuns);
  sqlite3_close(reader);
}

BOOST_AUTO_TEST_CASE(stores_without_batches_keep_the_same_semantics) {
  test::TempDir dir;
  int reported = 0;
  run_pushers("fs:" + (dir / "threads").string(), dir,
              [&](const Thread&, const Event&) { ++reported; });
  BOOST_TEST(reported == 4 * kRuns);
}

BOOST_AUTO_TEST_CASE(a_launch_that_does_not_wait_for_the_disk_is_reported_after_its_flush) {
  test::TempDir dir;
  auto path = dir / "t.db";
  sqlite3* reader = nullptr;
  std::map<std::string, std::int64_t> last_reported;
  int reported = 0;
  run_pushers(
      "sqlite:" + path.string(), dir,
      [&](const Thread& thread, const Event& event) {
        if (!reader) BOOST_REQUIRE(sqlite3_open(path.c_str(), &reader) == SQLITE_OK);
        BOOST_TEST(count_rows(reader, "SELECT COUNT(*) FROM events WHERE thread_id = '" +
                                          thread.id + "' AND seq = " + std::to_string(event.id)) ==
                   1);
        // Each thread's events arrive in order, its first (the launch's) first of all.
        BOOST_TEST(event.id == last_reported[thread.id] + 1, thread.id << " event " << event.id);
        last_reported[thread.id] = event.id;
        ++reported;
      },
      /*launch_waits_for_disk=*/false);
  BOOST_TEST(last_reported.size() == static_cast<std::size_t>(kRuns));
  // user_input, 4 notes, tool_started, tool_response, done: all reported, none twice.
  BOOST_TEST(reported == 8 * kRuns);
  sqlite3_close(reader);
}

BOOST_AUTO_TEST_CASE(launch_returns_before_reporting_only_when_told_not_to_wait) {
  test::TempDir dir;
  auto folder = dir / "quiet";
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "agent.lua") << "return function(thread) return thread end\n";
  for (bool waits : {true, false}) {
    HostConfig config;
    config.store = "sqlite:" + (dir / (waits ? "a.db" : "b.db")).string();
    config.launch_waits_for_disk = waits;
    Host host(config);
    int reported = 0;
    host.on_event([&](const Thread&, const Event&) { ++reported; });
    host.launch(folder.string(), Event::user("hi"));
    // Waiting for the disk, launch() reports its event itself; otherwise the flush does.
    BOOST_TEST(reported == (waits ? 1 : 0));
    host.run_until_idle();
    BOOST_TEST(reported == 2);  // user_input, done
    BOOST_TEST(host.list().front().status == Status::done);
  }
}

BOOST_AUTO_TEST_CASE(a_resume_that_does_not_wait_for_the_disk_reports_the_answer_first) {
  test::TempDir dir;
  auto folder = dir / "asker";
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "agent.lua") << R"lua(
return function(thread)
  local call, answer = thread:resumed()
  if call then
    thread:push("noted", { approved = answer.approved })
    return thread
  end
  return thread:await("approval", { intent = "go" })
end
)lua";
  HostConfig config;
  config.store = "sqlite:" + (dir / "t.db").string();
  config.launch_waits_for_disk = false;
  Host host(config);
  std::vector<std::string> types;
  host.on_event([&](const Thread&, const Event& event) { types.push_back(event.type); });
  auto id = host.launch(folder.string(), Event::user("hi"));
  host.run_until_idle();
  BOOST_TEST(host.get(id).status() == Status::awaiting_approval);
  std::size_t before = types.size();
  auto result = host.resume(id, Resume::approve());
  BOOST_TEST(result.events.size() == 1u);
  BOOST_TEST(types.size() == before);  // not reported by resume() itself
  host.run_until_idle();
  BOOST_TEST_REQUIRE(types.size() == before + 3);
  BOOST_TEST(types[before] == "approval");
  BOOST_TEST(types[before + 1] == "noted");
  BOOST_TEST(types[before + 2] == "done");
  BOOST_TEST(host.get(id).status() == Status::done);
}
