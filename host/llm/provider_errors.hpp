// Pieces shared by the providers' error classifiers: HTTP status -> ErrorCode, and keeping
// credentials out of error messages.
#pragma once

#include <string>
#include <string_view>

#include "luagent/error.hpp"

namespace luagent::llm {

/// The code an HTTP status means when the body says nothing more specific
/// (401/403 auth, 408 timeout, 413 bad_request, 429 rate_limited, 503/529 overloaded, 5xx
/// provider).
ErrorCode error_code_for_status(int http_status);

/// Replaces anything shaped like an API key (sk-..., sk-ant-..., "Bearer <token>") with "sk-***" /
/// "Bearer ***", and caps the length, so provider messages can be logged and stored safely.
std::string scrub_secrets(std::string_view text);

/// "HTTP <status>: " or "" when the status is not an HTTP error (an error inside a 200 stream).
std::string http_status_prefix(int http_status);

}  // namespace luagent::llm
