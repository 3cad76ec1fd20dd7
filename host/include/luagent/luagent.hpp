// The embedding API: an opaque Host that owns the store, the LLM provider and the
// agent runtime. It never exposes Lua.
//
// Threads: a Host belongs to the thread that constructed it. Every member function must
// be called on that thread, except post(), stop() and ToolReply's ok()/fail(), which any
// thread may call. A call from another thread throws Error(usage) and changes nothing;
// so does pump()/run()/run_until_idle() called from inside a callback: a tool, on_event,
// on_reload, HostConfig::log or a posted task.
// post() and stop() are calls on the Host object: the program keeps it alive until no
// other thread can make them (a task still queued when the Host goes is dropped unrun).
// A ToolReply needs no such care: answered after its Host is gone, it does nothing.
// Destroy the Host on its thread outside its callbacks (or on another thread once its own
// no longer uses it): destroyed from inside one of its callbacks, it prints why to stderr
// and aborts, as carrying on would run the rest of the pump in freed memory.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "luagent/error.hpp"
#include "luagent/host_tool.hpp"
#include "luagent/thread.hpp"

namespace luagent {

// Fields are in DESIGN.md's order, so its example, {.agents_dir = ..., .store = ...},
// compiles (C++20 designated initializers must follow declaration order).
struct HostConfig {
  /// Where agent names resolve: DIR/NAME/agent.lua. A path to a folder always works.
  std::filesystem::path agents_dir = ".";
  /// Store URI: "sqlite:PATH" (default sqlite:.luagent/threads.db). One that does not exist
  /// yet is made by the first call that needs it (launch, after the agent has loaded), not
  /// by the Host's constructor.
  std::string store;
  /// luagent.config.lua to read (optional). Fields set here win over it.
  std::filesystem::path config_file;
  /// "replay", "script" (more with the HTTP providers). Empty: from config / environment.
  std::string provider;
  std::string model;
  std::filesystem::path cassette;  // replay: the cassette to serve
  std::filesystem::path script;    // script: the Lua model
  std::filesystem::path record;    // when set, every LLM call is appended to this cassette
  int step_cpu_ms = 0;             // 0: default (5000)
  std::size_t memory_mb = 0;       // 0: default (256)
  std::chrono::milliseconds replay_latency{0};  // delays every replay and script call
  /// Log lines from agents (print, luagent.log) and the host; default: stderr. A line whose
  /// call throws goes to stderr instead, and the host goes on.
  std::function<void(std::string_view level, std::string_view message)> log;
  /// Watch loaded agents' folders and stdlib/: a changed agent is reloaded while the host
  /// runs; new steps use it, steps in flight finish on their version. Off: every launch and
  /// resume reads the agent's folder again.
  bool watch = false;
  /// "inotify", "poll" (network filesystems) or empty: inotify where available. Env LUAGENT_WATCH.
  std::string watch_mode;
  std::chrono::milliseconds watch_poll_interval{100};
  /// A step fails once it starts more LLM calls than this (0: no limit); the dev, replay and
  /// eval commands use 1 to take exactly one decision.
  int llm_calls_per_step = 0;
  /// Where the Lua stdlib (luagent/*.lua) lives. Empty: LUAGENT_STDLIB, then next to the
  /// executable, then the build tree. An installed package fills it in for consumers.
#ifdef LUAGENT_INSTALLED_STDLIB
  std::filesystem::path stdlib_dir = LUAGENT_INSTALLED_STDLIB;
#else
  std::filesystem::path stdlib_dir;
#endif
  /// Collect updates() (set false when nobody reads them, so they never pile up).
  bool collect_updates = true;
  /// launch() and resume() return once their event is on disk: what they return is an
  /// acknowledgement (true, the default). false (sqlite stores): they return once it is
  /// committed, so a caller never waits for the disk (1-20 ms per call here); the event
  /// reaches the disk with the next group flush, and on_event / updates() report it only
  /// then, as they do the steps' own events. A crash before that flush loses the launch
  /// or the answer, which nobody was told was stored. For hosts that start many threads
  /// from a frame loop or a batch.
  bool launch_waits_for_disk = true;
  /// Take only `store` from config_file and make no LLM provider: for callers that read or
  /// edit stored threads and run no step (the CLI's show, threads, fork, cancel). They must
  /// find the store `run` wrote to, and a provider the file names (its key, its cassette)
  /// is none of their business.
  bool store_settings_only = false;
  /// Open the store only if it exists: a missing SQLite file or fs: folder is
  /// Error(not_found) naming it and nothing is created. For callers that read threads
  /// stored before, where a mistyped path made an empty store and "no thread".
  bool store_must_exist = false;
  /// Set by a command line that fills store, provider, model, cassette and agents_dir
  /// from its flags (--agents for agents_dir): a refused value of one is then named as
  /// the flag ("--store: ..."), as one from the environment is named by its variable and
  /// one from config_file by the file and its key.
  bool settings_from_flags = false;
};

/// What a reload of a watched agent (or of stdlib/) did; see Host::on_reload.
struct ReloadReport {
  std::string agent;  // the agent's name, or "stdlib"
  std::filesystem::path dir;
  bool ok = false;               // false: `error` says why, and previous_version keeps serving
  std::string version;           // the version serving now
  std::string previous_version;  // empty on the first load
  std::optional<Error> error;    // with the file and line where known
};

using ThreadId = std::string;

/// Something that changed, as updates() reports it.
struct Update {
  enum class Kind {
    event,      // an event was stored (`event`)
    paused,     // the step ended waiting for a human or an approval (`event` is the await)
    done,       // the thread finished
    failed,     // the step failed: `text` says why; `event` is the failed event, or the
                // last one known when none could be stored (the store failed, or another
                // process or Host wrote to the thread first)
    cancelled,  // cancel() ended it, here or in another process or Host (`event` is the
                // stored cancelled event)
    chunk,      // streamed model text (`text`)
  };
  Kind kind = Kind::event;
  ThreadId thread_id;
  Event event;
  std::string text;
};

/// How a resume answers a waiting thread.
struct Resume {
  Event event;  // approval {approved, comment}, human_response "text", or any typed event
  static Resume approve(std::string key = {});
  static Resume reject(std::string comment, std::string key = {});
  static Resume say(std::string text, std::string key = {});
  /// Any typed event (`type` must not be one the host writes itself, e.g. tool_started).
  /// Throws usage for an empty `type`.
  static Resume with_event(std::string type, nlohmann::json data, std::string key = {});
  /// No answer (an event without type, key or data): continue a thread whose step was
  /// interrupted (a crash). Started tool calls without a result get outcome_unknown
  /// (idempotent ones are retried by the agent). Refused (conflict) while this host has a
  /// step in flight on the thread.
  static Resume recover();
};

/// What a resume did.
struct ResumeResult {
  /// True when the idempotency key had been used for the same event before: nothing was
  /// written or run, and `events` holds the first outcome (the answer and what followed).
  bool replayed = false;
  std::vector<Event> events;
};

/// Which threads Host::list returns. Host::list throws usage for a negative time, or an
/// updated_before_ms at or before updated_since_ms (no thread could match).
struct ThreadQuery {
  std::optional<Status> status;
  std::string agent;                   // empty: every agent
  std::int64_t updated_since_ms = 0;   // last event at or after (0: no bound)
  std::int64_t updated_before_ms = 0;  // last event before (0: no bound)
  std::size_t limit = 0;               // 0: all; newest first
};

/// Every member that takes a thread id throws usage for one with a NUL byte, and
/// not_found (quoting only its start) for one longer than any thread id (128 bytes).
class Host {
 public:
  /// Opening a host also grows the process's descriptor table once, to the soft
  /// RLIMIT_NOFILE (at most 16,384 slots), so that sockets it opens later in pump() never
  /// wait for the kernel to grow it (milliseconds in a process with threads).
  explicit Host(HostConfig config);
  ~Host();
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  /// Starts a thread of `agent` with `first`: a folder under agents_dir (looked at first,
  /// so a folder of that name in the working directory never shadows it), else the path
  /// of an agent's folder or of its agent.lua. Returns the thread's id. The step runs in
  /// pump()/run_until_idle(). Throws usage for an empty agent name or one with a NUL byte,
  /// not_found when it names no agent. The host numbers and dates `first` itself and
  /// refuses one with a version (see Event).
  std::string launch(const std::string& agent, Event first);
  /// Appends the answer to a waiting thread and starts the next step. An idempotency key
  /// seen before wins over everything: the same event returns the first outcome (replayed),
  /// a different one is a conflict. Otherwise throws conflict when the thread is not
  /// waiting for this kind of answer (or lost a race to another resume), usage for an
  /// event the host writes itself. The process whose step paused the thread may hold it
  /// for a moment more (its last events flushing): resume() waits for it, up to 5 s, and
  /// then throws conflict; if that process takes another answer meanwhile, this one is a
  /// replay of it or a conflict, as above. Recover (Resume::recover()) as continue_thread().
  ResumeResult resume(const std::string& thread_id, Resume resume);
  /// A new thread with events 1..at_event of `thread_id` and the parent link; returns its
  /// id. Nothing runs: resume the fork as the parent would be. Throws not_found.
  std::string fork(const std::string& thread_id, std::int64_t at_event);
  /// Ends a running or waiting thread: its step in flight in this host (if any) stops and
  /// `cancelled` is appended; a step running in another process loses its next
  /// compare-and-swap. Throws not_found for an unknown thread, conflict when it has ended,
  /// usage for a reason that is not UTF-8. Callable from inside on_event, for the thread
  /// being reported too: the events stored before the cancel are reported first, and a
  /// step that has not started yet (an event launch() or resume() is reporting) never
  /// starts.
  Event cancel(const std::string& thread_id, const std::string& reason = {});
  std::vector<ThreadSummary> list(const ThreadQuery& query);
  Thread get(const std::string& thread_id);
  std::vector<ThreadSummary> list(std::optional<Status> status = std::nullopt,
                                  const std::string& agent = {});

  /// The thread as luagent.context.xml renders it: what the model sees.
  std::string render_context(const Thread& thread);
  /// The recorded LLM calls of a thread (provider, model, tokens, latency, request). Throws
  /// not_found for an unknown thread.
  std::vector<nlohmann::json> calls(const std::string& thread_id);

  /// Runs ready work (replies that arrived, new steps, time-sliced Lua) for at most
  /// `budget` and never waits for I/O: long Lua work is paused at the deadline and
  /// continued by the next pump, and so is work that would not fit, such as delivering
  /// more replies or sending more requests (at least one of each per pump, so every pump
  /// makes progress, a budget of zero too). Nor does it wait for another process holding
  /// the store's write lock: the commit is tried again by the next pump. A budget over 24
  /// hours counts as 24 hours. Returns the number of steps still in flight.
  std::size_t pump(std::chrono::microseconds budget);
  /// Runs until no step is in flight.
  void run_until_idle();

  /// Called for every event as soon as it is stored. Replaces the callback set before
  /// (nullptr: none), also from inside that callback: the one running finishes its call.
  /// An exception the callback throws does not leave the host: it is logged through
  /// HostConfig::log at level "error" ("the on_event callback threw: " and its what()), and
  /// the host goes on as if the callback had returned (the step starts or continues, the
  /// thread finishes; launch() and resume() return normally).
  void on_event(std::function<void(const Thread&, const Event&)> callback);

  /// Called after each reload of a watched agent or of stdlib/, successful or not (watch).
  /// Replaces the callback set before, as on_event does. An exception it throws is logged
  /// ("the on_reload callback threw: ...") and the reload stands, as on_event's.
  void on_reload(std::function<void(const ReloadReport&)> callback);
  /// Loads `agent` (when watched: the version serving now) and returns its content hash.
  /// Throws the load error (syntax, not_found, ...) with file:line.
  std::string agent_version(const std::string& agent);
  /// Starts the next step of a stored thread that is running with no step in flight: a
  /// thread copied into this host's store, or one a crashed process left running. Throws
  /// conflict when a step of it is in flight, in this host or in another process on this
  /// machine using the store (a lock on a file beside the store, which the kernel drops
  /// when that process ends, however it ends), and for a thread that is not running. A
  /// step about to start counts as in flight: from an on_event callback told of the event
  /// launch() or resume() just stored, continuing that thread is a conflict.
  void continue_thread(const std::string& thread_id);
  /// What changed since the last call (events, pauses, ends, streamed text), in order.
  std::vector<Update> updates();
  /// Serves until stop(): waits for I/O and runs every step as work arrives.
  void run();
  /// Makes run() return. Thread-safe. A stop() that comes while run() is not serving is
  /// kept, and the next run() returns at once: a stop racing run()'s start is never lost.
  void stop();
  /// Runs `task` on the host's thread during the next pump()/run(). Thread-safe. An
  /// exception `task` throws comes out of that pump() / run() / run_until_idle(), which
  /// stops there; nothing else queued is lost: the tasks behind it (the host's own, such
  /// as a ToolReply's answer, too) stay queued in order, ahead of newer ones, and run in
  /// the next call.
  void post(std::function<void()> task);

  /// Registers a synchronous C++ tool that agents call with
  /// require("luagent.host").call(name, args). `schema` describes the arguments (JSON
  /// Schema or the intents shorthand; null for none). Throws conflict if `name` exists.
  void tool(const std::string& name, nlohmann::json schema, ToolFunction function);
  /// Registers an asynchronous C++ tool: it receives a ToolReply to answer later, from
  /// any thread; only the calling agent waits.
  void async_tool(const std::string& name, nlohmann::json schema, AsyncToolFunction function);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace luagent
