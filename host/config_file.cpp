#include "config_file.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

#include "llm/provider_factory.hpp"
#include "luagent/error.hpp"

namespace luagent {
namespace {

// Upper bounds keep a typo (an extra digit or two) from reading as "no limit".
constexpr long long kMaxStepCpuMs = 3'600'000;  // an hour of CPU for one step
constexpr long long kMaxMemoryMb = 1'048'576;   // 1 TiB of Lua heap

std::vector<std::string> known_keys() {
  std::vector<std::string> keys = {"store",  "provider", "model",  "cassette",
                                   "script", "limits",   "openai", "anthropic"};
  for (std::string_view key : llm::http_provider_keys())
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.emplace_back(key);
  return keys;
}

// Edit distance (insertions, deletions, substitutions, adjacent swaps), for suggestions.
std::size_t distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i)
    for (std::size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min(
          {d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

std::string unknown_key_message(const std::filesystem::path& file, const std::string& what,
                                const std::string& key, const std::vector<std::string>& known) {
  std::string message = file.string() + ": unknown " + what + " '" + key + "'";
  const std::string* nearest = nullptr;
  std::size_t best = 3;  // suggest only near misses
  for (const std::string& candidate : known)
    if (std::size_t d = distance(key, candidate); d < best) {
      best = d;
      nearest = &candidate;
    }
  if (nearest) return message + " (did you mean '" + *nearest + "'?)";
  std::string list;
  for (const std::string& candidate : known) list += (list.empty() ? "" : ", ") + candidate;
  return message + " (known: " + list + ")";
}

}  // namespace

void check_config_keys(const nlohmann::json& config, const std::filesystem::path& file) {
  static const std::vector<std::string> kKnown = known_keys();
  for (const auto& [key, value] : config.items())
    if (std::find(kKnown.begin(), kKnown.end(), key) == kKnown.end())
      throw Error(ErrorCode::config, unknown_key_message(file, "setting", key, kKnown));
  // Checked here, whatever overrides them: where they are read, a flag or the environment
  // can hide a wrong type, and the message there cannot name the file.
  for (const char* key : {"store", "provider", "model", "cassette", "script"})
    if (auto found = config.find(key); found != config.end() && !found->is_string())
      throw Error(ErrorCode::config,
                  file.string() + ": '" + key + "' must be a string, not " + found->dump());
  for (const char* key : {"openai", "anthropic"})
    if (auto found = config.find(key); found != config.end() && !found->is_object())
      throw Error(ErrorCode::config, file.string() + ": '" + key +
                                         "' must be a table of settings, not " + found->dump());
}

RuntimeLimits config_limits(const nlohmann::json& config, const std::filesystem::path& file,
                            RuntimeLimits defaults) {
  auto found = config.find("limits");
  if (found == config.end()) return defaults;
  if (!found->is_object())
    throw Error(
        ErrorCode::config,
        file.string() + ": 'limits' must be a table { step_cpu_ms = ..., memory_mb = ... }");
  auto bounded = [&](const std::string& key, const nlohmann::json& value, long long high) {
    // A float with an integral value (512.0 from `0.5 * 1024`) counts as an integer.
    double number = value.is_number() ? value.get<double>() : 0;
    if (!value.is_number() || number != std::floor(number) || number < 1 ||
        number > static_cast<double>(high))
      throw Error(ErrorCode::config, file.string() + ": limits." + key +
                                         " must be an integer in [1, " + std::to_string(high) +
                                         "], not " + value.dump());
    return static_cast<long long>(number);
  };
  for (const auto& [key, value] : found->items()) {
    if (key == "step_cpu_ms")
      defaults.step_cpu_ms = static_cast<int>(bounded(key, value, kMaxStepCpuMs));
    else if (key == "memory_mb")
      defaults.memory_mb = static_cast<std::size_t>(bounded(key, value, kMaxMemoryMb));
    else
      throw Error(ErrorCode::config,
                  unknown_key_message(file, "limit", "limits." + key,
                                      {"limits.step_cpu_ms", "limits.memory_mb"}));
  }
  return defaults;
}

}  // namespace luagent
