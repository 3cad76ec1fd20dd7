// Group commit: events that runs append in the same loop turn are committed together,
// in one transaction, and nobody outside hears of an event before it is durable.
#define BOOST_TEST_MODULE group_commit
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <thread>

#include "luagent/luagent.hpp"
#include "support/test_paths.hpp"

using namespace luagent;

namespace {

constexpr int kRuns = 20;

// Each run pushes three notes, runs a tool (its start must be durable before it runs),
// then pushes a fourth. `check` sees each note as the host reports it.
std::filesystem::path write_pusher(const test::TempDir& dir) {
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
  return folder;
}

void run_pushers(const std::string& store_uri, const test::TempDir& dir,
                 const std::function<void(const Thread&, const Event&)>& check,
                 bool launch_waits_for_disk = true) {
  auto folder = write_pusher(dir);
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

// A frame that launches thousands of threads without waiting for the disk has as many
// launches to report once their flush is done: one pump reported all of them (6,000 took
// 10-20 ms of a 2 ms budget). A pump now stops applying commits at its deadline, and the
// next goes on: 1,000-1,250 a pump of 1 ms here.
BOOST_AUTO_TEST_CASE(a_pump_reports_a_frame_of_launches_over_several_pumps) {
  test::TempDir dir;
  auto folder = dir / "quiet";
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "agent.lua") << "return function(thread) return thread end\n";
  HostConfig config;
  config.store = "sqlite:" + (dir / "t.db").string();
  config.launch_waits_for_disk = false;
  Host host(config);
  constexpr int kLaunches = 6000;
  for (int i = 0; i < kLaunches; ++i) host.launch(folder.string(), Event::user("hi"));
  std::size_t most_in_one_pump = 0, launches_reported = 0;
  for (int pumps = 0; pumps < 100000; ++pumps) {
    std::size_t left = host.pump(std::chrono::milliseconds(1));
    std::size_t reported = 0;
    for (const Update& update : host.updates())
      reported += update.kind == Update::Kind::event && update.event.type == "user_input";
    most_in_one_pump = std::max(most_in_one_pump, reported);
    launches_reported += reported;
    if (left == 0) break;
  }
  BOOST_TEST_MESSAGE("at most " << most_in_one_pump << " launches reported in one pump");
  BOOST_TEST(launches_reported == static_cast<std::size_t>(kLaunches));
  BOOST_TEST(most_in_one_pump < static_cast<std::size_t>(kLaunches) / 2);
  BOOST_TEST(host.list(Status::done).size() == static_cast<std::size_t>(kLaunches));
}

namespace {

// Holds the store's write lock from another process for `hold`, once told to.
class WriteLockHolder {
 public:
  // Forked before this process opens the store: SQLite's per-process lock bookkeeping
  // must not be copied into the child.
  WriteLockHolder(const std::filesystem::path& path, std::chrono::milliseconds hold) {
    BOOST_REQUIRE(::pipe(go_) == 0);
    BOOST_REQUIRE(::pipe(held_) == 0);
    pid_ = ::fork();
    BOOST_REQUIRE(pid_ >= 0);
    if (pid_ != 0) return;
    char byte;
    if (::read(go_[0], &byte, 1) != 1) ::_exit(2);
    sqlite3* db = nullptr;
    if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) ::_exit(3);
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) ::_exit(4);
    if (::write(held_[1], "h", 1) != 1) ::_exit(5);
    std::this_thread::sleep_for(hold);
    if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) ::_exit(6);
    sqlite3_close(db);
    ::_exit(0);
  }
  ~WriteLockHolder() {
    for (int fd : {go_[0], go_[1], held_[0], held_[1]}) ::close(fd);
  }
  // Returns once the child holds the lock.
  void take() {
    char byte;
    BOOST_REQUIRE(::write(go_[1], "g", 1) == 1);
    BOOST_REQUIRE(::read(held_[0], &byte, 1) == 1);
  }
  void check_exit() {
    int status = 0;
    BOOST_REQUIRE(::waitpid(pid_, &status, 0) == pid_);
    BOOST_TEST(WIFEXITED(status));
    BOOST_TEST(WEXITSTATUS(status) == 0);
  }

 private:
  int go_[2] = {-1, -1}, held_[2] = {-1, -1};
  pid_t pid_ = -1;
};

void check_pushers_done(Host& host, const std::vector<std::string>& ids) {
  for (const auto& id : ids) {
    Thread thread = host.get(id);
    BOOST_TEST(thread.status() == Status::done, id << " is " << thread.status());
    int notes = 0;
    for (const Event& event : thread.events) notes += event.type == "note";
    BOOST_TEST(notes == 4);
  }
}

constexpr auto kLockHold = std::chrono::milliseconds(400);

// kRuns pushers launched on a store whose write lock another process takes when told to.
struct PushersBesideALockHolder {
  test::TempDir dir;
  std::filesystem::path path = dir / "t.db";
  WriteLockHolder locker{path, kLockHold};  // forked before the host opens the store
  std::unique_ptr<Host> host;
  std::vector<std::string> ids;

  explicit PushersBesideALockHolder(bool launch_waits_for_disk = true) {
    auto folder = write_pusher(dir);
    HostConfig config;
    config.store = "sqlite:" + path.string();
    config.launch_waits_for_disk = launch_waits_for_disk;
    host = std::make_unique<Host>(config);
    for (int i = 0; i < kRuns; ++i)
      ids.push_back(host->launch(folder.string(), Event::user(std::to_string(i))));
  }
};

}  // namespace

// 2,000 steps that end while another process holds the write lock leave a backlog: their
// ends, queued for one commit. Once the lock was let go, one pump committed all of it
// (3.7-3.9 ms of a 1 ms budget) and reported every end (2,000 in one pump). The backlog is
// now committed as far as the budget goes, and reporting ends (step lock, rendering,
// updates) stops at the deadline too: the rest go on in the next pumps.
BOOST_AUTO_TEST_CASE(a_pump_takes_a_backlog_of_ended_steps_over_several_pumps) {
  test::TempDir dir;
  auto path = dir / "t.db";
  WriteLockHolder locker(path, kLockHold);  // forked before the host opens the store
  auto folder = dir / "quiet";
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "agent.lua") << "return function(thread) return thread end\n";
  HostConfig config;
  config.store = "sqlite:" + path.string();
  config.launch_waits_for_disk = false;
  Host host(config);
  constexpr int kLaunches = 2000;
  for (int i = 0; i < kLaunches; ++i) host.launch(folder.string(), Event::user("hi"));
  locker.take();
  auto lock_taken = std::chrono::steady_clock::now();
  std::size_t most_in_one_pump = 0, ends_reported = 0;
  auto longest = std::chrono::steady_clock::duration::zero();
  // While the lock is held (kLockHold), frames of 2 ms run every step: its end waits.
  while (std::chrono::steady_clock::now() - lock_taken <
         kLockHold - std::chrono::milliseconds(20)) {
    host.pump(std::chrono::milliseconds(2));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  BOOST_TEST(host.list(Status::done).empty());
  for (int pumps = 0; pumps < 100000; ++pumps) {
    auto started = std::chrono::steady_clock::now();
    std::size_t left = host.pump(std::chrono::milliseconds(1));
    longest = std::max(longest, std::chrono::steady_clock::now() - started);
    std::size_t reported = 0;
    for (const Update& update : host.updates()) reported += update.kind == Update::Kind::done;
    most_in_one_pump = std::max(most_in_one_pump, reported);
    ends_reported += reported;
    if (left == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  double longest_ms = std::chrono::duration<double, std::milli>(longest).count();
  BOOST_TEST_MESSAGE("at most " << most_in_one_pump << " ends reported in one pump; longest "
                                << longest_ms << " ms");
  BOOST_TEST(ends_reported == static_cast<std::size_t>(kLaunches));
  BOOST_TEST(most_in_one_pump < static_cast<std::size_t>(kLaunches) / 2);
  BOOST_TEST(host.list(Status::done).size() == static_cast<std::size_t>(kLaunches));
  locker.check_exit();
}

// Another process (a CLI command, a second host on the same file) holding the store's
// write lock must not hold up a pump: the turn's commit is tried again at the next pump,
// and the runs that wait for it wait meanwhile. What was committed before the lock was
// taken (launches that did not wait for the disk) is still flushed and reported.
BOOST_AUTO_TEST_CASE(a_pump_never_waits_for_another_process_holding_the_write_lock) {
  PushersBesideALockHolder scene(/*launch_waits_for_disk=*/false);
  Host& host = *scene.host;
  bool held = true;
  int launches_reported_while_held = 0;
  host.on_event([&](const Thread&, const Event& event) {
    if (event.type == "user_input" && held) ++launches_reported_while_held;
  });
  scene.locker.take();
  auto lock_taken = std::chrono::steady_clock::now();
  auto longest = std::chrono::steady_clock::duration::zero();
  int pumps_while_held = 0;
  for (auto now = lock_taken; now - lock_taken < std::chrono::seconds(20);
       now = std::chrono::steady_clock::now()) {
    held = now - lock_taken < kLockHold - std::chrono::milliseconds(100);
    if (held) ++pumps_while_held;
    // A read between a refused commit and its retry (a refused statement left active
    // failed it, and every later commit).
    if (pumps_while_held == 10) BOOST_TEST(host.get(scene.ids.front()).events.size() >= 1u);
    std::size_t left = host.pump(std::chrono::milliseconds(2));
    longest = std::max(longest, std::chrono::steady_clock::now() - now);
    if (left == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  auto longest_ms = std::chrono::duration_cast<std::chrono::milliseconds>(longest).count();
  BOOST_TEST_MESSAGE("longest pump " << longest_ms << " ms, " << pumps_while_held
                                     << " pumps while the lock was held");
  // Waiting for the lock held a pump for the rest of the 400 ms; gross violations only.
  BOOST_TEST(longest_ms < 100);
  BOOST_TEST(pumps_while_held > 20);
  BOOST_TEST(launches_reported_while_held == kRuns);
  check_pushers_done(host, scene.ids);
  scene.locker.check_exit();
}

// The same for run(): the loop goes on with its other work (here a task posted from
// another thread) while the commit waits for the lock, and commits once it is free.
BOOST_AUTO_TEST_CASE(run_goes_on_serving_while_another_process_holds_the_write_lock) {
  PushersBesideALockHolder scene;
  Host& host = *scene.host;
  int done = 0;
  host.on_event([&](const Thread&, const Event& event) {
    if (event.type == "done" && ++done == kRuns) host.stop();
  });
  scene.locker.take();
  auto lock_taken = std::chrono::steady_clock::now();
  std::atomic<std::int64_t> posted_task_waited_ms{-1};
  std::thread poster([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto posted = std::chrono::steady_clock::now();
    host.post([&posted_task_waited_ms, posted] {
      posted_task_waited_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::steady_clock::now() - posted)
                                  .count();
    });
  });
  host.run();
  poster.join();
  auto ran_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - lock_taken)
                    .count();
  BOOST_TEST_MESSAGE("posted task waited " << posted_task_waited_ms << " ms; run took " << ran_ms
                                           << " ms");
  // Blocked on the lock, the task waited the rest of the 400 ms.
  BOOST_TEST(posted_task_waited_ms >= 0);
  BOOST_TEST(posted_task_waited_ms < 150);
  BOOST_TEST(done == kRuns);
  check_pushers_done(host, scene.ids);
  scene.locker.check_exit();
}
