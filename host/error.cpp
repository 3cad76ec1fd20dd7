#include "luagent/error.hpp"

#include <array>
#include <ostream>
#include <utility>

#include "utf8_text.hpp"

namespace luagent {
namespace {

constexpr std::array<std::pair<ErrorCode, std::string_view>, 24> kNames{{
    {ErrorCode::usage, "usage"},
    {ErrorCode::not_found, "not_found"},
    {ErrorCode::conflict, "conflict"},
    {ErrorCode::config, "config"},
    {ErrorCode::syntax, "syntax"},
    {ErrorCode::runtime, "runtime"},
    {ErrorCode::forbidden, "forbidden"},
    {ErrorCode::limit, "limit"},
    {ErrorCode::io, "io"},
    {ErrorCode::corrupt, "corrupt"},
    {ErrorCode::schema_version, "schema_version"},
    {ErrorCode::rate_limited, "rate_limited"},
    {ErrorCode::overloaded, "overloaded"},
    {ErrorCode::context_length_exceeded, "context_length_exceeded"},
    {ErrorCode::auth, "auth"},
    {ErrorCode::bad_request, "bad_request"},
    {ErrorCode::timeout, "timeout"},
    {ErrorCode::network, "network"},
    {ErrorCode::incomplete_stream, "incomplete_stream"},
    {ErrorCode::invalid_output, "invalid_output"},
    {ErrorCode::refused, "refused"},
    {ErrorCode::provider, "provider"},
    {ErrorCode::cancelled, "cancelled"},
    {ErrorCode::internal, "internal"},
}};

std::string what_text(ErrorCode code, const std::string& message, const std::string& source,
                      int line) {
  std::string text;
  if (!source.empty()) {
    text += source;
    if (line > 0) text += ":" + std::to_string(line);
    text += ": ";
  }
  text += message;
  text += " [";
  text += error_code_name(code);
  text += "]";
  return text;
}

}  // namespace

std::string_view error_code_name(ErrorCode code) {
  for (const auto& [c, name] : kNames)
    if (c == code) return name;
  return "internal";
}

ErrorCode error_code_from_name(std::string_view name) {
  for (const auto& [c, n] : kNames)
    if (n == name) return c;
  return ErrorCode::internal;
}

std::ostream& operator<<(std::ostream& out, ErrorCode code) {
  return out << error_code_name(code);
}

// Messages quote what they were given (a Lua error's text, a file name), and end up in
// events, JSON output and logs, which are UTF-8: bytes that are not are replaced here, once,
// instead of failing whatever writes the error later (a store commit, for one).
Error::Error(ErrorCode code, std::string message, std::string source, int line)
    : Error(code, replace_non_utf8(std::move(message)), replace_non_utf8(std::move(source)), line,
            Checked{}) {}

Error::Error(ErrorCode code, std::string message, std::string source, int line, Checked)
    : std::runtime_error(what_text(code, message, source, line)),
      code_(code),
      message_(std::move(message)),
      source_(std::move(source)),
      line_(line) {}

}  // namespace luagent
