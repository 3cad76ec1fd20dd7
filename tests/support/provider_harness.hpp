// Drives a real HTTP provider against the loopback WireServer: one EventLoop, one server, calls
// run to completion with a deadline. Header-only; include after <boost/test/unit_test.hpp>.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "event_loop.hpp"
#include "llm/anthropic_provider.hpp"
#include "llm/openai_provider.hpp"
#include "support/loop_runner.hpp"
#include "support/wire_server.hpp"

namespace luagent::test {

/// Settings for tests: the server's URL, tiny backoff, short timeouts.
inline llm::HttpProviderSettings loopback_settings(const WireServer& server,
                                                   const std::string& path) {
  llm::HttpProviderSettings settings;
  settings.base_url = server.url(path);
  settings.default_model = "test-model";
  settings.max_retries = 0;
  settings.retry_initial_delay_ms = 5;
  settings.retry_max_delay_ms = 20;
  settings.connect_timeout_ms = 2000;
  settings.total_timeout_ms = 5000;
  settings.idle_timeout_ms = 2000;
  return settings;
}

/// One provider of type P on its own loop, talking to `server`.
template <class P>
struct ProviderHarness {
  EventLoop loop;
  std::unique_ptr<P> provider;

  explicit ProviderHarness(llm::HttpProviderSettings settings)
      : provider(std::make_unique<P>(loop, std::move(settings))) {}

  /// Starts `request` and turns the loop until `done` ran (or `limit` passed: nullopt).
  std::optional<llm::Outcome> call(llm::Request request, llm::ChunkCallback on_chunk = {},
                                   std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    std::optional<llm::Outcome> outcome;
    int done_calls = 0;
    provider->start(std::move(request), std::move(on_chunk), [&](llm::Outcome result) {
      ++done_calls;
      outcome = std::move(result);
    });
    run_loop_until(
        loop, [&] { return done_calls > 0; }, limit);
    BOOST_TEST(done_calls <= 1);
    return outcome;
  }
};

/// A one-message user request.
inline llm::Request user_request(const std::string& text, bool stream = false) {
  llm::Request request;
  request.messages = nlohmann::json::array({{{"role", "user"}, {"content", text}}});
  request.stream = stream;
  return request;
}

}  // namespace luagent::test
