#include "file_table.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>

namespace luagent {

void presize_file_table() {
  static std::once_flag once;
  std::call_once(once, [] {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
    const rlim_t slots = std::min<rlim_t>(limit.rlim_cur, kPresizedFileTableSlots);
    if (slots < 2) return;
    // Any descriptor will do as the original; an eventfd needs no file system (a chroot
    // may have no /dev/null).
    const int original = eventfd(0, EFD_CLOEXEC);
    if (original < 0) return;
    // F_DUPFD takes the lowest free descriptor at or above its argument, so, unlike dup2,
    // it never closes one in use; placing it at the last slot grows the table to hold all.
    const int placed = fcntl(original, F_DUPFD_CLOEXEC, static_cast<int>(slots - 1));
    if (placed >= 0) close(placed);
    close(original);
  });
}

}  // namespace luagent
