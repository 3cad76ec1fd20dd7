// The thread verbs of the CLI: run, resume, show, threads.
#include <unistd.h>

#include <iostream>
#include <optional>

#include "bounded_read.hpp"
#include "cli/cli.hpp"

namespace luagent::cli {

namespace {

// The look-ups below take the error_code forms: a name the file system cannot take (longer
// than NAME_MAX) names nothing, where the throwing forms ended in "internal error".
std::filesystem::path find_config(const Args& args, const std::filesystem::path& agent_dir) {
  if (has(args, "--config")) return option(args, "--config");
  std::error_code ec;
  if (std::filesystem::exists("luagent.config.lua", ec)) return "luagent.config.lua";
  if (!agent_dir.empty() && std::filesystem::exists(agent_dir / "luagent.config.lua", ec))
    return agent_dir / "luagent.config.lua";
  return {};
}

}  // namespace

luagent::HostConfig host_config(const Args& args, const std::filesystem::path& agent_dir) {
  luagent::HostConfig config;
  config.store = option(args, "--store");
  config.provider = option(args, "--provider");
  config.model = option(args, "--model");
  config.cassette = option(args, "--cassette");
  config.agents_dir = option(args, "--agents", ".");
  config.config_file = find_config(args, agent_dir);
  config.settings_from_flags = true;
  return config;
}

luagent::HostConfig stored_threads_config(const Args& args,
                                          const std::filesystem::path& agent_dir) {
  luagent::HostConfig config;
  config.store = option(args, "--store");
  config.config_file = find_config(args, agent_dir);
  config.store_settings_only = true;
  config.store_must_exist = true;
  config.settings_from_flags = true;
  return config;
}

// The folder an AGENT argument names, for finding its luagent.config.lua.
std::filesystem::path agent_dir_of(const Args& args, const std::string& agent) {
  std::filesystem::path path(agent);
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return path;
  // A path to the agent.lua itself names its folder, as Host::launch reads it (the config
  // next to it was missed: "no LLM provider is configured").
  if (path.filename() == "agent.lua" && std::filesystem::is_regular_file(path, ec))
    return path.parent_path().empty() ? "." : path.parent_path();
  auto under = std::filesystem::path(option(args, "--agents", ".")) / agent;
  if (std::filesystem::is_directory(under, ec)) return under;
  return {};
}

std::filesystem::path agent_dir_of_thread(const Args& args, const std::string& thread_id) {
  luagent::HostConfig probe;
  probe.store = option(args, "--store");
  probe.config_file = find_config(args, {});
  probe.store_must_exist = true;
  probe.settings_from_flags = true;
  luagent::Host reader(probe);
  return reader.get(thread_id).agent_path;
}

void attach_printer(luagent::Host& host, const Args& args, const Style& style) {
  host.on_event([&args, style](const Thread& thread, const Event& event) {
    if (args.json)
      print_event_json(thread.id, event);
    else
      print_event(style, event);
    std::cout.flush();
  });
}

int command_run(const Args& args) {
  if (args.positional.empty())
    throw Error(ErrorCode::usage, "run needs an AGENT (see luagent --help)");
  if (args.positional.size() > 2)
    throw Error(ErrorCode::usage, "run takes AGENT and one MESSAGE; quote the message");
  std::string message;
  if (args.positional.size() == 2) {
    message = args.positional[1];
  } else if (!isatty(STDIN_FILENO)) {
    // Bounded: `run A < /dev/zero` read until memory ran out.
    if (!luagent::read_at_most(std::cin, 16 * 1024 * 1024, message))
      throw Error(ErrorCode::usage, "the MESSAGE on stdin is larger than 16 MiB");
    while (!message.empty() && (message.back() == '\n' || message.back() == '\r'))
      message.pop_back();
  }
  if (message.empty()) throw Error(ErrorCode::usage, "run needs a MESSAGE (argument or stdin)");
  const std::string& agent = args.positional[0];
  Style style = make_style(args.json);
  luagent::Host host(host_config(args, agent_dir_of(args, agent)));
  attach_printer(host, args, style);
  std::string id = host.launch(agent, Event::user(message));
  host.run_until_idle();
  return report_outcome(args, style, host.get(id));
}

int command_resume(const Args& args) {
  if (args.positional.size() != 1)
    throw Error(ErrorCode::usage, "resume needs exactly one THREAD id");
  luagent::Resume resume = resume_from_args(args);
  const std::string& id = args.positional[0];
  std::filesystem::path agent_dir = agent_dir_of_thread(args, id);
  Style style = make_style(args.json);
  luagent::HostConfig config = host_config(args, agent_dir);
  config.store_must_exist = true;
  luagent::Host host(config);
  attach_printer(host, args, style);
  auto resumed = host.resume(id, std::move(resume));
  if (resumed.replayed) {
    print_replayed(args, style, id, resumed);
    // The first answer's step stopped before the thread did (its process ended): a retry
    // goes on with it, as `resume THREAD` would. One live in another process is a conflict.
    if (host.get(id).status() == Status::running) host.resume(id, luagent::Resume::recover());
  }
  host.run_until_idle();
  return report_outcome(args, style, host.get(id));
}

int command_show(const Args& args) {
  if (args.positional.size() != 1)
    throw Error(ErrorCode::usage, "show needs exactly one THREAD id");
  std::string format = option(args, "--format", args.json ? "json" : "text");
  if (format != "text" && format != "json" && format != "llm" && format != "md")
    throw Error(ErrorCode::usage, "--format must be text, json, llm or md, not '" + format + "'");
  luagent::Host host(stored_threads_config(args));
  Thread thread = host.get(args.positional[0]);
  if (format == "json") {
    nlohmann::json json = luagent::to_json(thread);
    json["llm_calls"] = host.calls(thread.id);
    std::cout << json.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else if (format == "md") {
    print_markdown(host, thread);
  } else if (format == "llm") {
    std::cout << host.render_context(thread) << "\n";
  } else {
    Style style = make_style(false);
    std::cout << style.bold("thread " + thread.id) << "  agent " << thread.agent << "  "
              << luagent::status_name(thread.status()) << "  created "
              << luagent::format_utc(thread.created_ms) << "\n";
    for (const Event& event : thread.events) print_event(style, event);
  }
  return kExitDone;
}

int command_threads(const Args& args) {
  if (!args.positional.empty()) throw Error(ErrorCode::usage, "threads takes no arguments");
  std::optional<Status> status;
  if (has(args, "--status")) {
    status = luagent::status_from_name(option(args, "--status"));
    if (!status)
      throw Error(ErrorCode::usage,
                  "--status must be one of running, awaiting_human, "
                  "awaiting_approval, done, failed, cancelled");
  }
  luagent::Host host(stored_threads_config(args));
  luagent::ThreadQuery query;
  query.status = status;
  query.agent = option(args, "--agent");
  // Checked here in the flags' own words: ThreadQuery reads 0 as "no bound", so --before
  // 1970-01-01T00:00:00.000Z would list every thread, and its refusals name C++ fields.
  auto time_flag = [&](const char* flag) {
    std::int64_t ms = luagent::parse_utc(option(args, flag));
    if (ms <= 0)
      throw Error(ErrorCode::usage, std::string(flag) + " must be after 1970-01-01T00:00:00.000Z");
    return ms;
  };
  if (has(args, "--since")) query.updated_since_ms = time_flag("--since");
  if (has(args, "--before")) query.updated_before_ms = time_flag("--before");
  if (query.updated_since_ms > 0 && query.updated_before_ms > 0 &&
      query.updated_before_ms <= query.updated_since_ms)
    throw Error(ErrorCode::usage, "--before (" + option(args, "--before") +
                                      ") must be after --since (" + option(args, "--since") +
                                      "): no thread can match");
  for (const auto& summary : host.list(query)) {
    if (args.json) {
      std::cout << nlohmann::json({{"id", summary.id},
                                   {"agent", summary.agent},
                                   {"status", luagent::status_name(summary.status)},
                                   {"events", summary.version},
                                   {"created", luagent::format_utc(summary.created_ms)},
                                   {"updated", luagent::format_utc(summary.updated_ms)}})
                       // The agent is named after its folder, whose name need not be UTF-8.
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n";
    } else {
      std::cout << summary.id << "  " << summary.agent << "  "
                << luagent::status_name(summary.status) << "  " << summary.version << " events  "
                << luagent::format_utc(summary.updated_ms) << "\n";
    }
  }
  return kExitDone;
}

}  // namespace luagent::cli
