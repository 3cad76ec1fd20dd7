// The baseline every benchmark compares luagent with: a bare libcurl multi loop that
// builds each request's JSON with nlohmann, POSTs it, and parses the JSON reply —
// what a hand-written client costs, with nothing of luagent in it.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace luagent::test {

struct BareLoopResult {
  long completed = 0;  // replies that arrived with status 200 and passed `accept`
  long failures = 0;
};

/// POSTs `calls` requests to `url`, at most `concurrency` in flight, on one thread.
/// `request_for(i)` builds the i-th request; `accept(reply)` checks a parsed reply.
BareLoopResult run_bare_curl_loop(const std::string& url, long calls, int concurrency,
                                  const std::function<nlohmann::json(long)>& request_for,
                                  const std::function<bool(const nlohmann::json&)>& accept,
                                  const std::vector<std::string>& extra_headers = {});

/// `accept` for chat completions: choices[0].message.content is a non-empty string.
bool has_completion_text(const nlohmann::json& reply);

}  // namespace luagent::test
