#include "file_watcher.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "luagent/error.hpp"

namespace luagent {
namespace {

namespace fs = std::filesystem;

// Everything that can change what a folder holds. IN_MODIFY is left out on purpose:
// IN_CLOSE_WRITE follows it once the writer is done, and reading earlier would see a
// half-written file.
constexpr std::uint32_t kWatchMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE |
                                     IN_DELETE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF;
constexpr int kMaxDepth = 16;

std::int64_t stamp_ns(const struct timespec& ts) {
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace

WatchOptions::Mode watch_mode_from_name(const std::string& name, std::string_view origin) {
  if (name.empty() || name == "auto") return WatchOptions::Mode::automatic;
  if (name == "inotify") return WatchOptions::Mode::inotify;
  if (name == "poll") return WatchOptions::Mode::poll;
  throw Error(ErrorCode::config, "the watch mode must be inotify, poll or auto, not '" + name +
                                     "' (" + std::string(origin) + ")");
}

FileWatcher::FileWatcher(WatchOptions options, Callback on_change)
    : options_(options), on_change_(std::move(on_change)) {
  if (options_.mode != WatchOptions::Mode::poll) {
    inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_fd_ < 0 && options_.mode == WatchOptions::Mode::inotify)
      throw Error(ErrorCode::config, std::string("inotify is unavailable: ") +
                                         std::strerror(errno) + " (use LUAGENT_WATCH=poll)");
  }
  if (pipe2(wake_fd_, O_NONBLOCK | O_CLOEXEC) != 0) {
    if (inotify_fd_ >= 0) close(inotify_fd_);
    throw Error(ErrorCode::internal, std::string("pipe: ") + std::strerror(errno));
  }
  thread_ = std::thread([this] {
    if (inotify_fd_ >= 0)
      run_inotify();
    else
      run_polling();
  });
}

FileWatcher::~FileWatcher() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  char byte = 1;
  [[maybe_unused]] auto written = write(wake_fd_[1], &byte, 1);
  thread_.join();
  if (inotify_fd_ >= 0) close(inotify_fd_);
  close(wake_fd_[0]);
  close(wake_fd_[1]);
}

void FileWatcher::add_root(const fs::path& root) {
  std::lock_guard lock(mutex_);
  if (!roots_.insert(root).second) return;
  if (inotify_fd_ >= 0) {
    if (!watch_tree(root)) missing_.insert(root);
  } else {
    scans_[root] = scan_tree(root);
  }
}

void FileWatcher::remove_root(const fs::path& root) {
  std::lock_guard lock(mutex_);
  roots_.erase(root);
  scans_.erase(root);
  missing_.erase(root);
  for (auto it = wd_roots_.begin(); it != wd_roots_.end();) {
    it->second.erase(root);
    if (it->second.empty()) {
      inotify_rm_watch(inotify_fd_, it->first);
      wd_dirs_.erase(it->first);
      it = wd_roots_.erase(it);
    } else {
      ++it;
    }
  }
}

// Adds a watch on every folder of the tree. Symlinked folders and the folders holding
// symlinked files are watched too: their content is part of the agent. Each real
// folder is visited once, so a link cycle ends.
bool FileWatcher::watch_tree(const fs::path& root) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return false;
  std::set<fs::path> visited;
  std::vector<std::pair<fs::path, int>> pending = {{root, 0}};
  while (!pending.empty()) {
    auto [dir, depth] = pending.back();
    pending.pop_back();
    auto real = fs::canonical(dir, ec);
    if (ec || !visited.insert(real).second) continue;
    int wd = inotify_add_watch(inotify_fd_, real.c_str(), kWatchMask);
    if (wd < 0) continue;  // unreadable, or out of watches: the folder is skipped
    wd_roots_[wd].insert(root);
    wd_dirs_[wd] = real;
    if (depth >= kMaxDepth) continue;
    for (auto it = fs::directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::directory_iterator(); it.increment(ec)) {
      if (it->is_directory(ec)) {
        pending.emplace_back(it->path(), depth + 1);
      } else if (it->is_symlink(ec)) {
        auto target = fs::canonical(it->path(), ec);
        if (!ec) pending.emplace_back(target.parent_path(), kMaxDepth);  // that folder only
      }
    }
  }
  return true;
}

FileWatcher::Scan FileWatcher::scan_tree(const fs::path& root) const {
  Scan scan;
  std::error_code ec;
  struct stat st {};
  if (stat(root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return scan;  // missing: empty
  scan["."] = {stamp_ns(st.st_mtim), 0, st.st_ino};
  auto options = fs::directory_options::follow_directory_symlink |
                 fs::directory_options::skip_permission_denied;
  for (auto it = fs::recursive_directory_iterator(root, options, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it.depth() >= kMaxDepth) it.disable_recursion_pending();
    if (stat(it->path().c_str(), &st) != 0) continue;  // a dangling link, or gone meanwhile
    scan[it->path().lexically_relative(root).string()] = {
        stamp_ns(st.st_mtim), static_cast<std::int64_t>(st.st_size), st.st_ino};
  }
  return scan;
}

void FileWatcher::mark_changed(const fs::path& root) {
  auto now = std::chrono::steady_clock::now();
  auto [it, inserted] = dirty_.try_emplace(root, Dirty{now, now});
  if (!inserted) it->second.last = now;
}

int FileWatcher::next_flush_ms() const {
  if (dirty_.empty()) return -1;
  auto now = std::chrono::steady_clock::now();
  auto next = std::chrono::steady_clock::time_point::max();
  for (const auto& [root, dirty] : dirty_)
    next = std::min({next, dirty.last + options_.quiet, dirty.first + options_.max_delay});
  auto wait = std::chrono::ceil<std::chrono::milliseconds>(next - now).count();
  return static_cast<int>(std::max<std::int64_t>(wait, 0));
}

void FileWatcher::flush_due(bool force) {
  auto now = std::chrono::steady_clock::now();
  std::vector<fs::path> due;
  for (auto it = dirty_.begin(); it != dirty_.end();) {
    const Dirty& dirty = it->second;
    if (force || now >= dirty.last + options_.quiet || now >= dirty.first + options_.max_delay) {
      due.push_back(it->first);
      it = dirty_.erase(it);
    } else {
      ++it;
    }
  }
  {
    std::lock_guard lock(mutex_);
    std::erase_if(due, [&](const fs::path& root) { return roots_.count(root) == 0; });
  }
  if (!due.empty()) on_change_(std::move(due));
}

void FileWatcher::wait_for_activity(int timeout_ms) {
  pollfd fds[2] = {{wake_fd_[0], POLLIN, 0}, {inotify_fd_, POLLIN, 0}};
  int count = inotify_fd_ >= 0 ? 2 : 1;
  if (poll(fds, count, timeout_ms) > 0 && (fds[0].revents & POLLIN)) {
    char drain[64];
    while (read(wake_fd_[0], drain, sizeof drain) > 0) {
    }
  }
}

void FileWatcher::run_inotify() {
  alignas(inotify_event) char buffer[16384];
  while (true) {
    int timeout = next_flush_ms();
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      // A deleted root is looked for again on the polling interval.
      if (!missing_.empty()) {
        int poll_ms = static_cast<int>(options_.poll_interval.count());
        timeout = timeout < 0 ? poll_ms : std::min(timeout, poll_ms);
      }
    }
    wait_for_activity(timeout);

    std::set<fs::path> rescan;
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      ssize_t length;
      while ((length = read(inotify_fd_, buffer, sizeof buffer)) > 0) {
        for (char* at = buffer; at < buffer + length;) {
          auto* event = reinterpret_cast<inotify_event*>(at);
          at += sizeof(inotify_event) + event->len;
          auto found = wd_roots_.find(event->wd);
          if (found == wd_roots_.end()) continue;
          std::set<fs::path> roots = found->second;
          if (event->mask & IN_IGNORED) {
            wd_roots_.erase(found);  // the folder is gone (or was replaced)
            wd_dirs_.erase(event->wd);
            for (const auto& root : roots) rescan.insert(root);
          }
          bool created = event->mask & (IN_CREATE | IN_MOVED_TO);
          bool is_dir = event->mask & IN_ISDIR;
          // A new regular file is reported by the IN_CLOSE_WRITE that follows its writes;
          // a new symlink has no such event, and may bring a folder to watch.
          bool link = false;
          if ((event->mask & IN_CREATE) && !is_dir && event->len > 0) {
            struct stat st {};
            auto path = wd_dirs_[event->wd] / event->name;
            link = lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
            if (!link) continue;
          }
          for (const auto& root : roots) {
            mark_changed(root);
            if ((created && (is_dir || link)) || (event->mask & (IN_DELETE_SELF | IN_MOVE_SELF)))
              rescan.insert(root);
          }
        }
      }
      for (const auto& root : rescan)
        if (roots_.count(root) && !watch_tree(root)) missing_.insert(root);
      for (auto it = missing_.begin(); it != missing_.end();) {
        if (watch_tree(*it)) {
          mark_changed(*it);  // it is back
          it = missing_.erase(it);
        } else {
          ++it;
        }
      }
    }
    flush_due(false);
  }
}

void FileWatcher::run_polling() {
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
    }
    wait_for_activity(static_cast<int>(options_.poll_interval.count()));
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      for (auto& [root, previous] : scans_) {
        Scan now = scan_tree(root);
        if (now != previous) {
          previous = std::move(now);
          mark_changed(root);
        }
      }
    }
    // A scan already spans the interval: report at once.
    flush_due(true);
  }
}

}  // namespace luagent
