// The prompt iteration commands end to end through the real CLI: eval on the calculator
// cases (offline, and a deliberately broken case), replay of stored threads before and
// after a prompt change, and dev re-deciding on saves while a writer edits the prompt.
#define BOOST_TEST_MODULE reload_cli
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "support/cli_runner.hpp"
#include "support/test_paths.hpp"

namespace fs = std::filesystem;
using luagent::test::CliResult;
using luagent::test::run_cli;
using luagent::test::TempDir;
using namespace std::chrono_literals;

namespace {

const std::map<std::string, std::string> kCleanEnv = {
    {"LUAGENT_PROVIDER", ""}, {"LUAGENT_STORE", ""},  {"LUAGENT_CASSETTE", ""},
    {"LUAGENT_SCRIPT", ""},   {"LUAGENT_RECORD", ""}, {"NO_COLOR", "1"}};

fs::path calculator() {
  return luagent::test::source_dir() / "examples/calculator";
}

std::string last_line(const std::string& text) {
  std::string trimmed = text;
  while (!trimmed.empty() && trimmed.back() == '\n') trimmed.pop_back();
  auto at = trimmed.rfind('\n');
  return at == std::string::npos ? trimmed : trimmed.substr(at + 1);
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A copy of the calculator played by its script model, so prompt edits get answers.
struct ScriptedCalculator {
  TempDir dir;
  fs::path agent = dir / "calc";
  std::string store = "sqlite:" + (dir / "threads.db").string();
  std::map<std::string, std::string> env = kCleanEnv;

  ScriptedCalculator() {
    fs::create_directories(agent);
    for (const char* name : {"agent.lua", "next_step.prompt", "model.lua"})
      fs::copy_file(calculator() / name, agent / name);
    env["LUAGENT_PROVIDER"] = "script";
    env["LUAGENT_SCRIPT"] = (agent / "model.lua").string();
  }

  CliResult cli(std::vector<std::string> args) {
    args.push_back("--store");
    args.push_back(store);
    return run_cli(args, dir.path().string(), env);
  }

  // The prompt now also shows the model a second request: its decisions change.
  // The prompt with a second user input after the thread.
  static std::string changed(std::string prompt) {
    auto at = prompt.find("{{ thread }}");
    prompt.insert(at + 12, "\n<user_input>\ncan you add 1 and 2\n</user_input>");
    return prompt;
  }
  void change_prompt() {
    write_file(agent / "next_step.prompt", changed(read_text(agent / "next_step.prompt")));
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(eval_calculator_cases_pass_offline) {
  TempDir dir;
  auto result =
      run_cli({"eval", (calculator() / "evals.lua").string()}, dir.path().string(), kCleanEnv);
  BOOST_TEST_MESSAGE(result.out << result.err);
  BOOST_CHECK_EQUAL(result.exit_code, 0);
  BOOST_CHECK_EQUAL(last_line(result.out), "5 passed, 0 failed");
  for (const char* name : {"HelloWorld", "MathOperation", "LongMath",
                           "MathOperationWithClarification", "MathOperationPostClarification"})
    BOOST_CHECK_NE(result.out.find(std::string("PASS  ") + name), std::string::npos);
  BOOST_CHECK(!fs::exists(dir / ".luagent"));  // nothing stored
}

BOOST_AUTO_TEST_CASE(eval_with_a_broken_case_exits_1) {
  TempDir dir;
  write_file(dir / "cases.lua", "local calc = " + nlohmann::json(calculator().string()).dump() +
                                    R"lua(
return {
  { name = "right", agent = calc, input = "can you multiply 3 and 4", expect = { intent = "multiply" } },
  { name = "wrong", agent = calc, input = "can you multiply 3 and 4",
    expect = { intent = "multiply", fields = { a = 3, b = 5 } } },
  { name = "check", agent = calc, input = "hello!",
    expect = { check = function(step) return step.intent == "done_for_now", "not done" end } },
}
)lua");
  auto result = run_cli({"eval", (dir / "cases.lua").string()}, dir.path().string(), kCleanEnv);
  BOOST_TEST_MESSAGE(result.out << result.err);
  BOOST_CHECK_EQUAL(result.exit_code, 1);
  BOOST_CHECK_EQUAL(last_line(result.out), "1 passed, 2 failed");
  BOOST_CHECK_NE(result.out.find("b: expected 5, got 4"), std::string::npos);
  BOOST_CHECK_NE(result.out.find("check: not done"), std::string::npos);
}

BOOST_AUTO_TEST_CASE(eval_case_file_errors_are_usage_errors_with_line) {
  TempDir dir;
  write_file(dir / "bad.lua", "return {\n  { name = 'x' agent = '.' },\n}\n");
  auto result = run_cli({"eval", (dir / "bad.lua").string()}, dir.path().string(), kCleanEnv);
  BOOST_CHECK_EQUAL(result.exit_code, 2);
  BOOST_CHECK_NE(result.err.find("bad.lua:2"), std::string::npos);
  write_file(dir / "empty.lua", "return {}\n");
  result = run_cli({"eval", (dir / "empty.lua").string()}, dir.path().string(), kCleanEnv);
  BOOST_CHECK_EQUAL(result.exit_code, 2);
  BOOST_CHECK_NE(result.err.find("no cases"), std::string::npos);
  result = run_cli({"eval", (dir / "missing.lua").string()}, dir.path().string(), kCleanEnv);
  BOOST_CHECK_EQUAL(result.exit_code, 2);
}

BOOST_AUTO_TEST_CASE(replay_reports_changed_decisions_after_a_prompt_change) {
  ScriptedCalculator calc;
  auto run = calc.cli({"run", calc.agent.string(),
                       "can you multiply 3 and 4, then divide the result by 2 and then add 12 to "
                       "that result",
                       "--json"});
  BOOST_REQUIRE_EQUAL(run.exit_code, 10);  // waiting for approval of the divide
  auto same = calc.cli({"replay", calc.agent.string(), "--threads", "last:1"});
  BOOST_TEST_MESSAGE(same.out << same.err);
  BOOST_CHECK_EQUAL(same.exit_code, 0);
  BOOST_CHECK_EQUAL(last_line(same.out), "2 decisions, 0 changed");
  auto before =
      calc.cli({"show", "--format", "json",
                nlohmann::json::parse(last_line(run.out))["thread_id"].get<std::string>()});

  calc.change_prompt();
  auto changed =
      calc.cli({"replay", calc.agent.string(), "--threads", "status:awaiting_approval", "--json"});
  BOOST_TEST_MESSAGE(changed.out << changed.err);
  BOOST_CHECK_EQUAL(changed.exit_code, 0);
  auto summary = nlohmann::json::parse(last_line(changed.out));
  BOOST_CHECK_EQUAL(summary["decisions"], 2);
  BOOST_CHECK_GE(summary["changed"].get<int>(), 1);
  auto first = nlohmann::json::parse(changed.out.substr(0, changed.out.find('\n')));
  BOOST_CHECK_EQUAL(first["before"]["type"], "multiply");
  BOOST_CHECK_EQUAL(first["changed"], true);
  // The stored thread was only read.
  auto after =
      calc.cli({"show", "--format", "json",
                nlohmann::json::parse(last_line(run.out))["thread_id"].get<std::string>()});
  BOOST_CHECK_EQUAL(before.out, after.out);

  auto bad = calc.cli({"replay", calc.agent.string(), "--threads", "last:x"});
  BOOST_CHECK_EQUAL(bad.exit_code, 2);
  auto none = calc.cli({"replay", calc.agent.string(), "--threads", "th_nope"});
  BOOST_CHECK_EQUAL(none.exit_code, 2);
  auto missing = calc.cli({"replay", calc.agent.string()});
  BOOST_CHECK_EQUAL(missing.exit_code, 2);
}

// Runs `dev` in the background while `edit` saves every 150 ms until dev has exited.
CliResult dev_while_editing(ScriptedCalculator& calc, std::vector<std::string> args,
                            const std::function<void(int)>& edit) {
  std::atomic<bool> finished{false};
  CliResult result;
  std::thread runner([&] {
    result = calc.cli(std::move(args));
    finished = true;
  });
  auto deadline = std::chrono::steady_clock::now() + 30s;
  for (int i = 0; !finished && std::chrono::steady_clock::now() < deadline; ++i) {
    std::this_thread::sleep_for(150ms);
    edit(i);
  }
  runner.join();
  return result;
}

BOOST_AUTO_TEST_CASE(dev_reruns_the_next_decision_on_every_save) {
  ScriptedCalculator calc;
  std::string original = read_text(calc.agent / "next_step.prompt");
  auto result = dev_while_editing(
      calc,
      {"dev", calc.agent.string(), "can you multiply 3 and 4", "--saves", "1", "--timeout", "30"},
      [&](int i) {
        // One save, as an editor makes it (a new file renamed over the old): written in
        // several steps, a busy machine lets the watcher reload the half-written prompt.
        auto scratch = calc.dir / "next_step.prompt.new";
        write_file(scratch,
                   ScriptedCalculator::changed(original) + "\n" + std::to_string(i) + "\n");
        fs::rename(scratch, calc.agent / "next_step.prompt");
      });
  BOOST_TEST_MESSAGE(result.out << result.err);
  BOOST_CHECK_EQUAL(result.exit_code, 0);
  BOOST_CHECK_NE(result.out.find("now     multiply  a: 3  b: 4"), std::string::npos);
  BOOST_CHECK_NE(result.out.find("before  multiply  a: 3  b: 4"), std::string::npos);
  BOOST_CHECK_NE(result.out.find("now     add  a: 1  b: 2   (changed)"), std::string::npos);
  BOOST_CHECK_NE(result.out.find("+ can you add 1 and 2"), std::string::npos);
  BOOST_CHECK(!fs::exists(calc.dir / "threads.db"));  // the stored threads are untouched
}

BOOST_AUTO_TEST_CASE(dev_shows_a_broken_save_with_file_and_line) {
  ScriptedCalculator calc;
  std::string agent = read_text(calc.agent / "agent.lua");
  auto result = dev_while_editing(
      calc,
      {"dev", calc.agent.string(), "can you multiply 3 and 4", "--saves", "1", "--timeout", "30"},
      [&](int i) {
        write_file(calc.agent / "agent.lua", agent + "\nlocal x = = " + std::to_string(i) + "\n");
      });
  BOOST_TEST_MESSAGE(result.out << result.err);
  BOOST_CHECK_EQUAL(result.exit_code, 0);
  BOOST_CHECK_NE(result.out.find("does not load; the previous version keeps serving"),
                 std::string::npos);
  BOOST_CHECK_NE(result.out.find("agent.lua:"), std::string::npos);
}

BOOST_AUTO_TEST_CASE(dev_usage_errors) {
  ScriptedCalculator calc;
  BOOST_CHECK_EQUAL(calc.cli({"dev"}).exit_code, 2);
  BOOST_CHECK_EQUAL(calc.cli({"dev", calc.agent.string()}).exit_code, 2);
  BOOST_CHECK_EQUAL(calc.cli({"dev", calc.agent.string(), "--thread", "th_nope"}).exit_code, 2);
  BOOST_CHECK_EQUAL(calc.cli({"dev", (calc.dir / "nope").string(), "hi"}).exit_code, 2);
  // "--saves -2" used to mean "never stop" and "--saves 3x" three saves.
  for (const char* saves : {"-2", "0", "3x"}) {
    auto bad = calc.cli({"dev", calc.agent.string(), "hi", "--saves", saves, "--timeout", "1"});
    BOOST_CHECK_EQUAL(bad.exit_code, 2);
    BOOST_TEST(bad.err.find("--saves must be a positive integer, not '" + std::string(saves)) !=
                   std::string::npos,
               bad.err);
  }
  auto timeout = calc.cli({"dev", calc.agent.string(), "hi", "--saves", "1", "--timeout", "2.5"});
  BOOST_CHECK_EQUAL(timeout.exit_code, 2);
}

// A CASES argument naming a folder ended in "internal error: basic_filebuf::underflow",
// exit 1; one naming an endless file (/dev/zero) was read until memory ran out.
BOOST_AUTO_TEST_CASE(eval_of_a_folder_or_an_endless_file_is_a_usage_error) {
  TempDir dir;
  fs::create_directories(dir / "cases");
  auto folder =
      run_cli({"eval", (dir / "cases").string(), "--json"}, dir.path().string(), kCleanEnv);
  BOOST_CHECK_EQUAL(folder.exit_code, 2);
  BOOST_CHECK(folder.out.empty());
  auto error = nlohmann::json::parse(folder.err, nullptr, false);
  BOOST_TEST_REQUIRE(!error.is_discarded(), folder.err);
  BOOST_TEST(error["error"]["message"].get<std::string>().find("is a folder") != std::string::npos,
             folder.err);
  auto endless = run_cli({"eval", "/dev/zero"}, dir.path().string(), kCleanEnv);
  BOOST_CHECK_EQUAL(endless.exit_code, 2);
  BOOST_TEST(endless.err.find("/dev/zero") != std::string::npos, endless.err);
}

// `--threads last:-1` replayed every thread (stoul wrapped it round), `last:2x` and `last:1e3`
// took the leading digits, and `agent:` with no name selected the threads of every agent.
BOOST_AUTO_TEST_CASE(replay_refuses_selectors_that_do_not_say_what_they_select) {
  ScriptedCalculator calc;
  auto run = calc.cli({"run", calc.agent.string(), "can you multiply 3 and 4", "--json"});
  BOOST_REQUIRE_EQUAL(run.exit_code, 0);
  for (std::string selector : {"last:-1", "last:2x", "last:1e3", "last:0", "last: 1"}) {
    auto bad = calc.cli({"replay", calc.agent.string(), "--threads", selector});
    BOOST_CHECK_EQUAL(bad.exit_code, 2);
    BOOST_CHECK(bad.out.empty());
    BOOST_TEST(bad.err.find("must be a positive integer") != std::string::npos,
               selector + ": " + bad.err);
  }
  auto nobody = calc.cli({"replay", calc.agent.string(), "--threads", "agent:"});
  BOOST_CHECK_EQUAL(nobody.exit_code, 2);
  BOOST_CHECK(nobody.out.empty());
  BOOST_TEST(nobody.err.find("agent:A needs an agent name") != std::string::npos, nobody.err);
  auto fine = calc.cli({"replay", calc.agent.string(), "--threads", "last:5"});
  BOOST_CHECK_EQUAL(fine.exit_code, 0);
}

// The case file's top level and its check functions ran with no CPU limit: a case file with
// an endless loop hung `luagent eval` for good (everything else in Lua has limits.step_cpu_ms).
BOOST_AUTO_TEST_CASE(eval_stops_an_endless_case_file_and_an_endless_check) {
  TempDir dir;
  write_file(dir / "spins.lua", "while true do end\n");
  auto start = std::chrono::steady_clock::now();
  auto spins = run_cli({"eval", (dir / "spins.lua").string()}, dir.path().string(), kCleanEnv);
  BOOST_CHECK_EQUAL(spins.exit_code, 2);
  BOOST_TEST(spins.err.find("loading spins.lua") != std::string::npos, spins.err);
  BOOST_TEST(spins.err.find("step_cpu_ms") != std::string::npos, spins.err);
  write_file(dir / "checks.lua", "return {\n  { name = 'spin', agent = " +
                                     nlohmann::json(calculator().string()).dump() +
                                     ", input = 'hello!',\n    expect = { check = function(step) "
                                     "while true do end end } },\n}\n");
  auto check = run_cli({"eval", (dir / "checks.lua").string()}, dir.path().string(), kCleanEnv);
  BOOST_CHECK_EQUAL(check.exit_code, 1);
  BOOST_TEST(check.out.find("check raised") != std::string::npos, check.out);
  BOOST_TEST(check.out.find("step_cpu_ms") != std::string::npos, check.out);
  BOOST_CHECK(std::chrono::steady_clock::now() - start < 30s);
}
