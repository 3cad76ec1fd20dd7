// Offline providers over a cassette: a JSONL file, one recorded interaction per line:
//   {"request": {"messages": [...], "response_schema": {...}}, "response": {"text": "..."}}
//   {"request": {...}, "error": {"code": "rate_limited", "message": "..."}}
// `replay` answers each request with the recorded reply whose request is identical
// (messages, tools and schema; the model name is ignored), so a cassette works across
// processes and in any order. `RecordingProvider` writes such lines for real calls.
#pragma once

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "event_loop.hpp"
#include "llm/provider.hpp"

namespace luagent::llm {

/// The canonical text of what a cassette matches on.
std::string cassette_key(const Request& request);
nlohmann::json cassette_request_json(const Request& request);

class ReplayProvider final : public Provider {
 public:
  /// Loads the cassette; a malformed line is Error(config) naming file:line.
  ReplayProvider(EventLoop& loop, const std::filesystem::path& cassette,
                 std::chrono::milliseconds latency = std::chrono::milliseconds(0));
  std::string name() const override { return "replay"; }
  CallId start(Request request, ChunkCallback on_chunk, DoneCallback done) override;
  void cancel(CallId id) override;

 private:
  struct Recorded {
    nlohmann::json response;  // {"text": ...} or {"error": {...}}
  };
  EventLoop& loop_;
  std::filesystem::path path_;
  std::chrono::milliseconds latency_;
  std::map<std::string, std::vector<Recorded>> recorded_;
  std::map<std::string, std::size_t> served_;
  std::map<CallId, EventLoop::TimerId> in_flight_;
  CallId next_id_ = 1;
};

/// Wraps a provider and appends every completed call to a cassette file.
class RecordingProvider final : public Provider {
 public:
  RecordingProvider(std::unique_ptr<Provider> inner, const std::filesystem::path& cassette);
  std::string name() const override { return inner_->name(); }
  CallId start(Request request, ChunkCallback on_chunk, DoneCallback done) override;
  void cancel(CallId id) override { inner_->cancel(id); }

 private:
  std::unique_ptr<Provider> inner_;
  std::shared_ptr<std::ofstream> out_;
};

}  // namespace luagent::llm
