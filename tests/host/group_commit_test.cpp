// Group commit: events that runs append in the same loop turn are committed together,
// in one transaction, and nobody outside hears of an event before it is durable.
#define BOOST_TEST_MODULE group_commit
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>

#include <fstream>

#include "luagent/luagent.hpp"
#include "support/test_paths.hpp"

using namespace luagent;

namespace {

constexpr int kRuns = 20;

// Each run pushes three notes, runs a tool (its start must be durable before it runs),
// then pushes a fourth. `check` sees each note as the host reports it.
void run_pushers(const std::string& store_uri, const test::TempDir& dir,
                 const std::function<void(const Thread&, const Event&)>& check) {
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
  Host host(config);
  host.on_event([&](const Thread& thread, const Event& event) {
    if (event.type == "note") check(thread, event);
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
