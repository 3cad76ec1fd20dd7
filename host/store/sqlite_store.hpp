#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>

#include "store/store.hpp"

struct sqlite3;

namespace luagent {

class ThreadTips;

/// The SQLite store (sqlite:PATH). One connection, used from one thread; only
/// sync_committed() may run on another.
class SqliteStore final : public Store {
 public:
  SqliteStore(std::string uri, const std::filesystem::path& path,
              StoreOpening opening = StoreOpening::create_if_missing);
  ~SqliteStore() override;

  void create(Thread& thread) override;
  Thread load(std::string_view id) override;
  std::vector<ThreadSummary> list(const ListFilter& filter) override;
  AppendResult append(std::string_view id, std::int64_t expected_version,
                      std::vector<Event> events) override;
  /// Every item in one transaction: one fsync for the whole batch.
  std::vector<std::variant<AppendResult, Error>> append_batch(
      std::vector<AppendBatchItem>& items, std::vector<CallRecord> calls = {}) override;
  /// BEGIN IMMEDIATE without the busy handler: another process's write lock is a nullopt,
  /// not a wait, until it has been refused for the busy timeout.
  std::optional<std::vector<std::variant<AppendResult, Error>>> try_append_batch(
      std::vector<AppendBatchItem>& items, std::vector<CallRecord>& calls) override;
  void record_call(std::string_view thread_id, std::int64_t event_id,
                   const nlohmann::json& trace) override;
  std::vector<nlohmann::json> calls(std::string_view thread_id) override;
  bool defer_batch_sync() override;
  /// Flushes the write-ahead log and checkpoints it when it has grown; thread-safe.
  void sync_committed() override;
  void create_unflushed(Thread& thread) override;
  AppendResult append_unflushed(std::string_view id, std::int64_t expected_version,
                                std::vector<Event> events) override;
  std::string uri() const override { return uri_; }
  /// Beside the database, as SQLite's own -wal and -shm files are.
  std::filesystem::path step_lock_folder() const override { return path_.string() + "-steps"; }

 private:
  struct Statements;
  void migrate();
  bool schema_is_current();
  AppendResult append_in_transaction(std::string_view id, std::int64_t expected_version,
                                     std::vector<Event> events);
  void insert_call(std::string_view thread_id, std::int64_t event_id, nlohmann::json trace);
  void insert_events(std::string_view id, std::int64_t version, std::vector<Event>& events);
  // append_batch()'s work once its write transaction is begun; commits it.
  std::vector<std::variant<AppendResult, Error>> append_batch_begun(
      std::vector<AppendBatchItem>& items, std::vector<CallRecord> calls);

  void sync_if_deferred();  // the writes that are not group commits stay durable
  void flush_log();
  void checkpoint_if_longer_than(int pages);

  std::string uri_;
  std::filesystem::path path_;
  sqlite3* db_ = nullptr;
  std::unique_ptr<Statements> statements_;
  std::unique_ptr<ThreadTips> tips_;  // what appends would otherwise look up again
  // Deferred flushing (defer_batch_sync): the log's descriptor, used under sync_mutex_
  // from whichever thread flushes, and a checkpointing connection, used under
  // checkpoint_mutex_ (a checkpoint must not hold up a flush).
  bool defer_sync_ = false;
  std::mutex sync_mutex_;
  int wal_fd_ = -1;
  std::mutex checkpoint_mutex_;
  sqlite3* checkpoint_db_ = nullptr;
  std::atomic<int> wal_pages_{0};
  // When try_append_batch() first found the write lock held, in this run of refusals.
  std::optional<std::chrono::steady_clock::time_point> write_lock_refused_since_;
};

}  // namespace luagent
