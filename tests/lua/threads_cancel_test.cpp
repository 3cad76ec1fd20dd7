// luagent.threads.cancel from inside an agent step, on another thread of the same Host: it
// must do what Host::cancel does — stop that thread's step in flight, tell the host's
// callbacks and updates — and leave the host usable.
#define BOOST_TEST_MODULE threads_cancel
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "luagent/luagent.hpp"
#include "support/agents_host.hpp"
#include "support/test_paths.hpp"

using namespace luagent;
using namespace std::chrono_literals;

namespace {

// Asks the asynchronous tool `slow`, then records the answer (an event and the sync tool
// `record`): after a cancel, neither may happen.
constexpr const char* kWaiter = R"(
local host = require "luagent.host"
return function(thread)
  thread:push("asking", "slow")
  local answer = host.call("slow", {})
  thread:push("answered", answer)
  host.call("record", { answer = answer })
end)";

// Cancels the thread whose id its first event holds, and writes down what it saw.
constexpr const char* kCanceller = R"(
local threads = require "luagent.threads"
return function(thread)
  local target = thread:last("user_input").data
  local cancelled = threads.cancel(target, "by another agent")
  thread:push("cancelled_other", { type = cancelled.type, reason = cancelled.data.reason })
  thread:push("other_status", threads.get(target).status)
end)";

struct Fixture : test::AgentsHost {
  Fixture() : AgentsHost({{"waiter", kWaiter}, {"canceller", kCanceller}}) {}

  // Pumps until `done` says so, at most some seconds' worth of pumps.
  template <typename Done>
  void pump_until(const Done& done) {
    for (int i = 0; i < 5000 && !done(); ++i) {
      host->pump(2ms);
      std::this_thread::sleep_for(200us);
    }
    BOOST_REQUIRE(done());
  }
};

std::vector<std::string> types_of(const Thread& thread) {
  std::vector<std::string> types;
  for (const Event& event : thread.events) types.push_back(event.type);
  return types;
}

std::string failure_of(const Thread& thread) {
  const Event& last = thread.events.back();
  return last.type == "failed" ? last.data.value("message", "") : "(" + last.type + ")";
}

}  // namespace

// threads.cancel wrote `cancelled` to the store and left the thread's step in flight: it
// went on when its tool answered (calling the next tool), the host's on_event and
// updates() never heard of the cancel, and the step stayed in flight until its next append
// lost its compare-and-swap.
BOOST_AUTO_TEST_CASE(threads_cancel_stops_the_step_in_flight_of_another_thread) {
  Fixture f;
  std::vector<ToolReply> replies;
  f.host->async_tool("slow", nullptr,
                     [&](const nlohmann::json&, ToolReply reply) { replies.push_back(reply); });
  std::vector<nlohmann::json> recorded;
  f.host->tool("record", nullptr, [&](const nlohmann::json& args) {
    recorded.push_back(args);
    return nullptr;
  });
  std::string waiting;
  std::vector<std::string> heard;  // on_event's events of the waiting thread
  f.host->on_event([&](const Thread& thread, const Event& event) {
    if (thread.id == waiting) heard.push_back(event.type);
  });

  waiting = f.host->launch("waiter", Event::user("go"));
  f.pump_until([&] { return replies.size() == 1; });
  BOOST_TEST(f.host->get(waiting).status() == Status::running);
  f.host->updates();  // what came before the cancel

  auto canceller = f.host->launch("canceller", Event::user(waiting));
  f.pump_until([&] { return f.host->get(canceller).status() != Status::running; });
  Thread by = f.host->get(canceller);
  BOOST_TEST_REQUIRE(by.status() == Status::done, failure_of(by));
  BOOST_TEST(by.events.at(1).data ==
             nlohmann::json({{"type", "cancelled"}, {"reason", "by another agent"}}));
  BOOST_TEST(by.events.at(2).data == "cancelled");

  const std::vector<std::string> ended = {"user_input", "asking", "cancelled"};
  Thread cancelled = f.host->get(waiting);
  BOOST_TEST(types_of(cancelled) == ended, failure_of(cancelled));
  BOOST_TEST(cancelled.events.back().data == nlohmann::json({{"reason", "by another agent"}}));
  // The host's on_event heard of the cancel (the first event, before launch() returned the
  // id, is not counted).
  const std::vector<std::string> heard_ended(ended.begin() + 1, ended.end());
  BOOST_TEST(heard == heard_ended);
  bool update_says_cancelled = false;
  for (const Update& update : f.host->updates())
    if (update.thread_id == waiting && update.kind == Update::Kind::cancelled)
      update_says_cancelled = true;
  BOOST_TEST(update_says_cancelled);
  // No step stays in flight: the canceller's ends once its last events are on disk, and
  // the cancelled thread's has ended.
  std::size_t in_flight = 1;
  for (int i = 0; i < 3000 && in_flight > 0; ++i) {
    in_flight = f.host->pump(2ms);
    if (in_flight > 0) std::this_thread::sleep_for(1ms);
  }
  BOOST_TEST(in_flight == 0u);

  // The late answer is dropped: the cancelled step does not go on.
  replies[0].ok("too late");
  for (int i = 0; i < 20; ++i) {
    f.host->pump(2ms);
    std::this_thread::sleep_for(1ms);
  }
  BOOST_TEST(types_of(f.host->get(waiting)) == ended);
  BOOST_TEST(heard == heard_ended);
  BOOST_TEST(recorded.empty());
  for (const std::string& line : f.log) BOOST_TEST(line.rfind("error", 0) != 0, line);

  // And the host serves on: the same agent, answered in time, runs to its end.
  auto again = f.host->launch("waiter", Event::user("go"));
  f.pump_until([&] { return replies.size() == 2; });
  replies[1].ok("in time");
  f.pump_until([&] { return f.host->get(again).status() != Status::running; });
  Thread done = f.host->get(again);
  BOOST_TEST(done.status() == Status::done, failure_of(done));
  BOOST_TEST(done.events.at(2).data == "in time");
  BOOST_TEST(recorded.size() == 1u);
}

// luagent.threads from an agent's top-level code, which runs when the agent loads: the
// host opens a missing store on first use, and the first launch loads the agent before it
// has made one. The load used to fail with "threads.list: no store is open".
BOOST_AUTO_TEST_CASE(an_agent_may_use_threads_while_it_loads_before_any_store_exists) {
  test::AgentsHost f(std::map<std::string, std::string>{{"counter", R"(
local threads = require "luagent.threads"
local stored_before = #threads.list()
return function(thread)
  thread:push("stored_before", stored_before)
end)"}});
  BOOST_REQUIRE(!std::filesystem::exists(f.dir / "t.db"));
  auto id = f.host->launch("counter", Event::user("go"));
  for (int i = 0; i < 1000 && f.host->pump(2ms) > 0; ++i) std::this_thread::sleep_for(1ms);
  Thread thread = f.host->get(id);
  BOOST_TEST(thread.status() == Status::done, failure_of(thread));
  BOOST_TEST(thread.events.at(1).type == "stored_before");
  // Each run executes the agent's top level afresh in its own environment: by then the
  // launch has stored this thread.
  BOOST_TEST(thread.events.at(1).data == 1);
}
