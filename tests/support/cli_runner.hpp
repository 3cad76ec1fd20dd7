// Runs the real luagent binary as a subprocess and captures what it printed.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace luagent::test {

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

/// Runs build/luagent with `args` in `cwd` (empty: the current directory), with
/// `env` added to the environment (an empty value removes the variable), and the file
/// `stdin_path` as its standard input.
CliResult run_cli(const std::vector<std::string>& args, const std::string& cwd = {},
                  const std::map<std::string, std::string>& env = {},
                  const std::string& stdin_path = "/dev/null");

}  // namespace luagent::test
