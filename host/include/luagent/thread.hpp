// The thread model (factor 5): a thread is an id, an agent name and an ordered
// list of events. Its status is derived from the events, never stored beside them.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace luagent {

/// One entry of a thread. `id` is the 1-based position in the thread.
///
/// An event given to Host::launch or Host::resume brings its type, data and key: the store
/// numbers it (any `id` is replaced), the host stamps `at_ms` with the time it took it (any
/// value is replaced: Event::make's too), and a non-empty `version` is refused (usage).
struct Event {
  std::int64_t id = 0;
  std::string type;  // "user_input", an intent ("multiply"), "tool_response", "await", ...
  nlohmann::json data;
  std::int64_t at_ms = 0;  // Unix time in milliseconds, set by the store's caller
  /// Content hash of the agent scripts and prompts that produced the event (provenance);
  /// empty for events from outside the agent (the CLI, a webhook), which cannot set it.
  std::string version;
  /// Idempotency key of a resume event; empty otherwise.
  std::string key;

  /// An event stamped with the current time.
  static Event make(std::string type, nlohmann::json data);
  /// The message a user starts a thread with.
  static Event user(std::string text) { return make("user_input", std::move(text)); }
};

enum class Status { running, awaiting_human, awaiting_approval, done, failed, cancelled };

std::string_view status_name(Status status);
std::ostream& operator<<(std::ostream& out, Status status);
/// Parses "running", "awaiting_human", ...; nullopt for anything else.
std::optional<Status> status_from_name(std::string_view name);

/// Event types the host writes to mark control flow; status derives from them.
namespace event_type {
inline constexpr std::string_view user_input = "user_input";
inline constexpr std::string_view await = "await";        // data {kind, payload, call}
inline constexpr std::string_view approval = "approval";  // data {approved, comment?}
inline constexpr std::string_view human_response = "human_response";
inline constexpr std::string_view tool_started = "tool_started";  // data {call}
inline constexpr std::string_view tool_response = "tool_response";
inline constexpr std::string_view outcome_unknown = "outcome_unknown";
inline constexpr std::string_view done = "done";
inline constexpr std::string_view failed = "failed";  // data {code, message, source?, line?}
inline constexpr std::string_view cancelled = "cancelled";
inline constexpr std::string_view error = "error";  // a compacted, non-fatal error (factor 9)
}  // namespace event_type

/// The status a thread has after `events`: a function of the last event.
Status derive_status(const std::vector<Event>& events);
/// Same rule, for callers that only have the last event (store listings).
Status derive_status(const Event* last_event);

struct Thread {
  std::string id;
  std::string agent;       // the agent's name
  std::string agent_path;  // where the agent was loaded from, for resuming in another process
  std::string parent_id;   // set on forks
  std::int64_t parent_event = 0;
  std::int64_t created_ms = 0;
  std::vector<Event> events;

  /// The compare-and-swap version: the number of events stored.
  std::int64_t version() const { return static_cast<std::int64_t>(events.size()); }
  Status status() const { return derive_status(events); }
};

/// A short listing row, without the events.
struct ThreadSummary {
  std::string id;
  std::string agent;
  Status status = Status::running;
  std::int64_t version = 0;
  std::int64_t created_ms = 0;
  std::int64_t updated_ms = 0;
};

/// A new, unguessable, URL-safe thread id: "th_", 9 base32 characters of the creation time
/// (so ids sort by it), 13 random base32 characters (65 bits).
std::string new_thread_id();
/// Milliseconds since the Unix epoch.
std::int64_t now_ms();
/// "2026-11-21T20:00:00.123Z"
std::string format_utc(std::int64_t unix_ms);
/// Parses exactly the form format_utc writes; throws Error(usage) for anything else.
std::int64_t parse_utc(const std::string& text);

// JSON round trip. An event is {"id","type","data","at"} plus "version"/"key" when set.
nlohmann::json to_json(const Event& event);
Event event_from_json(const nlohmann::json& json);  // throws Error(usage) on a bad shape
nlohmann::json to_json(const Thread& thread);
Thread thread_from_json(const nlohmann::json& json);

}  // namespace luagent
