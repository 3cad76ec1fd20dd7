#include "support/agents_host.hpp"

#include <filesystem>
#include <fstream>

namespace luagent::test {

AgentsHost::AgentsHost(const std::map<std::string, std::string>& agents,
                       const std::function<void(HostConfig&)>& configure) {
  for (const auto& [name, source] : agents) {
    std::filesystem::create_directories(dir / name);
    std::ofstream(dir / name / "agent.lua") << source;
  }
  HostConfig config;
  config.store = "sqlite:" + (dir / "t.db").string();
  config.agents_dir = dir.path();
  config.log = [this](std::string_view level, std::string_view message) {
    log.push_back(std::string(level) + ": " + std::string(message));
  };
  if (configure) configure(config);
  host = std::make_unique<Host>(config);
}

bool AgentsHost::logged(const std::string& text) const {
  for (const std::string& line : log)
    if (line.find(text) != std::string::npos) return true;
  return false;
}

}  // namespace luagent::test
