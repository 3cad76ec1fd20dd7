#include "commit_syncer.hpp"

namespace luagent {

CommitSyncer::CommitSyncer(Store& store, std::function<void()> wake)
    : store_(store), wake_(std::move(wake)), thread_([this] { work(); }) {}

CommitSyncer::~CommitSyncer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

std::uint64_t CommitSyncer::submit() {
  std::uint64_t number;
  {
    std::lock_guard lock(mutex_);
    number = next_number_++;
    submitted_ = number;
  }
  changed_.notify_all();
  return number;
}

std::vector<std::pair<std::uint64_t, std::optional<Error>>> CommitSyncer::take_synced() {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<std::uint64_t, std::optional<Error>>> taken;
  taken.swap(synced_);
  return taken;
}

bool CommitSyncer::has_synced() const {
  std::lock_guard lock(mutex_);
  return !synced_.empty();
}

void CommitSyncer::wait_idle() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return flushed_ == submitted_; });
}

void CommitSyncer::work() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return stopping_ || flushed_ < submitted_; });
    if (flushed_ == submitted_) return;  // stopping, and everything submitted is flushed
    // Every batch committed up to now is covered by this one flush, however many turns
    // they came from.
    std::uint64_t upto = submitted_;
    lock.unlock();
    std::optional<Error> error;
    try {
      store_.sync_committed();
    } catch (const Error& e) {
      error = e;
    } catch (const std::exception& e) {
      error = Error(ErrorCode::io, std::string("flushing committed events: ") + e.what());
    }
    lock.lock();
    for (std::uint64_t number = flushed_ + 1; number <= upto; ++number)
      synced_.emplace_back(number, error);
    flushed_ = upto;
    changed_.notify_all();
    if (wake_) {
      lock.unlock();
      wake_();
      lock.lock();
    }
  }
}

}  // namespace luagent
