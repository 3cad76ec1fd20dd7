// Hot reload inside a running host: the watcher sees saves (in place, temp-then-rename,
// bursts), a good save swaps the agent for new steps, a bad one is reported with
// file:line while the previous version keeps serving, and a step in flight always
// finishes on the version it started with. Real files, real inotify, a real SQLite store.
#define BOOST_TEST_MODULE hot_reload
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "luagent/luagent.hpp"
#include "support/test_paths.hpp"

namespace fs = std::filesystem;
using luagent::test::TempDir;
using namespace std::chrono_literals;

namespace {

// Each step makes three LLM calls and records what the prompt said; the fourth step ends.
constexpr const char* kAgent = R"lua(
local llm = require "luagent.llm"
local prompt = require "luagent.prompt"
local p = prompt.file "p.prompt"
local schema = llm.one_of { note = { rev = "number" } }
return function(thread)
  for i = 1, 3 do
    thread:push("note", llm.json(p:messages { n = i }, schema))
  end
  local awaits = 0
  for _, e in ipairs(thread:events()) do
    if e.type == "await" then awaits = awaits + 1 end
  end
  if awaits >= 3 then return thread end
  return thread:await("human", { question = "more?" })
end
)lua";

// The model reads the revision out of the prompt, the way a model follows a prompt.
constexpr const char* kModel = R"lua(
return function(request)
  local text = request.messages[#request.messages].content
  local rev = text:match("rev (%d+)") or "-1"
  return '{"intent": "note", "rev": ' .. rev .. '}'
end
)lua";

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// An editor's save: the new text goes to a temp file renamed over the original.
void save_by_rename(const fs::path& path, const std::string& text) {
  auto temp = path.parent_path() / ("." + path.filename().string() + ".tmp");
  write_file(temp, text);
  fs::rename(temp, path);
}

std::string prompt_text(int rev) {
  return "rev " + std::to_string(rev) + "\nstep {{ n }}\n";
}

struct Fixture {
  TempDir dir;
  fs::path agent = dir / "agents/noter";
  fs::path other = dir / "agents/other";
  std::vector<luagent::ReloadReport> reports;
  std::unique_ptr<luagent::Host> host;

  // `own_stdlib`: the host reads a copy of the stdlib in `dir`, for a test to edit.
  explicit Fixture(const std::string& watch_mode = "inotify", int latency_ms = 20,
                   bool own_stdlib = false) {
    for (const auto& folder : {agent, other}) {
      fs::create_directories(folder);
      write_file(folder / "agent.lua", kAgent);
      write_file(folder / "p.prompt", prompt_text(0));
    }
    write_file(dir / "model.lua", kModel);
    luagent::HostConfig config;
    config.store = "sqlite:" + (dir / "threads.db").string();
    config.agents_dir = dir / "agents";
    config.provider = "script";
    config.script = dir / "model.lua";
    config.replay_latency = std::chrono::milliseconds(latency_ms);
    config.watch = true;
    config.watch_mode = watch_mode;
    config.watch_poll_interval = 50ms;
    config.log = [](std::string_view, std::string_view) {};
    if (own_stdlib) {
      fs::copy(luagent::test::source_dir() / "stdlib", dir / "stdlib", fs::copy_options::recursive);
      config.stdlib_dir = dir / "stdlib";
    }
    host = std::make_unique<luagent::Host>(config);
    host->on_reload([this](const luagent::ReloadReport& report) { reports.push_back(report); });
  }

  // Pumps until a report for `name` arrives that `accept` takes; nullopt after 5 s.
  std::optional<luagent::ReloadReport> wait_report(
      const std::string& name, const std::function<bool(const luagent::ReloadReport&)>& accept,
      std::chrono::milliseconds limit = 5000ms) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    std::size_t seen = reports.size();
    while (std::chrono::steady_clock::now() < deadline) {
      host->pump(5ms);
      for (; seen < reports.size(); ++seen)
        if (reports[seen].agent == name && accept(reports[seen])) return reports[seen];
    }
    return std::nullopt;
  }

  bool run_until_idle(std::chrono::milliseconds limit = 20000ms) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (host->pump(10ms) > 0)
      if (std::chrono::steady_clock::now() > deadline) return false;
    return true;
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(two_hundred_runs_in_flight_through_fifty_saves) {
  Fixture f;
  std::string current = f.host->agent_version("noter");
  int current_rev = 0;
  std::map<std::string, std::string> expected_version;  // thread -> version its step started on
  std::map<std::string, int> expected_rev;
  std::string launching_version;
  int launching_rev = 0;
  std::set<std::string> awaiting;
  std::vector<std::string> problems;
  std::map<std::string, int> rev_of_version;
  int events_after_swap = 0;  // stored by a step whose version was already replaced

  f.host->on_event([&](const luagent::Thread& thread, const luagent::Event& event) {
    if (!expected_version.count(thread.id)) {
      expected_version[thread.id] = launching_version;
      expected_rev[thread.id] = launching_rev;
    }
    if (event.version.empty()) return;  // from outside the agent (user input, answers)
    if (event.version != expected_version[thread.id])
      problems.push_back(thread.id + " event " + std::to_string(event.id) + " has version " +
                         event.version + ", its step started on " + expected_version[thread.id]);
    if (event.version != current) ++events_after_swap;
    if (event.type == "note") {
      int rev = event.data.value("rev", -2);
      if (rev != expected_rev[thread.id])
        problems.push_back(thread.id + " rendered rev " + std::to_string(rev) + ", expected " +
                           std::to_string(expected_rev[thread.id]));
      auto [it, inserted] = rev_of_version.emplace(event.version, rev);
      if (it->second != rev) problems.push_back("version " + event.version + " rendered two revs");
    }
    if (event.type == "await") awaiting.insert(thread.id);
  });

  std::vector<std::string> threads;
  launching_version = current;
  for (int i = 0; i < 200; ++i)
    threads.push_back(f.host->launch("noter", luagent::Event::user("go " + std::to_string(i))));

  auto resume_some = [&](std::size_t count) {
    std::vector<std::string> ready(awaiting.begin(), awaiting.end());
    for (std::size_t i = 0; i < ready.size() && i < count; ++i) {
      awaiting.erase(ready[i]);
      expected_version[ready[i]] = current;
      expected_rev[ready[i]] = current_rev;
      f.host->resume(ready[i], luagent::Resume::say("more"));
    }
  };

  std::string good_agent = kAgent;
  int broken_reports = 0;
  for (int rev = 1; rev <= 50; ++rev) {
    if (rev == 25) {
      // A save with a syntax error: reported with file:line, the previous version serves.
      write_file(f.agent / "agent.lua", good_agent + "\nlocal broken = = 1\n");
      auto report = f.wait_report("noter", [](const auto& r) { return !r.ok; });
      BOOST_REQUIRE_MESSAGE(report, "no report for the broken save");
      BOOST_REQUIRE(report->error);
      BOOST_CHECK_EQUAL(report->error->code(), luagent::ErrorCode::syntax);
      BOOST_CHECK_NE(report->error->source().find("agent.lua"), std::string::npos);
      BOOST_CHECK_GT(report->error->line(), 0);
      BOOST_CHECK_EQUAL(report->version, current);
      ++broken_reports;
      launching_version = current;
      launching_rev = current_rev;
      for (int i = 0; i < 5; ++i)
        threads.push_back(f.host->launch("noter", luagent::Event::user("while broken")));
      resume_some(10);
      save_by_rename(f.agent / "agent.lua", good_agent);
      auto fixed = f.wait_report("noter", [](const auto& r) { return r.ok; });
      BOOST_REQUIRE_MESSAGE(fixed, "no report for the fix");
      BOOST_CHECK_EQUAL(fixed->version, current);  // the same files as before the bad save
    }
    switch (rev % 3) {
      case 0:
        write_file(f.agent / "p.prompt", prompt_text(rev));
        break;
      case 1:
        save_by_rename(f.agent / "p.prompt", prompt_text(rev));
        break;
      default:  // a burst: a draft then the real save, coalesced or reported in order
        write_file(f.agent / "p.prompt", prompt_text(1000 + rev));
        save_by_rename(f.agent / "p.prompt", prompt_text(rev));
    }
    std::string before = current;
    auto report =
        f.wait_report("noter", [&](const auto& r) { return r.ok && r.version != before; });
    BOOST_REQUIRE_MESSAGE(report, "no reload after save " + std::to_string(rev));
    if (rev % 3 == 2) {  // let a late report of the burst arrive before trusting the version
      std::string last = report->version;
      while (auto later = f.wait_report(
                 "noter", [](const auto& r) { return r.ok; }, 100ms))
        last = later->version;
      report->version = last;
    }
    current = report->version;
    current_rev = rev;
    launching_version = current;
    launching_rev = rev;
    resume_some(15);
  }
  // Answer every waiting thread until all have ended.
  // (Run first, then look: a resumed step only asks again once it has run.)
  for (int round = 0; round < 10; ++round) {
    BOOST_REQUIRE(f.run_until_idle());
    if (awaiting.empty()) break;
    resume_some(awaiting.size());
  }
  BOOST_REQUIRE(f.run_until_idle());

  for (const auto& problem : problems) BOOST_ERROR(problem);
  BOOST_CHECK(problems.empty());
  for (const auto& id : threads)
    BOOST_CHECK_MESSAGE(f.host->get(id).status() == luagent::Status::done,
                        id << " is " << luagent::status_name(f.host->get(id).status()));
  BOOST_CHECK_EQUAL(broken_reports, 1);
  // The steps saw the saves: how many depends on speed (a sanitizer build runs fewer steps
  // per save), the version checks above are what must hold for each of them.
  BOOST_TEST_MESSAGE(rev_of_version.size() << " versions rendered by steps");
  BOOST_CHECK_GE(rev_of_version.size(), 3u);
  BOOST_TEST_MESSAGE("events stored by steps running on a replaced version: " << events_after_swap);
  BOOST_CHECK_GT(events_after_swap, 0);  // steps spanned reloads and kept their version
}

// Runs one thread of `name` to its first pause; returns its status.
luagent::Status run_one(Fixture& f, const std::string& name) {
  std::string id = f.host->launch(name, luagent::Event::user("hello"));
  BOOST_REQUIRE(f.run_until_idle());
  return f.host->get(id).status();
}

BOOST_AUTO_TEST_CASE(prompt_that_is_not_utf8_is_refused_and_the_previous_version_serves) {
  Fixture f;
  std::string before = f.host->agent_version("noter");
  write_file(f.agent / "p.prompt", "rev 1\nstep {{ n }}\nna\xefve \xff\n");
  auto report = f.wait_report("noter", [](const auto& r) { return !r.ok; });
  BOOST_REQUIRE(report);
  BOOST_CHECK_EQUAL(report->error->code(), luagent::ErrorCode::syntax);
  BOOST_CHECK_EQUAL(report->error->source(), "p.prompt");
  BOOST_CHECK_EQUAL(report->error->line(), 3);
  BOOST_CHECK_NE(std::string(report->error->what()).find("UTF-8"), std::string::npos);
  BOOST_CHECK_EQUAL(report->version, before);
  BOOST_CHECK_EQUAL(f.host->agent_version("noter"), before);
  BOOST_CHECK(run_one(f, "noter") == luagent::Status::awaiting_human);
  BOOST_CHECK(run_one(f, "other") == luagent::Status::awaiting_human);
}

BOOST_AUTO_TEST_CASE(prompt_of_100_mb_is_refused_without_reading_it) {
  Fixture f;
  std::string before = f.host->agent_version("noter");
  { std::ofstream create(f.agent / "huge.prompt"); }
  fs::resize_file(f.agent / "huge.prompt", 100u * 1024 * 1024);  // sparse: no 100 MB written
  auto report = f.wait_report("noter", [](const auto& r) { return !r.ok; });
  BOOST_REQUIRE(report);
  BOOST_CHECK_EQUAL(report->error->code(), luagent::ErrorCode::limit);
  BOOST_CHECK_NE(std::string(report->error->what()).find("huge.prompt"), std::string::npos);
  BOOST_CHECK_EQUAL(report->version, before);
  BOOST_CHECK(run_one(f, "noter") == luagent::Status::awaiting_human);
  BOOST_CHECK(run_one(f, "other") == luagent::Status::awaiting_human);
}

BOOST_AUTO_TEST_CASE(circular_include_is_refused_at_load_with_file_and_line) {
  Fixture f;
  std::string before = f.host->agent_version("noter");
  write_file(f.agent / "b.prompt", "b\n{% include \"p.prompt\" %}\n");
  save_by_rename(f.agent / "p.prompt", "rev 1\n{% include \"b.prompt\" %}\n");
  auto report = f.wait_report("noter", [](const auto& r) {
    return !r.ok && std::string(r.error->what()).find("circular") != std::string::npos;
  });
  BOOST_REQUIRE(report);
  BOOST_CHECK_EQUAL(report->error->code(), luagent::ErrorCode::syntax);
  BOOST_CHECK_GT(report->error->line(), 0);
  std::string what = report->error->what();  // the cycle, from whichever file it is entered
  BOOST_CHECK_MESSAGE(what.find("b.prompt -> p.prompt -> b.prompt") != std::string::npos ||
                          what.find("p.prompt -> b.prompt -> p.prompt") != std::string::npos,
                      what);
  BOOST_CHECK_EQUAL(f.host->agent_version("noter"), before);
  BOOST_CHECK(run_one(f, "other") == luagent::Status::awaiting_human);
}

BOOST_AUTO_TEST_CASE(invalid_tool_schema_at_load_is_reported_with_line) {
  Fixture f;
  std::string before = f.host->agent_version("noter");
  std::string agent = kAgent;
  agent.replace(agent.find("rev = \"number\""), 14, "rev = \"nmber\"");
  save_by_rename(f.agent / "agent.lua", agent);
  auto report = f.wait_report("noter", [](const auto& r) { return !r.ok; });
  BOOST_REQUIRE(report);
  BOOST_CHECK_NE(report->error->source().find("agent.lua"), std::string::npos);
  BOOST_CHECK_EQUAL(report->error->line(), 5);
  BOOST_CHECK_EQUAL(f.host->agent_version("noter"), before);
  BOOST_CHECK(run_one(f, "noter") == luagent::Status::awaiting_human);
}

BOOST_AUTO_TEST_CASE(deleting_the_agent_folder_while_it_runs) {
  Fixture f("inotify", 30);
  std::string before = f.host->agent_version("noter");
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) ids.push_back(f.host->launch("noter", luagent::Event::user("x")));
  f.host->pump(5ms);
  fs::remove_all(f.agent);
  auto report = f.wait_report("noter", [](const auto& r) { return !r.ok; });
  BOOST_REQUIRE(report);
  BOOST_CHECK_EQUAL(report->error->code(), luagent::ErrorCode::not_found);
  BOOST_CHECK_NE(std::string(report->error->what()).find("gone"), std::string::npos);
  BOOST_REQUIRE(f.run_until_idle());
  for (const auto& id : ids) {  // the steps in flight finished on the version they had
    auto thread = f.host->get(id);
    BOOST_CHECK(thread.status() == luagent::Status::awaiting_human);
    BOOST_CHECK_EQUAL(thread.events.back().version, before);
  }
  // Its waiting threads are still served by the version in memory; a launch is refused.
  f.host->resume(ids[0], luagent::Resume::say("more"));
  BOOST_REQUIRE(f.run_until_idle());
  BOOST_CHECK(f.host->get(ids[0]).status() == luagent::Status::awaiting_human);
  BOOST_CHECK_THROW(f.host->launch("noter", luagent::Event::user("x")), luagent::Error);
  BOOST_CHECK(run_one(f, "other") == luagent::Status::awaiting_human);
  // The folder comes back: it is watched again and reloaded.
  fs::create_directories(f.agent);
  write_file(f.agent / "p.prompt", prompt_text(7));
  write_file(f.agent / "agent.lua", kAgent);
  auto back = f.wait_report("noter", [](const auto& r) { return r.ok; });
  BOOST_REQUIRE_MESSAGE(back, "the recreated folder was not reloaded");
}

BOOST_AUTO_TEST_CASE(polling_fallback_reloads_a_save) {
  Fixture f("poll");
  std::string before = f.host->agent_version("noter");
  save_by_rename(f.agent / "p.prompt", prompt_text(3));
  auto report = f.wait_report("noter", [&](const auto& r) { return r.ok && r.version != before; });
  BOOST_REQUIRE(report);
  std::string id = f.host->launch("noter", luagent::Event::user("x"));
  BOOST_REQUIRE(f.run_until_idle());
  auto thread = f.host->get(id);
  BOOST_CHECK_EQUAL(thread.events[1].data.value("rev", -1), 3);
  BOOST_CHECK_EQUAL(thread.events[1].version, report->version);
}

BOOST_AUTO_TEST_CASE(unknown_watch_mode_is_a_config_error) {
  TempDir dir;
  luagent::HostConfig config;
  config.store = "sqlite:" + (dir / "t.db").string();
  config.watch = true;
  config.watch_mode = "fsevents";
  BOOST_CHECK_EXCEPTION(luagent::Host{config}, luagent::Error, [](const luagent::Error& e) {
    return e.code() == luagent::ErrorCode::config;
  });
}

// ---- without a watcher: every launch uses what is on disk now ----------------------------

namespace {

// A host without a watcher; agents under dir/agents. It reuses a loaded version only
// while the folder's stats prove nothing changed, and tells changes apart without
// re-listing the folder: these tests make each kind of change once that proof is live.
struct Unwatched {
  TempDir dir;
  fs::path agents = dir / "agents";
  fs::path agent = agents / "noter";
  std::unique_ptr<luagent::Host> host;

  Unwatched() {
    fs::create_directories(agent);
    write_file(agent / "agent.lua", kAgent);
    write_file(agent / "p.prompt", prompt_text(0));
    write_file(dir / "model.lua", kModel);
    luagent::HostConfig config;
    config.store = "sqlite:" + (dir / "threads.db").string();
    config.agents_dir = agents;
    config.provider = "script";
    config.script = dir / "model.lua";
    config.log = [](std::string_view, std::string_view) {};
    host = std::make_unique<luagent::Host>(config);
  }

  // Loads `name` once its files are older than the racy window (a few kernel ticks), so
  // the next load may take the stats-only proof; returns the version.
  std::string settled_version(const std::string& name) {
    std::this_thread::sleep_for(120ms);
    host->agent_version(name);  // re-read: its files were too new to trust their times
    return host->agent_version(name);
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(unwatched_a_source_added_to_the_folder_is_used) {
  Unwatched f;
  std::string before = f.settled_version("noter");
  write_file(f.agent / "extra.prompt", "new\n");  // no existing file changes: only the folder
  BOOST_CHECK_NE(f.host->agent_version("noter"), before);
}

BOOST_AUTO_TEST_CASE(unwatched_a_source_added_to_a_subfolder_is_used) {
  fs::path sub;
  Unwatched f;
  fs::create_directories(sub = f.agent / "parts");
  write_file(sub / "a.prompt", "a\n");
  std::string before = f.settled_version("noter");
  write_file(sub / "b.prompt", "b\n");
  BOOST_CHECK_NE(f.host->agent_version("noter"), before);
}

BOOST_AUTO_TEST_CASE(unwatched_an_edit_in_place_and_a_save_by_rename_are_used) {
  Unwatched f;
  std::string before = f.settled_version("noter");
  write_file(f.agent / "p.prompt", prompt_text(1));  // same size, same inode
  std::string edited = f.host->agent_version("noter");
  BOOST_CHECK_NE(edited, before);
  before = f.settled_version("noter");
  save_by_rename(f.agent / "p.prompt", prompt_text(2));
  BOOST_CHECK_NE(f.host->agent_version("noter"), before);
}

BOOST_AUTO_TEST_CASE(unwatched_edits_right_after_a_load_are_used) {
  // Same-size saves within one kernel tick of the load leave the same file times on
  // kernels with coarse timestamps: only the racy window (re-read while the times are
  // recent) tells them apart. (Kernels with multigrain timestamps, 6.13 on, stamp a file
  // that was looked at since its last change finely; there this passes without the window.)
  Unwatched f;
  std::string previous = f.settled_version("noter");
  for (int rev = 1; rev <= 40; ++rev) {
    write_file(f.agent / "p.prompt", prompt_text(rev % 10));
    std::string version = f.host->agent_version("noter");
    BOOST_CHECK_NE(version, previous);
    previous = version;
  }
}

BOOST_AUTO_TEST_CASE(unwatched_a_dangling_link_that_gets_a_target_is_used) {
  Unwatched f;
  fs::create_symlink(f.dir / "elsewhere.prompt", f.agent / "linked.prompt");
  std::string before = f.settled_version("noter");
  write_file(f.dir / "elsewhere.prompt", "now here\n");  // the agent folder itself is untouched
  BOOST_CHECK_NE(f.host->agent_version("noter"), before);
}

BOOST_AUTO_TEST_CASE(unwatched_a_retargeted_link_to_the_agent_folder_is_followed) {
  Unwatched f;
  fs::path other = f.agents / "other";
  fs::create_directories(other);
  write_file(other / "agent.lua", kAgent);
  write_file(other / "p.prompt", prompt_text(5));
  fs::path live = f.dir / "live";
  fs::create_directory_symlink(f.agent, live);
  std::string noter = f.settled_version(live.string());
  BOOST_CHECK_EQUAL(noter, f.host->agent_version("noter"));
  std::string other_version = f.settled_version("other");
  BOOST_REQUIRE_NE(other_version, noter);
  fs::remove(live);
  fs::create_directory_symlink(other, live);
  BOOST_CHECK_EQUAL(f.host->agent_version(live.string()), other_version);
  // The thread names the folder the link leads to now.
  std::string id = f.host->launch(live.string(), luagent::Event::user("x"));
  BOOST_CHECK_EQUAL(f.host->get(id).agent, "other");
  BOOST_CHECK_EQUAL(fs::path(f.host->get(id).agent_path), fs::canonical(other));
}

// The stdlib renders the prompts and the context window, so it is part of every agent's
// version: a change in one of its modules used to leave every version as it was, and the
// events of steps shown a different prompt claimed the same provenance.
BOOST_AUTO_TEST_CASE(a_stdlib_change_gives_every_watched_agent_a_new_version) {
  Fixture f("inotify", 0, true);
  const std::string before = f.host->agent_version("noter");
  const std::string other_before = f.host->agent_version("other");
  auto first = f.host->launch("noter", luagent::Event::user("go"));
  BOOST_REQUIRE(f.run_until_idle());
  BOOST_TEST(f.host->get(first).events.back().version == before);

  const fs::path module = f.dir / "stdlib/luagent/prompt.lua";
  std::ifstream in(module, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  save_by_rename(module, text + "\n-- edited\n");
  auto report = f.wait_report("noter", [&](const auto& r) { return r.version != before; });
  BOOST_TEST_REQUIRE(report.has_value());
  BOOST_TEST(std::any_of(f.reports.begin(), f.reports.end(),
                         [](const auto& r) { return r.agent == "stdlib" && r.ok; }));
  BOOST_TEST(report->previous_version == before);
  const std::string after = f.host->agent_version("noter");
  BOOST_TEST(after == report->version);
  BOOST_TEST(f.host->agent_version("other") != other_before);

  auto second = f.host->launch("noter", luagent::Event::user("go"));
  BOOST_REQUIRE(f.run_until_idle());
  BOOST_TEST(f.host->get(second).events.back().version == after);
}
