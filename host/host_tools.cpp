#include "host_tools.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "luagent/error.hpp"
#include "utf8_text.hpp"

namespace luagent {

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
      tool.compiled_schema = std::make_shared<llm::CompiledSchema>(llm::expand_schema(tool.schema));
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
    llm::coerce_and_validate(args, *compiled_schema, repairs);
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

namespace {

// What is wrong with one value itself (its items are looked at on their own): `what` is
// empty when nothing is; `why` follows where the value is.
struct Fault {
  std::string what, why;
};

Fault fault_of(const nlohmann::json& value) {
  if (value.is_discarded())
    return {"a discarded value",
            " (what nlohmann::json::parse returns for text that is not JSON; check the parse "
            "first)"};
  if (value.is_binary())
    return {"a binary value",
            ", which Lua and JSON have no form for (encode the bytes, as hex or base64, first)"};
  // Lua has them, but the agent could not push them into its thread: JSON has no form for
  // them, and the refusal would come later, naming thread:push instead of the tool.
  if (value.is_number_float() && !std::isfinite(value.get<double>())) {
    const char* why = ", which JSON has no form for";
    if (std::isnan(value.get<double>())) return {"NaN", why};
    return {value.get<double>() > 0 ? "infinity" : "-infinity", why};
  }
  if (value.is_string()) {
    const auto& text = value.get_ref<const std::string&>();
    if (std::size_t bad = first_non_utf8(text); bad != std::string::npos)
      return {"a string", " that is " + describe_non_utf8(text, bad)};
  }
  return {};
}

}  // namespace

std::string unrepresentable_in(const nlohmann::json& result) {
  // Depth first without recursion (the result may nest deeply; the agent's conversion
  // refuses that), keeping the containers being walked on a stack: the path to a bad
  // value is read off it, so it costs nothing until there is one to report.
  struct Level {
    const nlohmann::json* container;
    nlohmann::json::const_iterator item;
    std::size_t index;
  };
  std::vector<Level> levels;
  auto report = [&](const Fault& fault) {
    nlohmann::json::json_pointer path;
    for (const Level& level : levels)
      path.push_back(level.container->is_object() ? level.item.key() : std::to_string(level.index));
    return fault.what + (path.empty() ? "" : " at " + path.to_string()) + fault.why;
  };
  const nlohmann::json* value = &result;
  for (;;) {
    if (Fault fault = fault_of(*value); !fault.what.empty()) return report(fault);
    if (value->is_structured() && !value->empty()) {
      levels.push_back({value, value->cbegin(), 0});
    } else {
      // The next item: of this container, or of the nearest one around it not yet done.
      while (!levels.empty()) {
        Level& level = levels.back();
        ++level.item;
        ++level.index;
        if (level.item != level.container->cend()) break;
        levels.pop_back();
      }
      if (levels.empty()) return {};
    }
    const Level& level = levels.back();
    if (level.container->is_object()) {
      const std::string& key = level.item.key();
      if (std::size_t bad = first_non_utf8(key); bad != std::string::npos)
        return report({"a key", " that is " + describe_non_utf8(key, bad)});
    }
    value = &*level.item;
  }
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
