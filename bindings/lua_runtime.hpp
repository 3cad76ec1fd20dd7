// The Lua runtime: one lua_State per host, one coroutine per agent run, a fresh
// restricted environment per run. Bindings (lua_thread.cpp, lua_llm.cpp, ...) reach
// the runtime through LuaRuntime::from(L) and the run in progress through current_run().
#pragma once

#include <lua.hpp>

#include <cstdint>
#include <ctime>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent_runtime.hpp"
#include "commit_syncer.hpp"
#include "lua_heap.hpp"

namespace luagent::llm {
class CompiledSchema;
}

namespace luagent::lua {

/// The text files of one agent version, read once when it loads: every step of that
/// version reads its prompts from here, so a save on disk never changes a step in flight.
struct AgentFiles {
  struct File {
    std::string text;
    std::string hash;
  };
  std::map<std::string, File> files;  // by path relative to the agent folder
};

/// One agent step in flight: a coroutine running the agent function on a thread.
struct Run {
  std::uint64_t id = 0;
  AgentInfo agent;
  std::shared_ptr<const AgentFiles> files;
  Thread thread;
  RunCallbacks callbacks;
  lua_State* coroutine = nullptr;
  int coroutine_ref = LUA_NOREF;
  int env_ref = LUA_NOREF;
  int calls_ref = LUA_NOREF;  // weak-keyed table: pushed Lua table -> event id
  bool awaiting = false;      // thread:await was called; the step must end
  // The calls whose tool thread:execute has started and not yet recorded (a tool may call
  // thread:execute itself, or run in a coroutine that yields): event ids, innermost last.
  std::vector<std::int64_t> running_calls;
  bool lost_thread = false;  // an append lost its compare-and-swap: another writer owns it
  std::int64_t step_start_version = 0;  // events the thread had when this step began
  // Set while the run waits for the host (an LLM call); taken by the continuation.
  std::optional<llm::Outcome> outcome;
  llm::CallId pending_call = 0;
  std::int64_t call_started_version = 0;
  int stream_ref = LUA_NOREF;  // the Lua stream callback of the call in flight
  /// The compiled schema of the llm.json call in flight, for its continuation.
  std::shared_ptr<const llm::CompiledSchema> pending_schema;
  // Per-step CPU accounting for the limit hook.
  std::int64_t cpu_used_ns = 0;
  std::int64_t slice_started_ns = 0;
  bool killed = false;
  bool out_of_memory = false;  // crossed limits.memory_mb: the step ends at its next hook
  int llm_calls = 0;           // started in this step (limits.llm_calls_per_step)
  // Group commit: the events this run waits to see committed, then what came of them.
  // Events appended behind (append_behind) are in thread.events already; until the turn
  // commits them they are the agent's own view, not yet acknowledged to anyone.
  bool appending = false;
  bool finishing = false;               // the step ended; the run finishes once its events commit
  std::int64_t uncommitted_events = 0;  // queued or being written
  std::optional<Error> finish_error;
  std::optional<Error> commit_error;  // what it appended behind failed to commit
  // The store refused a commit of its events (known before that commit is flushed and
  // applied): nothing it queued after may be committed until the refusal is applied, which
  // forgets those events. Their expected version assumed the refused events, and could
  // match by chance when another writer (a cancel) added as many events.
  bool commit_refused = false;
  std::optional<std::vector<Event>> appended;
  std::optional<Error> append_error;
  // thread.events[0, durable_events) are durable; the first reported_events of them have
  // been reported through callbacks.on_event (see LuaRuntime::report_durable_events).
  std::size_t durable_events = 0;
  std::size_t reported_events = 0;
  // Streamed text (callbacks.on_chunk) that came while events before it were not yet
  // reported: each waits for the events the thread held when it came (see
  // LuaRuntime::report_chunk), so that the host hears of both in the order they happened.
  std::deque<std::pair<std::size_t, std::string>> held_chunks;
  // Set while the run waits for an asynchronous host tool (luagent.host); the answer
  // lands in host_result or host_error and the run is scheduled.
  bool waiting_host = false;
  // The run's asynchronous host calls so far: an answer names the call it answers, so the
  // answer of a call that failed meanwhile (its tool threw) never lands in a later one.
  std::uint64_t host_calls = 0;
  std::optional<nlohmann::json> host_result;
  std::optional<std::string> host_error;
};

/// What stat(2) (following links) said of a path, or that there was nothing there.
struct FileStat {
  bool present = false;
  std::uint64_t device = 0, inode = 0, mode = 0, size = 0;
  std::int64_t modified_ns = 0, changed_ns = 0;
  bool operator==(const FileStat&) const = default;
};
/// One path of an agent folder and its stat when the folder was walked.
struct PathStamp {
  std::filesystem::path path;
  FileStat stat;
  bool source = false;  // an agent source file (else a directory or a link)
  bool operator==(const PathStamp&) const = default;
};
/// The agent folder as its stats describe it when it was read: the folder and every
/// directory under it (adding, removing or renaming an entry changes a directory's
/// times), every link (a dangling one may get a target), every source file (an edit in
/// place changes its times, a save by rename its inode). While these are unchanged the
/// listing is too, so checking them needs no directory read (see LuaRuntime::load_agent).
struct FolderShape {
  std::vector<PathStamp> stamps;   // the folder itself first, then in listing order
  std::int64_t taken_at = 0;       // when the walk began (CLOCK_REALTIME, nanoseconds)
  std::int64_t newest_change = 0;  // the newest time among the stamps, nanoseconds
};

class LuaRuntime final : public AgentRuntime {
 public:
  explicit LuaRuntime(RuntimeServices services);
  ~LuaRuntime() override;

  AgentInfo load_agent(const std::filesystem::path& dir) override;
  void start_step(const AgentInfo& agent, Thread thread, RunCallbacks callbacks,
                  std::size_t unflushed_events = 0) override;
  std::size_t runs_in_flight() const override { return runs_.size(); }
  bool has_step_in_flight(const std::string& thread_id) const override;
  std::size_t run_ready(std::optional<Clock::time_point> deadline) override;
  bool has_ready() const override {
    // Appends left queued are ready unless another process's lock refused them (a timer
    // retries those).
    return !ready_.empty() || !synced_flushes_.empty() || !ended_runs_.empty() ||
           (!queued_appends_.empty() && commits_refused_ == 0) ||
           (syncer_ && syncer_->has_synced());
  }
  bool cancel_run(const std::string& thread_id, const std::string& reason) override;
  /// Queues `run` to continue (with no values) at the next run_ready().
  void schedule(Run& run) { ready_.push_back({run.id, 0}); }
  /// True (and forgotten) when `co` was paused by the time-slice hook.
  bool take_hook_yield(lua_State* co);
  void set_provider(llm::Provider* provider) override { services_.provider = provider; }
  void set_store(Store* store) override;
  std::string render_context(const Thread& thread) override;
  nlohmann::json load_config(const std::filesystem::path& file) override;
  std::unique_ptr<llm::Provider> make_script_provider(const std::filesystem::path& file) override;
  std::filesystem::path stdlib_dir() const override { return stdlib_dir_; }
  void reload_stdlib() override;

  static LuaRuntime& from(lua_State* L);
  lua_State* state() const { return L_; }
  /// lua_pcall on the main state under the CPU limit (limits.step_cpu_ms), for agent code
  /// that runs outside a run's coroutine — an agent file's top level when it loads, a
  /// stream callback — where an endless loop would otherwise stall the host. The time
  /// counts toward `charged`'s step when given (a kill there fails that step too), toward
  /// the step in progress when called from inside one, else toward this call alone.
  int pcall_limited(int nargs, int nresults, int message_handler, Run* charged = nullptr);
  const RuntimeServices& services() const { return services_; }
  /// Pushes the environment agent code loading or running now has: the run's, the loading
  /// agent's, or the base one.
  void push_requiring_environment(lua_State* L) const;
  /// The run whose coroutine is executing now; nullptr outside agent code, and while an
  /// agent's file loads: a tool that launches another agent loads it inside the calling
  /// step, and that agent's top level is no run's (its folder and environment are its own).
  Run* current_run() const { return loading_files_ ? nullptr : current_; }
  Run& require_run(const char* function) const;
  /// Throws usage (naming `what`) unless the step running on `L` can suspend here: a call
  /// the step must wait for (an LLM call, an asynchronous tool) is refused before it starts
  /// where Lua cannot yield, or its answer would come to a step that went on without it.
  void require_wait(lua_State* L, const std::string& what) const;
  /// The prelude's count of coroutines resumed where Lua cannot yield, now running.
  void hold_yields(int delta) { held_yields_ += delta; }
  /// The run with `id`, or nullptr once it has ended.
  Run* find_run(std::uint64_t id) const {
    auto found = runs_.find(id);
    return found == runs_.end() ? nullptr : found->second.get();
  }

  /// Appends for a Lua body, then runs `then` (which takes the stored events with
  /// take_appended). Where the coroutine can yield, the events join the loop turn's group
  /// commit: one transaction for every run's appends, so N runs pay one fsync, and the
  /// body continues only once its events are durable. Elsewhere it appends at once.
  int append_then(lua_State* L, Run& run, std::vector<Event> events, int (*then)(lua_State*));
  /// Appends without waiting: the events (with their ids) join the run's thread now and
  /// the loop turn's group commit makes them durable. For events nothing outside the
  /// run may act on before the commit (the run's own record of what the model said, a
  /// tool's result): the updates and callbacks about them come after the commit, and a
  /// failed commit fails the run. Outside a run's own coroutine it appends at once.
  std::vector<Event> append_behind(Run& run, std::vector<Event> events);
  /// The events append_then stored for `run`; throws the error their commit met.
  std::vector<Event> take_appended(Run& run);
  /// Commits the queued appends (and LLM traces) in one transaction: all of them, or the
  /// first ones up to `max_records` events (one append at least; the rest wait for the
  /// next call, and has_ready() says so). Where the store can flush later, the flush
  /// happens on the syncer's thread and apply_commits() takes the results once it is
  /// done; otherwise they are applied at once. The loop's own turns pass
  /// `StoreLock::try_only`: while another process holds the store's write lock,
  /// everything stays queued (false is returned) and a timer wakes the loop to try again,
  /// so that neither a pump nor the loop's I/O waits for that process.
  enum class StoreLock { wait, try_only };
  bool flush_appends(StoreLock lock, std::size_t max_records = SIZE_MAX);
  /// Takes the durable commits: reports their events, schedules the runs that waited for
  /// them and queues the ended steps for finish_committed(). With a deadline, stops once
  /// it has passed (after one commit at least) and goes on at the next call.
  void apply_commits(std::optional<Clock::time_point> deadline = std::nullopt);
  /// Flushes, then waits for every commit in flight and applies it (a synchronous
  /// append's compare-and-swap must count the events before it).
  void drain_commits();
  /// Appends events to the run's thread (compare-and-swap) and reports them.
  std::vector<Event> append(Run& run, std::vector<Event> events);
  /// Starts an LLM call for the current run; the run resumes when it completes, with the
  /// outcome in run.outcome. `on_chunk` sees streamed pieces.
  void start_llm_call(Run& run, llm::Request request, llm::ChunkCallback on_chunk = nullptr);
  /// Stores a finished call's trace (plus `extra`: repairs, validation error) in the thread.
  void record_call(Run& run, const llm::Outcome& outcome, nlohmann::json extra = {});
  /// Reads a file of the current agent's folder (or, outside a run, of the agent
  /// being loaded). Returns its text; refuses paths that leave the folder.
  std::string read_agent_file(std::string_view relative, std::string* version = nullptr);
  void log(std::string_view level, std::string_view message) const;
  /// Pushes a fresh restricted environment (what a run gets) for host-side Lua files.
  void push_sandbox_environment() { push_run_environment(); }

 private:
  struct LoadedAgent {
    AgentInfo info;
    std::shared_ptr<const AgentFiles> files;
    int chunk_ref = LUA_NOREF;   // agent.lua compiled once, run once per run (a registry ref)
    FolderShape shape;           // of the folder when it loaded
    std::int64_t read_at = 0;    // when the files were read (CLOCK_REALTIME, nanoseconds)
    std::string stdlib_version;  // the stdlib's, which its version includes
  };
  /// A requested agent path as load_agent last canonicalised it, and the inode it named.
  struct ResolvedFolder {
    std::filesystem::path canonical;
    std::uint64_t device = 0, inode = 0;
  };

  void open_state();
  void build_base_environment();
  void push_run_environment();
  friend class ScriptProvider;
  void resume(Run& run, int nargs);
  /// Ends the run: retires it, then reports its end (callbacks.on_finished). Nothing when
  /// it has ended already (a callback up the stack cancelled it).
  void finish(Run& run, const std::optional<Error>& error);
  /// Takes the run out of runs_ into retired_runs_ and releases its Lua references;
  /// nullptr when it is not in flight.
  Run* retire(std::uint64_t run_id);
  /// Reports the run's durable events not yet reported, in order. A callback may end the
  /// run (a cancel) or report some itself (a cancel reports what comes before it): the run
  /// is looked up again, and its count read again, after every call.
  void report_durable_events(std::uint64_t run_id);
  /// Reports a piece of streamed text now, or holds it until the events the run had
  /// appended before it are reported.
  void report_chunk(Run& run, std::string_view text);
  /// Reports the held chunks whose events are reported; every one of them when `all` (the
  /// run ends: events refused by a failed commit never will be).
  void release_chunks(std::uint64_t run_id, bool all = false);
  void fail_run(Run& run, const Error& error);
  std::filesystem::path find_stdlib() const;
  const std::string& stdlib_version();
  const LoadedAgent& loaded_agent(const AgentInfo& agent);

  RuntimeServices services_;
  lua_State* L_ = nullptr;
  std::filesystem::path stdlib_dir_;
  std::optional<std::string> stdlib_version_;  // hashed on first use and on each reload
  std::map<std::filesystem::path, LoadedAgent> agents_;
  std::map<std::string, ResolvedFolder> resolved_folders_;  // by the requested path's text
  std::unordered_map<std::uint64_t, std::unique_ptr<Run>> runs_;
  // Runs that ended, kept until run_ready() begins or ends, when no callback is on the
  // stack: a callback may end the run whose event it is told of (Host::cancel from
  // on_event), and the code that called it, and the callback itself, still hold the run
  // and its thread.
  std::vector<std::unique_ptr<Run>> retired_runs_;
  std::uint64_t next_run_id_ = 1;
  struct QueuedAppend {
    std::uint64_t run_id;
    std::int64_t expected_version;
    std::vector<Event> events;
    bool behind;  // append_behind: already in the run's thread; the run did not wait
  };
  std::vector<QueuedAppend> queued_appends_;
  std::vector<CallRecord> queued_calls_;  // LLM traces, written with the next commit
  void queue_append(Run& run, std::vector<Event> events, bool behind);
  std::vector<Event> queue_behind(Run& run, std::vector<Event> events);  // append_behind's work
  // A run's part of a group commit: where its events start and how they were appended.
  struct CommitShare {
    std::uint64_t run_id;
    std::int64_t expected_version;
    std::size_t behind = 0;  // leading events already in the run's thread.events
    bool waits = false;      // ends with append_then events the run is suspended on
  };
  struct PendingCommit {
    std::uint64_t number = 0;  // the syncer's flush number; 0: not asked for yet
    std::vector<CommitShare> shares;
    std::vector<std::variant<AppendResult, Error>> results;
  };
  void apply_commit(const PendingCommit& pending);
  void report_when_flushed(Run& run, std::size_t count);
  void request_flush();
  std::unique_ptr<CommitSyncer> syncer_;  // null: commits are durable when they return
  std::deque<PendingCommit> in_commit_;   // committed, waiting for their flush, oldest first
  // Flushes taken from the syncer whose commits are not all applied yet, oldest first: a
  // member, so an apply_commits() called from inside a callback of another goes on with them.
  std::deque<std::pair<std::uint64_t, std::optional<Error>>> synced_flushes_;
  // Consecutive commits refused for another process's write lock, and when the timer set
  // to wake the loop for the next try is due.
  int commits_refused_ = 0;
  Clock::time_point commit_retry_at_{};
  void retry_commit_later();
  void end_step(Run& run, std::optional<Error> error);
  /// Events and traces waiting for the next commit.
  std::size_t queued_records() const;
  // What a commit costs per record, measured (a moving average), and how many records
  // a step adds, roughly: run_ready() keeps that much of its budget for the commit.
  double commit_ns_per_record_ = 20000;
  static constexpr std::size_t kRecordsPerStep = 3;
  /// Finishes the runs whose ended step the last commit made durable (or failed). With a
  /// deadline, stops once it has passed (after one run at least) and goes on at the next
  /// call: each end is reported to the caller (step lock, rendering, updates).
  void finish_committed(std::optional<Clock::time_point> deadline = std::nullopt);
  std::vector<std::pair<std::uint64_t, std::optional<Error>>> ended_runs_;  // for finish_committed
  Run* current_ = nullptr;
  // pcall_limited's own account while it runs code no run is charged for.
  bool unowned_code_limited_ = false;
  bool unowned_code_killed_ = false;
  std::int64_t unowned_code_started_ns_ = 0;
  // Scheduling: runs to resume (id, number of arguments on their stack), the wall-clock
  // end of the current slice (0: no slicing), and the coroutine the hook paused last.
  std::deque<std::pair<std::uint64_t, int>> ready_;
  std::int64_t slice_deadline_ns_ = 0;
  lua_State* hook_yielded_ = nullptr;
  int held_yields_ = 0;                // see hold_yields
  std::filesystem::path loading_dir_;  // the agent folder while its chunk loads
  std::shared_ptr<const AgentFiles> loading_files_;
  int loading_env_ref_ = LUA_NOREF;  // the environment of the agent chunk while it loads
  std::size_t memory_limit_ = 0;
  std::size_t memory_used_ = 0;
  // The last refused allocation that marked its step out of memory. Lua answers a refusal
  // with an emergency collection and the same request again: if that succeeds, the step
  // was over the limit with garbage only, and the mark is taken back.
  struct RefusedAllocation {
    Run* run = nullptr;
    void* ptr = nullptr;
    std::size_t old_size = 0, new_size = 0;
  } refused_;
  LuaHeap lua_heap_;  // serves the Lua state (limited_alloc); closed with it in ~LuaRuntime
  // The collector is paced here, not by allocations (see collect_garbage): bytes allocated
  // since it last caught up (and by the running step since the count hook last looked: a
  // step making garbage fast pays for it from the hook), the heap size the next cycle
  // waits for, and the longest step of the last two cycles (see gc_step).
  std::size_t allocated_since_gc_ = 0;
  std::size_t allocated_since_look_ = 0;  // by the running step since the hook last looked
  std::size_t gc_pause_until_ = 0;
  // Until two cycles have shown how long the atomic step takes, assume 2 ms (with 500
  // suspended runs here it takes 0.8-1.8 ms, mostly re-reading their stacks): a pump begins
  // it only with that much room left.
  static constexpr std::int64_t kGcAtomicStepGuessNs = 2'000'000;
  std::int64_t gc_step_max_ns_ = kGcAtomicStepGuessNs;
  std::int64_t gc_step_max_this_cycle_ns_ = 0;
  std::int64_t gc_step_max_last_cycle_ns_ = kGcAtomicStepGuessNs;
  static constexpr std::size_t kOverdueGcBytes = std::size_t{32} << 20;
  // A basic step of the collector is 2^kGcStepLog2 bytes' worth of work (Lua's stepsize:
  // some 800 objects marked or swept), so steps fit between other work in a pump; one is
  // owed per kGcStepBytes allocated, Lua's own pace.
  static constexpr int kGcStepLog2 = 7;
  static constexpr std::size_t kGcStepBytes = std::size_t{1} << kGcStepLog2;
  // A step that made this much since the count hook last looked pays for its garbage,
  // past its slice's end at least a basic step per kGcMakerPaceBytes unless the hook pauses
  // it there (see collect_garbage_made_by_step).
  static constexpr std::size_t kGcMakerBytes = std::size_t{32} << 10;
  static constexpr std::size_t kGcMakerPaceBytes = std::size_t{8} << 10;
  static constexpr std::size_t kGcMaxPauseBytes = std::size_t{8} << 20;
  bool gc_pausing();  // true between cycles (and nothing is owed then)
  bool gc_step();     // one basic step; true when it ended a cycle
  void collect_garbage(std::optional<Clock::time_point> deadline);
  bool collect_overdue_garbage();                         // true when it ran a collector step
  std::optional<Clock::time_point> overdue_gc_deadline_;  // of the pump that last paid
  void collect_garbage_made_by_step(std::size_t made, bool pausable);
  int host_depth_ = 0;  // >0 while C++ bodies run: the allocator does not fail there

  friend void* limited_alloc(void*, void*, size_t, size_t);
  friend void count_hook(lua_State*, lua_Debug*);
  friend const char* kill_past_cpu_limit(LuaRuntime&, lua_State*);
  friend void stop_c_call_past_cpu_limit(lua_State*);
  friend int lua_require(lua_State*);
  friend class HostCallScope;
  friend class AgentCodeScope;
  friend void check_memory_limit(lua_State*);
};

/// Marks C++ code that allocates Lua memory on behalf of the host (conversions in a
/// binding body): the memory limit applies to agent code, and a failing allocation
/// must never longjmp through C++ frames.
class HostCallScope {
 public:
  explicit HostCallScope(lua_State* L);
  ~HostCallScope();
  HostCallScope(const HostCallScope&) = delete;
  HostCallScope& operator=(const HostCallScope&) = delete;

 private:
  LuaRuntime& runtime_;
};

/// Agent code run (under lua_pcall) from inside a HostCallScope, as a module's top level
/// from require: the memory limit applies again until the scope ends.
class AgentCodeScope {
 public:
  explicit AgentCodeScope(lua_State* L);
  ~AgentCodeScope();
  AgentCodeScope(const AgentCodeScope&) = delete;
  AgentCodeScope& operator=(const AgentCodeScope&) = delete;

 private:
  LuaRuntime& runtime_;
  int host_depth_;
};

/// Throws Error(limit) once the state's Lua memory is past limits.memory_mb, or the
/// current step crossed it before, and marks the step so that it ends. Every guarded
/// binding call starts with it (a step that swallowed "not enough memory" with pcall
/// stores nothing more), and C++ that builds Lua values inside a HostCallScope
/// (json.decode, thread:events()), where the allocator never fails, checks as it goes.
void check_memory_limit(lua_State* L);

/// The most an agent's source or prompt file, a case file or a script model may hold.
inline constexpr std::size_t kMaxSourceBytes = 16 * 1024 * 1024;

/// Restores the stack top of a state the host drives from C++ (not from inside a Lua call)
/// however the scope ends: a conversion that throws (push_json refusing data nested past
/// the limit) must not leave its pushes behind, or thousands of refusals use up the stack.
class StackTopRestorer {
 public:
  explicit StackTopRestorer(lua_State* L) : L_(L), top_(lua_gettop(L)) {}
  ~StackTopRestorer() { lua_settop(L_, top_); }
  StackTopRestorer(const StackTopRestorer&) = delete;
  StackTopRestorer& operator=(const StackTopRestorer&) = delete;

 private:
  lua_State* L_;
  int top_;
};

/// Pushes a new table with weak keys (entries go when their key is collected).
void push_weak_keyed_table(lua_State* L);
/// Pushes the weak table the registry holds at `registry_key`, made on first use: weak
/// keys ("k", entries go with their key) or weak values ("v", with their value).
void push_registry_weak_table(lua_State* L, const void* registry_key, const char* mode = "k");

/// For a long C call the count hook cannot interrupt (a string pattern match): throws
/// Error(limit) once the running step, or limited code outside any step, has used its CPU,
/// marking the kill as the hook does so that a pcall cannot swallow it.
void stop_c_call_past_cpu_limit(lua_State* L);

/// Registers luaopen_luagent_<module> functions into package.preload-equivalents.
void register_builtin_modules(lua_State* L);

}  // namespace luagent::lua
