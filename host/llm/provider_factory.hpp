// Builds the HTTP providers from configuration: host.cpp passes the merged settings
// (flags > environment > luagent.config.lua) and gets a ready Provider on its loop.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "event_loop.hpp"
#include "llm/http_chat_provider.hpp"
#include "llm/provider.hpp"

namespace luagent::llm {

/// True for the names make_http_provider knows: "openai" and "anthropic".
bool is_http_provider(const std::string& name);

/// Reads settings from a JSON object: base_url, model, max_tokens, max_retries,
/// connect_timeout / timeout / idle_timeout (seconds), retry_delay_ms, max_response_mb, stream,
/// prices = { [model] = { input_per_mtok, output_per_mtok, cached_input_per_mtok } }.
/// Throws Error(config) naming the bad key. An "api_key" key is refused: keys come from the
/// environment only.
HttpProviderSettings http_provider_settings(const std::string& name,
                                            const nlohmann::json& settings);

/// The keys http_provider_config takes from luagent.config.lua (api_key only to refuse it).
const std::vector<std::string_view>& http_provider_keys();

/// The settings for provider `name` from luagent.config.lua (its provider keys at the top level,
/// overridden by a `[name] = { ... }` table), then the environment (OPENAI_BASE_URL /
/// ANTHROPIC_BASE_URL, LUAGENT_STREAM=1 or 0), then `model` when non-empty (flag or LUAGENT_MODEL).
/// Throws Error(config) naming `file` (the config file) for a bad setting from it, and naming
/// the variable for a base URL from the environment that is not an http:// or https:// URL,
/// and for a LUAGENT_STREAM that is neither 1, 0 nor empty.
nlohmann::json http_provider_config(const std::string& name, const nlohmann::json& file_config,
                                    const std::filesystem::path& file, const std::string& model);

/// The provider `name` ("openai" or "anthropic") configured by `settings` (see above), with
/// its API key from OPENAI_API_KEY / ANTHROPIC_API_KEY, its transport registered with `loop`.
std::unique_ptr<Provider> make_http_provider(const std::string& name,
                                             const nlohmann::json& settings, EventLoop& loop);

}  // namespace luagent::llm
