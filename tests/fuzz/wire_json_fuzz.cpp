// libFuzzer target: parse_wire_json, the parser of every provider body. It must never
// crash, must throw only luagent::Error, must give what nlohmann gives for any text within
// the nesting bound, and must refuse (limit) exactly the texts nesting deeper than it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "llm/wire_json.hpp"
#include "luagent/error.hpp"

namespace {

// The nesting of a parsed value, without recursion: nlohmann builds values thousands of
// levels deep.
std::size_t depth_of(const nlohmann::json& value) {
  std::size_t deepest = 0;
  std::vector<std::pair<const nlohmann::json*, std::size_t>> pending{{&value, 0}};
  while (!pending.empty()) {
    auto [node, depth] = pending.back();
    pending.pop_back();
    if (!node->is_structured()) continue;
    deepest = std::max(deepest, depth + 1);
    for (const auto& child : *node) pending.push_back({&child, depth + 1});
  }
  return deepest;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  nlohmann::json expected = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  const bool deep = !expected.is_discarded() &&
                    depth_of(expected) > static_cast<std::size_t>(luagent::llm::kMaxWireJsonDepth);
  try {
    nlohmann::json parsed = luagent::llm::parse_wire_json(text, "a fuzzed body");
    if (deep || parsed != expected) std::abort();
  } catch (const luagent::Error& e) {
    // A limit is wrong only for valid text within the bound (malformed deep text may
    // meet the bound before the parser finds the fault).
    if (e.code() == luagent::ErrorCode::limit && !deep && !expected.is_discarded()) std::abort();
    if (e.code() == luagent::ErrorCode::provider && !expected.is_discarded()) std::abort();
  }
  return 0;
}
