// The calculator's recorded model, served over the OpenAI wire: a WireServer handler
// that answers each chat completion with the cassette reply recorded for the same
// messages (examples/calculator/cassette.jsonl), so load tests and benchmarks drive the
// real openai provider, transport and agent against a loopback "model".
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <string>

#include "luagent/thread.hpp"
#include "support/wire_server.hpp"

namespace luagent::test {

class CalculatorModel {
 public:
  /// Indexes a cassette by the content of the last message of each request.
  explicit CalculatorModel(const std::filesystem::path& cassette);
  /// The OpenAI chat completion for `request` (500 when the cassette has no answer).
  ScriptedResponse reply(const RecordedRequest& request) const;
  /// Same, with every reply delayed by `latency(n)` for the n-th request.
  WireServer::Handler handler(std::function<std::chrono::milliseconds(std::size_t)> latency = {});
  /// A response body for `text` in the OpenAI chat completion shape.
  static std::string completion_body(const std::string& text);

 private:
  std::map<std::string, std::string> replies_;  // last message content -> reply text
  std::size_t served_ = 0;
};

/// Writes a calculator agent folder (agent.lua, next_step.prompt from the example) at
/// `dir`, plus a luagent.config.lua for the openai provider at `base_url`.
void write_calculator_agent(const std::filesystem::path& dir, const std::string& base_url);

/// The scenario A request: multiply 3 and 4, divide by 2, add 12 (result 18).
inline constexpr const char* kScenarioA =
    "can you multiply 3 and 4, then divide the result by 2 and then add 12 to that result";

/// Whether `thread` finished scenario A with the right answer ("The result is 18.").
bool answered_scenario_a(const Thread& thread);

}  // namespace luagent::test
