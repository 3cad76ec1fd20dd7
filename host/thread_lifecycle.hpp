// The thread verbs that are pure store operations (fork, cancel, recovery bookkeeping),
// shared by the Host (C++ API, CLI) and the luagent.threads Lua module.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "luagent/thread.hpp"
#include "store/store.hpp"

namespace luagent {

/// Throws usage for a thread id with a NUL byte, and not_found (quoting its start) for one
/// longer than any stored thread's: what the verbs below and the Host's take.
void check_thread_id(std::string_view id);

/// Stores a new thread holding events 1..at_event of `id` (keys dropped: an answer given
/// to the parent must not count as given to the fork), with the parent link recorded.
/// Throws not_found for an unknown thread or an event it does not have.
Thread fork_thread(Store& store, std::string_view id, std::int64_t at_event);

/// Throws usage for a cancel reason that is not UTF-8 (the store could not write it).
void check_cancel_reason(const std::string& reason);

/// Appends `cancelled {reason}` to a thread that has not ended. Throws conflict (with the
/// thread's status) for a done, failed or cancelled thread, usage for a bad reason.
Event cancel_thread(Store& store, std::string_view id, const std::string& reason);

/// Throws usage unless `event` may come from outside the agent (`verb`: "launch",
/// "resume"): a non-empty type that is not one of the types the host writes itself
/// (tool_started, done, ...), no version (provenance is the host's to give), and data
/// the store writes and reads back as given: UTF-8 text throughout, no NaN or infinity,
/// no discarded (failed parse) or binary values, and no deeper than kMaxJsonDepth
/// (json_depth.hpp), which a step could not read. A refusal of the data says where in it
/// the bad value is, as a JSON pointer (first_json_fault, json_faults.hpp).
void check_outside_event(const Event& event, std::string_view verb);

/// outcome_unknown events for the tool calls of an interrupted thread that started and
/// never finished; calls declared idempotent are left to be retried.
std::vector<Event> unfinished_call_outcomes(const Thread& thread);

}  // namespace luagent
