#include "agent_source_check.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "luagent/error.hpp"
#include "utf8_text.hpp"

namespace luagent {
namespace {

bool is_lua(const std::string& relative) {
  return std::filesystem::path(relative).extension() == ".lua";
}

int line_at(std::string_view text, std::size_t offset) {
  int line = 1;
  for (std::size_t i = 0; i < offset && i < text.size(); ++i) line += text[i] == '\n';
  return line;
}

struct Include {
  std::string target;
  int line = 0;
};

// The literal includes of a template, resolved against the including file's folder.
std::vector<Include> includes_of(const std::string& from, std::string_view text) {
  std::vector<Include> found;
  std::size_t at = 0;
  while ((at = text.find("{%", at)) != std::string_view::npos) {
    std::size_t start = at;
    at += 2;
    if (at < text.size() && (text[at] == '-' || text[at] == '+')) ++at;
    while (at < text.size() && (text[at] == ' ' || text[at] == '\t')) ++at;
    if (text.compare(at, 7, "include") != 0) continue;
    at += 7;
    while (at < text.size() && (text[at] == ' ' || text[at] == '\t')) ++at;
    if (at >= text.size() || (text[at] != '"' && text[at] != '\'')) continue;
    char quote = text[at++];
    std::size_t end = text.find(quote, at);
    if (end == std::string_view::npos) break;
    std::string name(text.substr(at, end - at));
    at = end + 1;
    if (name.empty() || name[0] == '/') continue;
    auto joined = (std::filesystem::path(from).parent_path() / name).lexically_normal();
    found.push_back({joined.generic_string(), line_at(text, start)});
  }
  return found;
}

}  // namespace

void check_agent_text(const std::string& relative, std::string_view text) {
  if (is_lua(relative)) return;
  for (std::size_t at = 0; at < text.size();) {
    std::size_t length = utf8_sequence(text, at);
    if (length == 0) {
      int line = line_at(text, at);
      std::size_t line_start = text.rfind('\n', at == 0 ? 0 : at - 1);
      std::size_t column =
          line_start == std::string_view::npos || at == 0 ? at + 1 : at - line_start;
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(text[at]));
      throw Error(ErrorCode::syntax,
                  "not UTF-8 text (byte " + std::string(hex) + " at column " +
                      std::to_string(column) + "); save the prompt file as UTF-8",
                  relative, line);
    }
    at += length;
  }
}

void check_prompt_includes(const std::map<std::string, std::string_view>& files) {
  std::map<std::string, std::vector<Include>> graph;
  for (const auto& [name, text] : files)
    if (!is_lua(name)) graph[name] = includes_of(name, text);
  enum class Mark { none, open, done };
  std::map<std::string, Mark> marks;
  std::vector<std::string> path;
  // Iterative depth-first search: a deep include chain cannot overflow the stack.
  for (const auto& [start, unused] : graph) {
    if (marks[start] != Mark::none) continue;
    std::vector<std::pair<std::string, std::size_t>> stack = {{start, 0}};
    marks[start] = Mark::open;
    path = {start};
    while (!stack.empty()) {
      auto& [node, next] = stack.back();
      const auto& edges = graph[node];
      if (next >= edges.size()) {
        marks[node] = Mark::done;
        stack.pop_back();
        path.pop_back();
        continue;
      }
      const Include& include = edges[next++];
      if (!graph.count(include.target)) continue;  // a missing file fails when rendered
      Mark mark = marks[include.target];
      if (mark == Mark::open) {
        std::string cycle;
        auto from = std::find(path.begin(), path.end(), include.target);
        for (auto it = from; it != path.end(); ++it) cycle += *it + " -> ";
        cycle += include.target;
        throw Error(ErrorCode::syntax, "circular include: " + cycle, node, include.line);
      }
      if (mark == Mark::none) {
        marks[include.target] = Mark::open;
        path.push_back(include.target);
        std::string target = include.target;
        stack.emplace_back(std::move(target), 0);
      }
    }
  }
}

}  // namespace luagent
