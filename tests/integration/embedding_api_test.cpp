// The C++ embedding API end to end: host tools (sync and async, answered from another
// thread), time-sliced pump(), cancel, updates(), run()/stop()/post(), and the bad
// input a program can give it (unknown agent or thread or tool, a duplicate tool, a
// throwing tool, the wrong thread) — each a clear error, the host usable afterwards.
#define BOOST_TEST_MODULE embedding_api
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <thread>

#include "luagent/luagent.hpp"
#include "support/agents_host.hpp"
#include "support/test_paths.hpp"

using namespace luagent;
using namespace std::chrono_literals;

namespace {

using Agents = std::map<std::string, std::string>;

// A host on agents of the test's own (support/agents_host.hpp), with the pumping and
// reading the tests here share.
struct Fixture : test::AgentsHost {
  using AgentsHost::AgentsHost;

  // Pumps with a small budget until nothing is in flight (bounded); returns pump calls.
  int pump_until_idle(std::chrono::microseconds budget = 2ms, int max_calls = 20000) {
    int calls = 0;
    while (calls < max_calls) {
      ++calls;
      if (host->pump(budget) == 0) break;
      std::this_thread::sleep_for(100us);
    }
    BOOST_REQUIRE_LT(calls, max_calls);
    return calls;
  }

  // Makes `tool` an async host tool whose calls wait in `replies` for the test to answer.
  void collect_calls_of(const std::string& tool) {
    host->async_tool(tool, nullptr, [this](const nlohmann::json&, ToolReply reply) {
      replies.push_back(std::move(reply));
    });
  }
  // Pumps (bounded) until `count` calls of collecting tools wait in `replies`.
  void pump_until_called(std::size_t count = 1) {
    for (int i = 0; i < 1000 && replies.size() < count; ++i) host->pump(2ms);
    BOOST_REQUIRE_EQUAL(replies.size(), count);
  }
  std::vector<ToolReply> replies;

  const Event& last(const std::string& id) {
    thread = host->get(id);
    return thread.events.back();
  }
  Thread thread;
};

std::string failure_of(const Event& event) {
  return event.type == "failed" ? event.data.value("message", "")
                                : "(not failed: " + event.type + ")";
}

bool mentions(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

// Expects `call` to throw luagent::Error with `code` and a message that says `why`. Any
// other exception escapes to Boost, which reports it.
void refused(const std::function<void()>& call, const std::string& why,
             ErrorCode code = ErrorCode::usage) {
  try {
    call();
    BOOST_ERROR("accepted: " + why);
  } catch (const Error& e) {
    BOOST_TEST((e.code() == code), e.what());
    BOOST_TEST(mentions(e.what(), why), e.what());
  }
}

const char* kAsker = "return function(thread) return thread:await('human') end";

// Waits for a human's answer, then pushes it as "name" and ends.
const char* kAsksForAName = R"(
return function(thread)
  local call, answer = thread:resumed()
  if call then thread:push("name", answer) return thread end
  return thread:await("human", { q = "name?" })
end)";

const char* kCallsAdd = R"(
local host = require "luagent.host"
return function(thread)
  thread:push("sum", host.call("add", { a = 2, b = 3 }))
end)";

}  // namespace

BOOST_AUTO_TEST_CASE(sync_host_tool_result_reaches_the_agent) {
  Fixture f(Agents{{"adder", kCallsAdd}});
  f.host->tool("add", {{"a", "number"}, {"b", "number"}}, [](const nlohmann::json& args) {
    return args["a"].get<double>() + args["b"].get<double>();
  });
  auto id = f.host->launch("adder", Event::user("go"));
  f.pump_until_idle();
  Thread thread = f.host->get(id);
  BOOST_TEST(thread.status() == Status::done);
  BOOST_TEST(thread.events[1].type == "sum");
  BOOST_TEST(thread.events[1].data.get<double>() == 5.0);
}

BOOST_AUTO_TEST_CASE(host_tool_function_works_with_thread_execute_and_tools_lists_schemas) {
  Fixture f(Agents{{"trader", R"(
local host = require "luagent.host"
return function(thread)
  local schemas = host.tools()
  local call = { item = "sword", price = 10, known = schemas.trade.item }
  thread:push("trade", call)
  thread:execute(call, host.tool("trade"))
end)"}});
  int runs = 0;
  f.host->tool("trade", {{"item", "string"}, {"price", "number"}}, [&](const nlohmann::json& c) {
    ++runs;
    return nlohmann::json{{"sold", c["item"]}, {"gold", c["price"]}};
  });
  auto id = f.host->launch("trader", Event::user("go"));
  f.pump_until_idle();
  Thread thread = f.host->get(id);
  BOOST_TEST(thread.status() == Status::done);
  BOOST_TEST(runs == 1);
  BOOST_TEST(thread.events[1].data["known"] == "string");
  bool found = false;
  for (const Event& e : thread.events)
    if (e.type == "tool_response") found = e.data.dump().find("sword") != std::string::npos;
  BOOST_TEST(found);
}

BOOST_AUTO_TEST_CASE(async_tool_answered_from_another_thread_suspends_only_its_run) {
  Fixture f(Agents{{"waiter", R"(
local host = require "luagent.host"
return function(thread)
  thread:push("path", host.call("find_path", { to = "gate" }))
end)"},
                   {"quick", "return function(thread) thread:push('hello', 1) end"}});
  std::vector<ToolReply> replies;
  f.host->async_tool("find_path", {{"to", "string"}},
                     [&](const nlohmann::json& args, ToolReply reply) {
                       BOOST_TEST(args["to"] == "gate");
                       replies.push_back(reply);
                     });
  auto waiting = f.host->launch("waiter", Event::user("go"));
  auto quick = f.host->launch("quick", Event::user("go"));
  for (int i = 0; i < 20; ++i) f.host->pump(2ms);
  BOOST_TEST(f.host->get(quick).status() == Status::done);  // not held up by the other run
  BOOST_TEST(f.host->get(waiting).status() == Status::running);
  BOOST_REQUIRE_EQUAL(replies.size(), 1u);
  std::thread game_system([reply = replies[0]] { reply.ok({"north", "east"}); });
  game_system.join();
  BOOST_CHECK_THROW(replies[0].ok(1), Error);  // answered once only
  f.pump_until_idle();
  Thread thread = f.host->get(waiting);
  BOOST_TEST(thread.status() == Status::done);
  BOOST_TEST(thread.events[1].data == nlohmann::json({"north", "east"}));
}

BOOST_AUTO_TEST_CASE(async_tool_failure_and_dropped_reply_are_lua_errors) {
  Fixture f(Agents{{"careful", R"(
local host = require "luagent.host"
return function(thread)
  local ok, err = pcall(host.call, "flaky", {})
  thread:push("first", tostring(err))
  local ok2, err2 = pcall(host.call, "forgetful", {})
  thread:push("second", tostring(err2))
end)"}});
  std::optional<ToolReply> held;
  f.host->async_tool("flaky", nullptr, [&](const nlohmann::json&, ToolReply reply) {
    reply.fail("the bridge is out");
  });
  f.host->async_tool("forgetful", nullptr, [](const nlohmann::json&, ToolReply) {});
  auto id = f.host->launch("careful", Event::user("go"));
  f.pump_until_idle();
  Thread thread = f.host->get(id);
  BOOST_REQUIRE(thread.status() == Status::done);
  BOOST_TEST(mentions(thread.events[1].data.get<std::string>(), "the bridge is out"));
  BOOST_TEST(mentions(thread.events[2].data.get<std::string>(), "dropped its reply"));
}

BOOST_AUTO_TEST_CASE(unknown_tool_is_a_clear_error) {
  Fixture f(Agents{
      {"lost", R"(return function(thread) require("luagent.host").call("teleport", {}) end)"}});
  f.host->tool("walk", nullptr, [](const nlohmann::json&) { return nullptr; });
  auto id = f.host->launch("lost", Event::user("go"));
  f.pump_until_idle();
  auto failure = failure_of(f.last(id));
  BOOST_TEST(mentions(failure, "no host tool 'teleport'"), failure);
  BOOST_TEST(mentions(failure, "registered: walk"), failure);
}

BOOST_AUTO_TEST_CASE(tool_registered_twice_or_badly_throws_and_host_stays_usable) {
  Fixture f(Agents{{"adder", kCallsAdd}});
  auto add = [](const nlohmann::json& a) { return a["a"].get<int>() + a["b"].get<int>(); };
  f.host->tool("add", nullptr, add);
  try {
    f.host->tool("add", nullptr, add);
    BOOST_FAIL("a second 'add' was accepted");
  } catch (const Error& e) {
    BOOST_TEST((e.code() == ErrorCode::conflict));
    BOOST_TEST(mentions(e.what(), "already registered"));
  }
  BOOST_CHECK_THROW(f.host->tool("bad name!", nullptr, add), Error);
  BOOST_CHECK_THROW(f.host->tool("list_schema", nlohmann::json::array(), add), Error);
  // The arguments as a whole were called the model's "reply" here too.
  try {
    f.host->tool("dangling", {{"$ref", "#/$defs/nowhere"}}, add);
    BOOST_FAIL("a schema whose $ref leads nowhere was accepted");
  } catch (const Error& e) {
    BOOST_TEST((e.code() == ErrorCode::usage));
    BOOST_TEST(mentions(e.what(), "host tool 'dangling': schema for top level: $ref"), e.what());
  }
  auto id = f.host->launch("adder", Event::user("go"));
  f.pump_until_idle();
  BOOST_TEST(f.host->get(id).events[1].data.get<int>() == 5);
}

BOOST_AUTO_TEST_CASE(tool_args_are_checked_and_coerced_against_the_schema) {
  Fixture f(Agents{{"trader", R"(
local host = require "luagent.host"
return function(thread)
  -- an llm.one_of reply as it comes: the intent, a price the model wrote as text
  thread:push("sold", host.call("trade", { intent = "trade", item = "sword", price = "12" }))
  local ok, err = pcall(host.call, "trade", { item = "shield" })
  thread:push("refused", { ok = ok, code = err.code, message = err.message })
  ok, err = pcall(host.call, "trade", "shield")
  thread:push("refused", err.message)
end)"}});
  std::vector<nlohmann::json> received;
  f.host->tool("trade", {{"item", "string"}, {"price", "number"}}, [&](const nlohmann::json& a) {
    received.push_back(a);
    return a["price"].get<double>() * 2;
  });
  auto id = f.host->launch("trader", Event::user("go"));
  f.pump_until_idle();
  Thread thread = f.host->get(id);
  BOOST_REQUIRE(thread.status() == Status::done);
  BOOST_REQUIRE(received.size() == 1u);  // the call missing its price never reached C++
  BOOST_TEST(received[0] == (nlohmann::json{{"item", "sword"}, {"price", 12}}));
  BOOST_TEST(thread.events[1].data.get<double>() == 24.0);
  const nlohmann::json& refused = thread.events[2].data;
  BOOST_TEST(refused["ok"] == false);
  BOOST_TEST(refused["code"] == "usage");
  std::string message = refused["message"];
  BOOST_TEST(mentions(message, "host tool 'trade': bad arguments"), message);
  BOOST_TEST(mentions(message, "price"), message);
  // The whole value was called the model's "reply" (the words of a structured reply).
  std::string whole = thread.events[3].data;
  BOOST_TEST(
      mentions(whole, "host tool 'trade': bad arguments: top level: expected object, got string"),
      whole);
}

BOOST_AUTO_TEST_CASE(async_tool_args_are_checked_before_it_starts) {
  Fixture f(Agents{{"walker", R"(
return function(thread)
  require("luagent.host").call("find_path", { to = { "not", "a", "place" } })
end)"}});
  int started = 0;
  f.host->async_tool("find_path", {{"to", "string"}}, [&](const nlohmann::json&, ToolReply reply) {
    ++started;
    reply.ok("north");
  });
  auto id = f.host->launch("walker", Event::user("go"));
  f.pump_until_idle();
  auto failure = failure_of(f.last(id));
  BOOST_TEST(started == 0);
  BOOST_TEST(mentions(failure, "host tool 'find_path': bad arguments"), failure);
  BOOST_TEST(mentions(failure, "to"), failure);
}

// What a tool can get wrong names the tool: a $ref that leads nowhere is refused when the
// tool is registered (not by the first call), a throw of something not a std::exception
// fails the step naming it, and a ToolReply with no call behind it is refused.
BOOST_AUTO_TEST_CASE(tool_mistakes_are_refused_or_reported_naming_the_tool) {
  Fixture f(Agents{{"adder", kCallsAdd}});
  auto add = [](const nlohmann::json&) -> nlohmann::json { throw 42; };
  const nlohmann::json nowhere = {{"type", "object"},
                                  {"properties", {{"a", {{"$ref", "#/definitions/nope"}}}}}};
  for (const nlohmann::json& schema :
       {nowhere, nlohmann::json{{"$ref", "#"}},
        nlohmann::json{{"properties", {{"a", {{"$ref", "other.json"}}}}}}}) {
    try {
      f.host->tool("add", schema, add);
      BOOST_ERROR("accepted " << schema.dump());
    } catch (const Error& e) {
      BOOST_TEST((e.code() == ErrorCode::usage));
      BOOST_TEST(mentions(e.what(), "host tool 'add'"), e.what());
      BOOST_TEST(mentions(e.what(), "$ref"), e.what());
    }
  }
  f.host->tool("add",
               {{"type", "object"},
                {"$defs", {{"n", {{"type", "number"}}}}},
                {"properties", {{"a", {{"$ref", "#/$defs/n"}}}, {"b", {{"$ref", "#/$defs/n"}}}}}},
               add);
  auto id = f.host->launch("adder", Event::user("go"));
  f.pump_until_idle();
  const Event failed = f.host->get(id).events.back();
  BOOST_TEST(failure_of(failed) ==
             "host tool 'add' failed: it threw something not a std::exception");
  BOOST_CHECK_THROW(ToolReply(nullptr), Error);
}

BOOST_AUTO_TEST_CASE(a_bad_tool_schema_is_refused_at_registration_naming_the_entry) {
  Fixture f(Agents{{"adder", kCallsAdd}});
  auto add = [](const nlohmann::json& a) { return a["a"].get<int>() + a["b"].get<int>(); };
  try {
    f.host->tool("add", {{"a", "number"}, {"b", "nubmer"}}, add);
    BOOST_FAIL("a schema with an unknown type was accepted");
  } catch (const Error& e) {
    BOOST_TEST((e.code() == ErrorCode::usage));
    BOOST_TEST(mentions(e.what(), "host tool 'add'"), e.what());
    BOOST_TEST(mentions(e.what(), "nubmer"), e.what());
  }
  f.host->tool("add", {{"a", "integer"}, {"b", "integer"}}, add);  // the name is still free
  auto id = f.host->launch("adder", Event::user("go"));
  f.pump_until_idle();
  BOOST_TEST(f.host->get(id).events[1].data.get<int>() == 5);
}

BOOST_AUTO_TEST_CASE(throwing_tool_fails_only_that_step) {
  Fixture f(Agents{{"adder", kCallsAdd}});
  bool explode = true;
  f.host->tool("add", nullptr, [&](const nlohmann::json& a) -> nlohmann::json {
    if (explode) throw std::runtime_error("physics engine exploded");
    return a["a"].get<int>() + a["b"].get<int>();
  });
  auto first = f.host->launch("adder", Event::user("go"));
  f.pump_until_idle();
  auto failure = failure_of(f.last(first));
  BOOST_TEST(mentions(failure, "host tool 'add' failed: physics engine exploded"), failure);
  explode = false;
  auto second = f.host->launch("adder", Event::user("go"));
  f.pump_until_idle();
  BOOST_TEST(f.host->get(second).status() == Status::done);
}

BOOST_AUTO_TEST_CASE(wrong_thread_and_reentrant_pump_are_usage_errors) {
  Fixture f(Agents{{"adder", kCallsAdd}});
  std::optional<Error> from_other;
  std::thread other([&] {
    try {
      f.host->pump(2ms);
    } catch (const Error& e) {
      from_other = e;
    }
  });
  other.join();
  BOOST_REQUIRE(from_other.has_value());
  BOOST_TEST((from_other->code() == ErrorCode::usage));
  BOOST_TEST(mentions(from_other->what(), "another thread"));

  // fork (which writes to the store), get, list and continue_thread used to run on any
  // thread, racing the host's own use of the store.
  auto first = f.host->launch("adder", Event::user("go"));
  for (const char* verb : {"fork", "get", "list", "continue_thread", "calls", "agent_version"}) {
    std::optional<Error> refused;
    std::thread caller([&] {
      try {
        std::string_view v = verb;
        if (v == "fork") f.host->fork(first, 1);
        if (v == "get") f.host->get(first);
        if (v == "list") f.host->list();
        if (v == "continue_thread") f.host->continue_thread(first);
        if (v == "calls") f.host->calls(first);
        if (v == "agent_version") f.host->agent_version("adder");
      } catch (const Error& e) {
        refused = e;
      }
    });
    caller.join();
    BOOST_REQUIRE_MESSAGE(refused.has_value(), verb);
    BOOST_TEST((refused->code() == ErrorCode::usage), refused->what());
    BOOST_TEST(mentions(refused->what(), std::string("Host::") + verb + " called from another"),
               refused->what());
  }
  BOOST_TEST(f.host->list().size() == 1u);  // no fork was made

  f.host->tool("add", nullptr, [&](const nlohmann::json&) -> nlohmann::json {
    f.host->pump(1ms);  // not allowed from inside a step
    return 0;
  });
  auto id = f.host->launch("adder", Event::user("go"));
  f.pump_until_idle();
  auto failure = failure_of(f.last(id));
  BOOST_TEST(mentions(failure, "from inside a callback"), failure);
  BOOST_TEST(f.host->pump(1ms) == 0u);  // still usable
}

BOOST_AUTO_TEST_CASE(unknown_agent_and_unknown_thread_are_not_found) {
  Fixture f(Agents{{"adder", kCallsAdd}});
  try {
    f.host->launch("nobody", Event::user("go"));
    BOOST_FAIL("launched an unknown agent");
  } catch (const Error& e) {
    BOOST_TEST((e.code() == ErrorCode::not_found));
  }
  for (auto verb : {0, 1, 2, 3}) {
    try {
      if (verb == 0) f.host->resume("th_missing", Resume::approve());
      if (verb == 1) f.host->cancel("th_missing");
      if (verb == 2) f.host->get("th_missing");
      if (verb == 3) f.host->calls("th_missing");  // was an empty list
      BOOST_FAIL("accepted an unknown thread");
    } catch (const Error& e) {
      BOOST_TEST((e.code() == ErrorCode::not_found), e.what());
    }
  }
}

// launch() used to store any first event: a host-written type (a thread born `done`), no
// type at all, or bytes that are not UTF-8, which threw out of the store as a JSON error.
BOOST_AUTO_TEST_CASE(launch_and_resume_refuse_events_the_store_cannot_take) {
  Fixture f(Agents{{"asker", kAsker}});
  refused([&] { f.host->launch("asker", Event::user("caf\xE9")); },
          "the launch event's data has a string that is not UTF-8 text (byte 0xE9 at offset 3)");
  refused([&] { f.host->launch("asker", Event::make("done", nullptr)); },
          "'done' events are written by luagent itself; a launch cannot");
  try {  // the hint about cancel is for 'cancelled' only
    f.host->launch("asker", Event::make("done", nullptr));
  } catch (const Error& e) {
    BOOST_TEST(!mentions(e.what(), "cancel"), e.what());
  }
  refused([&] { f.host->launch("asker", Event::make("cancelled", nullptr)); },
          "(use cancel to cancel a thread)");
  refused([&] { f.host->launch("asker", Event{}); }, "non-empty \"type\"");
  refused([&] { f.host->launch("asker", Event::make(std::string("done\0x", 6), nullptr)); },
          "the launch event's type contains a NUL byte");
  BOOST_TEST(f.host->list().empty());  // nothing was stored

  auto id = f.host->launch("asker", Event::user("go"));
  f.pump_until_idle();
  refused([&] { f.host->resume(id, Resume::say("\xFF")); },
          "the resume event's data has a string that is not UTF-8");
  refused([&] { f.host->resume(id, Resume::say("ok", "key\xFF")); },
          "the resume event's key is not UTF-8 text (byte 0xFF at offset 3)");
  refused([&] { f.host->resume(id, Resume::with_event(std::string("note\0", 5), "x")); },
          "the resume event's type contains a NUL byte");
  refused([&] { f.host->resume(id, Resume::say("ok", std::string("k\0x", 3))); },
          "the resume event's key contains a NUL byte");
  f.host->resume(id, Resume::say("ok"));  // still usable
  f.pump_until_idle();
  BOOST_TEST(f.host->get(id).events.size() == 4u);
}

// A nlohmann "discarded" value (what parse(text, nullptr, false) returns for text that is
// not JSON) used to be stored as given; every later get, cancel or fork of the thread then
// threw `corrupt`, for good. A binary value was stored as an object it never was.
BOOST_AUTO_TEST_CASE(launch_and_resume_refuse_discarded_json_values) {
  Fixture f(Agents{{"asker", kAsker}});
  const auto not_json = nlohmann::json::parse("{not json", nullptr, false);
  BOOST_REQUIRE(not_json.is_discarded());
  auto launch = [&](nlohmann::json data) {
    f.host->launch("asker", Event::make("webhook", std::move(data)));
  };
  refused([&] { launch(not_json); }, "the launch event's data holds a discarded value");
  refused(
      [&] {
        launch({{"body", {1, not_json}}});
      },
      "the launch event's data holds a discarded value");
  refused(
      [&] {
        launch(nlohmann::json::binary({1, 2}));
      },
      "the launch event's data holds a binary value");
  BOOST_TEST(f.host->list().empty());  // nothing was stored

  auto id = f.host->launch("asker", Event::user("go"));
  f.pump_until_idle();
  auto resume = [&](nlohmann::json data) {
    f.host->resume(id, Resume::with_event("webhook", std::move(data)));
  };
  refused([&] { resume(not_json); }, "the resume event's data holds a discarded value");
  refused([&] { resume({{"body", not_json}}); }, "the resume event's data holds a discarded value");
  BOOST_TEST(f.host->get(id).events.size() == 2u);  // and it still reads, forks, cancels
  f.host->fork(id, 2);
  BOOST_TEST(f.host->cancel(id).type == "cancelled");
}

// `levels` arrays around a number: the number sits `levels` below the top.
nlohmann::json nested(std::size_t levels) {
  return nlohmann::json::parse(std::string(levels, '[') + "1" + std::string(levels, ']'));
}

// Data nested deeper than the JSON depth limit used to be stored: the step then failed on
// it (`limit`) every time it read the thread, and at ~75k levels the store's recursive
// writer overflowed the stack. The deepest data a step can read is still taken.
BOOST_AUTO_TEST_CASE(launch_and_resume_refuse_data_nested_past_the_depth_limit) {
  Fixture f(
      Agents{{"reader", "return function(thread) thread:events() thread:await('human') end"}});
  auto launch = [&](nlohmann::json data) {
    return f.host->launch("reader", Event::make("webhook", std::move(data)));
  };
  const std::string why = "the launch event's data is nested deeper than 100 levels";
  refused([&] { launch(nested(101)); }, why);
  refused([&] { launch({{"a", nested(100)}}); }, why);
  refused([&] { launch(nested(100'000)); }, why);
  BOOST_TEST(f.host->list().empty());  // nothing was stored

  auto id = launch(nested(100));
  f.pump_until_idle();
  BOOST_TEST(f.host->get(id).status() == Status::awaiting_human, failure_of(f.last(id)));
  // The rendering wraps each event's data in the event and the event list: still taken.
  BOOST_TEST(f.host->render_context(f.host->get(id)).find("webhook") != std::string::npos);
  auto resume = [&](nlohmann::json data) {
    f.host->resume(id, Resume::with_event("webhook", std::move(data)));
  };
  refused([&] { resume(nested(101)); }, "the resume event's data is nested deeper than 100");
  refused([&] { resume(nested(100'000)); }, "the resume event's data is nested deeper than 100");
  resume({{"a", nested(99)}});
  f.pump_until_idle();
  BOOST_TEST(f.host->get(id).status() == Status::awaiting_human, failure_of(f.last(id)));
}

// A cancel reason that is not UTF-8 used to throw nlohmann's type_error out of the store
// (in flight: from inside the step's commit), not a luagent::Error.
BOOST_AUTO_TEST_CASE(cancel_refuses_a_reason_that_is_not_utf8) {
  Fixture f(Agents{{"asker", kAsker}});
  auto id = f.host->launch("asker", Event::user("go"));  // its step is in flight
  const std::string why = "the cancel reason is not UTF-8 text (byte 0xFF at offset 4)";
  refused([&] { f.host->cancel(id, "why \xFF"); }, why);
  f.pump_until_idle();
  BOOST_TEST(f.host->get(id).status() == Status::awaiting_human);
  refused([&] { f.host->cancel(id, "why \xFF"); }, why);  // waiting, no step in flight
  BOOST_TEST(f.host->get(id).status() == Status::awaiting_human);
  BOOST_TEST(f.host->cancel(id, "why not").data == nlohmann::json({{"reason", "why not"}}));
}

// Agent names that name no agent: "" used to run agents_dir itself as the agent, a name
// with a NUL was cut at it ("asker\0x" ran asker), and one longer than a file name may be
// threw std::filesystem::filesystem_error out of launch() and agent_version().
BOOST_AUTO_TEST_CASE(launch_refuses_agent_names_that_name_no_agent) {
  Fixture f(Agents{{"asker", kAsker}});
  std::ofstream(f.dir / "agent.lua") << kAsker;  // agents_dir would load as an agent itself
  const std::string with_nul("asker\0x", 7), too_long(300, 'a');
  HostConfig config;  // a watching host looks the agent up by another path
  config.store = "sqlite:" + (f.dir / "w.db").string();
  config.agents_dir = f.dir.path();
  config.watch = true;
  Host watching(config);
  for (auto [host, verb] : {std::pair{f.host.get(), "launch"},
                            {f.host.get(), "agent_version"},
                            {&watching, "launch"},
                            {&watching, "agent_version"}}) {
    auto call = [&](const std::string& agent) {
      if (std::string_view(verb) == "launch")
        host->launch(agent, Event::user("go"));
      else
        host->agent_version(agent);
    };
    BOOST_TEST_CONTEXT(verb << (host == &watching ? " (watching)" : "")) {
      refused([&] { call(""); }, "the agent name is empty");
      refused([&] { call(with_nul); }, "the agent name contains a NUL byte");
      refused([&] { call(too_long); },
              "no agent '" + too_long + "': the name is longer than a file name can be",
              ErrorCode::not_found);
      try {  // said once, not three times over
        call(too_long);
      } catch (const Error& e) {
        const std::string what = e.what();
        BOOST_TEST(what.find(too_long) == what.rfind(too_long), what);
      }
      refused([&] { call("asker/" + too_long); }, "no agent 'asker/", ErrorCode::not_found);
    }
  }
  BOOST_TEST(f.host->list().empty());  // nothing was stored
  BOOST_TEST(watching.list().empty());
  BOOST_TEST(!f.host->agent_version("asker").empty());
}

// A folder of the same name in the working directory (a game's save folder, say) used to
// shadow the agent under agents_dir: launch("asker") loaded ./asker and failed there, as
// it holds no agent.lua. A path to an agent outside agents_dir still works.
BOOST_AUTO_TEST_CASE(an_agent_under_agents_dir_wins_over_a_folder_of_its_name_here) {
  Fixture f(Agents{{"asker", kAsker}});
  test::TempDir here;
  std::filesystem::create_directories(here / "asker");
  std::filesystem::create_directories(here / "other");
  std::ofstream(here / "other/agent.lua") << kAsker;
  struct WorkingDirectory {
    std::filesystem::path previous = std::filesystem::current_path();
    explicit WorkingDirectory(const std::filesystem::path& to) {
      std::filesystem::current_path(to);
    }
    ~WorkingDirectory() { std::filesystem::current_path(previous); }
  };
  std::string id, other;
  {
    WorkingDirectory in(here.path());
    id = f.host->launch("asker", Event::user("go"));
    BOOST_TEST(f.host->agent_version("asker") == f.host->agent_version((f.dir / "asker").string()));
    other = f.host->launch("other", Event::user("go"));
  }
  BOOST_TEST(f.host->get(id).agent_path == (f.dir / "asker").string());
  BOOST_TEST(f.host->get(other).agent_path == std::filesystem::canonical(here / "other").string());
  f.pump_until_idle();
  BOOST_TEST(f.host->get(id).status() == Status::awaiting_human);
}

// Resume::with_event("", data) used to act as Resume::recover(), dropping the data; and
// recover()'s refusal told C++ callers to use the CLI's --approve, --reject, --say, --event.
BOOST_AUTO_TEST_CASE(resume_refuses_an_event_without_a_type_and_recover_speaks_plainly) {
  Fixture f(Agents{{"asker", kAsker}, {"quick", "return function(thread) end"}});
  auto id = f.host->launch("asker", Event::user("go"));
  f.pump_until_idle();
  refused(
      [&] {
        f.host->resume(id, Resume::with_event("", {{"text", "hi"}}));
      },
      "Resume::with_event needs a non-empty event type");
  refused([&] { f.host->resume(id, Resume::with_event("", nullptr, "key-1")); },
          "Resume::with_event needs a non-empty event type");
  refused([&] { f.host->resume(id, Resume{Event::make("", "hi")}); }, "non-empty \"type\"");
  BOOST_TEST(f.host->get(id).events.size() == 2u);

  auto recover_says = [&](const std::string& thread_id) -> std::string {
    try {
      f.host->resume(thread_id, Resume::recover());
    } catch (const Error& e) {
      BOOST_TEST((e.code() == ErrorCode::conflict), e.what());
      BOOST_TEST(!mentions(e.what(), "--"), e.what());  // no CLI flags
      return e.what();
    }
    BOOST_ERROR("recover accepted " + thread_id);
    return {};
  };
  BOOST_TEST(mentions(recover_says(id),
                      "was not interrupted (it is awaiting_human): it waits "
                      "for an answer"));
  auto done = f.host->launch("quick", Event::user("go"));
  f.pump_until_idle();
  BOOST_TEST(mentions(recover_says(done), "was not interrupted (it is done): it has ended"));
}

// An event's id, time and version are the host's to give: launch() and resume() used to
// keep a caller's at_ms (-5 stayed -5) and version (so a webhook could claim to have come
// from an agent version: forged provenance).
BOOST_AUTO_TEST_CASE(launch_and_resume_set_the_fields_the_host_owns) {
  Fixture f(Agents{{"asker", kAsker}});
  auto from_caller = [](Event event) {
    event.id = 42;
    event.at_ms = -5;
    return event;
  };
  auto forged = Event::user("go");
  forged.version = "0123456789ab";
  refused([&] { f.host->launch("asker", forged); }, "the launch event's version is set");
  BOOST_TEST(f.host->list().empty());  // nothing was stored

  const auto before = now_ms();
  auto id = f.host->launch("asker", from_caller(Event::user("go")));
  f.pump_until_idle();
  auto answer = Resume::say("ok");
  answer.event.version = "0123456789ab";
  refused([&] { f.host->resume(id, answer); }, "the resume event's version is set");
  BOOST_TEST(f.host->get(id).events.size() == 2u);
  answer.event = from_caller(answer.event);
  answer.event.version.clear();
  auto resumed = f.host->resume(id, answer);
  BOOST_TEST(resumed.events.at(0).id == 3);
  f.pump_until_idle();
  auto thread = f.host->get(id);
  for (std::size_t i : {0u, 2u}) {  // the launch event and the answer
    const Event& event = thread.events.at(i);
    BOOST_TEST(event.id == static_cast<std::int64_t>(i + 1));
    BOOST_TEST(event.at_ms >= before);
    BOOST_TEST(event.at_ms <= now_ms());
    BOOST_TEST(event.version.empty());
  }
}

// NaN and infinity in a caller's data used to be stored as null, while Lua's thread:push
// refuses them: now both refuse them.
BOOST_AUTO_TEST_CASE(launch_and_resume_refuse_nan_and_infinity) {
  Fixture f(Agents{{"asker", kAsker}});
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  auto launch = [&](nlohmann::json data) {
    f.host->launch("asker", Event::make("reading", std::move(data)));
  };
  const std::string why = "the launch event's data has NaN or infinity, which JSON has no form";
  refused([&] { launch(nan); }, why);
  refused([&] { launch({{"t", {1.5, -inf}}}); }, why);
  BOOST_TEST(f.host->list().empty());  // nothing was stored

  auto id = f.host->launch("asker", Event::user("go"));
  f.pump_until_idle();
  refused(
      [&] {
        f.host->resume(id, Resume::with_event("reading", {{"t", inf}}));
      },
      "the resume event's data has NaN or infinity");
  BOOST_TEST(f.host->get(id).events.size() == 2u);
}

// launch() and resume() refused NaN, text not UTF-8, discarded and binary values and data
// nested too deep without saying where in the data they were, with a walker of their own;
// they now share the host tools' walker, which names the place as a JSON pointer.
BOOST_AUTO_TEST_CASE(launch_and_resume_refusals_name_the_place_in_the_data) {
  Fixture f(Agents{{"asker", kAsker}});
  auto launch = [&](nlohmann::json data) {
    f.host->launch("asker", Event::make("webhook", std::move(data)));
  };
  refused(
      [&] {
        launch({{"t", {1.5, -std::numeric_limits<double>::infinity()}}});
      },
      "the launch event's data has NaN or infinity, which JSON has no form for "
      "(-infinity at /t/1)");
  refused(
      [&] {
        launch({{"menu", {{"name", "caf\xE9"}}}});
      },
      "the launch event's data has a string at /menu/name that is not UTF-8 text (byte "
      "0xE9 at offset 3)");
  refused(
      [&] {
        launch({{"a~/b", {{"caf\xE9", 1}}}});
      },
      "the launch event's data has a key at /a~0~1b/caf");
  refused(
      [&] {
        launch({{"body", {1, nlohmann::json::parse("{oops", nullptr, false)}}});
      },
      "the launch event's data holds a discarded value at /body/1 (what");
  refused(
      [&] {
        launch({{"bytes", nlohmann::json::binary({1, 2})}});
      },
      "the launch event's data holds a binary value at /bytes, which JSON");
  refused(
      [&] {
        launch({{"a", nested(100)}});
      },
      "the launch event's data is nested deeper than 100 levels, at /a/0/0/0/");
  BOOST_TEST(f.host->list().empty());  // nothing was stored

  auto id = f.host->launch("asker", Event::user("go"));
  f.pump_until_idle();
  refused(
      [&] {
        f.host->resume(
            id, Resume::with_event("reading",
                                   {{"t", {{"x", std::numeric_limits<double>::quiet_NaN()}}}}));
      },
      "the resume event's data has NaN or infinity, which JSON has no form for (NaN at /t/x)");
  BOOST_TEST(f.host->get(id).events.size() == 2u);
}

// HostConfig values that cannot mean anything: a negative limit used to read as the default,
// a negative watch_poll_interval made the watcher wait forever, and an agents_dir that is a
// file only showed up as "no agent" on every launch.
BOOST_AUTO_TEST_CASE(host_config_values_out_of_range_are_refused) {
  test::TempDir dir;
  std::ofstream(dir / "a_file") << "x";
  auto refused = [&](const std::function<void(HostConfig&)>& set, const std::string& why) {
    HostConfig config;
    config.store = "sqlite:" + (dir / "t.db").string();
    config.agents_dir = dir.path();
    set(config);
    try {
      Host host(config);
      BOOST_ERROR("accepted: " + why);
    } catch (const Error& e) {
      BOOST_TEST((e.code() == ErrorCode::config), e.what());
      BOOST_TEST(mentions(e.what(), why), e.what());
    }
  };
  refused([](HostConfig& c) { c.step_cpu_ms = -1; }, "HostConfig::step_cpu_ms must be 0");
  refused([](HostConfig& c) { c.memory_mb = std::size_t(-1); }, "HostConfig::memory_mb must be");
  refused([](HostConfig& c) { c.llm_calls_per_step = -2; }, "llm_calls_per_step must be 0");
  refused([](HostConfig& c) { c.replay_latency = -5ms; }, "replay_latency must be 0");
  refused([](HostConfig& c) { c.watch_poll_interval = 0ms; },
          "watch_poll_interval must be a positive number of milliseconds, not 0");
  // Named as where it came from (it was blamed on the LUAGENT_WATCH variable).
  refused(
      [](HostConfig& c) {
        c.watch = true;
        c.watch_mode = "bogus";
      },
      "not 'bogus' (HostConfig::watch_mode)");
  refused([&](HostConfig& c) { c.agents_dir = dir / "a_file"; },
          "HostConfig::agents_dir: the agents folder " + (dir / "a_file").string() +
              " is a file, not a folder");
  // Stores that would keep nothing, or name another file than written.
  refused([](HostConfig& c) { c.store = "sqlite::memory:"; }, "is not a file");
  refused([](HostConfig& c) { c.store = "sqlite:file::memory:"; }, "is not a file");
  refused([&](HostConfig& c) { c.store = std::string("sqlite:a\0b", 10); }, "NUL");
  // A path is read only up to a NUL byte: it would silently name the folder or file before it.
  const std::string with_nul = (dir.path() / "x").string() + std::string("\0y", 2);
  refused([&](HostConfig& c) { c.agents_dir = with_nul; }, "HostConfig::agents_dir contains a NUL");
  refused([&](HostConfig& c) { c.config_file = with_nul; }, "HostConfig::config_file contains");
  refused([&](HostConfig& c) { c.cassette = with_nul; }, "HostConfig::cassette contains a NUL");
  refused([&](HostConfig& c) { c.script = with_nul; }, "HostConfig::script contains a NUL");
  refused([&](HostConfig& c) { c.record = with_nul; }, "HostConfig::record contains a NUL");
  refused([&](HostConfig& c) { c.stdlib_dir = with_nul; }, "HostConfig::stdlib_dir contains");
  // A folder named as a file: these were not_found errors ("cannot read ...: Is a
  // directory", "unable to open database file").
  refused([&](HostConfig& c) { c.config_file = dir.path(); },
          dir.path().string() + " is a folder, not a config file");
  std::filesystem::create_directory(dir / "folder.db");
  refused([&](HostConfig& c) { c.store = "sqlite:" + (dir / "folder.db").string(); },
          "cannot open store sqlite:" + (dir / "folder.db").string() + ": " +
              (dir / "folder.db").string() + " is a folder");
  // A config file must set globals or return a table; a cassette is a file.
  std::ofstream(dir / "returns_42.lua") << "return 42";
  refused([&](HostConfig& c) { c.config_file = dir / "returns_42.lua"; },
          "must set globals or return a table, not a number");
  refused(
      [&](HostConfig& c) {
        c.provider = "replay";
        c.cassette = dir.path();
      },
      "is a folder, not a JSONL file");
  // A script model that is a folder ended in an internal error from inside the stream, and
  // one that never ends (a device) was read until memory ran out.
  refused(
      [&](HostConfig& c) {
        c.provider = "script";
        c.script = dir.path();
      },
      "is a folder, not a Lua file");
  refused(
      [&](HostConfig& c) {
        c.provider = "script";
        c.script = "/dev/zero";
      },
      "/dev/zero is larger than 16 MiB");
  HostConfig fine;
  fine.store = "sqlite:" + (dir / "t.db").string();
  fine.agents_dir = dir / "not_yet_made";  // may be created later
  Host host(fine);
  BOOST_TEST(host.list().empty());
}

BOOST_AUTO_TEST_CASE(pump_slices_a_tight_loop_and_the_result_is_exact) {
  Fixture f(Agents{{"busy", R"(
return function(thread)
  local x = 0
  for i = 1, 30000000 do x = x + i % 7 end
  thread:push("sum", x)
end)"}});
  auto id = f.host->launch("busy", Event::user("go"));
  auto longest = 0us;
  int calls = 0;
  while (calls < 100000) {
    ++calls;
    auto start = std::chrono::steady_clock::now();
    std::size_t left = f.host->pump(2ms);
    longest = std::max(longest, std::chrono::duration_cast<std::chrono::microseconds>(
                                    std::chrono::steady_clock::now() - start));
    if (left == 0) break;
  }
  BOOST_TEST_MESSAGE("tight loop: " << calls << " pumps, longest " << longest.count() << " us");
  BOOST_TEST(calls > 5);                // it was sliced, not run in one go
  BOOST_TEST(longest.count() < 50000);  // gross violations only; timing is reported above
  long long expected = 0;
  for (long long i = 1; i <= 30000000; ++i) expected += i % 7;
  BOOST_TEST(f.host->get(id).events[1].data.get<long long>() == expected);
}

BOOST_AUTO_TEST_CASE(slices_inside_the_agents_own_coroutines_and_sort_are_transparent) {
  Fixture f(Agents{{"nested", R"(
local function heavy(n) local x = 0 for i = 1, n do x = x + i % 3 end return x end
return function(thread)
  local gen = coroutine.wrap(function()
    for k = 1, 3 do
      local inner = coroutine.wrap(function() coroutine.yield(heavy(2000000)) end)
      coroutine.yield(inner() + k)
    end
  end)
  local got = {}
  for k = 1, 3 do got[k] = gen() end
  local co = coroutine.create(function(a) local b = coroutine.yield(a + heavy(2000000)) return b * 2 end)
  local ok1, v1 = coroutine.resume(co, 1)
  local ok2, v2 = coroutine.resume(co, 21)
  -- a comparator is not yieldable: the slice waits until the sort returns
  local t = { 5, 3, 9, 1 }
  table.sort(t, function(a, b) heavy(200000) return a < b end)
  thread:push("results", { gen = got, first = v1, second = v2, ok = ok1 and ok2,
                           sorted = table.concat(t, ","),
                           status = coroutine.status(co) })
end)"}});
  auto id = f.host->launch("nested", Event::user("go"));
  int calls = f.pump_until_idle(1ms);
  Thread thread = f.host->get(id);
  BOOST_REQUIRE_MESSAGE(thread.status() == Status::done, failure_of(thread.events.back()));
  const auto& r = thread.events[1].data;
  long long h = 0;
  for (int i = 1; i <= 2000000; ++i) h += i % 3;
  BOOST_TEST(r["gen"] == nlohmann::json({h + 1, h + 2, h + 3}));
  BOOST_TEST(r["first"].get<long long>() == 1 + h);
  BOOST_TEST(r["second"].get<long long>() == 42);
  BOOST_TEST(r["ok"] == true);
  BOOST_TEST(r["sorted"] == "1,3,5,9");
  BOOST_TEST(r["status"] == "dead");
  BOOST_TEST(calls > 3);
}

BOOST_AUTO_TEST_CASE(cancel_ends_a_waiting_run_and_refuses_an_ended_thread) {
  Fixture f(
      Agents{{"waiter", R"(return function(thread) require("luagent.host").call("slow", {}) end)"},
             {"adder", kCallsAdd}});
  f.collect_calls_of("slow");
  f.host->tool("add", nullptr, [](const nlohmann::json&) { return 5; });
  auto id = f.host->launch("waiter", Event::user("go"));
  f.host->pump(2ms);
  BOOST_TEST(f.host->pump(2ms) == 1u);
  f.host->cancel(id);
  BOOST_TEST(f.host->get(id).status() == Status::cancelled);
  BOOST_TEST(f.host->pump(2ms) == 0u);
  f.replies.at(0).ok(1);  // a late answer is harmless
  f.host->pump(2ms);
  BOOST_TEST(f.host->get(id).events.size() == 2u);
  try {
    f.host->cancel(id);
    BOOST_FAIL("cancelled twice");
  } catch (const Error& e) {
    BOOST_TEST((e.code() == ErrorCode::conflict));
  }
  auto done = f.host->launch("adder", Event::user("go"));
  f.pump_until_idle();
  BOOST_CHECK_THROW(f.host->cancel(done), Error);
}

BOOST_AUTO_TEST_CASE(updates_report_events_pauses_ends_and_failures_in_order) {
  Fixture f(
      Agents{{"asker", kAsksForAName}, {"broken", "return function(thread) error('boom') end"}});
  auto asker = f.host->launch("asker", Event::user("hi"));
  auto broken = f.host->launch("broken", Event::user("hi"));
  f.pump_until_idle();
  auto updates = f.host->updates();
  std::map<std::string, std::vector<Update::Kind>> kinds;
  for (const Update& u : updates) kinds[u.thread_id].push_back(u.kind);
  BOOST_TEST((kinds[asker].back() == Update::Kind::paused));
  BOOST_TEST((kinds[broken].back() == Update::Kind::failed));
  // The failed update carries its event and says why (its text was empty).
  int failures = 0;
  for (const Update& u : updates)
    if (u.thread_id == broken && u.kind == Update::Kind::failed) {
      ++failures;
      BOOST_TEST(u.event.type == "failed");
      BOOST_TEST(mentions(u.text, "boom"), u.text);
      BOOST_TEST(mentions(u.text, "[runtime]"), u.text);
    }
  BOOST_TEST(failures == 1);
  BOOST_TEST(f.host->updates().empty());  // taken once
  f.host->resume(asker, Resume::say("Ada"));
  f.pump_until_idle();
  updates = f.host->updates();
  BOOST_REQUIRE(!updates.empty());
  for (const Update& u : updates)
    BOOST_TEST_MESSAGE(static_cast<int>(u.kind) << " " << u.event.type << " " << u.thread_id);
  BOOST_TEST((updates.back().kind == Update::Kind::done));
  BOOST_TEST(updates.back().thread_id == asker);
}

// Streamed text arrives while the events before it may still be flushing: updates() used
// to report it ahead of them (with launch_waits_for_disk off, ahead of the launch's own
// event). Each chunk now waits for the events the thread held when it came.
BOOST_AUTO_TEST_CASE(updates_report_streamed_text_after_the_events_before_it) {
  test::TempDir model_dir;
  std::ofstream(model_dir / "model.lua") << "return function(r) return 'hello there' end\n";
  for (bool waits : {true, false}) {
    Fixture f(Agents{{"streamer", R"(
local llm = require "luagent.llm"
return function(thread)
  thread:push("before", 1)
  thread:push("after", llm.text("say hi", { stream = function(delta) end }))
  thread:push("after2", llm.text("again", { stream = function(delta) end }))
end)"}},
              [&](HostConfig& config) {
                config.provider = "script";
                config.script = model_dir / "model.lua";
                config.launch_waits_for_disk = waits;
              });
    f.host->launch("streamer", Event::user("go"));
    std::vector<std::string> seen;
    for (int calls = 0; calls < 20000; ++calls) {
      std::size_t left = f.host->pump(2ms);
      for (const Update& u : f.host->updates())
        if (u.kind == Update::Kind::event)
          seen.push_back(u.event.type);
        else if (u.kind == Update::Kind::chunk)
          seen.push_back("chunk");
      if (left == 0) break;
      std::this_thread::sleep_for(100us);
    }
    std::string order;
    for (const auto& what : seen) order += what + " ";
    // The script model streams its reply as one chunk.
    BOOST_TEST(order == "user_input before chunk after chunk after2 done ",
               (waits ? "waiting" : "not waiting") << " for the disk: " << order);
  }
}

// A step whose append is refused (another Host cancelled its thread meanwhile) gets the
// error in Lua where it waited for the commit (thread:execute's tool_started); one that
// catches it and ends must still end, and write nothing after the cancel. Its count of
// events waiting for a commit kept the refused ones, so it waited for them forever.
// Either way this Host reports the end as the cancel it was, with the stored cancelled
// event: it said `failed` (with an empty text for the step that caught the error).
BOOST_AUTO_TEST_CASE(a_step_refused_by_another_hosts_cancel_ends_as_cancelled) {
  auto agent = [](const std::string& execute) {
    return R"(
local host = require "luagent.host"
return function(thread)
  host.call("wait_here", {})
  local call = { intent = "add", a = 1, b = 2 }
  thread:push("add", call)
  -- tool_started must be durable before the tool runs: this waits for the commit
  )" + execute +
           R"(
  return thread
end)";
  };
  Fixture f(Agents{
      {"stubborn",
       agent("local ok, err = pcall(thread.execute, thread, call, function(c) return c.a + c.b "
             "end)")},
      {"plain", agent("thread:execute(call, function(c) return c.a + c.b end)")}});
  f.collect_calls_of("wait_here");
  HostConfig config;
  config.store = "sqlite:" + (f.dir / "t.db").string();
  config.agents_dir = f.dir.path();
  for (const char* name : {"stubborn", "plain"}) {
    BOOST_TEST_CONTEXT(name) {
      f.replies.clear();
      auto id = f.host->launch(name, Event::user("go"));
      f.pump_until_called();
      Host other(config);
      other.cancel(id, "from the other host");
      f.host->updates();
      f.replies[0].ok(1);
      std::size_t left = 1;
      for (int i = 0; i < 2000 && left > 0; ++i) {
        left = f.host->pump(2ms);
        std::this_thread::sleep_for(100us);
      }
      BOOST_TEST(left == 0u);  // the step ended
      Thread thread = other.get(id);
      BOOST_TEST(thread.events.back().type == "cancelled");
      BOOST_TEST(thread.status() == Status::cancelled);
      std::vector<Update> ends;
      for (Update& u : f.host->updates())
        if (u.kind != Update::Kind::event && u.kind != Update::Kind::chunk) ends.push_back(u);
      BOOST_REQUIRE_EQUAL(ends.size(), 1u);
      BOOST_TEST((ends[0].kind == Update::Kind::cancelled), ends[0].text);
      BOOST_TEST(ends[0].thread_id == id);
      BOOST_TEST(ends[0].event.type == "cancelled");
      BOOST_TEST(ends[0].event.data.value("reason", "") == "from the other host");
    }
  }
}

BOOST_AUTO_TEST_CASE(run_serves_until_stop_and_post_runs_on_the_host_thread) {
  Fixture f(Agents{{"adder", kCallsAdd}});
  f.host->tool("add", nullptr, [](const nlohmann::json&) { return 5; });
  auto owner = std::this_thread::get_id();
  std::string id;
  std::thread::id ran_on;
  std::thread client([&] {
    f.host->post([&] {
      ran_on = std::this_thread::get_id();
      id = f.host->launch("adder", Event::user("go"));  // on the owner thread: allowed
    });
    std::this_thread::sleep_for(200ms);
    f.host->stop();
  });
  f.host->run();
  client.join();
  BOOST_TEST((ran_on == owner));
  BOOST_REQUIRE(!id.empty());
  BOOST_TEST(f.host->get(id).status() == Status::done);
}

// A tool that launches another agent loads it inside the calling step. What the loading
// agent requires comes from its own folder, into its own environment, not the calling
// run's.
BOOST_AUTO_TEST_CASE(an_agent_launched_from_a_tool_loads_its_modules_from_its_own_folder) {
  Fixture f(Agents{{"caller", R"(
local host = require "luagent.host"
return function(thread)
  thread:push("child", host.call("spawn", {}))
  thread:push("words", require "words")
end)"},
                   {"callee", R"(
local words = require "only_here" -- at load time too
return function(thread) thread:push("words", words) end)"}});
  std::ofstream(f.dir / "caller" / "words.lua") << R"(return "the caller's words")";
  std::ofstream(f.dir / "callee" / "only_here.lua") << R"(return "the callee's words")";
  std::string child;
  f.host->tool("spawn", nullptr, [&](const nlohmann::json&) {
    child = f.host->launch("callee", Event::user("go"));
    return child;
  });
  auto id = f.host->launch("caller", Event::user("go"));
  f.pump_until_idle();
  for (const auto& [thread_id, words] :
       {std::pair{id, "the caller's words"}, std::pair{child, "the callee's words"}}) {
    Thread thread = f.host->get(thread_id);
    BOOST_TEST_REQUIRE(thread.status() == Status::done, failure_of(thread.events.back()));
    BOOST_TEST(thread.events.at(thread.events.size() - 2).data == words);
  }
}

// Starts a call to "pay" (tool_started is stored), then waits in the host tool "wait"
// before paying.
const char* kPaysAfterWaiting = R"(
local host = require "luagent.host"
return function(thread)
  local call = { intent = "pay", amount = 5 }
  thread:push("pay", call)
  thread:execute(call, function(c)
    host.call("wait", {})
    return host.call("pay", { amount = c.amount })
  end)
end)";

// Launches `agent` with "pay" answered by `pay` and "wait" held, and pumps until its step
// waits there: the thread's id, and the reply that lets the step go on.
std::pair<std::string, ToolReply> launch_until_waiting(
    Fixture& f, const std::string& agent,
    std::function<nlohmann::json(const nlohmann::json&)> pay) {
  auto waiting = std::make_shared<std::vector<ToolReply>>();  // the tool outlives this call
  f.host->async_tool("wait", nullptr, [waiting](const nlohmann::json&, ToolReply reply) {
    waiting->push_back(std::move(reply));
  });
  f.host->tool("pay", nullptr, std::move(pay));
  auto id = f.host->launch(agent, Event::user("go"));
  for (int i = 0; i < 2000 && waiting->empty(); ++i) {
    f.host->pump(2ms);
    std::this_thread::sleep_for(1ms);
  }
  BOOST_REQUIRE_EQUAL(waiting->size(), 1u);
  return {id, waiting->front()};
}

// Recovering a thread whose step still runs in this host would start a second step
// beside it: the live step's started tool call would be settled outcome_unknown and run
// again. It is a conflict, and the live step finishes with its call run once.
BOOST_AUTO_TEST_CASE(continue_of_a_thread_whose_step_is_in_flight_is_a_conflict) {
  Fixture f(Agents{{"payer", kPaysAfterWaiting}});
  int paid = 0;
  auto [id, waiting] =
      launch_until_waiting(f, "payer", [&](const nlohmann::json&) { return ++paid; });
  for (auto attempt : {std::function<void()>([&] { f.host->continue_thread(id); }),
                       std::function<void()>([&] { f.host->resume(id, Resume::recover()); })}) {
    try {
      attempt();
      BOOST_FAIL("a thread with a step in flight was recovered");
    } catch (const Error& e) {
      BOOST_TEST((e.code() == ErrorCode::conflict));
      BOOST_TEST(mentions(e.what(), "in flight"), e.what());
    }
  }
  waiting.ok(true);
  f.pump_until_idle();
  Thread thread = f.host->get(id);
  BOOST_TEST_REQUIRE(thread.status() == Status::done, failure_of(thread.events.back()));
  BOOST_TEST(paid == 1);
  for (const Event& event : thread.events) BOOST_TEST(event.type != "outcome_unknown");
}

// A step in flight in another process looked interrupted to a second one: its status is
// running by its events either way. Recovering it settled the live step's started call as
// outcome_unknown (an idempotent tool ran again, beside the live run), and the live step
// then lost its thread. Two hosts on one store stand for the two processes here (the
// locks are per open file, so they see each other as two processes do); the CLI test
// kills a real one.
BOOST_AUTO_TEST_CASE(
    continue_of_a_thread_whose_step_runs_in_another_host_is_refused_until_it_ends) {
  Fixture f(Agents{{"payer", kPaysAfterWaiting}});
  auto [id, waiting] = launch_until_waiting(f, "payer", [](const nlohmann::json&) { return 1; });

  HostConfig config;
  config.store = "sqlite:" + (f.dir / "t.db").string();
  config.agents_dir = f.dir.path();
  auto other = std::make_unique<Host>(config);
  int paid_by_other = 0;
  other->tool("wait", nullptr, [](const nlohmann::json&) { return true; });
  other->tool("pay", nullptr, [&](const nlohmann::json&) { return ++paid_by_other; });
  refused([&] { other->continue_thread(id); },
          "has a step in flight in another process using sqlite:", ErrorCode::conflict);
  BOOST_TEST(other->get(id).events.back().type == "tool_started");  // nothing written

  f.host.reset();  // the first process ends with its step in flight: its lock goes with it
  other->continue_thread(id);
  while (other->pump(2ms) > 0) std::this_thread::sleep_for(1ms);
  Thread thread = other->get(id);
  BOOST_TEST_REQUIRE(thread.status() == Status::done, failure_of(thread.events.back()));
  int unknown = 0;
  for (const Event& event : thread.events) unknown += event.type == "outcome_unknown";
  BOOST_TEST(unknown == 1);
}

// Every pump makes progress, whatever its budget: zero, less than nothing, or "no limit"
// spelled as the largest duration (which must not overflow the deadline).
BOOST_AUTO_TEST_CASE(pumps_with_zero_negative_or_huge_budgets_make_progress) {
  for (auto budget : {std::chrono::microseconds(0), std::chrono::microseconds(-5),
                      std::chrono::microseconds(1), std::chrono::microseconds::max()}) {
    Fixture f(Agents{{"adder", kCallsAdd}});
    f.host->tool("add", nullptr,
                 [](const nlohmann::json& a) { return a["a"].get<int>() + a["b"].get<int>(); });
    auto id = f.host->launch("adder", Event::user("go"));
    int pumps = 0;
    while (f.host->pump(budget) > 0 && pumps < 2000) {
      ++pumps;
      std::this_thread::sleep_for(1ms);
    }
    Thread thread = f.host->get(id);
    BOOST_TEST(thread.status() == Status::done, "budget " << budget.count() << " us");
    BOOST_TEST(thread.events.at(1).data.get<int>() == 5);
  }
}

// The script provider (a Lua function plays the model) keeps a real provider's rules: a
// model that never returns is stopped by the CPU limit, a reply that is not UTF-8 fails
// its call, and so does a prompt that is not; each a clear error in its step, and the
// host goes on.
BOOST_AUTO_TEST_CASE(script_models_and_prompts_that_break_the_rules_fail_their_call) {
  test::TempDir dir;
  const std::map<std::string, std::string> agents = {
      {"latin1",
       "local llm = require 'luagent.llm'\n"
       "return function(thread)\n"
       "  local ok, e = pcall(llm.text, 'caf\\233')\n"
       "  thread:push('refused', e.message)\n"
       "end\n"},
      {"asker",
       "local llm = require 'luagent.llm'\n"
       "return function(thread) thread:push('reply', llm.text(thread:last().data)) end"}};
  for (const auto& [name, source] : agents) {
    std::filesystem::create_directories(dir / name);
    std::ofstream(dir / name / "agent.lua") << source;
  }
  std::ofstream(dir / "model.lua")
      << "return function(r)\n"
         "  local text = r.messages[1].content\n"
         "  if text == 'spin' then while true do end end\n"
         "  if text == 'latin1' then return 'caf\\233' end\n"
         "  if text == 'trap' then\n"
         "    return setmetatable({}, { __index = function() error('no') end })\n"
         "  end\n"
         "  return 'fine'\n"
         "end\n";
  HostConfig config;
  config.store = "sqlite:" + (dir / "t.db").string();
  config.agents_dir = dir.path();
  config.provider = "script";
  config.script = dir / "model.lua";
  config.step_cpu_ms = 300;
  Host host(config);
  auto refused = host.launch("latin1", Event::user("go"));
  auto spin = host.launch("asker", Event::user("spin"));
  auto latin1 = host.launch("asker", Event::user("latin1"));
  auto fine = host.launch("asker", Event::user("hello"));
  auto trap = host.launch("asker", Event::user("trap"));
  host.run_until_idle();
  auto refusal = host.get(refused).events.at(1).data.get<std::string>();
  BOOST_TEST(mentions(refusal, "llm.text: the prompt is not UTF-8"), refusal);
  const Event spun = host.get(spin).events.back();
  BOOST_TEST(spun.type == "failed");
  BOOST_TEST(spun.data.value("code", "") == "limit", spun.data.dump());
  const Event bad = host.get(latin1).events.back();
  BOOST_TEST(bad.type == "failed");
  BOOST_TEST(mentions(bad.data.value("message", ""), "reply is not UTF-8"), bad.data.dump());
  BOOST_TEST(host.get(fine).events.at(1).data == "fine");
  // The reply table was read with lua_getfield where nothing protects it: a raising
  // __index aborted the host. It is read raw: no text there is an empty reply.
  BOOST_TEST(host.get(trap).events.at(1).data == "");
}

// An on_event callback that cancels the thread it is told about used to free the run
// under the loop reporting its events, and the Thread the callback held with it.
BOOST_AUTO_TEST_CASE(cancel_from_on_event_of_the_same_thread_ends_it_cleanly) {
  Fixture f(Agents{{"adder_then_waits", R"(
local host = require "luagent.host"
return function(thread)
  thread:push("sum", host.call("add", { a = 2, b = 3 }))
  host.call("slow", {})
  thread:push("late", true)
end)"},
                   {"adder", kCallsAdd}});
  f.host->tool("add", nullptr, [](const nlohmann::json&) { return 5; });
  f.collect_calls_of("slow");
  std::string cancelling;
  std::vector<std::string> seen;  // what the callback read after its cancel returned
  std::vector<std::string> refused;
  f.host->on_event([&](const Thread& t, const Event& e) {
    if (e.type != "sum" || t.id != cancelling) return;
    try {
      Event cancelled = f.host->cancel(t.id);
      seen.push_back(cancelled.type + " " + t.id + " " + e.type);
    } catch (const Error& error) {
      refused.push_back(error.what());
    }
  });
  auto id = cancelling = f.host->launch("adder_then_waits", Event::user("go"));
  f.pump_until_idle(2ms, 2000);
  BOOST_TEST(refused.empty());
  BOOST_TEST(seen == std::vector<std::string>{"cancelled " + id + " sum"});
  Thread thread = f.host->get(id);
  BOOST_TEST(thread.status() == Status::cancelled);
  std::vector<std::string> types;
  for (const Event& e : thread.events) types.push_back(e.type);
  BOOST_TEST(types == (std::vector<std::string>{"user_input", "sum", "cancelled"}));
  auto updates = f.host->updates();
  BOOST_REQUIRE(!updates.empty());
  BOOST_TEST((updates.back().kind == Update::Kind::cancelled));
  BOOST_REQUIRE_EQUAL(f.replies.size(), 1u);
  f.replies[0].ok(1);  // a late answer is harmless
  f.pump_until_idle(2ms, 2000);
  BOOST_TEST(f.host->get(id).events.size() == 3u);

  // The sum and the done of this agent commit together: by the time the sum is reported
  // the thread has ended, and the cancel says so instead of appending after `done`.
  auto ended = cancelling = f.host->launch("adder", Event::user("go"));
  f.pump_until_idle(2ms, 2000);
  BOOST_REQUIRE_EQUAL(refused.size(), 1u);
  BOOST_TEST(mentions(refused[0], "done"), refused[0]);
  BOOST_TEST(f.host->get(ended).status() == Status::done);
  BOOST_TEST(f.host->get(ended).events.back().type == "done");
  BOOST_TEST(f.host->pump(2ms) == 0u);  // still usable
}

// Runs whose events commit together: the callback told of one run's event cancels the
// other, whose events in that commit are reported before its `cancelled`.
BOOST_AUTO_TEST_CASE(cancel_from_on_event_of_another_thread_reports_its_events_first) {
  Fixture f(Agents{{"ticker", R"(
return function(thread)
  thread:push("tick", 1)
  require("luagent.host").call("slow", {})
end)"}});
  f.collect_calls_of("slow");
  std::string first, second;
  std::map<std::string, std::vector<std::string>> told;
  f.host->on_event([&](const Thread& t, const Event& e) {
    told[t.id].push_back(e.type);
    if (t.id == first && e.type == "tick") f.host->cancel(second);
  });
  first = f.host->launch("ticker", Event::user("go"));
  second = f.host->launch("ticker", Event::user("go"));
  // A budget both first steps fit in, however loaded the machine, so their ticks go in one
  // commit; and time for the commit's flush, which a pump does not wait for (the slow
  // tool is answered only after the loop).
  for (int i = 0; i < 3000 && f.host->get(second).status() != Status::cancelled; ++i) {
    f.host->pump(500ms);
    std::this_thread::sleep_for(1ms);
  }
  for (const ToolReply& reply : f.replies) reply.ok(nullptr);
  f.pump_until_idle(2ms, 2000);
  BOOST_TEST(f.host->get(first).status() == Status::done);
  std::vector<std::string> types;
  for (const Event& e : f.host->get(second).events) types.push_back(e.type);
  BOOST_TEST(types == (std::vector<std::string>{"user_input", "tick", "cancelled"}),
             boost::test_tools::per_element());
  BOOST_TEST(told[second] == types);
}

// launch() reports its event outside any pump: a callback there must not pump either.
BOOST_AUTO_TEST_CASE(pump_from_on_event_outside_a_pump_is_a_usage_error) {
  Fixture f(Agents{{"adder", kCallsAdd}});
  f.host->tool("add", nullptr, [](const nlohmann::json&) { return 5; });
  std::vector<std::string> refused;
  f.host->on_event([&](const Thread&, const Event&) {
    try {
      f.host->pump(1ms);
    } catch (const Error& e) {
      refused.push_back(e.what());
    }
  });
  auto id = f.host->launch("adder", Event::user("go"));
  BOOST_REQUIRE_EQUAL(refused.size(), 1u);
  BOOST_TEST(mentions(refused[0], "from inside a callback"), refused[0]);
  f.pump_until_idle();
  BOOST_TEST(refused.size() == 3u);
  BOOST_TEST(f.host->get(id).status() == Status::done);
}

// A cancel from on_event while launch() or resume() reports its event, before the step
// has started: the step must not start (it used to run the agent on the cancelled thread,
// calling its tools, and fail on the lost compare-and-swap).
BOOST_AUTO_TEST_CASE(cancel_from_on_event_during_launch_or_resume_starts_no_step) {
  Fixture f(Agents{{"asker", R"(
local host = require "luagent.host"
return function(thread)
  local call, answer = thread:resumed()
  host.call("add", {})
  if call then return thread end
  return thread:await("human", { q = "name?" })
end)"}});
  int tool_calls = 0;
  f.host->tool("add", nullptr, [&](const nlohmann::json&) { return ++tool_calls; });
  std::string cancel_on;
  f.host->on_event([&](const Thread& t, const Event& e) {
    if (e.type == cancel_on) f.host->cancel(t.id, "changed my mind");
  });
  cancel_on = "user_input";
  auto launched = f.host->launch("asker", Event::user("go"));
  f.pump_until_idle(2ms, 2000);
  BOOST_TEST(tool_calls == 0);
  BOOST_TEST(f.host->get(launched).status() == Status::cancelled);
  BOOST_TEST(f.host->get(launched).events.size() == 2u);

  cancel_on = "human_response";
  auto asked = f.host->launch("asker", Event::user("go"));
  f.pump_until_idle(2ms, 2000);
  BOOST_REQUIRE(f.host->get(asked).status() == Status::awaiting_human);
  BOOST_TEST(tool_calls == 1);
  f.host->resume(asked, Resume::say("Ada"));
  f.pump_until_idle(2ms, 2000);
  BOOST_TEST(tool_calls == 1);
  Thread thread = f.host->get(asked);
  BOOST_TEST(thread.status() == Status::cancelled);
  BOOST_TEST(thread.events.at(thread.events.size() - 2).type == "human_response");
  for (const std::string& line : f.log) BOOST_TEST(line.rfind("error:", 0) != 0, line);
}

// Replacing the callback from inside itself used to destroy the std::function running.
// What the callbacks record lives outside them: one destroyed while it runs must not be
// what tells the test so.
namespace {
bool g_event_callback_destroyed = false;
bool g_reload_callback_destroyed = false;
std::vector<std::string> g_calls;
Host* g_host = nullptr;

// Sets its flag when the callback holding it is destroyed.
struct Witness {
  bool* destroyed;
  ~Witness() { *destroyed = true; }
};

void save_atomically(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path.string() + ".tmp") << text;
  std::filesystem::rename(path.string() + ".tmp", path);
}

// Watched agents, polled often: a saved file reloads within a few pumps.
void watch_by_polling(HostConfig& config) {
  config.watch = true;
  config.watch_mode = "poll";
  config.watch_poll_interval = 10ms;
}
}  // namespace

BOOST_AUTO_TEST_CASE(on_event_and_on_reload_may_replace_themselves_from_inside) {
  Fixture f(Agents{{"adder", kCallsAdd}}, watch_by_polling);
  f.host->tool("add", nullptr, [](const nlohmann::json&) { return 5; });
  g_host = f.host.get();
  f.host->on_event([witness = std::make_shared<Witness>(&g_event_callback_destroyed)](
                       const Thread&, const Event& e) {
    g_host->on_event([](const Thread&, const Event& later) { g_calls.push_back(later.type); });
    g_calls.push_back(g_event_callback_destroyed ? "destroyed while it ran" : "first " + e.type);
  });
  auto id = f.host->launch("adder", Event::user("go"));
  f.pump_until_idle();
  BOOST_TEST(g_event_callback_destroyed);  // once it had returned
  BOOST_TEST(g_calls == (std::vector<std::string>{"first user_input", "sum", "done"}));
  BOOST_TEST(f.host->get(id).status() == Status::done);

  g_calls.clear();
  f.host->on_reload([witness = std::make_shared<Witness>(&g_reload_callback_destroyed)](
                        const ReloadReport& report) {
    g_host->on_reload(nullptr);
    g_calls.push_back(g_reload_callback_destroyed ? "destroyed while it ran" : report.agent);
  });
  save_atomically(f.dir / "adder" / "agent.lua", std::string(kCallsAdd) + "\n-- saved again\n");
  for (int i = 0; i < 500 && g_calls.empty(); ++i) {
    f.host->pump(2ms);
    std::this_thread::sleep_for(2ms);
  }
  BOOST_TEST(g_calls == std::vector<std::string>{"adder"});
  BOOST_TEST(g_reload_callback_destroyed);
  g_host = nullptr;
}

// An exception from on_event used to leave pump() in the middle of the host's
// bookkeeping: a thread done in the store but never finished (pump() kept returning 1),
// or during launch() / resume() an answer stored with no step started.
BOOST_AUTO_TEST_CASE(a_throwing_on_event_is_logged_and_every_thread_still_advances) {
  Fixture f(Agents{{"asker", kAsksForAName}});
  std::set<std::string> throw_on;
  f.host->on_event([&](const Thread&, const Event& e) {
    if (throw_on.count(e.type)) throw std::runtime_error("the UI broke on " + e.type);
  });
  throw_on = {"user_input", "await", "human_response", "name", "done"};
  auto id = f.host->launch("asker", Event::user("go"));  // does not throw
  f.pump_until_idle(2ms, 2000);
  BOOST_REQUIRE(f.host->get(id).status() == Status::awaiting_human);
  f.host->resume(id, Resume::say("Ada"));  // does not throw
  f.pump_until_idle(2ms, 2000);
  f.host->run_until_idle();
  Thread thread = f.host->get(id);
  BOOST_TEST(thread.status() == Status::done);
  BOOST_TEST(thread.events.size() == 5u);
  std::vector<Update::Kind> kinds;
  for (const Update& u : f.host->updates()) kinds.push_back(u.kind);
  BOOST_REQUIRE(!kinds.empty());
  BOOST_TEST((std::count(kinds.begin(), kinds.end(), Update::Kind::paused) == 1));
  BOOST_TEST((kinds.back() == Update::Kind::done));
  for (const char* type : {"user_input", "await", "human_response", "name", "done"})
    BOOST_TEST(f.logged(std::string("error: the on_event callback threw: the UI broke on ") + type),
               type);
  BOOST_CHECK_THROW(f.host->cancel(id), Error);  // ended: nothing appended after done
  BOOST_TEST(f.host->get(id).events.size() == 5u);
}

BOOST_AUTO_TEST_CASE(a_throwing_on_reload_is_logged_and_the_reload_still_serves) {
  Fixture f(Agents{{"adder", kCallsAdd}}, watch_by_polling);
  f.host->tool("add", nullptr, [](const nlohmann::json&) { return 5; });
  std::string before = f.host->agent_version("adder");
  int reports = 0;
  f.host->on_reload([&](const ReloadReport&) {
    ++reports;
    throw std::runtime_error("the reload panel broke");
  });
  save_atomically(f.dir / "adder" / "agent.lua", std::string(kCallsAdd) + "\n-- saved again\n");
  for (int i = 0; i < 500 && reports == 0; ++i) {
    f.host->pump(2ms);  // does not throw
    std::this_thread::sleep_for(2ms);
  }
  BOOST_TEST(reports == 1);
  BOOST_TEST(f.logged("error: the on_reload callback threw: the reload panel broke"));
  BOOST_TEST(f.host->agent_version("adder") != before);
  auto id = f.host->launch("adder", Event::user("go"));
  f.pump_until_idle();
  BOOST_TEST(f.host->get(id).status() == Status::done);
}

// A posted task that threw used to drop every task queued behind it in the same turn,
// the host's own too (here an asynchronous tool's answer): its run waited forever.
BOOST_AUTO_TEST_CASE(a_throwing_posted_task_loses_nothing_queued_behind_it) {
  Fixture f(Agents{{"waiter", R"(
return function(thread)
  thread:push("path", require("luagent.host").call("find_path", {}))
end)"}});
  f.collect_calls_of("find_path");
  auto id = f.host->launch("waiter", Event::user("go"));
  f.pump_until_called();
  std::vector<std::string> ran;
  f.host->post([] { throw std::runtime_error("ui"); });
  f.host->post([&] { ran.push_back("second"); });
  f.replies[0].ok("north");  // queued behind both
  f.host->post([&] { ran.push_back("third"); });
  try {
    f.host->pump(2ms);
    BOOST_ERROR("the task's exception did not reach pump()");
  } catch (const std::runtime_error& e) {
    BOOST_TEST(e.what() == std::string("ui"));
  }
  BOOST_TEST(ran.empty());
  f.pump_until_idle(2ms, 2000);
  BOOST_TEST(ran == (std::vector<std::string>{"second", "third"}));
  Thread thread = f.host->get(id);
  BOOST_TEST(thread.status() == Status::done);
  BOOST_TEST(thread.events.at(1).data == "north");
}

// An asynchronous tool that answered and then threw: the call failed at once (the throw),
// but its answer was already on its way to the loop. It used to land in the run's next
// host call, which then returned the first call's answer instead of waiting for its own.
BOOST_AUTO_TEST_CASE(an_answer_of_a_call_that_failed_never_reaches_the_next_call) {
  Fixture f(Agents{{"retrier", R"(
local host = require "luagent.host"
return function(thread)
  local ok, err = pcall(host.call, "hasty", {})
  thread:push("first", tostring(err))
  thread:push("second", host.call("patient", {}))
end)"}});
  f.host->async_tool("hasty", nullptr, [](const nlohmann::json&, ToolReply reply) {
    reply.ok("the hasty answer");
    throw std::runtime_error("and then it threw");
  });
  std::vector<ToolReply> patient;
  f.host->async_tool("patient", nullptr,
                     [&](const nlohmann::json&, ToolReply reply) { patient.push_back(reply); });
  auto id = f.host->launch("retrier", Event::user("go"));
  for (int i = 0; i < 50; ++i) f.host->pump(2ms);
  BOOST_REQUIRE_EQUAL(patient.size(), 1u);
  BOOST_TEST(f.host->get(id).status() == Status::running);  // still waiting for "patient"
  patient[0].ok("the patient answer");
  f.pump_until_idle();
  Thread thread = f.host->get(id);
  BOOST_TEST_REQUIRE(thread.status() == Status::done, failure_of(thread.events.back()));
  BOOST_TEST(mentions(thread.events.at(1).data.get<std::string>(), "and then it threw"));
  BOOST_TEST(thread.events.at(2).data == "the patient answer");
}

// Lua cannot suspend a step inside table.sort's comparator (or string.gsub's function, a
// __tostring, ...). An asynchronous tool called there used to be started anyway, then the
// step got Lua's "attempt to yield across a C-call boundary", and the run was left marked
// as waiting: the tool's late answer was taken for the run's next call.
BOOST_AUTO_TEST_CASE(an_async_tool_called_where_lua_cannot_wait_is_refused_before_it_starts) {
  Fixture f(Agents{{"sorter", R"(
local host = require "luagent.host"
return function(thread)
  local ok, err = pcall(table.sort, { 3, 1, 2 }, function(a, b)
    host.call("slow", {})
    return a < b
  end)
  thread:push("refused", err.message)
  local ok, err = pcall(table.sort, { 3, 1, 2 }, function(a, b)
    coroutine.wrap(function() host.call("slow", {}) end)()
    return a < b
  end)
  thread:push("refused in a coroutine", err.message)
  thread:push("answer", host.call("slow", {}))
end)"}});
  f.collect_calls_of("slow");
  auto id = f.host->launch("sorter", Event::user("go"));
  for (int i = 0; i < 50 && f.replies.size() < 2; ++i) f.host->pump(2ms);
  BOOST_REQUIRE_GE(f.replies.size(), 1u);
  for (std::size_t i = 0; i + 1 < f.replies.size(); ++i) f.replies[i].ok("for a call that failed");
  f.replies.back().ok("its own answer");
  f.pump_until_idle();
  Thread thread = f.host->get(id);
  BOOST_TEST_REQUIRE(thread.status() == Status::done, failure_of(thread.events.back()));
  BOOST_TEST(f.replies.size() == 1u);  // the refused call never reached the tool
  auto refusal = thread.events.at(1).data.get<std::string>();
  BOOST_TEST(mentions(refusal, "host tool 'slow' cannot be called here"), refusal);
  BOOST_TEST(thread.events.at(2).data == refusal);
  BOOST_TEST(thread.events.at(3).data == "its own answer");
}

// The same for an LLM call: it used to start, fail to suspend, and leave the run with a
// call in flight, so the step's next call failed as "a run has two LLM calls in flight"
// (an internal error).
BOOST_AUTO_TEST_CASE(an_llm_call_made_where_lua_cannot_wait_is_refused_before_it_starts) {
  test::TempDir model_dir;
  std::ofstream(model_dir / "model.lua") << "return function(r) return 'reply' end\n";
  Fixture f(Agents{{"sorter", R"(
local llm = require "luagent.llm"
return function(thread)
  local ok, err = pcall(table.sort, { 3, 1, 2 }, function(a, b)
    llm.text("compare")
    return a < b
  end)
  thread:push("refused", err.message)
  thread:push("answer", llm.text("hello"))
end)"}},
            [&](HostConfig& config) {
              config.provider = "script";
              config.script = model_dir / "model.lua";
            });
  auto id = f.host->launch("sorter", Event::user("go"));
  f.pump_until_idle();
  Thread thread = f.host->get(id);
  BOOST_TEST_REQUIRE(thread.status() == Status::done, failure_of(thread.events.back()));
  auto refusal = thread.events.at(1).data.get<std::string>();
  BOOST_TEST(mentions(refusal, "llm.text cannot be called here"), refusal);
  BOOST_TEST(thread.events.at(2).data == "reply");
  BOOST_TEST(f.host->calls(id).size() == 1u);  // the refused call was never made
}

// The script model receives { messages = ..., model = ... }: one level around a message
// list that llm.* checked on its own. A prompt at the depth limit made
// that table too deep, and the refusal was thrown out of pump(), leaving the thread running
// with no step (the CLI exited 1 on it). Such a prompt reaches the model now; a refusal
// would fail only the call.
BOOST_AUTO_TEST_CASE(a_script_model_gets_a_prompt_nested_as_deep_as_llm_accepts) {
  test::TempDir model_dir;
  std::ofstream(model_dir / "model.lua") << R"(
return function(request)
  local depth, value = 0, request.messages[1].content
  while type(value) == "table" do depth, value = depth + 1, value[1] end
  return "depth " .. depth
end
)";
  Fixture f(Agents{{"deep", R"(
local llm = require "luagent.llm"
return function(thread)
  local content = "x"
  for i = 1, 98 do content = { content } end
  thread:push("answer", llm.text({ { role = "user", content = content } }))
end)"}},
            [&](HostConfig& config) {
              config.provider = "script";
              config.script = model_dir / "model.lua";
            });
  auto id = f.host->launch("deep", Event::user("go"));
  f.pump_until_idle();
  Thread thread = f.host->get(id);
  BOOST_TEST_REQUIRE(thread.status() == Status::done, failure_of(thread.events.back()));
  BOOST_TEST(thread.events.at(1).data == "depth 98");
}

// A ToolReply is copyable and so movable: one moved from (into a lambda, a queue) has no
// call to answer. Answering it, or asking it, used to dereference a null state.
BOOST_AUTO_TEST_CASE(a_moved_from_tool_reply_is_a_usage_error) {
  Fixture f(Agents{{"waiter", R"(
return function(thread)
  thread:push("path", require("luagent.host").call("find_path", {}))
end)"}});
  f.collect_calls_of("find_path");
  auto id = f.host->launch("waiter", Event::user("go"));
  f.pump_until_called();
  ToolReply taken = std::move(f.replies[0]);
  refused([&] { f.replies[0].ok("north"); }, "moved from");
  refused([&] { f.replies[0].fail("lost"); }, "moved from");
  refused([&] { (void)f.replies[0].answered(); }, "moved from");
  BOOST_TEST(!taken.answered());
  taken.ok("north");
  f.pump_until_idle();
  Thread thread = f.host->get(id);
  BOOST_TEST_REQUIRE(thread.status() == Status::done, failure_of(thread.events.back()));
  BOOST_TEST(thread.events.at(1).data == "north");
}

// A query whose time bounds can match no thread (updated_before_ms at or before
// updated_since_ms, or a negative time) used to return an empty list, as if there were
// no such thread: swapped bounds looked like an empty store.
BOOST_AUTO_TEST_CASE(list_refuses_time_bounds_that_match_nothing_and_takes_any_limit) {
  Fixture f(Agents{{"asker", kAsker}});
  auto first = f.host->launch("asker", Event::user("go"));
  auto second = f.host->launch("asker", Event::user("go"));
  f.pump_until_idle();
  const std::int64_t updated = f.host->get(second).events.back().at_ms;

  ThreadQuery query;
  query.limit = std::numeric_limits<std::size_t>::max();
  BOOST_TEST(f.host->list(query).size() == 2u);
  query.limit = 1;
  BOOST_TEST(f.host->list(query).size() == 1u);
  query.limit = 0;
  query.updated_since_ms = updated;
  query.updated_before_ms = updated + 1;
  BOOST_TEST(!f.host->list(query).empty());

  query.updated_since_ms = updated + 1;
  query.updated_before_ms = updated;
  refused([&] { f.host->list(query); },
          "updated_before_ms (" + std::to_string(updated) + ") must be after updated_since_ms");
  query.updated_before_ms = query.updated_since_ms;
  refused([&] { f.host->list(query); }, "must be after updated_since_ms");
  query = {};
  query.updated_before_ms = -1;
  refused([&] { f.host->list(query); }, "updated_before_ms must be 0 (no bound) or a time in Unix");
  query = {};
  query.updated_since_ms = -1;
  refused([&] { f.host->list(query); }, "updated_since_ms must be 0 (no bound) or a time in Unix");
  BOOST_TEST(f.host->list(ThreadQuery{}).size() == 2u);  // still usable
  BOOST_TEST(!first.empty());
}

// A thread id with a NUL byte was looked up as given, and the not_found message carried the
// NUL: what() (a C string) ended there, naming another thread ("no thread th_a") and losing
// the rest. An id of a megabyte came back whole in the message. Each verb that takes a
// thread id now says what is wrong with it, in a message of bounded size.
BOOST_AUTO_TEST_CASE(thread_ids_with_a_nul_byte_or_of_any_length_get_a_clear_error) {
  Fixture f(Agents{{"asker", kAsker}});
  auto id = f.host->launch("asker", Event::user("go"));
  f.pump_until_idle();
  const std::string with_nul = id + std::string(1, '\0') + "x";
  const std::string huge(1 << 20, 'x');
  std::vector<std::pair<std::string, std::function<void(const std::string&)>>> verbs = {
      {"get", [&](const std::string& t) { f.host->get(t); }},
      {"calls", [&](const std::string& t) { f.host->calls(t); }},
      {"fork", [&](const std::string& t) { f.host->fork(t, 1); }},
      {"cancel", [&](const std::string& t) { f.host->cancel(t); }},
      {"resume", [&](const std::string& t) { f.host->resume(t, Resume::say("hi")); }},
      {"continue_thread", [&](const std::string& t) { f.host->continue_thread(t); }}};
  for (const auto& [verb, call] : verbs) {
    BOOST_TEST_CONTEXT(verb) {
      try {
        call(with_nul);
        BOOST_ERROR("accepted an id with a NUL byte");
      } catch (const Error& e) {
        BOOST_TEST((e.code() == ErrorCode::usage), e.what());
        BOOST_TEST(std::string(e.what()).find("contains a NUL byte") != std::string::npos,
                   e.what());
      }
      try {
        call(huge);
        BOOST_ERROR("found a thread with a megabyte id");
      } catch (const Error& e) {
        BOOST_TEST((e.code() == ErrorCode::not_found), e.what());
        BOOST_TEST(e.message().size() < 400u);
        BOOST_TEST(mentions(e.message(), "1048576 bytes"), e.message());
      }
    }
  }
  BOOST_TEST(f.host->get(id).status() == Status::awaiting_human);  // nothing changed
  BOOST_TEST(f.host->list().size() == 1u);
}

// HostConfig::log is the embedder's code too. One that threw used to throw out of the
// host's own bookkeeping: a failed step's "thread ...: error" line threw out of pump()
// before the end was reported (updates() never said failed), and a throwing on_event's
// report threw out of launch() after the thread was stored, so the caller had no id for
// a thread that existed and whose step never started.
BOOST_AUTO_TEST_CASE(a_throwing_log_callback_loses_nothing) {
  Fixture f(Agents{{"broken", "return function(thread) error('boom') end"},
                   {"talker", "return function(thread) print('hello') thread:push('said', 1) end"}},
            [](HostConfig& config) {
              config.log = [](std::string_view, std::string_view) {
                throw std::runtime_error("the log is full");
              };
            });
  auto broken = f.host->launch("broken", Event::user("go"));
  auto talker = f.host->launch("talker", Event::user("go"));
  BOOST_CHECK_NO_THROW(f.pump_until_idle());
  BOOST_TEST(f.host->get(broken).status() == Status::failed);
  BOOST_TEST(f.host->get(talker).status() == Status::done);
  std::set<std::string> failed;
  for (const Update& u : f.host->updates())
    if (u.kind == Update::Kind::failed) failed.insert(u.thread_id);
  BOOST_TEST(failed.count(broken) == 1u);

  f.host->on_event([](const Thread&, const Event&) { throw std::runtime_error("ui"); });
  std::string id;
  BOOST_CHECK_NO_THROW(id = f.host->launch("talker", Event::user("go")));
  BOOST_REQUIRE(!id.empty());
  BOOST_CHECK_NO_THROW(f.pump_until_idle());
  BOOST_TEST(f.host->get(id).status() == Status::done);
  BOOST_TEST(f.host->list().size() == 3u);
}

// HostConfig::log is called from inside the host's work too: an agent's top-level print
// while launch() loads it. A pump() from there was allowed (launch is not a pump, and the
// log was not counted as a callback), and ran another agent's step in the middle of that
// load: the step saw no run of its own and failed ("belongs to a step that has ended").
BOOST_AUTO_TEST_CASE(pump_from_the_log_callback_is_a_usage_error) {
  Host* host = nullptr;
  std::vector<std::string> refusals;
  Fixture f(Agents{{"busy", R"(
return function(thread)
  local x = 0
  for i = 1, 3000000 do x = x + i % 7 end
  thread:push("sum", x)
end)"},
                   {"printer", R"(
print("loading")
return function(thread) thread:push("printed", 1) end)"}},
            [&](HostConfig& config) {
              config.log = [&](std::string_view, std::string_view message) {
                if (message != "loading") return;
                try {
                  host->pump(200ms);
                } catch (const Error& e) {
                  refusals.push_back(e.what());
                }
              };
            });
  host = f.host.get();
  auto busy = f.host->launch("busy", Event::user("go"));
  f.host->pump(1ms);  // its step is paused mid-loop
  auto printer = f.host->launch("printer", Event::user("go"));
  BOOST_REQUIRE(!refusals.empty());
  BOOST_TEST(mentions(refusals.front(), "Host::pump called from inside a callback"),
             refusals.front());
  f.pump_until_idle();
  for (const auto& id : {busy, printer}) {
    Thread thread = f.host->get(id);
    BOOST_TEST(thread.status() == Status::done, id << ": " << failure_of(thread.events.back()));
  }
}

// A Host destroyed with steps in flight of every kind (an LLM call pending, an
// asynchronous tool unanswered, Lua paused mid-loop by the time slice, a thread waiting
// for a human) ends without a crash or a hang; the replies that outlive it are harmless;
// what it acknowledged is in the store, and a new Host on the store carries each thread on.
BOOST_AUTO_TEST_CASE(a_host_destroyed_with_steps_in_flight_leaves_every_thread_continuable) {
  test::TempDir model_dir;
  std::ofstream(model_dir / "model.lua") << "return function(r) return 'thought' end\n";
  auto with_model = [&](HostConfig& config) {
    config.provider = "script";
    config.script = model_dir / "model.lua";
    config.replay_latency = 300ms;  // the call is still pending when the host goes
  };
  Fixture f(Agents{{"waiter", R"(
return function(thread) thread:push("path", require("luagent.host").call("slow", {})) end)"},
                   {"thinker", R"(
return function(thread) thread:push("reply", require("luagent.llm").text("think")) end)"},
                   {"busy", R"(
return function(thread)
  local x = 0
  for i = 1, 50000000 do x = x + i % 7 end
  thread:push("sum", x)
end)"},
                   {"asker", kAsksForAName}},
            with_model);
  f.collect_calls_of("slow");
  std::vector<std::string> acknowledged;
  f.host->on_event([&](const Thread& t, const Event& e) {
    acknowledged.push_back(t.id + "#" + std::to_string(e.id));
  });
  auto waiter = f.host->launch("waiter", Event::user("go"));
  auto thinker = f.host->launch("thinker", Event::user("go"));
  auto busy = f.host->launch("busy", Event::user("go"));
  auto asker = f.host->launch("asker", Event::user("go"));
  // Until the asker's step has ended and only waiter, thinker and busy are in flight.
  std::size_t in_flight = 0;
  for (int i = 0; i < 100 && (f.replies.empty() || in_flight != 3u); ++i)
    in_flight = f.host->pump(1ms);
  BOOST_REQUIRE_EQUAL(f.replies.size(), 1u);
  BOOST_REQUIRE_EQUAL(in_flight, 3u);
  BOOST_REQUIRE(f.host->get(asker).status() == Status::awaiting_human);
  BOOST_REQUIRE(f.host->get(busy).status() == Status::running);

  std::thread answerer([reply = f.replies[0]] { reply.ok("too late"); });
  f.host.reset();
  answerer.join();
  BOOST_TEST(f.replies[0].answered());
  refused([&] { f.replies[0].fail("twice"); }, "already answered", ErrorCode::conflict);
  f.replies.clear();  // the last copies of the reply go after their host

  HostConfig config;
  config.store = "sqlite:" + (f.dir / "t.db").string();
  config.agents_dir = f.dir.path();
  with_model(config);
  config.replay_latency = 0ms;
  Host next(config);
  next.tool("slow", nullptr, [](const nlohmann::json&) { return "in time"; });
  for (const std::string& ack : acknowledged) {
    auto hash = ack.find('#');
    Thread stored = next.get(ack.substr(0, hash));
    BOOST_TEST(stored.version() >= std::stoll(ack.substr(hash + 1)), ack);
  }
  for (const auto& id : {waiter, thinker, busy}) {
    BOOST_TEST_REQUIRE(next.get(id).status() == Status::running);
    next.continue_thread(id);
  }
  next.resume(asker, Resume::say("Ada"));
  next.run_until_idle();
  for (const auto& id : {waiter, thinker, busy, asker}) {
    Thread thread = next.get(id);
    BOOST_TEST(thread.status() == Status::done, id << ": " << failure_of(thread.events.back()));
  }
  BOOST_TEST(next.get(waiter).events.at(1).data == "in time");
  BOOST_TEST(next.get(thinker).events.at(1).data == "thought");
  BOOST_TEST(next.get(busy).events.at(1).type == "sum");
  BOOST_TEST(next.get(asker).events.at(2).data == "Ada");
}

// What nlohmann::json::parse(text, nullptr, false) returns for text that is not JSON (a
// discarded value), and a binary value, have no Lua form: a tool's result of either
// reached the agent as nil, a successful call with no result. launch() and resume() refuse
// them; a tool's answer now does too, so the mistake shows where it was made.
BOOST_AUTO_TEST_CASE(a_tool_result_json_has_no_form_for_is_refused) {
  Fixture f(Agents{{"caller", R"(
local host = require "luagent.host"
return function(thread)
  local ok, err = pcall(host.call, "parse", {})
  thread:push("sync", ok and "accepted" or err.message)
  thread:push("async", host.call("later", {}))
end)"}});
  const nlohmann::json discarded = nlohmann::json::parse("{oops", nullptr, false);
  f.host->tool("parse", nullptr, [&](const nlohmann::json&) { return discarded; });
  f.collect_calls_of("later");
  auto id = f.host->launch("caller", Event::user("go"));
  f.pump_until_called();
  refused([&] { f.replies[0].ok(discarded); }, "discarded value");
  refused([&] { f.replies[0].ok({{"bytes", nlohmann::json::binary({1, 2, 3})}}); }, "binary value");
  // Deeper than Lua takes. Copied on its way to the agent (recursively), this one took the
  // host down with a stack overflow.
  nlohmann::json deep = nlohmann::json::array();
  nlohmann::json* innermost = &deep;
  for (int depth = 0; depth < 200000; ++depth)
    innermost = &innermost->emplace_back(nlohmann::json::array());
  refused([&] { f.replies[0].ok(std::move(deep)); }, "nested deeper than 100 levels");
  BOOST_TEST(!f.replies[0].answered());  // still open: the right answer can follow
  f.replies[0].ok("fine");
  f.pump_until_idle();
  Thread thread = f.host->get(id);
  BOOST_TEST_REQUIRE(thread.status() == Status::done, failure_of(thread.events.back()));
  auto sync = thread.events.at(1).data.get<std::string>();
  BOOST_TEST(mentions(sync, "host tool 'parse' returned a discarded value"), sync);
  // A sync tool's result deeper than Lua takes is named as the tool's too.
  Fixture g(Agents{{"caller", R"(
local host = require "luagent.host"
return function(thread) thread:push("sync", host.call("parse", {})) end)"}});
  g.host->tool("parse", nullptr, [](const nlohmann::json&) {
    nlohmann::json deep = 1;
    for (int depth = 0; depth < 150; ++depth) deep = nlohmann::json::array({deep});
    return deep;
  });
  auto deep_id = g.host->launch("caller", Event::user("go"));
  g.pump_until_idle();
  auto failure = failure_of(g.host->get(deep_id).events.back());
  BOOST_TEST(mentions(failure, "host tool 'parse' returned a value nested deeper than 100 levels"),
             failure);
  BOOST_TEST(thread.events.at(2).data == "fine");
}

// render_context() refuses a Thread nested past the depth limit, but each refusal left what
// it had pushed on the Lua state's stack: after some 9,400 of them the state had no stack
// left, and every later render_context() failed ("stack overflow"), valid threads' too.
BOOST_AUTO_TEST_CASE(render_context_refusals_leave_the_host_usable) {
  Fixture f(Agents{{"asker", kAsker}});
  auto id = f.host->launch("asker", Event::user("go"));
  f.pump_until_idle();
  Thread deep = f.host->get(id);
  deep.events[0].data = nested(150);
  for (int i = 0; i < 12000; ++i) {
    try {
      f.host->render_context(deep);
      BOOST_FAIL("rendered data nested past the depth limit");
    } catch (const Error& e) {
      if (!mentions(e.what(), "JSON nested deeper than 100 levels"))
        BOOST_FAIL("refusal " << i << " said: " << e.what());
    }
  }
  BOOST_TEST(mentions(f.host->render_context(f.host->get(id)), "go"));
  auto next = f.host->launch("asker", Event::user("again"));
  f.pump_until_idle();
  BOOST_TEST(f.host->get(next).status() == Status::awaiting_human);
}

// An on_event callback told of the event launch() or resume() just stored runs before that
// call starts the thread's step. A continue_thread() from there found no step in flight and
// started one; then launch()/resume() started theirs: two steps on one thread, the loser
// failing on a lost compare-and-swap ("changed meanwhile") and reported as a failure of a
// thread that went on to finish.
BOOST_AUTO_TEST_CASE(continue_from_on_event_before_the_step_starts_is_a_conflict) {
  Fixture f(Agents{{"payer", R"(
local host = require "luagent.host"
return function(thread)
  local call, answer = thread:resumed()
  if not call then return thread:await("human", {}) end
  local pay = { intent = "pay", amount = 5 }
  thread:push("pay", pay)
  thread:execute(pay, function(c) return host.call("pay", c) end)
end)"}});
  int paid = 0;
  f.host->tool("pay", nullptr, [&](const nlohmann::json&) { return ++paid; });
  std::vector<std::string> refusals;
  f.host->on_event([&](const Thread& t, const Event& e) {
    if (e.type != "user_input" && e.type != "human_response") return;
    try {
      f.host->continue_thread(t.id);
      refusals.push_back("accepted at " + e.type);
    } catch (const Error& err) {
      BOOST_TEST((err.code() == ErrorCode::conflict), err.what());
      refusals.push_back(err.what());
    }
  });
  auto id = f.host->launch("payer", Event::user("go"));
  f.pump_until_idle();
  BOOST_TEST_REQUIRE(f.host->get(id).status() == Status::awaiting_human);
  f.host->resume(id, Resume::say("pay"));
  f.pump_until_idle();
  BOOST_REQUIRE_EQUAL(refusals.size(), 2u);
  for (const std::string& refusal : refusals)
    BOOST_TEST(mentions(refusal, "has a step starting in this host"), refusal);
  Thread thread = f.host->get(id);
  BOOST_TEST(thread.status() == Status::done, failure_of(thread.events.back()));
  BOOST_TEST(paid == 1);
  for (const Update& u : f.host->updates()) BOOST_TEST((u.kind != Update::Kind::failed));
  BOOST_TEST(!f.logged("changed meanwhile"));
}

// NaN, infinity and text that is not UTF-8 have a Lua form but no JSON one: a tool's result
// holding them reached the agent, whose thread:push then refused it without naming the tool.
// A tool's answer is refused where the mistake is made, naming the tool, what and where.
BOOST_AUTO_TEST_CASE(a_tool_result_with_nan_or_text_not_utf8_is_refused_naming_the_tool) {
  Fixture f(Agents{{"caller", R"(
local host = require "luagent.host"
return function(thread)
  for _, tool in ipairs { "nan", "infinity", "latin1", "latin1_key" } do
    local ok, err = pcall(host.call, tool, {})
    thread:push("sync", ok and "accepted" or err.message)
  end
  thread:push("async", host.call("later", {}))
end)"}});
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double infinity = std::numeric_limits<double>::infinity();
  f.host->tool("nan", nullptr, [&](const nlohmann::json&) {
    return nlohmann::json{{"readings", {1.5, nan}}};
  });
  f.host->tool("infinity", nullptr, [&](const nlohmann::json&) { return -infinity; });
  f.host->tool("latin1", nullptr, [&](const nlohmann::json&) {
    return nlohmann::json{{"name", "caf\xe9"}};
  });
  f.host->tool("latin1_key", nullptr, [&](const nlohmann::json&) {
    return nlohmann::json{{"menu", {{"caf\xe9", 2}}}};
  });
  f.collect_calls_of("later");
  auto id = f.host->launch("caller", Event::user("go"));
  f.pump_until_called();
  refused(
      [&] {
        f.replies[0].ok({{"a", {{"b~/c", {0, infinity}}}}});
      },
      "ToolReply::ok for host tool 'later': the result holds infinity at /a/b~0~1c/1");
  refused(
      [&] {
        f.replies[0].ok(nlohmann::json::array({"fine", "\xff"}));
      },
      "host tool 'later': the result holds a string at /1 that is not UTF-8 text (byte 0xFF");
  BOOST_TEST(!f.replies[0].answered());  // still open: the right answer can follow
  f.replies[0].ok("fine");
  f.pump_until_idle();
  Thread thread = f.host->get(id);
  BOOST_TEST_REQUIRE(thread.status() == Status::done, failure_of(thread.events.back()));
  auto sync = [&](int event) { return thread.events.at(event).data.get<std::string>(); };
  BOOST_TEST(mentions(sync(1), "host tool 'nan' returned NaN at /readings/1"), sync(1));
  BOOST_TEST(mentions(sync(2), "host tool 'infinity' returned -infinity, which JSON has no form"),
             sync(2));
  BOOST_TEST(mentions(sync(3),
                      "host tool 'latin1' returned a string at /name that is not UTF-8 "
                      "text (byte 0xE9 at offset 3)"),
             sync(3));
  BOOST_TEST(mentions(sync(4), "host tool 'latin1_key' returned a key at /menu/caf"), sync(4));
  BOOST_TEST(mentions(sync(4), "that is not UTF-8 text (byte 0xE9 at offset 3)"), sync(4));
  BOOST_TEST(thread.events.at(5).data == "fine");
}

BOOST_AUTO_TEST_CASE(a_host_destroyed_from_inside_its_own_tool_stops_with_a_message) {
  // Carrying on would run the rest of pump() in freed memory; the child must instead end
  // at once (SIGABRT) saying what was wrong. Run in a forked child, stderr to a pipe.
  int pipe_fds[2];
  BOOST_REQUIRE_EQUAL(::pipe(pipe_fds), 0);
  const pid_t child = ::fork();
  BOOST_REQUIRE_GE(child, 0);
  if (child == 0) {
    ::dup2(pipe_fds[1], STDERR_FILENO);
    std::signal(SIGABRT, SIG_DFL);  // Boost.Test's handler would turn the abort into an exit
    ::close(pipe_fds[0]);
    Fixture f(Agents{{"adder", kCallsAdd}});
    f.host->tool("add", nullptr, [&](const nlohmann::json&) -> nlohmann::json {
      f.host.reset();
      return 0;
    });
    f.host->launch("adder", Event::user("go"));
    f.host->pump(2s);
    ::_exit(0);  // not reached with the check in place
  }
  ::close(pipe_fds[1]);
  std::string said;
  char buffer[512];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;) said.append(buffer, n);
  ::close(pipe_fds[0]);
  int status = 0;
  BOOST_REQUIRE_EQUAL(::waitpid(child, &status, 0), child);
  BOOST_TEST(WIFSIGNALED(status));
  BOOST_TEST((WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT));
  BOOST_TEST(mentions(said, "a Host was destroyed from inside its own callback"), said);
}
