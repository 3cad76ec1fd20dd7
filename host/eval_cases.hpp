// Prompt test cases for `luagent eval`: a Lua file returning a list of
//   { name =, agent =, input = "message" | { {type =, data =}, ... },
//     expect = { intent =, fields = {...}, contains = "...", check = function(step) } }
// evaluated in the sandbox. The data travels as JSON; `check` functions stay in the
// runtime that loaded the file and are called there.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent_runtime.hpp"

namespace luagent {

struct EvalCase {
  std::string name;
  std::string agent;     // as written in the file (a folder, relative to the file)
  nlohmann::json input;  // a string (the user's message) or an array of events
  nlohmann::json expect = nlohmann::json::object();  // intent, fields, contains
  bool has_check = false;
};

class EvalCaseFile {
 public:
  virtual ~EvalCaseFile() = default;
  virtual const std::vector<EvalCase>& cases() const = 0;
  /// Runs case `index`'s check on the decided step; nullopt when it passes, else why not.
  virtual std::optional<std::string> check(std::size_t index, const nlohmann::json& step) = 0;
};

/// Loads a case file into `runtime` (the Lua runtime). Throws Error(syntax|usage) with file:line.
std::unique_ptr<EvalCaseFile> load_eval_cases(AgentRuntime& runtime,
                                              const std::filesystem::path& file);

}  // namespace luagent
