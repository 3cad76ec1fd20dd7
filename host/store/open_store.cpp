// Store selection by URI scheme, and the listing filter every store applies.
#include <memory>

#include "luagent/error.hpp"
#include "store/fs_store.hpp"
#include "store/sqlite_store.hpp"

namespace luagent {

bool matches(const ListFilter& filter, const ThreadSummary& summary) {
  if (filter.status && summary.status != *filter.status) return false;
  if (!filter.agent.empty() && summary.agent != filter.agent) return false;
  if (filter.updated_since_ms && summary.updated_ms < filter.updated_since_ms) return false;
  if (filter.updated_before_ms && summary.updated_ms >= filter.updated_before_ms) return false;
  return true;
}

std::unique_ptr<Store> open_store(std::string_view uri, StoreOpening opening) {
  if (uri.find('\0') != std::string_view::npos)
    throw Error(ErrorCode::config, "store URI has a NUL byte in it");
  auto colon = uri.find(':');
  if (colon == std::string_view::npos || colon == 0)
    throw Error(ErrorCode::config, "store URI '" + std::string(uri) +
                                       "' has no scheme: use sqlite:PATH or fs:DIR (e.g. " +
                                       std::string(kDefaultStoreUri) + ")");
  std::string_view scheme = uri.substr(0, colon);
  std::string_view rest = uri.substr(colon + 1);
  if (scheme == "sqlite") {
    if (rest.empty()) throw Error(ErrorCode::config, "store URI 'sqlite:' needs a file path");
    // SQLite reads these as an in-memory database (or a URI that may name one): threads
    // acknowledged as stored would be gone when the host ends.
    if (rest == ":memory:" || rest.substr(0, 5) == "file:")
      throw Error(ErrorCode::config, "store URI '" + std::string(uri) +
                                         "' is not a file: SQLite keeps nothing of an in-memory "
                                         "database; give a file path");
    return std::make_unique<SqliteStore>(std::string(uri), std::filesystem::path(rest), opening);
  }
  if (scheme == "fs") {
    if (rest.empty()) throw Error(ErrorCode::config, "store URI 'fs:' needs a folder");
    return std::make_unique<FsStore>(std::string(uri), std::filesystem::path(rest), opening);
  }
  throw Error(ErrorCode::config, "unknown store scheme '" + std::string(scheme) + "' in '" +
                                     std::string(uri) + "': use sqlite:PATH or fs:DIR");
}

}  // namespace luagent
