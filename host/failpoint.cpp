#include "failpoint.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

namespace luagent {
namespace {

struct Armed {
  std::string name;
  long remaining = 1;
  bool stop = false;  // SIGSTOP instead of exiting
};

std::vector<Armed>& armed_points() {
  // Parsed once; a process arms its failpoints at start and never changes them.
  static std::vector<Armed> points = [] {
    std::vector<Armed> parsed;
    const char* spec = std::getenv("LUAGENT_FAILPOINT");
    if (!spec || !*spec) return parsed;
    std::string text(spec);
    std::size_t start = 0;
    while (start <= text.size()) {
      std::size_t end = text.find(',', start);
      if (end == std::string::npos) end = text.size();
      std::string item = text.substr(start, end - start);
      if (!item.empty()) {
        Armed point;
        auto colon = item.find(':');
        point.name = item.substr(0, colon);
        while (colon != std::string::npos) {  // then :N and :stop, in either order
          std::size_t next = item.find(':', colon + 1);
          std::string field = item.substr(colon + 1, next - colon - 1);
          if (field == "stop")
            point.stop = true;
          else
            point.remaining = std::max(1L, std::atol(field.c_str()));
          colon = next;
        }
        parsed.push_back(point);
      }
      start = end + 1;
    }
    return parsed;
  }();
  return points;
}

}  // namespace

void failpoint(std::string_view name) {
  for (Armed& point : armed_points()) {
    if (point.name != name || --point.remaining > 0) continue;
    // Say where, with write(2) only: nothing that might flush or run destructors.
    std::string message = "luagent: failpoint " + point.name + " reached, " +
                          (point.stop ? "stopping\n" : "exiting\n");
    ssize_t ignored = write(STDERR_FILENO, message.data(), message.size());
    (void)ignored;
    if (!point.stop) _exit(kFailpointExitCode);
    raise(SIGSTOP);  // alive, mid-step, until SIGCONT (or SIGKILL)
  }
}

}  // namespace luagent
