// luagent dev AGENT [--thread T | MESSAGE]: the prompt iteration loop. Watches the agent;
// on every save re-renders the prompt and re-runs the next decision (from thread T, or a
// fresh thread with MESSAGE) in a scratch store, and shows one screen: the prompt's diff
// against the previous save and the new decision beside the previous one. A save that
// does not load shows its error (file:line) while the previous version keeps serving.
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <iostream>
#include <sstream>

#include "cli/cli.hpp"
#include "cli/next_decision.hpp"

namespace luagent::cli {
namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

// A line diff (longest common subsequence): unchanged lines near a change as context.
void print_diff(const Style& style, const std::string& before, const std::string& after) {
  auto a = lines_of(before), b = lines_of(after);
  if (a.size() * b.size() > 4'000'000) {
    std::cout << style.dim("  (the prompt is too long to diff; it changed)") << "\n";
    return;
  }
  std::vector<std::vector<int>> lcs(a.size() + 1, std::vector<int>(b.size() + 1, 0));
  for (std::size_t i = a.size(); i-- > 0;)
    for (std::size_t j = b.size(); j-- > 0;)
      lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
  struct Line {
    char mark;
    const std::string* text;
  };
  std::vector<Line> out;
  std::size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    if (i < a.size() && j < b.size() && a[i] == b[j]) {
      out.push_back({' ', &a[i]});
      ++i, ++j;
    } else if (j < b.size() && (i == a.size() || lcs[i][j + 1] >= lcs[i + 1][j])) {
      out.push_back({'+', &b[j++]});
    } else {
      out.push_back({'-', &a[i++]});
    }
  }
  bool any = false;
  for (std::size_t k = 0; k < out.size(); ++k) {
    bool near = false;
    for (std::size_t d = (k >= 2 ? k - 2 : 0); d <= k + 2 && d < out.size(); ++d)
      near = near || out[d].mark != ' ';
    if (!near) continue;
    any = true;
    std::string line = std::string(1, out[k].mark) + " " + *out[k].text;
    std::cout << (out[k].mark == '+'   ? style.green(line)
                  : out[k].mark == '-' ? style.red(line)
                                       : style.dim(line))
              << "\n";
  }
  if (!any) std::cout << style.dim("  (the rendered prompt did not change)") << "\n";
}

std::string clock_now() {
  std::time_t now = std::time(nullptr);
  char text[16];
  std::strftime(text, sizeof text, "%H:%M:%S", std::localtime(&now));
  return text;
}

}  // namespace

int command_dev(const Args& args) {
  if (args.positional.empty() || args.positional.size() > 2)
    throw Error(ErrorCode::usage, "dev needs AGENT and, without --thread, a MESSAGE");
  const std::string& agent = args.positional[0];
  auto agent_dir = agent_dir_of(args, agent);
  if (agent_dir.empty()) throw Error(ErrorCode::not_found, "no agent folder " + agent);
  Thread start;
  if (has(args, "--thread")) {
    if (args.positional.size() == 2)
      throw Error(ErrorCode::usage, "dev takes --thread T or a MESSAGE, not both");
    Host reader(stored_threads_config(args, agent_dir));
    start = reader.get(option(args, "--thread"));
    // A thread that waits or ended has no next decision: re-take its last one.
    if (start.status() != Status::running) {
      auto points = decision_points(start, reader.calls(start.id));
      if (points.empty())
        throw Error(ErrorCode::usage, "thread " + start.id + " has no LLM decision to re-run");
      start = points.back().before;
    }
    std::error_code ec;
    start.agent_path = std::filesystem::weakly_canonical(agent_dir, ec).string();
  } else {
    if (args.positional.size() != 2)
      throw Error(ErrorCode::usage, "dev needs a MESSAGE to start a fresh thread (or --thread T)");
    start = thread_from_input(args.positional[1], agent_dir);
  }
  // --saves N: stop after N saves (scripts and tests). Checked whole: "-2" used to mean
  // "never stop" and "3x" three.
  std::int64_t saves_left = -1;
  if (has(args, "--saves")) saves_left = positive_integer(option(args, "--saves"), "--saves");

  // --timeout SECONDS: stop then even without saves, so a script can never hang on dev.
  auto deadline = std::chrono::steady_clock::time_point::max();
  if (has(args, "--timeout")) {
    std::int64_t seconds = positive_integer(option(args, "--timeout"), "--timeout (seconds)");
    if (seconds > 31'536'000)  // a year; more would overflow the clock
      throw Error(ErrorCode::usage, "--timeout must be at most 31536000 seconds (a year)");
    deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  }

  Style style = make_style(args.json);
  HostConfig config = host_config(args, agent_dir);
  config.watch = true;
  ScratchHost scratch(config);
  Host& host = scratch.host();
  std::vector<ReloadReport> reports;
  host.on_reload([&](const ReloadReport& report) { reports.push_back(report); });

  Decision previous;
  bool have_previous = false;
  int save = 0;
  auto show = [&](const ReloadReport* report) {
    if (style.color) std::cout << "\033[2J\033[H";  // one screen per save
    std::string title = "luagent dev  " + agent_dir.filename().string() + "  save " +
                        std::to_string(save) + "  " + clock_now();
    if (args.json) {
      nlohmann::json line = {{"save", save}};
      if (report && !report->ok) {
        line["error"] = report->error ? report->error->what() : "reload failed";
      } else {
        Decision now;
        scratch.add(start);
        now = scratch.run().front();
        line["version"] = now.version;
        line["decision"] = {{"type", now.type}, {"data", now.data}};
        if (!now.ok) line["error"] = now.error;
        if (have_previous) line["changed"] = now.type != previous.type || now.data != previous.data;
        line["prompt"] = now.prompt;
        previous = now;
        have_previous = true;
      }
      std::cout << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      std::cout.flush();
      return;
    }
    std::cout << style.bold(title) << "\n";
    if (report && !report->ok) {
      std::cout << style.red("this save does not load; the previous version keeps serving:")
                << "\n  " << (report->error ? report->error->what() : "reload failed") << "\n";
      std::cout.flush();
      return;
    }
    scratch.add(start);
    Decision now = scratch.run().front();
    std::cout << style.dim("version " + now.version) << "\n\n" << style.bold("prompt") << "\n";
    if (have_previous)
      print_diff(style, previous.prompt, now.prompt);
    else
      std::cout << now.prompt;
    std::cout << "\n" << style.bold("decision") << "\n";
    if (have_previous) {
      bool same = now.ok == previous.ok && now.type == previous.type && now.data == previous.data;
      std::cout << "  before  " << describe(previous) << "\n"
                << "  now     " << (same ? describe(now) : style.yellow(describe(now)))
                << (same ? style.dim("   (unchanged)") : style.yellow("   (changed)")) << "\n";
    } else {
      std::cout << "  now     " << describe(now) << "\n";
    }
    std::cout << style.dim("\nwatching " + agent_dir.string() + " — save a file to re-run") << "\n";
    std::cout.flush();
    previous = now;
    have_previous = true;
  };

  host.agent_version(agent_dir.string());  // the first load: errors here are exit 2
  show(nullptr);
  while (saves_left != 0 && std::chrono::steady_clock::now() < deadline) {
    host.pump(std::chrono::milliseconds(100));
    while (!reports.empty()) {
      ReloadReport report = reports.front();
      reports.erase(reports.begin());
      ++save;
      show(&report);
      if (saves_left > 0 && --saves_left == 0) break;
    }
  }
  return kExitDone;
}

}  // namespace luagent::cli
