// Consumer of the installed package: launches an agent that calls a C++ host tool and
// the installed stdlib (luagent.prompt), pumps until it ends, prints the result.
// Usage: consumer WORK_DIR   (exit 0 and "consumer ok: ..." on success)
#include <dlfcn.h>
#include <luagent/luagent.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer WORK_DIR\n");
    return 2;
  }
  std::filesystem::path work = argv[1];
  std::filesystem::create_directories(work / "greeter");
  std::ofstream(work / "greeter/agent.lua") << R"(
local host = require "luagent.host"
local prompt = require "luagent.prompt"
return function(thread)
  local hello = prompt.template("hello {{ name }}") { name = host.call("player_name", {}) }
  thread:push("greeting", hello)
end)";
  try {
    luagent::HostConfig config;
    config.store = "sqlite:" + (work / "consumer.db").string();
    config.agents_dir = work;
    luagent::Host host(config);
    host.tool("player_name", nullptr, [](const nlohmann::json&) { return "Ada"; });
    auto id = host.launch("greeter", luagent::Event::user("hi"));
    for (int frame = 0; frame < 1000 && host.pump(std::chrono::milliseconds(2)) > 0; ++frame)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    luagent::Thread thread = host.get(id);
    if (thread.status() != luagent::Status::done) {
      std::fprintf(stderr, "consumer: thread ended %s: %s\n",
                   std::string(luagent::status_name(thread.status())).c_str(),
                   thread.events.back().data.dump().c_str());
      return 1;
    }
    // Linking luagent must leave the program's allocator alone: the Lua heap's mimalloc is
    // loaded privately, so malloc is still the C library's (or a sanitizer's).
    Dl_info owner{};
    void* malloc_in_use = ::dlsym(RTLD_DEFAULT, "malloc");
    if (!malloc_in_use || !::dladdr(malloc_in_use, &owner) || !owner.dli_fname ||
        std::strstr(owner.dli_fname, "mimalloc")) {
      std::fprintf(stderr, "consumer: the program's malloc now comes from %s\n",
                   owner.dli_fname ? owner.dli_fname : "nowhere");
      return 1;
    }
    std::printf("consumer ok: %s\n", thread.events[1].data.dump().c_str());
    return 0;
  } catch (const luagent::Error& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}
