// The luagent command line. Exit codes (DESIGN.md): 0 done, 10 waiting for a human or
// approval, 1 agent error, 2 usage or configuration error.
#include <iostream>

#include "cli/cli.hpp"

namespace {

using namespace luagent::cli;

struct Command {
  const char* name;
  int (*run)(const Args&);
};

// Add a command here and its options in cli_args.cpp.
constexpr Command kCommands[] = {
    {"run", command_run},         {"resume", command_resume}, {"show", command_show},
    {"threads", command_threads}, {"fork", command_fork},     {"cancel", command_cancel},
    {"dev", command_dev},         {"replay", command_replay}, {"eval", command_eval},
};

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
  bool json = false;
  try {
    Args args = parse_args(argc, argv);
    json = args.json;
    if (args.command.empty() || args.command == "help" || has(args, "--help")) {
      std::cout << kUsage;
      return args.command.empty() && !has(args, "--help") ? kExitUsage : kExitDone;
    }
    for (const Command& command : kCommands)
      if (args.command == command.name) return command.run(args);
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
    return kExitUsage;
  } catch (const std::exception& error) {
    std::cerr << "luagent: internal error: " << error.what() << "\n";
    return kExitAgentError;
  }
}
