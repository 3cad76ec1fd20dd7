#include "lua_runtime.hpp"

#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <vector>

#include "agent_source_check.hpp"
#include "lua_guard.hpp"
#include "lua_json_convert.hpp"
#include "lua_modules.hpp"
#include "lua_string.hpp"
#include "sha256.hpp"

namespace luagent::lua {
namespace {

char kRuntimeKey;
char kBaseEnvKey;
char kModuleCacheKey;     // name -> shared module value (stdlib and built-in modules)
char kEnvLoadedKey;       // weak: environment -> its module cache
char kRunnerKey;          // the prelude's run_agent(chunk, thread)
char kChunkStarterKey;    // { [1] = the requiring environment }: agent and module chunks' _ENV
char kModuleChunksKey;    // weak values: content hash .. chunk name -> a compiled module chunk
char kSliceKey;           // the value a time-sliced coroutine passes up to the host
char kStepCoroutinesKey;  // weak keys: the runs' own coroutines, which only the host resumes

std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

bool is_slice_sentinel(lua_State* L, int index) {
  return lua_type(L, index) == LUA_TLIGHTUSERDATA && lua_touserdata(L, index) == &kSliceKey;
}

int took_hook_yield(lua_State* L) {
  lua_State* co = lua_tothread(L, 1);
  lua_pushboolean(L, co && LuaRuntime::from(L).take_hook_yield(co));
  return 1;
}

// hold_yields(delta): the prelude counts the coroutines it resumes from where Lua cannot
// yield (see LuaRuntime::require_wait).
int count_held_yields(lua_State* L) {
  LuaRuntime::from(L).hold_yields(static_cast<int>(arg_integer(L, 1, "hold_yields", "delta")));
  return 0;
}

// setmetatable for agent code (upvalue 1: Lua's own). A metatable with __gc is refused:
// Lua runs finalizers with hooks off, whenever the collector gets to them, so an endless
// finalizer would stall the host beyond the reach of any limit (Luau has no __gc either).
// Lua marks an object for finalization only if __gc is there when the metatable is set,
// and looks it up raw, so a raw look here is the whole check.
int sandboxed_setmetatable(lua_State* L) {
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    bool finalizer = lua_rawget(L, 2) != LUA_TNIL;
    lua_pop(L, 1);
    if (finalizer) {
      push_error(L, ErrorCode::forbidden,
                 "setmetatable: __gc finalizers are not available to agents (they would run "
                 "outside the CPU limit)");
      return lua_error(L);
    }
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

// Safe base functions kept from Lua's base library. Everything else (dofile,
// loadfile, collectgarbage, ...) never reaches agent code.
constexpr const char* kSafeBaseFunctions[] = {
    "assert",   "error",  "ipairs", "next",         "pairs",        "pcall",
    "rawequal", "rawget", "rawlen", "rawset",       "select",       "tonumber",
    "tostring", "type",   "xpcall", "setmetatable", "getmetatable", "_VERSION"};
constexpr const char* kSafeLibraries[] = {"string", "table", "math", "utf8", "coroutine"};

// Lua half of the runtime, compiled once per state. Host yields (an LLM call made
// inside a coroutine the agent created) must reach the host, not the agent's own
// resume: the wrappers pass the sentinel upward and resume the inner coroutine
// with what the host answered.
constexpr const char* kPrelude = R"lua(
local sentinel, raw, slice, took_hook_yield, hold_yields, step_coroutines = ...
local resume, yield, create, status = raw.resume, raw.yield, raw.create, raw.status
local isyieldable, close = raw.isyieldable, raw.close
local select, error = select, error

-- A step's own coroutine (coroutine.running() in a step) waits for the host: resumed or
-- closed by the agent (from a stream callback, while its LLM call was in flight), it ran
-- the rest of the step there and left the thread failed.
local function refuse_step_coroutine(co, what)
  if step_coroutines[co] then
    error({ code = "usage", message = "coroutine." .. what .. ": this is the step's own " ..
      "coroutine, which only the host resumes or closes" }, 0)
  end
end

-- A time slice that ran out inside `co` (the hook paused it, or a coroutine inside it
-- passed the pause up) goes up the same way, then `co` simply continues.
local function forward(co, ok, first, ...)
  if ok and status(co) == "suspended" then
    if first == sentinel then
      return forward(co, resume(co, yield(sentinel, ...)))
    end
    if first == slice or (first == nil and select("#", ...) == 0 and took_hook_yield(co)) then
      if isyieldable() then yield(slice) end
      return forward(co, resume(co))
    end
  end
  return ok, first, ...
end

-- A coroutine resumed where its resumer cannot yield (inside table.sort's comparator, say)
-- cannot pass a host yield up either: a host call made inside it must refuse to start.
local function released(...)
  hold_yields(-1)
  return ...
end
local function resumed(co, ...)
  refuse_step_coroutine(co, "resume")
  if isyieldable() then return forward(co, resume(co, ...)) end
  hold_yields(1)
  return released(forward(co, resume(co, ...)))
end

local wrapped = {}
for k, v in pairs(raw) do wrapped[k] = v end
wrapped.resume = resumed
wrapped.close = function(co, ...)
  refuse_step_coroutine(co, "close")
  return close(co, ...)
end
wrapped.wrap = function(f)
  local co = create(f)
  return function(...)
    local function pass(ok, ...)
      if not ok then error((...), 0) end
      return ...
    end
    return pass(resumed(co, ...))
  end
end

-- xpcall's handler runs once the failed call has unwound, under the step's limits. Lua
-- runs a handler with hooks off when the error comes from a hook (the CPU limit's), so an
-- endless handler would stall the host for good; agents have no debug library, so nothing
-- a handler could look at where the error happened is lost. Like Lua's, it never raises.
local pcall, type = pcall, type
local function handled(handler, ok, ...)
  if ok then return true, ... end
  local _, result = pcall(handler, (...))
  return false, result
end
xpcall = function(f, handler, ...)
  if type(handler) ~= "function" then
    error("bad argument #2 to 'xpcall' (function expected, got " .. type(handler) .. ")", 2)
  end
  return handled(handler, pcall(f, ...))
end

local function run_agent(chunk, thread)
  local agent = chunk()
  if type(agent) ~= "function" then
    error({ code = "runtime", message = "agent.lua must return a function(thread), got " .. type(agent) }, 0)
  end
  return agent(thread)
end

return wrapped, run_agent
)lua";

// Lua instructions between two looks of the count hook at the clocks: the pump's
// budget and the CPU limit are kept to within that much work.
constexpr int kHookInstructions = 10000;
constexpr int kHookInstructionsAllocating = 1000;  // while a step makes garbage fast

// The message of a crossed CPU limit: "<who_used> more than N ms of CPU (...)".
std::string cpu_limit_crossed(const RuntimeLimits& limits, std::string_view who_used) {
  return std::string(who_used) + " more than " + std::to_string(limits.step_cpu_ms) +
         " ms of CPU (limits.step_cpu_ms)";
}

std::string memory_limit_crossed(const RuntimeLimits& limits) {
  return "the agent used more than " + std::to_string(limits.memory_mb) +
         " MiB of Lua memory (limits.memory_mb)";
}

std::int64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string read_file(const std::filesystem::path& path, std::size_t limit) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  if (ec) throw Error(ErrorCode::not_found, "cannot read " + path.string() + ": " + ec.message());
  if (size > limit)
    throw Error(ErrorCode::limit, path.string() + " is " + std::to_string(size) +
                                      " bytes; the limit is " + std::to_string(limit));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::not_found, "cannot open " + path.string());
  std::string text(size, '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  text.resize(static_cast<std::size_t>(in.gcount()));
  return text;
}

// Files that make up an agent version: its code and its prompts.
bool is_agent_source(const std::filesystem::path& path) {
  static const char* const kExtensions[] = {".lua", ".prompt", ".txt", ".md", ".jinja", ".tmpl"};
  auto extension = path.extension().string();
  for (const char* known : kExtensions)
    if (extension == known) return path.filename() != "luagent.config.lua";
  return false;
}

constexpr std::size_t kMaxAgentBytes = 64 * 1024 * 1024;

// What stat(2) says of `path` now, following links.
FileStat stat_of(const std::filesystem::path& path) {
  FileStat stat;
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return stat;
  stat.present = true;
  stat.device = info.st_dev;
  stat.inode = info.st_ino;
  stat.mode = info.st_mode;
  stat.size = static_cast<std::uint64_t>(info.st_size);
  stat.modified_ns = std::int64_t{info.st_mtim.tv_sec} * 1000000000 + info.st_mtim.tv_nsec;
  stat.changed_ns = std::int64_t{info.st_ctim.tv_sec} * 1000000000 + info.st_ctim.tv_nsec;
  return stat;
}

void add_stamp(FolderShape& shape, const std::filesystem::path& path, bool source) {
  PathStamp stamp{path, stat_of(path), source};
  shape.newest_change =
      std::max({shape.newest_change, stamp.stat.modified_ns, stamp.stat.changed_ns});
  shape.stamps.push_back(std::move(stamp));
}

// Calls `visit(path, relative)` for every source file of the agent folder, and records
// the folder's shape as it goes: each stat is taken before what it covers is read (a
// directory before its listing, a file before its text), so a change made during the
// walk shows at the next check.
template <typename Visit>
void for_each_agent_source(const std::filesystem::path& dir, FolderShape& shape, Visit&& visit) {
  add_stamp(shape, dir, false);
  std::error_code ec;
  auto options = std::filesystem::directory_options::follow_directory_symlink |
                 std::filesystem::directory_options::skip_permission_denied;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, options, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it.depth() > 8) it.disable_recursion_pending();
    std::error_code entry_ec;  // a dangling link is skipped, not an error
    // The entry's type comes from the listing (d_type): no stat unless it is a link.
    bool link = it->is_symlink(entry_ec);
    bool source = it->is_regular_file(entry_ec) && is_agent_source(it->path());
    if (link || source || it->is_directory(entry_ec)) add_stamp(shape, it->path(), source);
    if (source) visit(it->path(), it->path().lexically_relative(dir).generic_string());
  }
  if (ec)
    throw Error(ErrorCode::not_found,
                "cannot read the agent folder " + dir.string() + ": " + ec.message());
}

// Reads every source file of the agent folder; the version is the hash of them all and of
// the stdlib's (`stdlib_version`).
std::shared_ptr<AgentFiles> snapshot_agent(const std::filesystem::path& dir,
                                           std::string_view stdlib_version, std::string& version,
                                           FolderShape& shape) {
  auto snapshot = std::make_shared<AgentFiles>();
  std::size_t total = 0;
  for_each_agent_source(
      dir, shape, [&](const std::filesystem::path& path, const std::string& relative) {
        std::string text = read_file(path, kMaxSourceBytes);
        total += text.size();
        if (total > kMaxAgentBytes)
          throw Error(ErrorCode::limit, "the agent's files add up to more than " +
                                            std::to_string(kMaxAgentBytes >> 20) + " MiB");
        check_agent_text(relative, text);
        std::string hash = sha256_hex(text, 16);
        snapshot->files.emplace(relative, AgentFiles::File{std::move(text), std::move(hash)});
      });
  std::map<std::string, std::string_view> texts;
  for (const auto& [name, file] : snapshot->files) texts.emplace(name, file.text);
  check_prompt_includes(texts);
  std::string all;
  for (const auto& [name, file] : snapshot->files) all += name + '\0' + file.hash + '\n';
  all += std::string("stdlib") + '\0' + std::string(stdlib_version) + '\n';
  version = sha256_hex(all, 12);
  return snapshot;
}

// The stdlib's Lua modules by path under `dir` ("luagent/context.lua"), sorted.
std::map<std::string, std::string> read_stdlib(const std::filesystem::path& dir) {
  std::map<std::string, std::string> sources;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->path().extension() != ".lua" || !it->is_regular_file(ec)) continue;
    sources[it->path().lexically_relative(dir).generic_string()] =
        read_file(it->path(), kMaxSourceBytes);
  }
  return sources;
}

// The hash of the stdlib's modules. It goes into every agent's version: the stdlib renders
// the prompts and the context window, so a change there changes what a model is shown as
// surely as a change in the agent's own files.
std::string hash_stdlib(const std::map<std::string, std::string>& sources) {
  std::string all;
  for (const auto& [name, source] : sources) all += name + '\0' + sha256_hex(source, 16) + '\n';
  return sha256_hex(all, 12);
}

// Longer than any kernel's timestamp tick (a jiffy: 10 ms at HZ=100).
constexpr std::int64_t kRacyWindowNs = 50'000'000;

// True when every stat of `shape` reads the same now, without listing a directory, and
// each is older than the walk that took it by more than a tick: file times are coarse
// (the kernel stamps them from a clock that advances once per tick), so two quick
// changes can leave the same times ("racy git"). `folder`: the folder's stat, just taken.
bool shape_unchanged(const FolderShape& shape, const FileStat& folder) {
  if (shape.newest_change >= shape.taken_at - kRacyWindowNs) return false;
  if (shape.stamps.empty() || !(shape.stamps.front().stat == folder)) return false;
  for (std::size_t i = 1; i < shape.stamps.size(); ++i)
    if (!(stat_of(shape.stamps[i].path) == shape.stamps[i].stat)) return false;
  return true;
}

// True when `now` lists the same source files with the same stats as `before` did, all
// older than `read_at` by more than a tick: what changed was no source (a directory of
// other files, a temp file come and gone), and the sources read at `read_at` still serve.
bool sources_unchanged(const FolderShape& before, const FolderShape& now, std::int64_t read_at) {
  auto next_source = [](const FolderShape& shape, std::size_t& i) -> const PathStamp* {
    while (i < shape.stamps.size() && !shape.stamps[i].source) ++i;
    return i < shape.stamps.size() ? &shape.stamps[i++] : nullptr;
  };
  std::size_t i = 0, j = 0;
  for (;;) {
    const PathStamp* a = next_source(before, i);
    const PathStamp* b = next_source(now, j);
    if (!a || !b) return !a && !b;
    if (!(*a == *b) || std::max(b->stat.modified_ns, b->stat.changed_ns) >= read_at - kRacyWindowNs)
      return false;
  }
}

// Splits Lua's "chunk:line: message" into an Error of `code`.
Error located_error(ErrorCode code, const std::string& lua_message) {
  Error parsed = Error(ErrorCode::runtime, lua_message);
  auto colon = lua_message.find(':');
  if (colon != std::string::npos) {
    auto second = lua_message.find(':', colon + 1);
    if (second != std::string::npos && second > colon + 1 &&
        lua_message.find_first_not_of("0123456789", colon + 1) == second) {
      std::string message = lua_message.substr(second + 1);
      if (!message.empty() && message[0] == ' ') message.erase(0, 1);
      return Error(code, message, lua_message.substr(0, colon),
                   std::atoi(lua_message.c_str() + colon + 1));
    }
  }
  return Error(code, lua_message);
}

int pcall_traceback(lua_State* L) {
  if (lua_type(L, 1) == LUA_TTABLE) {
    // A host function's error has no position: point at the Lua line that called it.
    if (lua_getfield(L, 1, "line") == LUA_TNIL) {
      lua_Debug ar;
      for (int level = 1; lua_getstack(L, level, &ar); ++level) {
        lua_getinfo(L, "Sl", &ar);
        if (ar.currentline <= 0) continue;
        lua_pushstring(L, ar.short_src);
        lua_setfield(L, 1, "source");
        lua_pushinteger(L, ar.currentline);
        lua_setfield(L, 1, "line");
        break;
      }
    }
    lua_pop(L, 1);
    return 1;  // structured errors pass on
  }
  const char* message = lua_tostring(L, 1);
  if (!message) message = "(error object is not a string)";
  lua_pushstring(L, message);
  return 1;
}

}  // namespace

// ---------------------------------------------------------------------------
// Memory and CPU limits

void* limited_alloc(void* ud, void* ptr, size_t old_size, size_t new_size) {
  auto* runtime = static_cast<LuaRuntime*>(ud);
  if (!ptr) old_size = 0;
  if (new_size == 0) {
    runtime->lua_heap_.release(ptr);
    runtime->memory_used_ -= old_size;
    return nullptr;
  }
  if (new_size > old_size && runtime->host_depth_ == 0 && runtime->memory_limit_ &&
      runtime->memory_used_ + (new_size - old_size) > runtime->memory_limit_) {
    // Lua raises "not enough memory" in agent code, which a pcall could swallow and go
    // on: the step is marked, and its next look at the hook ends it, as the CPU limit's.
    if (Run* run = runtime->current_; run && !run->out_of_memory) {
      run->out_of_memory = true;
      runtime->refused_ = {run, ptr, old_size, new_size};
    }
    return nullptr;
  }
  void* result = runtime->lua_heap_.resize(ptr, new_size);
  if (result && new_size > old_size && runtime->refused_.run) {
    auto& refused = runtime->refused_;
    if (refused.ptr == ptr && refused.old_size == old_size && refused.new_size == new_size)
      refused.run->out_of_memory = false;  // the second try, after the emergency collection
    refused = {};
  }
  if (result) {
    runtime->memory_used_ = runtime->memory_used_ - old_size + new_size;
    if (new_size > old_size) {
      runtime->allocated_since_gc_ += new_size - old_size;
      runtime->allocated_since_look_ += new_size - old_size;
    }
  }
  return result;
}

void count_hook(lua_State* L, lua_Debug*);

// Whether the code running now has used its CPU: the step's (a run is current) or, outside
// any step, a limited load's. Once crossed, the kill is marked and every later instruction
// raises (a count of 1), so a pcall cannot swallow it. Returns the message's subject, or
// nullptr while under the limit (or when nothing limits the code).
const char* kill_past_cpu_limit(LuaRuntime& runtime, lua_State* L) {
  const std::int64_t limit_ns =
      static_cast<std::int64_t>(runtime.services_.limits.step_cpu_ms) * 1000000;
  Run* run = runtime.current_;
  if (!run) {
    if (!runtime.unowned_code_limited_) return nullptr;
    if (!runtime.unowned_code_killed_) {
      if (thread_cpu_ns() - runtime.unowned_code_started_ns_ <= limit_ns) return nullptr;
      runtime.unowned_code_killed_ = true;
      lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
    }
    return "used";
  }
  if (!run->killed) {
    std::int64_t used = run->cpu_used_ns + (thread_cpu_ns() - run->slice_started_ns);
    if (used <= limit_ns) return nullptr;
    run->killed = true;
    lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
  }
  return "the step used";
}

void count_hook(lua_State* L, lua_Debug*) {
  LuaRuntime& runtime = LuaRuntime::from(L);
  if (runtime.current_ && runtime.current_->out_of_memory) {
    lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);  // every later instruction raises too
    push_error(L, ErrorCode::limit, memory_limit_crossed(runtime.services_.limits));
    lua_error(L);
  }
  if (const char* who_used = kill_past_cpu_limit(runtime, L)) {
    push_error(L, ErrorCode::limit, cpu_limit_crossed(runtime.services_.limits, who_used));
    lua_error(L);
  }
  if (!runtime.current_) return;
  // The collector runs between steps (collect_garbage); a step making garbage fast pays
  // for it as it goes, in its own slice. While it does, the hook looks more often: its
  // instructions allocate, and a fresh page of heap costs a page fault, so 10,000 of them
  // can take milliseconds.
  const std::size_t made = runtime.allocated_since_look_;
  runtime.allocated_since_look_ = 0;
  // Whether this hook can pause the step at its slice's end (a hook may yield with no
  // values where Lua allows it).
  const bool pausable =
      runtime.slice_deadline_ns_ != 0 && !runtime.hook_yielded_ && lua_isyieldable(L);
  if (made >= LuaRuntime::kGcMakerBytes) runtime.collect_garbage_made_by_step(made, pausable);
  const int look_every =
      made >= LuaRuntime::kGcMakerBytes ? kHookInstructionsAllocating : kHookInstructions;
  if (lua_gethookcount(L) != look_every) lua_sethook(L, count_hook, LUA_MASKCOUNT, look_every);
  // The pump's budget ran out: pause this coroutine; the prelude's forward or resume()
  // sees the pause.
  if (pausable && steady_ns() >= runtime.slice_deadline_ns_) {
    runtime.hook_yielded_ = L;
    lua_yield(L, 0);
  }
}

void stop_c_call_past_cpu_limit(lua_State* L) {
  LuaRuntime& runtime = LuaRuntime::from(L);
  if (const char* who_used = kill_past_cpu_limit(runtime, L))
    throw Error(ErrorCode::limit, cpu_limit_crossed(runtime.services_.limits, who_used));
}

HostCallScope::HostCallScope(lua_State* L) : runtime_(LuaRuntime::from(L)) {
  ++runtime_.host_depth_;
}
HostCallScope::~HostCallScope() {
  --runtime_.host_depth_;
}

AgentCodeScope::AgentCodeScope(lua_State* L)
    : runtime_(LuaRuntime::from(L)), host_depth_(runtime_.host_depth_) {
  runtime_.host_depth_ = 0;
}
AgentCodeScope::~AgentCodeScope() {
  runtime_.host_depth_ = host_depth_;
}

void check_memory_limit(lua_State* L) {
  void* ud = nullptr;
  if (lua_getallocf(L, &ud) != limited_alloc) return;  // a bare state (tests, fuzzers)
  auto* runtime = static_cast<LuaRuntime*>(ud);
  Run* run = runtime->current_;
  auto over = [runtime] {
    return runtime->memory_limit_ && runtime->memory_used_ > runtime->memory_limit_;
  };
  if (!(run && run->out_of_memory)) {
    if (!over()) return;
    // Past the limit inside the host's exemption, maybe with garbage: what a collection
    // frees counts first, as Lua's own answer to a refused allocation does.
    lua_gc(L, LUA_GCCOLLECT);
    if (!over()) return;
  }
  if (run) run->out_of_memory = true;
  throw Error(ErrorCode::limit, memory_limit_crossed(runtime->services_.limits));
}

namespace {

int readonly_newindex(lua_State* L) {
  return run_guarded(L, [](lua_State* L) -> int {
    const char* key = lua_tostring(L, 2);
    throw Error(ErrorCode::forbidden, std::string("cannot change the shared library table (key '") +
                                          (key ? key : "?") + "')");
  });
}

// Read-only views of shared tables: reads and pairs() see the table, writes raise. Views are
// made per run, so even a rawset on one stays within that run; their metatable is made once
// per shared table. A view of a shared module hands out the tables inside it as views too:
// otherwise one run could change, say, luagent.context.HIDDEN under every other. What such
// a view hands out (a module's functions, the views of its tables) it keeps, so the next
// access is a plain field. Views of the standard libraries, which hold only functions and
// numbers, index the library directly.
enum class Nested { plain, guarded };
void push_readonly_view(lua_State* L, int index, Nested nested);

char kPlainViewMetatablesKey;    // weak: standard library -> the metatable of its views
char kGuardedViewMetatablesKey;  // weak: shared module table -> the metatable of its views

// Keeps the value on top as field `key` of the view at `view` (leaving it on top).
void keep_in_view(lua_State* L, int view, int key) {
  lua_pushvalue(L, key);
  lua_pushvalue(L, -2);
  lua_rawset(L, view);
}

// __index, __pairs and __len of a guarded view (upvalue 1: the shared table). A table is
// handed out as the view this run's view keeps for it.
int guarded_index(lua_State* L) {
  lua_pushvalue(L, 2);
  switch (lua_rawget(L, lua_upvalueindex(1))) {
    case LUA_TTABLE:
      push_readonly_view(L, -1, Nested::guarded);
      keep_in_view(L, 1, 2);
      break;
    case LUA_TFUNCTION:
      keep_in_view(L, 1, 2);
      break;
    default:
      break;
  }
  return 1;
}

int guarded_next(lua_State* L) {  // upvalue 1: the shared table, 2: the view
  lua_settop(L, 2);
  if (!lua_next(L, lua_upvalueindex(1))) {
    lua_pushnil(L);
    return 1;
  }
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_pushvalue(L, -2);
    if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TTABLE) {
      lua_pop(L, 1);
      push_readonly_view(L, -1, Nested::guarded);
      lua_pushvalue(L, -3);
      lua_pushvalue(L, -2);
      lua_rawset(L, lua_upvalueindex(2));
    }
    lua_remove(L, -2);
  }
  return 2;
}

// The state pairs() returns is the view: the shared table must not reach the caller,
// who would keep it and write to it for every run.
int guarded_pairs(lua_State* L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 1);
  lua_pushcclosure(L, guarded_next, 2);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

int guarded_len(lua_State* L) {
  lua_pushinteger(L, static_cast<lua_Integer>(lua_rawlen(L, lua_upvalueindex(1))));
  return 1;
}

int plain_next(lua_State* L) {  // upvalue 1: the shared table
  lua_settop(L, 2);
  if (lua_next(L, lua_upvalueindex(1))) return 2;
  lua_pushnil(L);
  return 1;
}

int plain_pairs(lua_State* L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, plain_next, 1);
  lua_pushvalue(L, 1);  // the view, as guarded_pairs
  lua_pushnil(L);
  return 3;
}

// Pushes the metatable of the views of the table at `index`, made on first use.
void push_view_metatable(lua_State* L, int index, Nested nested) {
  index = lua_absindex(L, index);
  push_registry_weak_table(
      L, nested == Nested::guarded ? &kGuardedViewMetatablesKey : &kPlainViewMetatablesKey);
  int made = lua_gettop(L);
  lua_pushvalue(L, index);
  if (lua_rawget(L, made) == LUA_TTABLE) {
    lua_remove(L, made);
    return;
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 5);
  if (nested == Nested::guarded) {
    const std::pair<const char*, lua_CFunction> closures[] = {
        {"__index", guarded_index}, {"__pairs", guarded_pairs}, {"__len", guarded_len}};
    for (const auto& [event, function] : closures) {
      lua_pushvalue(L, index);
      lua_pushcclosure(L, function, 1);
      lua_setfield(L, -2, event);
    }
  } else {
    lua_pushvalue(L, index);
    lua_setfield(L, -2, "__index");
    lua_pushvalue(L, index);
    lua_pushcclosure(L, plain_pairs, 1);
    lua_setfield(L, -2, "__pairs");
  }
  lua_pushcfunction(L, readonly_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushliteral(L, "readonly");
  lua_setfield(L, -2, "__metatable");
  lua_pushvalue(L, index);
  lua_pushvalue(L, -2);
  lua_rawset(L, made);
  lua_remove(L, made);
}

void push_readonly_view(lua_State* L, int index, Nested nested) {
  index = lua_absindex(L, index);
  lua_createtable(L, 0, 0);
  push_view_metatable(L, index, nested);
  lua_setmetatable(L, -2);
}

}  // namespace

// ---------------------------------------------------------------------------
// require: luagent.* from built-in modules and stdlib/, everything else from the
// agent's own folder. Never a path outside those roots.

namespace {

// Pushes the module cache of the environment at `env`: each run (and each agent while it
// loads) has its own, kept in a weak registry table so no name in the environment
// reaches it.
void push_env_loaded(lua_State* L, int env) {
  env = lua_absindex(L, env);
  push_registry_weak_table(L, &kEnvLoadedKey);
  lua_pushvalue(L, env);
  if (lua_rawget(L, -2) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, env);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  lua_remove(L, -2);
}

}  // namespace

namespace {

void push_weak_table(lua_State* L, const char* mode) {
  lua_createtable(L, 0, 0);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
}

}  // namespace

void push_weak_keyed_table(lua_State* L) {
  push_weak_table(L, "k");
}

void push_registry_weak_table(lua_State* L, const void* registry_key, const char* mode) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, registry_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  push_weak_table(L, mode);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, registry_key);
}

namespace {

// Agent files (agent.lua and its modules) compile once and run once per run, each time in
// that run's environment. The chunk's only upvalue is the starter table; its first
// statement makes `_ENV` a local holding the requiring environment (starter[1] returns
// it), so the chunk's functions close over the run's own. The statement sits on line 1 in
// front of the file, so every line number stays the file's, and once `_ENV` is a local
// nothing in the file can name the starter.
constexpr std::string_view kPerRunChunkPrefix = "local _ENV = _ENV[1]();";

int requiring_environment(lua_State* L) {
  LuaRuntime::from(L).push_requiring_environment(L);
  return 1;
}

// Compiles `source` (text only) as a per-run chunk; leaves it, or the error message.
int load_per_run_chunk(lua_State* L, std::string_view source, const std::string& chunkname) {
  // A binary chunk is refused as Lua refuses it, without the prefix in front of it.
  if (!source.empty() && source.front() == LUA_SIGNATURE[0])
    return luaL_loadbufferx(L, source.data(), source.size(), chunkname.c_str(), "t");
  std::string text;
  text.reserve(kPerRunChunkPrefix.size() + source.size());
  text.append(kPerRunChunkPrefix).append(source);
  int status = luaL_loadbufferx(L, text.data(), text.size(), chunkname.c_str(), "t");
  if (status != LUA_OK) return status;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kChunkStarterKey);
  lua_setupvalue(L, -2, 1);
  return LUA_OK;
}

// Runs the module chunk on top of the stack as module `name` and leaves its value (true
// when it returns nothing) in its place.
void call_module_chunk(lua_State* L, const std::string& name) {
  lua_pushcfunction(L, pcall_traceback);
  lua_insert(L, -2);
  lua_pushstring(L, name.c_str());
  if (lua_pcall(L, 1, 1, -3) != LUA_OK) {
    Error error = error_from_lua(L, -1);
    throw Error(error.code(), "loading " + name + ": " + error.message(), error.source(),
                error.line());
  }
  lua_remove(L, -2);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
  }
}

// Pushes the chunk of an agent's module: compiled once per content (`version`, the file's
// hash) and kept while the collector lets it, where every run used to compile it again.
void push_agent_module_chunk(lua_State* L, std::string_view source, std::string_view version,
                             const std::string& chunkname) {
  push_registry_weak_table(L, &kModuleChunksKey, "v");
  std::string key = std::string(version) + chunkname;
  if (lua_getfield(L, -1, key.c_str()) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    if (load_per_run_chunk(L, source, chunkname) != LUA_OK)
      throw located_error(ErrorCode::syntax, lua_tostring(L, -1));
    if (!version.empty()) {  // a file without a hash is compiled each time
      lua_pushvalue(L, -1);
      lua_setfield(L, -3, key.c_str());
    }
  }
  lua_remove(L, -2);
}

}  // namespace

int lua_require(lua_State* L) {
  return run_guarded(L, [](lua_State* L) -> int {
    std::string name(arg_string(L, 1, "require", "name"));
    LuaRuntime& runtime = LuaRuntime::from(L);
    bool valid = !name.empty() && name.size() < 200 &&
                 std::all_of(name.begin(), name.end(),
                             [](char c) {
                               return std::isalnum(static_cast<unsigned char>(c)) || c == '_' ||
                                      c == '.' || c == '-';
                             }) &&
                 name.find("..") == std::string::npos && name.front() != '.';
    if (!valid)
      throw Error(ErrorCode::forbidden, "require: '" + name +
                                            "' is not a module name (letters, digits, _ - and "
                                            "dots; no paths)");
    HostCallScope scope(L);
    runtime.push_requiring_environment(L);
    int env = lua_gettop(L);
    push_env_loaded(L, env);
    int cache = lua_gettop(L);
    if (lua_getfield(L, cache, name.c_str()) != LUA_TNIL) return 1;
    lua_pop(L, 1);

    if (name.rfind("luagent.", 0) == 0) {
      // Host modules are loaded once per state and shared; each environment sees a
      // read-only view, so one run cannot change them under another.
      lua_rawgetp(L, LUA_REGISTRYINDEX, &kModuleCacheKey);
      if (lua_getfield(L, -1, name.c_str()) == LUA_TNIL) {
        lua_pop(L, 1);
        if (!open_builtin_module(L, name)) {
          std::string relative = name.substr(8);
          std::replace(relative.begin(), relative.end(), '.', '/');
          auto path = runtime.stdlib_dir_ / "luagent" / (relative + ".lua");
          if (!std::filesystem::exists(path))
            throw Error(ErrorCode::not_found,
                        "require: no module '" + name + "' (looked in " + path.string() + ")");
          // Shared by every run: compiled with the base environment, run once.
          std::string source = read_file(path, kMaxSourceBytes);
          std::string chunkname = "@stdlib/luagent/" + relative + ".lua";
          if (luaL_loadbufferx(L, source.data(), source.size(), chunkname.c_str(), "t") != LUA_OK)
            throw located_error(ErrorCode::syntax, lua_tostring(L, -1));
          lua_rawgetp(L, LUA_REGISTRYINDEX, &kBaseEnvKey);
          lua_setupvalue(L, -2, 1);
          call_module_chunk(L, name);
        }
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, name.c_str());
      }
      lua_remove(L, -2);
      if (lua_type(L, -1) == LUA_TTABLE) {
        push_readonly_view(L, -1, Nested::guarded);
        lua_remove(L, -2);
      }
    } else {
      std::string relative = name;
      std::replace(relative.begin(), relative.end(), '.', '/');
      std::string version;
      std::string source = runtime.read_agent_file(relative + ".lua", &version);
      push_agent_module_chunk(L, source, version, "@" + relative + ".lua");
      // Agent code, under the memory limit (a module's top level filled gigabytes).
      AgentCodeScope agent_code(L);
      call_module_chunk(L, name);  // in the requiring environment (env)
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, cache, name.c_str());
    return 1;
  });
}

namespace {

// load(chunk [, name [, mode [, env]]]) for agents: text only, and the caller's run
// environment by default (never the host's real globals).
int sandboxed_load(lua_State* L) {
  return run_guarded(L, [](lua_State* L) -> int {
    std::string_view mode = opt_string(L, 3, "load", "mode", "t");
    if (mode.find('b') != std::string_view::npos)
      throw Error(ErrorCode::forbidden, "load: binary chunks are not allowed (mode must be \"t\")");
    size_t length = 0;
    const char* text = nullptr;
    if (lua_type(L, 1) == LUA_TSTRING) {
      text = lua_tolstring(L, 1, &length);
    } else {
      throw Error(ErrorCode::usage, "load: argument #1 must be a string of Lua source");
    }
    std::string chunkname(opt_string(L, 2, "load", "name", "=(load)"));
    bool has_env = lua_gettop(L) >= 4;
    HostCallScope scope(L);
    int status = luaL_loadbufferx(L, text, length, chunkname.c_str(), "t");
    if (status != LUA_OK) {
      lua_pushnil(L);
      lua_insert(L, -2);
      return 2;  // nil, message — as Lua's own load does
    }
    // An agent file's top level, as it loads, is no run: its chunks went into the shared
    // base, where every run saw (and could change) their globals.
    if (has_env)
      lua_pushvalue(L, 4);
    else
      LuaRuntime::from(L).push_requiring_environment(L);
    lua_setupvalue(L, -2, 1);
    return 1;
  });
}

int sandboxed_print(lua_State* L) {
  return run_guarded(L, [](lua_State* L) -> int {
    push_arguments_as_text(L, lua_gettop(L), "\t");
    size_t length = 0;
    const char* line = lua_tolstring(L, -1, &length);
    LuaRuntime::from(L).log("print", {line, length});
    return 0;
  });
}

}  // namespace

// ---------------------------------------------------------------------------

LuaRuntime::LuaRuntime(RuntimeServices services) : services_(std::move(services)) {
  memory_limit_ = services_.limits.memory_mb * 1024 * 1024;
  stdlib_dir_ = services_.stdlib_dir.empty() ? find_stdlib() : services_.stdlib_dir;
  open_state();
}

LuaRuntime::~LuaRuntime() {
  syncer_.reset();  // what was committed is flushed before the store goes
  runs_.clear();
  retired_runs_.clear();
  if (L_) lua_close(L_);
}

std::filesystem::path LuaRuntime::find_stdlib() const {
  std::error_code ec;
  if (const char* env = std::getenv("LUAGENT_STDLIB"); env && *env) {
    // Refused here: a wrong folder would otherwise show up only as an agent's require of
    // luagent.context failing, with nothing to say where the folder came from.
    if (!std::filesystem::is_directory(std::filesystem::path(env) / "luagent", ec))
      throw Error(ErrorCode::config, std::string("LUAGENT_STDLIB: ") + env +
                                         " holds no luagent/ folder (the stdlib's modules)");
    return env;
  }
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto installed = exe.parent_path().parent_path() / "share/luagent/stdlib";
    if (std::filesystem::exists(installed / "luagent")) return installed;
  }
  if (std::filesystem::exists(std::filesystem::path(LUAGENT_STDLIB_BUILD_DIR) / "luagent"))
    return LUAGENT_STDLIB_BUILD_DIR;
  return LUAGENT_STDLIB_INSTALL_DIR;
}

LuaRuntime& LuaRuntime::from(lua_State* L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kRuntimeKey);
  auto* runtime = static_cast<LuaRuntime*>(lua_touserdata(L, -1));
  lua_pop(L, 1);
  return *runtime;
}

void LuaRuntime::require_wait(lua_State* L, const std::string& what) const {
  if (lua_isyieldable(L) && held_yields_ == 0) return;
  throw Error(ErrorCode::usage,
              what +
                  " cannot be called here: the step cannot wait for it inside a function "
                  "Lua calls from C (table.sort's comparator, string.gsub's replacement, "
                  "a __tostring, a module's top level) or in a coroutine resumed from "
                  "one; call it outside");
}

Run& LuaRuntime::require_run(const char* function) const {
  Run* run = current_run();
  if (!run)
    throw Error(ErrorCode::usage,
                std::string(function) + " can only be called while an agent step runs");
  return *run;
}

void LuaRuntime::push_requiring_environment(lua_State* L) const {
  if (const Run* run = current_run())
    lua_rawgeti(L, LUA_REGISTRYINDEX, run->env_ref);
  else if (loading_env_ref_ != LUA_NOREF)
    lua_rawgeti(L, LUA_REGISTRYINDEX, loading_env_ref_);
  else
    lua_rawgetp(L, LUA_REGISTRYINDEX, &kBaseEnvKey);
}

void LuaRuntime::log(std::string_view level, std::string_view message) const {
  if (services_.log) services_.log(level, message);
}

void LuaRuntime::open_state() {
  L_ = lua_newstate(limited_alloc, this);
  if (!L_) throw Error(ErrorCode::internal, "cannot create a Lua state");
  lua_pushlightuserdata(L_, this);
  lua_rawsetp(L_, LUA_REGISTRYINDEX, &kRuntimeKey);
  // The collector runs when run_ready() says, inside the caller's budget (see
  // collect_garbage), not wherever an allocation in some agent's step tips it over.
  lua_gc(L_, LUA_GCINC, 0, 0, kGcStepLog2);  // small basic steps: see collect_garbage
  lua_gc(L_, LUA_GCSTOP);
  // Libraries one by one; io, os, debug and package are never opened.
  luaL_requiref(L_, LUA_GNAME, luaopen_base, 1);
  luaL_requiref(L_, LUA_STRLIBNAME, luaopen_string, 1);
  luaL_requiref(L_, LUA_TABLIBNAME, luaopen_table, 1);
  luaL_requiref(L_, LUA_MATHLIBNAME, luaopen_math, 1);
  luaL_requiref(L_, LUA_UTF8LIBNAME, luaopen_utf8, 1);
  luaL_requiref(L_, LUA_COLIBNAME, luaopen_coroutine, 1);
  lua_pop(L_, 6);
  // string.dump would hand out bytecode, the way around the text-only loader.
  lua_getglobal(L_, "string");
  lua_pushnil(L_);
  lua_setfield(L_, -2, "dump");
  lua_pop(L_, 1);
  // Lua's pattern functions are one C call each, which the count hook cannot stop: ours
  // look at the CPU limit as they go.
  install_string_patterns(L_, stop_c_call_past_cpu_limit);
  // The string metatable is shared by every string of every run: hide it.
  lua_pushliteral(L_, "");
  lua_getmetatable(L_, -1);
  lua_pushliteral(L_, "string");
  lua_setfield(L_, -2, "__metatable");
  lua_pop(L_, 2);
  lua_newtable(L_);
  lua_rawsetp(L_, LUA_REGISTRYINDEX, &kModuleCacheKey);
  build_base_environment();
}

void LuaRuntime::build_base_environment() {
  lua_State* L = L_;
  lua_createtable(L, 0, 32);  // the base environment
  int base = lua_gettop(L);
  for (const char* name : kSafeBaseFunctions) {
    lua_getglobal(L, name);
    lua_setfield(L, base, name);
  }
  for (const char* name : kSafeLibraries) {
    lua_getglobal(L, name);
    lua_setfield(L, base, name);
  }
  lua_getglobal(L, "setmetatable");
  lua_pushcclosure(L, sandboxed_setmetatable, 1);
  lua_setfield(L, base, "setmetatable");
  lua_pushcfunction(L, sandboxed_load);
  lua_setfield(L, base, "load");
  lua_pushcfunction(L, sandboxed_print);
  lua_setfield(L, base, "print");
  lua_pushcfunction(L, lua_require);
  lua_setfield(L, base, "require");

  // The prelude: coroutine wrappers that let host yields through, and run_agent.
  if (luaL_loadbufferx(L, kPrelude, std::strlen(kPrelude), "=luagent.prelude", "t") != LUA_OK)
    throw Error(ErrorCode::internal, std::string("prelude: ") + lua_tostring(L, -1));
  lua_pushvalue(L, base);
  lua_setupvalue(L, -2, 1);
  push_host_yield_sentinel(L);
  lua_getglobal(L, "coroutine");
  lua_pushlightuserdata(L, &kSliceKey);
  lua_pushcfunction(L, lua_entry<took_hook_yield>);
  lua_pushcfunction(L, lua_entry<count_held_yields>);
  push_registry_weak_table(L, &kStepCoroutinesKey, "k");
  if (lua_pcall(L, 6, 2, 0) != LUA_OK)
    throw Error(ErrorCode::internal, std::string("prelude: ") + lua_tostring(L, -1));
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kRunnerKey);
  lua_setfield(L, base, "coroutine");
  lua_createtable(L, 1, 0);
  lua_pushcfunction(L, requiring_environment);
  lua_rawseti(L, -2, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kChunkStarterKey);
  lua_pushvalue(L, base);
  lua_setfield(L, base, "_G");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &kBaseEnvKey);
}

// A fresh environment for one run: its own globals, read-only views of the
// libraries, reads falling through to the base.
void LuaRuntime::push_run_environment() {
  lua_State* L = L_;
  lua_createtable(L, 0, 8);
  int env = lua_gettop(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &kBaseEnvKey);
  int base = lua_gettop(L);
  for (const char* name : kSafeLibraries) {
    lua_getfield(L, base, name);
    push_readonly_view(L, -1, Nested::plain);
    lua_setfield(L, env, name);
    lua_pop(L, 1);
  }
  lua_pushvalue(L, env);
  lua_setfield(L, env, "_G");
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, base);
  lua_setfield(L, -2, "__index");
  // getmetatable(_G) handed out the shared base (and through it the real libraries) to
  // any run, to change for every run after it.
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, env);
  lua_pop(L, 1);  // base
}

AgentInfo LuaRuntime::load_agent(const std::filesystem::path& requested) {
  auto missing = [&] {
    return Error(ErrorCode::not_found,
                 "no agent at " + requested.string() + " (expected a folder with an agent.lua)");
  };
  // Canonicalising costs a readlink per path component, so it is done again only when the
  // requested path may name another folder than last time: when it (or the canonical path
  // found then) no longer leads to the same inode, as when a link on the way was
  // retargeted. A path that still leads there while its canonical form changed (a parent
  // renamed and a link left in its place) keeps the old, still working spelling.
  FileStat folder = stat_of(requested);
  if (!folder.present || !S_ISDIR(folder.mode)) throw missing();
  std::filesystem::path dir;
  auto resolved = resolved_folders_.find(requested.native());
  if (resolved != resolved_folders_.end()) {
    const ResolvedFolder& known = resolved->second;
    auto same_inode = [&](const FileStat& stat) {
      return stat.present && stat.device == known.device && stat.inode == known.inode;
    };
    if (same_inode(folder) &&
        (known.canonical == requested || same_inode(folder = stat_of(known.canonical))))
      dir = known.canonical;
  }
  if (dir.empty()) {
    std::error_code ec;
    dir = std::filesystem::weakly_canonical(requested, ec);
    if (ec) throw missing();
    folder = stat_of(dir);
    if (!folder.present || !S_ISDIR(folder.mode)) throw missing();
    if (resolved_folders_.size() >= 1024) resolved_folders_.clear();  // bounded, not a registry
    resolved_folders_[requested.native()] = {dir, folder.device, folder.inode};
  }

  // Reuse the version loaded from this folder while nothing on disk changed since it was
  // read: first by the stats of its shape alone; when one differs, by a new listing whose
  // source files are still the ones read (what changed was something else). Otherwise the
  // files are read again, and a version that hashes the same only gets the new shape.
  timespec clock{};
  ::clock_gettime(CLOCK_REALTIME, &clock);
  const std::int64_t now = std::int64_t{clock.tv_sec} * 1000000000 + clock.tv_nsec;
  auto found = agents_.find(dir);
  // Loaded under another stdlib: read again, for a version that says so.
  if (found != agents_.end() && found->second.stdlib_version == stdlib_version()) {
    LoadedAgent& loaded = found->second;
    if (shape_unchanged(loaded.shape, folder)) return loaded.info;
    FolderShape listed;
    listed.taken_at = now;
    for_each_agent_source(dir, listed, [](const std::filesystem::path&, const std::string&) {});
    if (sources_unchanged(loaded.shape, listed, loaded.read_at)) {
      loaded.shape = std::move(listed);
      return loaded.info;
    }
  }

  if (!std::filesystem::exists(dir / "agent.lua"))
    throw Error(ErrorCode::not_found, "no agent.lua in " + requested.string());
  AgentInfo info{dir.filename().string(), dir, {}};
  FolderShape shape;
  shape.taken_at = now;
  auto files = snapshot_agent(dir, stdlib_version(), info.version, shape);
  if (found != agents_.end() && found->second.info.version == info.version) {
    found->second.shape = std::move(shape);  // touched, not changed
    found->second.read_at = now;
    return found->second.info;
  }

  const std::string& source = files->files.at("agent.lua").text;
  std::string chunkname = "@" + info.name + "/agent.lua";
  lua_State* L = L_;
  lua_pushcfunction(L, pcall_traceback);
  if (load_per_run_chunk(L, source, chunkname) != LUA_OK) {
    Error error = located_error(ErrorCode::syntax, lua_tostring(L, -1));
    lua_pop(L, 2);
    throw error;
  }
  lua_pushvalue(L, -1);
  LoadedAgent loaded{info, files,           luaL_ref(L, LUA_REGISTRYINDEX), std::move(shape),
                     now,  stdlib_version()};

  // Run the chunk once now, so an error at load time is reported before any thread
  // depends on it, with the previous version (if any) still loaded.
  auto previous_loading = loading_dir_;
  auto previous_files = loading_files_;
  loading_dir_ = dir;
  loading_files_ = files;
  int previous_env = loading_env_ref_;
  push_run_environment();
  loading_env_ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
  int status = pcall_limited(0, 1, -2);
  luaL_unref(L, LUA_REGISTRYINDEX, loading_env_ref_);
  loading_env_ref_ = previous_env;
  loading_dir_ = previous_loading;
  loading_files_ = previous_files;
  if (status != LUA_OK) {
    Error error = error_from_lua(L, -1);
    lua_pop(L, 2);
    luaL_unref(L, LUA_REGISTRYINDEX, loaded.chunk_ref);
    throw Error(error.code() == ErrorCode::runtime ? ErrorCode::syntax : error.code(),
                "loading the agent: " + error.message(), error.source(), error.line());
  }
  bool is_function = lua_type(L, -1) == LUA_TFUNCTION;
  lua_pop(L, 2);
  if (!is_function) {
    luaL_unref(L, LUA_REGISTRYINDEX, loaded.chunk_ref);
    throw Error(ErrorCode::syntax, "agent.lua must return a function(thread)", chunkname.substr(1));
  }
  // Runs in flight keep the chunk they started with on their own stacks.
  if (auto replaced = agents_.find(dir); replaced != agents_.end())
    luaL_unref(L, LUA_REGISTRYINDEX, replaced->second.chunk_ref);
  agents_[dir] = std::move(loaded);
  return info;
}

int LuaRuntime::pcall_limited(int nargs, int nresults, int message_handler, Run* charged) {
  lua_State* L = L_;
  // Inside a step (an agent loading another agent) that step's slice clock already runs;
  // inside another pcall_limited (a load inside a load) its clock and hook go on.
  const bool own_clock = current_ == nullptr && !unowned_code_limited_;
  if (own_clock) {
    if (charged) {
      current_ = charged;
      charged->slice_started_ns = thread_cpu_ns();
    } else {
      unowned_code_limited_ = true;
      unowned_code_killed_ = false;
      unowned_code_started_ns_ = thread_cpu_ns();
    }
  }
  lua_Hook outer_hook = lua_gethook(L);
  const int outer_mask = lua_gethookmask(L);
  const int outer_count = lua_gethookcount(L);
  if (!outer_hook) lua_sethook(L, count_hook, LUA_MASKCOUNT, kHookInstructions);
  int status = lua_pcall(L, nargs, nresults, message_handler);
  // The outer call's hook goes on; a kill in here stays known (unowned_code_killed_ or
  // the run's killed flag), so the outer code ends at its next look at the clock.
  lua_sethook(L, outer_hook, outer_mask, outer_count);
  if (own_clock) {
    if (charged) {
      charged->cpu_used_ns += thread_cpu_ns() - charged->slice_started_ns;
      current_ = nullptr;
    } else {
      unowned_code_limited_ = false;
    }
  }
  return status;
}

void LuaRuntime::set_store(Store* store) {
  drain_commits();
  syncer_.reset();
  services_.store = store;
  if (!store || !store->defer_batch_sync()) return;
  EventLoop* loop = services_.loop;
  // Posting an empty task ends the loop's wait, so the next run_ready() applies the flush.
  syncer_ = std::make_unique<CommitSyncer>(*store, [loop] {
    if (loop) loop->post([] {});
  });
}

void LuaRuntime::reload_stdlib() {
  // Compile every module first: one with a syntax error keeps the old cache serving.
  auto sources = read_stdlib(stdlib_dir_);
  for (const auto& [name, source] : sources) {
    std::string chunkname = "@stdlib/" + name;
    if (luaL_loadbufferx(L_, source.data(), source.size(), chunkname.c_str(), "t") != LUA_OK) {
      Error error = located_error(ErrorCode::syntax, lua_tostring(L_, -1));
      lua_pop(L_, 1);
      throw error;
    }
    lua_pop(L_, 1);
  }
  lua_newtable(L_);
  lua_rawsetp(L_, LUA_REGISTRYINDEX, &kModuleCacheKey);
  // The agents loaded before get new versions when next loaded.
  stdlib_version_ = hash_stdlib(sources);
}

const std::string& LuaRuntime::stdlib_version() {
  if (!stdlib_version_) stdlib_version_ = hash_stdlib(read_stdlib(stdlib_dir_));
  return *stdlib_version_;
}

const LuaRuntime::LoadedAgent& LuaRuntime::loaded_agent(const AgentInfo& agent) {
  auto found = agents_.find(agent.dir);
  if (found == agents_.end() || found->second.info.version != agent.version) load_agent(agent.dir);
  return agents_.at(agent.dir);
}

void LuaRuntime::start_step(const AgentInfo& agent, Thread thread, RunCallbacks callbacks,
                            std::size_t unflushed_events) {
  const LoadedAgent& loaded = loaded_agent(agent);
  auto run = std::make_unique<Run>();
  run->id = next_run_id_++;
  run->agent = loaded.info;
  run->files = loaded.files;
  run->thread = std::move(thread);
  run->callbacks = std::move(callbacks);
  run->step_start_version = run->thread.version();
  unflushed_events = std::min(unflushed_events, run->thread.events.size());
  run->durable_events = run->reported_events = run->thread.events.size() - unflushed_events;
  lua_State* L = L_;

  run->coroutine = lua_newthread(L);
  push_registry_weak_table(L, &kStepCoroutinesKey, "k");
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  run->coroutine_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  push_run_environment();
  run->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  push_weak_keyed_table(L);
  run->calls_ref = luaL_ref(L, LUA_REGISTRYINDEX);

  lua_State* co = run->coroutine;
  lua_rawgetp(co, LUA_REGISTRYINDEX, &kRunnerKey);
  lua_rawgeti(co, LUA_REGISTRYINDEX, loaded.chunk_ref);  // takes the run's environment
  push_thread_object(co, run->id);
  lua_sethook(co, count_hook, LUA_MASKCOUNT, kHookInstructions);

  ready_.push_back({run->id, 2});  // runs in run_ready(), inside the caller's budget
  Run& started = *runs_.emplace(run->id, std::move(run)).first->second;
  report_when_flushed(started, unflushed_events);
}

// The caller's events (a launch's first, a resume's answer) ride on the next flush as if
// the run had appended them behind: reported once durable, ahead of the step's own, and a
// failed flush fails the run.
void LuaRuntime::report_when_flushed(Run& run, std::size_t count) {
  if (count == 0) return;
  const std::size_t first = run.thread.events.size() - count;
  if (!syncer_) {  // no deferred flushing: the commit was durable when it returned
    run.durable_events = run.thread.events.size();
    report_durable_events(run.id);
    return;
  }
  PendingCommit pending;
  pending.shares.push_back({run.id, static_cast<std::int64_t>(first), count, false});
  AppendResult committed;
  committed.events.assign(run.thread.events.begin() + static_cast<std::ptrdiff_t>(first),
                          run.thread.events.end());
  pending.results.emplace_back(std::move(committed));
  run.uncommitted_events += static_cast<std::int64_t>(count);
  // Flushed with the turn's group commit (flush_appends asks for the flush): the launches
  // and answers of one turn share it.
  in_commit_.push_back(std::move(pending));
}

bool LuaRuntime::take_hook_yield(lua_State* co) {
  if (hook_yielded_ != co) return false;
  hook_yielded_ = nullptr;
  return true;
}

std::size_t LuaRuntime::run_ready(std::optional<Clock::time_point> deadline) {
  retired_runs_.clear();  // no callback is on the stack: nothing refers to them any more
  std::size_t resumed = 0;
  // A new deadline is a new pump: its budget is whole.
  if (deadline && deadline != overdue_gc_deadline_) {
    overdue_gc_deadline_ = deadline;
    // A collector step that took the whole budget (the atomic one) is the pump's work:
    // runs, even the one a pump resumes past its deadline, go on in the next. Without
    // one, a budget already spent (zero, or tiny) still resumes one run.
    if (collect_overdue_garbage() && Clock::now() >= *deadline) return 0;
  }
  apply_commits(deadline);  // runs whose events are durable now go on
  finish_committed(deadline);
  // The turn's commit runs after the last resume, inside the caller's budget: Lua work
  // stops early enough to leave it room (its cost is estimated from earlier commits).
  auto lua_deadline = [&] {
    auto reserve = std::chrono::nanoseconds(static_cast<std::int64_t>(
        static_cast<double>(queued_records() + kRecordsPerStep) * commit_ns_per_record_));
    return *deadline - reserve;
  };
  do {
    while (!ready_.empty() && (!deadline || resumed == 0 || Clock::now() < lua_deadline())) {
      auto [id, nargs] = ready_.front();
      ready_.pop_front();
      Run* run = find_run(id);
      if (!run) continue;  // cancelled while it waited
      ++resumed;
      slice_deadline_ns_ =
          deadline ? std::max<std::int64_t>(1, std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                   lua_deadline().time_since_epoch())
                                                   .count())
                   : 0;
      resume(*run, nargs);
    }
    slice_deadline_ns_ = 0;
    // Whatever the runs of this turn appended is committed together; the flush to disk
    // happens on the syncer's thread. A backlog (commits another process's lock refused
    // for a while) is committed as far as the budget goes, the rest in the next pump.
    std::size_t records = queued_records();
    std::size_t fits = SIZE_MAX;
    if (deadline) {
      double left_ns = std::chrono::duration<double, std::nano>(*deadline - Clock::now()).count();
      fits = static_cast<std::size_t>(std::max(0.0, left_ns) / commit_ns_per_record_);
    }
    auto started = Clock::now();
    if (flush_appends(StoreLock::try_only, fits) && records > 0) {
      std::size_t committed = records - queued_records();
      double ns = std::chrono::duration<double, std::nano>(Clock::now() - started).count();
      if (committed > 0)
        commit_ns_per_record_ =
            0.8 * commit_ns_per_record_ + 0.2 * (ns / static_cast<double>(committed));
    }
    apply_commits(deadline);
    finish_committed(deadline);
  } while (!ready_.empty() && (!deadline || Clock::now() < lua_deadline()));
  collect_garbage(deadline);
  retired_runs_.clear();
  return resumed;
}

bool LuaRuntime::gc_pausing() {
  // Between cycles nothing is owed: the next one starts when the heap reaches the mark.
  if (memory_used_ >= gc_pause_until_) return false;
  allocated_since_gc_ = 0;
  return true;
}

bool LuaRuntime::gc_step() {
  auto start = Clock::now();
  bool cycle_done = lua_gc(L_, LUA_GCSTEP, 0) != 0;
  auto took = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
  gc_step_max_this_cycle_ns_ = std::max<std::int64_t>(took, gc_step_max_this_cycle_ns_);
  gc_step_max_ns_ = std::max(gc_step_max_ns_, took);
  allocated_since_gc_ -= std::min(allocated_since_gc_, kGcStepBytes);
  if (cycle_done) {
    // The longest step of the last two cycles: the atomic step comes once a cycle.
    gc_step_max_ns_ = std::max(gc_step_max_last_cycle_ns_, gc_step_max_this_cycle_ns_);
    gc_step_max_last_cycle_ns_ = gc_step_max_this_cycle_ns_;
    gc_step_max_this_cycle_ns_ = 0;
    // The next cycle starts when the heap has doubled, or grown by kGcMaxPauseBytes: a
    // heap made mostly of one step's fresh garbage need not double (each new page is a
    // page fault), and a pause must end well before the memory limit, where Lua would
    // run a full collection at once inside some allocation.
    gc_pause_until_ = std::min(memory_used_ * 2, memory_used_ + kGcMaxPauseBytes);
    if (memory_limit_) gc_pause_until_ = std::min(gc_pause_until_, memory_limit_ / 4 * 3);
    allocated_since_gc_ = 0;
  }
  return cycle_done;
}

void LuaRuntime::collect_garbage(std::optional<Clock::time_point> deadline) {
  // Lua's own pacing, driven from here: a basic step (see open_state) per kGcStepBytes
  // allocated, and a pause after each cycle (see gc_step). With a deadline, a step starts
  // only with room for the longest step of the last two cycles (the atomic one, which
  // cannot be split); work put off that way is done by collect_overdue_garbage.
  if (gc_pausing()) return;
  while (allocated_since_gc_ >= kGcStepBytes) {
    if (deadline && Clock::now() + std::chrono::nanoseconds(gc_step_max_ns_) >= *deadline) break;
    if (gc_step()) break;
  }
}

bool LuaRuntime::collect_overdue_garbage() {
  // When budgets have been spent for long (a step grinding through every pump), the
  // collector's work is far behind: one step runs anyway, first thing in the pump, so
  // that even the atomic step (which may be longer than the whole budget) runs alone.
  if (gc_pausing() || allocated_since_gc_ < kOverdueGcBytes) return false;
  gc_step();
  return true;
}

void LuaRuntime::collect_garbage_made_by_step(std::size_t made, bool pausable) {
  // From the count hook, in a step that made `made` bytes since it last looked. Outside a
  // pump the collector catches up at once, as Lua's own would. In a pump it works until
  // the slice ends. Past that, a step the hook is about to pause owes nothing more now:
  // paused, it makes no garbage, and its next slice pays what is left at its first hook.
  // One that cannot be paused (inside a C call that cannot yield) runs on past the
  // deadline anyway: it collects at least a step per kGcMakerPaceBytes made, so it is
  // slowed to the collector's pace and the heap stays bounded. (Paying those steps past
  // the deadline before every pause had held a 2 ms pump for up to 2.4 ms more.)
  if (gc_pausing()) return;
  const std::size_t at_least = pausable ? 0 : made / kGcMakerPaceBytes;
  for (std::size_t steps = 0; allocated_since_gc_ >= kGcStepBytes; ++steps) {
    if (steps >= at_least && slice_deadline_ns_ != 0 && steady_ns() >= slice_deadline_ns_) break;
    if (gc_step()) break;
  }
}

std::size_t LuaRuntime::queued_records() const {
  std::size_t records = queued_calls_.size();
  for (const QueuedAppend& item : queued_appends_) records += item.events.size();
  return records;
}

bool LuaRuntime::has_step_in_flight(const std::string& thread_id) const {
  return std::any_of(runs_.begin(), runs_.end(),
                     [&](const auto& entry) { return entry.second->thread.id == thread_id; });
}

bool LuaRuntime::cancel_run(const std::string& thread_id, const std::string& reason) {
  // A step that has ended but waits for its commit ends now; there is nothing to cancel.
  drain_commits();
  finish_committed();
  Run* run = nullptr;
  for (auto& [id, candidate] : runs_)
    if (candidate->thread.id == thread_id) run = candidate.get();
  if (!run) return false;
  if (current_ == run)
    throw Error(ErrorCode::conflict,
                "thread " + thread_id + " cannot cancel itself from inside its own step");
  // From an on_event callback of this run, the events stored before the cancel that are
  // still to be reported go first, in order.
  const std::uint64_t run_id = run->id;
  report_durable_events(run_id);
  run = find_run(run_id);
  if (!run) return false;  // one of those callbacks cancelled it
  // A step whose end is durable (done, or paused) and still being reported ends as it
  // would have; the caller then cancels the stored thread, or finds it ended.
  if (run->finishing && run->uncommitted_events == 0) {
    finish(*run, run->finish_error);
    return false;
  }
  // Its failed event being reported (fail_run): the thread has ended.
  Status status = run->thread.status();
  if (status == Status::done || status == Status::failed || status == Status::cancelled)
    return false;
  if (run->pending_call && services_.provider) services_.provider->cancel(run->pending_call);
  // The cancel goes on a copy of the thread: a callback up the stack may hold the run's
  // thread and its events, which must stay as they are.
  Thread ended = run->thread;
  std::optional<Error> error = run->commit_error;
  if (!error) {
    nlohmann::json data = nlohmann::json::object();
    if (!reason.empty()) data["reason"] = reason;
    Event cancelled = Event::make(std::string(event_type::cancelled), std::move(data));
    cancelled.version = run->agent.version;
    try {
      auto stored = services_.store->append(ended.id, ended.version(), {std::move(cancelled)});
      ended.events.insert(ended.events.end(), stored.events.begin(), stored.events.end());
    } catch (const Error& e) {
      if (e.code() == ErrorCode::conflict) run->lost_thread = true;
      error = e;
    }
  }
  release_chunks(run_id, /*all=*/true);  // streamed before the cancel
  // Out of runs_ before anyone hears of it: a callback cancelling it again finds it ended.
  retire(run_id);
  if (!error && run->callbacks.on_event) run->callbacks.on_event(ended, ended.events.back());
  if (run->callbacks.on_finished) run->callbacks.on_finished(ended, error);
  if (error) throw *error;
  return true;
}

void LuaRuntime::resume(Run& run, int nargs) {
  if (run.commit_error) {  // what it appended behind could not be stored
    Error error = *run.commit_error;
    run.commit_error.reset();
    fail_run(run, error);
    return;
  }
  if (run.killed) {  // its stream callback spent the step's CPU while the call ran
    fail_run(run, Error(ErrorCode::limit, cpu_limit_crossed(services_.limits, "the step used")));
    return;
  }
  if (run.out_of_memory) {  // crossed the memory limit in a callback or a host call
    fail_run(run, Error(ErrorCode::limit, memory_limit_crossed(services_.limits)));
    return;
  }
  Run* previous = current_;
  current_ = &run;
  allocated_since_look_ = 0;
  run.slice_started_ns = thread_cpu_ns();
  int results = 0;
  // Nothing can hold yields at the start of a resume (a yield never crosses a hold), and
  // a hold an error skipped releasing must not outlive it.
  const int held_outside = held_yields_;
  held_yields_ = 0;
  int status = lua_resume(run.coroutine, L_, nargs, &results);
  held_yields_ = held_outside;
  // Only a later slice of this step reads the total (count_hook): a step that ended here
  // needs no closing reading (a system call: CLOCK_THREAD_CPUTIME_ID has no vDSO path).
  if (status == LUA_YIELD) run.cpu_used_ns += thread_cpu_ns() - run.slice_started_ns;
  current_ = previous;

  bool hook_paused = hook_yielded_ == run.coroutine;
  hook_yielded_ = nullptr;
  if (status == LUA_YIELD) {
    bool host_yield = results >= 1 && is_host_yield_sentinel(run.coroutine, -results);
    bool sliced = (results == 0 && hook_paused) ||
                  (results >= 1 && is_slice_sentinel(run.coroutine, -results));
    lua_pop(run.coroutine, results);
    if (sliced) {
      schedule(run);  // the time slice ran out; continue at the next run_ready()
      return;
    }
    if (host_yield && (run.pending_call || run.waiting_host || run.appending))
      return;  // resumed when the call completes or the commit is done
    fail_run(run, Error(ErrorCode::runtime,
                        "the agent yielded outside a coroutine of its own (coroutine.yield at "
                        "the top level of a step)"));
    return;
  }
  if (status != LUA_OK) {
    Error error = error_from_lua(run.coroutine, -1);
    if (status == LUA_ERRMEM)
      error = Error(ErrorCode::limit, memory_limit_crossed(services_.limits));
    if (lua_type(run.coroutine, -1) == LUA_TSTRING) {
      // Unprotected, on the main state: the traceback must not meet the memory limit the
      // agent may just have hit.
      HostCallScope scope(L_);
      luaL_traceback(L_, run.coroutine, lua_tostring(run.coroutine, -1), 0);
      log("debug", lua_tostring(L_, -1));
      lua_pop(L_, 1);
    }
    fail_run(run, error);
    return;
  }
  lua_pop(run.coroutine, results);
  if (run.out_of_memory) {  // the step swallowed the error (pcall) and returned
    fail_run(run, Error(ErrorCode::limit, memory_limit_crossed(services_.limits)));
    return;
  }
  // A step that returns without awaiting has finished the thread. A tool it left
  // running (its coroutine closed, or left suspended) can never record a result: the
  // thread said tool_started and nothing after it, and thread:execute of the call kept
  // saying "still running" until the step ended. (await is refused while one runs.)
  std::optional<Error> error;
  if (!run.awaiting) {
    std::vector<Event> ending;
    for (std::int64_t call : run.running_calls)
      ending.push_back(Event::make(std::string(event_type::outcome_unknown),
                                   {{"call", call}, {"reason", "abandoned"}}));
    run.running_calls.clear();
    ending.push_back(Event::make(std::string(event_type::done), nullptr));
    try {
      queue_behind(run, std::move(ending));
    } catch (const Error& e) {
      error = e;
    }
  }
  end_step(run, error);
}

// The run finishes when the turn's commit has made its last events durable: whoever
// is told the thread is done or paused can rely on what they read.
void LuaRuntime::end_step(Run& run, std::optional<Error> error) {
  if (run.uncommitted_events == 0) {
    finish(run, error);
    return;
  }
  run.finishing = true;
  run.finish_error = std::move(error);
}

void LuaRuntime::fail_run(Run& run, const Error& raised) {
  // Past the memory limit, the step fails with it, whatever its code raised after
  // ("loading bomb: not enough memory" from require).
  const Error error = run.out_of_memory && raised.code() != ErrorCode::limit
                          ? Error(ErrorCode::limit, memory_limit_crossed(services_.limits))
                          : raised;
  std::optional<Error> outcome;
  if (run.lost_thread) {
    outcome = error;  // another writer owns the thread now; record nothing
  } else {
    nlohmann::json data = {{"code", error_code_name(error.code())}, {"message", error.message()}};
    if (!error.source().empty()) data["source"] = error.source();
    if (error.line() > 0) data["line"] = error.line();
    try {
      append(run, {Event::make(std::string(event_type::failed), std::move(data))});
    } catch (const Error& e) {
      outcome = e;
    }
  }
  finish(run, outcome);
}

void LuaRuntime::finish(Run& run, const std::optional<Error>& error) {
  release_chunks(run.id, /*all=*/true);
  Run* ended = retire(run.id);
  if (!ended) return;  // a callback up the stack cancelled it: that was its end
  if (!ended->callbacks.on_finished) return;
  // An append lost its compare-and-swap: another Host or process wrote first. When that
  // was a cancel, the step ended as that cancel, and is told as the store holds it (it was
  // reported as failed, with the thread as this step last saw it).
  if (ended->lost_thread) {
    std::optional<Thread> stored;
    try {
      stored = services_.store->load(ended->thread.id);
    } catch (const Error&) {
      // unreadable now: reported as it stands below
    }
    if (stored && stored->status() == Status::cancelled) {
      ended->callbacks.on_finished(*stored, std::nullopt);
      return;
    }
  }
  ended->callbacks.on_finished(ended->thread, error);
}

Run* LuaRuntime::retire(std::uint64_t run_id) {
  auto found = runs_.find(run_id);
  if (found == runs_.end()) return nullptr;
  Run* run = found->second.get();
  if (refused_.run == run) refused_ = {};
  retired_runs_.push_back(std::move(found->second));
  runs_.erase(found);
  luaL_unref(L_, LUA_REGISTRYINDEX, run->coroutine_ref);
  luaL_unref(L_, LUA_REGISTRYINDEX, run->env_ref);
  luaL_unref(L_, LUA_REGISTRYINDEX, run->calls_ref);
  luaL_unref(L_, LUA_REGISTRYINDEX, run->stream_ref);
  run->coroutine_ref = run->env_ref = run->calls_ref = run->stream_ref = LUA_NOREF;
  return run;
}

void LuaRuntime::report_durable_events(std::uint64_t run_id) {
  for (Run* run = find_run(run_id); run && run->reported_events < run->durable_events;
       run = find_run(run_id)) {
    const std::size_t index = run->reported_events++;
    if (run->callbacks.on_event) run->callbacks.on_event(run->thread, run->thread.events[index]);
    release_chunks(run_id);
  }
}

void LuaRuntime::report_chunk(Run& run, std::string_view text) {
  if (run.held_chunks.empty() && run.reported_events >= run.thread.events.size()) {
    run.callbacks.on_chunk(run.thread, text);
    return;
  }
  run.held_chunks.emplace_back(run.thread.events.size(), std::string(text));
}

void LuaRuntime::release_chunks(std::uint64_t run_id, bool all) {
  // Looked up again after every callback: one may end the run (a cancel).
  for (Run* run = find_run(run_id); run && !run->held_chunks.empty(); run = find_run(run_id)) {
    if (!all && run->held_chunks.front().first > run->reported_events) return;
    std::string text = std::move(run->held_chunks.front().second);
    run->held_chunks.pop_front();
    if (run->callbacks.on_chunk) run->callbacks.on_chunk(run->thread, text);
  }
}

void LuaRuntime::queue_append(Run& run, std::vector<Event> events, bool behind) {
  for (Event& event : events)
    if (event.version.empty()) event.version = run.agent.version;
  run.uncommitted_events += static_cast<std::int64_t>(events.size());
  if (!behind) {
    // apply_commit inserts these into the thread: with room made now, that moves no event
    // a callback of the same commit may be holding.
    auto& stored = run.thread.events;
    if (stored.capacity() < stored.size() + events.size())
      stored.reserve(std::max(stored.size() + events.size(), 2 * stored.capacity()));
  }
  queued_appends_.push_back({run.id, run.thread.version(), std::move(events), behind});
}

int LuaRuntime::append_then(lua_State* L, Run& run, std::vector<Event> events,
                            int (*then)(lua_State*)) {
  if (!lua_isyieldable(L) || current_ != &run) {
    run.appended = append(run, std::move(events));
    return then(L);
  }
  queue_append(run, std::move(events), false);
  run.appending = true;
  yield_for_host(L, then);
  return kYield;
}

std::vector<Event> LuaRuntime::append_behind(Run& run, std::vector<Event> events) {
  if (current_ != &run) return append(run, std::move(events));
  return queue_behind(run, std::move(events));
}

std::vector<Event> LuaRuntime::queue_behind(Run& run, std::vector<Event> events) {
  if (run.commit_error) throw *run.commit_error;
  // The ids the store will give them: the commit checks the version they were made at.
  std::int64_t id = run.thread.version();
  for (Event& event : events) event.id = ++id;
  queue_append(run, events, true);
  const std::vector<Event>& queued = queued_appends_.back().events;
  run.thread.events.insert(run.thread.events.end(), queued.begin(), queued.end());
  return queued;
}

std::vector<Event> LuaRuntime::take_appended(Run& run) {
  if (run.append_error) {
    Error error = std::move(*run.append_error);
    run.append_error.reset();
    throw error;
  }
  if (!run.appended) throw Error(ErrorCode::internal, "a step continued without its append");
  std::vector<Event> events = std::move(*run.appended);
  run.appended.reset();
  return events;
}

bool LuaRuntime::flush_appends(StoreLock lock, std::size_t max_records) {
  if (queued_appends_.empty() && queued_calls_.empty()) {
    request_flush();
    return true;
  }
  std::vector<QueuedAppend> queued;
  std::size_t taken = 0;
  for (std::size_t records = 0; taken < queued_appends_.size(); ++taken) {
    records += queued_appends_[taken].events.size();
    if (taken > 0 && records > max_records) break;
  }
  if (taken == queued_appends_.size()) {
    queued.swap(queued_appends_);
  } else {
    // A run's later appends wait behind its earlier ones: their expected versions count
    // those, and a refusal of those drops them (commit_refused).
    auto end = queued_appends_.begin() + static_cast<std::ptrdiff_t>(taken);
    queued.assign(std::make_move_iterator(queued_appends_.begin()), std::make_move_iterator(end));
    queued_appends_.erase(queued_appends_.begin(), end);
  }
  std::vector<CallRecord> calls;
  calls.swap(queued_calls_);
  // One batch item per run: its events in the order queued, checked against the version
  // its first one was made at. Only the last can be one the run waits for (it yielded).
  PendingCommit pending;
  std::vector<AppendBatchItem> batch;
  std::unordered_map<std::uint64_t, std::size_t> index;
  std::vector<std::size_t> item_in_batch(queued.size(), SIZE_MAX);  // to put them back
  for (std::size_t i = 0; i < queued.size(); ++i) {
    QueuedAppend& item = queued[i];
    Run* run = find_run(item.run_id);
    // Cancelled while it waited, or behind a refused commit: dropped unwritten.
    if (!run || run->commit_refused) continue;
    auto [found, added] = index.try_emplace(item.run_id, batch.size());
    item_in_batch[i] = found->second;
    if (added) {
      pending.shares.push_back({run->id, item.expected_version});
      batch.push_back({run->thread.id, item.expected_version, {}});
    }
    CommitShare& share = pending.shares[found->second];
    auto& events = batch[found->second].events;
    if (item.behind) share.behind += item.events.size();
    share.waits = share.waits || !item.behind;
    events.insert(events.end(), std::make_move_iterator(item.events.begin()),
                  std::make_move_iterator(item.events.end()));
  }
  if (lock == StoreLock::wait) {
    pending.results = services_.store->append_batch(batch, std::move(calls));
  } else {
    auto results = services_.store->try_append_batch(batch, calls);
    if (!results) {
      // Nothing was written: each item takes its events back, in its place in the queue.
      std::vector<std::size_t> taken(batch.size(), 0);
      std::vector<QueuedAppend> kept;
      for (std::size_t i = 0; i < queued.size(); ++i) {
        if (item_in_batch[i] == SIZE_MAX) continue;
        auto& from = batch[item_in_batch[i]].events;
        auto first = from.begin() + static_cast<std::ptrdiff_t>(taken[item_in_batch[i]]);
        auto count = static_cast<std::ptrdiff_t>(queued[i].events.size());
        std::move(first, first + count, queued[i].events.begin());
        taken[item_in_batch[i]] += queued[i].events.size();
        kept.push_back(std::move(queued[i]));
      }
      kept.insert(kept.end(), std::make_move_iterator(queued_appends_.begin()),
                  std::make_move_iterator(queued_appends_.end()));
      queued_appends_ = std::move(kept);
      calls.insert(calls.end(), std::make_move_iterator(queued_calls_.begin()),
                   std::make_move_iterator(queued_calls_.end()));
      queued_calls_ = std::move(calls);
      request_flush();  // what is committed already (a launch that did not wait) goes on
      retry_commit_later();
      return false;
    }
    pending.results = std::move(*results);
  }
  commits_refused_ = 0;
  for (std::size_t i = 0; i < pending.shares.size(); ++i)
    if (std::holds_alternative<Error>(pending.results[i]))
      if (Run* run = find_run(pending.shares[i].run_id)) run->commit_refused = true;
  if (syncer_) {
    in_commit_.push_back(std::move(pending));
    request_flush();
    return true;
  }
  apply_commit(pending);
  return true;
}

void LuaRuntime::retry_commit_later() {
  // The pace of SQLite's own busy handler (it sleeps 1, 2, 5, 10 ... ms between tries),
  // up to 50 ms; a pump tries again anyway, at its next turn.
  static constexpr int kRetryDelaysMs[] = {1, 2, 5, 10, 20, 50};
  constexpr int kLastDelay = static_cast<int>(std::size(kRetryDelaysMs)) - 1;
  auto delay = std::chrono::milliseconds(kRetryDelaysMs[std::min(commits_refused_, kLastDelay)]);
  commits_refused_ = std::min(commits_refused_ + 1, kLastDelay);
  auto now = Clock::now();
  if (!services_.loop || now < commit_retry_at_) return;  // a timer is set already
  commit_retry_at_ = now + delay;
  // The timer only ends the loop's wait: the turn after it (run_ready) commits.
  services_.loop->after(delay, [] {});
}

// Asks the syncer for one flush covering every commit not yet asked for.
void LuaRuntime::request_flush() {
  if (!syncer_ || in_commit_.empty() || in_commit_.back().number != 0) return;
  std::uint64_t number = syncer_->submit();
  for (auto it = in_commit_.rbegin(); it != in_commit_.rend() && it->number == 0; ++it)
    it->number = number;
}

void LuaRuntime::apply_commits(std::optional<Clock::time_point> deadline) {
  if (!syncer_) return;
  for (auto& flushed : syncer_->take_synced()) synced_flushes_.push_back(std::move(flushed));
  // A callback of apply_commit may drain the commits (a cancel) and so call this again:
  // the inner call goes on from where the outer one was, as both take each commit off
  // in_commit_ before applying it. Flushes finish in the order they were asked for; one
  // covers every commit asked for with it. Past `deadline` the rest wait for the next call
  // (a frame that launched thousands of threads has that many launches to report).
  for (bool applied = false; !synced_flushes_.empty();) {
    if (applied && deadline && Clock::now() >= *deadline) return;
    const std::uint64_t number = synced_flushes_.front().first;
    if (in_commit_.empty() || in_commit_.front().number != number) {
      if (!in_commit_.empty() && in_commit_.front().number != 0 &&
          in_commit_.front().number < number)
        throw Error(ErrorCode::internal, "group commit flushes came back out of order");
      synced_flushes_.pop_front();  // every commit it covered is applied
      continue;
    }
    PendingCommit pending = std::move(in_commit_.front());
    in_commit_.pop_front();
    if (const std::optional<Error>& error = synced_flushes_.front().second)
      for (auto& result : pending.results)  // committed but not known to be on disk
        if (std::holds_alternative<AppendResult>(result)) result = *error;
    apply_commit(pending);
    applied = true;
  }
}

void LuaRuntime::drain_commits() {
  flush_appends(StoreLock::wait);
  if (!syncer_) return;
  syncer_->wait_idle();
  apply_commits();
}

// Runs are not finished or failed here (this also runs inside append(), under a caller
// that holds the run): they are scheduled, or queued for finish_committed(). Every run takes
// its share first, and only then are the events reported: the callbacks may cancel any run
// of the commit, and that cancel must find the run's thread as stored.
void LuaRuntime::apply_commit(const PendingCommit& pending) {
  auto& results = pending.results;
  for (std::size_t i = 0; i < pending.shares.size(); ++i) {
    const CommitShare& share = pending.shares[i];
    Run* found = find_run(share.run_id);
    if (!found) continue;  // ended (cancelled) while its events were being written
    Run& run = *found;
    if (auto* error = std::get_if<Error>(&results[i])) {
      if (error->code() == ErrorCode::conflict) run.lost_thread = true;
      // What the run appended behind was never acknowledged: forget it, and what it queued
      // since (made on top of it; flush_appends kept it out of every commit meanwhile).
      // Nothing of the run waits for a commit now: a step that catches the error and ends
      // must not wait for these events.
      run.thread.events.resize(static_cast<std::size_t>(share.expected_version));
      std::erase_if(queued_appends_,
                    [&](const QueuedAppend& item) { return item.run_id == run.id; });
      run.uncommitted_events = 0;
      run.commit_refused = false;
      if (share.waits) {
        run.appending = false;
        run.append_error = *error;  // thrown by the continuation's take_appended
        schedule(run);
      } else if (run.finishing) {
        ended_runs_.push_back({run.id, *error});
      } else {
        // The run went on (an LLM call, a host tool): stop it; resume() fails it.
        run.commit_error = *error;
        if (run.pending_call && services_.provider) services_.provider->cancel(run.pending_call);
        run.pending_call = 0;
        schedule(run);
      }
      continue;
    }
    const auto& stored = std::get<AppendResult>(results[i]).events;
    run.uncommitted_events -= static_cast<std::int64_t>(stored.size());
    std::size_t behind = std::min(share.behind, stored.size());
    // Behind events sit in thread.events already, maybe followed by later ones.
    std::size_t first = static_cast<std::size_t>(share.expected_version);
    if (share.waits) {
      run.thread.events.insert(
          run.thread.events.begin() + static_cast<std::ptrdiff_t>(first + behind),
          stored.begin() + static_cast<std::ptrdiff_t>(behind), stored.end());
      run.appending = false;
      run.appended =
          std::vector<Event>(stored.begin() + static_cast<std::ptrdiff_t>(behind), stored.end());
      schedule(run);
    }
    run.durable_events = first + stored.size();  // now durable: the host hears of them below
  }
  for (std::size_t i = 0; i < pending.shares.size(); ++i) {
    if (!std::holds_alternative<AppendResult>(results[i])) continue;
    const std::uint64_t run_id = pending.shares[i].run_id;
    report_durable_events(run_id);
    Run* run = find_run(run_id);  // a callback may have ended it
    if (run && run->finishing && run->uncommitted_events == 0)
      ended_runs_.push_back({run->id, run->finish_error});
  }
}

void LuaRuntime::finish_committed(std::optional<Clock::time_point> deadline) {
  // The callbacks may end more runs (a cancel drains the commits): those queue behind.
  std::vector<std::pair<std::uint64_t, std::optional<Error>>> ended;
  ended.swap(ended_runs_);
  auto next = ended.begin();
  for (bool finished = false; next != ended.end(); ++next) {
    if (finished && deadline && Clock::now() >= *deadline) break;
    if (Run* run = find_run(next->first)) {
      finish(*run, next->second);
      finished = true;
    }
  }
  ended_runs_.insert(ended_runs_.begin(), std::make_move_iterator(next),
                     std::make_move_iterator(ended.end()));
}

std::vector<Event> LuaRuntime::append(Run& run, std::vector<Event> events) {
  // What this run (or any) appended behind goes first: this append's compare-and-swap
  // counts those events.
  drain_commits();
  if (run.commit_error) throw *run.commit_error;
  for (Event& event : events)
    if (event.version.empty()) event.version = run.agent.version;
  AppendResult result;
  try {
    result = services_.store->append(run.thread.id, run.thread.version(), std::move(events));
  } catch (const Error& error) {
    // Only this run's own lost compare-and-swap means the thread moved on without it; a
    // conflict the agent caused elsewhere (luagent.threads) fails the step like any error.
    if (error.code() == ErrorCode::conflict) run.lost_thread = true;
    throw;
  }
  run.thread.events.insert(run.thread.events.end(), result.events.begin(), result.events.end());
  run.durable_events = run.thread.events.size();
  report_durable_events(run.id);
  return result.events;
}

void LuaRuntime::start_llm_call(Run& run, llm::Request request, llm::ChunkCallback on_chunk) {
  if (!services_.provider)
    throw Error(ErrorCode::config,
                "no LLM provider is configured (set LUAGENT_PROVIDER or "
                "provider = ... in luagent.config.lua)");
  if (run.pending_call) throw Error(ErrorCode::internal, "a run has two LLM calls in flight");
  if (services_.limits.llm_calls_per_step > 0 &&
      ++run.llm_calls > services_.limits.llm_calls_per_step)
    throw Error(ErrorCode::limit, "the step reached its limit of " +
                                      std::to_string(services_.limits.llm_calls_per_step) +
                                      " LLM call(s) (llm_calls_per_step)");
  std::uint64_t run_id = run.id;
  if (run.callbacks.on_chunk && request.stream) {  // streamed text also reaches Host::updates()
    on_chunk = [this, run_id, inner = std::move(on_chunk)](const llm::StreamChunk& chunk) {
      if (inner) inner(chunk);
      Run* found = find_run(run_id);
      if (found && !chunk.text_delta.empty()) report_chunk(*found, chunk.text_delta);
    };
  }
  run.call_started_version = run.thread.version();
  run.pending_call = services_.provider->start(std::move(request), std::move(on_chunk),
                                               [this, run_id](llm::Outcome outcome) {
                                                 auto found = runs_.find(run_id);
                                                 if (found == runs_.end())
                                                   return;  // the run was cancelled meanwhile
                                                 Run& run = *found->second;
                                                 run.pending_call = 0;
                                                 run.outcome = std::move(outcome);
                                                 schedule(run);
                                               });
}

void LuaRuntime::record_call(Run& run, const llm::Outcome& outcome, nlohmann::json extra) {
  // Provenance: what was asked, of which model, what came back, at what cost. Filled in
  // place: an initializer list would build and take apart a pair per field, every call.
  const auto& trace = outcome.trace;
  nlohmann::json record = nlohmann::json::object();
  auto& fields = record.get_ref<nlohmann::json::object_t&>();
  fields.emplace("provider", trace.provider);
  fields.emplace("model", trace.model);
  fields.emplace("request_bytes", trace.request_bytes);
  fields.emplace("latency_ms", trace.latency_ms);
  fields.emplace("attempts", trace.attempts);
  fields.emplace("input_tokens", trace.usage.input_tokens);
  fields.emplace("output_tokens", trace.usage.output_tokens);
  fields.emplace("cached_tokens", trace.usage.cached_tokens);
  fields.emplace("reasoning_tokens", trace.usage.reasoning_tokens);
  fields.emplace("cost_usd", trace.cost_usd);
  fields.emplace("finish_reason", trace.finish_reason);
  fields.emplace("request", trace.request_body);
  fields.emplace("ok", outcome.ok());
  if (!outcome.ok())
    fields.emplace("error", outcome.error().what());
  else
    fields.emplace("response", outcome.reply().text);
  if (extra.is_object())
    for (auto& [key, value] : extra.get_ref<nlohmann::json::object_t&>())
      fields.insert_or_assign(key, std::move(value));
  // Written with the turn's group commit, beside the event the reply leads to.
  queued_calls_.push_back({run.thread.id, run.call_started_version, std::move(record)});
}

std::string LuaRuntime::read_agent_file(std::string_view relative, std::string* version) {
  const Run* run = current_run();
  std::filesystem::path dir = run ? run->agent.dir : loading_dir_;
  const AgentFiles* files = run ? run->files.get() : loading_files_.get();
  if (dir.empty())
    throw Error(ErrorCode::usage, "files can only be read while an agent loads or runs");
  std::filesystem::path rel(relative);
  if (rel.is_absolute() || relative.empty())
    throw Error(ErrorCode::forbidden,
                "'" + std::string(relative) + "' must be a path inside the agent's folder");
  std::string normal = rel.lexically_normal().generic_string();
  if (normal == ".." || normal.rfind("../", 0) == 0)
    throw Error(ErrorCode::forbidden,
                "'" + std::string(relative) + "' is outside the agent's folder");
  // The version's own copy first: what this step started with.
  if (files) {
    if (auto found = files->files.find(normal); found != files->files.end()) {
      if (version) *version = found->second.hash;
      return found->second.text;
    }
  }
  if (is_agent_source(rel))
    throw Error(ErrorCode::not_found,
                "no file '" + std::string(relative) + "' in the agent's folder " + dir.string());
  std::error_code ec;
  auto full = std::filesystem::weakly_canonical(dir / rel, ec);
  auto base = std::filesystem::weakly_canonical(dir, ec);
  auto [mismatch, _] = std::mismatch(base.begin(), base.end(), full.begin(), full.end());
  if (ec || mismatch != base.end())
    throw Error(ErrorCode::forbidden,
                "'" + std::string(relative) + "' is outside the agent's folder");
  std::string text = read_file(full, kMaxSourceBytes);
  if (version) *version = sha256_hex(text, 16);
  return text;
}

nlohmann::json LuaRuntime::load_config(const std::filesystem::path& file) {
  std::string source = read_file(file, 1024 * 1024);
  lua_State* L = L_;
  std::string chunkname = "@" + file.filename().string();
  if (luaL_loadbufferx(L, source.data(), source.size(), chunkname.c_str(), "t") != LUA_OK) {
    Error error = located_error(ErrorCode::config, lua_tostring(L, -1));
    lua_pop(L, 1);
    throw error;
  }
  // The config sets globals (provider = "replay") or returns a table.
  push_run_environment();
  lua_pushvalue(L, -1);
  lua_setupvalue(L, -3, 1);
  lua_insert(L, -2);
  lua_pushcfunction(L, pcall_traceback);
  lua_insert(L, -2);
  if (pcall_limited(0, 1, -2) != LUA_OK) {
    Error error = error_from_lua(L, -1);
    lua_pop(L, 3);
    throw Error(ErrorCode::config, error.message(), error.source(), error.line());
  }
  nlohmann::json config;
  try {
    HostCallScope scope(L);
    if (lua_type(L, -1) == LUA_TTABLE) {
      config = to_json(L, -1, "config");
    } else if (!lua_isnil(L, -1)) {
      throw Error(ErrorCode::config, "the config must set globals or return a table, not a " +
                                         std::string(luaL_typename(L, -1)));
    } else {
      lua_pushnil(L);
      lua_setfield(L, -4, "_G");
      for (const char* name : kSafeLibraries) {
        lua_pushnil(L);
        lua_setfield(L, -4, name);
      }
      config = to_json(L, -3, "config");
    }
  } catch (const Error& e) {
    lua_pop(L, 3);
    throw Error(ErrorCode::config, e.message(), file.string());
  }
  lua_pop(L, 3);
  // `return { "replay" }` holds no setting names: read as none, it left the provider unset.
  if (config.is_array() && !config.empty())
    throw Error(ErrorCode::config, file.string() +
                                       ": the config returned a list; set globals "
                                       "(provider = \"...\") or return { name = value, ... }");
  if (!config.is_object()) config = nlohmann::json::object();
  return config;
}

}  // namespace luagent::lua

namespace luagent {
std::unique_ptr<AgentRuntime> make_lua_runtime(RuntimeServices services) {
  return std::make_unique<lua::LuaRuntime>(std::move(services));
}
}  // namespace luagent

namespace luagent::lua {

std::string LuaRuntime::render_context(const Thread& thread) {
  lua_State* L = L_;
  // However this ends (push_json refuses a Thread nested past the depth limit), the main
  // state's stack is left as it was: each refused call used to leave its pushes there, and
  // after some thousands the state had no stack left for anything (a stack overflow).
  StackTopRestorer restore(L);
  lua_pushcfunction(L, lua_require);
  lua_pushliteral(L, "luagent.context");
  if (pcall_limited(1, 1, 0) != LUA_OK) throw error_from_lua(L, -1);
  lua_getfield(L, -1, "xml");
  {
    HostCallScope scope(L);
    nlohmann::json events = nlohmann::json::array();
    for (const Event& event : thread.events) {
      nlohmann::json json = luagent::to_json(event);
      json.erase("version");
      events.push_back(std::move(json));
    }
    push_json(L, events, 2);  // the list and each event around the event's own data
  }
  if (pcall_limited(1, 1, 0) != LUA_OK) throw error_from_lua(L, -1);
  return lua_tostring(L, -1) ? lua_tostring(L, -1) : "";
}

}  // namespace luagent::lua
