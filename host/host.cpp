// Host: wires the store, the provider and the agent runtime together and
// implements the verbs (launch, resume, get, list) on top of them.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>
#include <thread>

#include "agent_runtime.hpp"
#include "config_file.hpp"
#include "event_loop.hpp"
#include "file_table.hpp"
#include "file_watcher.hpp"
#include "llm/delayed_provider.hpp"
#include "llm/provider_factory.hpp"
#include "llm/replay_provider.hpp"
#include "luagent/luagent.hpp"
#include "step_locks.hpp"
#include "store/store.hpp"
#include "thread_lifecycle.hpp"

namespace luagent {
namespace {

// How long resume() waits for the host whose step paused a thread to let go of it (its
// last events flushing: 1-20 ms of fsync on this machine's disk, seconds on a slow one).
constexpr std::chrono::milliseconds kPausingStepPatience{5000};

std::string env_or(const char* name, const std::string& fallback = {}) {
  const char* value = std::getenv(name);
  return value && *value ? std::string(value) : fallback;
}

// A setting's value and where it came from: a flag ("--store"), an environment variable
// ("LUAGENT_STORE"), or the config file and its key ("app/luagent.config.lua: store"). A
// refused value must say so, or the user looks for it in the wrong place.
template <typename Value>
struct Setting {
  Value value;
  std::string origin;  // empty: a HostConfig field set by an embedder, named by nothing
};

// Where a setting may come from, in the order they win (DESIGN.md): a HostConfig field
// (the CLI's flag), the environment, the config file.
struct SettingSources {
  const nlohmann::json& file_config;
  const std::filesystem::path& file;  // the config file; empty when there is none
  bool fields_are_flags = false;      // HostConfig::settings_from_flags

  // The field's value, else the variable `env`'s, else the file's `key`.
  Setting<std::string> text(const std::string& field, const char* flag, const char* env,
                            const char* key) const {
    if (!field.empty()) return {field, fields_are_flags && flag ? flag : ""};
    if (std::string from_env = env ? env_or(env) : std::string(); !from_env.empty())
      return {std::move(from_env), env};
    if (auto found = file_config.find(key); found != file_config.end()) {
      if (!found->is_string())  // check_config_keys() refuses it first; kept for safety
        throw Error(ErrorCode::config, file.string() + ": '" + key + "' must be a string");
      return {found->get<std::string>(), file.string() + ": " + key};
    }
    return {};
  }

  // A file setting: flags and the environment are relative to the working directory,
  // the config file's entries to the config file's folder.
  Setting<std::filesystem::path> path(const std::filesystem::path& field, const char* flag,
                                      const char* env, const char* key) const {
    bool from_file = field.empty() && env_or(env).empty();
    Setting<std::string> found = text(field.string(), flag, env, key);
    std::filesystem::path path(found.value);
    if (from_file && !path.empty() && !path.is_absolute()) path = file.parent_path() / path;
    return {std::move(path), std::move(found.origin)};
  }
};

// "LUAGENT_STORE: " (or "--store: ", "app/luagent.config.lua: store: "), to begin a
// message about the setting's value; empty when where it came from is not known.
template <typename Value>
std::string origin_prefix(const Setting<Value>& setting) {
  return setting.origin.empty() ? std::string() : setting.origin + ": ";
}

// Runs `use`, which takes `setting`'s value; an Error it throws keeps its code and gains
// the name of where the value came from (see Setting), if that is known.
template <typename Value, typename Use>
auto naming_origin(const Setting<Value>& setting, const Use& use) -> decltype(use()) {
  if (setting.origin.empty()) return use();
  try {
    return use();
  } catch (const Error& error) {
    throw Error(error.code(), origin_prefix(setting) + error.message(), error.source(),
                error.line());
  }
}

// Values a HostConfig cannot mean: each used to be taken as given (a negative poll interval
// made the watcher wait forever) or silently read as the default.
void check_host_config(const HostConfig& config) {
  auto refuse = [](const std::string& field, const std::string& wanted, long long value) {
    throw Error(ErrorCode::config,
                "HostConfig::" + field + " must be " + wanted + ", not " + std::to_string(value));
  };
  if (config.step_cpu_ms < 0)
    refuse("step_cpu_ms", "0 (the default, 5000) or a positive number of milliseconds",
           config.step_cpu_ms);
  if (config.memory_mb > 1'048'576)
    refuse("memory_mb", "0 (the default, 256) or at most 1048576 (1 TiB)",
           static_cast<long long>(config.memory_mb));
  if (config.llm_calls_per_step < 0)
    refuse("llm_calls_per_step", "0 (no limit) or a positive count", config.llm_calls_per_step);
  if (config.replay_latency.count() < 0)
    refuse("replay_latency", "0 or a positive number of milliseconds",
           config.replay_latency.count());
  if (config.watch_poll_interval.count() <= 0)
    refuse("watch_poll_interval", "a positive number of milliseconds",
           config.watch_poll_interval.count());
  // The file system reads a path only up to a NUL byte: a path with one would silently name
  // the folder or file before it.
  for (const auto& [field, path] :
       {std::pair{"agents_dir", &config.agents_dir}, std::pair{"config_file", &config.config_file},
        std::pair{"cassette", &config.cassette}, std::pair{"script", &config.script},
        std::pair{"record", &config.record}, std::pair{"stdlib_dir", &config.stdlib_dir}})
    if (std::size_t nul = path->native().find('\0'); nul != std::string::npos)
      throw Error(ErrorCode::config, std::string("HostConfig::") + field +
                                         " contains a NUL byte (at byte " + std::to_string(nul) +
                                         ")");
  std::error_code ec;
  if (std::filesystem::exists(config.agents_dir, ec) &&
      !std::filesystem::is_directory(config.agents_dir, ec))
    throw Error(ErrorCode::config,
                std::string(config.settings_from_flags ? "--agents" : "HostConfig::agents_dir") +
                    ": the agents folder " + config.agents_dir.string() +
                    " is a file, not a folder");
}

}  // namespace

Resume Resume::approve(std::string key) {
  Resume resume{Event::make(std::string(event_type::approval), {{"approved", true}})};
  resume.event.key = std::move(key);
  return resume;
}

Resume Resume::reject(std::string comment, std::string key) {
  Resume resume{Event::make(std::string(event_type::approval),
                            {{"approved", false}, {"comment", std::move(comment)}})};
  resume.event.key = std::move(key);
  return resume;
}

Resume Resume::say(std::string text, std::string key) {
  Resume resume{Event::make(std::string(event_type::human_response), std::move(text))};
  resume.event.key = std::move(key);
  return resume;
}

Resume Resume::with_event(std::string type, nlohmann::json data, std::string key) {
  // Without a type the event would read as no answer at all: a recover() that drops `data`.
  if (type.empty())
    throw Error(ErrorCode::usage,
                "Resume::with_event needs a non-empty event type (Resume::recover() is the "
                "resume without an answer)");
  Resume resume{Event::make(std::move(type), std::move(data))};
  resume.event.key = std::move(key);
  return resume;
}

Resume Resume::recover() {
  return Resume{Event{}};
}

struct Host::Impl {
  HostConfig config;
  EventLoop loop;
  // Open from the start when it exists; one that does not is made by the first call that
  // needs it (store()), with open_missing_store.
  std::unique_ptr<Store> opened_store;
  std::function<std::unique_ptr<Store>()> open_missing_store;
  // Before the runtime: a run it ends on its way out releases its thread's lock here.
  std::unique_ptr<StepLocks> step_locks;
  std::unique_ptr<AgentRuntime> runtime;
  std::unique_ptr<llm::Provider> provider;
  using EventCallback = std::function<void(const Thread&, const Event&)>;
  using ReloadCallback = std::function<void(const ReloadReport&)>;
  // The embedder's callbacks, held by shared_ptr and called through a copy of it: one may
  // replace itself from inside (on_event(nullptr)), and the one running must outlive its call.
  std::shared_ptr<const EventCallback> on_event;
  // Embedding: tools, updates, the owning thread and run()'s stop flag.
  HostTools tools;
  std::vector<Update> pending_updates;
  std::thread::id owner = std::this_thread::get_id();
  bool driving = false;  // inside pump()/run(): a callback must not drive the loop again
  // Embedder callbacks (on_event, on_reload, host tools) running now. They must not drive
  // the loop either, even when called outside pump(), from launch() or cancel(): the
  // runtime keeps the runs they may be told of (and end) until its loop runs again.
  int callbacks_running = 0;
  // Host::cancel calls so far. launch() and resume() compare it around reporting their
  // event, to find a callback that cancelled the thread before its step started.
  std::uint64_t cancels = 0;
  // Threads whose step launch(), resume() or a recover is about to start while the
  // callbacks hear of the events before it: a continue_thread() from one of them must find
  // the step as good as in flight, or the thread gets two.
  std::set<std::string> starting;
  struct StartingScope {
    StartingScope(Impl& impl, std::string thread_id) : impl(impl), id(std::move(thread_id)) {
      impl.starting.insert(id);
    }
    ~StartingScope() { impl.starting.erase(id); }
    Impl& impl;
    std::string id;
  };
  // What a loop turn inside pump() has cost lately (I/O on every socket that stirred:
  // requests the last runs started, replies arriving). pump() starts another turn only
  // with this much budget left, so a turn begun just before the deadline cannot carry
  // the pump past it; the I/O waits for the next pump.
  double pump_turn_ns = 0;
  std::atomic<bool> stop_requested{false};

  ~Impl() {
    if (tools.gate) tools.gate->close();
  }

  void check_thread(const char* verb) const;
  /// Marks pump()/run()/run_until_idle() as driving the loop for as long as it exists.
  struct DrivingScope {
    explicit DrivingScope(Impl& impl) : impl(impl) { impl.driving = true; }
    ~DrivingScope() { impl.driving = false; }
    Impl& impl;
  };
  /// Counts a callback running for as long as it exists (see callbacks_running).
  struct CallbackScope {
    explicit CallbackScope(Impl& impl) : impl(impl) { ++impl.callbacks_running; }
    ~CallbackScope() { --impl.callbacks_running; }
    Impl& impl;
  };
  /// True when a callback cancelled `thread_id` since Host::cancel had been called
  /// `cancels_before` times: the step it was about to get must not start.
  bool cancelled_since(const std::string& thread_id, std::uint64_t cancels_before) {
    return cancels != cancels_before && store().load(thread_id).status() == Status::cancelled;
  }
  /// Runs an embedder's callback. What it throws stops here, in the log: the host's
  /// bookkeeping around the call (a thread to finish, a step to start) must complete as
  /// if it had returned, or a thread is left done in the store and running in the host.
  /// `about` (called only then) names what the call was about.
  template <typename Call, typename About>
  void call_guarded(std::string_view callback, const Call& call, const About& about);
  /// Reports a stored event: updates(), then the on_event callback.
  void notify_event(const Thread& thread, const Event& event);
  /// Host::cancel's work, also luagent.threads.cancel's (RuntimeServices::cancel_thread).
  Event cancel(const std::string& thread_id, const std::string& reason);
  void note_update(Update::Kind kind, const Thread& thread, const Event* event,
                   std::string text = {});

  void open(HostConfig host_config) {
    check_host_config(host_config);
    config = std::move(host_config);
    // Before the host starts threads of its own: grown in a process of one thread, the
    // table is grown without waiting for the kernel (see file_table.hpp).
    presize_file_table();
    auto to_stderr = [](std::string_view level, std::string_view message) {
      if (level == "debug" && std::getenv("LUAGENT_DEBUG") == nullptr) return;
      std::cerr << "[" << level << "] " << message << "\n";
    };
    if (!config.log) {
      config.log = to_stderr;
    } else {
      // Lines are logged in the middle of the host's bookkeeping (a step ending, a callback
      // that threw, an agent loading): an exception from the embedder's log must not cut
      // that short, and the log must not drive the loop from there, as no callback may.
      config.log = [this, log = std::move(config.log), to_stderr](std::string_view level,
                                                                  std::string_view message) {
        try {
          CallbackScope scope(*this);
          log(level, message);
        } catch (...) {
          to_stderr(level, std::string(message) + " (HostConfig::log threw; written here)");
        }
      };
    }
    RuntimeServices services;
    services.loop = &loop;
    services.log = config.log;
    services.stdlib_dir = config.stdlib_dir;
    tools.gate = std::make_shared<LoopGate>(&loop);
    services.tools = &tools;
    services.cancel_thread = [this](const std::string& thread_id, const std::string& reason) {
      return cancel(thread_id, reason);
    };
    services.open_store = [this]() -> Store& { return store(); };
    runtime = make_lua_runtime(services);

    nlohmann::json file_config = nlohmann::json::object();
    if (!config.config_file.empty()) {
      std::error_code ec;  // a name too long for a file is no config file, not a crash
      std::string origin = config.settings_from_flags ? "--config: " : "";
      if (!std::filesystem::exists(config.config_file, ec))
        throw Error(ErrorCode::config, origin + "no config file " + config.config_file.string());
      if (std::filesystem::is_directory(config.config_file, ec))
        throw Error(ErrorCode::config, origin + config.config_file.string() +
                                           " is a folder, not a config file (name the "
                                           "luagent.config.lua in it)");
      file_config = runtime->load_config(config.config_file);
      check_config_keys(file_config, config.config_file);
      if (config.store_settings_only) {
        nlohmann::json store_only = nlohmann::json::object();
        if (file_config.contains("store")) store_only["store"] = file_config["store"];
        file_config = std::move(store_only);
      }
    }
    RuntimeLimits limits = config_limits(file_config, config.config_file, RuntimeLimits{});
    if (config.step_cpu_ms > 0) limits.step_cpu_ms = config.step_cpu_ms;
    if (config.memory_mb > 0) limits.memory_mb = config.memory_mb;
    limits.llm_calls_per_step = config.llm_calls_per_step;
    if (limits.step_cpu_ms != 5000 || limits.memory_mb != 256 || limits.llm_calls_per_step) {
      services.limits = limits;
      runtime = make_lua_runtime(services);  // limits are fixed when the state is made
    }

    const SettingSources sources{file_config, config.config_file, config.settings_from_flags};
    Setting<std::string> store_uri =
        sources.text(config.store, "--store", "LUAGENT_STORE", "store");
    if (store_uri.value.empty()) store_uri.value = std::string(kDefaultStoreUri);
    auto opening = [store_uri](StoreOpening how) {
      return naming_origin(store_uri, [&] { return open_store(store_uri.value, how); });
    };
    // Only a store that exists is opened here (which checks the URI too): a missing one is
    // made when first needed, after an agent has loaded, so that `run` of a mistyped agent
    // name leaves no new, empty store behind.
    try {
      use_store(opening(StoreOpening::existing_only));
    } catch (const Error& error) {
      if (config.store_must_exist || error.code() != ErrorCode::not_found) throw;
      open_missing_store = [opening] { return opening(StoreOpening::create_if_missing); };
    }
    if (config.store_settings_only) return;

    Setting<std::string> provider_name =
        sources.text(config.provider, "--provider", "LUAGENT_PROVIDER", "provider");
    std::string model = sources.text(config.model, "--model", "LUAGENT_MODEL", "model").value;
    auto cassette = sources.path(config.cassette, "--cassette", "LUAGENT_CASSETTE", "cassette");
    auto script = sources.path(config.script, nullptr, "LUAGENT_SCRIPT", "script");
    Setting<std::filesystem::path> record{config.record, {}};
    if (record.value.empty()) record = {env_or("LUAGENT_RECORD"), "LUAGENT_RECORD"};
    if (provider_name.value == "replay") {
      if (cassette.value.empty())
        throw Error(ErrorCode::config,
                    "the replay provider needs a cassette (--cassette FILE, LUAGENT_CASSETTE or "
                    "cassette = ... in luagent.config.lua)");
      provider = naming_origin(cassette, [&] {
        return std::make_unique<llm::ReplayProvider>(loop, cassette.value, config.replay_latency);
      });
    } else if (provider_name.value == "script") {
      if (script.value.empty())
        throw Error(ErrorCode::config,
                    "the script provider needs a Lua model file (script = ... in "
                    "luagent.config.lua or LUAGENT_SCRIPT)");
      provider = naming_origin(script, [&] { return runtime->make_script_provider(script.value); });
      if (config.replay_latency.count() > 0)
        provider = std::make_unique<llm::DelayedProvider>(std::move(provider), loop,
                                                          config.replay_latency);
    } else if (llm::is_http_provider(provider_name.value)) {
      provider = llm::make_http_provider(
          provider_name.value,
          llm::http_provider_config(provider_name.value, file_config, config.config_file, model),
          loop);
    } else if (!provider_name.value.empty()) {
      throw Error(ErrorCode::config, origin_prefix(provider_name) + "unknown provider '" +
                                         provider_name.value +
                                         "' (available: openai, anthropic, replay, script)");
    }
    if (provider && !record.value.empty())
      provider = naming_origin(record, [&]() -> std::unique_ptr<llm::Provider> {
        return std::make_unique<llm::RecordingProvider>(std::move(provider), record.value);
      });
    runtime->set_provider(provider.get());
    if (config.watch) start_watching();
  }

  // The store, made now if it did not exist when the host opened.
  Store& store() {
    if (!opened_store) use_store(open_missing_store());
    return *opened_store;
  }
  void use_store(std::unique_ptr<Store> opened) {
    opened_store = std::move(opened);
    runtime->set_store(opened_store.get());
    if (auto folder = opened_store->step_lock_folder(); !folder.empty())
      step_locks = std::make_unique<StepLocks>(folder);
  }

  // The agent `agent` names: a folder under agents_dir, else a folder or a path to its
  // agent.lua; loaded as load() does.
  AgentInfo load_named(const std::string& agent) {
    // "" would be agents_dir itself, and the file system reads a name only up to a NUL.
    if (agent.empty())
      throw Error(ErrorCode::usage,
                  "the agent name is empty; give a folder under agents_dir or a path to one");
    if (agent.find('\0') != std::string::npos)
      throw Error(ErrorCode::usage, "the agent name contains a NUL byte");
    // The error_code forms: a name the file system cannot take (longer than NAME_MAX, say)
    // is no agent, not a filesystem_error.
    std::error_code ec;
    std::filesystem::path as_path(agent);
    auto under = config.agents_dir / agent;
    // The configured folder first: a folder of the same name in the working directory (a
    // game's save folder "guard", say) must not shadow the agent under agents_dir.
    if (std::filesystem::is_directory(under, ec)) return load(under);
    if (ec == std::errc::filename_too_long)  // said once: the name is the whole story
      throw Error(ErrorCode::not_found,
                  "no agent '" + agent + "': the name is longer than a file name can be");
    if (std::filesystem::is_directory(as_path, ec)) return load(as_path);
    if (as_path.filename() == "agent.lua" && std::filesystem::exists(as_path, ec))
      return load(as_path.parent_path().empty() ? "." : as_path.parent_path());
    // A file where a folder was wanted is the likely slip: say so, and name each place
    // looked at once (an absolute name is the same path under agents_dir).
    if (std::filesystem::is_regular_file(as_path, ec))
      throw Error(ErrorCode::not_found,
                  "no agent: '" + agent +
                      "' is a file, not an agent folder (give the folder that holds "
                      "agent.lua, or the path to that agent.lua)");
    std::string looked = agent + "/agent.lua";
    if (under.lexically_normal() != as_path.lexically_normal())
      looked = under.string() + "/agent.lua and " + looked;
    throw Error(ErrorCode::not_found, "no agent '" + agent + "' (looked for " + looked + ")");
  }

  // `unflushed_events`: the thread's last events are committed but not on disk yet; the
  // runtime reports them once flushed (HostConfig::launch_waits_for_disk off).
  // `hold`: the thread's step lock, which the step keeps until it ends.
  void start(const AgentInfo& agent, Thread thread, StepLockHold& hold,
             std::size_t unflushed_events = 0) {
    RunCallbacks callbacks;
    callbacks.on_event = [this](const Thread& t, const Event& e) { notify_event(t, e); };
    callbacks.on_finished = [this](const Thread& t, const std::optional<Error>& error) {
      if (step_locks) step_locks->release(t.id);
      if (error) config.log("error", "thread " + t.id + ": " + error->what());
      write_rendering(t);
      note_finished(t, error);
    };
    callbacks.on_chunk = [this](const Thread& t, std::string_view text) {
      note_update(Update::Kind::chunk, t, nullptr, std::string(text));
    };
    runtime->start_step(agent, std::move(thread), std::move(callbacks), unflushed_events);
    hold.keep();
  }

  // Marks a step of `thread_id` in flight, for other processes to see (StepLocks); null
  // when another process (or another Host of this one) has one in flight.
  std::unique_ptr<StepLockHold> try_hold_step(const std::string& thread_id) {
    store();  // the step locks live beside it: made with it
    if (step_locks && !step_locks->try_hold(thread_id)) return nullptr;
    return std::make_unique<StepLockHold>(step_locks.get(), thread_id);
  }
  Error in_flight_elsewhere(const std::string& thread_id) {
    return Error(ErrorCode::conflict,
                 "thread " + thread_id + " has a step in flight in another process using " +
                     store().uri() +
                     " (or in another Host of this one); it was not interrupted (let the step "
                     "end, or cancel it)");
  }
  std::unique_ptr<StepLockHold> hold_step(const std::string& thread_id) {
    auto hold = try_hold_step(thread_id);
    if (!hold) throw in_flight_elsewhere(thread_id);
    return hold;
  }

  // ---- hot reload (HostConfig::watch) ----------------------------------------------

  struct WatchedAgent {
    AgentInfo info;       // the version serving; empty version: never loaded yet
    bool failed = false;  // the last reload failed (a fix is reported even if unchanged)
  };
  std::map<std::filesystem::path, WatchedAgent> watched;  // by canonical folder
  std::filesystem::path stdlib_root;
  std::shared_ptr<const ReloadCallback> on_reload;  // as on_event
  void notify_reload(const ReloadReport& report) {
    if (auto callback = on_reload)
      call_guarded(
          "on_reload", [&] { (*callback)(report); }, [&] { return "agent " + report.agent; });
  }
  std::unique_ptr<FileWatcher> watcher;  // last: stopped before the loop and runtime go

  void start_watching() {
    WatchOptions options;
    const bool from_config = !config.watch_mode.empty();
    options.mode = watch_mode_from_name(from_config ? config.watch_mode : env_or("LUAGENT_WATCH"),
                                        from_config ? "HostConfig::watch_mode" : "LUAGENT_WATCH");
    options.poll_interval = config.watch_poll_interval;
    // The watcher's thread only posts; every reload runs here, on the loop's thread.
    watcher =
        std::make_unique<FileWatcher>(options, [this](std::vector<std::filesystem::path> roots) {
          loop.post([this, roots = std::move(roots)] { reload(roots); });
        });
    std::error_code ec;
    stdlib_root = std::filesystem::weakly_canonical(runtime->stdlib_dir(), ec);
    watcher->add_root(stdlib_root);
  }

  // The agent in `dir`: without a watcher, loaded from disk every time; with one, the
  // version serving now (no re-read), watched from its first load on.
  AgentInfo load(const std::filesystem::path& dir) {
    if (!watcher) return runtime->load_agent(dir);
    std::error_code ec;
    auto key = std::filesystem::weakly_canonical(dir, ec);
    auto found = watched.find(key);
    if (found != watched.end() && !found->second.info.version.empty()) return found->second.info;
    if (found == watched.end()) {
      watched[key] = {};
      watcher->add_root(key);  // before reading: a save during the load is not missed
    }
    AgentInfo info = runtime->load_agent(key);
    watched[key] = {info, false};
    return info;
  }

  void reload(const std::vector<std::filesystem::path>& roots) {
    for (const auto& root : roots) {
      ReloadReport report;
      report.dir = root;
      if (root == stdlib_root) {
        report.agent = "stdlib";
        try {
          runtime->reload_stdlib();
          report.ok = true;
          config.log("info", "reloaded stdlib " + root.string());
        } catch (const Error& e) {
          report.error = e;
          config.log("error", std::string("reloading stdlib failed; the loaded modules keep "
                                          "serving: ") +
                                  e.what());
        }
        notify_reload(report);
        if (report.ok) {  // every agent's version includes the stdlib's: each has a new one
          std::vector<std::filesystem::path> agents;
          for (const auto& entry : watched) agents.push_back(entry.first);
          reload(agents);
        }
        continue;
      }
      auto found = watched.find(root);
      if (found == watched.end()) continue;
      WatchedAgent& agent = found->second;
      report.agent = root.filename().string();
      report.previous_version = agent.info.version;
      try {
        if (!std::filesystem::is_directory(root))
          throw Error(ErrorCode::not_found, "the agent folder " + root.string() + " is gone");
        AgentInfo info = runtime->load_agent(root);
        if (info.version == agent.info.version && !agent.failed) continue;  // touched only
        agent.info = info;
        agent.failed = false;
        report.ok = true;
        report.version = info.version;
        config.log("info", "reloaded agent " + report.agent + ": version " +
                               (report.previous_version.empty() ? "-" : report.previous_version) +
                               " -> " + info.version);
      } catch (const Error& e) {
        agent.failed = true;
        report.version = agent.info.version;
        report.error = e;
        config.log("error", "reloading agent " + report.agent + " failed; " +
                                (agent.info.version.empty()
                                     ? std::string("nothing serves it yet")
                                     : "version " + agent.info.version + " keeps serving") +
                                ": " + e.what());
      }
      notify_reload(report);
    }
  }

  AgentInfo agent_of(const Thread& thread) {
    return thread.agent_path.empty() ? load_named(thread.agent)
                                     : load(std::filesystem::path(thread.agent_path));
  }

  // The fs store keeps the thread as its context formatter renders it, for reading.
  // Called when no Lua step is executing (the formatter runs on the main Lua state).
  void write_rendering(const Thread& thread) {
    if (!store().wants_rendering()) return;
    try {
      store().write_rendering(thread, runtime->render_context(thread));
    } catch (const Error& e) {
      config.log("warn", "thread " + thread.id + ": cannot write its rendering: " + e.what());
    }
  }

  // Reports events appended to `thread` before its step starts; false when a callback
  // cancelled the thread meanwhile (then the step must not start).
  bool report(Thread& thread, const std::vector<Event>& events) {
    std::uint64_t cancels_before = cancels;
    for (const Event& event : events) {
      thread.events.push_back(event);
      notify_event(thread, thread.events.back());
    }
    return !cancelled_since(thread.id, cancels_before);
  }

  // Continues a thread whose step was interrupted: settles its unfinished tool calls,
  // then runs the agent again from the thread as stored.
  ResumeResult recover(Thread thread) {
    // Its status says running either way: a second step beside the live one would settle
    // the live one's tool calls as outcome_unknown and run them again.
    if (starting.count(thread.id))
      throw Error(ErrorCode::conflict,
                  "thread " + thread.id +
                      " has a step starting in this host (its events are being reported "
                      "first); it was not interrupted (cancel it, or let the step end)");
    if (runtime->has_step_in_flight(thread.id))
      throw Error(ErrorCode::conflict, "thread " + thread.id +
                                           " has a step in flight in this host; it was not "
                                           "interrupted (cancel it, or let the step end)");
    // Said without the CLI's flags: C++ callers, the CLI and the HTTP API all read it.
    Status status = thread.status();
    if (status != Status::running)
      throw Error(ErrorCode::conflict,
                  "thread " + thread.id + " was not interrupted (it is " +
                      std::string(status_name(status)) + "): " +
                      (status == Status::awaiting_approval || status == Status::awaiting_human
                           ? "it waits for an answer (an approval, a rejection, a human "
                             "response or another event)"
                           : "it has ended, and there is nothing to continue"));
    // Running by its events, and not here: interrupted only if no other process runs it.
    auto hold = hold_step(thread.id);
    AgentInfo info = agent_of(thread);
    ResumeResult result;
    StartingScope starting_step(*this, thread.id);
    if (auto outcomes = unfinished_call_outcomes(thread); !outcomes.empty()) {
      result.events = store().append(thread.id, thread.version(), std::move(outcomes)).events;
      if (!report(thread, result.events)) return result;
    }
    start(info, std::move(thread), *hold);
    return result;
  }

  // The first outcome of an idempotency key already in the thread, if any.
  static std::optional<ResumeResult> replay_of_key(const Thread& thread, const Event& answer) {
    if (answer.key.empty()) return std::nullopt;
    for (const Event& stored : thread.events) {
      if (stored.key != answer.key) continue;
      if (stored.type != answer.type || stored.data != answer.data)
        throw Error(ErrorCode::conflict,
                    "idempotency key '" + answer.key + "' was already used for a different event");
      ResumeResult result;
      result.replayed = true;
      result.events.assign(thread.events.begin() + (stored.id - 1), thread.events.end());
      return result;
    }
    return std::nullopt;
  }

  void note_finished(const Thread& thread, const std::optional<Error>& error) {
    const Event* last = thread.events.empty() ? nullptr : &thread.events.back();
    switch (thread.status()) {
      case Status::awaiting_human:
      case Status::awaiting_approval:
        note_update(Update::Kind::paused, thread, last);
        break;
      case Status::done:
        note_update(Update::Kind::done, thread, last);
        break;
      case Status::cancelled:
        note_update(Update::Kind::cancelled, thread, last);
        break;
      default:
        note_update(Update::Kind::failed, thread, last, error ? error->what() : failure_text(last));
    }
  }
  // The message of a stored failed event, as Error::what() words it ("agent.lua:3: boom
  // [runtime]"): the step's own error, which the runtime passes on only when it could not
  // store one.
  static std::string failure_text(const Event* failed) {
    if (!failed || failed->type != event_type::failed || !failed->data.is_object()) return {};
    const nlohmann::json& data = failed->data;
    auto text = [&](const char* key) {
      auto found = data.find(key);
      return found != data.end() && found->is_string() ? found->get<std::string>() : std::string();
    };
    auto line = data.find("line");
    return Error(error_code_from_name(text("code")), text("message"), text("source"),
                 line != data.end() && line->is_number_integer() ? line->get<int>() : 0)
        .what();
  }
};

Host::Host(HostConfig config) : impl_(std::make_unique<Impl>()) {
  impl_->open(std::move(config));
}
Host::~Host() {
  // From inside one of its own callbacks the frames below still use what this frees: no
  // way on is safe, so stop with a message, as std::thread's destructor does for a
  // joinable thread. (Another thread cannot be told apart safely from here: the header
  // asks for the Host to be destroyed where its owner no longer uses it.)
  if (std::this_thread::get_id() == impl_->owner &&
      (impl_->driving || impl_->callbacks_running > 0)) {
    std::fputs(
        "luagent: a Host was destroyed from inside its own callback (a host tool, on_event, "
        "on_reload, HostConfig::log or a posted task); destroy it after pump()/run() "
        "returns\n",
        stderr);
    std::abort();
  }
}

void Host::on_event(std::function<void(const Thread&, const Event&)> callback) {
  impl_->check_thread("on_event");
  impl_->on_event =
      callback ? std::make_shared<const Impl::EventCallback>(std::move(callback)) : nullptr;
}

std::string Host::launch(const std::string& agent, Event first) {
  impl_->check_thread("launch");
  check_outside_event(first, "launch");
  AgentInfo info = impl_->load_named(agent);
  // The event's time is the host's to give, as its id is the store's: a caller's at_ms (a
  // copy of another thread's event, or any number) would misdate the thread.
  first.at_ms = now_ms();
  Thread thread;
  thread.id = new_thread_id();
  thread.agent = info.name;
  thread.agent_path = info.dir.string();
  thread.created_ms = now_ms();
  thread.events.push_back(std::move(first));
  std::string id = thread.id;
  auto hold = impl_->hold_step(id);  // before the thread exists for anyone to resume
  if (!impl_->config.launch_waits_for_disk) {
    impl_->store().create_unflushed(thread);
    std::size_t unflushed = thread.events.size();
    impl_->start(info, std::move(thread), *hold, unflushed);
    return id;
  }
  impl_->store().create(thread);
  Impl::StartingScope starting(*impl_, id);
  std::uint64_t cancels_before = impl_->cancels;
  for (const Event& event : thread.events) impl_->notify_event(thread, event);
  if (impl_->cancelled_since(id, cancels_before)) return id;  // by an on_event callback
  impl_->start(info, std::move(thread), *hold);
  return id;
}

ResumeResult Host::resume(const std::string& thread_id, Resume resume) {
  impl_->check_thread("resume");
  check_thread_id(thread_id);
  Thread thread = impl_->store().load(thread_id);
  // Only an event with nothing in it (Resume::recover()) is no answer; one with data or a
  // key but no type is a mistake that check_outside_event names.
  if (resume.event.type.empty() && resume.event.key.empty() && resume.event.data.is_null())
    return impl_->recover(std::move(thread));
  check_outside_event(resume.event, "resume");
  resume.event.at_ms = now_ms();  // the host's to give, as in launch()
  const std::string& type = resume.event.type;
  // The step that paused it may still be flushing its last events, in another process:
  // the answer waits for it to let go. If the thread takes another answer meanwhile, this
  // one is judged again against the thread as it is then, as if it had come a moment later.
  const auto give_up = std::chrono::steady_clock::now() + kPausingStepPatience;
  std::unique_ptr<StepLockHold> hold;
  while (!hold) {
    // A key seen before wins over the status: a duplicate webhook after the thread moved
    // on gets the first outcome.
    if (auto replay = Impl::replay_of_key(thread, resume.event)) return *replay;
    Status status = thread.status();
    auto refuse = [&](const std::string& wanted) {
      throw Error(ErrorCode::conflict, "thread " + thread_id + " is not " + wanted + " (it is " +
                                           std::string(status_name(status)) + ")");
    };
    if (type == event_type::approval && status != Status::awaiting_approval)
      refuse("awaiting approval");
    if (type == event_type::human_response && status != Status::awaiting_human)
      refuse("awaiting a human response");
    if (status != Status::awaiting_approval && status != Status::awaiting_human)
      refuse("waiting for an answer");
    while (!(hold = impl_->try_hold_step(thread.id))) {
      if (std::chrono::steady_clock::now() >= give_up) throw impl_->in_flight_elsewhere(thread_id);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      Thread now = impl_->store().load(thread_id);
      if (now.version() == thread.version()) continue;
      thread = std::move(now);
      break;  // judged again
    }
  }
  AgentInfo info = impl_->agent_of(thread);
  const bool wait_for_disk = impl_->config.launch_waits_for_disk;
  auto appended =
      wait_for_disk
          ? impl_->store().append(thread.id, thread.version(), {std::move(resume.event)})
          : impl_->store().append_unflushed(thread.id, thread.version(), {std::move(resume.event)});
  ResumeResult result{appended.replayed, appended.events};
  if (appended.replayed) return result;  // the same answer was given before; nothing runs again
  if (!wait_for_disk) {
    thread.events.insert(thread.events.end(), appended.events.begin(), appended.events.end());
    impl_->start(info, std::move(thread), *hold, appended.events.size());
    return result;
  }
  Impl::StartingScope starting(*impl_, thread.id);
  if (impl_->report(thread, appended.events)) impl_->start(info, std::move(thread), *hold);
  return result;
}

std::string Host::fork(const std::string& thread_id, std::int64_t at_event) {
  impl_->check_thread("fork");
  check_thread_id(thread_id);
  Thread fork = fork_thread(impl_->store(), thread_id, at_event);
  impl_->write_rendering(fork);
  return fork.id;
}

Event Host::cancel(const std::string& thread_id, const std::string& reason) {
  return impl_->cancel(thread_id, reason);
}

Event Host::Impl::cancel(const std::string& thread_id, const std::string& reason) {
  check_thread("cancel");
  check_thread_id(thread_id);
  check_cancel_reason(reason);  // before a step in flight is stopped for it
  ++cancels;
  // A step of this host in flight stops first (its on_finished reports the end).
  if (runtime->cancel_run(thread_id, reason)) {
    Thread thread = store().load(thread_id);
    write_rendering(thread);
    return thread.events.back();
  }
  Event cancelled = cancel_thread(store(), thread_id, reason);
  Thread thread = store().load(thread_id);
  notify_event(thread, cancelled);
  note_finished(thread, std::nullopt);
  write_rendering(thread);
  return cancelled;
}

std::vector<ThreadSummary> Host::list(const ThreadQuery& query) {
  impl_->check_thread("list");
  // Bounds that no time fits are a mistake (swapped, or a difference taken the wrong way
  // round), which an empty list would pass off as "no such thread".
  for (auto [name, value] : {std::pair{"updated_since_ms", query.updated_since_ms},
                             std::pair{"updated_before_ms", query.updated_before_ms}})
    if (value < 0)
      throw Error(ErrorCode::usage, "ThreadQuery::" + std::string(name) +
                                        " must be 0 (no bound) or a time in Unix "
                                        "milliseconds, not " +
                                        std::to_string(value));
  if (query.updated_since_ms > 0 && query.updated_before_ms > 0 &&
      query.updated_before_ms <= query.updated_since_ms)
    throw Error(ErrorCode::usage,
                "ThreadQuery::updated_before_ms (" + std::to_string(query.updated_before_ms) +
                    ") must be after updated_since_ms (" + std::to_string(query.updated_since_ms) +
                    "): no thread can match");
  ListFilter filter;
  filter.status = query.status;
  filter.agent = query.agent;
  filter.updated_since_ms = query.updated_since_ms;
  filter.updated_before_ms = query.updated_before_ms;
  filter.limit = query.limit;
  return impl_->store().list(filter);
}

void Host::on_reload(std::function<void(const ReloadReport&)> callback) {
  impl_->check_thread("on_reload");
  impl_->on_reload =
      callback ? std::make_shared<const Impl::ReloadCallback>(std::move(callback)) : nullptr;
}

std::string Host::agent_version(const std::string& agent) {
  impl_->check_thread("agent_version");
  return impl_->load_named(agent).version;
}

void Host::continue_thread(const std::string& thread_id) {
  impl_->check_thread("continue_thread");
  check_thread_id(thread_id);
  // The same path as a resume without an answer: settle unfinished calls, run on.
  impl_->recover(impl_->store().load(thread_id));
}

Thread Host::get(const std::string& thread_id) {
  impl_->check_thread("get");
  check_thread_id(thread_id);
  return impl_->store().load(thread_id);
}

std::vector<ThreadSummary> Host::list(std::optional<Status> status, const std::string& agent) {
  impl_->check_thread("list");
  ListFilter filter;
  filter.status = status;
  filter.agent = agent;
  return impl_->store().list(filter);
}

std::string Host::render_context(const Thread& thread) {
  impl_->check_thread("render_context");
  return impl_->runtime->render_context(thread);
}

std::vector<nlohmann::json> Host::calls(const std::string& thread_id) {
  impl_->check_thread("calls");
  check_thread_id(thread_id);
  auto calls = impl_->store().calls(thread_id);
  if (calls.empty()) impl_->store().load(thread_id);  // an unknown thread is not_found, as in get()
  return calls;
}

std::size_t Host::pump(std::chrono::microseconds budget) {
  impl_->check_thread("pump");
  Impl::DrivingScope driving(*impl_);
  // A budget of zero or less still makes progress (one of each, as any budget); one past
  // a day is a day, where Clock::now() + budget would overflow.
  budget = std::clamp<std::chrono::microseconds>(budget, std::chrono::microseconds(0),
                                                 std::chrono::hours(24));
  auto deadline = Clock::now() + budget;
  // Never waits: take what the I/O has delivered, run what is ready, repeat while either
  // makes progress and the budget lasts.
  auto turn_estimate = [&] {
    return std::chrono::nanoseconds(static_cast<std::int64_t>(impl_->pump_turn_ns));
  };
  do {
    auto turn_started = Clock::now();
    int completions = impl_->loop.turn(std::chrono::milliseconds(0), deadline);
    double turn_ns = std::chrono::duration<double, std::nano>(Clock::now() - turn_started).count();
    impl_->pump_turn_ns = 0.8 * impl_->pump_turn_ns + 0.2 * turn_ns;
    std::size_t resumed = impl_->runtime->run_ready(deadline);
    if (completions == 0 && resumed == 0 && !impl_->runtime->has_ready()) break;
  } while (Clock::now() + turn_estimate() < deadline);
  return impl_->runtime->runs_in_flight();
}

void Host::run_until_idle() {
  impl_->check_thread("run_until_idle");
  Impl::DrivingScope driving(*impl_);
  while (impl_->runtime->runs_in_flight() > 0) {
    impl_->runtime->run_ready(std::nullopt);
    if (impl_->runtime->runs_in_flight() == 0) break;
    impl_->loop.turn(impl_->runtime->has_ready() ? std::chrono::milliseconds(0)
                                                 : std::chrono::milliseconds(100));
  }
}

// ---------------------------------------------------------------------------
// Embedding: threads, updates, run(), post(), host tools (host_tools.hpp).

void Host::Impl::check_thread(const char* verb) const {
  if (std::this_thread::get_id() != owner)
    throw Error(ErrorCode::usage,
                std::string("Host::") + verb +
                    " called from another thread; a Host belongs to the thread that created it "
                    "(use Host::post to hand work to it)");
  if ((driving || callbacks_running > 0) &&
      (std::string_view(verb) == "pump" || std::string_view(verb) == "run" ||
       std::string_view(verb) == "run_until_idle"))
    throw Error(ErrorCode::usage,
                std::string("Host::") + verb +
                    " called from inside a callback (a host tool, on_event, on_reload, "
                    "HostConfig::log or a posted task)");
}

void Host::Impl::note_update(Update::Kind kind, const Thread& thread, const Event* event,
                             std::string text) {
  if (!config.collect_updates) return;
  Update update;
  update.kind = kind;
  update.thread_id = thread.id;
  if (event) update.event = *event;
  update.text = std::move(text);
  pending_updates.push_back(std::move(update));
}

template <typename Call, typename About>
void Host::Impl::call_guarded(std::string_view callback, const Call& call, const About& about) {
  std::string thrown;
  try {
    CallbackScope scope(*this);
    call();
    return;
  } catch (const std::exception& e) {
    thrown = e.what();
  } catch (...) {
    thrown = "an exception that is not a std::exception";
  }
  config.log("error", "the " + std::string(callback) + " callback threw: " + thrown + " (" +
                          about() + "); the host went on as if it had returned");
}

void Host::Impl::notify_event(const Thread& thread, const Event& event) {
  note_update(Update::Kind::event, thread, &event);
  if (auto callback = on_event)
    call_guarded(
        "on_event", [&] { (*callback)(thread, event); },
        [&] {
          return "thread " + thread.id + ", event " + std::to_string(event.id) + " " + event.type;
        });
}

std::vector<Update> Host::updates() {
  impl_->check_thread("updates");
  std::vector<Update> taken;
  taken.swap(impl_->pending_updates);
  return taken;
}

void Host::run() {
  impl_->check_thread("run");
  Impl::DrivingScope driving(*impl_);
  while (!impl_->stop_requested.exchange(false)) {
    impl_->runtime->run_ready(std::nullopt);
    impl_->loop.turn(impl_->runtime->has_ready() ? std::chrono::milliseconds(0)
                                                 : std::chrono::milliseconds(100));
  }
}

void Host::stop() {
  impl_->stop_requested = true;
  impl_->loop.post([] {});  // wakes a run() waiting for I/O
}

void Host::post(std::function<void()> task) {
  if (!task) throw Error(ErrorCode::usage, "Host::post needs a task");
  impl_->loop.post(std::move(task));
}

void Host::tool(const std::string& name, nlohmann::json schema, ToolFunction function) {
  impl_->check_thread("tool");
  if (!function) throw Error(ErrorCode::usage, "host tool '" + name + "' has no function");
  impl_->tools.add(
      HostTool{name,
               std::move(schema),
               [impl = impl_.get(), function = std::move(function)](const nlohmann::json& args) {
                 Impl::CallbackScope scope(*impl);
                 return function(args);
               },
               {},
               nullptr});
}

void Host::async_tool(const std::string& name, nlohmann::json schema, AsyncToolFunction function) {
  impl_->check_thread("async_tool");
  if (!function) throw Error(ErrorCode::usage, "host tool '" + name + "' has no function");
  impl_->tools.add(HostTool{name,
                            std::move(schema),
                            {},
                            [impl = impl_.get(), function = std::move(function)](
                                const nlohmann::json& args, ToolReply reply) {
                              Impl::CallbackScope scope(*impl);
                              function(args, std::move(reply));
                            },
                            nullptr});
}

}  // namespace luagent
