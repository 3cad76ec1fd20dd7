// The host's single-threaded loop: timers, callbacks posted from any thread, and
// I/O drivers (libcurl's multi interface) polled with a bounded wait. Every
// completion a provider reports runs here, on the owning thread, so the Lua
// runtime never sees another thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

namespace luagent {

using Clock = std::chrono::steady_clock;

/// An I/O source the loop drives (one per transport). `wait` blocks at most
/// `max_wait` for activity, `wakeup` interrupts a wait from another thread.
class IoDriver {
 public:
  virtual ~IoDriver() = default;
  /// Transfers in flight, including finished ones whose completion is not yet delivered.
  virtual bool active() const = 0;
  /// Work held back by a deadline (completions not yet delivered, transfers not yet
  /// started): the next turn must not block.
  virtual bool has_queued_work() const = 0;
  virtual void wait(std::chrono::milliseconds max_wait) = 0;  // block for I/O
  /// Moves I/O forward and delivers completions; returns how many it delivered. With a
  /// `deadline`, work that can wait stops once that instant has passed (or, for work whose
  /// cost is estimated beforehand, once it would pass it): it does at least one piece of
  /// each kind per call, so every call makes progress, and keeps the rest, in order, for
  /// the next call.
  virtual std::size_t perform(std::optional<Clock::time_point> deadline) = 0;
  virtual void wakeup() = 0;  // thread-safe
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
  /// driver completions, posted tasks and due timers. Returns the number of those run.
  /// A task that throws ends the turn with its exception; the posted tasks behind it stay
  /// queued, ahead of newer ones, for the next turn.
  /// `deadline` bounds the drivers' work (see IoDriver::perform); it is how a
  /// time-budgeted pump keeps a burst of completions, or of new transfers, from
  /// overrunning its frame.
  int turn(std::chrono::milliseconds max_wait,
           std::optional<Clock::time_point> deadline = std::nullopt);
  /// True while timers are pending or a driver has transfers (or undelivered completions).
  bool busy() const;

 private:
  std::vector<Task> take_posted();
  /// Puts tasks[first..] back at the head of the queue (a task before them threw).
  void requeue_front(std::vector<Task>& tasks, std::size_t first);

  mutable std::mutex mutex_;  // guards posted_ and sleeping_
  std::condition_variable posted_cv_;
  std::vector<Task> posted_;
  bool sleeping_ = false;  // turn() may block: post() must wake it
  std::multimap<Clock::time_point, std::pair<TimerId, Task>> timers_;
  TimerId next_timer_ = 1;
  std::vector<IoDriver*> drivers_;
};

}  // namespace luagent
