// The descriptor table is grown once, when a Host opens, so that sockets opened later in
// pump() never wait for the kernel to grow it (see host/file_table.hpp). The growth is
// once per process, so each case runs in a forked child of a parent that never made a
// Host; /proc/self/status's FDSize is the table's size.
#define BOOST_TEST_MODULE file_table
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <fstream>
#include <functional>
#include <string>

#include "file_table.hpp"
#include "luagent/luagent.hpp"
#include "support/test_paths.hpp"

namespace {

constexpr int kSlots = 4096;

// The slots the table has now.
long file_table_size() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("FDSize:", 0) == 0) return std::stol(line.substr(7));
  return -1;
}

// Runs `body` in a forked child with a soft descriptor limit of kSlots; its exit code.
int in_child(const std::function<int()>& body) {
  const pid_t child = ::fork();
  if (child == 0) {
    int code = 70;
    try {
      rlimit limit{};
      if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_max < kSlots) ::_exit(71);
      limit.rlim_cur = kSlots;
      if (setrlimit(RLIMIT_NOFILE, &limit) != 0) ::_exit(72);
      // The case means nothing if the table already holds everything.
      if (file_table_size() >= kSlots) ::_exit(73);
      code = body();
    } catch (...) {
    }
    ::_exit(code);
  }
  int status = 0;
  if (child < 0 || ::waitpid(child, &status, 0) != child || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

}  // namespace

BOOST_AUTO_TEST_CASE(opening_a_host_grows_the_table_to_the_descriptor_limit) {
  int code = in_child([] {
    luagent::test::TempDir dir;
    luagent::HostConfig config;
    config.agents_dir = dir.path();
    config.store = "sqlite:" + (dir / "threads.db").string();
    luagent::Host host(config);
    return file_table_size() >= kSlots ? 0 : 1;
  });
  BOOST_TEST(code == 0, "child exit code " << code << " (1: the table was not grown)");
}

BOOST_AUTO_TEST_CASE(growing_the_table_leaves_no_descriptor_open) {
  int code = in_child([] {
    int probe = eventfd(0, EFD_CLOEXEC);  // the lowest free descriptor, before and after
    ::close(probe);
    luagent::presize_file_table();
    if (file_table_size() < kSlots) return 1;
    if (fcntl(kSlots - 1, F_GETFD) != -1) return 2;  // the placed copy was closed
    int again = eventfd(0, EFD_CLOEXEC);
    ::close(again);
    return again == probe ? 0 : 3;
  });
  BOOST_TEST(code == 0, "child exit code " << code);
}

BOOST_AUTO_TEST_CASE(a_descriptor_in_use_at_the_last_slot_stays_open) {
  // dup2 onto the last slot would have closed it silently: the embedder's socket, say.
  int code = in_child([] {
    int original = eventfd(0, EFD_CLOEXEC);
    if (fcntl(original, F_DUPFD_CLOEXEC, kSlots - 1) != kSlots - 1) return 1;
    ::close(original);
    luagent::presize_file_table();
    std::uint64_t one = 1;
    return ::write(kSlots - 1, &one, sizeof one) == sizeof one ? 0 : 2;
  });
  BOOST_TEST(code == 0, "child exit code " << code);
}
