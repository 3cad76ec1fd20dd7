// The process's table of open files, grown once up front.
//
// Linux grows a process's file-descriptor table when a new descriptor does not fit (at 64,
// then 256, 512, 1024, ... descriptors). In a process with more than one thread it then
// waits for an RCU grace period before freeing the old table: milliseconds (3-20 ms on this
// VM), during which the thread that opened the descriptor sleeps. For the host that thread
// is the embedder's, inside pump(), when libcurl opens its sockets: 500 agents starting
// their calls stalled a 2 ms pump that way up to four times. Grown once, when a Host opens
// (before its own threads start), the table is never grown again while agents run.
#pragma once

#include <cstddef>

namespace luagent {

/// The most descriptors the table is grown to: 16,384 slots cost the kernel about 130 KiB.
/// A process that opens more grows it further itself, as it would have anyway.
inline constexpr std::size_t kPresizedFileTableSlots = 16384;

/// Grows this process's descriptor table to hold as many descriptors as the soft
/// RLIMIT_NOFILE allows (at most kPresizedFileTableSlots), once per process. Opens and
/// closes one descriptor; never touches one in use. Best effort: does nothing when it
/// cannot (no descriptor left, a limit below the table's size already).
void presize_file_table();

}  // namespace luagent
