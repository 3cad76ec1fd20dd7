// luagent eval CASES: prompt tests. Each case's input becomes a scratch thread, the agent
// takes its next decision against the configured provider (replay or live), and the
// decision is checked against the case's expectations. Cases of one agent run at once.
#include <iostream>
#include <map>

#include "cli/cli.hpp"
#include "cli/next_decision.hpp"
#include "eval_cases.hpp"

namespace luagent::cli {
namespace {

// Why `decision` does not meet `expect` (empty: it does).
std::vector<std::string> failures_of(const nlohmann::json& expect, const Decision& decision) {
  std::vector<std::string> failures;
  if (!decision.ok) {
    failures.push_back(decision.type.empty() ? decision.error : "failed: " + decision.error);
    return failures;
  }
  if (auto intent = expect.find("intent"); intent != expect.end()) {
    if (!intent->is_string() || intent->get<std::string>() != decision.type)
      failures.push_back("intent: expected " + intent->dump() + ", got \"" + decision.type + "\"");
  }
  if (auto fields = expect.find("fields"); fields != expect.end() && fields->is_object()) {
    for (const auto& [key, wanted] : fields->items()) {
      const nlohmann::json* got =
          decision.data.is_object() && decision.data.contains(key) ? &decision.data[key] : nullptr;
      if (!got || *got != wanted)
        failures.push_back(key + ": expected " + wanted.dump() + ", got " +
                           (got ? got->dump() : std::string("nothing")));
    }
  }
  if (auto contains = expect.find("contains"); contains != expect.end()) {
    std::string needle = contains->is_string() ? contains->get<std::string>() : contains->dump();
    std::string haystack =
        decision.data.is_string() ? decision.data.get<std::string>() : decision.data.dump();
    if (haystack.find(needle) == std::string::npos)
      failures.push_back("expected the decision to contain \"" + needle + "\"");
  }
  return failures;
}

}  // namespace

int command_eval(const Args& args) {
  if (args.positional.size() != 1)
    throw Error(ErrorCode::usage, "eval needs exactly one CASES file (see luagent --help)");
  std::filesystem::path file = args.positional[0];
  Style style = make_style(args.json);

  // The case file runs in a sandboxed runtime of its own; its checks are called there.
  EventLoop loop;
  RuntimeServices services;
  services.loop = &loop;
  auto runtime = make_lua_runtime(services);
  auto case_file = load_eval_cases(*runtime, file);
  const auto& cases = case_file->cases();

  // Cases grouped by agent: one scratch host each, its cases decided concurrently.
  std::map<std::filesystem::path, std::vector<std::size_t>> by_agent;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    std::filesystem::path agent = cases[i].agent;
    if (agent.is_relative()) agent = file.parent_path() / agent;
    std::error_code ec;  // a name too long for a file is no folder, not an internal error
    if (!std::filesystem::is_directory(agent, ec))
      throw Error(ErrorCode::usage,
                  "case '" + cases[i].name + "': no agent folder " + agent.string());
    by_agent[agent].push_back(i);
  }
  std::vector<Decision> decisions(cases.size());
  for (const auto& [agent, indexes] : by_agent) {
    ScratchHost scratch(host_config(args, agent));
    for (std::size_t index : indexes) scratch.add(thread_from_input(cases[index].input, agent));
    auto decided = scratch.run();
    for (std::size_t k = 0; k < indexes.size(); ++k) decisions[indexes[k]] = decided[k];
  }

  int passed = 0, failed = 0;
  std::size_t width = 4;
  for (const auto& c : cases) width = std::max(width, c.name.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const Decision& decision = decisions[i];
    auto failures = failures_of(cases[i].expect, decision);
    if (failures.empty() && cases[i].has_check) {
      nlohmann::json step = decision.data.is_object() ? decision.data : nlohmann::json::object();
      if (!step.contains("intent")) step["intent"] = decision.type;
      if (auto why = case_file->check(i, step)) failures.push_back(*why);
    }
    bool ok = failures.empty();
    ok ? ++passed : ++failed;
    if (args.json) {
      nlohmann::json line = {{"name", cases[i].name}, {"ok", ok}, {"failures", failures}};
      if (!decision.type.empty())
        line["decision"] = {{"type", decision.type}, {"data", decision.data}};
      std::cout << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      continue;
    }
    std::string name = cases[i].name + std::string(width - cases[i].name.size(), ' ');
    std::cout << (ok ? style.green("PASS") : style.red("FAIL")) << "  " << name << "  "
              << describe(decision) << "\n";
    for (const auto& why : failures) std::cout << "      " << style.red(why) << "\n";
  }
  if (args.json)
    std::cout << nlohmann::json({{"passed", passed}, {"failed", failed}}).dump() << "\n";
  else
    std::cout << passed << " passed, " << failed << " failed\n";
  return failed > 0 ? kExitAgentError : kExitDone;
}

}  // namespace luagent::cli
