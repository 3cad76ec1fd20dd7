#include "cli/next_decision.hpp"

#include <unistd.h>

#include <cstdlib>

namespace luagent::cli {

std::vector<DecisionPoint> decision_points(const Thread& thread,
                                           const std::vector<nlohmann::json>& calls) {
  std::vector<DecisionPoint> points;
  std::int64_t last_cut = -1;
  for (const auto& call : calls) {
    std::int64_t cut = call.value("event", std::int64_t{-1});
    if (cut < 0 || cut >= thread.version() || cut == last_cut) continue;
    last_cut = cut;
    DecisionPoint point;
    point.before = thread;
    point.before.events.resize(static_cast<std::size_t>(cut));
    const Event& decided = thread.events[static_cast<std::size_t>(cut)];
    point.decided.ok = decided.type != event_type::failed;
    point.decided.type = decided.type;
    point.decided.data = decided.data;
    point.decided.version = decided.version;
    point.decided.prompt = prompt_text(call.value("request", ""));
    points.push_back(std::move(point));
  }
  return points;
}

ScratchHost::ScratchHost(HostConfig config) {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "luagent-scratch-XXXXXX").string();
  if (!mkdtemp(pattern.data()))
    throw Error(ErrorCode::io, "cannot create a scratch folder under " +
                                   std::filesystem::temp_directory_path().string());
  dir_ = pattern;
  config.store = "sqlite:" + (dir_ / "scratch.db").string();
  config.llm_calls_per_step = 1;
  store_ = open_store(config.store);
  host_ = std::make_unique<Host>(std::move(config));
}

ScratchHost::~ScratchHost() {
  host_.reset();
  store_.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void ScratchHost::add(const Thread& thread) {
  Thread copy = thread;
  copy.id = new_thread_id();
  if (copy.created_ms == 0) copy.created_ms = now_ms();
  store_->create(copy);
  queued_.push_back(copy.id);
  host_->continue_thread(copy.id);
}

std::vector<Decision> ScratchHost::run() {
  host_->run_until_idle();
  std::vector<Decision> decisions;
  for (const auto& id : queued_) {
    Decision decision;
    Thread thread = host_->get(id);
    auto calls = host_->calls(id);
    if (calls.empty()) {
      decision.error = "the agent took no decision: it made no LLM call";
      if (!thread.events.empty() && thread.events.back().type == event_type::failed)
        decision.error += " (" + thread.events.back().data.value("message", "") + ")";
    } else {
      const auto& call = calls.front();
      decision.prompt = prompt_text(call.value("request", ""));
      auto cut = static_cast<std::size_t>(call.value("event", std::int64_t{0}));
      if (cut < thread.events.size()) {
        const Event& decided = thread.events[cut];
        decision.type = decided.type;
        decision.data = decided.data;
        decision.version = decided.version;
        decision.ok = decided.type != event_type::failed;
        if (!decision.ok) decision.error = decided.data.value("message", "the step failed");
      } else {
        decision.error = call.value("error", "the LLM call led to no event");
      }
    }
    decisions.push_back(std::move(decision));
  }
  queued_.clear();
  return decisions;
}

std::string describe(const Decision& decision) {
  if (!decision.ok) return "(no decision)";
  std::string text = decision.type;
  if (decision.data.is_object()) {
    for (const auto& [key, value] : decision.data.items()) {
      if (key == "intent") continue;
      text += "  " + key + ": " + (value.is_string() ? value.get<std::string>() : value.dump());
    }
  } else if (!decision.data.is_null()) {
    text += "  " +
            (decision.data.is_string() ? decision.data.get<std::string>() : decision.data.dump());
  }
  return text;
}

std::string prompt_text(const std::string& request_body) {
  auto request = nlohmann::json::parse(request_body, nullptr, false);
  if (request.is_discarded() || !request.is_object() || !request.contains("messages"))
    return request_body;
  std::string text;
  for (const auto& message : request["messages"]) {
    if (!message.is_object()) continue;
    text += "[" + message.value("role", "?") + "]\n";
    const auto& content = message.contains("content") ? message["content"] : nlohmann::json();
    text += content.is_string() ? content.get<std::string>() : content.dump();
    text += "\n";
  }
  return text;
}

Thread thread_from_input(const nlohmann::json& input, const std::filesystem::path& agent_dir) {
  Thread thread;
  thread.agent = agent_dir.filename().string();
  std::error_code ec;
  thread.agent_path = std::filesystem::weakly_canonical(agent_dir, ec).string();
  thread.created_ms = now_ms();
  if (input.is_string()) {
    thread.events.push_back(Event::user(input.get<std::string>()));
    return thread;
  }
  for (const auto& item : input) {
    if (!item.is_object() || !item.contains("type") || !item["type"].is_string())
      throw Error(ErrorCode::usage, "an input event needs type = \"...\" (and data)");
    thread.events.push_back(
        Event::make(item["type"].get<std::string>(), item.value("data", nlohmann::json())));
  }
  return thread;
}

}  // namespace luagent::cli
