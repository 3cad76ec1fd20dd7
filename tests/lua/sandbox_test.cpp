// The restricted environment, one named test per attack: each forbidden global or
// trick gives an error naming what was refused, the thread records it, and the
// host stays usable. Also runs the stdlib's Lua test files inside the same sandbox.
#define BOOST_TEST_MODULE sandbox
#include <boost/test/unit_test.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>

#include "luagent/luagent.hpp"
#include "support/test_paths.hpp"

using namespace luagent;

namespace {

struct AgentRun {
  Thread thread;
  std::vector<std::string> log;

  std::string failure() const {
    const Event& last = thread.events.back();
    if (last.type != "failed") return "";
    return last.data.value("message", "") + " [" + last.data.value("code", "") + "]";
  }
};

AgentRun run_agent(const std::string& body, const std::map<std::string, std::string>& files = {},
                   const std::function<void(HostConfig&)>& configure = {}) {
  test::TempDir dir;
  auto folder = dir / "agent";
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "agent.lua") << body;
  for (const auto& [name, text] : files) {
    std::filesystem::create_directories((folder / name).parent_path());
    std::ofstream(folder / name) << text;
  }
  AgentRun run;
  HostConfig config;
  config.store = "sqlite:" + (dir / "t.db").string();
  config.log = [&run](std::string_view level, std::string_view message) {
    run.log.push_back(std::string(level) + ": " + std::string(message));
  };
  if (configure) configure(config);
  Host host(config);
  std::string id = host.launch(folder.string(), Event::user("go"));
  host.run_until_idle();
  run.thread = host.get(id);
  return run;
}

// Runs `expression` inside an agent step and returns the failure it caused.
std::string attempt(const std::string& statement) {
  return run_agent("return function(thread)\n" + statement + "\nend\n").failure();
}

// Runs one agent twice in one host (one Lua state, one set of shared modules): first with
// `first` as the user's input, then with `second`. Returns both threads.
std::pair<Thread, Thread> two_runs_in_one_host(
    const std::string& body, const std::string& first, const std::string& second,
    const std::map<std::string, std::string>& files = {}) {
  test::TempDir dir;
  auto folder = dir / "agent";
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "agent.lua") << body;
  for (const auto& [name, text] : files) std::ofstream(folder / name) << text;
  HostConfig config;
  config.store = "sqlite:" + (dir / "t.db").string();
  Host host(config);
  auto one = host.launch(folder.string(), Event::user(first));
  host.run_until_idle();
  auto two = host.launch(folder.string(), Event::user(second));
  host.run_until_idle();
  return {host.get(one), host.get(two)};
}

bool mentions(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

}  // namespace

BOOST_AUTO_TEST_CASE(io_is_not_there) {
  auto failure = attempt("io.write('x')");
  BOOST_TEST(mentions(failure, "global 'io'"), failure);
}

BOOST_AUTO_TEST_CASE(os_is_not_there) {
  auto failure = attempt("os.execute('touch /tmp/pwned')");
  BOOST_TEST(mentions(failure, "global 'os'"), failure);
}

BOOST_AUTO_TEST_CASE(debug_is_not_there) {
  auto failure = attempt("debug.sethook()");
  BOOST_TEST(mentions(failure, "global 'debug'"), failure);
}

BOOST_AUTO_TEST_CASE(package_is_not_there) {
  auto failure = attempt("package.loadlib('libc.so.6', 'system')");
  BOOST_TEST(mentions(failure, "global 'package'"), failure);
}

BOOST_AUTO_TEST_CASE(dofile_loadfile_collectgarbage_are_not_there) {
  BOOST_TEST(mentions(attempt("dofile('/etc/passwd')"), "global 'dofile'"));
  BOOST_TEST(mentions(attempt("loadfile('/etc/passwd')"), "global 'loadfile'"));
  BOOST_TEST(mentions(attempt("collectgarbage('stop')"), "global 'collectgarbage'"));
}

BOOST_AUTO_TEST_CASE(binary_code_loading_fails) {
  auto failure = attempt("assert(load('\\27Lua\\84\\0'))");
  BOOST_TEST(mentions(failure, "binary chunk"), failure);
  auto mode = attempt("load('return 1', 'x', 'b')");
  BOOST_TEST(mentions(mode, "binary chunks are not allowed"), mode);
}

BOOST_AUTO_TEST_CASE(string_dump_is_not_there) {
  auto failure = attempt("string.dump(function() end)");
  BOOST_TEST(mentions(failure, "'dump'"), failure);
  auto via_metatable = attempt("local s = ''; s.dump(print)");
  BOOST_TEST(mentions(via_metatable, "'dump'"), via_metatable);
}

BOOST_AUTO_TEST_CASE(require_cannot_leave_the_agent_folder) {
  auto dots = attempt("require '../x'");
  BOOST_TEST(mentions(dots, "'../x' is not a module name"), dots);
  auto absolute = attempt("require '/etc/passwd'");
  BOOST_TEST(mentions(absolute, "not a module name"), absolute);
  auto c_module = attempt("require 'socket.core'");
  BOOST_TEST(mentions(c_module, "socket/core.lua"), c_module);
}

BOOST_AUTO_TEST_CASE(require_finds_agent_modules_and_stdlib) {
  auto run = run_agent(
      "local helper = require 'lib.helper'\n"
      "local json = require 'luagent.json'\n"
      "return function(thread) thread:push('out', { v = helper.twice(21), j = json.encode({1}) }) "
      "end\n",
      {{"lib/helper.lua", "return { twice = function(x) return 2 * x end }"}});
  BOOST_TEST(run.thread.status() == Status::done, run.failure());
  BOOST_TEST(run.thread.events[1].data["v"] == 42);
  BOOST_TEST(run.thread.events[1].data["j"] == "[1]");
}

BOOST_AUTO_TEST_CASE(try_trick_global_protection) {
  // The shared library tables are read-only views; the string metatable is hidden.
  auto write = attempt("string.upper = function() return 'pwned' end");
  BOOST_TEST(mentions(write, "cannot change the shared library table"), write);
  auto meta = attempt("getmetatable('').__index.upper = nil");
  BOOST_TEST(mentions(meta, "field '__index'"), meta);
}

BOOST_AUTO_TEST_CASE(runs_do_not_share_globals) {
  test::TempDir dir;
  auto folder = dir / "agent";
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "agent.lua") << "return function(thread)\n"
                                         "  thread:push('seen', { before = counter or 0 })\n"
                                         "  counter = (counter or 0) + 1\n"
                                         "end\n";
  HostConfig config;
  config.store = "sqlite:" + (dir / "t.db").string();
  Host host(config);
  auto a = host.launch(folder.string(), Event::user("a"));
  host.run_until_idle();
  auto b = host.launch(folder.string(), Event::user("b"));
  host.run_until_idle();
  BOOST_TEST(host.get(a).events[1].data["before"] == 0);
  BOOST_TEST(host.get(b).events[1].data["before"] == 0);
}

void limit_cpu_to_200_ms(HostConfig& config) {
  config.step_cpu_ms = 200;
}

BOOST_AUTO_TEST_CASE(cpu_limit_ends_a_runaway_step_even_under_pcall) {
  auto run = run_agent(
      "return function(thread)\n  while true do pcall(function() while true do end end) end\nend\n",
      {}, limit_cpu_to_200_ms);
  BOOST_TEST(run.thread.status() == Status::failed);
  BOOST_TEST(run.thread.events.back().data["code"] == "limit");
}

// Loads an agent whose top level runs away (`top_level`, before its `return`): the launch
// must fail with limit, "loading the agent", and the fixed file load on the next launch.
void expect_runaway_top_level_stopped(const std::string& top_level) {
  test::TempDir dir;
  auto folder = dir / "agent";
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "agent.lua") << top_level << "\nreturn function(thread) end\n";
  HostConfig config;
  config.store = "sqlite:" + (dir / "t.db").string();
  config.step_cpu_ms = 200;
  Host host(config);
  try {
    host.launch(folder.string(), Event::user("spin"));
    BOOST_FAIL("the runaway agent loaded");
  } catch (const Error& e) {
    BOOST_TEST((e.code() == ErrorCode::limit), e.what());
    BOOST_TEST(std::string(e.what()).find("loading the agent") != std::string::npos, e.what());
  }
  std::ofstream(folder / "agent.lua", std::ios::trunc)
      << "return function(thread) thread:push('ok', ('abc'):match('b')) end\n";
  auto id = host.launch(folder.string(), Event::user("again"));
  host.run_until_idle();
  BOOST_TEST(host.get(id).status() == Status::done);
}

// An agent file's top level runs when the agent loads, outside any step: an endless loop
// there is stopped by the same CPU limit, the launch fails with limit, and the fixed file
// loads on the next launch.
BOOST_AUTO_TEST_CASE(cpu_limit_ends_a_runaway_agent_top_level) {
  expect_runaway_top_level_stopped("while true do pcall(function() while true do end end) end");
}

BOOST_AUTO_TEST_CASE(gc_finalizers_are_refused_and_setmetatable_otherwise_works) {
  auto refused = attempt("setmetatable({}, { __gc = function() while true do end end })");
  BOOST_TEST(mentions(refused, "__gc finalizers are not available"), refused);
  auto run = run_agent(R"(return function(thread)
  local v = setmetatable({}, { __index = function(_, k) return k .. "!" end })
  local locked = setmetatable({}, { __metatable = "locked" })
  local ok, err = pcall(setmetatable, locked, {})
  thread:push("seen", { v = v.hi, same = setmetatable(v, nil) == v, protected = not ok,
                        message = tostring(err) })
end)");
  BOOST_REQUIRE(run.thread.status() == Status::done);
  const auto& seen = run.thread.events[1].data;
  BOOST_TEST(seen["v"] == "hi!");
  BOOST_TEST(seen["same"] == true);
  BOOST_TEST(seen["protected"] == true);
  BOOST_TEST(mentions(seen["message"].get<std::string>(), "protected metatable"), seen.dump());
}

// Lua runs an xpcall handler with hooks off when the error came from a hook, as the CPU
// limit's does: the sandbox's xpcall calls the handler after unwinding, under the limit.
BOOST_AUTO_TEST_CASE(cpu_limit_ends_a_runaway_xpcall_handler) {
  auto run = run_agent(
      "return function(thread)\n"
      "  local ok, message = xpcall(function(a, b) error({ code = 'runtime', message = a .. b }) "
      "end,\n"
      "    function(e) return 'handled ' .. e.message end, 'x', 'y')\n"
      "  thread:push('first', { ok = ok, message = message })\n"
      "  thread:push('bad', { pcall(xpcall, print) })\n"
      "  xpcall(function() while true do end end, function() while true do end end)\n"
      "end\n",
      {}, limit_cpu_to_200_ms);
  const Thread& thread = run.thread;
  BOOST_REQUIRE(thread.events.size() >= 4u);
  BOOST_TEST(thread.events[1].data["ok"] == false);
  BOOST_TEST(thread.events[1].data["message"] == "handled xy");
  BOOST_TEST(thread.events[2].data[0] == false);
  BOOST_TEST(mentions(thread.events[2].data[1].get<std::string>(), "bad argument #2 to 'xpcall'"),
             thread.events[2].data.dump());
  BOOST_TEST(thread.status() == Status::failed);
  BOOST_TEST(thread.events.back().data["code"] == "limit");
}

BOOST_AUTO_TEST_CASE(memory_limit_is_an_error_event) {
  test::TempDir dir;
  auto folder = dir / "agent";
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "agent.lua") << "return function(thread)\n  local t = {}\n  for i = 1, "
                                         "1e9 do t[i] = ('x'):rep(1000) .. i end\nend\n";
  HostConfig config;
  config.store = "sqlite:" + (dir / "t.db").string();
  config.memory_mb = 16;
  Host host(config);
  auto id = host.launch(folder.string(), Event::user("eat"));
  host.run_until_idle();
  Thread thread = host.get(id);
  BOOST_TEST(thread.status() == Status::failed);
  BOOST_TEST(thread.events.back().data["code"] == "limit");
  // The host is still usable.
  auto again = host.launch(folder.string(), Event::user("again"));
  host.run_until_idle();
  BOOST_TEST(host.get(again).status() == Status::failed);
}

// print and luagent.log ran __tostring inside the host's exemption from the memory limit:
// there it could allocate without bound, and one that raised skipped the exemption's end,
// so the limit was off for every later step of every agent in the host.
BOOST_AUTO_TEST_CASE(tostring_called_by_print_or_log_stays_under_the_memory_limit) {
  // 64 MiB, four times the limit: bounded, so the test cannot eat the machine if it fails.
  const std::string eat = "local t = {}; for i = 1, 64 do t[i] = ('x'):rep(1 << 20) .. i end";
  auto limited = [](HostConfig& config) { config.memory_mb = 16; };
  for (const char* printer : {"print", "require('luagent.log').info"}) {
    auto inside =
        run_agent("return function(thread)\n  " + std::string(printer) +
                      "(setmetatable({}, { __tostring = function() " + eat + " end }))\nend\n",
                  {}, limited);
    BOOST_TEST(inside.failure().find("[limit]") != std::string::npos, printer << inside.failure());
    auto after = run_agent("return function(thread)\n  pcall(" + std::string(printer) +
                               ", setmetatable({}, { __tostring = function() error('no') end }))\n"
                               "  " +
                               eat + "\nend\n",
                           {}, limited);
    BOOST_TEST(after.failure().find("[limit]") != std::string::npos, printer << after.failure());
  }
  auto printed = run_agent(
      "return function(thread)\n"
      "  print(1, nil, setmetatable({}, { __tostring = function() return 'me' end }))\n"
      "  require('luagent.log').warn('a', 2)\n"
      "end\n");
  BOOST_TEST(printed.log.size() == 2u);
  if (printed.log.size() == 2u) {
    BOOST_TEST(printed.log[0] == "print: 1\tnil\tme");
    BOOST_TEST(printed.log[1] == "warn: a 2");
  }
}

// The memory limit was off while host C++ ran: a module's top level run by require
// filled 1.1 GB under a 64 MiB limit, and json.decode of a 24 MB text of small arrays made
// 1.25 GB of tables. An allocation the limit refused in agent code raised "not enough
// memory", which a pcall swallowed, and the step went on to `done`. Each is now the
// step's failure with `limit`. Bounded (a few times the 16 MiB limit) should it not stop.
// Lua answers a refused allocation with an emergency collection and a second try: a step
// whose garbage (not its live data) reaches the limit must go on, not be marked as over it.
BOOST_AUTO_TEST_CASE(garbage_that_reaches_the_memory_limit_is_collected_not_a_kill) {
  auto limited = [](HostConfig& config) { config.memory_mb = 16; };
  auto run = run_agent(
      "return function(thread)\n"
      "  local n = 0\n"
      "  for i = 1, 200 do local s = ('x'):rep(3 << 20) .. i; n = n + #s end\n"
      "  thread:push('made', n)\nend\n",
      {}, limited);
  BOOST_TEST(run.thread.status() == Status::done, run.failure());
}

BOOST_AUTO_TEST_CASE(the_memory_limit_holds_in_require_json_decode_and_under_pcall) {
  auto limited = [](HostConfig& config) { config.memory_mb = 16; };
  const std::string message = "more than 16 MiB of Lua memory (limits.memory_mb) [limit]";
  auto in_require = run_agent(
      "return function(thread)\n  local t = require 'bomb'\n  thread:push('n', #t)\nend\n",
      {{"bomb.lua", "local t = {}\nfor i = 1, 6e6 do t[i] = i end\nreturn t\n"}}, limited);
  BOOST_TEST(mentions(in_require.failure(), message), in_require.failure());
  auto in_decode = run_agent(
      "return function(thread)\n"
      "  local text = '[' .. string.rep('[],', 1 << 20) .. '[]]'\n"
      "  local t = require('luagent.json').decode(text)\n"
      "  thread:push('n', #t)\nend\n",
      {}, limited);
  BOOST_TEST(mentions(in_decode.failure(), message), in_decode.failure());
  for (std::string eater : {"local s = 'x' while true do s = s .. s end",
                            "require('luagent.json').decode('[' .. string.rep('[],', 1 << "
                            "20) .. '[]]')"}) {
    auto swallowed = run_agent(
        "return function(thread)\n"
        "  local ok, err = pcall(function() " +
            eater +
            " end)\n"
            "  thread:push('went_on', tostring(err))\nend\n",
        {}, limited);
    BOOST_TEST(mentions(swallowed.failure(), message), eater << ": " << swallowed.failure());
    BOOST_TEST(swallowed.thread.events.size() == 2u);  // the step went no further
  }
}

namespace {

// An agent in dir/agent whose one step makes about 200 MB of garbage (200,000 strings of
// 1 KB); returns its folder.
std::filesystem::path write_garbage_maker(const test::TempDir& dir) {
  auto folder = dir / "agent";
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "agent.lua")
      << "return function(thread)\n  local n = 0\n  for i = 1, 200000 do\n"
         "    local s = ('x'):rep(1000) .. i\n    n = n + #s\n  end\n"
         "  thread:push('made', n)\nend\n";
  return folder;
}

}  // namespace

// The host paces the collector between steps; a step that makes much garbage collects it
// as it goes (from the count hook), so the heap stays far below the memory limit.
BOOST_AUTO_TEST_CASE(a_step_making_much_garbage_collects_it_as_it_goes) {
  test::TempDir dir;
  auto folder = write_garbage_maker(dir);
  HostConfig config;
  config.store = "sqlite:" + (dir / "t.db").string();
  Host host(config);  // the default limit, 256 MiB, is above the 200 MB this step makes
  auto peak_rss_kib = [] {
    rusage usage{};
    ::getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss;
  };
  long before = peak_rss_kib();
  auto id = host.launch(folder.string(), Event::user("churn"));
  host.run_until_idle();
  Thread thread = host.get(id);
  BOOST_TEST(thread.status() == Status::done, thread.events.back().data.dump());
  long grown_kib = peak_rss_kib() - before;
#if defined(__SANITIZE_ADDRESS__)
  (void)grown_kib;  // ASan's quarantine keeps freed memory resident: RSS says nothing here
#else
  BOOST_TEST(grown_kib < 64 * 1024, "peak RSS grew by " << grown_kib << " KiB");
#endif
}

// The same step driven by 1 ms pumps: the count hook pauses it at each slice's end, and
// what it owes the collector then is paid from its next slice, not past the deadline. The
// heap must stay as bounded as when the step runs whole. Measured in a forked child, whose
// peak RSS no earlier case has raised.
BOOST_AUTO_TEST_CASE(a_step_making_much_garbage_in_short_pumps_still_collects_it) {
  const pid_t child = ::fork();
  BOOST_REQUIRE_GE(child, 0);
  if (child == 0) {
    int code = 3;
    try {
      test::TempDir dir;
      auto folder = write_garbage_maker(dir);
      HostConfig config;
      config.store = "sqlite:" + (dir / "t.db").string();
      Host host(config);
      rusage usage{};
      ::getrusage(RUSAGE_SELF, &usage);
      const long before_kib = usage.ru_maxrss;
      auto id = host.launch(folder.string(), Event::user("churn"));
      for (int pumps = 0; host.pump(std::chrono::milliseconds(1)) > 0 && pumps < 200000; ++pumps) {
      }
      ::getrusage(RUSAGE_SELF, &usage);
      code = host.get(id).status() != Status::done       ? 2
             : usage.ru_maxrss - before_kib >= 64 * 1024 ? 1
                                                         : 0;
    } catch (...) {
    }
    ::_exit(code);
  }
  int status = 0;
  BOOST_REQUIRE_EQUAL(::waitpid(child, &status, 0), child);
  BOOST_REQUIRE(WIFEXITED(status));
#if defined(__SANITIZE_ADDRESS__)
  BOOST_TEST(WEXITSTATUS(status) != 2);  // RSS says nothing under ASan (see above)
  BOOST_TEST(WEXITSTATUS(status) != 3);
#else
  BOOST_TEST(WEXITSTATUS(status) == 0,
             "exit " << WEXITSTATUS(status) << " (1: peak RSS grew by 64 MiB or more)");
#endif
}

BOOST_AUTO_TEST_CASE(json_conversion_refuses_cycles_and_non_finite_numbers) {
  auto cycle = attempt("local t = {}; t.self = t; thread:push('x', t)");
  BOOST_TEST(mentions(cycle, "contains itself"), cycle);
  auto nan = attempt("thread:push('x', { v = 0/0 })");
  BOOST_TEST(mentions(nan, "NaN"), nan);
  auto deep = attempt(
      "local t = {}; local c = t; for i = 1, 500 do c.n = {}; c = c.n end; "
      "thread:push('x', t)");
  BOOST_TEST(mentions(deep, "deeper than"), deep);
  // The bound holds for a table's scalars too: one at depth 101 was stored, and every
  // later read of the thread (the next step's thread:events()) failed with it.
  auto nest = [](int levels) {
    return "local t = 1; for i = 1, " + std::to_string(levels) +
           " do t = { t } end; thread:push('x', t)";
  };
  auto one_too_deep = attempt(nest(101));
  BOOST_TEST(mentions(one_too_deep, "deeper than 100"), one_too_deep);
  auto deepest = run_agent("return function(thread)\n" + nest(100) +
                           "\nthread:push('read', #thread:events())\nend\n");
  BOOST_TEST(deepest.failure().empty(), deepest.failure());
  // Its other errors said "json.decode: ...", this one did not say whose it was.
  auto decoded = attempt(
      "require('luagent.json').decode(string.rep('[', 500) .. "
      "string.rep(']', 500))");
  BOOST_TEST(mentions(decoded, "json.decode: JSON nested deeper than"), decoded);
  // A number no double holds was nlohmann's out_of_range, which reached the script as an
  // internal error (a bug in luagent) without saying whose it was.
  auto overflow = attempt("require('luagent.json').decode('[1e400]')");
  BOOST_TEST((mentions(overflow, "json.decode: ") && mentions(overflow, "[usage]")), overflow);
  auto fn = attempt("thread:push('x', { f = print })");
  BOOST_TEST(mentions(fn, "no JSON form"), fn);
  // {[2] = 'a', ['2'] = 'b'} used to become {"2": one of them}.
  auto same_key = attempt("thread:push('x', { n = { [2] = 'a', ['2'] = 'b' } })");
  BOOST_TEST(mentions(same_key, "data.n: the keys 2 and \"2\" would both be the JSON key"),
             same_key);
}

// JSON text is UTF-8: a Lua string of other bytes used to reach the store's commit, which
// threw out of the host (and took the turn's other events with it).
BOOST_AUTO_TEST_CASE(bytes_that_are_not_utf8_are_refused_before_the_store) {
  auto value = attempt("thread:push('x', { name = 'caf\\233' })");
  BOOST_TEST(mentions(value, "data.name: not UTF-8 text (byte 0xE9 at offset 3)"), value);
  auto key = attempt("thread:push('x', { ['\\255'] = 1 })");
  BOOST_TEST(mentions(key, "not UTF-8"), key);
  auto run = run_agent(
      "return function(thread)\n"
      "  local call = {}; thread:push('c', call)\n"
      "  local result, err = thread:execute(call, function() return '\\255\\254' end)\n"
      "  local ok, encode_err = pcall(require('luagent.json').encode, '\\128')\n"
      "  thread:push('seen', { err = err, encode = encode_err.message })\n"
      "end\n");
  BOOST_TEST_REQUIRE(run.thread.status() == Status::done, run.failure());
  const auto& seen = run.thread.events[run.thread.events.size() - 2].data;
  BOOST_TEST(mentions(seen["err"].get<std::string>(), "not UTF-8"), seen.dump());
  BOOST_TEST(mentions(seen["encode"].get<std::string>(), "not UTF-8"), seen.dump());
}

// An error message is text luagent writes itself (a failed event, a tool's error): bytes in
// it that are not UTF-8 are replaced, where they used to fail the store's commit
// ("internal error") and leave the thread running with no end.
BOOST_AUTO_TEST_CASE(error_messages_that_are_not_utf8_still_end_the_step) {
  auto failed = attempt("error('bad \\255 byte')");
  BOOST_TEST(mentions(failed, "bad \xEF\xBF\xBD byte [runtime]"), failed);
  auto run = run_agent(
      "return function(thread)\n"
      "  local call = {}; thread:push('c', call)\n"
      "  local result, err = thread:execute(call, function() error('caf\\233', 0) end)\n"
      "  thread:push('seen', { err = err })\n"
      "end\n");
  BOOST_TEST_REQUIRE(run.thread.status() == Status::done, run.failure());
  BOOST_TEST(run.thread.events[3].data["error"] == "caf\xEF\xBF\xBD",
             run.thread.events[3].data.dump());
}

// A mistyped option name listed every thread without a word.
BOOST_AUTO_TEST_CASE(threads_list_refuses_an_unknown_option) {
  auto mistyped = attempt("require('luagent.threads').list({ staus = 'done' })");
  BOOST_TEST(mistyped == "threads.list: unknown option 'staus' (status, agent, limit) [usage]");
}

// `internal` is for bugs in luagent (docs/errors.md); an agent's own error table said it and
// was recorded so.
BOOST_AUTO_TEST_CASE(an_agent_cannot_raise_an_internal_error) {
  auto forged = attempt("error({ code = 'internal', message = 'forged' })");
  BOOST_TEST(forged == "forged [runtime]");
  auto usage = attempt("error({ code = 'usage', message = 'mine' })");
  BOOST_TEST(usage == "mine [usage]");
}

// The host read an error table with lua_getfield: an __index that raised there (on a step's
// dead coroutine, nothing protecting it) aborted the host; one that looped stalled it for
// good, outside any step's CPU limit. In a tool, the raise skipped recording the result.
BOOST_AUTO_TEST_CASE(an_error_object_whose_index_raises_or_loops_fails_only_its_step) {
  auto raising = attempt("error(setmetatable({}, { __index = function() error('boom') end }))");
  BOOST_TEST(mentions(raising, "error object without message [runtime]"), raising);
  auto looping = attempt("error(setmetatable({}, { __index = function() while true do end end }))");
  BOOST_TEST(mentions(looping, "error object without message [runtime]"), looping);
  auto run = run_agent(
      "return function(thread)\n"
      "  local call = {}; thread:push('c', call)\n"
      "  local trap = setmetatable({ message = 'tool broke' },\n"
      "                            { __index = function() error('boom') end })\n"
      "  local result, err = thread:execute(call, function() error(trap) end)\n"
      "  thread:push('seen', { err = err })\n"
      "end\n");
  BOOST_TEST_REQUIRE(run.thread.status() == Status::done, run.failure());
  BOOST_TEST(run.thread.events[3].type == "tool_response");
  BOOST_TEST(run.thread.events[3].data["error"] == "tool broke", run.thread.events[3].data.dump());
}

// A tool that called thread:await had its result appended after the await: the step ended
// with the thread neither paused nor done ("running" with no step), and nothing could
// resume it.
BOOST_AUTO_TEST_CASE(await_inside_a_tool_is_refused_and_the_tool_result_recorded) {
  auto run = run_agent(
      "return function(thread)\n"
      "  local call = { x = 1 }; thread:push('c', call)\n"
      "  local result, err = thread:execute(call, function(c)\n"
      "    thread:await('human', c)\n"
      "    return 1\n"
      "  end)\n"
      "  return thread:await('human', { err = err })\n"
      "end\n");
  BOOST_TEST_REQUIRE(run.thread.status() == Status::awaiting_human, run.failure());
  const Event& response = run.thread.events[3];
  BOOST_TEST(response.type == "tool_response");
  BOOST_TEST(mentions(response.data.value("error", ""), "called inside a tool"),
             response.data.dump());
  BOOST_TEST(run.thread.events.size() == 5u);
}

// The same refusal for a tool paused in a coroutine of the agent's: its result would
// still come after the await. The message used to say the await was inside the tool.
BOOST_AUTO_TEST_CASE(await_beside_a_tool_paused_in_a_coroutine_is_refused_plainly) {
  auto run = run_agent(
      "return function(thread)\n"
      "  local call = { x = 1 }; thread:push('c', call)\n"
      "  local co = coroutine.create(function()\n"
      "    return thread:execute(call, function(c) coroutine.yield(); return 1 end)\n"
      "  end)\n"
      "  assert(coroutine.resume(co))\n"
      "  local ok, err = pcall(thread.await, thread, 'human', {})\n"
      "  thread:push('refused', { err = tostring(err) })\n"
      "  assert(coroutine.resume(co))\n"
      "end\n");
  BOOST_TEST_REQUIRE(run.thread.status() == Status::done, run.failure());
  std::string said;
  for (const Event& event : run.thread.events)
    if (event.type == "refused") said = event.data.value("err", "");
  BOOST_TEST(mentions(said, "or while such a tool is paused in a coroutine"), said);
}

// llm.* read opts.stream with lua_getfield: an __index on opts ran agent code that could
// raise over the request the call held, leaking it (outside the memory limit) every time.
BOOST_AUTO_TEST_CASE(llm_options_are_read_raw_so_no_index_runs_over_the_request) {
  auto failure = attempt(
      "local trap = setmetatable({}, { __index = function() error('trap ran') end })\n"
      "local _, e = pcall(require('luagent.llm').text, 'hi', trap)\n"
      "error(e)");
  BOOST_TEST(mentions(failure, "no LLM provider is configured"), failure);
}

BOOST_AUTO_TEST_CASE(thread_api_misuse_is_a_clear_error) {
  BOOST_TEST(mentions(attempt("thread:await('maybe')"), "kind must be \"human\" or \"approval\""));
  BOOST_TEST(
      mentions(attempt("thread:execute({ intent = 'x' }, print)"), "not an event of this thread"));
  auto after_await = attempt("thread:await('human'); thread:push('x', 1)");
  BOOST_TEST(mentions(after_await, "thread is waiting"), after_await);
  BOOST_TEST(mentions(attempt("thread.push('x', 1)"), "call it as a method"));
  BOOST_TEST(mentions(attempt("coroutine.yield()"), "yielded outside a coroutine"));
}

// A pushed `done` ended the thread in the middle of its step, a pushed tool_started forged
// exactly-once bookkeeping; thread:execute's argument errors were tables that printed as
// "table: 0x...".
BOOST_AUTO_TEST_CASE(push_refuses_the_types_the_host_writes_and_execute_names_bad_arguments) {
  auto done = attempt("thread:push('done', { message = 'hi' })");
  BOOST_TEST(mentions(done, "thread:push: 'done' events are written by luagent itself; use return"),
             done);
  auto started = attempt("thread:push('tool_started', { call = 1 })");
  BOOST_TEST(mentions(started, "use thread:execute(call, fn)"), started);
  // "done\0x" printed as "done", and the sqlite3 shell read it so.
  auto nul = attempt("thread:push('done\\0x', 1)");
  BOOST_TEST(mentions(nul, "thread:push: the event type contains a NUL byte [usage]"), nul);
  auto run = run_agent(
      "return function(thread)\n"
      "  local call = {}; thread:push('c', call)\n"
      "  local ok, err = pcall(thread.execute, thread, call, nil)\n"
      "  local ok2, err2 = pcall(thread.execute, thread, call, print, 'idempotent')\n"
      "  thread:push('seen', { tostring(err), err.code, tostring(err2) })\n"
      "end\n");
  BOOST_TEST_REQUIRE(run.thread.status() == Status::done, run.failure());
  const auto& seen = run.thread.events[2].data;
  BOOST_TEST(seen[0] == "thread:execute: argument #2 (fn) must be a function, got nil [usage]",
             seen.dump());
  BOOST_TEST(seen[1] == "usage");
  BOOST_TEST(mentions(seen[2].get<std::string>(), "argument #3 (options) must be a table"),
             seen.dump());
}

BOOST_AUTO_TEST_CASE(tool_errors_are_recorded_not_fatal) {
  auto run = run_agent(
      "return function(thread)\n"
      "  local call = { intent = 'divide', a = 1, b = 0 }\n"
      "  thread:push('divide', call)\n"
      "  local result, err = thread:execute(call, function(c) error('cannot divide by zero') end)\n"
      "  thread:push('seen', { err = err })\n"
      "end\n");
  BOOST_TEST(run.thread.status() == Status::done, run.failure());
  const auto& response = run.thread.events[3];
  BOOST_TEST(response.type == "tool_response");
  BOOST_TEST(mentions(response.data["error"].get<std::string>(), "cannot divide by zero"));
}

// The stdlib's own Lua tests (tests/lua/*_test.lua), run as agents in the sandbox.
BOOST_AUTO_TEST_CASE(stdlib_lua_tests_pass_inside_the_sandbox) {
  auto lua_dir = test::source_dir() / "tests/lua";
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(lua_dir)) {
    auto name = entry.path().filename().string();
    if (entry.path().extension() != ".lua" || name.find("_test.lua") == std::string::npos) continue;
    ++files;
    std::ifstream testing(lua_dir / "testing.lua"), file(entry.path());
    std::string testing_source((std::istreambuf_iterator<char>(testing)), {});
    std::string test_source((std::istreambuf_iterator<char>(file)), {});
    std::string module = entry.path().stem().string();
    auto run = run_agent("return function(thread) require '" + module + "' end\n",
                         {{"testing.lua", testing_source}, {name, test_source}});
    std::string log;
    for (const auto& line : run.log) log += line + "\n";
    BOOST_TEST(run.thread.status() == Status::done, name << ": " << run.failure() << "\n" << log);
    BOOST_TEST(mentions(log, " 0 failed"), name << " printed no summary:\n" << log);
  }
  BOOST_TEST(files >= 2);
}

BOOST_AUTO_TEST_CASE(shared_modules_are_read_only_to_agents) {
  auto failure = attempt("require('luagent.json').encode = function() return 'pwned' end");
  BOOST_TEST(mentions(failure, "cannot change the shared library table"), failure);
}

// A shared module's nested tables are as shared as the module: one run must not change
// them under another (luagent.context.HIDDEN decides what every run's model sees).
BOOST_AUTO_TEST_CASE(tables_inside_shared_modules_are_read_only_too) {
  auto write = attempt("require('luagent.context').HIDDEN.llm_call = false");
  BOOST_TEST(mentions(write, "cannot change the shared library table"), write);
  auto deeper = attempt(
      "local t = setmetatable({}, { __index = require('luagent.context') })\n"
      "t.HIDDEN.done = false");
  BOOST_TEST(mentions(deeper, "cannot change the shared library table"), deeper);

  // One run writes around the view (rawset on it); the next run of the same host reads.
  auto [writer, read] = two_runs_in_one_host(
      "local context = require 'luagent.context'\n"
      "return function(thread)\n"
      "  if thread:last('user_input').data == 'write' then\n"
      "    rawset(context.HIDDEN, 'llm_call', false)\n"
      "    rawset(context.HIDDEN, 'mine', true)\n"
      "    return\n"
      "  end\n"
      "  local n = 0\n"
      "  for type, hidden in pairs(context.HIDDEN) do\n"
      "    if hidden then n = n + 1 end\n"
      "  end\n"
      "  local listed\n"
      "  for key, value in pairs(context) do\n"
      "    if key == 'HIDDEN' then listed = value end\n"
      "  end\n"
      "  local ok = pcall(function() listed.done = false end)\n"
      "  thread:push('read', { llm_call = context.HIDDEN.llm_call,\n"
      "                        mine = context.HIDDEN.mine or false, n = n,\n"
      "                        same = context.HIDDEN == context.HIDDEN,\n"
      "                        listed_same = listed == context.HIDDEN,\n"
      "                        listed_writable = ok, length = #context.HIDDEN })\n"
      "end\n",
      "write", "read");
  BOOST_TEST(writer.status() == Status::done);
  BOOST_TEST_REQUIRE(read.status() == Status::done);
  const auto& data = read.events[1].data;
  BOOST_TEST(data["llm_call"] == true);  // the writer changed only its own view
  BOOST_TEST(data["mine"] == false);
  BOOST_TEST(data["n"].get<int>() >= 5);
  BOOST_TEST(data["same"] == true);
  BOOST_TEST(data["listed_same"] == true);  // pairs() hands out the same view
  BOOST_TEST(data["listed_writable"] == false);
  BOOST_TEST(data["length"] == 0);
}

// A shared module's state set by one run must not reach the next: a tokenizer installed by
// one agent would run its code inside another's step.
BOOST_AUTO_TEST_CASE(a_tokenizer_one_run_installs_stays_in_that_run) {
  auto [installer, other] = two_runs_in_one_host(
      "local context = require 'luagent.context'\n"
      "return function(thread)\n"
      "  if thread:last('user_input').data == 'install' then\n"
      "    context.set_tokenizer(function() return 1000 end)\n"
      "  end\n"
      "  thread:push('counted', { tokens = context.tokens('abcdefgh') })\n"
      "end\n",
      "install", "count");
  BOOST_TEST(installer.events[1].data["tokens"] == 1000);
  BOOST_TEST(other.events[1].data["tokens"] == 2);  // the estimate: 8 chars / 4
}

// Likewise a prompt loader: one agent's must never read (or forge) another's prompt files,
// nor may what it read be served from the cache to a run without it.
BOOST_AUTO_TEST_CASE(a_prompt_loader_one_run_installs_stays_in_that_run) {
  auto [forger, other] = two_runs_in_one_host(
      "local prompt = require 'luagent.prompt'\n"
      "return function(thread)\n"
      "  if thread:last('user_input').data == 'forge' then\n"
      "    prompt.set_loader(function(path) return 'forged {{ who }}', 1 end)\n"
      "  end\n"
      "  thread:push('rendered', { text = prompt.file('hello.prompt') { who = 'x' } })\n"
      "end\n",
      "forge", "read", {{"hello.prompt", "real {{ who }}"}});
  BOOST_TEST(forger.events[1].data["text"] == "forged x");
  BOOST_TEST(other.events[1].data["text"] == "real x");
}

// The metatables of host errors, JSON arrays, prompt errors and templates are shared by
// every run, and getmetatable handed them out: one run could give every other run's
// objects its own __tostring or render, or a __gc (agent code outside any CPU limit,
// which stalled the host for good).
BOOST_AUTO_TEST_CASE(shared_metatables_are_out_of_an_agents_reach) {
  auto [spoiler, victim] = two_runs_in_one_host(
      "local json, prompt = require 'luagent.json', require 'luagent.prompt'\n"
      "local function samples()\n"
      "  local _, host_error = pcall(json.decode, 'x')\n"
      "  local _, prompt_error = pcall(prompt.template, '{{')\n"
      "  return { host_error = host_error, array = json.decode('[1]'),\n"
      "           prompt_error = prompt_error, template = prompt.template('t') }\n"
      "end\n"
      "return function(thread)\n"
      "  local spoiled = {}\n"
      "  for name, object in pairs(samples()) do\n"
      "    if thread:last('user_input').data == 'spoil' then\n"
      "      spoiled[name] = pcall(function()\n"
      "        local meta = getmetatable(object)\n"
      "        meta.__tostring = function() return 'spoiled' end\n"
      "        meta.render = function() return 'spoiled' end\n"
      "      end)\n"
      "      spoiled[name .. '_guard'] = pcall(setmetatable, object, nil)\n"
      "    else\n"
      "      spoiled[name] = tostring(getmetatable(object))\n"
      "    end\n"
      "  end\n"
      "  local _, host_error = pcall(json.decode, 'x')\n"
      "  spoiled.host_error_text = tostring(host_error)\n"
      "  spoiled.rendered = prompt.template('fine'):render()\n"
      "  thread:push('seen', spoiled)\n"
      "end\n",
      "spoil", "look");
  BOOST_TEST_REQUIRE(spoiler.status() == Status::done, spoiler.events.back().data.dump());
  for (const char* name : {"host_error", "array", "prompt_error", "template"}) {
    BOOST_TEST(spoiler.events[1].data[name] == false, name);
    BOOST_TEST(spoiler.events[1].data[std::string(name) + "_guard"] == false, name);
  }
  BOOST_TEST_REQUIRE(victim.status() == Status::done);
  const auto& seen = victim.events[1].data;
  BOOST_TEST(seen["host_error"] == "luagent.error");
  BOOST_TEST(seen["array"] == "luagent.json.array");
  BOOST_TEST(seen["prompt_error"] == "luagent.error");
  BOOST_TEST(seen["template"] == "luagent.prompt.template");
  BOOST_TEST(seen["host_error_text"].get<std::string>().find("spoiled") == std::string::npos);
  BOOST_TEST(seen["rendered"] == "fine");
}

// Three ways one run reached what every run shares, to change it for the runs after it:
// getmetatable(_G) gave the shared base environment (and through it the real string
// table); pairs() on a read-only view returned the shared table itself as its state; and
// load() at an agent file's top level, when the agent first loads (no run yet), put the
// chunk's globals in the base.
BOOST_AUTO_TEST_CASE(a_run_cannot_reach_the_shared_base_or_libraries) {
  auto [spoiler, victim] = two_runs_in_one_host(
      "local context = require 'luagent.context'\n"
      "load('LOADS = (LOADS or 0) + 1')()  -- once per run, in that run's globals\n"
      "return function(thread)\n"
      "  local seen = { base = tostring(SHARED), leak = tostring(string.leak),\n"
      "    via_pairs = tostring(string.leak2), xml = tostring(context.xml == context.xml_ok),\n"
      "    loads = LOADS, metatable = tostring(getmetatable(_G)) }\n"
      "  if thread:last('user_input').data == 'spoil' then\n"
      "    seen.base_write = pcall(function()\n"
      "      local base = getmetatable(_G).__index\n"
      "      base.SHARED = 'set'\n"
      "      base.string.leak = 'leaked'\n"
      "    end)\n"
      "    seen.swap = pcall(setmetatable, _G, { __index = function() return 'mine' end })\n"
      "    seen.pairs_write = pcall(function()\n"
      "      local _, shared = pairs(context)\n"
      "      shared.xml_ok = context.xml\n"
      "      local _, lib = pairs(string)\n"
      "      lib.leak2 = 'via pairs'\n"
      "    end)\n"
      "  end\n"
      "  local keys = 0\n"
      "  for name, value in pairs(string) do keys = keys + 1 end\n"
      "  seen.string_keys = keys > 10\n"
      "  thread:push('seen', seen)\n"
      "end\n",
      "spoil", "look");
  BOOST_TEST_REQUIRE(spoiler.status() == Status::done, spoiler.events.back().data.dump());
  const auto& tried = spoiler.events[1].data;
  BOOST_TEST(tried["base_write"] == false);
  BOOST_TEST(tried["swap"] == false);
  BOOST_TEST(tried["pairs_write"] == false);
  BOOST_TEST(tried["string_keys"] == true);  // pairs still walks the library
  BOOST_TEST(tried["metatable"] == "false");
  BOOST_TEST_REQUIRE(victim.status() == Status::done, victim.events.back().data.dump());
  const auto& seen = victim.events[1].data;
  BOOST_TEST(seen["base"] == "nil");
  BOOST_TEST(seen["leak"] == "nil");
  BOOST_TEST(seen["via_pairs"] == "nil");
  BOOST_TEST(seen["xml"] == "false");
  BOOST_TEST(seen["loads"] == 1);  // not also in the base, from the agent's first load
}

// prompt.file's compiled files are cached in the module, which every run shares, under a
// key naming the opts.filters table by address, and each entry held that table: an agent
// calling prompt.file(path, { filters = ... }) at its top level (a fresh table each step)
// left one compiled copy per step behind, until every agent in the host was out of memory.
BOOST_AUTO_TEST_CASE(templates_with_filters_made_afresh_leave_no_cache_behind) {
  auto run = run_agent(
      "local prompt = require 'luagent.prompt'\n"
      "return function(thread)\n"
      "  for i = 1, 10000 do\n"
      "    local filters = { same = function(v) return v end }\n"
      "    assert(prompt.file('p.prompt', { filters = filters }) { x = 'x' } == 'x')\n"
      "  end\n"
      "end\n",
      {{"p.prompt", "{{ x | same }}"}}, [](HostConfig& config) { config.memory_mb = 4; });
  BOOST_TEST(run.thread.status() == Status::done, run.failure());
  // Nor do the endless spellings of one path: each was a cache entry for good.
  auto spelled = run_agent(
      "local prompt = require 'luagent.prompt'\n"
      "return function(thread)\n"
      "  for i = 1, 2000 do\n"
      "    assert(prompt.file(('./'):rep(i) .. 'p.prompt') { x = 'x' } == 'x')\n"
      "  end\n"
      "end\n",
      {{"p.prompt", "{{ x }}"}}, [](HostConfig& config) { config.memory_mb = 4; });
  BOOST_TEST(spelled.thread.status() == Status::done, spelled.failure());
}

BOOST_AUTO_TEST_CASE(agent_modules_with_one_name_stay_per_agent) {
  // Two agents each with their own tools.lua: loading one must not hand it to the other.
  test::TempDir dir;
  for (const char* name : {"first", "second"}) {
    auto folder = dir / name;
    std::filesystem::create_directories(folder);
    std::ofstream(folder / "tools.lua") << "return { name = '" << name << "' }";
    std::ofstream(folder / "agent.lua")
        << "local tools = require 'tools'\n"
           "return function(thread) thread:push('tools', { name = tools.name }) end\n";
  }
  HostConfig config;
  config.store = "sqlite:" + (dir / "t.db").string();
  Host host(config);
  auto a = host.launch((dir / "first").string(), Event::user("a"));
  auto b = host.launch((dir / "second").string(), Event::user("b"));
  host.run_until_idle();
  BOOST_TEST(host.get(a).events[1].data["name"] == "first");
  BOOST_TEST(host.get(b).events[1].data["name"] == "second");
}

// agent.lua and its modules compile once per version and run once per run: each run gets
// fresh top-level locals, its own globals, and `...` as Lua gives it (nothing for the
// agent file, the module's name for a module).
BOOST_AUTO_TEST_CASE(agent_files_compiled_once_still_run_fresh_in_each_run) {
  auto [one, two] = two_runs_in_one_host(
      "local counter = require 'counter'\n"
      "local steps, args = 0, select('#', ...)\n"
      "greeting = (greeting or '') .. 'hi'\n"
      "return function(thread)\n"
      "  steps = steps + 1\n"
      "  thread:push('seen', { steps = steps, bumps = counter.bump(), module_globals = "
      "counter.globals(),\n"
      "    greeting = greeting, args = args, module_name = counter.name, env_is_G = "
      "rawequal(_ENV, _G) })\n"
      "end\n",
      "a", "b",
      {{"counter.lua",
        "local name = ...\n"
        "local n = 0\n"
        "module_loads = (module_loads or 0) + 1\n"
        "return { name = name, bump = function() n = n + 1 return n end,\n"
        "         globals = function() return module_loads end }\n"}});
  for (const Thread* thread : {&one, &two}) {
    BOOST_TEST_REQUIRE(thread->status() == Status::done, thread->events.back().data.dump());
    const auto& seen = thread->events[1].data;
    BOOST_TEST(seen["steps"] == 1);
    BOOST_TEST(seen["bumps"] == 1);
    BOOST_TEST(seen["module_globals"] == 1);
    BOOST_TEST(seen["greeting"] == "hi");
    BOOST_TEST(seen["args"] == 0);
    BOOST_TEST(seen["module_name"] == "counter");
    BOOST_TEST(seen["env_is_G"] == true);
  }
}

// A module's compiled chunk is kept by its content: an edit between two launches is what
// the second run requires, and going back to the first text serves the first again.
BOOST_AUTO_TEST_CASE(an_edited_agent_module_is_compiled_again) {
  test::TempDir dir;
  auto folder = dir / "agent";
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "agent.lua")
      << "return function(thread) thread:push('word', require 'word') end\n";
  HostConfig config;
  config.store = "sqlite:" + (dir / "t.db").string();
  Host host(config);
  std::vector<std::string> seen;
  for (const char* word : {"first", "second", "first"}) {
    std::ofstream(folder / "word.lua") << "return '" << word << "'\n";
    auto id = host.launch(folder.string(), Event::user("go"));
    host.run_until_idle();
    seen.push_back(host.get(id).events.at(1).data.get<std::string>());
  }
  BOOST_TEST(seen == (std::vector<std::string>{"first", "second", "first"}),
             boost::test_tools::per_element());
}

// Errors name the file's own lines, the first included, and a missing global is a global.
BOOST_AUTO_TEST_CASE(errors_in_agent_files_name_the_files_own_lines) {
  // A file that fails to load fails the launch.
  auto load_error = [](const std::string& body, const std::map<std::string, std::string>& files) {
    try {
      run_agent(body, files);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(loaded)");
  };
  auto top = load_error("nope()\nreturn function(thread) end\n", {});
  BOOST_TEST(mentions(top, "agent.lua:1:"), top);
  BOOST_TEST(mentions(top, "global 'nope'"), top);
  auto module = load_error("local helper = require 'helper'\nreturn function(thread) end\n",
                           {{"helper.lua", "local x = 1\n\nerror('broken helper')\n"}});
  BOOST_TEST(mentions(module, "helper.lua:3:"), module);
  BOOST_TEST(mentions(module, "broken helper"), module);
  auto syntax =
      run_agent("return function(thread)\nend\n", {{"helper.lua", "x = = 1\n"}}).failure();
  BOOST_TEST(syntax.empty(), syntax);  // never required: never compiled
  auto required = run_agent("return function(thread) require 'helper' end\n",
                            {{"helper.lua", "return 1\nx = = 1\n"}});
  const auto& failed = required.thread.events.back().data;
  BOOST_TEST(failed.value("source", "") == "helper.lua", failed.dump());
  BOOST_TEST(failed.value("line", 0) == 2, failed.dump());
  BOOST_TEST(failed.value("code", "") == "syntax", failed.dump());
}

BOOST_AUTO_TEST_CASE(schemas_compile_once_and_show_their_json) {
  auto run = run_agent(
      "local llm = require 'luagent.llm'\n"
      "return function(thread)\n"
      "  local a = llm.one_of { add = { a = 'number' } }\n"
      "  local b = llm.one_of { add = { a = 'number' } }\n"
      "  local s = llm.schema { name = 'string' }\n"
      "  thread:push('schemas', { same = tostring(a) == tostring(b), one_of = a:json(),\n"
      "                           record = s:json(), kind = type(s) })\n"
      "end\n");
  BOOST_TEST_REQUIRE(run.thread.status() == Status::done, run.failure());
  const auto& data = run.thread.events[1].data;
  BOOST_TEST(data["same"] == true);
  BOOST_TEST(data["kind"] == "userdata");
  BOOST_TEST(data["one_of"]["oneOf"][0]["properties"]["intent"]["const"] == "add");
  BOOST_TEST(data["record"]["properties"]["name"]["type"] == "string");
  auto bad = attempt("require('luagent.llm').schema { a = 'nubmer' }");
  BOOST_TEST(mentions(bad, "nubmer"), bad);
}

// Schemas are remembered per table, but a table changed between calls (an intent added,
// a field's type edited, a key removed again) must give the schema of what it holds now.
BOOST_AUTO_TEST_CASE(a_schema_table_changed_between_calls_is_compiled_again) {
  auto run = run_agent(
      "local llm = require 'luagent.llm'\n"
      "return function(thread)\n"
      "  local intents = { add = { a = 'number' } }\n"
      "  local first, again = llm.one_of(intents), llm.one_of(intents)\n"
      "  intents.sub = { a = 'number' }\n"
      "  local added = llm.one_of(intents)\n"
      "  intents.sub = nil\n"
      "  local removed = llm.one_of(intents)\n"
      "  intents.add.a = 'string'\n"
      "  local edited = llm.one_of(intents)\n"
      "  local record = { name = 'string' }\n"
      "  local before = llm.schema(record)\n"
      "  record.age = 'integer?'\n"
      "  local after = llm.schema(record)\n"
      "  thread:push('schemas', { reused = rawequal(first, again), first = first:json(),\n"
      "    added = added:json(), removed = removed:json(), edited = edited:json(),\n"
      "    before = before:json(), after = after:json(), same = rawequal(llm.schema(after), after) "
      "})\n"
      "  local ok, err = pcall(llm.one_of, { add = { a = 'nubmer' } })\n"
      "  intents.add.a = 'nubmer'\n"
      "  local ok2, err2 = pcall(llm.one_of, intents)\n"
      "  thread:push('errors', { ok = ok, message = err.message, ok2 = ok2, message2 = "
      "err2.message })\n"
      "end\n");
  BOOST_TEST_REQUIRE(run.thread.status() == Status::done, run.failure());
  const auto& data = run.thread.events[1].data;
  BOOST_TEST(data["reused"] == true);
  BOOST_TEST(data["same"] == true);
  BOOST_TEST(data["first"]["oneOf"].size() == 1u);
  BOOST_TEST(data["added"]["oneOf"].size() == 2u);
  BOOST_TEST(data["removed"] == data["first"]);
  BOOST_TEST(data["edited"]["oneOf"][0]["properties"]["a"]["type"] == "string");
  BOOST_TEST(data["before"]["properties"].size() == 1u);
  BOOST_TEST(data["after"]["properties"]["age"]["type"] ==
             nlohmann::json::parse(R"(["integer","null"])"));
  const auto& errors = run.thread.events[2].data;
  BOOST_TEST(errors["ok"] == false);
  BOOST_TEST(errors["ok2"] == false);
  BOOST_TEST(errors["message"].get<std::string>().find("intents.add.a: unknown type 'nubmer'") !=
             std::string::npos);
  BOOST_TEST(errors["message2"] == errors["message"]);
}

// Lua's string.find is one C call the count hook cannot interrupt: ".-.-.-.-x" on 400 a's is
// O(n^5) backtracking (hours). Ours looks at the step's CPU as it goes: the step fails with
// limit, a pcall cannot swallow that, and the host goes on serving another thread.
BOOST_AUTO_TEST_CASE(pattern_backtracking_bomb_fails_the_step_with_limit) {
  test::TempDir dir;
  auto bomb = dir / "bomb";
  auto fine = dir / "fine";
  std::filesystem::create_directories(bomb);
  std::filesystem::create_directories(fine);
  std::ofstream(bomb / "agent.lua") << "return function(thread)\n"
                                       "  local s = string.rep('a', 400)\n"
                                       "  pcall(function() return s:find('.-.-.-.-x') end)\n"
                                       "  thread:push('swallowed', true)\n"
                                       "end\n";
  std::ofstream(fine / "agent.lua") << "return function(thread) thread:push('ok', true) end\n";
  HostConfig config;
  config.store = "sqlite:" + (dir / "t.db").string();
  config.step_cpu_ms = 200;
  Host host(config);
  const auto started = std::chrono::steady_clock::now();
  std::string bombed = host.launch(bomb.string(), Event::user("go"));
  std::string served = host.launch(fine.string(), Event::user("go"));
  host.run_until_idle();
  const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started);
  Thread thread = host.get(bombed);
  BOOST_TEST(thread.status() == Status::failed);
  BOOST_TEST(thread.events.back().data["code"] == "limit", thread.events.back().data.dump());
  for (const Event& event : thread.events) BOOST_TEST(event.type != "swallowed");
  BOOST_TEST(host.get(served).status() == Status::done);
  BOOST_TEST(seconds.count() < 60.0);  // a generous bound; Lua's own matcher takes hours
}

// Plain find is linear (memmem) and metered. Each search here costs milliseconds and the loop
// runs about 2000 of them between two of the count hook's looks at the clock, so unmetered
// searches would run seconds past the limit; metered, the step ends near its 200 ms.
BOOST_AUTO_TEST_CASE(plain_find_bomb_fails_the_step_with_limit) {
  rusage before{};
  ::getrusage(RUSAGE_SELF, &before);
  auto run = run_agent(
      "return function(thread)\n"
      "  local hay, needle = ('a'):rep(2e6), ('a'):rep(1e6) .. 'b'\n"
      "  thread:push('once', { hay:find(needle, 1, true) == nil })\n"
      "  for _ = 1, 1e6 do pcall(string.find, hay, needle, 1, true) end\n"
      "  thread:push('swallowed', true)\n"
      "end\n",
      {}, limit_cpu_to_200_ms);
  rusage after{};
  ::getrusage(RUSAGE_SELF, &after);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  const double cpu_seconds = seconds(after.ru_utime) + seconds(after.ru_stime) -
                             seconds(before.ru_utime) - seconds(before.ru_stime);
  BOOST_TEST(run.thread.status() == Status::failed);
  BOOST_TEST(run.thread.events.back().data["code"] == "limit");
  BOOST_REQUIRE(run.thread.events.size() >= 3u);
  BOOST_TEST(run.thread.events[1].type == "once");
  BOOST_TEST(run.thread.events[1].data[0] == true);
  for (const Event& event : run.thread.events) BOOST_TEST(event.type != "swallowed");
  // A bound far above the limit, for shared machines; unmetered searches cost several seconds.
  BOOST_TEST(cpu_seconds < 2.0, "the step used " << cpu_seconds << " s of CPU");
}

// The same bomb at an agent file's top level (outside any step, even under pcall) fails the
// load with limit.
BOOST_AUTO_TEST_CASE(pattern_bomb_at_an_agent_top_level_fails_the_load_with_limit) {
  expect_runaway_top_level_stopped("pcall(string.match, string.rep('a', 400), '.-.-.-.-x')");
}
