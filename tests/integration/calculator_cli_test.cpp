// The four 12-factor calculator scenarios end to end through the real CLI, each
// command a new process, on a real SQLite file, with the recorded cassette.
#define BOOST_TEST_MODULE calculator_cli
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "support/cli_runner.hpp"
#include "support/test_paths.hpp"

using luagent::test::CliResult;
using luagent::test::run_cli;
using luagent::test::TempDir;

namespace {

const std::map<std::string, std::string> kCleanEnv = {
    {"LUAGENT_PROVIDER", ""}, {"LUAGENT_STORE", ""},  {"LUAGENT_CASSETTE", ""},
    {"LUAGENT_SCRIPT", ""},   {"LUAGENT_RECORD", ""}, {"NO_COLOR", "1"}};

std::string calculator() {
  return (luagent::test::source_dir() / "examples/calculator").string();
}

struct Session {
  TempDir dir;
  std::string store = "sqlite:" + (dir / "threads.db").string();

  CliResult cli(std::vector<std::string> args) {
    args.push_back("--store");
    args.push_back(store);
    args.push_back("--json");
    return run_cli(args, dir.path().string(), kCleanEnv);
  }

  // The JSON lines a --json command printed: events, then the outcome line.
  static std::vector<nlohmann::json> lines(const CliResult& result) {
    std::vector<nlohmann::json> parsed;
    std::istringstream in(result.out);
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) parsed.push_back(nlohmann::json::parse(line));
    return parsed;
  }

  static std::string thread_id(const CliResult& result) {
    return lines(result).back().at("thread_id").get<std::string>();
  }

  static std::vector<nlohmann::json> events(const CliResult& result) {
    std::vector<nlohmann::json> out;
    for (auto& line : lines(result))
      if (line.contains("event")) out.push_back(line["event"]);
    return out;
  }

  static int count(const std::vector<nlohmann::json>& events, const std::string& type) {
    int n = 0;
    for (const auto& e : events) n += e["type"] == type;
    return n;
  }

  nlohmann::json show(const std::string& id) {
    auto result =
        run_cli({"show", id, "--format", "json", "--store", store}, dir.path().string(), kCleanEnv);
    BOOST_REQUIRE_MESSAGE(result.exit_code == 0, result.err);
    return nlohmann::json::parse(result.out);
  }
};

const nlohmann::json& last_of(const nlohmann::json& thread, const std::string& type) {
  const nlohmann::json* found = nullptr;
  for (const auto& e : thread["events"])
    if (e["type"] == type) found = &e;
  BOOST_REQUIRE_MESSAGE(found, "no " + type + " event");
  return *found;
}

}  // namespace

BOOST_AUTO_TEST_CASE(scenario_a_multiply_divide_with_approval_add) {
  Session s;
  auto run = s.cli({"run", calculator(),
                    "can you multiply 3 and 4, then divide the result by 2 and then add 12 to "
                    "that result"});
  BOOST_TEST_REQUIRE(run.exit_code == 10, run.err);
  auto events = Session::events(run);
  BOOST_TEST(events[1]["type"] == "multiply");
  BOOST_TEST(events.back()["type"] == "await");
  BOOST_TEST(events.back()["data"]["kind"] == "approval");
  BOOST_TEST(events.back()["data"]["payload"]["intent"] == "divide");
  std::string id = Session::thread_id(run);

  auto approve = s.cli({"resume", id, "--approve"});  // a new process: nothing kept in memory
  BOOST_TEST_REQUIRE(approve.exit_code == 0, approve.err);
  auto thread = s.show(id);
  BOOST_TEST(thread["status"] == "done");
  BOOST_TEST(last_of(thread, "done_for_now")["data"]["message"].get<std::string>().find("18") !=
             std::string::npos);
  BOOST_TEST(last_of(thread, "add")["data"]["a"] == 6);
  // Every event carries the agent version that produced it (provenance).
  BOOST_TEST(last_of(thread, "add")["version"].get<std::string>().size() == 12u);
  BOOST_TEST(thread["llm_calls"].size() == 4u);
}

BOOST_AUTO_TEST_CASE(scenario_b_reject_then_approve) {
  Session s;
  auto run = s.cli({"run", calculator(), "can you divide 3 by 4"});
  BOOST_TEST_REQUIRE(run.exit_code == 10, run.err);
  std::string id = Session::thread_id(run);
  auto reject = s.cli({"resume", id, "--reject", "use 5 instead of 4"});
  BOOST_TEST_REQUIRE(reject.exit_code == 10, reject.err);
  auto events = Session::events(reject);
  BOOST_TEST(Session::count(events, "tool_started") == 0);  // the rejected call never ran
  BOOST_TEST(events.back()["data"]["payload"]["b"] == 5);
  auto approve = s.cli({"resume", id, "--approve"});
  BOOST_TEST_REQUIRE(approve.exit_code == 0, approve.err);
  auto thread = s.show(id);
  BOOST_TEST(last_of(thread, "tool_response")["data"]["result"] == 0.6);
  BOOST_TEST(last_of(thread, "human_response")["data"].get<std::string>().find("use 5 instead") !=
             std::string::npos);
}

BOOST_AUTO_TEST_CASE(scenario_c_request_more_information) {
  Session s;
  auto run = s.cli({"run", calculator(), "multiply 3 and xyz"});
  BOOST_TEST_REQUIRE(run.exit_code == 10, run.err);
  auto events = Session::events(run);
  BOOST_TEST(events.back()["data"]["kind"] == "human");
  BOOST_TEST(events.back()["data"]["payload"]["intent"] == "request_more_information");
  std::string id = Session::thread_id(run);
  auto say = s.cli({"resume", id, "--say", "use 8 instead of xyz"});
  BOOST_TEST_REQUIRE(say.exit_code == 0, say.err);
  auto thread = s.show(id);
  BOOST_TEST(last_of(thread, "tool_response")["data"]["result"] == 24);
}

BOOST_AUTO_TEST_CASE(scenario_d_add) {
  Session s;
  auto run = s.cli({"run", calculator(), "add 3 and 4"});
  BOOST_TEST_REQUIRE(run.exit_code == 0, run.err);
  auto events = Session::events(run);
  BOOST_TEST(Session::count(events, "tool_response") == 1);
  BOOST_TEST(events[3]["data"]["result"] == 7);
  BOOST_TEST(events.back()["type"] == "done");
}

BOOST_AUTO_TEST_CASE(approve_twice_runs_divide_once) {
  Session s;
  auto run = s.cli({"run", calculator(),
                    "can you multiply 3 and 4, then divide the result by 2 and then add 12 to "
                    "that result"});
  std::string id = Session::thread_id(run);
  BOOST_TEST_REQUIRE(s.cli({"resume", id, "--approve"}).exit_code == 0);
  auto again = s.cli({"resume", id, "--approve"});
  BOOST_TEST(again.exit_code == 2);
  BOOST_TEST(again.err.find("not awaiting approval") != std::string::npos, again.err);
  auto thread = s.show(id);
  int divides_run = 0;  // tool_started events that point at the divide call
  for (const auto& e : thread["events"])
    if (e["type"] == "tool_started")
      divides_run += thread["events"][e["data"]["call"].get<int>() - 1]["type"] == "divide";
  BOOST_TEST(divides_run == 1);
}

BOOST_AUTO_TEST_CASE(text_output_is_plain_when_not_a_tty) {
  TempDir dir;
  auto result =
      run_cli({"run", calculator(), "add 3 and 4", "--store", "sqlite:" + (dir / "t.db").string()},
              dir.path().string(), kCleanEnv);
  BOOST_TEST(result.exit_code == 0);
  BOOST_TEST(result.out.find("\033[") == std::string::npos);
  BOOST_TEST(result.out.find("done_for_now") != std::string::npos);
}

// ---------------------------------------------------------------------------
// Bad input: a clear message, the right exit code, nothing lost.

namespace {

std::string write_agent(const TempDir& dir, const std::string& name, const std::string& source) {
  auto folder = dir / name;
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "agent.lua") << source;
  std::ofstream(folder / "luagent.config.lua")
      << "provider = 'replay'\ncassette = '" << calculator() << "/cassette.jsonl'\n";
  return folder.string();
}

}  // namespace

BOOST_AUTO_TEST_CASE(unknown_agent) {
  Session s;
  auto result = s.cli({"run", "no-such-agent", "hi"});
  BOOST_TEST(result.exit_code == 2);
  BOOST_TEST(result.err.find("no agent 'no-such-agent'") != std::string::npos, result.err);
}

BOOST_AUTO_TEST_CASE(agent_with_syntax_error_names_file_and_line) {
  Session s;
  auto agent =
      write_agent(s.dir, "broken", "local x = 1\nreturn function(thread)\n  x = = 2\nend\n");
  auto result = s.cli({"run", agent, "hi"});
  BOOST_TEST(result.exit_code == 2);
  auto error = nlohmann::json::parse(result.err)["error"];
  BOOST_TEST(error["source"] == "broken/agent.lua");
  BOOST_TEST(error["line"] == 3);
  BOOST_TEST(error["code"] == "syntax");
  auto text = run_cli({"run", agent, "hi", "--store", s.store}, {}, kCleanEnv);
  BOOST_TEST(text.err.find("broken/agent.lua:3: unexpected symbol") != std::string::npos, text.err);
}

BOOST_AUTO_TEST_CASE(agent_raising_at_runtime_fails_the_thread_keeping_events) {
  Session s;
  auto agent = write_agent(s.dir, "raises",
                           "return function(thread)\n"
                           "  thread:push('note', { n = 1 })\n"
                           "  error('the tool exploded')\n"
                           "end\n");
  auto result = s.cli({"run", agent, "hi"});
  BOOST_TEST(result.exit_code == 1, result.err);
  std::string id = Session::thread_id(result);
  auto thread = s.show(id);
  BOOST_TEST(thread["status"] == "failed");
  BOOST_TEST(thread["events"].size() == 3u);
  BOOST_TEST(thread["events"][1]["type"] == "note");
  const auto& failed = thread["events"][2]["data"];
  BOOST_TEST(failed["message"].get<std::string>().find("the tool exploded") != std::string::npos);
  BOOST_TEST(failed["line"] == 3);
}

BOOST_AUTO_TEST_CASE(unknown_thread_id) {
  Session s;
  s.cli({"run", calculator(), "add 3 and 4"});  // makes the store
  auto result = s.cli({"resume", "th_doesnotexist", "--approve"});
  BOOST_TEST(result.exit_code == 2);
  BOOST_TEST(result.err.find("no thread th_doesnotexist") != std::string::npos, result.err);
  auto show = s.cli({"show", "th_doesnotexist"});
  BOOST_TEST(show.exit_code == 2);
}

BOOST_AUTO_TEST_CASE(resume_of_a_finished_thread) {
  Session s;
  auto run = s.cli({"run", calculator(), "add 3 and 4"});
  std::string id = Session::thread_id(run);
  auto result = s.cli({"resume", id, "--say", "and now?"});
  BOOST_TEST(result.exit_code == 2);
  BOOST_TEST(result.err.find("is not awaiting a human response (it is done)") != std::string::npos,
             result.err);
  BOOST_TEST(s.show(id)["events"].size() == Session::events(run).size());
}

BOOST_AUTO_TEST_CASE(malformed_cassette) {
  Session s;
  auto folder = s.dir / "calc";
  std::filesystem::copy(calculator(), folder, std::filesystem::copy_options::recursive);
  std::ofstream(folder / "cassette.jsonl") << "{\"request\": {\"messages\": []}, \"response\": "
                                              "{\"text\": \"ok\"}}\nthis is not json\n";
  auto result = s.cli({"run", folder.string(), "add 3 and 4"});
  BOOST_TEST(result.exit_code == 2);
  // Where, as a Lua error says it: the file, and the line apart.
  auto error = nlohmann::json::parse(result.err)["error"];
  BOOST_TEST(error["source"] == (folder / "cassette.jsonl").string(), result.err);
  BOOST_TEST(error["line"] == 2, result.err);
  // And where the cassette's name came from: the agent's luagent.config.lua.
  BOOST_TEST(error["message"] == (folder / "luagent.config.lua").string() +
                                     ": cassette: malformed cassette: line is not a JSON object",
             result.err);
}

BOOST_AUTO_TEST_CASE(store_path_not_writable) {
  Session s;
  auto result = run_cli(
      {"run", calculator(), "add 3 and 4", "--store", "sqlite:/proc/luagent/nope/threads.db"},
      s.dir.path().string(), kCleanEnv);
  BOOST_TEST(result.exit_code == 2);
  BOOST_TEST(result.err.find("cannot open store sqlite:/proc/luagent/nope/threads.db") !=
                 std::string::npos,
             result.err);
}

// luagent.config.lua: a misspelled key used to be ignored (`cassete` left the replay provider
// without a cassette, with no hint why), a limit of the wrong type ended in "internal
// error", and a zero or negative limit was taken as given.
BOOST_AUTO_TEST_CASE(config_file_mistakes_are_named) {
  Session s;
  auto agent = write_agent(s.dir, "configured", "return function(thread) end\n");
  auto config = std::filesystem::path(agent) / "luagent.config.lua";
  auto refused = [&](const std::string& text, const std::string& why) {
    std::ofstream(config) << text;
    auto result = s.cli({"run", agent, "hi"});
    BOOST_TEST(result.exit_code == 2, text + " -> " + result.err);
    BOOST_TEST(result.err.find("luagent.config.lua: " + why) != std::string::npos,
               text + " -> " + result.err);
  };
  refused("provider = 'replay'\ncassete = 'cassette.jsonl'\n",
          "unknown setting 'cassete' (did you mean 'cassette'?)");
  refused("limits = { step_cpu_ms = 'fast' }\n",
          "limits.step_cpu_ms must be an integer in [1, 3600000], not \\\"fast\\\"");
  refused("limits = { memory_mb = 0 }\n", "limits.memory_mb must be an integer in [1, ");
  refused("limits = { step_cpu_ms = -5 }\n", "limits.step_cpu_ms must be an integer in [1, ");
  refused("limits = { stepcpu_ms = 10 }\n",
          "unknown limit 'limits.stepcpu_ms' (did you mean 'limits.step_cpu_ms'?)");
  refused("limits = 5\n", "'limits' must be a table");
  refused("frobnicate = true\n", "unknown setting 'frobnicate' (known: store, provider,");
  std::ofstream(config) << "provider = 'replay'\ncassette = '" << calculator()
                        << "/cassette.jsonl'\nlimits = { step_cpu_ms = 2500.0, memory_mb = 64 }\n";
  auto fine = s.cli({"run", agent, "hi"});
  BOOST_TEST(fine.exit_code == 0, fine.err);
  BOOST_TEST(s.cli({"threads"}).out.find("failed") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(usage_errors) {
  Session s;
  BOOST_TEST(s.cli({"run"}).exit_code == 2);
  BOOST_TEST(s.cli({"frobnicate"}).exit_code == 2);
  BOOST_TEST(s.cli({"resume", "th_x"}).exit_code == 2);
  BOOST_TEST(s.cli({"resume", "th_x", "--approve", "--say", "x"}).exit_code == 2);
  BOOST_TEST(s.cli({"show", "th_x", "--format", "yaml"}).exit_code == 2);
  BOOST_TEST(s.cli({"threads", "--status", "sleeping"}).exit_code == 2);
  auto unknown = s.cli({"run", calculator(), "x", "--bogus"});
  BOOST_TEST(unknown.exit_code == 2);
  BOOST_TEST(unknown.err.find("unknown option --bogus") != std::string::npos, unknown.err);
  auto bad_store = run_cli({"run", calculator(), "x", "--store", "mysql://db"}, {}, kCleanEnv);
  BOOST_TEST(bad_store.exit_code == 2);
  BOOST_TEST(bad_store.err.find("unknown store scheme 'mysql'") != std::string::npos,
             bad_store.err);
}

// An option the command does not read was dropped without a word: `show T --approve`
// approved nothing, `run A M --saves 3` ran without a limit.
BOOST_AUTO_TEST_CASE(options_a_command_does_not_take_are_usage_errors) {
  Session s;
  auto run = s.cli({"run", calculator(), "can you divide 3 by 4"});
  std::string id = Session::thread_id(run);
  auto show = s.cli({"show", id, "--approve"});
  BOOST_TEST(show.exit_code == 2);
  BOOST_TEST(show.err.find("show does not take --approve") != std::string::npos, show.err);
  auto saves = s.cli({"run", calculator(), "add 3 and 4", "--saves", "3"});
  BOOST_TEST(saves.exit_code == 2);
  BOOST_TEST(saves.err.find("run does not take --saves") != std::string::npos, saves.err);
  BOOST_TEST(s.cli({"threads", "--reason", "x"}).exit_code == 2);
  BOOST_TEST(s.cli({"fork", id, "--at", "1", "--provider", "replay"}).exit_code == 2);
  BOOST_TEST(s.show(id)["status"] == "awaiting_approval");  // nothing happened to it
  BOOST_TEST(s.cli({"threads", "--help"}).exit_code == 0);
}

// `luagent run path/to/agent.lua` ran the agent but looked for luagent.config.lua only in
// the working directory, so the calculator's own config (its replay cassette) was missed.
BOOST_AUTO_TEST_CASE(run_of_a_path_to_agent_lua_reads_the_config_beside_it) {
  Session s;
  auto result = s.cli({"run", calculator() + "/agent.lua", "add 3 and 4"});
  BOOST_TEST(result.exit_code == 0, result.err);
  BOOST_TEST(result.out.find("done_for_now") != std::string::npos, result.out);
}

BOOST_AUTO_TEST_CASE(threads_lists_by_status) {
  Session s;
  s.cli({"run", calculator(), "add 3 and 4"});
  s.cli({"run", calculator(), "can you divide 3 by 4"});
  auto waiting = s.cli({"threads", "--status", "awaiting_approval"});
  BOOST_TEST(waiting.exit_code == 0);
  BOOST_TEST(Session::lines(waiting).size() == 1u);
  BOOST_TEST(Session::lines(s.cli({"threads"})).size() == 2u);
}

BOOST_AUTO_TEST_CASE(show_formats) {
  Session s;
  auto run = s.cli({"run", calculator(), "add 3 and 4"});
  std::string id = Session::thread_id(run);
  auto llm = run_cli({"show", id, "--format", "llm", "--store", s.store}, {}, kCleanEnv);
  BOOST_TEST(llm.exit_code == 0, llm.err);
  BOOST_TEST(llm.out.find("<add>\na: 3\nb: 4\n</add>") != std::string::npos, llm.out);
  BOOST_TEST(llm.out.find("<tool_response>\n7\n</tool_response>") != std::string::npos, llm.out);
  auto text = run_cli({"show", id, "--store", s.store}, {}, kCleanEnv);
  BOOST_TEST(text.out.find("user_input") != std::string::npos);
}

// show, threads, fork and cancel opened the default store whatever luagent.config.lua said:
// `run` wrote to the config's fs:stored while `threads` listed an empty .luagent/threads.db.
BOOST_AUTO_TEST_CASE(thread_commands_use_the_config_files_store) {
  TempDir dir;
  std::ofstream(dir / "luagent.config.lua")
      << "store = 'fs:stored'\nprovider = 'replay'\ncassette = '" << calculator()
      << "/cassette.jsonl'\n";
  auto cli = [&](std::vector<std::string> args) {
    args.push_back("--json");
    return run_cli(args, dir.path().string(), kCleanEnv);
  };
  auto run = cli({"run", calculator(), "can you divide 3 by 4"});
  BOOST_TEST_REQUIRE(run.exit_code == 10, run.err);
  BOOST_TEST_REQUIRE(std::filesystem::is_directory(dir / "stored"));
  std::string id = Session::thread_id(run);
  auto listed = cli({"threads"});
  BOOST_TEST(listed.exit_code == 0, listed.err);
  BOOST_TEST(Session::lines(listed).size() == 1u, listed.out);
  auto show = cli({"show", id});
  BOOST_TEST(show.exit_code == 0, show.err);
  auto fork = cli({"fork", id, "--at", "1"});
  BOOST_TEST(fork.exit_code == 0, fork.err);
  auto cancel = cli({"cancel", id});
  BOOST_TEST(cancel.exit_code == 0, cancel.err);
  BOOST_TEST(Session::lines(cli({"threads"})).size() == 2u);
  BOOST_TEST(!std::filesystem::exists(dir / ".luagent"));  // the default store was never made
}

// A mistyped --store made an empty store (parent folders included) and answered "no
// thread" or an empty list with exit 0. Only `run` may create a store.
BOOST_AUTO_TEST_CASE(commands_that_read_threads_do_not_create_a_store) {
  TempDir dir;
  for (std::string store :
       {"sqlite:" + (dir / "missing/threads.db").string(), "fs:" + (dir / "missing").string()}) {
    std::string path = store.substr(store.find(':') + 1);
    for (std::vector<std::string> args : {std::vector<std::string>{"resume", "th_x", "--approve"},
                                          {"resume", "th_x"},
                                          {"show", "th_x"},
                                          {"threads"},
                                          {"fork", "th_x", "--at", "1"},
                                          {"cancel", "th_x"}}) {
      std::string command = args[0];
      args.push_back("--store");
      args.push_back(store);
      auto result = run_cli(args, dir.path().string(), kCleanEnv);
      BOOST_TEST(result.exit_code == 2, command + " " + store + ": " + result.err);
      BOOST_TEST(result.err.find("no store " + store + ": " + path + " does not exist") !=
                     std::string::npos,
                 command + " " + store + ": " + result.err);
      BOOST_TEST(!std::filesystem::exists(dir / "missing"), command + " " + store);
      BOOST_TEST(!std::filesystem::exists(dir / ".luagent"), command + " " + store);
    }
  }
  // run still makes the store it launches into.
  auto run = run_cli({"run", calculator(), "add 3 and 4", "--store",
                      "sqlite:" + (dir / "missing/threads.db").string()},
                     dir.path().string(), kCleanEnv);
  BOOST_TEST(run.exit_code == 0, run.err);
  BOOST_TEST(std::filesystem::exists(dir / "missing/threads.db"));
}

// `--store=` silently used the default store; `--store a --store b` kept b without a word;
// `resume --say ""` stored an empty answer.
BOOST_AUTO_TEST_CASE(empty_and_repeated_options_are_usage_errors) {
  Session s;
  auto empty = run_cli({"threads", "--store="}, s.dir.path().string(), kCleanEnv);
  BOOST_TEST(empty.exit_code == 2);
  BOOST_TEST(empty.err.find("--store needs a value, not an empty one") != std::string::npos,
             empty.err);
  auto twice = run_cli({"threads", "--store", s.store, "--store", s.store + "2"},
                       s.dir.path().string(), kCleanEnv);
  BOOST_TEST(twice.exit_code == 2);
  BOOST_TEST(twice.err.find("--store is given twice") != std::string::npos, twice.err);
  auto run = s.cli({"run", calculator(), "multiply 3 and xyz"});
  BOOST_TEST_REQUIRE(run.exit_code == 10, run.err);
  std::string id = Session::thread_id(run);
  auto say = s.cli({"resume", id, "--say", ""});
  BOOST_TEST(say.exit_code == 2);
  BOOST_TEST(say.err.find("--say needs a value, not an empty one") != std::string::npos, say.err);
  BOOST_TEST(s.show(id)["status"] == "awaiting_human");
  BOOST_TEST(!std::filesystem::exists(s.dir / ".luagent"));
}

// With --json, a mistake in the flags themselves (an unknown option, a missing or repeated
// value) was printed as text: the flags had not been read yet when the error was shown.
BOOST_AUTO_TEST_CASE(flag_errors_are_json_with_json) {
  for (std::vector<std::string> args : {std::vector<std::string>{"threads", "--json", "--bogus"},
                                        {"threads", "--store=", "--json"},
                                        {"--json", "fork", "th_x", "--at", "1", "--at", "2"},
                                        {"threads", "--json", "--status"}}) {
    auto result = run_cli(args, {}, kCleanEnv);
    BOOST_TEST(result.exit_code == 2, args[1]);
    BOOST_TEST(result.out.empty(), result.out);
    auto error = nlohmann::json::parse(result.err, nullptr, false);
    BOOST_TEST_REQUIRE(!error.is_discarded(), result.err);
    BOOST_TEST(error["error"]["code"] == "usage", result.err);
  }
}

// `resume T --say --json` said "--json" to the agent (and `--reject --approve` rejected with
// the comment "--approve"): a flag missing its value took the next flag as its value.
BOOST_AUTO_TEST_CASE(a_flag_missing_its_value_does_not_take_the_next_flag) {
  Session s;
  auto run = s.cli({"run", calculator(), "multiply 3 and xyz"});
  BOOST_TEST_REQUIRE(run.exit_code == 10, run.err);
  std::string id = Session::thread_id(run);
  auto say = run_cli({"resume", id, "--say", "--json", "--store", s.store}, s.dir.path().string(),
                     kCleanEnv);
  BOOST_TEST(say.exit_code == 2);
  BOOST_TEST(say.err.find("--say needs a value, not the option --json") != std::string::npos,
             say.err);
  BOOST_TEST(s.show(id)["status"] == "awaiting_human");
  BOOST_TEST(s.show(id)["events"].size() == Session::events(run).size());
  // A value that starts with dashes is given with =.
  auto dashes = run_cli({"threads", "--agent=--odd", "--store", s.store}, {}, kCleanEnv);
  BOOST_TEST(dashes.exit_code == 0, dashes.err);
}

// A name longer than a file name can be made the CLI's own look-ups throw
// std::filesystem's error: "internal error: filesystem error: status: File name too long",
// exit 1, for what is a mistyped argument.
BOOST_AUTO_TEST_CASE(names_too_long_for_a_file_are_usage_errors_not_internal_ones) {
  Session s;
  std::string long_name(300, 'a');
  auto refused = [&](std::vector<std::string> args, const std::string& code,
                     const std::string& says) {
    auto result = s.cli(args);
    BOOST_TEST(result.exit_code == 2, args[0] << ": " << result.err);
    auto error = nlohmann::json::parse(result.err, nullptr, false);
    BOOST_TEST_REQUIRE(!error.is_discarded(), result.err);
    BOOST_TEST(error["error"]["code"] == code, result.err);
    BOOST_TEST(error["error"]["message"].get<std::string>().find(says) != std::string::npos,
               result.err);
  };
  refused({"run", long_name, "hi"}, "not_found", "longer than a file name can be");
  refused({"run", calculator(), "hi", "--config", long_name}, "config", "no config file aaa");
  refused({"threads", "--config", long_name}, "config", "no config file aaa");
  refused({"dev", long_name, "hi", "--timeout", "1"}, "not_found", "no agent folder aaa");
}

// A config file that returned a list ({ "replay" }) was read as no settings at all, and a
// setting of the wrong type was blamed on "luagent.config.lua" whatever the file was called,
// or went unseen while a flag overrode it: `run` went on and stored a failed thread.
BOOST_AUTO_TEST_CASE(config_files_of_the_wrong_shape_are_refused_naming_the_file) {
  Session s;
  auto file = s.dir / "settings.lua";
  auto refused = [&](const std::string& text, const std::string& why) {
    std::ofstream(file) << text;
    auto result = s.cli({"run", calculator(), "add 3 and 4", "--config", file.string()});
    BOOST_TEST(result.exit_code == 2, text + " -> " + result.err);
    BOOST_TEST(result.out.empty(), text + " -> " + result.out);
    BOOST_TEST(result.err.find(file.string() + ": " + why) != std::string::npos,
               text + " -> " + result.err);
  };
  refused("return { 'replay', 'cassette.jsonl' }\n", "the config returned a list");
  refused("store = 5\n", "'store' must be a string, not 5");
  refused("provider = { 'replay' }\n", "'provider' must be a string");
  refused("openai = 'gpt-4o'\n", "'openai' must be a table");
  BOOST_TEST(!std::filesystem::exists(s.dir / "threads.db"));  // nothing was launched
}

// `luagent` with no command printed the usage on stdout and exited 2: a script reading
// stdout got text that looks like an answer, and with --json text that is not JSON.
BOOST_AUTO_TEST_CASE(no_command_is_an_error_on_stderr) {
  auto bare = run_cli({}, {}, kCleanEnv);
  BOOST_TEST(bare.exit_code == 2);
  BOOST_TEST(bare.out.empty(), bare.out);
  BOOST_TEST(bare.err.find("usage: luagent <command>") != std::string::npos, bare.err);
  auto json = run_cli({"--json", "--store", "sqlite:x.db"}, {}, kCleanEnv);
  BOOST_TEST(json.exit_code == 2);
  BOOST_TEST(json.out.empty(), json.out);
  auto error = nlohmann::json::parse(json.err, nullptr, false);
  BOOST_TEST_REQUIRE(!error.is_discarded(), json.err);
  BOOST_TEST(error["error"]["code"] == "usage");
  auto help = run_cli({"--help"}, {}, kCleanEnv);  // asked for: stdout, exit 0
  BOOST_TEST(help.exit_code == 0);
  BOOST_TEST(help.out.find("usage: luagent <command>") != std::string::npos, help.out);
}

// `help bogus` printed the usage and exited 0, as if `bogus` were a command it had explained.
BOOST_AUTO_TEST_CASE(help_for_a_command_that_does_not_exist_is_a_usage_error) {
  auto typo = run_cli({"help", "rnu"}, {}, kCleanEnv);
  BOOST_TEST(typo.exit_code == 2);
  BOOST_TEST(typo.out.empty(), typo.out);
  BOOST_TEST(typo.err.find("no command 'rnu' to help with") != std::string::npos, typo.err);
  auto two = run_cli({"help", "run", "show"}, {}, kCleanEnv);
  BOOST_TEST(two.exit_code == 2);
  BOOST_TEST(two.err.find("help takes one command, not 2") != std::string::npos, two.err);
  auto known = run_cli({"help", "run"}, {}, kCleanEnv);
  BOOST_TEST(known.exit_code == 0);
  BOOST_TEST(known.out.find("run AGENT [MESSAGE]") != std::string::npos, known.out);
}

// Every Error that ended the CLI exited 2, whatever its code: an agent that ran past its CPU
// limit while loading exited 2 ("usage or configuration error"), where docs/errors.md gives
// `limit` (like every agent error) exit 1.
BOOST_AUTO_TEST_CASE(an_agent_error_that_ends_the_cli_exits_1) {
  Session s;
  auto agent = write_agent(s.dir, "spins", "while true do end\n");
  std::ofstream(std::filesystem::path(agent) / "luagent.config.lua", std::ios::app)
      << "limits = { step_cpu_ms = 50 }\n";
  auto result = s.cli({"run", agent, "hi"});
  BOOST_TEST(result.exit_code == 1, result.err);
  auto error = nlohmann::json::parse(result.err, nullptr, false);
  BOOST_TEST_REQUIRE(!error.is_discarded(), result.err);
  BOOST_TEST(error["error"]["code"] == "limit");
  BOOST_TEST(s.cli({"run", "no-such-agent", "hi"}).exit_code == 2);  // still the caller's
}

// `run notes.txt hi` answered "no agent 'notes.txt' (looked for notes.txt/agent.lua and
// ./notes.txt/agent.lua)", naming the same absolute path twice when given one, and not
// saying that the name was a file where a folder was wanted.
BOOST_AUTO_TEST_CASE(an_agent_path_that_is_a_file_is_named_as_one) {
  Session s;
  std::ofstream(s.dir / "notes.txt") << "not an agent\n";
  std::string file = (s.dir / "notes.txt").string();
  auto result = s.cli({"run", file, "hi"});
  BOOST_TEST(result.exit_code == 2);
  auto message = nlohmann::json::parse(result.err)["error"]["message"].get<std::string>();
  BOOST_TEST(message.find("'" + file + "' is a file, not an agent folder") != std::string::npos,
             message);
  BOOST_TEST(message.find(file + "/agent.lua") == std::string::npos, message);
  auto relative = s.cli({"run", "notes.txt", "hi"});
  BOOST_TEST(relative.exit_code == 2);
  BOOST_TEST(relative.err.find("'notes.txt' is a file, not an agent folder") != std::string::npos,
             relative.err);
}

// An agent folder whose name is not UTF-8 (a Latin-1 "café") ran fine, but then `threads
// --json` ended in "internal error: [json.exception.type_error.316]", exit 1, in text.
BOOST_AUTO_TEST_CASE(threads_json_lists_an_agent_whose_name_is_not_utf8) {
  Session s;
  auto folder = s.dir / "caf\xe9";
  std::filesystem::copy(calculator(), folder, std::filesystem::copy_options::recursive);
  auto run = s.cli({"run", folder.string(), "add 3 and 4"});
  BOOST_TEST_REQUIRE(run.exit_code == 0, run.err);
  auto listed = s.cli({"threads"});
  BOOST_TEST(listed.exit_code == 0, listed.err);
  auto lines = Session::lines(listed);
  BOOST_TEST_REQUIRE(lines.size() == 1u);
  BOOST_TEST(lines[0]["agent"] == "caf\xef\xbf\xbd");  // U+FFFD for the byte
}

// `run AGENT < /dev/zero` (a MESSAGE read from an endless stdin) read until memory ran out
// and the process aborted.
BOOST_AUTO_TEST_CASE(a_message_on_stdin_is_read_up_to_a_limit) {
  Session s;
  auto endless = run_cli({"run", calculator(), "--store", s.store, "--json"}, s.dir.path().string(),
                         kCleanEnv, "/dev/zero");
  BOOST_TEST(endless.exit_code == 2, endless.err);
  BOOST_TEST(endless.out.empty());
  BOOST_TEST(endless.err.find("the MESSAGE on stdin is larger than") != std::string::npos,
             endless.err);
  BOOST_TEST(!std::filesystem::exists(s.dir / "threads.db"));
  std::ofstream(s.dir / "message.txt") << "add 3 and 4\n";
  auto piped = run_cli({"run", calculator(), "--store", s.store, "--json"}, s.dir.path().string(),
                       kCleanEnv, (s.dir / "message.txt").string());
  BOOST_TEST(piped.exit_code == 0, piped.err);
}

namespace {

// Runs `args` with --json in `cwd` and checks the CLI refused them: exit 2, a config error
// whose message starts with `says`.
void check_config_refusal(std::vector<std::string> args, const std::string& cwd,
                          const std::map<std::string, std::string>& env, const std::string& says) {
  args.push_back("--json");
  auto result = run_cli(args, cwd, env);
  BOOST_TEST(result.exit_code == 2, says << ": " << result.err);
  auto error = nlohmann::json::parse(result.err, nullptr, false);
  BOOST_TEST_REQUIRE(!error.is_discarded(), result.err);
  BOOST_TEST(error["error"]["code"] == "config", result.err);
  BOOST_TEST(error["error"]["message"].get<std::string>().starts_with(says),
             says << ": " << result.err);
}

}  // namespace

// A bad value read from the environment (LUAGENT_STORE=foo:bar) was refused in words that did
// not say where it came from, so the user looked for it in the flags and the config file.
BOOST_AUTO_TEST_CASE(bad_values_from_the_environment_name_their_variable) {
  TempDir dir;
  std::filesystem::create_directories(dir / "empty-stdlib");
  auto refused = [&](std::vector<std::string> args, std::map<std::string, std::string> env,
                     const std::string& says) {
    env.insert(kCleanEnv.begin(), kCleanEnv.end());
    check_config_refusal(std::move(args), dir.path().string(), env, says);
  };
  refused({"run", calculator(), "add 3 and 4"}, {{"LUAGENT_STORE", "foo:bar"}},
          "LUAGENT_STORE: unknown store scheme 'foo'");
  refused({"threads"}, {{"LUAGENT_STORE", "threads.db"}}, "LUAGENT_STORE: store URI 'threads.db'");
  refused({"run", calculator(), "add 3 and 4"}, {{"LUAGENT_PROVIDER", "gpt"}},
          "LUAGENT_PROVIDER: unknown provider 'gpt'");
  refused({"run", calculator(), "add 3 and 4"},
          {{"LUAGENT_CASSETTE", (dir / "missing.jsonl").string()}},
          "LUAGENT_CASSETTE: cannot read the cassette");
  refused({"run", calculator(), "add 3 and 4"},
          {{"LUAGENT_PROVIDER", "script"}, {"LUAGENT_SCRIPT", (dir / "missing.lua").string()}},
          "LUAGENT_SCRIPT: cannot read the script model");
  refused({"run", calculator(), "add 3 and 4"},
          {{"LUAGENT_RECORD", (dir / "no-such-folder/record.jsonl").string()}},
          "LUAGENT_RECORD: cannot write the cassette");
  refused({"run", calculator(), "add 3 and 4"},
          {{"LUAGENT_PROVIDER", "openai"}, {"OPENAI_BASE_URL", "localhost:11434/v1"}},
          "OPENAI_BASE_URL: provider openai: the base URL must be an http:// or https:// URL");
  refused({"run", calculator(), "add 3 and 4"},
          {{"LUAGENT_STDLIB", (dir / "empty-stdlib").string()}},
          "LUAGENT_STDLIB: " + (dir / "empty-stdlib").string() + " holds no luagent/ folder");
  // The same value given as a flag is blamed on no variable.
  auto flagged = run_cli({"threads", "--store", "foo:bar"}, dir.path().string(), kCleanEnv);
  BOOST_TEST(flagged.exit_code == 2);
  BOOST_TEST(flagged.err.find("unknown store scheme 'foo'") != std::string::npos, flagged.err);
  BOOST_TEST(flagged.err.find("LUAGENT_STORE") == std::string::npos, flagged.err);
}

// With an fs: store, a thread whose file was damaged vanished from `luagent threads` (sqlite:
// listed it and failed only its `show`). It is listed now, and `show` names the file.
BOOST_AUTO_TEST_CASE(threads_lists_a_damaged_fs_thread_and_show_names_its_file) {
  TempDir dir;
  const std::string store = "fs:" + (dir / "threads").string();
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.end(), {"--store", store, "--json"});
    return run_cli(args, dir.path().string(), kCleanEnv);
  };
  auto run = cli({"run", calculator(), "add 3 and 4"});
  BOOST_TEST_REQUIRE(run.exit_code == 0, run.err);
  std::string id = Session::thread_id(run);
  auto file = dir / "threads" / (id + ".json");
  std::filesystem::resize_file(file, std::filesystem::file_size(file) / 2);

  auto listed = cli({"threads"});
  BOOST_TEST(listed.exit_code == 0, listed.err);
  auto lines = Session::lines(listed);
  BOOST_TEST_REQUIRE(lines.size() == 1u, listed.out);
  BOOST_TEST(lines[0]["id"] == id);
  BOOST_TEST(lines[0]["agent"] == "calculator");
  BOOST_TEST(cli({"threads", "--agent", "calculator"}).out == listed.out);

  auto shown = cli({"show", id});
  BOOST_TEST(shown.exit_code == 2);
  auto error = nlohmann::json::parse(shown.err, nullptr, false);
  BOOST_TEST_REQUIRE(!error.is_discarded(), shown.err);
  BOOST_TEST(error["error"]["code"] == "corrupt", shown.err);
  BOOST_TEST(error["error"]["message"].get<std::string>().find(file.string()) != std::string::npos,
             shown.err);
}

// A bad value read from luagent.config.lua (store = "foo:bar", provider = "gpt", an openai
// setting) was refused in the words a flag's would be, naming neither the file nor the key;
// and a bad flag did not name the flag.
BOOST_AUTO_TEST_CASE(bad_values_from_the_config_file_name_the_file_and_key) {
  TempDir dir;
  auto file = dir / "settings.lua";
  std::map<std::string, std::string> env(kCleanEnv.begin(), kCleanEnv.end());
  env.insert({{"LUAGENT_MODEL", ""}, {"OPENAI_BASE_URL", ""}, {"LUAGENT_STREAM", ""}});
  auto refused = [&](std::vector<std::string> args, const std::string& says) {
    check_config_refusal(std::move(args), dir.path().string(), env, says);
  };
  auto configured = [&](const std::string& text, const std::string& says) {
    std::ofstream(file) << text;
    refused({"run", calculator(), "add 3 and 4", "--config", file.string()}, file.string() + says);
  };
  configured("store = 'foo:bar'\n", ": store: unknown store scheme 'foo'");
  configured("provider = 'gpt'\n", ": provider: unknown provider 'gpt'");
  configured("provider = 'replay'\ncassette = 'missing.jsonl'\n",
             ": cassette: cannot read the cassette " + (dir / "missing.jsonl").string());
  configured("provider = 'script'\nscript = 'missing.lua'\n",
             ": script: cannot read the script model " + (dir / "missing.lua").string());
  configured("provider = 'openai'\nbase_url = 'localhost:11434/v1'\n",
             ": provider openai: setting 'base_url' must be an http:// or https:// URL");
  configured("provider = 'openai'\nopenai = { max_tokens = 0 }\n",
             ": provider openai: setting 'max_tokens' must be an integer in [1, ");
  configured("provider = 'anthropic'\nanthropic = { stream = 'yes' }\n",
             ": provider anthropic: setting 'stream' must be true or false");
  // The commands that only read threads take the store from the file too.
  std::ofstream(file) << "store = 'foo:bar'\n";
  refused({"threads", "--config", file.string()},
          file.string() + ": store: unknown store scheme 'foo'");
  // The same mistakes as flags name the flag; a flag wins over the file's bad value.
  std::ofstream(file) << "provider = 'gpt'\n";
  refused({"run", calculator(), "add 3 and 4", "--store", "foo:bar"},
          "--store: unknown store scheme 'foo'");
  refused({"threads", "--store", "foo:bar"}, "--store: unknown store scheme 'foo'");
  refused({"run", calculator(), "add 3 and 4", "--provider", "gpt"},
          "--provider: unknown provider 'gpt'");
  refused({"run", calculator(), "add 3 and 4", "--provider", "replay", "--cassette",
           "missing.jsonl", "--config", file.string()},
          "--cassette: cannot read the cassette missing.jsonl");
  refused({"run", calculator(), "add 3 and 4", "--config", "missing.lua"},
          "--config: no config file missing.lua");
  refused({"run", calculator(), "add 3 and 4", "--agents", file.string()},
          "--agents: the agents folder " + file.string() + " is a file, not a folder");
}

// `run` made the store before it loaded the agent: a mistyped agent name, or an agent with a
// syntax error, left a new, empty threads.db (and its folder) beside the error.
BOOST_AUTO_TEST_CASE(an_agent_that_fails_to_load_leaves_no_store_behind) {
  TempDir dir;
  auto broken = write_agent(dir, "broken", "return function(thread\n");
  for (const auto& [store, made] :
       {std::pair{"sqlite:" + (dir / "sqlite-store/threads.db").string(), dir / "sqlite-store"},
        std::pair{"fs:" + (dir / "fs-store").string(), dir / "fs-store"}}) {
    auto unknown = run_cli({"run", "no-such-agent", "hi", "--store", store, "--json"},
                           dir.path().string(), kCleanEnv);
    BOOST_TEST(unknown.exit_code == 2, unknown.err);
    BOOST_TEST(unknown.err.find("no agent 'no-such-agent'") != std::string::npos, unknown.err);
    auto syntax =
        run_cli({"run", broken, "hi", "--store", store, "--json"}, dir.path().string(), kCleanEnv);
    BOOST_TEST(syntax.exit_code == 2, syntax.err);
    BOOST_TEST(syntax.err.find("\"code\":\"syntax\"") != std::string::npos, syntax.err);
    BOOST_TEST(!std::filesystem::exists(made), store);
  }
  // The default store (.luagent/threads.db in the working directory) is not made either.
  auto unknown = run_cli({"run", "no-such-agent", "hi"}, dir.path().string(), kCleanEnv);
  BOOST_TEST(unknown.exit_code == 2, unknown.err);
  BOOST_TEST(!std::filesystem::exists(dir / ".luagent"));
  // A store that cannot be made is still named, once an agent has loaded.
  std::ofstream(dir / "a-file") << "not a folder\n";
  auto unusable = run_cli(
      {"run", calculator(), "add 3 and 4", "--store", "sqlite:" + (dir / "a-file/t.db").string()},
      dir.path().string(), kCleanEnv);
  BOOST_TEST(unusable.exit_code == 2, unusable.err);
  BOOST_TEST(unusable.err.find("--store: cannot open store sqlite:" +
                               (dir / "a-file/t.db").string()) != std::string::npos,
             unusable.err);
  // An agent that loads makes the store, as before.
  auto fine = run_cli({"run", calculator(), "add 3 and 4", "--store",
                       "sqlite:" + (dir / "stores/threads.db").string()},
                      dir.path().string(), kCleanEnv);
  BOOST_TEST(fine.exit_code == 0, fine.err);
  BOOST_TEST(std::filesystem::exists(dir / "stores/threads.db"));
}
