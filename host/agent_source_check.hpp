// Checks an agent version's files before it may serve: prompt files must be UTF-8 text
// (a model API rejects anything else, much later and far from the cause), and prompt
// includes must not form a cycle. Both are reported with file:line at load time, so a
// bad save leaves the previous version serving instead of failing steps at render time.
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace luagent {

/// Throws Error(syntax, source=relative, line) when `text` of a prompt file is not UTF-8.
/// .lua files are not checked: Lua strings may hold any bytes.
void check_agent_text(const std::string& relative, std::string_view text);

/// Follows every literal `{% include "..." %}` between the files (by path relative to the
/// agent folder) and throws Error(syntax) naming the first cycle, at the include's line.
void check_prompt_includes(const std::map<std::string, std::string_view>& files);

}  // namespace luagent
