// The lifecycle verbs of the CLI: fork, cancel, the answers `resume` accepts, and the
// markdown rendering of `show --format md`.
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "cli/cli.hpp"

namespace luagent::cli {
namespace {

// One markdown table cell: no newlines, no unescaped pipes, bounded length.
std::string cell(const std::string& text, std::size_t max = 120) {
  std::string out;
  for (char c : text) {
    if (c == '\n' || c == '\r')
      out += ' ';
    else if (c == '|')
      out += "\\|";
    else
      out += c;
  }
  if (out.size() > max) out = out.substr(0, max) + "…";
  return out;
}

std::string brief(const nlohmann::json& data) {
  if (data.is_null()) return "";
  if (data.is_string()) return data.get<std::string>();
  return data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

Resume resume_from_args(const Args& args) {
  int answers =
      has(args, "--approve") + has(args, "--reject") + has(args, "--say") + has(args, "--event");
  if (answers > 1)
    throw Error(ErrorCode::usage,
                "resume takes one of --approve, --reject TEXT, --say TEXT, --event JSON");
  std::string key = option(args, "--key");
  if (answers == 0) {
    if (!key.empty() || has(args, "--by"))
      throw Error(ErrorCode::usage,
                  "--key and --by need an answer (--approve, --reject, --say or --event)");
    return Resume::recover();
  }
  Resume resume;
  if (has(args, "--approve")) {
    resume = Resume::approve(key);
  } else if (has(args, "--reject")) {
    resume = Resume::reject(option(args, "--reject"), key);
  } else if (has(args, "--say")) {
    resume = Resume::say(option(args, "--say"), key);
  } else {
    auto json = nlohmann::json::parse(option(args, "--event"), nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded())
      throw Error(ErrorCode::usage, "--event is not JSON; give {\"type\": \"...\", \"data\": ...}");
    if (!json.is_object() || !json.contains("type") || !json["type"].is_string() ||
        json["type"].get_ref<const std::string&>().empty())
      throw Error(ErrorCode::usage,
                  "--event needs a JSON object with a non-empty string \"type\" "
                  "(and optional \"data\")");
    for (const auto& [field, value] : json.items())
      if (field != "type" && field != "data")
        throw Error(ErrorCode::usage, "--event: unknown field \"" + field +
                                          "\" (an event is {\"type\", \"data\"}; use --key K)");
    resume = Resume::with_event(json["type"].get<std::string>(),
                                json.value("data", nlohmann::json()), key);
  }
  if (has(args, "--by")) {
    // Who answered, for the record (show --format md lists approvals with it).
    // Only into object data: wrapping a text answer would change what the model reads.
    if (!resume.event.data.is_object())
      throw Error(ErrorCode::usage,
                  "--by goes with --approve, --reject or an --event whose data is an object");
    resume.event.data["by"] = option(args, "--by");
  }
  return resume;
}

void print_replayed(const Args& args, const Style& style, const std::string& thread_id,
                    const ResumeResult& result) {
  if (args.json) {
    std::cout << nlohmann::json({{"thread_id", thread_id}, {"replayed", true}}).dump() << "\n";
    for (const Event& event : result.events) print_event_json(thread_id, event);
  } else {
    std::cout << style.yellow("replayed") << "  this answer was given before (key "
              << result.events.front().key << "); it was not taken again. What followed it:\n";
    for (const Event& event : result.events) print_event(style, event);
  }
}

int command_fork(const Args& args) {
  if (args.positional.size() != 1)
    throw Error(ErrorCode::usage, "fork needs exactly one THREAD id and --at N");
  if (!has(args, "--at")) throw Error(ErrorCode::usage, "fork needs --at N (the last event kept)");
  std::int64_t at = positive_integer(option(args, "--at"), "--at");
  luagent::Host host(stored_threads_config(args));
  std::string id = host.fork(args.positional[0], at);
  Thread fork = host.get(id);
  if (args.json) {
    std::cout << nlohmann::json({{"thread_id", id},
                                 {"parent_id", fork.parent_id},
                                 {"parent_event", fork.parent_event},
                                 {"status", luagent::status_name(fork.status())},
                                 {"version", fork.version()}})
                     .dump()
              << "\n";
  } else {
    std::cout << "forked " << fork.parent_id << " at event " << at << " into thread " << id << " ("
              << luagent::status_name(fork.status()) << ")\n";
  }
  return kExitDone;
}

int command_cancel(const Args& args) {
  if (args.positional.size() != 1)
    throw Error(ErrorCode::usage, "cancel needs exactly one THREAD id");
  luagent::Host host(stored_threads_config(args));
  Event cancelled = host.cancel(args.positional[0], option(args, "--reason"));
  if (args.json)
    print_event_json(args.positional[0], cancelled);
  else
    std::cout << "cancelled  thread " << args.positional[0] << "\n";
  return kExitDone;
}

void print_markdown(Host& host, const Thread& thread) {
  std::ostringstream md;
  md << "# Thread " << thread.id << "\n\n"
     << "- agent: `" << thread.agent << "`\n"
     << "- status: **" << luagent::status_name(thread.status()) << "**\n"
     << "- created: " << luagent::format_utc(thread.created_ms) << "\n"
     << "- events: " << thread.version() << "\n";
  if (!thread.parent_id.empty())
    md << "- forked from: " << thread.parent_id << " at event " << thread.parent_event << "\n";

  md << "\n## Events\n\n| # | at | type | data | agent version |\n|---|---|---|---|---|\n";
  for (const Event& event : thread.events)
    md << "| " << event.id << " | " << luagent::format_utc(event.at_ms) << " | " << event.type
       << " | " << cell(brief(event.data)) << " | " << (event.version.empty() ? "—" : event.version)
       << " |\n";

  auto calls = host.calls(thread.id);
  md << "\n## LLM calls\n\n";
  if (calls.empty()) {
    md << "None recorded.\n";
  } else {
    md << "| after event | provider | model | input tokens | output tokens | latency ms | "
          "attempts | ok |\n|---|---|---|---|---|---|---|---|\n";
    std::int64_t input = 0, output = 0, latency = 0;
    for (const auto& call : calls) {
      input += call.value("input_tokens", std::int64_t{0});
      output += call.value("output_tokens", std::int64_t{0});
      latency += call.value("latency_ms", std::int64_t{0});
      md << "| " << call.value("event", std::int64_t{0}) << " | " << call.value("provider", "")
         << " | " << call.value("model", "") << " | " << call.value("input_tokens", 0) << " | "
         << call.value("output_tokens", 0) << " | " << call.value("latency_ms", 0) << " | "
         << call.value("attempts", 1) << " | " << (call.value("ok", false) ? "yes" : "no")
         << " |\n";
    }
    md << "\nTotal: " << calls.size() << " calls, " << input << " input and " << output
       << " output tokens, " << latency << " ms.\n";
  }

  md << "\n## Decisions by humans\n\n";
  bool any = false;
  for (std::size_t i = 0; i < thread.events.size(); ++i) {
    const Event& answer = thread.events[i];
    if (answer.type == event_type::user_input || answer.type == event_type::await) continue;
    bool from_outside = answer.version.empty() && i > 0;  // written by the CLI or a webhook
    if (!from_outside || answer.type == event_type::outcome_unknown ||
        answer.type == event_type::cancelled)
      continue;
    const Event* await =
        i > 0 && thread.events[i - 1].type == event_type::await ? &thread.events[i - 1] : nullptr;
    std::string who = answer.data.is_object() && answer.data.contains("by")
                          ? brief(answer.data["by"])
                          : "unattributed";
    std::string what;
    if (answer.type == event_type::approval)
      what = answer.data.value("approved", false) ? "approved" : "rejected";
    else
      what = "answered (" + answer.type + ")";
    md << "- " << luagent::format_utc(answer.at_ms) << ": **" << what << "** by " << who;
    if (await && await->data.contains("payload"))
      md << " — " << cell(brief(await->data["payload"]));
    if (answer.data.is_object() && answer.data.contains("comment"))
      md << " — comment: " << cell(brief(answer.data["comment"]));
    else if (answer.data.is_string())
      md << " — " << cell(answer.data.get<std::string>());
    if (!answer.key.empty()) md << " (key `" << answer.key << "`)";
    md << " [event " << answer.id << "]\n";
    any = true;
  }
  for (const Event& event : thread.events)
    if (event.type == event_type::cancelled) {
      md << "- " << luagent::format_utc(event.at_ms) << ": **cancelled**";
      if (event.data.is_object() && event.data.contains("reason"))
        md << " — " << cell(brief(event.data["reason"]));
      md << " [event " << event.id << "]\n";
      any = true;
    }
  if (!any) md << "None.\n";
  std::cout << md.str();
}

}  // namespace luagent::cli
