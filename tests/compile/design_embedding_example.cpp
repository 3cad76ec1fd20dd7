// DESIGN.md's "C++ embedding" example, verbatim inside a function, with stand-ins for the
// game's own objects (world, ui, schema, running). Compiled, never run: the contract's
// example must keep compiling against the public headers.
#include <luagent/luagent.hpp>

#include <chrono>

namespace {
using namespace std::chrono_literals;

struct World {
  nlohmann::json spawn(const nlohmann::json& args) { return args; }
};
struct Ui {
  void show(const luagent::Update&) {}
};

[[maybe_unused]] void design_embedding_example(World& world, Ui& ui, const nlohmann::json& schema,
                                               const bool& running) {
  // --- from DESIGN.md ---
  luagent::Host host{{.agents_dir = "agents", .store = "sqlite:game.db"}};
  host.tool("spawn_enemy", schema, [&](const nlohmann::json& args) { return world.spawn(args); });
  auto id = host.launch("guard", luagent::Event::user("Who goes there?"));
  while (running) {  // game loop
    host.pump(2ms);  // resumes agents whose LLM replies arrived; never blocks longer
    for (auto& u : host.updates()) ui.show(u);
  }
  // --- end ---
  (void)id;
}
}  // namespace
