#include "bounded_read.hpp"

namespace luagent {

bool read_at_most(std::istream& in, std::size_t limit, std::string& out) {
  out.clear();
  char buffer[64 * 1024];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    out.append(buffer, static_cast<std::size_t>(in.gcount()));
    if (out.size() > limit) return false;
  }
  return true;
}

}  // namespace luagent
