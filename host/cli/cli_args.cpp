#include <algorithm>

#include "cli/cli.hpp"

namespace luagent::cli {

// Options that take a value; everything else starting with -- is a switch.
// New commands add their options here.
const std::vector<std::string> kValueOptions = {
    "--store", "--provider", "--cassette", "--model", "--config", "--agents", "--reject", "--say",
    "--key", "--format", "--status", "--agent",
    // dev / replay / eval
    "--thread", "--threads", "--saves", "--timeout",
    // lifecycle_commands.cpp
    "--event", "--at", "--reason", "--by", "--since", "--before"};
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
          // `--say --json` said "--json" to the agent: the value was missing, not odd.
          std::string next = argv[i + 1];
          if (next.size() > 2 && next.rfind("--", 0) == 0)
            throw Error(ErrorCode::usage, arg + " needs a value, not the option " + next +
                                              " (for a value starting with --, write " + arg +
                                              "=VALUE)");
          value = std::move(next);
          ++i;
        }
        // `--store=` used the default store and `--store a --store b` kept b without a
        // word: both are slips worth stopping at.
        if (value.empty()) throw Error(ErrorCode::usage, arg + " needs a value, not an empty one");
        if (!args.options.emplace(arg, value).second)
          throw Error(ErrorCode::usage, arg + " is given twice; give it once");
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

std::string option(const Args& args, const std::string& name, const std::string& fallback) {
  auto found = args.options.find(name);
  return found == args.options.end() ? fallback : found->second;
}

std::int64_t positive_integer(const std::string& text, const std::string& what) {
  std::size_t used = 0;
  long long value = 0;
  // Digits only: stoll also skips leading blanks and takes a sign (" 1", "+1").
  bool digits = !text.empty() &&
                std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  try {
    if (digits) value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (!digits || used != text.size() || value < 1)
    throw Error(ErrorCode::usage, what + " must be a positive integer, not '" + text + "'");
  return value;
}

bool has(const Args& args, const std::string& name) {
  return args.options.count(name) > 0;
}

}  // namespace luagent::cli
