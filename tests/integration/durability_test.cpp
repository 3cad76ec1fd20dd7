// The durability promises, proven on real processes and real files:
// - crash: ≥100 runs of a calculator whose tools leave a side log, killed with SIGKILL at
//   random moments and at failpoints, then every thread resumed to the end;
// - race: 3 processes × 200 concurrent resumes of the same paused threads;
// - fork: scenario A forked at the divide pause, rejected in the fork, approved in the parent;
// - a full disk: the refused steps fail, nothing reported is lost, the host goes on;
// - a cancel from another process mid-step: nothing the step does after it is stored;
// - bad input for the lifecycle verbs.
#define BOOST_TEST_MODULE durability
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "luagent/luagent.hpp"
#include "support/cli_runner.hpp"
#include "support/test_paths.hpp"

using luagent::test::CliResult;
using luagent::test::run_cli;
using luagent::test::TempDir;
namespace fs = std::filesystem;

namespace {

std::string calculator() {
  return (luagent::test::source_dir() / "examples/calculator").string();
}

const char* const kScenarioA =
    "can you multiply 3 and 4, then divide the result by 2 and then add 12 to that result";

std::map<std::string, std::string> clean_env() {
  return {{"LUAGENT_PROVIDER", ""}, {"LUAGENT_STORE", ""},  {"LUAGENT_CASSETTE", ""},
          {"LUAGENT_SCRIPT", ""},   {"LUAGENT_RECORD", ""}, {"LUAGENT_FAILPOINT", ""},
          {"NO_COLOR", "1"}};
}

std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto parsed = nlohmann::json::parse(line, nullptr, false);
    if (!parsed.is_discarded()) lines.push_back(std::move(parsed));  // a torn last line: skip
  }
  return lines;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The crash test's agent: the calculator, with tools whose side effect is a line on the
// host log (stderr), which the driver sends to a file it owns — the side log. Agents have
// no io; luagent.log is their only way out, and it is written before the tool returns.
// multiply and divide are declared to have side effects; add is idempotent.
constexpr const char* kSideEffectAgent = R"lua(
local llm = require "luagent.llm"
local context = require "luagent.context"
local prompt = require "luagent.prompt"
local log = require "luagent.log"
local next_step = prompt.file "next_step.prompt"
local intents = {
  add = { a = "number", b = "number" }, subtract = { a = "number", b = "number" },
  multiply = { a = "number", b = "number" }, divide = { a = "number", b = "number" },
  request_more_information = { message = "string" }, done_for_now = { message = "string" },
}
local current
local function side(op, value)
  return function(c)
    log.info("SIDE " .. current.id .. " " .. current:last("tool_started").data.call .. " " .. op)
    return value(c)
  end
end
local tools = {
  add = side("add", function(c) return c.a + c.b end),
  subtract = side("subtract", function(c) return c.a - c.b end),
  multiply = side("multiply", function(c) return c.a * c.b end),
  divide = side("divide", function(c) return c.a / c.b end),
}
local options = { add = { idempotent = true } }
return function(thread)
  current = thread
  local call, answer = thread:resumed()
  if call and answer.approved then
    thread:execute(call, tools[call.intent], options[call.intent])
  elseif call and answer.approved == false then
    thread:push("human_response", "user denied the operation with feedback: " .. (answer.comment or ""))
  end
  while true do
    local step = llm.json(next_step:messages { thread = context.xml(thread) }, llm.one_of(intents))
    thread:push(step.intent, step)
    if step.intent == "divide" then
      return thread:await("approval", step)
    elseif tools[step.intent] then
      thread:execute(step, tools[step.intent], options[step.intent])
    elseif step.intent == "done_for_now" then
      return thread
    else
      return thread:await("human", step)
    end
  end
end
)lua";

struct Spawned {
  pid_t pid = -1;
  fs::path out, err;
};

// Starts the CLI with stdout and stderr going to files (they survive a SIGKILL).
Spawned spawn_cli(const std::vector<std::string>& args, const fs::path& cwd,
                  const std::map<std::string, std::string>& env, const fs::path& out,
                  const fs::path& err) {
  Spawned spawned{-1, out, err};
  std::vector<std::string> argv_strings = {luagent::test::cli_path().string()};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  spawned.pid = fork();
  if (spawned.pid == 0) {
    int out_fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int err_fd = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    if (chdir(cwd.c_str()) != 0) _exit(127);
    for (const auto& [name, value] : env) {
      if (value.empty())
        unsetenv(name.c_str());
      else
        setenv(name.c_str(), value.c_str(), 1);
    }
    std::vector<char*> argv;
    for (auto& s : argv_strings) argv.push_back(s.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return spawned;
}

int wait_for(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

// The crash test, against one store kind: `runs` faulty runs, then every thread resumed.
void crash_test(const std::string& kind, int runs) {
  TempDir dir;
  fs::create_directories(dir / "agent");
  std::ofstream(dir / "agent/agent.lua") << kSideEffectAgent;
  fs::copy_file(fs::path(calculator()) / "next_step.prompt", dir / "agent/next_step.prompt");
  const std::string db = (dir / "threads.db").string();
  const std::string store = kind == "sqlite" ? "sqlite:" + db : "fs:" + (dir / "threads").string();
  const std::vector<std::string> common = {"--store", store, "--provider", "script", "--json"};
  auto env = clean_env();
  env["LUAGENT_SCRIPT"] = (fs::path(calculator()) / "model.lua").string();

  const int kRuns = runs;
  const char* const kRequests[] = {kScenarioA, "add 3 and 4", "multiply 3 and 4",
                                   "can you divide 3 by 4"};
  const char* const kFailpoints[] = {"after_commit", "after_tool_start", "after_tool_run",
                                     "before_commit"};
  std::mt19937 random(20261121);
  std::vector<fs::path> outputs, logs;
  int process = 0, killed = 0, failpoints_hit = 0;

  // One command with one fault: a failpoint (exits at its N-th hit) or a SIGKILL after a
  // random delay. Returns the exit status.
  auto faulty = [&](std::vector<std::string> args) {
    auto run_env = env;
    int kind = static_cast<int>(random() % 5);
    if (kind < 4)
      run_env["LUAGENT_FAILPOINT"] =
          std::string(kFailpoints[kind]) + ":" + std::to_string(1 + random() % 3);
    args.insert(args.end(), common.begin(), common.end());
    fs::path out = dir / ("out" + std::to_string(process) + ".jsonl");
    fs::path err = dir / ("err" + std::to_string(process) + ".log");
    ++process;
    outputs.push_back(out);
    logs.push_back(err);
    Spawned spawned = spawn_cli(args, dir.path(), run_env, out, err);
    if (kind == 4) {
      std::this_thread::sleep_for(std::chrono::microseconds(random() % 30000));
      kill(spawned.pid, SIGKILL);
    }
    int status = wait_for(spawned.pid);
    killed += status == 128 + SIGKILL;
    failpoints_hit += status == 86;
    return status;
  };
  auto thread_of = [](const fs::path& out) -> std::string {
    for (const auto& line : json_lines(read_file(out)))
      if (line.contains("thread_id")) return line["thread_id"];
    return {};
  };

  for (int run = 0; run < kRuns; ++run) {
    faulty({"run", (dir / "agent").string(), kRequests[run % 4]});
    std::string id = thread_of(outputs.back());
    // Two more faulty steps on the same thread: recovery and approval crash too.
    for (int again = 0; again < 2 && !id.empty(); ++again) {
      auto shown =
          run_cli({"show", id, "--format", "json", "--store", store}, dir.path().string(), env);
      if (shown.exit_code != 0) break;
      std::string status = nlohmann::json::parse(shown.out)["status"];
      if (status == "awaiting_approval")
        faulty({"resume", id, "--approve", "--key", "approve-" + id});
      else if (status == "running")
        faulty({"resume", id});
      else
        break;
    }
  }
  BOOST_TEST_MESSAGE(process << " faulty processes: " << killed << " killed, " << failpoints_hit
                             << " stopped at failpoints");
  BOOST_TEST(killed + failpoints_hit >= kRuns * 3 / 4);  // the rest finished first

  // Resume every thread in the store, fault-free, until it ends.
  auto listed = run_cli({"threads", "--json", "--store", store}, dir.path().string(), env);
  BOOST_TEST_REQUIRE(listed.exit_code == 0, listed.err);
  std::vector<std::string> ids;
  for (const auto& row : json_lines(listed.out)) ids.push_back(row["id"]);
  BOOST_TEST(ids.size() >= static_cast<std::size_t>(kRuns / 2));  // some die before create
  std::map<std::string, nlohmann::json> final_threads;
  for (const std::string& id : ids) {
    nlohmann::json thread;
    for (int step = 0; step < 12; ++step) {
      auto shown =
          run_cli({"show", id, "--format", "json", "--store", store}, dir.path().string(), env);
      BOOST_TEST_REQUIRE(shown.exit_code == 0, shown.err);
      thread = nlohmann::json::parse(shown.out);
      std::string status = thread["status"];
      std::vector<std::string> args;
      if (status == "awaiting_approval")
        args = {"resume", id, "--approve", "--key", "final-" + std::to_string(step) + id};
      else if (status == "running")
        args = {"resume", id};
      else
        break;
      args.insert(args.end(), common.begin(), common.end());
      fs::path out = dir / ("final" + std::to_string(process) + ".jsonl");
      fs::path err = dir / ("finalerr" + std::to_string(process) + ".log");
      ++process;
      outputs.push_back(out);
      logs.push_back(err);
      int status_code = wait_for(spawn_cli(args, dir.path(), env, out, err).pid);
      BOOST_TEST(status_code != 2, read_file(err));
    }
    BOOST_TEST(thread["status"] == "done", id << " ended " << thread["status"]);
    final_threads[id] = thread;
  }

  // 1. Every acknowledged event (printed by a CLI) is stored, as printed.
  int acknowledged = 0;
  for (const auto& out : outputs) {
    for (const auto& line : json_lines(read_file(out))) {
      if (!line.contains("event")) continue;
      const auto& thread = final_threads.at(line["thread_id"].get<std::string>());
      std::size_t id = line["event"]["id"];
      BOOST_TEST_REQUIRE(id <= thread["events"].size());
      const auto& stored = thread["events"][id - 1];
      BOOST_TEST(stored["type"] == line["event"]["type"]);
      BOOST_TEST(stored["data"] == line["event"]["data"]);
      ++acknowledged;
    }
  }
  BOOST_TEST_MESSAGE(acknowledged << " acknowledged events checked");
  BOOST_TEST(acknowledged > kRuns);

  // 2. SQLite's own check; for fs:, only whole records (every thread loaded above).
  if (kind == "sqlite") {
    sqlite3* handle = nullptr;
    BOOST_REQUIRE(sqlite3_open(db.c_str(), &handle) == SQLITE_OK);
    std::string integrity;
    sqlite3_exec(
        handle, "PRAGMA integrity_check",
        [](void* out, int, char** values, char**) {
          *static_cast<std::string*>(out) += values[0] ? values[0] : "";
          return 0;
        },
        &integrity, nullptr);
    sqlite3_close(handle);
    BOOST_TEST(integrity == "ok");
  }

  // 3. The side log: no side-effecting call ran twice; every call that ran is settled.
  std::map<std::pair<std::string, int>, int> executions;
  std::map<std::pair<std::string, int>, std::string> op_of;
  for (const auto& log : logs) {
    std::istringstream in(read_file(log));
    std::string line;
    while (std::getline(in, line)) {
      auto at = line.find("SIDE ");
      if (at == std::string::npos) continue;
      std::istringstream fields(line.substr(at + 5));
      std::string id, op;
      int call = 0;
      if (!(fields >> id >> call >> op)) continue;  // torn by the kill
      ++executions[{id, call}];
      op_of[{id, call}] = op;
    }
  }
  int unknown = 0, retried = 0;
  for (const auto& [key, count] : executions) {
    const auto& [id, call] = key;
    BOOST_TEST_REQUIRE(final_threads.count(id), "side effect for a thread the store lacks " << id);
    if (op_of[key] != "add") BOOST_TEST(count == 1, id << " call " << call << " ran " << count);
    retried += count > 1;
    bool settled = false;
    for (const auto& event : final_threads[id]["events"]) {
      if ((event["type"] == "tool_response" || event["type"] == "outcome_unknown") &&
          event["data"]["call"] == call)
        settled = true;
      unknown += event["type"] == "outcome_unknown" && event["data"]["call"] == call;
    }
    BOOST_TEST(settled,
               id << " call " << call << " ran but has no tool_response or outcome_unknown");
  }
  // And the converse: every recorded result came from exactly the executions logged.
  for (const auto& [id, thread] : final_threads)
    for (const auto& event : thread["events"])
      if (event["type"] == "tool_response")
        BOOST_TEST(executions.count({id, event["data"]["call"].get<int>()}) == 1u,
                   id << " has a result for a call that never ran");
  BOOST_TEST_MESSAGE(executions.size()
                     << " tool calls ran; " << unknown << " settled as outcome_unknown, " << retried
                     << " idempotent retries");
}

BOOST_AUTO_TEST_CASE(crash_test_sqlite_kill_at_random_and_at_failpoints_then_resume_everything) {
  crash_test("sqlite", 100);
}

BOOST_AUTO_TEST_CASE(crash_test_fs_kill_at_random_and_at_failpoints_then_resume_everything) {
  crash_test("fs", 40);
}

namespace {

// The CLI on one store in `dir`, with the calculator's scripted model.
struct ScriptedCli {
  fs::path dir;
  std::string store;
  std::map<std::string, std::string> env = clean_env();

  ScriptedCli(fs::path folder, std::string store_uri)
      : dir(std::move(folder)), store(std::move(store_uri)) {
    env["LUAGENT_SCRIPT"] = (fs::path(calculator()) / "model.lua").string();
  }
  std::vector<std::string> with_store(std::vector<std::string> args) const {
    args.insert(args.end(), {"--store", store, "--provider", "script", "--json"});
    return args;
  }
  CliResult run(const std::vector<std::string>& args) const {
    return run_cli(with_store(args), dir.string(), env);
  }
  nlohmann::json shown(const std::string& id) const {
    return nlohmann::json::parse(
        run_cli({"show", id, "--format", "json", "--store", store}, dir.string(), env).out);
  }
  // Starts `args` with LUAGENT_FAILPOINT=`stop_at` (NAME:N:stop) and waits until it stops
  // there, alive mid-step; `name` names its output files. Returns the process and the id
  // of the store's one thread.
  std::pair<Spawned, std::string> stopped(const std::vector<std::string>& args,
                                          const std::string& stop_at,
                                          const std::string& name) const {
    auto stopping_env = env;
    stopping_env["LUAGENT_FAILPOINT"] = stop_at;
    Spawned spawned = spawn_cli(with_store(args), dir, stopping_env, dir / (name + ".jsonl"),
                                dir / (name + ".log"));
    int status = 0;
    BOOST_REQUIRE_EQUAL(waitpid(spawned.pid, &status, WUNTRACED), spawned.pid);
    BOOST_REQUIRE_MESSAGE(WIFSTOPPED(status), name << " ended: " << read_file(spawned.err));
    auto listed = run_cli({"threads", "--json", "--store", store}, dir.string(), env);
    const auto rows = json_lines(listed.out);
    BOOST_REQUIRE_EQUAL(rows.size(), 1u);
    return {spawned, rows[0]["id"]};
  }
};

// A process alive in the middle of a step (stopped at a failpoint right after its tool
// call's start is on disk) looks, by the thread's events, just like one that crashed
// there. A second process's resume must not settle the live call as outcome_unknown and
// run the agent beside it: it is refused, and writes nothing. Once the first process is
// gone (SIGKILL: no clean-up of any kind), the same resume recovers the thread.
void resume_waits_for_a_live_process(const std::string& kind) {
  TempDir dir;
  fs::create_directories(dir / "agent");
  std::ofstream(dir / "agent/agent.lua") << kSideEffectAgent;
  fs::copy_file(fs::path(calculator()) / "next_step.prompt", dir / "agent/next_step.prompt");
  ScriptedCli cli(dir.path(), kind == "sqlite" ? "sqlite:" + (dir / "threads.db").string()
                                               : "fs:" + (dir / "threads").string());
  auto [live, id] = cli.stopped({"run", (dir / "agent").string(), "multiply 3 and 4"},
                                "after_tool_start:1:stop", "live");
  BOOST_REQUIRE_EQUAL(cli.shown(id)["events"].back()["type"], "tool_started");

  auto refused = cli.run({"resume", id});
  BOOST_TEST(refused.exit_code == 2, refused.err);
  BOOST_TEST(refused.err.find("has a step in flight in another process") != std::string::npos,
             refused.err);
  BOOST_TEST(cli.shown(id)["events"].back()["type"] == "tool_started");  // nothing written

  kill(live.pid, SIGKILL);
  BOOST_TEST(wait_for(live.pid) == 128 + SIGKILL);
  auto recovered = cli.run({"resume", id});
  BOOST_TEST(recovered.exit_code != 2, recovered.err);
  int unknown = 0;
  const nlohmann::json recovered_thread = cli.shown(id);
  for (const auto& event : recovered_thread["events"])
    unknown += event["type"] == "outcome_unknown";
  BOOST_TEST(unknown == 1);
  BOOST_TEST(read_file(live.err).find("SIDE ") == std::string::npos);  // it never ran
}

}  // namespace

// An answer given while the process whose step paused the thread still holds it (here
// stopped right after the commit of its await, before it let go) waits for it: the thread
// is answered once that process is gone, within the wait.
BOOST_AUTO_TEST_CASE(an_answer_waits_for_the_process_whose_step_paused_the_thread) {
  TempDir dir;
  ScriptedCli cli(dir.path(), "sqlite:" + (dir / "threads.db").string());
  auto [pausing, id] = cli.stopped({"run", calculator(), "can you divide 3 by 4"},
                                   "after_commit:2:stop", "pausing");  // 1: launch; 2: await
  BOOST_REQUIRE_EQUAL(cli.shown(id)["status"], "awaiting_approval");

  Spawned answering = spawn_cli(cli.with_store({"resume", id, "--approve"}), dir.path(), cli.env,
                                dir / "answer.jsonl", dir / "answer.log");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  int status = 0;
  BOOST_TEST(waitpid(answering.pid, &status, WNOHANG) == 0);  // still waiting
  kill(pausing.pid, SIGKILL);
  wait_for(pausing.pid);
  BOOST_TEST(wait_for(answering.pid) == 0, read_file(answering.err));
  BOOST_TEST(cli.shown(id)["status"] == "done");
}

BOOST_AUTO_TEST_CASE(resume_of_a_step_live_in_another_process_is_refused_sqlite) {
  resume_waits_for_a_live_process("sqlite");
}

BOOST_AUTO_TEST_CASE(resume_of_a_step_live_in_another_process_is_refused_fs) {
  resume_waits_for_a_live_process("fs");
}

namespace {

luagent::HostConfig replay_config(const std::string& store) {
  luagent::HostConfig config;
  config.store = store;
  config.provider = "replay";
  config.cassette = fs::path(calculator()) / "cassette.jsonl";
  config.log = [](std::string_view, std::string_view) {};
  return config;
}

}  // namespace

BOOST_AUTO_TEST_CASE(race_three_processes_resume_the_same_paused_threads) {
  TempDir dir;
  const std::string store = "sqlite:" + (dir / "threads.db").string();
  constexpr int kThreads = 40;
  constexpr int kProcesses = 3;
  constexpr int kResumesEach = 200;
  std::vector<std::string> ids;
  {
    luagent::Host host(replay_config(store));
    for (int i = 0; i < kThreads; ++i)
      ids.push_back(host.launch(calculator(), luagent::Event::user(kScenarioA)));
    host.run_until_idle();
    for (const auto& id : ids)
      BOOST_TEST_REQUIRE(host.get(id).status() == luagent::Status::awaiting_approval);
  }
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    fs::path report = dir / ("report" + std::to_string(p) + ".json");
    pid_t pid = fork();
    if (pid == 0) {
      nlohmann::json outcomes = {
          {"ran", 0}, {"replayed", 0}, {"conflict", 0}, {"other", nlohmann::json::array()}};
      try {
        luagent::Host host(replay_config(store));
        std::mt19937 random(p);
        for (int n = 0; n < kResumesEach; ++n) {
          const std::string& id = ids[random() % ids.size()];
          // Even threads get webhooks with one idempotency key; odd ones plain approvals.
          bool keyed = (&id - ids.data()) % 2 == 0;
          try {
            auto result = host.resume(id, luagent::Resume::approve(keyed ? "webhook-" + id : ""));
            host.run_until_idle();
            outcomes[result.replayed ? "replayed" : "ran"] =
                outcomes[result.replayed ? "replayed" : "ran"].get<int>() + 1;
          } catch (const luagent::Error& error) {
            bool clear = error.code() == luagent::ErrorCode::conflict &&
                         (error.message().find("not awaiting approval") != std::string::npos ||
                          error.message().find("changed meanwhile") != std::string::npos);
            if (clear && !keyed)
              outcomes["conflict"] = outcomes["conflict"].get<int>() + 1;
            else
              outcomes["other"].push_back(std::string(keyed ? "keyed: " : "") + error.what());
          }
        }
      } catch (const std::exception& error) {
        outcomes["other"].push_back(error.what());
      }
      std::ofstream(report) << outcomes.dump();
      _exit(0);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) BOOST_TEST(wait_for(pid) == 0);
  int ran = 0, replayed = 0, conflicts = 0;
  for (int p = 0; p < kProcesses; ++p) {
    auto outcomes =
        nlohmann::json::parse(read_file(dir / ("report" + std::to_string(p) + ".json")));
    ran += outcomes["ran"].get<int>();
    replayed += outcomes["replayed"].get<int>();
    conflicts += outcomes["conflict"].get<int>();
    BOOST_TEST(outcomes["other"].empty(), outcomes["other"].dump());
  }
  BOOST_TEST_MESSAGE("resumes: " << ran << " ran, " << replayed << " replayed, " << conflicts
                                 << " conflicts");
  BOOST_TEST(ran + replayed + conflicts == kProcesses * kResumesEach);
  luagent::Host host(replay_config(store));
  int approved_threads = 0;
  for (const auto& id : ids) {
    luagent::Thread thread = host.get(id);
    int approvals = 0, divide_runs = 0;
    for (const auto& event : thread.events) {
      approvals += event.type == "approval";
      if (event.type == "tool_started")
        divide_runs += thread.events[event.data["call"].get<std::size_t>() - 1].type == "divide";
    }
    if (approvals == 0) {
      BOOST_TEST(thread.status() == luagent::Status::awaiting_approval);
      continue;
    }
    ++approved_threads;
    BOOST_TEST(approvals == 1, id);
    BOOST_TEST(divide_runs == 1, id << ": divide ran " << divide_runs << " times");
    BOOST_TEST(thread.status() == luagent::Status::done, id);
  }
  BOOST_TEST(ran == approved_threads);
}

BOOST_AUTO_TEST_CASE(fork_at_the_divide_pause_reject_in_the_fork_approve_in_the_parent) {
  TempDir dir;
  const std::string store = "sqlite:" + (dir / "threads.db").string();
  auto env = clean_env();
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.end(), {"--store", store, "--json"});
    return run_cli(args, dir.path().string(), env);
  };
  auto run = cli({"run", calculator(), kScenarioA});
  BOOST_TEST_REQUIRE(run.exit_code == 10, run.err);
  auto lines = json_lines(run.out);
  std::string parent = lines.back()["thread_id"];
  int pause = lines[lines.size() - 2]["event"]["id"];
  BOOST_TEST(lines[lines.size() - 2]["event"]["type"] == "await");

  auto forked = cli({"fork", parent, "--at", std::to_string(pause)});
  BOOST_TEST_REQUIRE(forked.exit_code == 0, forked.err);
  auto fork_line = nlohmann::json::parse(forked.out);
  std::string child = fork_line["thread_id"];
  BOOST_TEST(fork_line["status"] == "awaiting_approval");
  BOOST_TEST(fork_line["parent_id"] == parent);

  auto reject = cli({"resume", child, "--reject", "use 3 instead of 2", "--by", "alice"});
  BOOST_TEST_REQUIRE(reject.exit_code == 10, reject.err);
  auto approve = cli({"resume", parent, "--approve", "--by", "bob"});
  BOOST_TEST_REQUIRE(approve.exit_code == 0, approve.err);
  auto approve_fork = cli({"resume", child, "--approve"});
  BOOST_TEST_REQUIRE(approve_fork.exit_code == 0, approve_fork.err);

  auto show = [&](const std::string& id) {
    auto shown = cli({"show", id, "--format", "json"});
    BOOST_REQUIRE(shown.exit_code == 0);
    return nlohmann::json::parse(shown.out);
  };
  auto parent_thread = show(parent), child_thread = show(child);
  auto final_message = [](const nlohmann::json& thread) {
    std::string text;
    for (const auto& e : thread["events"])
      if (e["type"] == "done_for_now") text = e["data"]["message"];
    return text;
  };
  BOOST_TEST(final_message(parent_thread).find("18") != std::string::npos,
             final_message(parent_thread));
  BOOST_TEST(final_message(child_thread).find("16") != std::string::npos,
             final_message(child_thread));
  BOOST_TEST(child_thread["parent"]["id"] == parent);
  BOOST_TEST(child_thread["parent"]["event"] == pause);
  // The parent never saw the fork's rejection.
  for (const auto& e : parent_thread["events"]) BOOST_TEST(e["type"] != "human_response");
  // The first `pause` events are shared history.
  for (int i = 0; i < pause; ++i)
    BOOST_TEST(parent_thread["events"][i]["data"] == child_thread["events"][i]["data"]);

  auto md = cli({"show", child, "--format", "md"});
  BOOST_TEST(md.exit_code == 0);
  BOOST_TEST(md.out.find("**rejected** by alice") != std::string::npos, md.out);
  BOOST_TEST(md.out.find("forked from: " + parent) != std::string::npos);
  BOOST_TEST(md.out.find("## LLM calls") != std::string::npos);
  BOOST_TEST(md.out.find("| replay |") != std::string::npos, md.out);
}

BOOST_AUTO_TEST_CASE(duplicate_webhook_after_the_thread_moved_on_gets_the_first_outcome) {
  TempDir dir;
  const std::string store = "sqlite:" + (dir / "threads.db").string();
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.end(), {"--store", store, "--json"});
    return run_cli(args, dir.path().string(), clean_env());
  };
  auto run = cli({"run", calculator(), kScenarioA});
  std::string id = json_lines(run.out).back()["thread_id"];
  auto first = cli({"resume", id, "--event", R"({"type":"approval","data":{"approved":true}})",
                    "--key", "hook-1"});
  BOOST_TEST_REQUIRE(first.exit_code == 0, first.err);
  auto again = cli({"resume", id, "--event", R"({"type":"approval","data":{"approved":true}})",
                    "--key", "hook-1"});
  BOOST_TEST(again.exit_code == 0, again.err);
  auto lines = json_lines(again.out);
  BOOST_TEST(lines.front()["replayed"] == true);
  BOOST_TEST(again.out.find("\"tool_response\"") != std::string::npos);  // the first outcome
  auto other = cli({"resume", id, "--reject", "no", "--key", "hook-1"});
  BOOST_TEST(other.exit_code == 2);
  BOOST_TEST(other.err.find("already used for a different event") != std::string::npos, other.err);
}

BOOST_AUTO_TEST_CASE(bad_input_is_a_clear_error_and_touches_nothing) {
  TempDir dir;
  const std::string db = (dir / "threads.db").string();
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.end(), {"--store", "sqlite:" + db});
    return run_cli(args, dir.path().string(), clean_env());
  };
  auto run = cli({"run", calculator(), kScenarioA, "--json"});
  std::string waiting = json_lines(run.out).back()["thread_id"];
  auto done = cli({"run", calculator(), "add 3 and 4", "--json"});
  std::string finished = json_lines(done.out).back()["thread_id"];
  auto snapshot = [&] {
    return cli({"show", waiting, "--format", "json"}).out +
           cli({"show", finished, "--format", "json"}).out;
  };
  std::string before = snapshot();

  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  std::vector<Case> cases = {
      {{"fork", waiting, "--at", "999"}, "has no event 999"},
      {{"fork", waiting, "--at", "zero"}, "positive integer"},
      {{"fork", waiting}, "needs --at"},
      {{"resume", waiting, "--event", "{not json"}, "not JSON"},
      {{"resume", waiting, "--event", R"({"data":1})"}, "string \"type\""},
      {{"resume", waiting, "--event", R"({"type":"","data":1})"}, "non-empty string \"type\""},
      {{"resume", waiting, "--event", R"({"type":"tool_response","data":1})"},
       "written by luagent itself"},
      {{"resume", waiting, "--event", R"({"type":"approval","data":"yes"})"}, "approved"},
      {{"resume", waiting}, "was not interrupted"},
      {{"cancel", finished}, "already ended"},
      {{"resume", finished, "--approve"}, "not awaiting approval"},
      {{"cancel", "th_nosuchthread"}, "no thread th_nosuchthread"},
      {{"show", waiting, "--format", "pdf"}, "--format must be"},
      {{"threads", "--since", "yesterday"}, "is not of the form"},
      // ThreadQuery reads 0 as no bound: --before the epoch listed every thread, and these
      // refusals named ThreadQuery's C++ fields.
      {{"threads", "--before", "1970-01-01T00:00:00.000Z"},
       "--before must be after 1970-01-01T00:00:00.000Z"},
      {{"threads", "--since", "2026-01-02T00:00:00.000Z", "--before", "2026-01-01T00:00:00.000Z"},
       "--before (2026-01-01T00:00:00.000Z) must be after --since (2026-01-02T00:00:00.000Z)"},
  };
  for (const auto& c : cases) {
    auto result = cli(c.args);
    BOOST_TEST(result.exit_code == 2, c.args[0] << " " << c.says << ": " << result.err);
    BOOST_TEST(result.err.find(c.says) != std::string::npos, result.err);
  }
  auto scheme = run_cli({"threads", "--store", "postgres://x"}, dir.path().string(), clean_env());
  BOOST_TEST(scheme.exit_code == 2);
  BOOST_TEST(scheme.err.find("unknown store scheme 'postgres'") != std::string::npos, scheme.err);
  BOOST_TEST(snapshot() == before);
  auto recent =
      cli({"threads", "--json", "--since", luagent::format_utc(luagent::now_ms() - 600000)});
  BOOST_TEST(json_lines(recent.out).size() == 2u, recent.out);
  auto none = cli({"threads", "--json", "--before", "2000-01-01T00:00:00.000Z"});
  BOOST_TEST(json_lines(none.out).empty(), none.out);

  // A corrupted thread: an error for it, and only for it.
  sqlite3* handle = nullptr;
  sqlite3_open(db.c_str(), &handle);
  std::string sql =
      "UPDATE events SET data = '{\"tru' WHERE thread_id = '" + finished + "' AND seq = 2";
  sqlite3_exec(handle, sql.c_str(), nullptr, nullptr, nullptr);
  sqlite3_close(handle);
  auto corrupt = cli({"show", finished});
  BOOST_TEST(corrupt.exit_code == 2);
  BOOST_TEST(corrupt.err.find("not JSON") != std::string::npos, corrupt.err);
  BOOST_TEST(cli({"cancel", finished}).exit_code == 2);
  BOOST_TEST(cli({"fork", finished, "--at", "1"}).exit_code == 2);
  BOOST_TEST(cli({"show", waiting}).exit_code == 0);
  // Cancel works on the waiting thread, and only once.
  BOOST_TEST(cli({"cancel", waiting, "--reason", "test"}).exit_code == 0);
  auto twice = cli({"cancel", waiting});
  BOOST_TEST(twice.exit_code == 2);
  BOOST_TEST(twice.err.find("it is cancelled") != std::string::npos, twice.err);
}

BOOST_AUTO_TEST_CASE(fs_store_runs_the_calculator_and_keeps_a_readable_thread) {
  TempDir dir;
  const std::string store = "fs:" + (dir / "threads").string();
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.end(), {"--store", store, "--json"});
    return run_cli(args, dir.path().string(), clean_env());
  };
  auto run = cli({"run", calculator(), kScenarioA});
  BOOST_TEST_REQUIRE(run.exit_code == 10, run.err);
  std::string id = json_lines(run.out).back()["thread_id"];
  auto approve = cli({"resume", id, "--approve", "--key", "k"});
  BOOST_TEST_REQUIRE(approve.exit_code == 0, approve.err);
  auto again = cli({"resume", id, "--approve", "--key", "k"});
  BOOST_TEST(again.exit_code == 0, again.err);
  auto thread = nlohmann::json::parse(read_file(dir / "threads" / (id + ".json")));
  BOOST_TEST(thread["schema"] == 1);
  std::string text = read_file(dir / "threads" / (id + ".txt"));
  BOOST_TEST(text.find("<user_input>") != std::string::npos, text);
  BOOST_TEST(text.find("done_for_now") != std::string::npos, text);
  auto shown = cli({"show", id, "--format", "json"});
  BOOST_TEST(nlohmann::json::parse(shown.out)["llm_calls"].size() == 4u);
}

// luagent.threads from agent code: get, list, fork, cancel, and their errors.
BOOST_AUTO_TEST_CASE(lua_threads_module_get_list_fork_cancel) {
  TempDir dir;
  fs::create_directories(dir / "ops");
  std::ofstream(dir / "ops/agent.lua") << R"lua(
local threads = require "luagent.threads"
return function(thread)
  local verb, id, n = thread:last("user_input").data:match("^(%a+) (%S+) ?(%d*)$")
  if verb == "get" then
    local t = threads.get(id)
    thread:push("got", { status = t.status, events = #t.events, agent = t.agent })
  elseif verb == "list" then
    thread:push("listed", #threads.list { status = id })
  elseif verb == "fork" then
    local fork = threads.fork(id, tonumber(n))
    thread:push("forked", { id = fork, status = threads.get(fork).status })
  elseif verb == "cancel" then
    thread:push("cancelled_other", threads.cancel(id, "by an agent").type)
  elseif verb == "self" then
    threads.cancel(thread.id)
  elseif verb == "nul" then -- an id with a NUL byte used to be read only up to it
    threads.get(id .. "\0more")
  elseif verb == "deep" then -- data as deeply nested as an event may hold
    local data = "x"
    for i = 1, 100 do data = { data } end
    thread:push("deep", data)
  end
  return thread
end
)lua";
  const std::string store = "sqlite:" + (dir / "threads.db").string();
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.end(), {"--store", store, "--json"});
    return run_cli(args, dir.path().string(), clean_env());
  };
  auto waiting_run = cli({"run", calculator(), kScenarioA});
  std::string waiting = json_lines(waiting_run.out).back()["thread_id"];
  auto pushed = [&](const std::string& message) {
    auto result = cli({"run", (dir / "ops").string(), message});
    auto lines = json_lines(result.out);
    for (auto it = lines.rbegin(); it != lines.rend(); ++it)
      if (it->contains("event") && (*it)["event"]["type"] != "done") return (*it)["event"];
    return nlohmann::json();
  };
  auto got = pushed("get " + waiting);
  BOOST_TEST(got["data"]["status"] == "awaiting_approval");
  BOOST_TEST(got["data"]["events"] == 6);
  auto forked = pushed("fork " + waiting + " 6");
  BOOST_TEST(forked["data"]["status"] == "awaiting_approval");
  BOOST_TEST(pushed("list awaiting_approval")["data"] == 2);
  BOOST_TEST(pushed("cancel " + waiting)["data"] == "cancelled");
  auto again = pushed("cancel " + waiting);
  BOOST_TEST(again["type"] == "failed");
  BOOST_TEST(again["data"]["code"] == "conflict");
  auto missing = pushed("fork " + waiting + " 99");
  BOOST_TEST(missing["data"]["code"] == "not_found");
  BOOST_TEST(pushed("self x")["data"]["code"] == "usage");
  auto nul = pushed("nul " + waiting);
  BOOST_TEST(nul["data"]["code"] == "usage", nul.dump());
  BOOST_TEST(
      nul["data"]["message"].get<std::string>().find(
          "the thread id '" + waiting + "' contains a NUL byte (at byte 25)") != std::string::npos,
      nul.dump());
  // The thread's table wraps each event's data three levels deeper (thread, events, event):
  // threads.get of a thread holding data at the depth limit used to fail with `limit`.
  auto deep_run = cli({"run", (dir / "ops").string(), "deep x"});
  std::string deep = json_lines(deep_run.out).back()["thread_id"];
  auto deep_got = pushed("get " + deep);
  BOOST_TEST(deep_got["type"] == "got", deep_got.dump());
  BOOST_TEST(deep_got["data"]["status"] == "done", deep_got.dump());
}

// A full disk (here the soft RLIMIT_FSIZE, whose writes fail with EFBIG as ENOSPC would)
// fails the steps whose commit it refused, loses nothing the host reported, and leaves the
// host usable once there is room again: a failed thread goes on in a fork. In a forked
// child, since the limit and SIGXFSZ are the process's.
BOOST_AUTO_TEST_CASE(a_full_disk_fails_the_refused_steps_and_loses_nothing_reported) {
  TempDir dir;
  auto filler = dir / "filler";
  fs::create_directories(filler);
  std::ofstream(filler / "agent.lua") << R"lua(
return function(thread)
  for n = 1, 200 do
    local note = { n = n, text = string.rep("x", 4000) }
    thread:push("note", note)
    thread:execute(note, function() return n end) -- waits for its tool_started to be durable
  end
end
)lua";
  auto quiet = dir / "quiet";
  fs::create_directories(quiet);
  std::ofstream(quiet / "agent.lua") << "return function(thread) return thread end\n";
  int report[2];
  BOOST_REQUIRE(::pipe(report) == 0);
  pid_t child = ::fork();
  BOOST_REQUIRE(child >= 0);
  if (child == 0) {
    ::close(report[0]);
    std::string problems;
    auto expect = [&](bool ok, const std::string& what) {
      if (!ok) problems += what + "\n";
    };
    try {
      ::signal(SIGXFSZ, SIG_IGN);
      luagent::HostConfig config;
      config.store = "sqlite:" + (dir / "t.db").string();
      config.log = [](std::string_view, std::string_view) {};
      luagent::Host host(config);
      // The event types reported while the disk fills, in order.
      std::map<std::string, std::vector<std::string>> reported;
      bool filling = true;
      host.on_event([&](const luagent::Thread& thread, const luagent::Event& event) {
        if (!filling) return;
        auto& types = reported[thread.id];
        expect(event.id == static_cast<std::int64_t>(types.size()) + 1,
               thread.id + ": event " + std::to_string(event.id) + " reported out of order");
        types.push_back(event.type);
      });
      std::vector<std::string> ids;
      for (int i = 0; i < 3; ++i)
        ids.push_back(host.launch(filler.string(), luagent::Event::user("go")));
      rlimit saved{};
      ::getrlimit(RLIMIT_FSIZE, &saved);
      rlimit full = saved;
      full.rlim_cur = 1 << 20;  // the log reaches it long before 3 x 200 notes
      ::setrlimit(RLIMIT_FSIZE, &full);
      host.run_until_idle();
      ::setrlimit(RLIMIT_FSIZE, &saved);
      filling = false;
      for (const auto& id : ids) {
        luagent::Thread thread = host.get(id);
        const auto& types = reported[id];
        expect(thread.events.size() >= types.size(),
               id + ": " + std::to_string(types.size()) + " events reported, " +
                   std::to_string(thread.events.size()) + " stored");
        for (std::size_t i = 0; i < types.size() && i < thread.events.size(); ++i)
          expect(thread.events[i].type == types[i], id + ": event " + std::to_string(i + 1) +
                                                        " reported as " + types[i] +
                                                        ", stored as " + thread.events[i].type);
        expect(thread.events.size() < 2 + 3 * 200, id + " finished: the disk never filled");
        // The step failed with an I/O error, or (when even that event found no room) the
        // thread is left interrupted.
        luagent::Status status = thread.status();
        expect(status == luagent::Status::failed || status == luagent::Status::running,
               id + " ended " + std::string(luagent::status_name(status)));
        if (status == luagent::Status::failed)
          expect(thread.events.back().data.value("code", "") == "io",
                 id + " failed with " + thread.events.back().data.dump());
        // With room again it goes on: a failed thread in a fork of what came before.
        std::string next = id;
        if (status == luagent::Status::failed) next = host.fork(id, thread.events.back().id - 1);
        host.resume(next, luagent::Resume::recover());
      }
      host.run_until_idle();
      for (const auto& summary : host.list())
        expect(summary.status == luagent::Status::done || summary.status == luagent::Status::failed,
               summary.id + " is " + std::string(luagent::status_name(summary.status)));
      expect(
          host.list(luagent::Status::done).size() == 3,
          std::to_string(host.list(luagent::Status::done).size()) + " threads went on to the end");
      auto fresh = host.launch(quiet.string(), luagent::Event::user("hi"));
      host.run_until_idle();
      expect(host.get(fresh).status() == luagent::Status::done, "a new thread did not finish");
    } catch (const std::exception& error) {
      problems += std::string("threw: ") + error.what() + "\n";
    }
    (void)!::write(report[1], problems.data(), problems.size());
    ::_exit(problems.empty() ? 0 : 1);
  }
  ::close(report[1]);
  std::string problems;
  char buffer[4096];
  for (ssize_t n; (n = ::read(report[0], buffer, sizeof buffer)) > 0;) problems.append(buffer, n);
  ::close(report[0]);
  int status = 0;
  BOOST_REQUIRE(::waitpid(child, &status, 0) == child);
  BOOST_TEST(problems.empty(), problems);
  BOOST_TEST((WIFEXITED(status) && WEXITSTATUS(status) == 0), "child status " << status);
}

// A cancel from another process while a step is alive mid-call (stopped right after the
// divide's start is on disk) ends the thread there. The step, let go, loses its next
// compare-and-swap, and nothing it does after that may be stored: not its tool's result,
// and not its next events, even though the cancel added exactly as many events as the
// refused commit held (which made the next commit's expected version match).
void a_cancel_from_another_process_mid_step_ends_the_thread_there(const std::string& kind) {
  TempDir dir;
  ScriptedCli cli(dir.path(), kind == "sqlite" ? "sqlite:" + (dir / "threads.db").string()
                                               : "fs:" + (dir / "threads").string());
  auto paused = cli.run({"run", calculator(), kScenarioA});
  BOOST_REQUIRE_MESSAGE(paused.exit_code == 10, paused.err);
  std::string id = json_lines(paused.out).back()["thread_id"];
  auto [live, same] = cli.stopped({"resume", id, "--approve"}, "after_tool_start:1:stop", "live");
  BOOST_REQUIRE_EQUAL(same, id);
  auto cancel = run_cli({"cancel", id, "--store", cli.store}, dir.path().string(), cli.env);
  BOOST_REQUIRE_MESSAGE(cancel.exit_code == 0, cancel.err);
  kill(live.pid, SIGCONT);
  int code = wait_for(live.pid);
  BOOST_TEST(code < 128,
             "the resuming process died of signal " << code - 128 << ": " << read_file(live.err));
  auto shown = cli.shown(id);
  std::string types;
  for (const auto& event : shown["events"]) types += event["type"].get<std::string>() + " ";
  BOOST_TEST(shown["status"] == "cancelled", types);
  BOOST_TEST(shown["events"].back()["type"] == "cancelled", types);
}

BOOST_AUTO_TEST_CASE(a_cancel_from_another_process_mid_step_ends_the_thread_there_sqlite) {
  for (int attempt = 0; attempt < 5; ++attempt)
    a_cancel_from_another_process_mid_step_ends_the_thread_there("sqlite");
}

BOOST_AUTO_TEST_CASE(a_cancel_from_another_process_mid_step_ends_the_thread_there_fs) {
  a_cancel_from_another_process_mid_step_ends_the_thread_there("fs");
}

// A retried `resume --key K` (a webhook sent again) while the first one's step is live in
// another process is that process's conflict, as a plain `resume THREAD` is; once that
// process is gone mid-step, the retry goes on with the step to the thread's end. Both
// used to print the first answer and exit 1 (an agent error) with the thread running.
BOOST_AUTO_TEST_CASE(a_retried_keyed_resume_waits_for_a_live_step_and_finishes_a_dead_one) {
  TempDir dir;
  ScriptedCli cli(dir.path(), "sqlite:" + (dir / "threads.db").string());
  auto paused = cli.run({"run", calculator(), kScenarioA});
  BOOST_REQUIRE_MESSAGE(paused.exit_code == 10, paused.err);
  std::string id = json_lines(paused.out).back()["thread_id"];
  const std::vector<std::string> answer = {"resume", id, "--approve", "--key", "webhook-1"};
  auto [live, same] = cli.stopped(answer, "after_tool_start:1:stop", "live");
  BOOST_REQUIRE_EQUAL(same, id);
  auto while_live = cli.run(answer);
  BOOST_TEST(while_live.exit_code == 2, while_live.err);
  BOOST_TEST(while_live.err.find("step in flight in another process") != std::string::npos,
             while_live.err);
  kill(live.pid, SIGKILL);
  wait_for(live.pid);
  auto after_crash = cli.run(answer);
  BOOST_TEST(after_crash.exit_code == 0, after_crash.err);
  auto shown = cli.shown(id);
  BOOST_TEST(shown["status"] == "done");
  int approvals = 0;
  for (const auto& event : shown["events"]) approvals += event["type"] == "approval";
  BOOST_TEST(approvals == 1);
}
