// Shared pieces of the luagent command line: arguments, output, exit codes.
// Each command lives in its own file (thread_commands.cpp, ...) and is listed in
// main.cpp's command table.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "luagent/luagent.hpp"

namespace luagent::cli {

// Exit codes (DESIGN.md).
constexpr int kExitDone = 0;
constexpr int kExitAgentError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitWaiting = 10;

struct Args {
  std::string command;
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;
  bool json = false;
};

/// Parses argv. Options that take a value and switches are listed in cli_args.cpp;
/// anything else starting with -- is a usage error.
Args parse_args(int argc, char** argv);
std::string option(const Args& args, const std::string& name, const std::string& fallback = {});
bool has(const Args& args, const std::string& name);
/// `text` as an integer of at least 1; throws Error(usage) naming `what` otherwise.
std::int64_t positive_integer(const std::string& text, const std::string& what);

/// Colours on a TTY (unless NO_COLOR), plain text otherwise.
struct Style {
  bool color = false;
  std::string paint(const std::string& text, const char* code) const {
    return color ? std::string("\033[") + code + "m" + text + "\033[0m" : text;
  }
  std::string dim(const std::string& t) const { return paint(t, "2"); }
  std::string bold(const std::string& t) const { return paint(t, "1"); }
  std::string green(const std::string& t) const { return paint(t, "32"); }
  std::string yellow(const std::string& t) const { return paint(t, "33"); }
  std::string red(const std::string& t) const { return paint(t, "31"); }
  std::string cyan(const std::string& t) const { return paint(t, "36"); }
};

Style make_style(bool json);
/// One event as a line: "  3 multiply        a: 3  b: 4".
void print_event(const Style& style, const Event& event);
/// One event as a JSON line {"thread_id", "event"}.
void print_event_json(const std::string& thread_id, const Event& event);
/// Prints how the thread stands (and what to do next); returns the exit code for it.
int report_outcome(const Args& args, const Style& style, const Thread& thread);
int exit_code_for(Status status);
/// The exit code for an Error that ends a command, by its code (docs/errors.md).
int exit_code_for(const Error& error);

/// Host settings from the common flags; the config file is looked up next to the agent.
HostConfig host_config(const Args& args, const std::filesystem::path& agent_dir);
/// Host settings for the commands that read or edit stored threads and run no agent (show,
/// threads, fork, cancel; the readers of dev and replay): the store as `run` picks it
/// (--store, LUAGENT_STORE, the config file's `store`, the default), which must exist, and
/// nothing else from the config file (looked up as host_config() does).
HostConfig stored_threads_config(const Args& args, const std::filesystem::path& agent_dir = {});
/// The folder an AGENT argument names (empty when it names none).
std::filesystem::path agent_dir_of(const Args& args, const std::string& agent);
/// The folder of the agent that owns a stored thread.
std::filesystem::path agent_dir_of_thread(const Args& args, const std::string& thread_id);
/// Prints every stored event as it happens (text or --json).
void attach_printer(Host& host, const Args& args, const Style& style);

// Commands: each returns the process exit code and throws Error for usage problems.
int command_run(const Args& args);
int command_resume(const Args& args);
int command_show(const Args& args);
int command_threads(const Args& args);
int command_dev(const Args& args);
int command_replay(const Args& args);
int command_eval(const Args& args);
// lifecycle_commands.cpp
int command_fork(const Args& args);
int command_cancel(const Args& args);
/// The answer a `resume` command gives (--approve/--reject/--say/--event, --key, --by);
/// Resume::recover() when none is given.
Resume resume_from_args(const Args& args);
/// Prints what a resume returned when its key had been used before (the first outcome).
void print_replayed(const Args& args, const Style& style, const std::string& thread_id,
                    const ResumeResult& result);
/// `show --format md`: the thread as markdown (events, LLM calls, approvals).
void print_markdown(Host& host, const Thread& thread);

}  // namespace luagent::cli
