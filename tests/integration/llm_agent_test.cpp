// An agent calling a real OpenAI-compatible HTTP server on 127.0.0.1 through the
// Host: llm.json with lenient repair and a stream callback, llm.text, llm.chat with
// tools, a provider error caught in Lua — and the API key nowhere in the store or logs.
#define BOOST_TEST_MODULE llm_agent
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "luagent/luagent.hpp"
#include "support/test_paths.hpp"
#include "support/wire_server.hpp"

using namespace luagent;

namespace {

constexpr const char* kSecret = "sk-test-9f8e7d6c5b4a39281706f5e4d3c2b1a0";

std::string completion(const std::string& content) {
  nlohmann::json body = {
      {"id", "chatcmpl-1"},
      {"object", "chat.completion"},
      {"model", "gpt-test"},
      {"choices",
       {{{"index", 0},
         {"message", {{"role", "assistant"}, {"content", content}}},
         {"finish_reason", "stop"}}}},
      {"usage", {{"prompt_tokens", 11}, {"completion_tokens", 7}, {"total_tokens", 18}}}};
  return body.dump();
}

std::string tool_call_completion() {
  nlohmann::json call = {{"id", "call_1"},
                         {"type", "function"},
                         {"function", {{"name", "add"}, {"arguments", "{\"a\": 2, \"b\": 5}"}}}};
  nlohmann::json body = {
      {"id", "chatcmpl-2"},
      {"model", "gpt-test"},
      {"choices",
       {{{"index", 0},
         {"message", {{"role", "assistant"}, {"content", nullptr}, {"tool_calls", {call}}}},
         {"finish_reason", "tool_calls"}}}},
      {"usage", {{"prompt_tokens", 5}, {"completion_tokens", 3}}}};
  return body.dump();
}

// An SSE stream delivering `content` in three pieces, then usage and [DONE].
std::string stream_of(const std::string& content) {
  std::string body;
  std::size_t third = content.size() / 3;
  for (std::size_t start = 0; start < content.size(); start += third) {
    nlohmann::json chunk = {
        {"id", "c"},
        {"choices", {{{"index", 0}, {"delta", {{"content", content.substr(start, third)}}}}}}};
    body += "data: " + chunk.dump() + "\n\n";
  }
  nlohmann::json finish = {
      {"id", "c"},
      {"choices",
       {{{"index", 0}, {"delta", nlohmann::json::object()}, {"finish_reason", "stop"}}}}};
  body += "data: " + finish.dump() + "\n\n";
  body +=
      "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":"
      "6}}\n\n";
  body += "data: [DONE]\n\n";
  return body;
}

// A model that streams "hello there, streaming world" when asked to stream, else answers
// "plain hello".
test::ScriptedResponse streamed_or_plain_hello(const test::RecordedRequest& request) {
  test::ScriptedResponse response;
  if (nlohmann::json::parse(request.body).value("stream", false)) {
    response.headers = {{"Content-Type", "text/event-stream"}};
    response.body = stream_of("hello there, streaming world");
  } else {
    response.headers = {{"Content-Type", "application/json"}};
    response.body = completion("plain hello");
  }
  return response;
}

struct Environment {
  Environment(const std::string& base_url) {
    setenv("OPENAI_BASE_URL", base_url.c_str(), 1);
    setenv("OPENAI_API_KEY", kSecret, 1);
    unsetenv("LUAGENT_PROVIDER");
    unsetenv("LUAGENT_STREAM");
  }
  ~Environment() {
    unsetenv("OPENAI_BASE_URL");
    unsetenv("OPENAI_API_KEY");
  }
};

// A host config for the agents under `dir`: its SQLite store, the test server as "openai".
HostConfig openai_config(const test::TempDir& dir) {
  HostConfig config;
  config.store = "sqlite:" + (dir / "threads.db").string();
  config.provider = "openai";
  config.model = "gpt-test";
  return config;
}

// Writes agent `name` (its agent.lua is `source`) under `dir`, runs one step of it with
// openai_config, and returns its thread.
Thread run_one_step(const test::TempDir& dir, const std::string& name, const std::string& source) {
  std::filesystem::create_directories(dir / name);
  std::ofstream(dir / name / "agent.lua") << source;
  Host host(openai_config(dir));
  auto id = host.launch((dir / name).string(), Event::user("go"));
  host.run_until_idle();
  return host.get(id);
}

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

BOOST_AUTO_TEST_CASE(agent_calls_a_real_http_provider) {
  test::WireServer server;
  server.set_handler([](const test::RecordedRequest& request) {
    test::ScriptedResponse response;
    response.headers = {{"Content-Type", "application/json"}};
    auto body = nlohmann::json::parse(request.body);
    std::string last = body["messages"].back()["content"].is_string()
                           ? body["messages"].back()["content"].get<std::string>()
                           : "";
    if (body.value("stream", false)) {
      response.headers = {{"Content-Type", "text/event-stream"}};
      response.body = stream_of("{\"intent\": \"add\", \"a\": \"2\", \"b\": 5}");
    } else if (body.contains("tools")) {
      response.body = tool_call_completion();
    } else if (last.find("json please") != std::string::npos) {
      // Prose, a fence and a trailing comma: the lenient parser's job.
      response.body = completion(
          "Sure! Here it is:\n```json\n{\"intent\": \"add\", \"a\": 1, "
          "\"b\": 2,}\n```");
    } else if (last.find("fail please") != std::string::npos) {
      response.status = 401;
      response.reason = "Unauthorized";
      response.body = std::string(R"({"error":{"message":"Incorrect API key provided: )") +
                      kSecret + R"(","type":"invalid_request_error","code":"invalid_api_key"}})";
    } else {
      response.body = completion("hello from the model");
    }
    return response;
  });
  Environment environment(server.url("/v1"));

  test::TempDir dir;
  auto agent = dir / "agent";
  std::filesystem::create_directories(agent);
  std::ofstream(agent / "agent.lua") << R"lua(
local llm = require "luagent.llm"
local intents = { add = { a = "number", b = "number" }, done_for_now = { message = "string" } }
return function(thread)
  local step = llm.json("json please", llm.one_of(intents))
  thread:push(step.intent, step)
  local pieces, last_partial = 0, nil
  local streamed = llm.json("stream please", llm.one_of(intents), {
    stream = function(delta, partial) pieces = pieces + 1; last_partial = partial end,
  })
  thread:push("streamed", { a = streamed.a, pieces = pieces, partial_intent = last_partial and last_partial.intent })
  thread:push("text", llm.text("say hello"))
  local chat = llm.chat({ { role = "user", content = "add 2 and 5" } }, {
    tools = { add = { description = "adds", parameters = { a = "number", b = "number" } } },
  })
  thread:push("chat", { name = chat.tool_calls[1].name, a = chat.tool_calls[1].arguments.a,
                        finish = chat.finish_reason })
  local ok, err = pcall(llm.text, "fail please")
  thread:push("caught", { ok = ok, code = err.code, message = err.message })
end
)lua";
  std::vector<std::string> log;
  HostConfig config = openai_config(dir);
  config.log = [&log](std::string_view level, std::string_view line) {
    log.push_back(std::string(level) + " " + std::string(line));
  };
  std::string id;
  std::vector<nlohmann::json> calls;
  {
    Host host(config);
    id = host.launch(agent.string(), Event::user("go"));
    host.run_until_idle();
    Thread thread = host.get(id);
    std::string failure =
        thread.events.back().type == "failed" ? thread.events.back().data.dump() : "";
    BOOST_TEST_REQUIRE(thread.status() == Status::done, failure);
    auto find = [&](const std::string& type) {
      for (const auto& e : thread.events)
        if (e.type == type) return e.data;
      BOOST_FAIL("no event " + type);
      return nlohmann::json();
    };
    BOOST_TEST(find("add")["a"] == 1);
    BOOST_TEST(find("streamed")["a"] == 2);  // "2" coerced to a number
    BOOST_TEST(find("streamed")["pieces"].get<int>() >= 3);
    BOOST_TEST(find("streamed")["partial_intent"] == "add");
    BOOST_TEST(find("text") == "hello from the model");
    BOOST_TEST(find("chat")["name"] == "add");
    BOOST_TEST(find("chat")["a"] == 2);
    BOOST_TEST(find("chat")["finish"] == "tool_calls");
    BOOST_TEST(find("caught")["ok"] == false);
    BOOST_TEST(find("caught")["code"] == "auth");
    calls = host.calls(id);
  }
  BOOST_REQUIRE(calls.size() == 5u);
  BOOST_TEST(calls[0]["provider"] == "openai");
  BOOST_TEST(calls[0]["input_tokens"] == 11);
  BOOST_TEST(calls[0]["repairs"].size() >= 1u);  // the fence and trailing comma, with the raw text
  BOOST_TEST(calls[0]["response"].get<std::string>().find("```json") != std::string::npos);
  BOOST_TEST(calls[1]["output_tokens"] == 6);
  BOOST_TEST(calls[4]["ok"] == false);

  // The key went to the server, and nowhere else.
  BOOST_TEST(server.requests().front().header("Authorization") == std::string("Bearer ") + kSecret);
  for (const char* file : {"threads.db", "threads.db-wal"}) {
    if (!std::filesystem::exists(dir / file)) continue;
    BOOST_TEST(slurp(dir / file).find(kSecret) == std::string::npos, file);
  }
  for (const auto& line : log) BOOST_TEST(line.find(kSecret) == std::string::npos, line);
  for (const auto& call : calls) BOOST_TEST(call.dump().find(kSecret) == std::string::npos);
}

// A stream callback runs on the host's thread while the call is in flight: one that never
// returns is stopped by the step's CPU limit, the step fails with limit, and the host
// goes on serving other threads.
BOOST_AUTO_TEST_CASE(a_runaway_stream_callback_fails_its_step_not_the_host) {
  test::WireServer server;
  server.set_handler(streamed_or_plain_hello);
  Environment environment(server.url("/v1"));
  test::TempDir dir;
  for (const char* name : {"spinner", "plain"}) std::filesystem::create_directories(dir / name);
  std::ofstream(dir / "spinner/agent.lua") << R"lua(
local llm = require "luagent.llm"
return function(thread)
  thread:push("said", llm.text("stream please", { stream = function() while true do end end }))
end
)lua";
  std::ofstream(dir / "plain/agent.lua") << R"lua(
local llm = require "luagent.llm"
return function(thread) thread:push("said", llm.text("hi")) end
)lua";
  HostConfig config = openai_config(dir);
  config.step_cpu_ms = 200;
  std::vector<std::string> log;
  config.log = [&log](std::string_view level, std::string_view line) {
    log.push_back(std::string(level) + " " + std::string(line));
  };
  Host host(config);
  auto spinner = host.launch((dir / "spinner").string(), Event::user("go"));
  auto plain = host.launch((dir / "plain").string(), Event::user("go"));
  host.run_until_idle();
  Thread spun = host.get(spinner);
  BOOST_TEST(spun.status() == Status::failed);
  BOOST_TEST(spun.events.back().data["code"] == "limit", spun.events.back().data.dump());
  BOOST_TEST(host.get(plain).status() == Status::done);
  bool logged = false;
  for (const auto& line : log) logged = logged || line.find("stream callback failed") != line.npos;
  BOOST_TEST(logged);
}

// A stream callback that resumed (or closed) the step's own coroutine, got from
// coroutine.running() while the call was in flight, ran the rest of the step inside the
// callback: the agent got "an LLM call resumed without an outcome [internal]" and the
// thread, after its await, ended failed ("cannot resume dead coroutine"). Both are refused.
BOOST_AUTO_TEST_CASE(a_stream_callback_cannot_resume_or_close_its_steps_coroutine) {
  test::WireServer server;
  server.set_handler(streamed_or_plain_hello);
  Environment environment(server.url("/v1"));
  test::TempDir dir;
  Thread thread = run_one_step(dir, "hijacker", R"lua(
local llm = require "luagent.llm"
return function(thread)
  local main = coroutine.running()
  local refused = {}
  local said = llm.text("stream please", { stream = function()
    if refused.resume then return end
    local _, resume_error = pcall(coroutine.resume, main, "FAKE")
    local _, close_error = pcall(coroutine.close, main)
    refused.resume, refused.close = resume_error.message, close_error.message
  end })
  thread:push("said", { text = said, refused = refused })
  return thread:await("human", { q = "continue?" })
end
)lua");
  BOOST_TEST_REQUIRE(thread.status() == Status::awaiting_human, thread.events.back().data.dump());
  const nlohmann::json& said = thread.events.at(thread.events.size() - 2).data;
  BOOST_TEST(said["text"] == "hello there, streaming world");
  for (const char* what : {"resume", "close"})
    BOOST_TEST(said["refused"][what] == "coroutine." + std::string(what) +
                                            ": this is the step's own coroutine, which only "
                                            "the host resumes or closes",
               said.dump());
}

// llm.* options out of range reached the provider as given or wrapped: max_tokens = 2^32 + 5
// became 5, a huge timeout overflowed the milliseconds, timeout = 1e-4 became 0 ms (which
// means "the default"), a temperature of 7 went to the API.
BOOST_AUTO_TEST_CASE(llm_options_out_of_range_are_usage_errors) {
  test::WireServer server;
  server.set_handler([](const test::RecordedRequest&) {
    test::ScriptedResponse response;
    response.headers = {{"Content-Type", "application/json"}};
    response.body = completion("plain hello");
    response.latency = std::chrono::milliseconds(300);
    return response;
  });
  Environment environment(server.url("/v1"));
  test::TempDir dir;
  Thread thread = run_one_step(dir, "checker", R"lua(
local llm = require "luagent.llm"
return function(thread)
  local said = {}
  for _, opts in ipairs({
    { max_tokens = 0 }, { max_tokens = 10000001 }, { max_tokens = 4294967301 },
    { timeout = 0 }, { timeout = -1 }, { timeout = 3e6 },
    { temperature = -0.5 }, { temperature = 2.5 },
    { max_tokens = 1.5 }, { model = 5 }, { temperature = "hot" }, { max_tokns = 5 },
  }) do
    local ok, err = pcall(llm.text, "hi", opts)
    said[#said + 1] = ok and "accepted" or (err.code .. " " .. err.message)
  end
  local ok, err = pcall(llm.text, "hi", { timeout = 1e-4 })
  said[#said + 1] = ok and "accepted" or err.code
  said[#said + 1] = llm.text("hi", { max_tokens = 100, temperature = 2, timeout = 30 })
  thread:push("said", said)
end
)lua");
  BOOST_TEST_REQUIRE(thread.status() == Status::done, to_json(thread).dump());
  auto said = thread.events[thread.events.size() - 2].data;
  const char* expected[] = {
      "usage llm.text: opts.max_tokens must be an integer in [1, 10000000], not 0",
      "usage llm.text: opts.max_tokens must be an integer in [1, 10000000], not 10000001",
      "usage llm.text: opts.max_tokens must be an integer in [1, 10000000], not 4294967301",
      "usage llm.text: opts.timeout must be a positive number of seconds up to 2147483, not 0",
      "usage llm.text: opts.timeout must be a positive number of seconds up to 2147483, not -1",
      "usage llm.text: opts.timeout must be a positive number of seconds up to 2147483, not "
      "3000000.0",
      "usage llm.text: opts.temperature must be a number in [0, 2], not -0.5",
      "usage llm.text: opts.temperature must be a number in [0, 2], not 2.5",
      // A known option of the wrong type was "unknown or mistyped option 'max_tokens'".
      "usage llm.text: opts.max_tokens must be an integer, not 1.5",
      "usage llm.text: opts.model must be a string, not 5",
      "usage llm.text: opts.temperature must be a number, not \"hot\"",
      "usage llm.text: unknown or mistyped option 'max_tokns'",
  };
  BOOST_TEST_REQUIRE(said.size() == std::size(expected) + 2, said.dump());
  for (std::size_t i = 0; i < std::size(expected); ++i)
    BOOST_TEST(said[i].get<std::string>().find(expected[i]) != std::string::npos, said[i].dump());
  // 1e-4 s is 1 ms, not "the default": the 300 ms reply is too late.
  BOOST_TEST(said[std::size(expected)] != "accepted", said.dump());
  BOOST_TEST(said.back() == "plain hello");
}

// LUAGENT_STREAM took only "1": "0" could not turn off a config file's `stream = true`, and
// "true" or "yes" were ignored without a word.
BOOST_AUTO_TEST_CASE(luagent_stream_is_1_or_0_and_nothing_else) {
  test::WireServer server;
  server.set_handler(streamed_or_plain_hello);
  Environment environment(server.url("/v1"));
  test::TempDir dir;
  std::filesystem::create_directories(dir / "plain");
  std::ofstream(dir / "plain/agent.lua") << R"lua(
local llm = require "luagent.llm"
return function(thread) thread:push("said", llm.text("hi")) end
)lua";
  std::ofstream(dir / "streaming.lua") << "stream = true\n";
  // Whether the one LLM call a run makes asked for a stream.
  auto streamed = [&](const char* stream, bool with_file) {
    setenv("LUAGENT_STREAM", stream, 1);
    HostConfig config = openai_config(dir);
    if (with_file) config.config_file = dir / "streaming.lua";
    Host host(config);
    std::size_t before = server.request_count();
    auto id = host.launch((dir / "plain").string(), Event::user("go"));
    host.run_until_idle();
    BOOST_TEST_REQUIRE(host.get(id).status() == Status::done);
    BOOST_TEST_REQUIRE(server.request_count() == before + 1);
    return nlohmann::json::parse(server.requests().back().body).value("stream", false);
  };
  BOOST_TEST(streamed("1", false));
  BOOST_TEST(!streamed("0", false));
  BOOST_TEST(!streamed("0", true));  // the environment wins over the file
  BOOST_TEST(streamed("", true));    // empty is unset: the file's setting stands
  BOOST_TEST(!streamed("", false));
  for (const char* odd : {"yes", "true", "2", " 1"}) {
    setenv("LUAGENT_STREAM", odd, 1);
    HostConfig config;
    config.store = "sqlite:" + (dir / "threads.db").string();
    config.provider = "openai";
    try {
      Host host(config);
      BOOST_ERROR("LUAGENT_STREAM='" << odd << "' was taken");
    } catch (const Error& error) {
      BOOST_TEST(error.code() == ErrorCode::config);
      BOOST_TEST(error.message() == std::string("LUAGENT_STREAM: must be 1 (stream every LLM "
                                                "call) or 0, not '") +
                                        odd + "'",
                 error.message());
    }
  }
  unsetenv("LUAGENT_STREAM");
}
