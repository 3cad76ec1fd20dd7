// What luagent.config.lua may say, checked once it is read: a misspelled or unknown key
// and a limit of the wrong type or out of range are configuration errors naming the file
// and the key, never silently ignored (a `cassete = ...` used to leave the replay
// provider without a cassette and no hint why).
#pragma once

#include <filesystem>

#include <nlohmann/json.hpp>

#include "agent_runtime.hpp"

namespace luagent {

/// Throws Error(config) naming `file` and the key when `config` (the file's globals) has
/// a top-level key no part of luagent reads, with the nearest known key as a suggestion.
void check_config_keys(const nlohmann::json& config, const std::filesystem::path& file);

/// `limits = { step_cpu_ms =, memory_mb = }` from `config` over `defaults`; throws
/// Error(config) for a limits value that is not a table, an unknown limit, or a value
/// that is not a positive integer within bounds.
RuntimeLimits config_limits(const nlohmann::json& config, const std::filesystem::path& file,
                            RuntimeLimits defaults);

}  // namespace luagent
