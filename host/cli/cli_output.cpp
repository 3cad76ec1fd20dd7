#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>

#include "cli/cli.hpp"

namespace luagent::cli {

Style make_style(bool json) {
  Style style;
  style.color = !json && isatty(STDOUT_FILENO) && std::getenv("NO_COLOR") == nullptr;
  return style;
}

namespace {

std::string scalar_text(const nlohmann::json& value) {
  return value.is_string() ? value.get<std::string>() : value.dump();
}

std::string summarize(const Event& event) {
  const auto& data = event.data;
  if (data.is_null()) return "";
  if (!data.is_object()) return scalar_text(data);
  if (event.type == "await") {
    std::string text = data.value("kind", "?");
    if (data.contains("payload")) text += " " + summarize(Event{0, "", data["payload"], 0, {}, {}});
    return text;
  }
  // Tool events point at their call by event id; show the result first.
  if (data.contains("call") && (event.type == "tool_response" || event.type == "tool_started" ||
                                event.type == "outcome_unknown")) {
    std::string call = "(call " + scalar_text(data["call"]) + ")";
    if (data.contains("error")) return "error: " + scalar_text(data["error"]) + "  " + call;
    if (data.contains("result")) return scalar_text(data["result"]) + "  " + call;
    return call;
  }
  std::string text;
  for (const auto& [key, value] : data.items()) {
    if (key == "intent") continue;
    if (!text.empty()) text += "  ";
    text += key + ": " + scalar_text(value);
  }
  return text;
}

bool is_internal(const std::string& type) {
  return type == "tool_started" || type == "await" || type == "done";
}

}  // namespace

void print_event(const Style& style, const Event& event) {
  std::string id = std::to_string(event.id);
  std::string type = event.type;
  std::string line =
      style.dim(std::string(4 - std::min<std::size_t>(4, id.size()), ' ') + id) + " ";
  std::string padded = type + std::string(type.size() < 16 ? 16 - type.size() : 1, ' ');
  if (type == "failed" || type == "error" || type == "outcome_unknown")
    padded = style.red(padded);
  else if (type == "user_input" || type == "human_response" || type == "approval")
    padded = style.cyan(padded);
  else if (is_internal(type))
    padded = style.dim(padded);
  else
    padded = style.bold(padded);
  std::cout << line << padded << summarize(event) << "\n";
}

void print_event_json(const std::string& thread_id, const Event& event) {
  nlohmann::json line = {{"thread_id", thread_id}, {"event", luagent::to_json(event)}};
  std::cout << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

int exit_code_for(Status status) {
  switch (status) {
    case Status::done:
      return kExitDone;
    case Status::awaiting_human:
    case Status::awaiting_approval:
      return kExitWaiting;
    case Status::running:
    case Status::failed:
    case Status::cancelled:
      return kExitAgentError;
  }
  return kExitAgentError;
}

int exit_code_for(const Error& error) {
  // docs/errors.md: the caller's mistakes, a bad script or config, and the store exit 2; an
  // agent, a model or luagent itself failing exits 1.
  switch (error.code()) {
    case ErrorCode::usage:
    case ErrorCode::not_found:
    case ErrorCode::conflict:
    case ErrorCode::config:
    case ErrorCode::syntax:
    case ErrorCode::io:
    case ErrorCode::corrupt:
    case ErrorCode::schema_version:
      return kExitUsage;
    default:
      return kExitAgentError;
  }
}

int report_outcome(const Args& args, const Style& style, const Thread& thread) {
  Status status = thread.status();
  if (args.json) {
    std::cout << nlohmann::json({{"thread_id", thread.id},
                                 {"status", luagent::status_name(status)},
                                 {"version", thread.version()}})
                     .dump()
              << "\n";
    return exit_code_for(status);
  }
  std::string name(luagent::status_name(status));
  std::string id = thread.id;
  switch (status) {
    case Status::awaiting_approval:
      std::cout << style.yellow("waiting for approval") << "  thread " << id << "\n"
                << "  approve: luagent resume " << id << " --approve\n"
                << "  reject:  luagent resume " << id << " --reject \"why\"\n";
      break;
    case Status::awaiting_human:
      std::cout << style.yellow("waiting for a human") << "  thread " << id << "\n"
                << "  answer:  luagent resume " << id << " --say \"...\"\n";
      break;
    case Status::done:
      std::cout << style.green("done") << "  thread " << id << "\n";
      break;
    default:
      std::cout << style.red(name) << "  thread " << id << "\n";
  }
  return exit_code_for(status);
}

}  // namespace luagent::cli
