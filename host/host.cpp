// Host: wires the store, the provider and the agent runtime together and
// implements the verbs (launch, resume, get, list) on top of them.
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "agent_runtime.hpp"
#include "event_loop.hpp"
#include "llm/provider_factory.hpp"
#include "llm/replay_provider.hpp"
#include "luagent/luagent.hpp"
#include "store/store.hpp"

namespace luagent {
namespace {

std::string env_or(const char* name, const std::string& fallback = {}) {
  const char* value = std::getenv(name);
  return value && *value ? std::string(value) : fallback;
}

// Flags (already in `value`) win over the environment, the environment over the config.
std::string pick(const std::string& value, const char* env, const nlohmann::json& config,
                 const char* key) {
  if (!value.empty()) return value;
  if (std::string from_env = env ? env_or(env) : std::string(); !from_env.empty()) return from_env;
  if (config.contains(key)) {
    if (!config[key].is_string())
      throw Error(ErrorCode::config,
                  std::string("luagent.config.lua: '") + key + "' must be a string");
    return config[key].get<std::string>();
  }
  return {};
}

// A file setting: flags and the environment are relative to the working directory,
// the config file's entries to the config file's folder.
std::filesystem::path path_setting(const std::filesystem::path& flag, const char* env,
                                   const nlohmann::json& config, const char* key,
                                   const std::filesystem::path& config_dir) {
  if (!flag.empty()) return flag;
  if (std::string from_env = env_or(env); !from_env.empty()) return from_env;
  std::string from_config = pick({}, nullptr, config, key);
  if (from_config.empty()) return {};
  std::filesystem::path path(from_config);
  return path.is_absolute() || config_dir.empty() ? path : config_dir / path;
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

struct Host::Impl {
  HostConfig config;
  EventLoop loop;
  std::unique_ptr<Store> store;
  std::unique_ptr<AgentRuntime> runtime;
  std::unique_ptr<llm::Provider> provider;
  std::function<void(const Thread&, const Event&)> on_event;
  // Embedding: tools, updates, the owning thread and run()'s stop flag.
  HostTools tools;
  std::vector<Update> pending_updates;
  std::thread::id owner = std::this_thread::get_id();
  bool driving = false;  // inside pump()/run(): a callback must not drive the loop again
  std::atomic<bool> stop_requested{false};

  ~Impl() {
    if (tools.gate) tools.gate->close();
  }

  void check_thread(const char* verb) const;
  void note_update(Update::Kind kind, const Thread& thread, const Event* event,
                   std::string text = {});

  void open(HostConfig host_config) {
    config = std::move(host_config);
    if (!config.log) {
      config.log = [](std::string_view level, std::string_view message) {
        if (level == "debug" && std::getenv("LUAGENT_DEBUG") == nullptr) return;
        std::cerr << "[" << level << "] " << message << "\n";
      };
    }
    RuntimeServices services;
    services.loop = &loop;
    services.log = config.log;
    services.stdlib_dir = config.stdlib_dir;
    tools.gate = std::make_shared<LoopGate>(&loop);
    services.tools = &tools;
    runtime = make_lua_runtime(services);

    nlohmann::json file_config = nlohmann::json::object();
    std::filesystem::path config_dir;
    if (!config.config_file.empty()) {
      if (!std::filesystem::exists(config.config_file))
        throw Error(ErrorCode::config, "no config file " + config.config_file.string());
      file_config = runtime->load_config(config.config_file);
      config_dir = config.config_file.parent_path();
    }
    RuntimeLimits limits;
    if (auto found = file_config.find("limits"); found != file_config.end() && found->is_object()) {
      limits.step_cpu_ms = found->value("step_cpu_ms", limits.step_cpu_ms);
      limits.memory_mb = found->value("memory_mb", limits.memory_mb);
    }
    if (config.step_cpu_ms > 0) limits.step_cpu_ms = config.step_cpu_ms;
    if (config.memory_mb > 0) limits.memory_mb = config.memory_mb;
    if (limits.step_cpu_ms != 5000 || limits.memory_mb != 256) {
      services.limits = limits;
      runtime = make_lua_runtime(services);  // limits are fixed when the state is made
    }

    std::string store_uri = pick(config.store, "LUAGENT_STORE", file_config, "store");
    if (store_uri.empty()) store_uri = std::string(kDefaultStoreUri);
    store = open_store(store_uri);
    runtime->set_store(store.get());

    std::string provider_name = pick(config.provider, "LUAGENT_PROVIDER", file_config, "provider");
    std::string model = pick(config.model, "LUAGENT_MODEL", file_config, "model");
    auto cassette =
        path_setting(config.cassette, "LUAGENT_CASSETTE", file_config, "cassette", config_dir);
    auto script = path_setting(config.script, "LUAGENT_SCRIPT", file_config, "script", config_dir);
    auto record =
        config.record.empty() ? std::filesystem::path(env_or("LUAGENT_RECORD")) : config.record;
    if (provider_name == "replay") {
      if (cassette.empty())
        throw Error(ErrorCode::config,
                    "the replay provider needs a cassette (--cassette FILE, LUAGENT_CASSETTE or "
                    "cassette = ... in luagent.config.lua)");
      provider = std::make_unique<llm::ReplayProvider>(loop, cassette, config.replay_latency);
    } else if (provider_name == "script") {
      if (script.empty())
        throw Error(ErrorCode::config,
                    "the script provider needs a Lua model file (script = ... in "
                    "luagent.config.lua or LUAGENT_SCRIPT)");
      provider = runtime->make_script_provider(script);
    } else if (llm::is_http_provider(provider_name)) {
      provider = llm::make_http_provider(
          provider_name, llm::http_provider_config(provider_name, file_config, model), loop);
    } else if (!provider_name.empty()) {
      throw Error(ErrorCode::config, "unknown provider '" + provider_name +
                                         "' (available: openai, anthropic, replay, script)");
    }
    if (provider && !record.empty())
      provider = std::make_unique<llm::RecordingProvider>(std::move(provider), record);
    runtime->set_provider(provider.get());
  }

  std::filesystem::path resolve_agent(const std::string& agent) const {
    std::filesystem::path as_path(agent);
    if (std::filesystem::is_directory(as_path)) return as_path;
    if (as_path.filename() == "agent.lua" && std::filesystem::exists(as_path))
      return as_path.parent_path().empty() ? "." : as_path.parent_path();
    auto under = config.agents_dir / agent;
    if (std::filesystem::is_directory(under)) return under;
    throw Error(ErrorCode::not_found, "no agent '" + agent + "' (looked for " + agent +
                                          "/agent.lua and " + under.string() + "/agent.lua)");
  }

  void start(const AgentInfo& agent, Thread thread) {
    RunCallbacks callbacks;
    callbacks.on_event = [this](const Thread& t, const Event& e) {
      note_update(Update::Kind::event, t, &e);
      if (on_event) on_event(t, e);
    };
    callbacks.on_finished = [this](const Thread& t, const std::optional<Error>& error) {
      if (error) config.log("error", "thread " + t.id + ": " + error->what());
      note_finished(t, error);
    };
    callbacks.on_chunk = [this](const Thread& t, std::string_view text) {
      note_update(Update::Kind::chunk, t, nullptr, std::string(text));
    };
    runtime->start_step(agent, std::move(thread), std::move(callbacks));
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
        note_update(Update::Kind::failed, thread, last, error ? error->what() : "");
    }
  }
};

Host::Host(HostConfig config) : impl_(std::make_unique<Impl>()) {
  impl_->open(std::move(config));
}
Host::~Host() = default;

void Host::on_event(std::function<void(const Thread&, const Event&)> callback) {
  impl_->on_event = std::move(callback);
}

std::string Host::launch(const std::string& agent, Event first) {
  impl_->check_thread("launch");
  AgentInfo info = impl_->runtime->load_agent(impl_->resolve_agent(agent));
  Thread thread;
  thread.id = new_thread_id();
  thread.agent = info.name;
  thread.agent_path = info.dir.string();
  thread.created_ms = now_ms();
  thread.events.push_back(std::move(first));
  impl_->store->create(thread);
  for (const Event& event : thread.events) {
    impl_->note_update(Update::Kind::event, thread, &event);
    if (impl_->on_event) impl_->on_event(thread, event);
  }
  std::string id = thread.id;
  impl_->start(info, std::move(thread));
  return id;
}

void Host::resume(const std::string& thread_id, Resume resume) {
  impl_->check_thread("resume");
  Thread thread = impl_->store->load(thread_id);
  Status status = thread.status();
  const std::string& type = resume.event.type;
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
  std::filesystem::path agent_dir = thread.agent_path.empty()
                                        ? impl_->resolve_agent(thread.agent)
                                        : std::filesystem::path(thread.agent_path);
  AgentInfo info = impl_->runtime->load_agent(agent_dir);
  auto appended = impl_->store->append(thread.id, thread.version(), {std::move(resume.event)});
  if (appended.replayed) return;  // the same answer was given before; nothing runs again
  for (Event& event : appended.events) {
    thread.events.push_back(event);
    impl_->note_update(Update::Kind::event, thread, &event);
    if (impl_->on_event) impl_->on_event(thread, event);
  }
  impl_->start(info, std::move(thread));
}

Thread Host::get(const std::string& thread_id) {
  return impl_->store->load(thread_id);
}

std::vector<ThreadSummary> Host::list(std::optional<Status> status, const std::string& agent) {
  ListFilter filter;
  filter.status = status;
  filter.agent = agent;
  return impl_->store->list(filter);
}

std::string Host::render_context(const Thread& thread) {
  return impl_->runtime->render_context(thread);
}

std::vector<nlohmann::json> Host::calls(const std::string& thread_id) {
  return impl_->store->calls(thread_id);
}

std::size_t Host::pump(std::chrono::microseconds budget) {
  impl_->check_thread("pump");
  impl_->driving = true;
  struct Release {
    bool& flag;
    ~Release() { flag = false; }
  } release{impl_->driving};
  auto deadline = Clock::now() + budget;
  // Never waits: take what the I/O has delivered, run what is ready, repeat while either
  // makes progress and the budget lasts.
  do {
    int completions = impl_->loop.turn(std::chrono::milliseconds(0));
    std::size_t resumed = impl_->runtime->run_ready(deadline);
    if (completions == 0 && resumed == 0 && !impl_->runtime->has_ready()) break;
  } while (Clock::now() < deadline);
  return impl_->runtime->runs_in_flight();
}

void Host::run_until_idle() {
  impl_->check_thread("run_until_idle");
  impl_->driving = true;
  struct Release {
    bool& flag;
    ~Release() { flag = false; }
  } release{impl_->driving};
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
  if (driving && (std::string_view(verb) == "pump" || std::string_view(verb) == "run" ||
                  std::string_view(verb) == "run_until_idle"))
    throw Error(ErrorCode::usage, std::string("Host::") + verb +
                                      " called from inside a callback of the host's own loop");
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

void Host::cancel(const ThreadId& thread_id) {
  impl_->check_thread("cancel");
  if (impl_->runtime->cancel_run(thread_id)) return;
  Thread thread = impl_->store->load(thread_id);
  Status status = thread.status();
  if (status == Status::done || status == Status::failed || status == Status::cancelled)
    throw Error(ErrorCode::conflict, "thread " + thread_id + " has already ended (" +
                                         std::string(status_name(status)) + ")");
  auto appended = impl_->store->append(thread.id, thread.version(),
                                       {Event::make(std::string(event_type::cancelled), nullptr)});
  for (Event& event : appended.events) {
    thread.events.push_back(event);
    impl_->note_update(Update::Kind::event, thread, &event);
    if (impl_->on_event) impl_->on_event(thread, event);
  }
  impl_->note_finished(thread, std::nullopt);
}

std::vector<Update> Host::updates() {
  impl_->check_thread("updates");
  std::vector<Update> taken;
  taken.swap(impl_->pending_updates);
  return taken;
}

void Host::run() {
  impl_->check_thread("run");
  impl_->driving = true;
  struct Release {
    bool& flag;
    ~Release() { flag = false; }
  } release{impl_->driving};
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
  impl_->tools.add(HostTool{name, std::move(schema), std::move(function), {}});
}

void Host::async_tool(const std::string& name, nlohmann::json schema, AsyncToolFunction function) {
  impl_->check_thread("async_tool");
  if (!function) throw Error(ErrorCode::usage, "host tool '" + name + "' has no function");
  impl_->tools.add(HostTool{name, std::move(schema), {}, std::move(function)});
}

}  // namespace luagent
