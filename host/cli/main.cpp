// The luagent command line. Exit codes (DESIGN.md): 0 done, 10 waiting for a human or
// approval, 1 agent error, 2 usage or configuration error.
#include <algorithm>
#include <initializer_list>
#include <iostream>
#include <string_view>
#include <vector>

#include "cli/cli.hpp"

namespace {

using namespace luagent::cli;

struct Command {
  const char* name;
  int (*run)(const Args&);
  // The options it reads (--json and --help go everywhere): any other is a usage error,
  // never silently ignored (`show T --approve` approved nothing and said nothing).
  std::vector<std::string_view> options;
};

// The options of a command that makes its Host from flags (host_config()), and `more`.
std::vector<std::string_view> host_options(std::initializer_list<std::string_view> more = {}) {
  std::vector<std::string_view> options = {"--store", "--provider", "--cassette",
                                           "--model", "--config",   "--agents"};
  options.insert(options.end(), more.begin(), more.end());
  return options;
}

// Add a command here, with the options it reads, and new options in cli_args.cpp.
const Command kCommands[] = {
    {"run", command_run, host_options()},
    {"resume", command_resume,
     host_options({"--approve", "--reject", "--say", "--event", "--key", "--by"})},
    {"show", command_show, {"--store", "--config", "--format"}},
    {"threads",
     command_threads,
     {"--store", "--config", "--status", "--agent", "--since", "--before"}},
    {"fork", command_fork, {"--store", "--config", "--at"}},
    {"cancel", command_cancel, {"--store", "--config", "--reason"}},
    {"dev", command_dev, host_options({"--thread", "--saves", "--timeout"})},
    {"replay", command_replay, host_options({"--threads"})},
    {"eval", command_eval, host_options()},
};

void check_options(const Command& command, const Args& args) {
  for (const auto& [name, value] : args.options) {
    if (name == "--help") continue;
    if (std::find(command.options.begin(), command.options.end(), name) == command.options.end())
      throw luagent::Error(
          luagent::ErrorCode::usage,
          std::string(command.name) + " does not take " + name + " (see luagent --help)");
  }
}

constexpr const char* kUsage = R"(usage: luagent <command> [options]

commands:
  run AGENT [MESSAGE]                 start a thread; run until it waits or ends
  resume THREAD (--approve | --reject TEXT | --say TEXT | --event JSON) [--key K] [--by WHO]
                                      answer a waiting thread and run on; with no
                                      answer, continue a thread a crash interrupted
  show THREAD [--format text|json|llm|md]
                                      print a thread
  threads [--status S] [--agent A] [--since T] [--before T]
                                      list threads (T: 2026-11-21T20:00:00.000Z,
                                      compared with the time of the last event)
  fork THREAD --at N                  a new thread with events 1..N of THREAD
  cancel THREAD [--reason TEXT]       end a running or waiting thread
  dev AGENT [--thread T | MESSAGE]    watch; on every save re-run the next decision, show diffs
      [--saves N] [--timeout S]       (stop after N saves / S seconds)
  replay AGENT --threads SELECTOR     re-decide stored threads (ids,... | status:S | agent:A |
                                      last:N) under the current scripts; report what changed
  eval CASES                          prompt tests from a Lua case file; exit 1 on a failure

options:
  --json            one JSON object per line
  --store URI       sqlite:PATH or fs:DIR (default sqlite:.luagent/threads.db)
  --provider NAME   openai | anthropic | replay | script
  --cassette FILE   the replay provider's recorded calls
  --model NAME      model name passed to the provider
  --config FILE     luagent.config.lua (default: ./luagent.config.lua, then AGENT/luagent.config.lua)
  --agents DIR      where agent names resolve (default .)

exit codes: 0 done, 10 waiting for a human or approval, 1 agent error, 2 usage error
)";

}  // namespace

int main(int argc, char** argv) {
  // Known before the flags are read: a mistake in them is reported in the form asked for.
  bool json = std::any_of(argv + 1, argv + argc,
                          [](const char* arg) { return std::string_view(arg) == "--json"; });
  try {
    Args args = parse_args(argc, argv);
    if (args.command == "help" || has(args, "--help")) {
      // `help TOPIC` for a command that does not exist is a typo, not a question answered.
      if (args.command == "help" && !args.positional.empty()) {
        const std::string& topic = args.positional.front();
        bool known = std::any_of(std::begin(kCommands), std::end(kCommands),
                                 [&](const Command& command) { return topic == command.name; });
        if (!known || args.positional.size() > 1)
          throw luagent::Error(
              luagent::ErrorCode::usage,
              (known ? "help takes one command, not " + std::to_string(args.positional.size())
                     : "no command '" + topic + "' to help with") +
                  " (see luagent --help)");
      }
      std::cout << kUsage;
      return kExitDone;
    }
    // Not asked for, the usage is an error: on stderr, where a script does not read answers.
    if (args.command.empty()) {
      if (json) throw luagent::Error(luagent::ErrorCode::usage, "no command (see luagent --help)");
      std::cerr << kUsage;
      return kExitUsage;
    }
    for (const Command& command : kCommands)
      if (args.command == command.name) {
        check_options(command, args);
        return command.run(args);
      }
    throw luagent::Error(luagent::ErrorCode::usage,
                         "unknown command '" + args.command + "' (see luagent --help)");
  } catch (const luagent::Error& error) {
    if (json) {
      nlohmann::json body = {{"code", luagent::error_code_name(error.code())},
                             {"message", error.message()}};
      if (!error.source().empty()) body["source"] = error.source();
      if (error.line() > 0) body["line"] = error.line();
      std::cerr << nlohmann::json({{"error", body}}).dump() << "\n";
    } else {
      std::cerr << "luagent: " << error.what() << "\n";
    }
    return exit_code_for(error);
  } catch (const std::exception& error) {
    if (json)
      std::cerr << nlohmann::json({{"error", {{"code", "internal"}, {"message", error.what()}}}})
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n";
    else
      std::cerr << "luagent: internal error: " << error.what() << "\n";
    return kExitAgentError;
  }
}
