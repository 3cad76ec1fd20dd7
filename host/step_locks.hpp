// Which threads have a step in flight, as seen by every process on this machine that uses
// the store. A host holds a lock on one byte of a file in a folder beside the store for
// each thread whose step it runs (open file description locks: F_OFD_SETLK). The kernel
// drops them when the process ends, however it ends, so a crashed host leaves nothing to
// expire, and a live one is never taken for a crashed one: a `resume` that settles
// unfinished tool calls as outcome_unknown can tell "interrupted" from "still running
// somewhere else". The threads are spread over kStepLockFiles files because the kernel
// checks a new lock against every lock on its file: with 10,000 steps in flight on one
// file, a lock and its release took 290 us.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>

namespace luagent {

inline constexpr int kStepLockFiles = 32;

class StepLocks {
 public:
  /// `folder` and its files are made on first use (a host that never runs a step never
  /// makes them).
  explicit StepLocks(std::filesystem::path folder);
  ~StepLocks();
  StepLocks(const StepLocks&) = delete;
  StepLocks& operator=(const StepLocks&) = delete;

  /// Marks a step of `thread_id` in flight here. False when another process (or another
  /// host of this process) has one in flight. Counted: a host may overlap two steps of one
  /// thread for a moment (one finishing while the next starts), and the thread stays
  /// marked until both are released. Throws Error(io) if the file cannot be used.
  bool try_hold(std::string_view thread_id);
  /// Ends one try_hold() that returned true.
  void release(std::string_view thread_id);

 private:
  struct Held {
    int holds = 0;
    std::uint64_t place = 0;  // which file, and which byte in it
  };
  int descriptor(int file);  // opens the file on first use
  bool set_lock(std::string_view thread_id, std::uint64_t place, short type);

  std::filesystem::path folder_;
  std::array<int, kStepLockFiles> fds_;
  std::unordered_map<std::string, Held> held_;  // by thread id
};

/// Holds a thread's step lock until the step starts (keep()) or the scope ends: every
/// refusal between taking it and starting the step gives it back.
class StepLockHold {
 public:
  StepLockHold(StepLocks* locks, std::string thread_id)
      : locks_(locks), thread_id_(std::move(thread_id)) {}
  ~StepLockHold() {
    if (locks_) locks_->release(thread_id_);
  }
  StepLockHold(const StepLockHold&) = delete;
  StepLockHold& operator=(const StepLockHold&) = delete;
  /// The step started: its end releases the lock.
  void keep() { locks_ = nullptr; }

 private:
  StepLocks* locks_;
  std::string thread_id_;
};

}  // namespace luagent
