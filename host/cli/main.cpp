// The luagent command line: run, resume, show, threads.
// Exit codes (DESIGN.md): 0 done, 10 waiting for a human or approval, 1 agent error,
// 2 usage or configuration error.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "luagent/luagent.hpp"

namespace {

using luagent::Error;
using luagent::ErrorCode;
using luagent::Event;
using luagent::Status;
using luagent::Thread;

constexpr int kExitDone = 0;
constexpr int kExitAgentError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitWaiting = 10;

constexpr const char* kUsage = R"(usage: luagent <command> [options]

commands:
  run AGENT [MESSAGE]                 start a thread; run until it waits or ends
  resume THREAD (--approve | --reject TEXT | --say TEXT) [--key K]
                                      answer a waiting thread and run on
  show THREAD [--format text|json|llm]
                                      print a thread
  threads [--status S] [--agent A]    list threads

options:
  --json            one JSON object per line
  --store URI       sqlite:PATH (default sqlite:.luagent/threads.db)
  --provider NAME   replay | script
  --cassette FILE   the replay provider's recorded calls
  --model NAME      model name passed to the provider
  --config FILE     luagent.config.lua (default: ./luagent.config.lua, then AGENT/luagent.config.lua)
  --agents DIR      where agent names resolve (default .)

exit codes: 0 done, 10 waiting for a human or approval, 1 agent error, 2 usage error
)";

struct Args {
  std::string command;
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;
  bool json = false;
};

// Options that take a value; everything else starting with -- is a switch.
const std::vector<std::string> kValueOptions = {"--store",  "--provider", "--cassette", "--model",
                                                "--config", "--agents",   "--reject",   "--say",
                                                "--key",    "--format",   "--status",   "--agent"};
const std::vector<std::string> kSwitches = {"--json", "--approve", "--help"};

Args parse_args(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h") arg = "--help";
    if (arg.rfind("--", 0) == 0 && arg.size() > 2) {
      std::string value;
      bool has_value = false;
      if (auto eq = arg.find('='); eq != std::string::npos) {
        value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
        has_value = true;
      }
      if (std::find(kValueOptions.begin(), kValueOptions.end(), arg) != kValueOptions.end()) {
        if (!has_value) {
          if (i + 1 >= argc) throw Error(ErrorCode::usage, arg + " needs a value");
          value = argv[++i];
        }
        args.options[arg] = value;
      } else if (std::find(kSwitches.begin(), kSwitches.end(), arg) != kSwitches.end()) {
        if (has_value) throw Error(ErrorCode::usage, arg + " takes no value");
        if (arg == "--json")
          args.json = true;
        else
          args.options[arg] = "1";
      } else {
        throw Error(ErrorCode::usage, "unknown option " + arg + " (see luagent --help)");
      }
    } else if (args.command.empty()) {
      args.command = arg;
    } else {
      args.positional.push_back(arg);
    }
  }
  return args;
}

std::string option(const Args& args, const std::string& name, const std::string& fallback = {}) {
  auto found = args.options.find(name);
  return found == args.options.end() ? fallback : found->second;
}

bool has(const Args& args, const std::string& name) {
  return args.options.count(name) > 0;
}

// ---------------------------------------------------------------------------
// Output

struct Style {
  bool color = false;
  std::string paint(const std::string& text, const char* code) const {
    return color ? std::string("\033[") + code + "m" + text + "\033[0m" : text;
  }
  std::string dim(const std::string& t) const { return paint(t, "2"); }
  std::string bold(const std::string& t) const { return paint(t, "1"); }
  std::string green(const std::string& t) const { return paint(t, "32"); }
  std::string yellow(const std::string& t) const { return paint(t, "33"); }
  std::string red(const std::string& t) const { return paint(t, "31"); }
  std::string cyan(const std::string& t) const { return paint(t, "36"); }
};

Style make_style(bool json) {
  Style style;
  style.color = !json && isatty(STDOUT_FILENO) && std::getenv("NO_COLOR") == nullptr;
  return style;
}

std::string scalar_text(const nlohmann::json& value) {
  return value.is_string() ? value.get<std::string>() : value.dump();
}

std::string summarize(const Event& event) {
  const auto& data = event.data;
  if (data.is_null()) return "";
  if (!data.is_object()) return scalar_text(data);
  if (event.type == "await") {
    std::string text = data.value("kind", "?");
    if (data.contains("payload")) text += " " + summarize(Event{0, "", data["payload"], 0, {}, {}});
    return text;
  }
  std::string text;
  for (const auto& [key, value] : data.items()) {
    if (key == "intent") continue;
    if (!text.empty()) text += "  ";
    text += key + ": " + scalar_text(value);
  }
  return text;
}

bool is_internal(const std::string& type) {
  return type == "tool_started" || type == "await" || type == "done";
}

void print_event(const Style& style, const Event& event) {
  std::string id = std::to_string(event.id);
  std::string type = event.type;
  std::string line =
      style.dim(std::string(4 - std::min<std::size_t>(4, id.size()), ' ') + id) + " ";
  std::string padded = type + std::string(type.size() < 16 ? 16 - type.size() : 1, ' ');
  if (type == "failed" || type == "error" || type == "outcome_unknown")
    padded = style.red(padded);
  else if (type == "user_input" || type == "human_response" || type == "approval")
    padded = style.cyan(padded);
  else if (is_internal(type))
    padded = style.dim(padded);
  else
    padded = style.bold(padded);
  std::cout << line << padded << summarize(event) << "\n";
}

void print_event_json(const std::string& thread_id, const Event& event) {
  nlohmann::json line = {{"thread_id", thread_id}, {"event", luagent::to_json(event)}};
  std::cout << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

int exit_code_for(Status status) {
  switch (status) {
    case Status::done:
      return kExitDone;
    case Status::awaiting_human:
    case Status::awaiting_approval:
      return kExitWaiting;
    case Status::running:
    case Status::failed:
    case Status::cancelled:
      return kExitAgentError;
  }
  return kExitAgentError;
}

int report_outcome(const Args& args, const Style& style, const Thread& thread) {
  Status status = thread.status();
  if (args.json) {
    std::cout << nlohmann::json({{"thread_id", thread.id},
                                 {"status", luagent::status_name(status)},
                                 {"version", thread.version()}})
                     .dump()
              << "\n";
    return exit_code_for(status);
  }
  std::string name(luagent::status_name(status));
  std::string id = thread.id;
  switch (status) {
    case Status::awaiting_approval:
      std::cout << style.yellow("waiting for approval") << "  thread " << id << "\n"
                << "  approve: luagent resume " << id << " --approve\n"
                << "  reject:  luagent resume " << id << " --reject \"why\"\n";
      break;
    case Status::awaiting_human:
      std::cout << style.yellow("waiting for a human") << "  thread " << id << "\n"
                << "  answer:  luagent resume " << id << " --say \"...\"\n";
      break;
    case Status::done:
      std::cout << style.green("done") << "  thread " << id << "\n";
      break;
    default:
      std::cout << style.red(name) << "  thread " << id << "\n";
  }
  return exit_code_for(status);
}

// ---------------------------------------------------------------------------

std::filesystem::path find_config(const Args& args, const std::filesystem::path& agent_dir) {
  if (has(args, "--config")) return option(args, "--config");
  if (std::filesystem::exists("luagent.config.lua")) return "luagent.config.lua";
  if (!agent_dir.empty() && std::filesystem::exists(agent_dir / "luagent.config.lua"))
    return agent_dir / "luagent.config.lua";
  return {};
}

luagent::HostConfig host_config(const Args& args, const std::filesystem::path& agent_dir) {
  luagent::HostConfig config;
  config.store = option(args, "--store");
  config.provider = option(args, "--provider");
  config.model = option(args, "--model");
  config.cassette = option(args, "--cassette");
  config.agents_dir = option(args, "--agents", ".");
  config.config_file = find_config(args, agent_dir);
  return config;
}

// The folder an AGENT argument names, for finding its luagent.config.lua.
std::filesystem::path agent_dir_of(const Args& args, const std::string& agent) {
  std::filesystem::path path(agent);
  if (std::filesystem::is_directory(path)) return path;
  auto under = std::filesystem::path(option(args, "--agents", ".")) / agent;
  if (std::filesystem::is_directory(under)) return under;
  return {};
}

void attach_printer(luagent::Host& host, const Args& args, const Style& style) {
  host.on_event([&args, style](const Thread& thread, const Event& event) {
    if (args.json)
      print_event_json(thread.id, event);
    else
      print_event(style, event);
    std::cout.flush();
  });
}

int command_run(const Args& args) {
  if (args.positional.empty())
    throw Error(ErrorCode::usage, "run needs an AGENT (see luagent --help)");
  if (args.positional.size() > 2)
    throw Error(ErrorCode::usage, "run takes AGENT and one MESSAGE; quote the message");
  std::string message;
  if (args.positional.size() == 2) {
    message = args.positional[1];
  } else if (!isatty(STDIN_FILENO)) {
    message.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    while (!message.empty() && (message.back() == '\n' || message.back() == '\r'))
      message.pop_back();
  }
  if (message.empty()) throw Error(ErrorCode::usage, "run needs a MESSAGE (argument or stdin)");
  const std::string& agent = args.positional[0];
  Style style = make_style(args.json);
  luagent::Host host(host_config(args, agent_dir_of(args, agent)));
  attach_printer(host, args, style);
  std::string id = host.launch(agent, Event::user(message));
  host.run_until_idle();
  return report_outcome(args, style, host.get(id));
}

int command_resume(const Args& args) {
  if (args.positional.size() != 1)
    throw Error(ErrorCode::usage, "resume needs exactly one THREAD id");
  int answers = has(args, "--approve") + has(args, "--reject") + has(args, "--say");
  if (answers != 1)
    throw Error(ErrorCode::usage,
                "resume needs exactly one of --approve, --reject TEXT, --say TEXT");
  std::string key = option(args, "--key");
  luagent::Resume resume = has(args, "--approve") ? luagent::Resume::approve(key)
                           : has(args, "--reject")
                               ? luagent::Resume::reject(option(args, "--reject"), key)
                               : luagent::Resume::say(option(args, "--say"), key);
  const std::string& id = args.positional[0];
  // The thread's own agent folder may hold the config (provider, cassette).
  std::filesystem::path agent_dir;
  {
    luagent::HostConfig probe;
    probe.store = option(args, "--store");
    probe.config_file = has(args, "--config") ? std::filesystem::path(option(args, "--config"))
                        : std::filesystem::exists("luagent.config.lua")
                            ? std::filesystem::path("luagent.config.lua")
                            : std::filesystem::path();
    luagent::Host reader(probe);
    Thread thread = reader.get(id);
    agent_dir = thread.agent_path;
  }
  Style style = make_style(args.json);
  luagent::Host host(host_config(args, agent_dir));
  attach_printer(host, args, style);
  host.resume(id, std::move(resume));
  host.run_until_idle();
  return report_outcome(args, style, host.get(id));
}

int command_show(const Args& args) {
  if (args.positional.size() != 1)
    throw Error(ErrorCode::usage, "show needs exactly one THREAD id");
  std::string format = option(args, "--format", args.json ? "json" : "text");
  if (format != "text" && format != "json" && format != "llm")
    throw Error(ErrorCode::usage, "--format must be text, json or llm, not '" + format + "'");
  luagent::HostConfig config;
  config.store = option(args, "--store");
  luagent::Host host(config);
  Thread thread = host.get(args.positional[0]);
  if (format == "json") {
    nlohmann::json json = luagent::to_json(thread);
    json["llm_calls"] = host.calls(thread.id);
    std::cout << json.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else if (format == "llm") {
    std::cout << host.render_context(thread) << "\n";
  } else {
    Style style = make_style(false);
    std::cout << style.bold("thread " + thread.id) << "  agent " << thread.agent << "  "
              << luagent::status_name(thread.status()) << "  created "
              << luagent::format_utc(thread.created_ms) << "\n";
    for (const Event& event : thread.events) print_event(style, event);
  }
  return kExitDone;
}

int command_threads(const Args& args) {
  if (!args.positional.empty()) throw Error(ErrorCode::usage, "threads takes no arguments");
  std::optional<Status> status;
  if (has(args, "--status")) {
    status = luagent::status_from_name(option(args, "--status"));
    if (!status)
      throw Error(ErrorCode::usage,
                  "--status must be one of running, awaiting_human, "
                  "awaiting_approval, done, failed, cancelled");
  }
  luagent::HostConfig config;
  config.store = option(args, "--store");
  luagent::Host host(config);
  for (const auto& summary : host.list(status, option(args, "--agent"))) {
    if (args.json) {
      std::cout << nlohmann::json({{"id", summary.id},
                                   {"agent", summary.agent},
                                   {"status", luagent::status_name(summary.status)},
                                   {"events", summary.version},
                                   {"created", luagent::format_utc(summary.created_ms)},
                                   {"updated", luagent::format_utc(summary.updated_ms)}})
                       .dump()
                << "\n";
    } else {
      std::cout << summary.id << "  " << summary.agent << "  "
                << luagent::status_name(summary.status) << "  " << summary.version << " events  "
                << luagent::format_utc(summary.updated_ms) << "\n";
    }
  }
  return kExitDone;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  try {
    Args args = parse_args(argc, argv);
    json = args.json;
    if (args.command.empty() || args.command == "help" || has(args, "--help")) {
      std::cout << kUsage;
      return args.command.empty() && !has(args, "--help") ? kExitUsage : kExitDone;
    }
    if (args.command == "run") return command_run(args);
    if (args.command == "resume") return command_resume(args);
    if (args.command == "show") return command_show(args);
    if (args.command == "threads") return command_threads(args);
    throw Error(ErrorCode::usage, "unknown command '" + args.command + "' (see luagent --help)");
  } catch (const Error& error) {
    if (json) {
      nlohmann::json body = {{"code", luagent::error_code_name(error.code())},
                             {"message", error.message()}};
      if (!error.source().empty()) body["source"] = error.source();
      if (error.line() > 0) body["line"] = error.line();
      std::cerr << nlohmann::json({{"error", body}}).dump() << "\n";
    } else {
      std::cerr << "luagent: " << error.what() << "\n";
    }
    return kExitUsage;
  } catch (const std::exception& error) {
    std::cerr << "luagent: internal error: " << error.what() << "\n";
    return kExitAgentError;
  }
}
