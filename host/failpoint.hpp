// Crash points for the crash test. LUAGENT_FAILPOINT=NAME[:N][,NAME[:N]...] makes the
// process _exit(kFailpointExitCode) the N-th time (default: the first) execution reaches
// failpoint(NAME). NAME[:N]:stop stops it there instead (SIGSTOP): a process alive in the
// middle of a step, for tests of what other processes see. Compiled into every build so the tested
// binary is the shipped one; inert (one getenv at first use) when the variable is unset.
#pragma once

#include <string_view>

namespace luagent {

/// The exit status of a process stopped at a failpoint (distinct from 0/1/2/10).
inline constexpr int kFailpointExitCode = 86;

/// Names used in the code: after_commit (a store append is durable, not yet reported),
/// before_commit (inside the transaction), after_tool_start (tool_started stored, the
/// tool not yet run), after_tool_run (the tool ran, its result not yet stored).
void failpoint(std::string_view name);

}  // namespace luagent
