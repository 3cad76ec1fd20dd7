// Group commit: events that runs append in the same loop turn are committed together,
// and a run continues only once its event is durable.
#define BOOST_TEST_MODULE group_commit
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>

#include <fstream>

#include "luagent/luagent.hpp"
#include "support/test_paths.hpp"

using namespace luagent;

namespace {

constexpr int kRuns = 20;

// Each run pushes three events; `order` receives "<message>:<n>" as events are stored.
std::vector<std::string> run_pushers(const std::string& store_uri, const test::TempDir& dir) {
  auto folder = dir / "pusher";
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "agent.lua") << R"lua(
return function(thread)
  for n = 1, 3 do thread:push("note", { n = n }) end
end
)lua";
  HostConfig config;
  config.store = store_uri;
  Host host(config);
  std::vector<std::string> order;
  host.on_event([&](const Thread& thread, const Event& event) {
    if (event.type == "note")
      order.push_back(thread.events.front().data.get<std::string>() + ":" +
                      std::to_string(event.data["n"].get<int>()));
  });
  for (int i = 0; i < kRuns; ++i) host.launch(folder.string(), Event::user(std::to_string(i)));
  host.run_until_idle();
  for (const auto& summary : host.list())
    BOOST_TEST(summary.status == Status::done, summary.id << " is " << summary.status);
  return order;
}

}  // namespace

BOOST_AUTO_TEST_CASE(appends_of_one_turn_commit_together) {
  test::TempDir dir;
  auto order = run_pushers("sqlite:" + (dir / "t.db").string(), dir);
  BOOST_REQUIRE_EQUAL(order.size(), static_cast<std::size_t>(3 * kRuns));
  // Every run's first note is stored before any run's second: each push waited for the
  // turn's commit, which took every run's first push at once.
  for (int i = 0; i < kRuns; ++i) BOOST_TEST(order[i].substr(order[i].find(':')) == ":1");
  for (int i = kRuns; i < 2 * kRuns; ++i) BOOST_TEST(order[i].substr(order[i].find(':')) == ":2");
  // And each thread's events are all there, in order, in the file.
  sqlite3* db = nullptr;
  BOOST_REQUIRE(sqlite3_open((dir / "t.db").c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* count = nullptr;
  sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM events WHERE type = 'note'", -1, &count, nullptr);
  BOOST_REQUIRE(sqlite3_step(count) == SQLITE_ROW);
  BOOST_TEST(sqlite3_column_int(count, 0) == 3 * kRuns);
  sqlite3_finalize(count);
  sqlite3_close(db);
}

BOOST_AUTO_TEST_CASE(stores_without_batches_keep_the_same_semantics) {
  test::TempDir dir;
  auto order = run_pushers("fs:" + (dir / "threads").string(), dir);
  BOOST_TEST(order.size() == static_cast<std::size_t>(3 * kRuns));
}
