#include "step_locks.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "luagent/error.hpp"
#include "sha256.hpp"

namespace luagent {
namespace {

// The byte that stands for a thread: 60 bits of its id's SHA-256, so two threads share
// one only by a 2^-60 chance (and then one of them waits as if the other were its own).
// The same in every process and every build, which is what makes it a shared lock.
long long lock_offset(std::string_view thread_id) {
  return static_cast<long long>(std::stoull(sha256_hex(thread_id, 15), nullptr, 16));
}

}  // namespace

StepLocks::StepLocks(std::filesystem::path file) : file_(std::move(file)) {}

StepLocks::~StepLocks() {
  if (fd_ >= 0) ::close(fd_);  // drops every lock still held
}

int StepLocks::descriptor() {
  if (fd_ >= 0) return fd_;
  fd_ = ::open(file_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw Error(ErrorCode::io,
                "cannot open " + file_.string() +
                    " (it marks the threads whose steps are in flight): " + std::strerror(errno));
  return fd_;
}

bool StepLocks::set_lock(std::string_view thread_id, long long offset, short type) {
  struct flock lock {};
  lock.l_type = type;
  lock.l_whence = SEEK_SET;
  lock.l_start = static_cast<off_t>(offset);
  lock.l_len = 1;
  // Open file description locks, not process ones: another host of this process conflicts
  // too, and closing some other descriptor of the file drops nothing.
  if (::fcntl(descriptor(), F_OFD_SETLK, &lock) == 0) return true;
  if (errno == EAGAIN || errno == EACCES) return false;
  throw Error(ErrorCode::io, "cannot lock " + file_.string() + " for thread " +
                                 std::string(thread_id) + ": " + std::strerror(errno));
}

bool StepLocks::try_hold(std::string_view thread_id) {
  auto found = held_.find(std::string(thread_id));
  if (found != held_.end()) {
    ++found->second.holds;
    return true;
  }
  const long long offset = lock_offset(thread_id);
  if (!set_lock(thread_id, offset, F_WRLCK)) return false;
  held_.emplace(std::string(thread_id), Held{1, offset});
  return true;
}

void StepLocks::release(std::string_view thread_id) {
  auto found = held_.find(std::string(thread_id));
  if (found == held_.end() || --found->second.holds > 0) return;
  const long long offset = found->second.offset;
  held_.erase(found);
  try {
    set_lock(thread_id, offset, F_UNLCK);
  } catch (const Error&) {
    // Unlocking a lock we hold does not fail on Linux; if it ever did, the lock would go
    // with the descriptor, and a release runs where nothing may throw.
  }
}

}  // namespace luagent
