// The set-up of tests that drive the embedding API: a temp folder of agents and a Host
// on a SQLite store inside it, keeping the log lines it writes.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "luagent/luagent.hpp"
#include "support/test_paths.hpp"

namespace luagent::test {

struct AgentsHost {
  TempDir dir;
  std::vector<std::string> log;  // "level: message"
  std::unique_ptr<Host> host;

  /// Writes each agent (name -> agent.lua source) to dir/name; `configure` may change the
  /// config before the Host is made.
  explicit AgentsHost(const std::map<std::string, std::string>& agents,
                      const std::function<void(HostConfig&)>& configure = nullptr);
  AgentsHost(const AgentsHost&) = delete;
  AgentsHost& operator=(const AgentsHost&) = delete;

  /// True when a log line contains `text`.
  bool logged(const std::string& text) const;
};

}  // namespace luagent::test
