// Lua 5.4 string patterns (reference manual §6.4.1) without the Lua C API, so the
// sandbox's string.find/match/gmatch/gsub can stop a runaway match: the matcher counts
// its work and hands control to a caller's probe every so often, and that probe may
// throw Error(limit). Lua's own matcher is one C call a count hook cannot interrupt.
//
// Results and errors are Lua's, including which malformed patterns are noticed: like
// Lua, the matcher reads the pattern as it goes, so a fault the search never reaches is
// no error. It backtracks on an explicit stack of at most kMaxPatternDepth entries
// (Lua's own recursion limit, reported as "pattern too complex"), so memory is bounded
// and no match ever allocates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace luagent::text {

/// Lua's limits: captures per pattern (LUA_MAXCAPTURES) and nested matching calls (MAXCCALLS).
inline constexpr int kMaxPatternCaptures = 32;
inline constexpr int kMaxPatternDepth = 200;

/// One capture: a substring, or a position capture `()` (length kPosition).
struct PatternCapture {
  static constexpr std::ptrdiff_t kUnfinished = -1;
  static constexpr std::ptrdiff_t kPosition = -2;
  std::size_t start;
  std::ptrdiff_t length;
};

/// A successful match: subject[start, end) and the captures open or closed at the end.
/// Trivially destructible, so it may live on a frame a Lua error crosses.
struct PatternMatch {
  std::size_t start;
  std::size_t end;
  int capture_count;
  PatternCapture captures[kMaxPatternCaptures];
};

/// Told every so often that the matcher keeps working; may throw to stop it.
class PatternWorkProbe {
 public:
  virtual void keep_going() = 0;

 protected:
  ~PatternWorkProbe() = default;
};

/// Counts matching work (one unit: a pattern item tried or a subject byte scanned) and
/// calls the probe after every `interval` units. One meter may span many searches.
class PatternWorkMeter {
 public:
  PatternWorkMeter(PatternWorkProbe* probe, std::int64_t interval)
      : probe_(probe), interval_(interval), until_probe_(interval) {}

  void spend(std::int64_t units) {
    until_probe_ -= units;
    if (until_probe_ <= 0) probe();
  }

 private:
  void probe();
  PatternWorkProbe* probe_;
  std::int64_t interval_;
  std::int64_t until_probe_;
};

/// What a search looks for: `pattern` without a leading '^' (the caller strips it and says
/// `anchored`), and the position, if any, where an empty match does not count (gmatch and
/// gsub pass the end of their previous match).
struct PatternSearch {
  std::string_view subject;
  std::string_view pattern;
  std::size_t from = 0;
  bool anchored = false;
  static constexpr std::size_t kNoPosition = static_cast<std::size_t>(-1);
  std::size_t no_empty_match_at = kNoPosition;
};

/// The first match starting at a position in [from, subject.size()] (only `from` when
/// anchored), tried in order. Throws Error(runtime) with Lua's message for a malformed
/// pattern the search reaches, and whatever the meter's probe throws.
bool find_pattern(const PatternSearch& search, PatternMatch& match, PatternWorkMeter& meter);

/// True when string.find would treat `pattern` as plain text (it has none of ^$*+?.([%-).
bool has_no_pattern_specials(std::string_view pattern);

/// The first occurrence of `needle` in `subject` at or after `from`, or npos. Linear time,
/// metered too: a loop of long plain searches is C time the count hook would not see.
std::size_t find_plain(std::string_view subject, std::string_view needle, std::size_t from,
                       PatternWorkMeter& meter);

}  // namespace luagent::text
