#include "support/calculator_wire.hpp"

#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "support/test_paths.hpp"

namespace luagent::test {

CalculatorModel::CalculatorModel(const std::filesystem::path& cassette) {
  std::ifstream in(cassette);
  if (!in) throw std::runtime_error("cannot read " + cassette.string());
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto entry = nlohmann::json::parse(line);
    const auto& messages = entry["request"]["messages"];
    replies_[messages.back()["content"].get<std::string>()] =
        entry["response"]["text"].get<std::string>();
  }
}

std::string CalculatorModel::completion_body(const std::string& text) {
  nlohmann::json body = {
      {"id", "chatcmpl-calc"},
      {"object", "chat.completion"},
      {"created", 1700000000},
      {"model", "calculator-model"},
      {"choices",
       {{{"index", 0},
         {"message", {{"role", "assistant"}, {"content", text}}},
         {"finish_reason", "stop"}}}},
      {"usage", {{"prompt_tokens", 120}, {"completion_tokens", 20}, {"total_tokens", 140}}}};
  return body.dump();
}

ScriptedResponse CalculatorModel::reply(const RecordedRequest& request) const {
  ScriptedResponse response;
  response.headers = {{"Content-Type", "application/json"}};
  try {
    auto body = nlohmann::json::parse(request.body);
    const auto& content = body["messages"].back()["content"];
    auto found = replies_.find(content.is_string() ? content.get<std::string>() : "");
    if (found != replies_.end()) {
      response.body = completion_body(found->second);
      return response;
    }
  } catch (const std::exception&) {
  }
  response.status = 500;
  response.reason = "Internal Server Error";
  response.body = R"({"error":{"message":"no recorded answer for this request"}})";
  return response;
}

WireServer::Handler CalculatorModel::handler(
    std::function<std::chrono::milliseconds(std::size_t)> latency) {
  return [this, latency](const RecordedRequest& request) {
    ScriptedResponse response = reply(request);
    if (latency) response.latency = latency(served_);
    ++served_;
    return response;
  };
}

void write_calculator_agent(const std::filesystem::path& dir, const std::string& base_url) {
  std::filesystem::create_directories(dir);
  auto example = source_dir() / "examples/calculator";
  std::filesystem::copy_file(example / "agent.lua", dir / "agent.lua",
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(example / "next_step.prompt", dir / "next_step.prompt",
                             std::filesystem::copy_options::overwrite_existing);
  std::ofstream(dir / "luagent.config.lua")
      << "provider = \"openai\"\nbase_url = \"" << base_url
      << "\"\nmodel = \"calculator-model\"\nmax_retries = 0\n";
}

bool answered_scenario_a(const Thread& thread) {
  // The last event is `done`; the one before it carries the agent's final answer.
  return thread.status() == Status::done && thread.events.size() >= 2 &&
         thread.events[thread.events.size() - 2].data.dump().find("The result is 18.") !=
             std::string::npos;
}

}  // namespace luagent::test
