#include "llm/provider_factory.hpp"

#include <cmath>
#include <cstdlib>

#include "llm/anthropic_provider.hpp"
#include "llm/openai_provider.hpp"
#include "luagent/error.hpp"

namespace luagent::llm {
namespace {

Error bad(const std::string& provider, const std::string& key, const std::string& wanted) {
  return Error(ErrorCode::config,
               "provider " + provider + ": setting '" + key + "' must be " + wanted);
}

int seconds_as_ms(const std::string& provider, const nlohmann::json& value,
                  const std::string& key) {
  if (!value.is_number() || value.get<double>() <= 0 || value.get<double>() > 86400)
    throw bad(provider, key, "a number of seconds in (0, 86400]");
  return static_cast<int>(std::lround(value.get<double>() * 1000));
}

int bounded_int(const std::string& provider, const nlohmann::json& value, const std::string& key,
                int low, int high) {
  if (!value.is_number_integer() || value.get<long long>() < low || value.get<long long>() > high)
    throw bad(provider, key,
              "an integer in [" + std::to_string(low) + ", " + std::to_string(high) + "]");
  return value.get<int>();
}

double price_field(const std::string& provider, const nlohmann::json& value,
                   const std::string& key) {
  if (!value.is_number() || value.get<double>() < 0 || !std::isfinite(value.get<double>()))
    throw bad(provider, key, "a non-negative number (US dollars per million tokens)");
  return value.get<double>();
}

bool is_http_url(const std::string& text) {
  return text.starts_with("http://") || text.starts_with("https://");
}

std::string env_value(const char* name) {
  const char* value = std::getenv(name);
  return value ? std::string(value) : std::string();
}

}  // namespace

bool is_http_provider(const std::string& name) {
  return name == "openai" || name == "anthropic";
}

HttpProviderSettings http_provider_settings(const std::string& name,
                                            const nlohmann::json& settings) {
  HttpProviderSettings out;
  if (settings.is_null()) return out;
  if (!settings.is_object())
    throw Error(ErrorCode::config, "provider " + name + ": settings must be a table");
  for (const auto& [key, value] : settings.items()) {
    if (key == "api_key") {
      throw Error(ErrorCode::config,
                  "provider " + name + ": API keys are read from the environment only (" +
                      (name == "anthropic" ? "ANTHROPIC_API_KEY" : "OPENAI_API_KEY") +
                      "), never from a config file");
    } else if (key == "base_url") {
      if (!value.is_string() || !is_http_url(value.get<std::string>()))
        throw bad(name, key, "an http:// or https:// URL");
      out.base_url = value;
    } else if (key == "model") {
      if (!value.is_string()) throw bad(name, key, "a string");
      out.default_model = value;
    } else if (key == "max_tokens") {
      out.default_max_tokens = bounded_int(name, value, key, 1, 10'000'000);
    } else if (key == "max_retries") {
      out.max_retries = bounded_int(name, value, key, 0, 20);
    } else if (key == "retry_delay_ms") {
      out.retry_initial_delay_ms = bounded_int(name, value, key, 0, 600'000);
    } else if (key == "connect_timeout") {
      out.connect_timeout_ms = seconds_as_ms(name, value, key);
    } else if (key == "timeout") {
      out.total_timeout_ms = seconds_as_ms(name, value, key);
    } else if (key == "idle_timeout") {
      out.idle_timeout_ms = seconds_as_ms(name, value, key);
    } else if (key == "max_response_mb") {
      out.max_response_bytes = static_cast<std::size_t>(bounded_int(name, value, key, 1, 4096))
                               << 20;
    } else if (key == "stream") {
      if (!value.is_boolean()) throw bad(name, key, "true or false");
      out.always_stream = value;
    } else if (key == "prices") {
      if (!value.is_object())
        throw bad(name, key, "a table { [model] = { input_per_mtok =, ... } }");
      for (const auto& [model, price] : value.items()) {
        const std::string where = "prices." + model;
        if (!price.is_object()) throw bad(name, where, "a table");
        ModelPrice parsed;
        for (const auto& [field, number] : price.items()) {
          if (field == "input_per_mtok")
            parsed.input_per_mtok = price_field(name, number, where + "." + field);
          else if (field == "output_per_mtok")
            parsed.output_per_mtok = price_field(name, number, where + "." + field);
          else if (field == "cached_input_per_mtok")
            parsed.cached_input_per_mtok = price_field(name, number, where + "." + field);
          else
            throw bad(name, where + "." + field,
                      "one of input_per_mtok, output_per_mtok, cached_input_per_mtok");
        }
        out.prices[model] = parsed;
      }
    } else {
      throw Error(ErrorCode::config,
                  "provider " + name + ": unknown setting '" + key +
                      "' (base_url, model, max_tokens, max_retries, retry_delay_ms, "
                      "connect_timeout, timeout, idle_timeout, max_response_mb, stream, prices)");
    }
  }
  return out;
}

const std::vector<std::string_view>& http_provider_keys() {
  static const std::vector<std::string_view> kKeys = {
      "base_url",        "model",           "max_tokens", "max_retries",
      "retry_delay_ms",  "connect_timeout", "timeout",    "idle_timeout",
      "max_response_mb", "stream",          "prices",     "api_key"};
  return kKeys;
}

nlohmann::json http_provider_config(const std::string& name, const nlohmann::json& file_config,
                                    const std::filesystem::path& file, const std::string& model) {
  nlohmann::json merged = nlohmann::json::object();
  auto take = [&](const nlohmann::json& table) {
    if (!table.is_object()) return;
    for (std::string_view setting : http_provider_keys()) {
      std::string key(setting);
      if (auto found = table.find(key); found != table.end()) merged[key] = *found;
    }
  };
  take(file_config);
  if (file_config.is_object())
    if (auto nested = file_config.find(name); nested != file_config.end()) {
      if (!nested->is_object())
        throw Error(ErrorCode::config, file.string() + ": '" + name + "' must be a table");
      take(*nested);
    }
  // Checked before the environment and the flags join in: a bad value in the merged
  // settings could not be told from theirs, and the message must name the file it is in.
  try {
    http_provider_settings(name, merged);
  } catch (const Error& error) {
    throw Error(error.code(), file.string() + ": " + error.message());
  }
  const char* base_url_env = name == "anthropic" ? "ANTHROPIC_BASE_URL" : "OPENAI_BASE_URL";
  const std::string base_url = env_value(base_url_env);
  // Checked here, where it is still known to come from the environment: once merged, a bad
  // one would be blamed on the setting 'base_url' of a config file that may not exist.
  if (!base_url.empty() && !is_http_url(base_url))
    throw Error(ErrorCode::config, std::string(base_url_env) + ": provider " + name +
                                       ": the base URL must be an http:// or https:// URL");
  if (!base_url.empty()) merged["base_url"] = base_url;
  // 1 streams every call, 0 none (over the file's `stream`), empty is unset. Anything else
  // ("true", "yes") was once taken as 0 without a word.
  if (const std::string stream = env_value("LUAGENT_STREAM"); stream == "1" || stream == "0")
    merged["stream"] = stream == "1";
  else if (!stream.empty())
    throw Error(ErrorCode::config,
                "LUAGENT_STREAM: must be 1 (stream every LLM call) or 0, not '" + stream + "'");
  if (!model.empty()) merged["model"] = model;
  return merged;
}

std::unique_ptr<Provider> make_http_provider(const std::string& name,
                                             const nlohmann::json& settings, EventLoop& loop) {
  HttpProviderSettings parsed = http_provider_settings(name, settings);
  if (name == "openai") {
    parsed.api_key = env_value("OPENAI_API_KEY");
    return std::make_unique<OpenAiProvider>(loop, std::move(parsed));
  }
  if (name == "anthropic") {
    parsed.api_key = env_value("ANTHROPIC_API_KEY");
    if (parsed.api_key.empty() && parsed.base_url.empty())
      throw Error(ErrorCode::config,
                  "the anthropic provider needs ANTHROPIC_API_KEY in the environment");
    return std::make_unique<AnthropicProvider>(loop, std::move(parsed));
  }
  throw Error(ErrorCode::config, "unknown HTTP provider '" + name + "' (openai, anthropic)");
}

}  // namespace luagent::llm
