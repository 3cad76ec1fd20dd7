// Thread storage. Every store keeps the same promises: an append returns only once
// it is durable, appends are compare-and-swap on the thread's version, and an
// idempotency key on an event makes a repeated append return the first outcome.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "luagent/error.hpp"
#include "luagent/thread.hpp"

namespace luagent {

struct ListFilter {
  std::optional<Status> status;
  std::string agent;      // empty: every agent
  std::size_t limit = 0;  // 0: no limit; newest first
  /// Only threads whose last event is at or after / before this time (0: no bound).
  std::int64_t updated_since_ms = 0;
  std::int64_t updated_before_ms = 0;
};

/// True when `summary` passes the filter's status, agent and time bounds.
bool matches(const ListFilter& filter, const ThreadSummary& summary);

/// The record format this build writes. Every store keeps it per thread, reads every
/// older one, and refuses a newer one for that thread only (schema_version).
inline constexpr int kStoreSchemaVersion = 1;

struct AppendResult {
  std::vector<Event> events;  // as stored, with ids
  /// True when an idempotency key matched earlier events: nothing new was written and
  /// `events` holds what the first append stored.
  bool replayed = false;
};

/// An LLM call's trace (provenance) and the event it led to, for Store::append_batch.
struct CallRecord {
  std::string thread_id;
  std::int64_t event_id = 0;
  nlohmann::json trace;
};

/// One thread's share of a group commit (Store::append_batch).
struct AppendBatchItem {
  std::string thread_id;
  std::int64_t expected_version = 0;
  std::vector<Event> events;
};

class Store {
 public:
  virtual ~Store() = default;

  /// Stores a new thread with its first events (ids are assigned). Throws conflict if the
  /// id is taken.
  virtual void create(Thread& thread) = 0;
  /// Throws not_found for an unknown id, corrupt / schema_version for an unreadable one.
  virtual Thread load(std::string_view id) = 0;
  virtual std::vector<ThreadSummary> list(const ListFilter& filter) = 0;
  /// Appends `events` if the thread's version is still `expected_version`; otherwise throws
  /// Error(conflict). Durable when it returns.
  virtual AppendResult append(std::string_view id, std::int64_t expected_version,
                              std::vector<Event> events) = 0;
  /// Appends for several threads at once, each with append()'s checks and its own
  /// outcome (a conflict on one thread does not fail the others). Stores that can commit
  /// them together (one transaction, one fsync) override this; durable when it returns.
  /// `calls` are traces written with the same commit; a trace that cannot be written
  /// fails nothing else (traces are not part of the durability promise).
  virtual std::vector<std::variant<AppendResult, Error>> append_batch(
      std::vector<AppendBatchItem>& items, std::vector<CallRecord> calls = {});
  /// append_batch() for a caller that must not block (the event loop's group commit):
  /// while another process holds the store's write lock it writes nothing, leaves `items`
  /// and `calls` as they were, and returns nullopt, to be called again later. Once that
  /// lock has been refused for as long as append_batch() would have waited for it, the
  /// items fail as they would there. Stores whose writers never wait for another process
  /// do what append_batch() does.
  virtual std::optional<std::vector<std::variant<AppendResult, Error>>> try_append_batch(
      std::vector<AppendBatchItem>& items, std::vector<CallRecord>& calls) {
    return append_batch(items, std::move(calls));
  }
  /// Asks append_batch() to return once its events are committed (visible to readers)
  /// but before they are flushed to disk; sync_committed() then makes them durable, on
  /// any thread. True when the store can split the two (SQLite's write-ahead log); every
  /// other write stays durable when it returns. Stores that cannot say false.
  virtual bool defer_batch_sync() { return false; }
  /// Makes every commit so far durable. Thread-safe with the store's own use.
  virtual void sync_committed() {}
  /// create() and append() that, once defer_batch_sync() is on, return when committed
  /// (visible to readers) but before the flush: the next sync_committed() makes them
  /// durable. For callers that report the events only after that flush. Stores that
  /// cannot split the two write durably, as create() and append() do.
  virtual void create_unflushed(Thread& thread) { create(thread); }
  virtual AppendResult append_unflushed(std::string_view id, std::int64_t expected_version,
                                        std::vector<Event> events) {
    return append(id, expected_version, std::move(events));
  }
  /// Records an LLM call's trace (provenance) against the event it led to.
  virtual void record_call(std::string_view thread_id, std::int64_t event_id,
                           const nlohmann::json& trace) = 0;
  /// The recorded traces of a thread, oldest first, each with "event" set.
  virtual std::vector<nlohmann::json> calls(std::string_view thread_id) = 0;
  /// The URI the store was opened with, for messages.
  virtual std::string uri() const = 0;
  /// The folder beside the store whose files' locks mark the threads with a step in
  /// flight (see StepLocks); empty for a store no other process can open.
  virtual std::filesystem::path step_lock_folder() const { return {}; }
  /// True for stores that keep a human-readable rendering beside each thread (fs:).
  virtual bool wants_rendering() const { return false; }
  /// Replaces the thread's readable rendering (what its context formatter shows the
  /// model). Not part of the durability promise: it is derived from the events.
  virtual void write_rendering(const Thread& /*thread*/, std::string_view /*text*/) {}
};

/// Whether opening a store may make it.
enum class StoreOpening {
  create_if_missing,  // what launching a thread needs
  /// For reading threads stored before: a missing SQLite file or fs: folder is
  /// Error(not_found) naming it, and nothing is created (a mistyped path used to make an
  /// empty store, parent folders included, and answer "no thread").
  existing_only,
};

/// Opens "sqlite:PATH" or "fs:DIR". Unknown schemes and unusable paths throw
/// Error(config) naming the problem.
std::unique_ptr<Store> open_store(std::string_view uri,
                                  StoreOpening opening = StoreOpening::create_if_missing);

/// The default store of a project: sqlite:.luagent/threads.db in the working directory.
inline constexpr std::string_view kDefaultStoreUri = "sqlite:.luagent/threads.db";

}  // namespace luagent
