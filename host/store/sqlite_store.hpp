#pragma once

#include <filesystem>
#include <memory>

#include "store/store.hpp"

struct sqlite3;

namespace luagent {

/// The SQLite store (sqlite:PATH). One connection, used from one thread.
class SqliteStore final : public Store {
 public:
  SqliteStore(std::string uri, const std::filesystem::path& path);
  ~SqliteStore() override;

  void create(Thread& thread) override;
  Thread load(std::string_view id) override;
  std::vector<ThreadSummary> list(const ListFilter& filter) override;
  AppendResult append(std::string_view id, std::int64_t expected_version,
                      std::vector<Event> events) override;
  /// Every item in one transaction: one fsync for the whole batch.
  std::vector<std::variant<AppendResult, Error>> append_batch(
      std::vector<AppendBatchItem>& items, std::vector<CallRecord> calls = {}) override;
  void record_call(std::string_view thread_id, std::int64_t event_id,
                   const nlohmann::json& trace) override;
  std::vector<nlohmann::json> calls(std::string_view thread_id) override;
  std::string uri() const override { return uri_; }

 private:
  struct Statements;
  void migrate();
  AppendResult append_in_transaction(std::string_view id, std::int64_t expected_version,
                                     std::vector<Event> events);
  void insert_call(std::string_view thread_id, std::int64_t event_id, nlohmann::json trace);
  void insert_events(std::string_view id, std::int64_t version, std::vector<Event>& events);

  std::string uri_;
  sqlite3* db_ = nullptr;
  std::unique_ptr<Statements> statements_;
};

}  // namespace luagent
