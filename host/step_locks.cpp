#include "step_locks.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "luagent/error.hpp"
#include "sha256.hpp"

namespace luagent {
namespace {

// Where a thread's lock goes: 60 bits of its id's SHA-256 pick the file (the low bits)
// and the byte in it, so two threads share one only by a 2^-60 chance (and then one of
// them waits as if the other were its own). The same in every process and every build,
// which is what makes it a shared lock.
std::uint64_t lock_place(std::string_view thread_id) {
  return std::stoull(sha256_hex(thread_id, 15), nullptr, 16);
}

}  // namespace

StepLocks::StepLocks(std::filesystem::path folder) : folder_(std::move(folder)) {
  fds_.fill(-1);
}

StepLocks::~StepLocks() {
  for (int fd : fds_)
    if (fd >= 0) ::close(fd);  // drops every lock still held on it
}

int StepLocks::descriptor(int file) {
  int& fd = fds_[static_cast<std::size_t>(file)];
  if (fd >= 0) return fd;
  const auto path = folder_ / std::to_string(file);
  std::error_code ignored;  // open() below names the problem, if there is one
  std::filesystem::create_directory(folder_, ignored);
  fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    throw Error(ErrorCode::io,
                "cannot open " + path.string() +
                    " (it marks the threads whose steps are in flight): " + std::strerror(errno));
  return fd;
}

bool StepLocks::set_lock(std::string_view thread_id, std::uint64_t place, short type) {
  const int file = static_cast<int>(place % kStepLockFiles);
  struct flock lock {};
  lock.l_type = type;
  lock.l_whence = SEEK_SET;
  lock.l_start = static_cast<off_t>(place / kStepLockFiles);
  lock.l_len = 1;
  // Open file description locks, not process ones: another host of this process conflicts
  // too, and closing some other descriptor of the file drops nothing.
  if (::fcntl(descriptor(file), F_OFD_SETLK, &lock) == 0) return true;
  if (errno == EAGAIN || errno == EACCES) return false;
  throw Error(ErrorCode::io, "cannot lock " + (folder_ / std::to_string(file)).string() +
                                 " for thread " + std::string(thread_id) + ": " +
                                 std::strerror(errno));
}

bool StepLocks::try_hold(std::string_view thread_id) {
  auto found = held_.find(std::string(thread_id));
  if (found != held_.end()) {
    ++found->second.holds;
    return true;
  }
  const std::uint64_t place = lock_place(thread_id);
  if (!set_lock(thread_id, place, F_WRLCK)) return false;
  held_.emplace(std::string(thread_id), Held{1, place});
  return true;
}

void StepLocks::release(std::string_view thread_id) {
  auto found = held_.find(std::string(thread_id));
  if (found == held_.end() || --found->second.holds > 0) return;
  const std::uint64_t place = found->second.place;
  held_.erase(found);
  try {
    set_lock(thread_id, place, F_UNLCK);
  } catch (const Error&) {
    // Unlocking a lock we hold does not fail on Linux; if it ever did, the lock would go
    // with the descriptor, and a release runs where nothing may throw.
  }
}

}  // namespace luagent
