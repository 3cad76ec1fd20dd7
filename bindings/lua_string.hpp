// The sandbox's string library: string.find, match, gmatch and gsub on our own matcher
// (text/lua_pattern.hpp), which a CPU limit can stop in the middle of a match.
#pragma once

#include <lua.hpp>

#include <cstdint>

namespace luagent::lua {

/// Called from inside a long match every so often; throws Error(limit) to stop it.
using PatternProbe = void (*)(lua_State* L);

/// Work units between two calls of the probe: a CPU clock read costs a syscall (~1 us),
/// 2^16 units of matching cost ~0.5 ms.
constexpr std::int64_t kPatternProbeInterval = std::int64_t{1} << 16;

/// Replaces find, match, gmatch and gsub in L's string table (so `s:find(p)` too) with
/// versions of Lua 5.4's exact results and messages that call `probe` every `interval`
/// units of matching work.
void install_string_patterns(lua_State* L, PatternProbe probe,
                             std::int64_t interval = kPatternProbeInterval);

}  // namespace luagent::lua
