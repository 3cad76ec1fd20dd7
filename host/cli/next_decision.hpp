// Re-deciding without touching stored threads: a thread (or the part of it before a
// decision) is copied into a scratch store and the agent takes its next decision there,
// with one LLM call per step. Used by `luagent dev`, `replay` and `eval`.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "luagent/luagent.hpp"
#include "store/store.hpp"

namespace luagent::cli {

/// One decision: the event the first LLM call of a step led to.
struct Decision {
  bool ok = false;   // false: no decision was taken, `error` says why
  std::string type;  // the decided event's type (the intent)
  nlohmann::json data;
  std::string error;
  std::string prompt;   // the rendered prompt the call sent, as text
  std::string version;  // the agent version that decided
};

/// A point where a stored thread was decided: the events before it and what was decided.
struct DecisionPoint {
  Thread before;  // the thread cut just before the decided event
  Decision decided;
};

/// Every decision point of `thread`, from its recorded LLM calls.
std::vector<DecisionPoint> decision_points(const Thread& thread,
                                           const std::vector<nlohmann::json>& calls);

class ScratchHost {
 public:
  /// A host configured like `config` (provider, limits, watch) on a temporary store.
  explicit ScratchHost(HostConfig config);
  ~ScratchHost();
  ScratchHost(const ScratchHost&) = delete;
  ScratchHost& operator=(const ScratchHost&) = delete;

  /// Queues the next decision of `thread` (copied; the original is never written).
  void add(const Thread& thread);
  /// Runs every queued decision concurrently; returns them in the order they were added.
  std::vector<Decision> run();
  Host& host() { return *host_; }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Host> host_;
  std::vector<std::string> queued_;
};

/// "multiply  a: 3  b: 4"
std::string describe(const Decision& decision);
/// The messages of a recorded request body as readable text ("[system]\n...").
std::string prompt_text(const std::string& request_body);
/// A thread from an eval input: a message, or a list of {type, data} events.
Thread thread_from_input(const nlohmann::json& input, const std::filesystem::path& agent_dir);

}  // namespace luagent::cli
