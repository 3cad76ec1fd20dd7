// Runs the real luagent binary (or another built program) as a subprocess and captures
// what it printed.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace luagent::test {

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
  bool timed_out = false;  // killed, with every process it started, after the timeout
};

/// Runs build/luagent with `args` in `cwd` (empty: the current directory), with
/// `env` added to the environment (an empty value removes the variable), and the file
/// `stdin_path` as its standard input.
CliResult run_cli(const std::vector<std::string>& args, const std::string& cwd = {},
                  const std::map<std::string, std::string>& env = {},
                  const std::string& stdin_path = "/dev/null");

/// Runs `program` with `args` as run_cli() runs the CLI, in a process group of its own;
/// after `timeout` (zero: none) the whole group is killed and the result says timed_out.
CliResult run_program(const std::filesystem::path& program, const std::vector<std::string>& args,
                      const std::string& cwd = {},
                      const std::map<std::string, std::string>& env = {},
                      const std::string& stdin_path = "/dev/null",
                      std::chrono::milliseconds timeout = {});

}  // namespace luagent::test
