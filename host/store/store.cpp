// Behaviour every store shares unless it can do better.
#include "store/store.hpp"

namespace luagent {

std::vector<std::variant<AppendResult, Error>> Store::append_batch(
    std::vector<AppendBatchItem>& items, std::vector<CallRecord> calls) {
  // One append (and one durable write) per item; each keeps its own outcome.
  std::vector<std::variant<AppendResult, Error>> results;
  results.reserve(items.size());
  for (AppendBatchItem& item : items) {
    try {
      results.emplace_back(append(item.thread_id, item.expected_version, std::move(item.events)));
    } catch (const Error& error) {
      results.emplace_back(error);
    }
  }
  for (CallRecord& call : calls) {
    try {
      record_call(call.thread_id, call.event_id, call.trace);
    } catch (const Error&) {
      // A lost trace loses no event; the appends above stand.
    }
  }
  return results;
}

}  // namespace luagent
