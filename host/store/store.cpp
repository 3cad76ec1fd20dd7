// Behaviour every store shares unless it can do better.
#include "store/store.hpp"

namespace luagent {

std::vector<std::variant<AppendResult, Error>> Store::append_batch(
    std::vector<AppendBatchItem>& items) {
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
  return results;
}

}  // namespace luagent
