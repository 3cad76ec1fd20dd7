// The filesystem store (fs:DIR): one JSON file per thread, replaced atomically on
// every append, beside a readable rendering, a lock file and the LLM call traces.
#pragma once

#include <filesystem>

#include "store/store.hpp"

namespace luagent {

/// fs:DIR. Per thread: <id>.json (the thread, schema-tagged), <id>.txt (the thread as the
/// agent's context formatter renders it), <id>.lock (flock, serializes writers across
/// processes), <id>.calls.jsonl (LLM call traces, one per line).
class FsStore final : public Store {
 public:
  FsStore(std::string uri, std::filesystem::path dir,
          StoreOpening opening = StoreOpening::create_if_missing);
  ~FsStore() override;
  FsStore(const FsStore&) = delete;
  FsStore& operator=(const FsStore&) = delete;

  void create(Thread& thread) override;
  Thread load(std::string_view id) override;
  std::vector<ThreadSummary> list(const ListFilter& filter) override;
  AppendResult append(std::string_view id, std::int64_t expected_version,
                      std::vector<Event> events) override;
  void record_call(std::string_view thread_id, std::int64_t event_id,
                   const nlohmann::json& trace) override;
  std::vector<nlohmann::json> calls(std::string_view thread_id) override;
  std::string uri() const override { return uri_; }
  /// Not a name a thread's files can have: those start with the thread id ("th_...").
  std::filesystem::path step_lock_folder() const override { return dir_ / "steps-in-flight"; }
  bool wants_rendering() const override { return true; }
  void write_rendering(const Thread& thread, std::string_view text) override;

  /// The file holding thread `id` (for tests and tools).
  std::filesystem::path thread_file(std::string_view id) const;

 private:
  std::filesystem::path file(std::string_view id, const char* suffix) const;
  /// The text of thread `id`'s record; throws not_found for a bad id or a missing file.
  std::string read_record(std::string_view id) const;
  /// Thread `id` from its record's text; throws corrupt or schema_version naming the file.
  Thread thread_from_text(std::string_view id, const std::string& text) const;
  Thread read_thread(std::string_view id) const;
  void write_thread(const Thread& thread);
  void write_atomically(const std::filesystem::path& path, std::string_view content, bool durable);

  std::string uri_;
  std::filesystem::path dir_;
  int dir_fd_ = -1;
};

/// The fs store's record of a thread (schema kStoreSchemaVersion) and its reader, which
/// also accepts schema 0 (a bare luagent::to_json(Thread) document); the reader's errors
/// name `file` when it is given.
nlohmann::json fs_record(const Thread& thread);
Thread thread_from_fs_record(const nlohmann::json& record, std::string_view id,
                             const std::filesystem::path& file = {});

}  // namespace luagent
