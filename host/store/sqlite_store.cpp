// The default store: one SQLite file in WAL mode with synchronous=FULL, so an
// append reported as stored survives kill -9 and power loss. Writers take the
// write lock up front (BEGIN IMMEDIATE) and wait for each other through the busy
// handler, so concurrent processes see a clean conflict, never "database is locked".
#include "store/sqlite_store.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <thread>
#include <unordered_map>

#include "failpoint.hpp"
#include "json_depth.hpp"
#include "luagent/error.hpp"
#include "sha256.hpp"

namespace luagent {
namespace {

// Row format of this build. Bump it when the stored shape changes, and teach
// read_event to read every older one. Schema 0 rows (before data was always JSON) may
// hold a bare string as an event's data.
constexpr int kSchemaVersion = kStoreSchemaVersion;
// Request bodies at least this long are stored once per content hash (llm_requests):
// retries, replays and forks send the same prompt again.
constexpr std::size_t kSharedRequestBytes = 256;
// SQLite's own automatic checkpoint threshold, in log pages; also ours when flushing is
// deferred. (A 4000-page log saved the peer benchmark only 3% of its page writes: pages
// of finished threads are written once whichever the threshold.)
constexpr int kCheckpointPages = 1000;
// The committing thread checkpoints only a log this long: the syncer thread checkpoints
// at kCheckpointPages, and the host's thread must not wait for that copying. This bounds
// the log should no syncer run.
constexpr int kCommittingThreadCheckpointPages = 4 * kCheckpointPages;
// How long a writer waits for another process's transaction before giving up.
constexpr int kBusyTimeoutMs = 30000;
constexpr std::chrono::milliseconds kBusyTimeout(kBusyTimeoutMs);

class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr) != SQLITE_OK)
      throw Error(ErrorCode::io, std::string("preparing SQL: ") + sqlite3_errmsg(db));
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    return *this;
  }
  Statement& bind(int index, std::string_view text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  /// For text that outlives the step that reads it: SQLite uses it in place instead of
  /// copying it, and reads bound values only while stepping (reset() unbinds them).
  Statement& bind_unowned(int index, std::string_view text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
    return *this;
  }
  Statement& bind(int index, std::int64_t value) {
    sqlite3_bind_int64(stmt_, index, value);
    return *this;
  }
  Statement& bind_null(int index) {
    sqlite3_bind_null(stmt_, index);
    return *this;
  }
  /// True while rows come; false when done. Throws on errors.
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw_step_error(rc);
  }
  /// step() for a statement that returns no rows, where SQLITE_BUSY is an answer (false)
  /// rather than an error.
  bool run_unless_busy() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return true;
    if (rc != SQLITE_BUSY) throw_step_error(rc);
    sqlite3_reset(stmt_);  // see throw_step_error
    return false;
  }
  [[noreturn]] void throw_step_error(int rc) {
    // Named, as a command may have more than one store in play (a fork's, a scratch one).
    const char* file = sqlite3_db_filename(db_, "main");
    std::string message = std::string("SQLite: ") + sqlite3_errmsg(db_) +
                          (file && *file ? std::string(" (") + file + ")" : std::string());
    // A statement that stopped on an error (a busy BEGIN, say) stays active until reset,
    // and an active statement fails every later COMMIT on the connection ("SQL statements
    // in progress"), the next read's included.
    sqlite3_reset(stmt_);
    throw Error(rc == SQLITE_BUSY ? ErrorCode::conflict : ErrorCode::io, std::move(message));
  }
  std::int64_t int64(int column) const { return sqlite3_column_int64(stmt_, column); }
  bool is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
  std::string text(int column) const {
    auto* data = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    return data ? std::string(data, sqlite3_column_bytes(stmt_, column)) : std::string();
  }
  /// The column's text without a copy; valid until the next step or reset.
  std::string_view text_view(int column) const {
    auto* data = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    return data ? std::string_view(data,
                                   static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)))
                : std::string_view();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

}  // namespace

struct SqliteStore::Statements {
  explicit Statements(sqlite3* db)
      : begin(db, "BEGIN IMMEDIATE"),
        commit(db, "COMMIT"),
        rollback(db, "ROLLBACK"),
        insert_thread(db,
                      "INSERT INTO threads(id, agent, agent_path, parent_id, parent_event, "
                      "created_ms, schema) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        select_thread(db,
                      "SELECT agent, agent_path, parent_id, parent_event, created_ms, schema "
                      "FROM threads WHERE id = ?1"),
        select_events(db,
                      "SELECT seq, type, data, at_ms, version, key FROM events "
                      "WHERE thread_id = ?1 ORDER BY seq"),
        select_version(db, "SELECT COALESCE(MAX(seq), 0) FROM events WHERE thread_id = ?1"),
        select_by_key(db, "SELECT seq FROM events WHERE thread_id = ?1 AND key = ?2"),
        select_from(db,
                    "SELECT seq, type, data, at_ms, version, key FROM events "
                    "WHERE thread_id = ?1 AND seq >= ?2 ORDER BY seq"),
        insert_event(db,
                     "INSERT INTO events(thread_id, seq, type, data, at_ms, version, key) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        list(db,
             "SELECT t.id, t.agent, t.created_ms, e.seq, e.type, e.data, e.at_ms FROM threads t "
             "LEFT JOIN events e ON e.thread_id = t.id AND e.seq = "
             "(SELECT MAX(seq) FROM events WHERE thread_id = t.id) "
             "WHERE (?1 = '' OR t.agent = ?1) ORDER BY t.created_ms DESC, t.id"),
        insert_call(db, "INSERT INTO llm_calls(thread_id, event_id, trace) VALUES (?1, ?2, ?3)"),
        select_calls(db,
                     "SELECT event_id, trace FROM llm_calls WHERE thread_id = ?1 ORDER BY rowid"),
        insert_request(db, "INSERT OR IGNORE INTO llm_requests(hash, body) VALUES (?1, ?2)"),
        select_request(db, "SELECT body FROM llm_requests WHERE hash = ?1"),
        begin_read(db, "BEGIN") {}

  Statement begin, commit, rollback, insert_thread, select_thread, select_events, select_version,
      select_by_key, select_from, insert_event, list, insert_call, select_calls, insert_request,
      select_request, begin_read;
};

namespace {

void exec(sqlite3* db, const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    std::string text = message ? message : sqlite3_errmsg(db);
    sqlite3_free(message);
    throw Error(ErrorCode::io, "SQLite: " + text);
  }
}

Event read_event(Statement& rows, std::string_view thread_id,
                 std::int64_t schema = kSchemaVersion) {
  Event event;
  event.id = rows.int64(0);
  event.type = rows.text_view(1);
  // Parsed in place from SQLite's buffer: an event is read far more often than written.
  std::string_view data = rows.text_view(2);
  // The host stores nothing deeper (check_outside_event, the Lua conversion); deeper data
  // is damage, and copying or writing it, recursively, would overflow the stack.
  if (nested_deeper_than(data, kMaxJsonBracketNesting))
    throw Error(ErrorCode::corrupt,
                "thread " + std::string(thread_id) + ": event " + std::to_string(event.id) +
                    " holds data nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  event.data = nlohmann::json::parse(data.data(), data.data() + data.size(), nullptr,
                                     /*allow_exceptions=*/false);
  if (event.data.is_discarded() && schema == 0) event.data = std::string(data);
  if (event.data.is_discarded())
    throw Error(ErrorCode::corrupt, "thread " + std::string(thread_id) + ": event " +
                                        std::to_string(event.id) + " holds data that is not JSON");
  event.at_ms = rows.int64(3);
  event.version = rows.text_view(4);  // NULL reads as empty, without an allocation
  event.key = rows.text_view(5);
  return event;
}

}  // namespace

// The schema and version of the threads this connection wrote, as of its last commit, so
// that the next append to them need not look both up. They hold only while no other
// connection (or process) has committed since: SQLite's data version of the file moves
// with every commit, ours (accounted for in committed()) or another's (seen when our next
// transaction starts), and any move there forgets them all.
class ThreadTips {
 public:
  struct Tip {
    std::int64_t schema = 0;
    std::int64_t version = 0;
  };

  /// Inside a write transaction, before the first find(): drops what another connection's
  /// commit may have made stale.
  void check(sqlite3* db) {
    auto now = data_version(db);
    if (!now || now != data_version_) tips_.clear();
  }
  const Tip* find(std::string_view id) const {
    auto it = tips_.find(id);
    return it == tips_.end() ? nullptr : &it->second;
  }
  /// The thread as the open transaction leaves it (true once that transaction commits).
  void set(std::string_view id, Tip tip) {
    if (tips_.size() >= kMaxTips && !tips_.contains(id)) tips_.clear();  // bounded memory
    tips_.insert_or_assign(std::string(id), tip);
  }
  void forget(std::string_view id) {
    if (auto it = tips_.find(id); it != tips_.end()) tips_.erase(it);
  }
  /// After our own commit: its move of the data version is ours, not news.
  void committed(sqlite3* db) { data_version_ = data_version(db); }
  /// After a rollback: what set() recorded in the transaction never happened.
  void rolled_back() { tips_.clear(); }

 private:
  static constexpr std::size_t kMaxTips = 4096;
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view id) const { return std::hash<std::string_view>{}(id); }
  };
  static std::optional<unsigned> data_version(sqlite3* db) {
    unsigned version = 0;
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_DATA_VERSION, &version) != SQLITE_OK)
      return std::nullopt;  // unknown: nothing is trusted
    return version;
  }

  std::unordered_map<std::string, Tip, Hash, std::equal_to<>> tips_;
  std::optional<unsigned> data_version_;
};

namespace {

// Runs `body` inside BEGIN IMMEDIATE ... COMMIT; rolls back on any exception.
template <typename Body>
auto in_begun_write_transaction(sqlite3* db, Statement& commit, Statement& rollback,
                                ThreadTips& tips, Body&& body) {
  try {
    tips.check(db);
    auto result = body();
    failpoint("before_commit");
    commit.reset().step();  // the event is durable only once this returns
    tips.committed(db);
    failpoint("after_commit");
    return result;
  } catch (...) {
    tips.rolled_back();
    if (!sqlite3_get_autocommit(db)) rollback.reset().step();
    throw;
  }
}

template <typename Body>
auto in_write_transaction(sqlite3* db, Statement& begin, Statement& commit, Statement& rollback,
                          ThreadTips& tips, Body&& body) {
  begin.reset().step();
  return in_begun_write_transaction(db, commit, rollback, tips, std::forward<Body>(body));
}

}  // namespace

SqliteStore::SqliteStore(std::string uri, const std::filesystem::path& path, StoreOpening opening)
    : uri_(std::move(uri)), path_(path) {
  bool create = opening == StoreOpening::create_if_missing;
  std::error_code ec;
  if (create && path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  // Without SQLITE_OPEN_CREATE SQLite itself refuses a missing file, so a file removed
  // after the check below is not made either.
  if (!create && !std::filesystem::exists(path, ec))
    throw Error(ErrorCode::not_found,
                "no store " + uri_ + ": " + path.string() + " does not exist");
  // SQLite says only "unable to open database file" for a folder.
  if (std::filesystem::is_directory(path, ec))
    throw Error(ErrorCode::config, "cannot open store " + uri_ + ": " + path.string() +
                                       " is a folder; a sqlite: store is a file (fs:" +
                                       path.string() + " keeps threads in a folder)");
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
  if (int status = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr); status != SQLITE_OK) {
    std::string message = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw Error(!create && status == SQLITE_CANTOPEN ? ErrorCode::not_found : ErrorCode::config,
                "cannot open store " + uri_ + ": " + message);
  }
  try {
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);
    exec(db_, "PRAGMA journal_mode=WAL");
    exec(db_, "PRAGMA synchronous=FULL");
    exec(db_, "PRAGMA foreign_keys=ON");
    migrate();
    statements_ = std::make_unique<Statements>(db_);
    tips_ = std::make_unique<ThreadTips>();
  } catch (const Error& error) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw Error(ErrorCode::config, "cannot use store " + uri_ + ": " + error.message());
  }
}

SqliteStore::~SqliteStore() {
  if (checkpoint_db_) sqlite3_close(checkpoint_db_);
  if (wal_fd_ >= 0) ::close(wal_fd_);
  statements_.reset();
  if (db_) sqlite3_close(db_);
}

// Whether the file holds this build's schema, all of it, read without the write lock.
// Nothing (no schema table, a table missing) means it must be made: false. A newer
// build's schema is refused here as in migrate().
bool SqliteStore::schema_is_current() {
  sqlite3_stmt* raw = nullptr;
  const char* sql =
      "SELECT (SELECT MAX(version) FROM luagent_schema),"
      " (SELECT COUNT(*) FROM sqlite_master WHERE name IN ('luagent_schema', 'threads',"
      " 'events', 'events_by_key', 'llm_calls', 'llm_calls_by_thread', 'llm_requests'))";
  if (sqlite3_prepare_v2(db_, sql, -1, &raw, nullptr) != SQLITE_OK) {
    sqlite3_finalize(raw);
    return false;  // no luagent_schema table yet
  }
  bool current = false;
  std::optional<std::int64_t> newer;
  if (sqlite3_step(raw) == SQLITE_ROW && sqlite3_column_type(raw, 0) != SQLITE_NULL) {
    std::int64_t version = sqlite3_column_int64(raw, 0);
    if (version > kSchemaVersion) newer = version;
    current = version == kSchemaVersion && sqlite3_column_int64(raw, 1) == 7;
  }
  sqlite3_finalize(raw);
  if (newer)
    throw Error(ErrorCode::schema_version,
                "the store was written by a newer luagent (schema " + std::to_string(*newer) +
                    ", this build reads up to " + std::to_string(kSchemaVersion) + ")");
  return current;
}

void SqliteStore::migrate() {
  // Every open used to take the write lock here, so a command that only reads (threads,
  // show) waited behind any process's write, up to the busy timeout.
  if (schema_is_current()) return;
  // A table or index added here is named in schema_is_current() too, or a store of this
  // schema version that lacks it would never get it.
  exec(db_, "BEGIN IMMEDIATE");
  try {
    exec(db_,
         "CREATE TABLE IF NOT EXISTS luagent_schema(version INTEGER NOT NULL);"
         "CREATE TABLE IF NOT EXISTS threads("
         "  id TEXT PRIMARY KEY, agent TEXT NOT NULL, agent_path TEXT NOT NULL DEFAULT '',"
         "  parent_id TEXT, parent_event INTEGER, created_ms INTEGER NOT NULL,"
         "  schema INTEGER NOT NULL) WITHOUT ROWID;"
         "CREATE TABLE IF NOT EXISTS events("
         "  thread_id TEXT NOT NULL REFERENCES threads(id), seq INTEGER NOT NULL,"
         "  type TEXT NOT NULL, data TEXT NOT NULL, at_ms INTEGER NOT NULL,"
         "  version TEXT, key TEXT, PRIMARY KEY(thread_id, seq)) WITHOUT ROWID;"
         "CREATE UNIQUE INDEX IF NOT EXISTS events_by_key ON events(thread_id, key)"
         "  WHERE key IS NOT NULL;"
         "CREATE TABLE IF NOT EXISTS llm_calls("
         "  thread_id TEXT NOT NULL REFERENCES threads(id), event_id INTEGER NOT NULL,"
         "  trace TEXT NOT NULL);"
         "CREATE INDEX IF NOT EXISTS llm_calls_by_thread ON llm_calls(thread_id);"
         "CREATE TABLE IF NOT EXISTS llm_requests("
         "  hash TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;");
    Statement version(db_, "SELECT MAX(version) FROM luagent_schema");
    version.step();
    if (version.is_null(0)) {
      exec(db_,
           ("INSERT INTO luagent_schema(version) VALUES (" + std::to_string(kSchemaVersion) + ")")
               .c_str());
    } else if (version.int64(0) > kSchemaVersion) {
      throw Error(ErrorCode::schema_version, "the store was written by a newer luagent (schema " +
                                                 std::to_string(version.int64(0)) +
                                                 ", this build reads up to " +
                                                 std::to_string(kSchemaVersion) + ")");
    }
    exec(db_, "COMMIT");
  } catch (...) {
    exec(db_, "ROLLBACK");
    throw;
  }
}

void SqliteStore::create(Thread& thread) {
  create_unflushed(thread);
  sync_if_deferred();
}

void SqliteStore::create_unflushed(Thread& thread) {
  auto& s = *statements_;
  in_write_transaction(db_, s.begin, s.commit, s.rollback, *tips_, [&] {
    s.insert_thread.reset().bind(1, thread.id).bind(2, thread.agent).bind(3, thread.agent_path);
    if (thread.parent_id.empty()) {
      s.insert_thread.bind_null(4).bind_null(5);
    } else {
      s.insert_thread.bind(4, thread.parent_id).bind(5, thread.parent_event);
    }
    s.insert_thread.bind(6, thread.created_ms).bind(7, std::int64_t{kSchemaVersion});
    try {
      s.insert_thread.step();
    } catch (const Error&) {
      // Only the primary key's refusal says the id is taken (a read-only file, say, is not).
      if (sqlite3_extended_errcode(db_) != SQLITE_CONSTRAINT_PRIMARYKEY) throw;
      throw Error(ErrorCode::conflict, "thread " + thread.id + " already exists");
    }
    insert_events(thread.id, 0, thread.events);
    tips_->set(thread.id, {kSchemaVersion, thread.version()});
    return 0;
  });
}

void SqliteStore::insert_events(std::string_view id, std::int64_t version,
                                std::vector<Event>& events) {
  auto& insert = statements_->insert_event;
  for (Event& event : events) {
    event.id = ++version;
    const std::string data = event.data.dump();
    insert.reset().bind_unowned(1, id).bind(2, event.id).bind_unowned(3, event.type);
    insert.bind_unowned(4, data).bind(5, event.at_ms);
    if (event.version.empty())
      insert.bind_null(6);
    else
      insert.bind_unowned(6, event.version);
    if (event.key.empty())
      insert.bind_null(7);
    else
      insert.bind_unowned(7, event.key);
    insert.step();
  }
}

Thread SqliteStore::load(std::string_view id) {
  auto& s = *statements_;
  Thread thread;
  thread.id = id;
  // One read transaction so the header and the events are a consistent snapshot.
  s.begin_read.reset().step();
  try {
    s.select_thread.reset().bind_unowned(1, id);
    if (!s.select_thread.step())
      throw Error(ErrorCode::not_found, "no thread " + std::string(id) + " in " + uri_);
    thread.agent = s.select_thread.text(0);
    thread.agent_path = s.select_thread.text(1);
    thread.parent_id = s.select_thread.text(2);
    thread.parent_event = s.select_thread.int64(3);
    thread.created_ms = s.select_thread.int64(4);
    std::int64_t schema = s.select_thread.int64(5);
    s.select_thread.reset();
    if (schema > kSchemaVersion)
      throw Error(ErrorCode::schema_version, "thread " + std::string(id) +
                                                 " was written by a newer luagent (schema " +
                                                 std::to_string(schema) + ")");
    s.select_events.reset().bind_unowned(1, id);
    while (s.select_events.step()) {
      Event event = read_event(s.select_events, id, schema);
      if (event.id != thread.version() + 1)
        throw Error(ErrorCode::corrupt, "thread " + std::string(id) + ": event " +
                                            std::to_string(thread.version() + 1) + " is missing");
      thread.events.push_back(std::move(event));
    }
    s.select_events.reset();
    s.commit.reset().step();
  } catch (...) {
    s.select_thread.reset();
    s.select_events.reset();
    if (!sqlite3_get_autocommit(db_)) s.rollback.reset().step();
    throw;
  }
  return thread;
}

std::vector<ThreadSummary> SqliteStore::list(const ListFilter& filter) {
  auto& rows = statements_->list.reset().bind(1, filter.agent);
  std::vector<ThreadSummary> result;
  while (rows.step()) {
    ThreadSummary summary;
    summary.id = rows.text(0);
    summary.agent = rows.text(1);
    summary.created_ms = rows.int64(2);
    summary.updated_ms = summary.created_ms;
    if (!rows.is_null(3)) {
      Event last;
      last.id = rows.int64(3);
      last.type = rows.text(4);
      last.data = nlohmann::json::parse(rows.text(5), nullptr, false);
      summary.version = last.id;
      summary.updated_ms = rows.int64(6);
      summary.status = derive_status(&last);
    }
    if (!matches(filter, summary)) continue;
    result.push_back(std::move(summary));
    if (filter.limit && result.size() >= filter.limit) break;
  }
  rows.reset();
  return result;
}

AppendResult SqliteStore::append(std::string_view id, std::int64_t expected_version,
                                 std::vector<Event> events) {
  AppendResult result = append_unflushed(id, expected_version, std::move(events));
  sync_if_deferred();
  return result;
}

AppendResult SqliteStore::append_unflushed(std::string_view id, std::int64_t expected_version,
                                           std::vector<Event> events) {
  auto& s = *statements_;
  return in_write_transaction(db_, s.begin, s.commit, s.rollback, *tips_, [&] {
    return append_in_transaction(id, expected_version, std::move(events));
  });
}

std::vector<std::variant<AppendResult, Error>> SqliteStore::append_batch(
    std::vector<AppendBatchItem>& items, std::vector<CallRecord> calls) {
  try {
    statements_->begin.reset().step();
  } catch (const Error& error) {
    return std::vector<std::variant<AppendResult, Error>>(items.size(), error);
  }
  return append_batch_begun(items, std::move(calls));
}

std::optional<std::vector<std::variant<AppendResult, Error>>> SqliteStore::try_append_batch(
    std::vector<AppendBatchItem>& items, std::vector<CallRecord>& calls) {
  // Without a busy handler BEGIN IMMEDIATE answers at once when another connection holds
  // the write lock; the handler is back before anything else runs.
  sqlite3_busy_timeout(db_, 0);
  bool begun = false;
  std::optional<Error> failed;
  try {
    begun = statements_->begin.reset().run_unless_busy();
  } catch (const Error& error) {
    failed = error;
  }
  sqlite3_busy_timeout(db_, kBusyTimeoutMs);
  if (failed) return std::vector<std::variant<AppendResult, Error>>(items.size(), *failed);
  if (!begun) {
    auto now = std::chrono::steady_clock::now();
    if (!write_lock_refused_since_) write_lock_refused_since_ = now;
    if (now - *write_lock_refused_since_ < kBusyTimeout) return std::nullopt;
    write_lock_refused_since_.reset();
    // What append_batch() says once its busy handler gives up.
    Error locked(ErrorCode::conflict, "SQLite: database is locked (another process held " + uri_ +
                                          "'s write lock for " +
                                          std::to_string(kBusyTimeoutMs / 1000) + " s)");
    return std::vector<std::variant<AppendResult, Error>>(items.size(), locked);
  }
  write_lock_refused_since_.reset();
  return append_batch_begun(items, std::move(calls));
}

std::vector<std::variant<AppendResult, Error>> SqliteStore::append_batch_begun(
    std::vector<AppendBatchItem>& items, std::vector<CallRecord> calls) {
  auto& s = *statements_;
  try {
    return in_begun_write_transaction(db_, s.commit, s.rollback, *tips_, [&] {
      std::vector<std::variant<AppendResult, Error>> results;
      for (AppendBatchItem& item : items) {
        try {
          results.emplace_back(
              append_in_transaction(item.thread_id, item.expected_version, std::move(item.events)));
        } catch (const Error& error) {
          // A thread's own refusal (conflict, unknown thread) stays its own; a failing
          // database fails the whole commit.
          if (error.code() == ErrorCode::io || error.code() == ErrorCode::internal) throw;
          results.emplace_back(error);
        }
      }
      for (CallRecord& call : calls)
        insert_call(call.thread_id, call.event_id, std::move(call.trace));
      return results;
    });
  } catch (const Error& error) {
    return std::vector<std::variant<AppendResult, Error>>(items.size(), error);
  }
}

// append()'s checks and inserts, inside a write transaction the caller holds.
AppendResult SqliteStore::append_in_transaction(std::string_view id, std::int64_t expected_version,
                                                std::vector<Event> events) {
  auto& s = *statements_;
  AppendResult result;
  // An idempotency key seen before wins over the version check: a duplicate webhook
  // must get the first outcome, not a conflict.
  if (!events.empty() && !events.front().key.empty()) {
    s.select_by_key.reset().bind_unowned(1, id).bind_unowned(2, events.front().key);
    if (s.select_by_key.step()) {
      std::int64_t first = s.select_by_key.int64(0);
      s.select_by_key.reset();
      s.select_from.reset().bind(1, id).bind(2, first);
      while (s.select_from.step()) result.events.push_back(read_event(s.select_from, id));
      s.select_from.reset();
      const Event& stored = result.events.front();
      if (stored.type != events.front().type || stored.data != events.front().data)
        throw Error(ErrorCode::conflict, "idempotency key '" + events.front().key +
                                             "' was already used for a different event");
      result.replayed = true;
      return result;
    }
    s.select_by_key.reset();
  }
  ThreadTips::Tip tip;
  if (const ThreadTips::Tip* known = tips_->find(id)) {
    tip = *known;  // the thread exists and its schema is ours or older
  } else {
    s.select_thread.reset().bind(1, id);
    bool exists = s.select_thread.step();
    tip.schema = exists ? s.select_thread.int64(5) : 0;
    s.select_thread.reset();
    if (!exists) throw Error(ErrorCode::not_found, "no thread " + std::string(id) + " in " + uri_);
    // Never mix rows of this build into a thread a newer build owns.
    if (tip.schema > kSchemaVersion)
      throw Error(ErrorCode::schema_version, "thread " + std::string(id) +
                                                 " was written by a newer luagent (schema " +
                                                 std::to_string(tip.schema) + ")");
    s.select_version.reset().bind(1, id).step();
    tip.version = s.select_version.int64(0);
    s.select_version.reset();
    tips_->set(id, tip);
  }
  if (tip.version != expected_version)
    throw Error(ErrorCode::conflict, "thread " + std::string(id) + " changed meanwhile (version " +
                                         std::to_string(tip.version) + ", expected " +
                                         std::to_string(expected_version) + ")");
  tips_->forget(id);  // until every event is in: a failure halfway must not leave it stale
  insert_events(id, tip.version, events);
  tip.version += static_cast<std::int64_t>(events.size());
  tips_->set(id, tip);
  result.events = std::move(events);
  return result;
}

void SqliteStore::record_call(std::string_view thread_id, std::int64_t event_id,
                              const nlohmann::json& trace) {
  auto& s = *statements_;
  in_write_transaction(db_, s.begin, s.commit, s.rollback, *tips_, [&] {
    insert_call(thread_id, event_id, trace);
    return 0;
  });
  sync_if_deferred();
}

bool SqliteStore::defer_batch_sync() {
  if (!defer_sync_) {
    // Commits write the log without flushing it; sync_committed() flushes. Checkpoints
    // (which flush too) move to sync_committed() as well, off the committing thread.
    exec(db_, "PRAGMA synchronous=NORMAL");
    sqlite3_wal_hook(
        db_,
        [](void* self, sqlite3*, const char*, int pages) {
          static_cast<SqliteStore*>(self)->wal_pages_.store(pages, std::memory_order_relaxed);
          return SQLITE_OK;
        },
        this);  // replaces the automatic checkpoint
    defer_sync_ = true;
  }
  return true;
}

void SqliteStore::sync_if_deferred() {
  if (!defer_sync_) return;
  flush_log();
  checkpoint_if_longer_than(kCommittingThreadCheckpointPages);
}

void SqliteStore::sync_committed() {
  flush_log();
  checkpoint_if_longer_than(kCheckpointPages);
}

void SqliteStore::flush_log() {
  std::lock_guard lock(sync_mutex_);
  if (wal_fd_ < 0) {
    // fdatasync flushes the file, whichever descriptor asks: our own one will do. The
    // log exists as long as a connection (ours) is open.
    wal_fd_ = ::open((path_.string() + "-wal").c_str(), O_RDONLY | O_CLOEXEC);
    if (wal_fd_ < 0) {
      if (errno == ENOENT) return;  // nothing committed to a log yet
      throw Error(ErrorCode::io, "cannot open " + path_.string() + "-wal: " + std::strerror(errno));
    }
  }
  if (::fdatasync(wal_fd_) != 0)
    throw Error(ErrorCode::io, "cannot flush " + path_.string() + "-wal: " + std::strerror(errno));
}

void SqliteStore::checkpoint_if_longer_than(int pages) {
  if (wal_pages_.load(std::memory_order_relaxed) < pages) return;
  // Whoever checkpoints now covers this log too: never wait for them.
  std::unique_lock lock(checkpoint_mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return;
  // A passive checkpoint on a connection of its own: it never blocks the committing
  // thread's connection, and the log starts over once it is done.
  if (!checkpoint_db_) {
    if (sqlite3_open_v2(path_.c_str(), &checkpoint_db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK) {
      sqlite3_close(checkpoint_db_);
      checkpoint_db_ = nullptr;
      return;  // the log grows until the next try; nothing is lost
    }
    sqlite3_busy_timeout(checkpoint_db_, kBusyTimeoutMs);
    // A connection opens the log on its first read; until then it checkpoints nothing
    // (and says so only through -1 counts).
    if (sqlite3_exec(checkpoint_db_, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr) !=
        SQLITE_OK) {
      sqlite3_close(checkpoint_db_);
      checkpoint_db_ = nullptr;
      return;
    }
  }
  if (sqlite3_wal_checkpoint_v2(checkpoint_db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr,
                                nullptr) == SQLITE_OK)
    wal_pages_.store(0, std::memory_order_relaxed);
}

// Inside a write transaction. A long request body is stored once by its hash: the
// threads of one agent send the same opening request again and again.
void SqliteStore::insert_call(std::string_view thread_id, std::int64_t event_id,
                              nlohmann::json trace) {
  auto& s = *statements_;
  auto request = trace.find("request");
  if (request != trace.end() && request->is_string() &&
      request->get_ref<const std::string&>().size() >= kSharedRequestBytes) {
    std::string body = std::move(request->get_ref<std::string&>());
    trace.erase(request);
    std::string hash = sha256_hex(body);
    s.insert_request.reset().bind_unowned(1, hash).bind_unowned(2, body).step();
    trace["request_sha256"] = std::move(hash);
  }
  // Provenance never fails a commit: text a provider let through that is not UTF-8 is
  // kept with U+FFFD in place of its bad bytes (JSON text is UTF-8).
  const std::string text = trace.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  s.insert_call.reset().bind_unowned(1, thread_id).bind(2, event_id).bind_unowned(3, text).step();
}

std::vector<nlohmann::json> SqliteStore::calls(std::string_view thread_id) {
  auto& rows = statements_->select_calls.reset().bind(1, thread_id);
  std::vector<nlohmann::json> result;
  while (rows.step()) {
    std::string_view text = rows.text_view(1);
    // A damaged trace (not JSON, or nested deeper than anything the host writes) must not
    // hide the thread.
    if (nested_deeper_than(text, kMaxJsonBracketNesting)) continue;
    auto trace = nlohmann::json::parse(text.data(), text.data() + text.size(), nullptr, false);
    if (trace.is_discarded()) continue;
    trace["event"] = rows.int64(0);
    if (auto hash = trace.find("request_sha256"); hash != trace.end() && hash->is_string()) {
      auto& lookup = statements_->select_request.reset().bind(1, hash->get<std::string>());
      if (lookup.step()) trace["request"] = lookup.text(0);
      lookup.reset();
    }
    result.push_back(std::move(trace));
  }
  rows.reset();
  return result;
}

}  // namespace luagent
