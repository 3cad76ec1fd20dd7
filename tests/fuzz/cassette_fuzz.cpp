// Fuzzes the cassette reader (the replay provider's JSONL file, hand-edited or recorded):
// any input must end in recorded answers or a luagent::Error, never another exception.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "llm/replay_provider.hpp"
#include "luagent/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  try {
    auto answers = luagent::llm::read_cassette(in, "fuzz.jsonl");
    for (const auto& [key, recorded] : answers)
      if (recorded.empty()) __builtin_trap();  // every key has the line that made it
  } catch (const luagent::Error&) {
  }
  return 0;
}
