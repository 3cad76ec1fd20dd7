// Makes group commits durable on a thread of its own. The loop thread commits a turn's
// appends without waiting for the disk (Store::defer_batch_sync) and hands the flush
// here: a pump never waits for an fsync, whose time the disk decides (1 to 20 ms on this
// machine's disk). The runs waiting for those events stay suspended, and nobody hears of
// the events, until the flush is done and its batches are taken back (take_synced).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "luagent/error.hpp"
#include "store/store.hpp"

namespace luagent {

class CommitSyncer {
 public:
  /// `store` must outlive the syncer; only its sync_committed() is called from the
  /// syncer's thread. `wake` is called from that thread when batches are durable
  /// (EventLoop::post, to end the loop's wait).
  CommitSyncer(Store& store, std::function<void()> wake);
  /// Flushes what was submitted, then stops.
  ~CommitSyncer();
  CommitSyncer(const CommitSyncer&) = delete;
  CommitSyncer& operator=(const CommitSyncer&) = delete;

  /// Asks for the commits made so far to be made durable. Returns a number that
  /// take_synced() reports once they are (one flush covers every batch queued before it).
  std::uint64_t submit();
  /// The batches made durable (or whose flush failed) since the last call, oldest first.
  std::vector<std::pair<std::uint64_t, std::optional<Error>>> take_synced();
  /// True when take_synced() has something.
  bool has_synced() const;
  /// Blocks until every submitted batch has been flushed.
  void wait_idle();

 private:
  void work();

  Store& store_;
  std::function<void()> wake_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::uint64_t next_number_ = 1;
  std::uint64_t submitted_ = 0;  // the newest number handed out
  std::uint64_t flushed_ = 0;    // the newest number whose flush finished
  std::vector<std::pair<std::uint64_t, std::optional<Error>>> synced_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace luagent
