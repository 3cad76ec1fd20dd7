// A game embedding luagent: a fixed-step 60 Hz loop with two NPC agents (a guard and a
// merchant) whose actions are C++ world tools. The model is the replay provider (a
// recorded cassette) with a simulated latency, so it runs offline; every frame calls
// host.pump(2ms) and prints how long it took, and updates() drive the UI log.
//
//   game_npc [--frames N] [--latency MS] [--record]
//
// --record re-records cassette.jsonl from model.lua through the script provider.
#include <luagent/luagent.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace {

// The game's own state: entities on a grid and a merchant's purse.
struct World {
  struct Entity {
    double x, y;
  };
  std::map<std::string, Entity> entities = {
      {"guard", {0, 0}}, {"merchant", {10, 2}}, {"stranger", {4, 7}}, {"well", {8, 8}}};
  int merchant_gold = 0;

  nlohmann::json look_around(const std::string& who, double radius) const {
    nlohmann::json seen = nlohmann::json::array();
    const Entity& self = entities.at(who);
    for (const auto& [name, e] : entities)
      if (name != who && std::hypot(e.x - self.x, e.y - self.y) <= radius)
        seen.push_back({{"name", name}, {"x", e.x}, {"y", e.y}});
    return seen;
  }
};

std::string arg_value(int argc, char** argv, const char* flag, const char* fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], flag) == 0) return argv[i + 1];
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace std::chrono;
  const std::filesystem::path here = GAME_NPC_DIR;
  const int max_frames = std::stoi(arg_value(argc, argv, "--frames", "600"));
  const bool record = argc > 1 && std::strcmp(argv[argc - 1], "--record") == 0;
  World world;

  luagent::HostConfig config;
  config.agents_dir = here / "agents";
  // Every event is an fsync'ed SQLite write on this thread; a game keeps its store on fast
  // storage (here tmpfs when there is one) so those writes stay far below a frame.
  auto store_dir = std::filesystem::is_directory("/dev/shm")
                       ? std::filesystem::path("/dev/shm")
                       : std::filesystem::temp_directory_path();
  config.store = "sqlite:" + (store_dir / "luagent-game-npc.db").string();
  if (record) {
    std::filesystem::remove(here / "cassette.jsonl");
    config.provider = "script";
    config.script = here / "model.lua";
    config.record = here / "cassette.jsonl";
  } else {
    config.provider = "replay";
    config.cassette = here / "cassette.jsonl";
    config.replay_latency = milliseconds(std::stoi(arg_value(argc, argv, "--latency", "150")));
  }
  try {
    luagent::Host host(config);
    // World tools. Each NPC's coroutine calls them from Lua; they run on this thread.
    // Which NPC is acting: a tool runs right after its tool_started event is stored, so
    // the last event's thread names the caller.
    std::string acting;
    host.tool("look_around", {{"radius", "number"}}, [&](const nlohmann::json& a) {
      return world.look_around(acting, a.value("radius", 5.0));
    });
    host.tool("move_to", {{"x", "number"}, {"y", "number"}}, [&](const nlohmann::json& a) {
      world.entities[acting] = {a.value("x", 0.0), a.value("y", 0.0)};
      return nlohmann::json{{"at", {a.value("x", 0.0), a.value("y", 0.0)}}};
    });
    host.tool("trade", {{"item", "string"}, {"price", "number"}}, [&](const nlohmann::json& a) {
      world.merchant_gold += a.value("price", 0);
      return nlohmann::json{{"sold", a.value("item", "")}, {"gold", world.merchant_gold}};
    });
    host.tool("say", {{"text", "string"}}, [&](const nlohmann::json& a) {
      std::printf("  [%s] says: %s\n", acting.c_str(), a.value("text", "").c_str());
      return true;
    });
    std::map<std::string, std::string> npc_of;  // thread id -> NPC name
    host.on_event([&](const luagent::Thread& thread, const luagent::Event&) {
      acting = npc_of.count(thread.id) ? npc_of[thread.id] : thread.agent;
    });
    for (const char* npc : {"guard", "merchant"})
      npc_of[host.launch(npc, luagent::Event::user("A stranger approaches the village."))] = npc;

    const auto frame = microseconds(16667);  // fixed 60 Hz step
    auto next = steady_clock::now();
    double worst_us = 0;
    int frames = 0, ended = 0;
    for (; frames < max_frames && ended < 2; ++frames) {
      auto start = steady_clock::now();
      host.pump(milliseconds(2));  // never longer than the budget
      double took = duration<double, std::micro>(steady_clock::now() - start).count();
      worst_us = std::max(worst_us, took);
      for (const luagent::Update& u : host.updates()) {
        if (u.kind == luagent::Update::Kind::event && u.event.type != "tool_started")
          std::printf("frame %4d  pump %6.0f us  %-8s %-14s %s\n", frames, took,
                      npc_of[u.thread_id].c_str(), u.event.type.c_str(),
                      u.event.data.dump().substr(0, 70).c_str());
        if (u.kind == luagent::Update::Kind::done || u.kind == luagent::Update::Kind::failed) {
          ++ended;
          if (u.kind == luagent::Update::Kind::failed)
            std::fprintf(stderr, "%s failed: %s\n", npc_of[u.thread_id].c_str(),
                         u.event.data.dump().c_str());
        }
      }
      // ... the game's own update and render would go here ...
      next += frame;
      std::this_thread::sleep_until(next);
    }
    std::printf("%d frames, worst pump %.0f us, merchant gold %d, guard at (%g, %g)\n", frames,
                worst_us, world.merchant_gold, world.entities["guard"].x,
                world.entities["guard"].y);
    return ended == 2 ? 0 : 1;
  } catch (const luagent::Error& e) {
    std::fprintf(stderr, "game_npc: %s\n", e.what());
    return 2;
  }
}
