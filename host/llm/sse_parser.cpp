#include "llm/sse_parser.hpp"

#include <utility>

#include "luagent/error.hpp"

namespace luagent::llm {

SseParser::SseParser(EventCallback on_event, SseLimits limits)
    : on_event_(std::move(on_event)), limits_(limits) {}

void SseParser::feed(std::string_view bytes) {
  if (at_start_) {
    // A UTF-8 BOM is skipped even when its three bytes arrive in separate fragments; the
    // bytes held back in line_ meanwhile are ordinary content if it turns out not to be one.
    static constexpr std::string_view kBom = "\xEF\xBB\xBF";
    while (!bytes.empty() && line_.size() < kBom.size() && bytes.front() == kBom[line_.size()]) {
      line_.push_back(bytes.front());
      bytes.remove_prefix(1);
    }
    if (line_.size() == kBom.size()) {
      line_.clear();
      at_start_ = false;
    } else if (bytes.empty()) {
      return;
    } else {
      at_start_ = false;
    }
  }
  while (!bytes.empty()) {
    if (after_cr_) {
      after_cr_ = false;
      if (bytes.front() == '\n') {
        bytes.remove_prefix(1);
        continue;
      }
    }
    const std::size_t end = bytes.find_first_of("\r\n");
    const std::string_view piece = bytes.substr(0, end);
    if (line_.size() + piece.size() > limits_.max_line_bytes) {
      throw Error(ErrorCode::limit,
                  "SSE line longer than " + std::to_string(limits_.max_line_bytes) + " bytes");
    }
    if (end == std::string_view::npos) {
      line_.append(piece);
      return;
    }
    after_cr_ = bytes[end] == '\r';
    if (line_.empty()) {
      process_line(piece);
    } else {
      line_.append(piece);
      process_line(line_);
      line_.clear();
    }
    bytes.remove_prefix(end + 1);
  }
}

void SseParser::finish() {
  at_start_ = false;
  if (!line_.empty()) {
    std::string last = std::move(line_);
    line_.clear();
    process_line(last);
  }
  after_cr_ = false;
  dispatch();
}

void SseParser::process_line(std::string_view line) {
  if (line.empty()) {
    dispatch();
    return;
  }
  if (line.front() == ':') return;  // comment / keep-alive
  std::string_view field = line;
  std::string_view value;
  if (const std::size_t colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    if (data_.size() + value.size() + 1 > limits_.max_event_bytes) {
      throw Error(ErrorCode::limit, "SSE event data larger than " +
                                        std::to_string(limits_.max_event_bytes) + " bytes");
    }
    if (has_data_) data_.push_back('\n');
    data_.append(value);
    has_data_ = true;
  } else if (field == "event") {
    event_type_.assign(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) last_event_id_.assign(value);
  } else if (field == "retry") {
    if (!value.empty() && value.size() <= 15 &&
        value.find_first_not_of("0123456789") == std::string_view::npos) {
      retry_ms_ = std::stoll(std::string(value));
    }
  }
  // Any other field name is ignored, as the spec requires.
}

void SseParser::dispatch() {
  if (!has_data_) {
    // An event with no data lines is not dispatched, but it still resets the type.
    event_type_.clear();
    return;
  }
  SseEvent event{event_type_.empty() ? "message" : std::move(event_type_), std::move(data_),
                 last_event_id_};
  data_.clear();
  event_type_.clear();
  has_data_ = false;
  if (on_event_) on_event_(event);
}

std::vector<SseEvent> parse_sse(std::string_view body, SseLimits limits) {
  std::vector<SseEvent> events;
  SseParser parser([&events](const SseEvent& event) { events.push_back(event); }, limits);
  parser.feed(body);
  parser.finish();
  return events;
}

}  // namespace luagent::llm
