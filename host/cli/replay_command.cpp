// luagent replay AGENT --threads SELECTOR: re-decide every decision point of stored
// threads under the agent's current scripts and prompts and report which decisions
// changed — the counterfactual check before shipping a prompt change. The stored
// threads are only read; the re-decisions happen in a scratch store.
#include <algorithm>
#include <iostream>
#include <sstream>

#include "cli/cli.hpp"
#include "cli/next_decision.hpp"

namespace luagent::cli {
namespace {

// SELECTOR: ids separated by commas, status:S, agent:A or last:N.
std::vector<std::string> select_threads(Host& store, const std::string& selector,
                                        const std::string& agent_name) {
  auto starts = [&](const char* prefix) { return selector.rfind(prefix, 0) == 0; };
  std::vector<std::string> ids;
  if (starts("status:")) {
    auto status = status_from_name(selector.substr(7));
    if (!status) throw Error(ErrorCode::usage, "unknown status in --threads " + selector);
    for (const auto& summary : store.list(status, agent_name)) ids.push_back(summary.id);
  } else if (starts("agent:")) {
    // An empty name is no filter at all: every agent's threads.
    if (selector.size() == 6)
      throw Error(ErrorCode::usage, "--threads agent:A needs an agent name after agent:");
    for (const auto& summary : store.list(std::nullopt, selector.substr(6)))
      ids.push_back(summary.id);
  } else if (starts("last:")) {
    // Checked whole: stoul read "-1" as every thread and "2x" as 2.
    auto count = static_cast<std::size_t>(
        positive_integer(selector.substr(5), "N in --threads last:N (" + selector + ")"));
    auto summaries = store.list(std::nullopt, agent_name);
    std::stable_sort(summaries.begin(), summaries.end(),
                     [](const auto& a, const auto& b) { return a.updated_ms > b.updated_ms; });
    for (std::size_t i = 0; i < summaries.size() && i < count; ++i) ids.push_back(summaries[i].id);
  } else {
    std::stringstream list(selector);
    std::string id;
    while (std::getline(list, id, ','))
      if (!id.empty()) ids.push_back(id);
  }
  if (ids.empty())
    throw Error(ErrorCode::not_found, "--threads " + selector + " selects no thread");
  return ids;
}

}  // namespace

int command_replay(const Args& args) {
  if (args.positional.size() != 1)
    throw Error(ErrorCode::usage, "replay needs exactly one AGENT (see luagent --help)");
  if (!has(args, "--threads"))
    throw Error(ErrorCode::usage,
                "replay needs --threads SELECTOR (ids, status:S, agent:A or last:N)");
  const std::string& agent = args.positional[0];
  auto agent_dir = agent_dir_of(args, agent);
  if (agent_dir.empty()) throw Error(ErrorCode::not_found, "no agent folder " + agent);
  std::error_code ec;
  std::string agent_name = std::filesystem::weakly_canonical(agent_dir, ec).filename().string();
  Style style = make_style(args.json);

  Host reader(stored_threads_config(args, agent_dir));
  struct Point {
    std::string thread_id;
    std::int64_t at;
    Decision before;
  };
  std::vector<Point> points;
  ScratchHost scratch(host_config(args, agent_dir));
  for (const auto& id : select_threads(reader, option(args, "--threads"), agent_name)) {
    Thread thread = reader.get(id);
    for (auto& point : decision_points(thread, reader.calls(id))) {
      point.before.agent = agent_name;  // re-decided by AGENT as it is now
      point.before.agent_path = std::filesystem::weakly_canonical(agent_dir, ec).string();
      points.push_back({id, point.before.version() + 1, point.decided});
      scratch.add(point.before);
    }
  }
  auto now = scratch.run();

  std::size_t changed = 0;
  for (std::size_t i = 0; i < points.size(); ++i) {
    const Decision& before = points[i].before;
    const Decision& after = now[i];
    bool same = after.ok == before.ok && after.type == before.type && after.data == before.data;
    changed += !same;
    if (args.json) {
      nlohmann::json line = {{"thread_id", points[i].thread_id},
                             {"event", points[i].at},
                             {"changed", !same},
                             {"before", {{"type", before.type}, {"data", before.data}}},
                             {"now", {{"type", after.type}, {"data", after.data}}}};
      if (!after.error.empty()) line["error"] = after.error;
      std::cout << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      continue;
    }
    std::string at = std::to_string(points[i].at);
    std::cout << points[i].thread_id << "  "
              << std::string(4 - std::min<std::size_t>(4, at.size()), ' ') << at << "  "
              << (same ? style.dim("same   ") : style.yellow("CHANGED")) << "  "
              << describe(before);
    if (!same) std::cout << "  ->  " << style.bold(describe(after));
    std::cout << "\n";
  }
  if (args.json)
    std::cout << nlohmann::json({{"decisions", points.size()}, {"changed", changed}}).dump()
              << "\n";
  else
    std::cout << points.size() << " decisions, " << changed << " changed\n";
  return kExitDone;
}

}  // namespace luagent::cli
