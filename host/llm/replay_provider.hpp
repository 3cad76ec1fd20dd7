// Offline providers over a cassette: a JSONL file, one recorded interaction per line:
//   {"request": {"messages": [...], "response_schema": {...}}, "response": {"text": "..."}}
//   {"request": {...}, "error": {"code": "rate_limited", "message": "..."}}
// `replay` answers each request with the recorded reply whose request is identical
// (messages, tools and schema; the model name is ignored), so a cassette works across
// processes and in any order. `RecordingProvider` writes such lines for real calls.
#pragma once

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <istream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "event_loop.hpp"
#include "llm/provider.hpp"

namespace luagent::llm {

/// The canonical text of what a cassette matches on.
std::string cassette_key(const Request& request);
nlohmann::json cassette_request_json(const Request& request);

/// One recorded answer, checked when its cassette is read: a reply, or the error the call
/// fails with.
struct CassetteAnswer {
  std::optional<Error> error;
  std::string text;
  std::string finish_reason = "stop";
  Usage usage;
};
/// A cassette's answers by cassette_key; a key's answers in the order of their lines.
using CassetteAnswers = std::map<std::string, std::vector<CassetteAnswer>>;

/// The most a cassette may hold: read to its end, /dev/zero would take all memory.
inline constexpr std::size_t kMaxCassetteBytes = std::size_t{256} << 20;

/// Reads a cassette's lines (see above). A malformed line is Error(config) at `name`:line
/// saying what is wrong with it; more than `limit` bytes is Error(config) too.
CassetteAnswers read_cassette(std::istream& in, const std::string& name,
                              std::size_t limit = kMaxCassetteBytes);

class ReplayProvider final : public Provider {
 public:
  /// Loads the cassette; a malformed line is Error(config) naming file:line.
  ReplayProvider(EventLoop& loop, const std::filesystem::path& cassette,
                 std::chrono::milliseconds latency = std::chrono::milliseconds(0));
  std::string name() const override { return "replay"; }
  CallId start(Request request, ChunkCallback on_chunk, DoneCallback done) override;
  void cancel(CallId id) override;

 private:
  EventLoop& loop_;
  std::filesystem::path path_;
  std::chrono::milliseconds latency_;
  CassetteAnswers recorded_;
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
