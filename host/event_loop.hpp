// The host's single-threaded loop: timers, callbacks posted from any thread, and
// I/O drivers (libcurl's multi interface) polled with a bounded wait. Every
// completion a provider reports runs here, on the owning thread, so the Lua
// runtime never sees another thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <vector>

namespace luagent {

using Clock = std::chrono::steady_clock;

/// An I/O source the loop drives (one per transport). `wait` blocks at most
/// `max_wait` for activity, `wakeup` interrupts a wait from another thread.
class IoDriver {
 public:
  virtual ~IoDriver() = default;
  virtual bool active() const = 0;                            // transfers in flight?
  virtual void wait(std::chrono::milliseconds max_wait) = 0;  // block for I/O
  virtual void perform() = 0;                                 // progress, fire completions
  virtual void wakeup() = 0;                                  // thread-safe
};

class EventLoop {
 public:
  using Task = std::function<void()>;
  using TimerId = std::uint64_t;

  /// Runs `task` on the loop's thread at the next turn. Thread-safe.
  void post(Task task);
  /// Runs `task` once after `delay`. Loop thread only.
  TimerId after(std::chrono::milliseconds delay, Task task);
  void cancel_timer(TimerId id);
  /// Registers a driver; the loop does not own it, and it must outlive the loop's use.
  void add_driver(IoDriver* driver);
  void remove_driver(IoDriver* driver);

  /// One turn: waits at most `max_wait` for work (less if a timer is due), then runs
  /// posted tasks, due timers and driver completions. Returns the number of tasks run.
  int turn(std::chrono::milliseconds max_wait);
  /// True while timers are pending or a driver has transfers in flight.
  bool busy() const;

 private:
  std::vector<Task> take_posted();

  mutable std::mutex mutex_;  // guards posted_ only
  std::condition_variable posted_cv_;
  std::vector<Task> posted_;
  std::multimap<Clock::time_point, std::pair<TimerId, Task>> timers_;
  TimerId next_timer_ = 1;
  std::vector<IoDriver*> drivers_;
};

}  // namespace luagent
