#include "host_tools.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include "json_depth.hpp"
#include "json_faults.hpp"
#include "luagent/error.hpp"

namespace luagent {

// What schema errors call a host tool's arguments as a whole (a model's reply is "reply").
constexpr std::string_view kArgumentsSubject = "top level";

bool LoopGate::post(EventLoop::Task task) {
  std::lock_guard lock(mutex_);
  if (!loop_) return false;
  loop_->post(std::move(task));
  return true;
}

void LoopGate::close() {
  std::lock_guard lock(mutex_);
  loop_ = nullptr;
}

void HostTools::add(HostTool tool) {
  bool valid_name =
      !tool.name.empty() && tool.name.size() <= 64 &&
      std::all_of(tool.name.begin(), tool.name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
      });
  if (!valid_name)
    throw Error(ErrorCode::usage,
                "host tool name '" + tool.name + "' must be 1-64 letters, digits, '_', '.' or '-'");
  if (!tool.schema.is_null() && !tool.schema.is_object())
    throw Error(ErrorCode::usage,
                "host tool '" + tool.name + "': the schema must be a JSON object (or null)");
  if (!tool.sync && !tool.async)
    throw Error(ErrorCode::usage, "host tool '" + tool.name + "' has no function");
  if (tools_.count(tool.name))
    throw Error(ErrorCode::conflict, "host tool '" + tool.name + "' is already registered");
  // Compiled now, so a mistake in the schema is reported by Host::tool, not by the
  // first agent that calls the tool.
  if (!tool.schema.is_null()) {
    try {
      tool.compiled_schema =
          std::make_shared<llm::CompiledSchema>(llm::expand_schema(tool.schema), kArgumentsSubject);
    } catch (const Error& e) {
      throw Error(ErrorCode::usage, "host tool '" + tool.name + "': " + e.message());
    }
  }
  std::string name = tool.name;
  tools_.emplace(std::move(name), std::move(tool));
}

nlohmann::json HostTool::checked_args(nlohmann::json args) const {
  if (!compiled_schema) return args;
  std::vector<std::string> repairs;  // the coercions are not reported: the call goes on
  try {
    llm::coerce_and_validate(args, *compiled_schema, repairs, kArgumentsSubject);
  } catch (const Error& e) {
    throw Error(ErrorCode::usage, "host tool '" + name + "': bad arguments: " + e.message());
  }
  return args;
}

const HostTool* HostTools::find(const std::string& name) const {
  auto found = tools_.find(name);
  return found == tools_.end() ? nullptr : &found->second;
}

std::vector<std::string> HostTools::names() const {
  std::vector<std::string> names;
  for (const auto& [name, tool] : tools_) names.push_back(name);
  return names;
}

std::string unrepresentable_in(const nlohmann::json& result) {
  auto fault = first_json_fault(result, kMaxJsonDepth);
  return fault ? fault->text() : std::string();
}

ToolReply::State::~State() {
  if (!answered && deliver) deliver(std::nullopt, "the tool dropped its reply without answering");
}

ToolReply::ToolReply(std::shared_ptr<State> state) : state_(std::move(state)) {
  if (!state_)
    throw Error(ErrorCode::usage, "ToolReply: no call to answer (the host makes replies)");
}

namespace {
// A reply moved from (into a lambda, a queue) keeps no state: the copy it went to answers.
void check_not_moved_from(const std::shared_ptr<ToolReply::State>& state, const char* verb) {
  if (!state)
    throw Error(ErrorCode::usage, std::string("ToolReply::") + verb +
                                      " on a reply that was moved from; answer through the "
                                      "ToolReply it was moved to");
}
}  // namespace

void ToolReply::ok(nlohmann::json result) const {
  check_not_moved_from(state_, "ok");
  // Refused before it counts as the answer: the caller can still give the right one.
  if (std::string why = unrepresentable_in(result); !why.empty())
    throw Error(ErrorCode::usage,
                "ToolReply::ok for host tool '" + state_->tool + "': the result holds " + why);
  std::lock_guard lock(state_->mutex);
  if (state_->answered) throw Error(ErrorCode::conflict, "this tool call was already answered");
  state_->answered = true;
  if (state_->deliver) state_->deliver(std::move(result), {});
}

void ToolReply::fail(std::string message) const {
  check_not_moved_from(state_, "fail");
  std::lock_guard lock(state_->mutex);
  if (state_->answered) throw Error(ErrorCode::conflict, "this tool call was already answered");
  state_->answered = true;
  if (state_->deliver) state_->deliver(std::nullopt, std::move(message));
}

bool ToolReply::answered() const {
  check_not_moved_from(state_, "answered");
  std::lock_guard lock(state_->mutex);
  return state_->answered;
}

}  // namespace luagent
