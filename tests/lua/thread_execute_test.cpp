// thread:execute of a call whose tool is still running — again from inside that tool, or
// while the coroutine running it is suspended: a usage error naming the call, and the
// running tool's result recorded once when it returns.
#define BOOST_TEST_MODULE thread_execute
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <string>

#include "luagent/luagent.hpp"
#include "support/test_paths.hpp"

using namespace luagent;

namespace {

// Each section pushes a call, starts its tool, and asks for the same call again while the
// tool runs; what the second thread:execute gave is pushed as an event.
constexpr const char* kAgent = R"(
local function outcome(ok, result, err)
  if ok then return { accepted = true, result = result, error = err } end
  return { code = result.code, message = result.message }
end

return function(thread)
  -- Again from inside the tool.
  local step = { a = 1, b = 2 }
  thread:push("add", step)
  local inner
  local sum = thread:execute(step, function(call)
    inner = outcome(pcall(thread.execute, thread, step, function() return "again" end))
    return call.a + call.b
  end)
  thread:push("nested", { sum = sum, inner = inner })

  -- The same, for a tool declared idempotent (which a crash lets run again).
  local retry = { a = 10, b = 20 }
  thread:push("add", retry)
  local inner_retry
  local retry_sum = thread:execute(retry, function(call)
    inner_retry = outcome(pcall(thread.execute, thread, retry, function() return "again" end,
                                { idempotent = true }))
    return call.a + call.b
  end, { idempotent = true })
  thread:push("nested_idempotent", { sum = retry_sum, inner = inner_retry })

  -- From the agent, while the coroutine running the tool is suspended.
  local other = { a = 3, b = 4 }
  thread:push("add", other)
  local co = coroutine.create(function()
    return thread:execute(other, function(call)
      coroutine.yield("paused")
      return call.a + call.b
    end)
  end)
  local _, paused = coroutine.resume(co)
  local meanwhile = outcome(pcall(thread.execute, thread, other, function() return "twice" end))
  local _, result = coroutine.resume(co)
  thread:push("suspended", { paused = paused, result = result, meanwhile = meanwhile })

  -- Once recorded, the call gives its recorded result, as for any call.
  thread:push("recorded", thread:execute(other, function() return "third" end))
end)";

bool mentions(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

// Runs one step of an agent made of `source` on a fresh SQLite store; returns its thread.
Thread run_one_step(const std::string& source) {
  test::TempDir dir;
  std::filesystem::create_directories(dir / "agent");
  std::ofstream(dir / "agent" / "agent.lua") << source;
  HostConfig config;
  config.store = "sqlite:" + (dir / "t.db").string();
  config.log = [](std::string_view, std::string_view) {};
  Host host(config);
  auto id = host.launch((dir / "agent").string(), Event::user("go"));
  host.run_until_idle();
  return host.get(id);
}

}  // namespace

// It used to take the running call for one a crash had interrupted: it recorded
// outcome_unknown (and then the tool's result as well, when the tool returned), or, for an
// idempotent tool, ran the tool a second time and recorded both results.
BOOST_AUTO_TEST_CASE(thread_execute_of_a_call_whose_tool_is_running_is_refused) {
  Thread thread = run_one_step(kAgent);
  const Event& last = thread.events.back();
  BOOST_TEST_REQUIRE(thread.status() == Status::done, last.data.dump());

  std::string types;
  for (const Event& event : thread.events) types += (types.empty() ? "" : " ") + event.type;
  // One start and one result per call: nothing lost, nothing twice, no outcome_unknown.
  BOOST_TEST(types ==
             "user_input add tool_started tool_response nested add tool_started tool_response "
             "nested_idempotent add tool_started tool_response suspended recorded done");
  BOOST_TEST_REQUIRE(thread.events.size() == 15u);
  BOOST_TEST(thread.events.at(3).data == nlohmann::json({{"call", 2}, {"result", 3}}));
  BOOST_TEST(thread.events.at(7).data == nlohmann::json({{"call", 6}, {"result", 30}}));
  BOOST_TEST(thread.events.at(11).data == nlohmann::json({{"call", 10}, {"result", 7}}));

  auto refusal_of = [&](const nlohmann::json& outcome, int call) {
    BOOST_TEST_REQUIRE(outcome.is_object(), outcome.dump());
    BOOST_TEST(outcome.value("code", "") == "usage", outcome.dump());
    std::string message = outcome.value("message", "");
    BOOST_TEST(mentions(message, "thread:execute: the call of event " + std::to_string(call) +
                                     " ('add') is still running"),
               message);
  };
  const nlohmann::json& nested = thread.events.at(4).data;
  BOOST_TEST(nested["sum"] == 3);
  refusal_of(nested["inner"], 2);
  const nlohmann::json& nested_idempotent = thread.events.at(8).data;
  BOOST_TEST(nested_idempotent["sum"] == 30);
  refusal_of(nested_idempotent["inner"], 6);
  const nlohmann::json& suspended = thread.events.at(12).data;
  BOOST_TEST(suspended["paused"] == "paused");
  BOOST_TEST(suspended["result"] == 7);
  refusal_of(suspended["meanwhile"], 10);
  BOOST_TEST(thread.events.at(13).data == 7);
}

// The tool ran on the agent's live table: a call changed after its push ran as changed
// (a charge of 1,000,000) while the thread recorded it as pushed (10), and a retry after a
// crash, which reads the record, would do another thing. The tool gets the recorded call.
BOOST_AUTO_TEST_CASE(thread_execute_runs_the_tool_on_the_call_as_recorded) {
  Thread thread = run_one_step(R"(
return function(thread)
  local step = { intent = "charge", amount = 10 }
  thread:push("charge", step)
  step.amount = 1000000
  thread:execute(step, function(call) return "charged " .. call.amount end)
end)");
  BOOST_TEST_REQUIRE(thread.status() == Status::done, thread.events.back().data.dump());
  BOOST_TEST(thread.events.at(1).data["amount"] == 10);
  BOOST_TEST(thread.events.at(3).data == nlohmann::json({{"call", 2}, {"result", "charged 10"}}));
}

// A tool whose coroutine the agent closed (or left suspended) never returns: the step
// ended done with the call's tool_started and nothing after it. Its outcome is now
// recorded as unknown when the step ends, as a crash's is when the thread resumes.
BOOST_AUTO_TEST_CASE(a_tool_left_in_an_abandoned_coroutine_ends_as_outcome_unknown) {
  Thread thread = run_one_step(R"(
local function start(thread, step)
  local co = coroutine.create(function()
    return thread:execute(step, function(call) coroutine.yield("paused"); return 1 end)
  end)
  coroutine.resume(co)
  return co
end
return function(thread)
  local closed = { a = 1 }
  thread:push("add", closed)
  coroutine.close(start(thread, closed))
  local left = { a = 2 }
  thread:push("add", left)
  start(thread, left)  -- left suspended
end)");
  std::string types;
  for (const Event& event : thread.events) types += (types.empty() ? "" : " ") + event.type;
  BOOST_TEST(types ==
             "user_input add tool_started add tool_started outcome_unknown outcome_unknown done");
  BOOST_TEST_REQUIRE(thread.events.size() == 8u);
  BOOST_TEST(thread.events[5].data == nlohmann::json({{"call", 2}, {"reason", "abandoned"}}));
  BOOST_TEST(thread.events[6].data == nlohmann::json({{"call", 4}, {"reason", "abandoned"}}));
}
