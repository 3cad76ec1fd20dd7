// Watches folder trees (agent folders, stdlib/) and reports which of them changed.
// inotify where the kernel offers it; a stat() scan on an interval otherwise (and on
// request, for network filesystems where inotify sees no remote writes). Bursts of
// events are coalesced: editors save by writing a temp file and renaming it over the
// original, and a reload should happen once, after the last of those events.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace luagent {

struct WatchOptions {
  enum class Mode { automatic, inotify, poll };
  Mode mode = Mode::automatic;  // automatic: inotify, or polling when inotify is unavailable
  /// A root is reported once no event arrived for it for this long...
  std::chrono::milliseconds quiet{3};
  /// ...or this long after its first unreported event, whichever comes first.
  std::chrono::milliseconds max_delay{30};
  /// Polling mode: the time between two scans.
  std::chrono::milliseconds poll_interval{100};
};

/// Parses "inotify", "poll" or "" / "auto"; anything else is Error(config) naming `origin`
/// (where the value came from: "LUAGENT_WATCH", "HostConfig::watch_mode").
WatchOptions::Mode watch_mode_from_name(const std::string& name, std::string_view origin);

class FileWatcher {
 public:
  /// Receives the roots that changed, on the watcher's own thread: post to your loop.
  using Callback = std::function<void(std::vector<std::filesystem::path> changed_roots)>;

  FileWatcher(WatchOptions options, Callback on_change);
  ~FileWatcher();
  FileWatcher(const FileWatcher&) = delete;
  FileWatcher& operator=(const FileWatcher&) = delete;

  /// Watches `root` and everything below it (symlinks followed, each folder once).
  /// A root that does not exist yet is reported when it appears. Thread-safe.
  void add_root(const std::filesystem::path& root);
  void remove_root(const std::filesystem::path& root);
  /// True when inotify serves the watch, false in polling mode.
  bool using_inotify() const { return inotify_fd_ >= 0; }

 private:
  struct FileStamp {
    std::int64_t mtime_ns = 0;
    std::int64_t size = 0;
    std::uint64_t inode = 0;
    bool operator==(const FileStamp&) const = default;
  };
  using Scan = std::map<std::string, FileStamp>;

  void run_inotify();
  void run_polling();
  bool watch_tree(const std::filesystem::path& root);  // mutex_ held; false: root missing
  Scan scan_tree(const std::filesystem::path& root) const;
  void mark_changed(const std::filesystem::path& root);
  void flush_due(bool force);
  int next_flush_ms() const;  // -1: nothing pending
  void wait_for_activity(int timeout_ms);

  WatchOptions options_;
  Callback on_change_;
  int inotify_fd_ = -1;
  int wake_fd_[2] = {-1, -1};  // a pipe: add_root and the destructor interrupt poll()
  std::thread thread_;

  // Guards everything below but dirty_: add_root watches synchronously, so a save
  // right after a load is never missed.
  mutable std::mutex mutex_;
  std::set<std::filesystem::path> roots_;
  bool stopping_ = false;
  std::map<int, std::set<std::filesystem::path>> wd_roots_;  // inotify watch -> its roots
  std::map<int, std::filesystem::path> wd_dirs_;             // inotify watch -> its folder
  std::map<std::filesystem::path, Scan> scans_;              // polling: last scan per root
  std::set<std::filesystem::path> missing_;                  // roots that do not exist now

  // Watcher thread only.
  struct Dirty {
    std::chrono::steady_clock::time_point first, last;
  };
  std::map<std::filesystem::path, Dirty> dirty_;
};

}  // namespace luagent
