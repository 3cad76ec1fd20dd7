#include "thread_lifecycle.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include "json_depth.hpp"
#include "json_faults.hpp"
#include "luagent/error.hpp"
#include "utf8_text.hpp"

namespace luagent {

// A thread id names the thread in the message of a refusal: one with a NUL byte would end
// what() early (naming another id, maybe a real one), and one of megabytes would be a
// message of megabytes. No id luagent makes is either (new_thread_id: 25 characters; the
// fs store refuses ids past 128 bytes), so neither can name a stored thread.
void check_thread_id(std::string_view id) {
  constexpr std::size_t kLongestId = 128, kShown = 40;
  auto shown = [&](std::size_t length) {
    return std::string(id.substr(0, std::min(length, kShown))) + (length > kShown ? "..." : "");
  };
  if (std::size_t nul = id.find('\0'); nul != std::string_view::npos)
    throw Error(ErrorCode::usage, "the thread id '" + shown(nul) +
                                      "' contains a NUL byte (at byte " + std::to_string(nul) +
                                      ")");
  if (id.size() > kLongestId)
    throw Error(ErrorCode::not_found,
                "no thread '" + shown(id.size()) + "': its id is " + std::to_string(id.size()) +
                    " bytes, and thread ids are at most " + std::to_string(kLongestId));
}

Thread fork_thread(Store& store, std::string_view id, std::int64_t at_event) {
  Thread parent = store.load(id);
  if (at_event < 1 || at_event > parent.version())
    throw Error(ErrorCode::not_found, "thread " + parent.id + " has no event " +
                                          std::to_string(at_event) + " (it has events 1.." +
                                          std::to_string(parent.version()) + ")");
  Thread fork;
  fork.id = new_thread_id();
  fork.agent = parent.agent;
  fork.agent_path = parent.agent_path;
  fork.parent_id = parent.id;
  fork.parent_event = at_event;
  fork.created_ms = now_ms();
  fork.events.assign(parent.events.begin(), parent.events.begin() + at_event);
  for (Event& event : fork.events) event.key.clear();
  store.create(fork);
  return fork;
}

void check_cancel_reason(const std::string& reason) {
  // The reason is stored as a JSON string, which nlohmann refuses to write unless it is
  // UTF-8: checked before anything changes, not inside the store (or a step's commit).
  if (std::size_t bad = first_non_utf8(reason); bad != std::string::npos)
    throw Error(ErrorCode::usage, "the cancel reason is " + describe_non_utf8(reason, bad));
}

Event cancel_thread(Store& store, std::string_view id, const std::string& reason) {
  check_cancel_reason(reason);
  // A step in another process may append meanwhile; cancel wins after a few tries.
  for (int attempt = 0;; ++attempt) {
    Thread thread = store.load(id);
    Status status = thread.status();
    if (status == Status::done || status == Status::failed || status == Status::cancelled)
      throw Error(ErrorCode::conflict, "thread " + thread.id + " has already ended (it is " +
                                           std::string(status_name(status)) +
                                           "); only a running or waiting thread can be cancelled");
    nlohmann::json data = nlohmann::json::object();
    if (!reason.empty()) data["reason"] = reason;
    try {
      auto stored = store.append(
          id, thread.version(), {Event::make(std::string(event_type::cancelled), std::move(data))});
      return stored.events.front();
    } catch (const Error& error) {
      if (error.code() != ErrorCode::conflict || attempt >= 20) throw;
    }
  }
}

void check_outside_event(const Event& event, std::string_view verb) {
  static const std::set<std::string_view> kHostTypes = {
      event_type::await,           event_type::tool_started, event_type::tool_response,
      event_type::outcome_unknown, event_type::done,         event_type::failed,
      event_type::cancelled,       event_type::error};
  if (event.type.empty()) throw Error(ErrorCode::usage, "the event needs a non-empty \"type\"");
  // A type and an idempotency key are names: "done\0x" prints as "done" in a terminal,
  // and readers of the store that use C strings (sqlite3 the shell) stop at the NUL.
  for (const std::string* name : {&event.type, &event.key})
    if (name->find('\0') != std::string::npos)
      throw Error(ErrorCode::usage, "the " + std::string(verb) + " event's " +
                                        (name == &event.type ? "type" : "key") +
                                        " contains a NUL byte");
  if (kHostTypes.count(event.type))
    throw Error(
        ErrorCode::usage,
        "'" + event.type + "' events are written by luagent itself; a " + std::string(verb) +
            " cannot supply one" +
            (event.type == event_type::cancelled ? " (use cancel to cancel a thread)" : ""));
  // A version says which agent scripts wrote the event (provenance): an event from outside
  // claiming one would be forged. Refused rather than cleared, so the caller learns of it.
  if (!event.version.empty())
    throw Error(ErrorCode::usage,
                "the " + std::string(verb) +
                    " event's version is set; luagent sets it only on events an agent's "
                    "scripts write, so an event from outside has none");
  // Checked here, not when the store writes it: a commit carries other runs' events too.
  for (const std::string* text : {&event.type, &event.key})
    if (std::size_t bad = first_non_utf8(*text); bad != std::string::npos)
      throw Error(ErrorCode::usage, "the " + std::string(verb) + " event's " +
                                        (text == &event.type ? "type" : "key") + " is " +
                                        describe_non_utf8(*text, bad));
  // The data, with the walker that checks host tools' results. A step converts the data to
  // Lua, which stops at kMaxJsonDepth: deeper data would fail every step of the thread, and
  // far deeper would overflow the stores' recursive writer.
  if (auto fault = first_json_fault(event.data, kMaxJsonDepth)) {
    const std::string data = "the " + std::string(verb) + " event's data ";
    const std::string at = fault->at.empty() ? "" : " at " + fault->at;
    switch (fault->kind) {
      // A discarded value is what nlohmann::json::parse(text, nullptr, false) returns for
      // text that is not JSON: stored, it reads back as a corrupt thread. A binary value
      // would be written as an object {"bytes", "subtype"} and read back as one.
      case JsonFault::Kind::discarded:
        throw Error(ErrorCode::usage, data + "holds a discarded value" + at +
                                          " (what nlohmann::json::parse returns for text that "
                                          "is not JSON); check the parse before sending it");
      case JsonFault::Kind::binary:
        throw Error(ErrorCode::usage, data + "holds a binary value" + at +
                                          ", which JSON has no form for; encode the bytes (as "
                                          "hex or base64) first");
      // nlohmann writes them as null: the thread would hold another value than it was
      // given, and Lua's thread:push refuses them for the same reason.
      case JsonFault::Kind::not_finite:
        throw Error(ErrorCode::usage, data + "has NaN or infinity, which JSON has no form for (" +
                                          fault->what + at + ")");
      case JsonFault::Kind::not_utf8:
        throw Error(ErrorCode::usage, data + "has " + fault->text());
      case JsonFault::Kind::too_deep:
        throw Error(ErrorCode::usage, data + "is nested deeper than " +
                                          std::to_string(kMaxJsonDepth) + " levels, at " +
                                          fault->at);
    }
  }
  if (event.type == event_type::approval &&
      !(event.data.is_object() && event.data.contains("approved") &&
        event.data["approved"].is_boolean()))
    throw Error(ErrorCode::usage, "an approval event needs data {\"approved\": true|false}");
}

std::vector<Event> unfinished_call_outcomes(const Thread& thread) {
  std::map<std::int64_t, bool> started;  // call -> idempotent
  std::set<std::int64_t> finished;
  for (const Event& event : thread.events) {
    if (!event.data.is_object()) continue;
    std::int64_t call = event.data.value("call", std::int64_t{0});
    if (event.type == event_type::tool_started)
      started[call] = event.data.value("idempotent", false);
    else if (event.type == event_type::tool_response || event.type == event_type::outcome_unknown)
      finished.insert(call);
  }
  std::vector<Event> outcomes;
  for (const auto& [call, idempotent] : started)
    if (!idempotent && !finished.count(call))
      outcomes.push_back(Event::make(std::string(event_type::outcome_unknown),
                                     {{"call", call}, {"reason", "interrupted"}}));
  return outcomes;
}

}  // namespace luagent
