#include "llm/provider_errors.hpp"

#include <algorithm>
#include <cctype>

namespace luagent::llm {
namespace {

bool is_key_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '*' ||
         c == '.';
}

}  // namespace

ErrorCode error_code_for_status(int http_status) {
  switch (http_status) {
    case 401:
    case 403:
      return ErrorCode::auth;
    case 408:
      return ErrorCode::timeout;
    case 429:
      return ErrorCode::rate_limited;
    case 503:
    case 529:
      return ErrorCode::overloaded;
    default:
      break;
  }
  // 409 (OpenAI's "lock timeout") is transient on the provider's side, not a conflict of ours.
  if (http_status == 409 || http_status >= 500) return ErrorCode::provider;
  if (http_status >= 400) return ErrorCode::bad_request;
  return ErrorCode::provider;
}

std::string scrub_secrets(std::string_view text) {
  constexpr std::size_t kMaxMessage = 2000;
  std::string out;
  out.reserve(std::min(text.size(), kMaxMessage));
  std::size_t i = 0;
  while (i < text.size() && out.size() < kMaxMessage) {
    const bool word_start = i == 0 || !is_key_char(text[i - 1]);
    if (word_start && text.substr(i, 3) == "sk-") {
      std::size_t end = i + 3;
      while (end < text.size() && is_key_char(text[end])) ++end;
      while (end > i + 3 && text[end - 1] == '.') --end;  // a sentence's full stop stays
      out += "sk-***";
      i = end;
      continue;
    }
    if (text.substr(i, 7) == "Bearer ") {
      std::size_t end = i + 7;
      while (end < text.size() && is_key_char(text[end])) ++end;
      out += "Bearer ***";
      i = end;
      continue;
    }
    out.push_back(text[i]);
    ++i;
  }
  if (i < text.size()) out += "...";
  return out;
}

std::string http_status_prefix(int http_status) {
  if (http_status < 300) return {};
  return "HTTP " + std::to_string(http_status) + ": ";
}

}  // namespace luagent::llm
