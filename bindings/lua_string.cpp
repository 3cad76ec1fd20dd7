// string.find, match, gmatch and gsub with Lua 5.4's semantics on text::find_pattern.
//
// These functions speak Lua's language rather than lua_entry's: argument errors come from
// luaL_check* ("bad argument #2 to 'find' ..."), pattern errors are Lua strings, exactly as
// the functions they replace. The boundary-guard rule still holds: every frame here that a
// Lua error can cross (argument checks, gsub's calls of a replacement function, luaL_error)
// owns only trivially destructible things (string_views, PatternMatch, luaL_Buffer); the
// C++ matcher runs in search() and plain_search(), which catch every exception into a plain
// struct and return before anything is raised.
#include "lua_string.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <string_view>
#include <type_traits>

#include "lua_guard.hpp"
#include "text/lua_pattern.hpp"

namespace luagent::lua {
namespace {

using text::PatternMatch;
using text::PatternSearch;

// Shared by the four functions (their first upvalue): the probe and the work meter, so
// the count goes on across calls and a loop of short matches reaches the probe too.
struct PatternLibrary {
  struct StateProbe final : text::PatternWorkProbe {
    lua_State* L = nullptr;  // the thread whose call is matching now
    PatternProbe check = nullptr;
    void keep_going() override { check(L); }
  };
  StateProbe probe;
  text::PatternWorkMeter meter;
};

PatternLibrary& library_at(lua_State* L, int upvalue) {
  return *static_cast<PatternLibrary*>(lua_touserdata(L, lua_upvalueindex(upvalue)));
}

// What the matcher reported, fit to sit on a frame a Lua error crosses.
struct SearchFailure {
  ErrorCode code;
  char message[256];
};

enum class SearchResult { no_match, matched, failed };

// Called in a catch block: the exception in flight, copied into `failure`.
void describe_current_exception(SearchFailure& failure) noexcept {
  try {
    throw;
  } catch (const Error& e) {
    failure.code = e.code();
    std::snprintf(failure.message, sizeof failure.message, "%s", e.message().c_str());
  } catch (const std::bad_alloc&) {
    failure.code = ErrorCode::limit;
    std::snprintf(failure.message, sizeof failure.message, "out of memory");
  } catch (const std::exception& e) {
    failure.code = ErrorCode::internal;
    std::snprintf(failure.message, sizeof failure.message, "%s", e.what());
  } catch (...) {
    failure.code = ErrorCode::internal;
    std::snprintf(failure.message, sizeof failure.message, "unknown C++ exception");
  }
}

SearchResult search(lua_State* L, PatternLibrary& library, const PatternSearch& request,
                    PatternMatch& match, SearchFailure& failure) noexcept {
  library.probe.L = L;
  try {
    return text::find_pattern(request, match, library.meter) ? SearchResult::matched
                                                             : SearchResult::no_match;
  } catch (...) {
    describe_current_exception(failure);
    return SearchResult::failed;
  }
}

SearchResult plain_search(lua_State* L, PatternLibrary& library, std::string_view subject,
                          std::string_view needle, std::size_t from, std::size_t& at,
                          SearchFailure& failure) noexcept {
  library.probe.L = L;
  try {
    at = text::find_plain(subject, needle, from, library.meter);
    return at == std::string_view::npos ? SearchResult::no_match : SearchResult::matched;
  } catch (...) {
    describe_current_exception(failure);
    return SearchResult::failed;
  }
}

// A crossed limit is the same error table the count hook raises; a bad pattern is the
// string Lua's own matcher raises.
[[noreturn]] void raise(lua_State* L, const SearchFailure& failure) {
  if (failure.code == ErrorCode::limit || failure.code == ErrorCode::internal) {
    push_error(L, failure.code, failure.message);
    lua_error(L);
  }
  luaL_error(L, "%s", failure.message);
  std::abort();  // luaL_error does not return
}

// Lua 5.4's reading of a start index: negative counts from the end, 0 and anything before
// the start mean 1. The result is 1-based and may lie past the end.
std::size_t start_index(lua_Integer position, std::size_t length) {
  if (position > 0) return static_cast<std::size_t>(position);
  if (position == 0) return 1;
  if (position < -static_cast<lua_Integer>(length)) return 1;
  return length + static_cast<std::size_t>(position) + 1;
}

std::string_view check_string(lua_State* L, int index) {
  std::size_t length = 0;
  const char* text = luaL_checklstring(L, index, &length);
  return {text, length};
}

// Capture `index` (or the whole match, for index 0 of a pattern without captures).
void push_capture(lua_State* L, std::string_view subject, const PatternMatch& match, int index) {
  if (index >= match.capture_count) {
    if (index != 0) luaL_error(L, "invalid capture index %%%d", index + 1);
    lua_pushlstring(L, subject.data() + match.start, match.end - match.start);
    return;
  }
  const text::PatternCapture& capture = match.captures[index];
  if (capture.length == text::PatternCapture::kUnfinished) luaL_error(L, "unfinished capture");
  if (capture.length == text::PatternCapture::kPosition)
    lua_pushinteger(L, static_cast<lua_Integer>(capture.start) + 1);
  else
    lua_pushlstring(L, subject.data() + capture.start, static_cast<std::size_t>(capture.length));
}

// The captures, or the whole match when the pattern has none and `whole_if_none`.
int push_captures(lua_State* L, std::string_view subject, const PatternMatch& match,
                  bool whole_if_none) {
  const int count = match.capture_count == 0 && whole_if_none ? 1 : match.capture_count;
  luaL_checkstack(L, count, "too many captures");
  for (int i = 0; i < count; ++i) push_capture(L, subject, match, i);
  return count;
}

PatternSearch anchored_search(std::string_view subject, std::string_view pattern,
                              std::size_t from) {
  PatternSearch request;
  request.subject = subject;
  request.anchored = !pattern.empty() && pattern[0] == '^';
  request.pattern = request.anchored ? pattern.substr(1) : pattern;
  request.from = from;
  return request;
}

int find_or_match(lua_State* L, bool find) {
  const std::string_view subject = check_string(L, 1);
  const std::string_view pattern = check_string(L, 2);
  const std::size_t from = start_index(luaL_optinteger(L, 3, 1), subject.size()) - 1;
  if (from > subject.size()) {
    luaL_pushfail(L);
    return 1;
  }
  if (find && (lua_toboolean(L, 4) || text::has_no_pattern_specials(pattern))) {
    SearchFailure failure;
    std::size_t at = std::string_view::npos;
    if (plain_search(L, library_at(L, 1), subject, pattern, from, at, failure) ==
        SearchResult::failed)
      raise(L, failure);
    if (at == std::string_view::npos) {
      luaL_pushfail(L);
      return 1;
    }
    lua_pushinteger(L, static_cast<lua_Integer>(at) + 1);
    lua_pushinteger(L, static_cast<lua_Integer>(at + pattern.size()));
    return 2;
  }
  PatternMatch match;
  SearchFailure failure;
  switch (search(L, library_at(L, 1), anchored_search(subject, pattern, from), match, failure)) {
    case SearchResult::failed:
      raise(L, failure);
    case SearchResult::no_match:
      luaL_pushfail(L);
      return 1;
    case SearchResult::matched:
      break;
  }
  if (!find) return push_captures(L, subject, match, true);
  lua_pushinteger(L, static_cast<lua_Integer>(match.start) + 1);
  lua_pushinteger(L, static_cast<lua_Integer>(match.end));
  return 2 + push_captures(L, subject, match, false);
}

int string_find(lua_State* L) {
  return find_or_match(L, true);
}

int string_match(lua_State* L) {
  return find_or_match(L, false);
}

// Where a gmatch iteration goes on from, and where its last match ended.
struct GmatchPosition {
  std::size_t from;
  std::size_t last_match_end;
};

// Upvalues: subject, pattern, GmatchPosition, PatternLibrary.
int gmatch_next(lua_State* L) {
  std::size_t length = 0;
  const char* text = lua_tolstring(L, lua_upvalueindex(1), &length);
  const std::string_view subject(text, length);
  text = lua_tolstring(L, lua_upvalueindex(2), &length);
  auto* position = static_cast<GmatchPosition*>(lua_touserdata(L, lua_upvalueindex(3)));
  if (position->from > subject.size()) return 0;
  // gmatch has no anchor: a leading '^' is an ordinary byte here, as in Lua 5.4.
  PatternSearch request;
  request.subject = subject;
  request.pattern = std::string_view(text, length);
  request.from = position->from;
  request.no_empty_match_at = position->last_match_end;
  PatternMatch match;
  SearchFailure failure;
  switch (search(L, library_at(L, 4), request, match, failure)) {
    case SearchResult::failed:
      raise(L, failure);
    case SearchResult::no_match:
      position->from = subject.size() + 1;
      return 0;
    case SearchResult::matched:
      break;
  }
  position->from = position->last_match_end = match.end;
  return push_captures(L, subject, match, true);
}

int string_gmatch(lua_State* L) {
  const std::string_view subject = check_string(L, 1);
  check_string(L, 2);
  std::size_t from = start_index(luaL_optinteger(L, 3, 1), subject.size()) - 1;
  if (from > subject.size()) from = subject.size() + 1;
  lua_settop(L, 2);
  auto* position = static_cast<GmatchPosition*>(lua_newuserdatauv(L, sizeof(GmatchPosition), 0));
  *position = {from, PatternSearch::kNoPosition};
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, gmatch_next, 4);
  return 1;
}

// Appends the string replacement (argument 3) for one match: %0-%9 and %%.
void add_string_replacement(lua_State* L, luaL_Buffer& buffer, std::string_view subject,
                            const PatternMatch& match) {
  std::size_t length = 0;
  const char* replacement = lua_tolstring(L, 3, &length);
  const char* end = replacement + length;
  while (const void* found = std::memchr(replacement, '%', end - replacement)) {
    const char* escape = static_cast<const char*>(found);
    luaL_addlstring(&buffer, replacement, escape - replacement);
    ++escape;  // Lua strings end in a NUL, so this byte is readable
    if (*escape == '%') {
      luaL_addchar(&buffer, '%');
    } else if (*escape == '0') {
      luaL_addlstring(&buffer, subject.data() + match.start, match.end - match.start);
    } else if (*escape >= '1' && *escape <= '9') {
      push_capture(L, subject, match, *escape - '1');
      luaL_tolstring(L, -1, nullptr);  // a position capture becomes its digits
      lua_remove(L, -2);
      luaL_addvalue(&buffer);
    } else {
      luaL_error(L, "invalid use of '%c' in replacement string", '%');
    }
    replacement = escape + 1;
  }
  luaL_addlstring(&buffer, replacement, end - replacement);
}

// Appends one match's replacement; false when it kept the match as it was.
bool add_replacement(lua_State* L, luaL_Buffer& buffer, std::string_view subject,
                     const PatternMatch& match, int replacement_type) {
  if (replacement_type == LUA_TFUNCTION) {
    lua_pushvalue(L, 3);
    const int count = push_captures(L, subject, match, true);
    lua_call(L, count, 1);
  } else if (replacement_type == LUA_TTABLE) {
    push_capture(L, subject, match, 0);
    lua_gettable(L, 3);
  } else {
    add_string_replacement(L, buffer, subject, match);
    return true;
  }
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    luaL_addlstring(&buffer, subject.data() + match.start, match.end - match.start);
    return false;
  }
  if (!lua_isstring(L, -1)) luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  luaL_addvalue(&buffer);
  return true;
}

int string_gsub(lua_State* L) {
  const std::string_view subject = check_string(L, 1);
  const std::string_view pattern = check_string(L, 2);
  const int replacement_type = lua_type(L, 3);
  const lua_Integer max_replacements =
      luaL_optinteger(L, 4, static_cast<lua_Integer>(subject.size()) + 1);
  luaL_argexpected(L,
                   replacement_type == LUA_TNUMBER || replacement_type == LUA_TSTRING ||
                       replacement_type == LUA_TFUNCTION || replacement_type == LUA_TTABLE,
                   3, "string/function/table");
  luaL_Buffer buffer;
  luaL_buffinit(L, &buffer);
  PatternSearch request = anchored_search(subject, pattern, 0);
  PatternMatch match;
  SearchFailure failure;
  lua_Integer replacements = 0;
  bool changed = false;
  std::size_t copied_up_to = 0;
  while (replacements < max_replacements) {
    const SearchResult result = search(L, library_at(L, 1), request, match, failure);
    if (result == SearchResult::failed) raise(L, failure);
    if (result == SearchResult::no_match) break;
    ++replacements;
    luaL_addlstring(&buffer, subject.data() + copied_up_to, match.start - copied_up_to);
    changed = add_replacement(L, buffer, subject, match, replacement_type) || changed;
    copied_up_to = request.from = request.no_empty_match_at = match.end;
    if (request.anchored) break;
  }
  if (!changed) {
    lua_pushvalue(L, 1);
  } else {
    luaL_addlstring(&buffer, subject.data() + copied_up_to, subject.size() - copied_up_to);
    luaL_pushresult(&buffer);
  }
  lua_pushinteger(L, replacements);
  return 2;
}

}  // namespace

void install_string_patterns(lua_State* L, PatternProbe probe, std::int64_t interval) {
  lua_getglobal(L, LUA_STRLIBNAME);
  auto* library = static_cast<PatternLibrary*>(lua_newuserdatauv(L, sizeof(PatternLibrary), 0));
  // Trivially destructible (checked below): Lua frees the block without a destructor.
  new (library) PatternLibrary{{}, text::PatternWorkMeter(&library->probe, interval)};
  library->probe.check = probe;
  const luaL_Reg functions[] = {{"find", string_find},
                                {"match", string_match},
                                {"gmatch", string_gmatch},
                                {"gsub", string_gsub},
                                {nullptr, nullptr}};
  luaL_setfuncs(L, functions, 1);
  lua_pop(L, 1);
}

// What the functions above keep on frames a Lua error may cross.
static_assert(std::is_trivially_destructible_v<PatternLibrary>);
static_assert(std::is_trivially_destructible_v<PatternMatch>);
static_assert(std::is_trivially_destructible_v<PatternSearch>);
static_assert(std::is_trivially_destructible_v<SearchFailure>);
static_assert(std::is_trivially_destructible_v<luaL_Buffer>);

}  // namespace luagent::lua
