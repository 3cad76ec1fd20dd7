// Reading a stream whose length nobody promised: a pipe, a terminal, a device, or a path
// the user named that turns out to be /dev/zero. Read to its end, it can take all memory.
#pragma once

#include <cstddef>
#include <istream>
#include <string>

namespace luagent {

/// Reads `in` to its end into `out` and returns true, or stops and returns false once more
/// than `limit` bytes have come (`out` then holds the first of them). The caller says what
/// was too large, in its own words.
bool read_at_most(std::istream& in, std::size_t limit, std::string& out);

}  // namespace luagent
