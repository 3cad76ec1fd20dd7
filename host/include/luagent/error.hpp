// The one error type of luagent: C++ code throws it, Lua sees it as a table
// { code = "...", message = "...", source = "...", line = N }.
#pragma once

#include <iosfwd>
#include <stdexcept>
#include <string>
#include <string_view>

namespace luagent {

// A small closed set; each code has a stable lower_snake name (see error_code_name)
// that scripts, the CLI (--json) and the HTTP API match on. Documented in docs/errors.md.
enum class ErrorCode {
  // The caller's mistakes (CLI exit 2, HTTP 4xx).
  usage,      // bad flag, bad argument, malformed input
  not_found,  // unknown agent, thread, event, file
  conflict,   // compare-and-swap lost, or the thread is not in the state the verb needs
  config,     // bad configuration: store URI, provider, config file
  // Agent code.
  syntax,     // a script or prompt failed to compile
  runtime,    // a script raised an error
  forbidden,  // the restricted environment refused something (io, os, binary chunks, ...)
  limit,      // a CPU, memory, size or depth limit was crossed
  // The store.
  io,              // the filesystem or database failed
  corrupt,         // a stored record cannot be read (truncated, bad JSON)
  schema_version,  // stored by a newer luagent than this one
  // LLM calls.
  rate_limited,
  overloaded,
  context_length_exceeded,
  auth,
  bad_request,
  timeout,
  network,
  incomplete_stream,
  invalid_output,  // the model's reply did not parse or validate
  refused,         // the model refused (OpenAI refusal)
  provider,        // any other provider-side failure (5xx after retries, unknown error body)
  cancelled,
  internal,  // a bug in luagent
};

/// The stable name of a code ("not_found", "rate_limited", ...).
std::string_view error_code_name(ErrorCode code);
/// Parses a name back; returns ErrorCode::internal for unknown names.
ErrorCode error_code_from_name(std::string_view name);

std::ostream& operator<<(std::ostream& out, ErrorCode code);

/// luagent's only exception type: a code, a message for humans, and where known
/// the script file and line the error points at. Message and source are kept as UTF-8
/// (other bytes become U+FFFD).
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, std::string message, std::string source = {}, int line = 0);

  ErrorCode code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  const std::string& source() const noexcept { return source_; }
  int line() const noexcept { return line_; }

 private:
  struct Checked {};
  Error(ErrorCode code, std::string message, std::string source, int line, Checked);

  ErrorCode code_;
  std::string message_;
  std::string source_;
  int line_;
};

}  // namespace luagent
