#include "llm/ndjson_parser.hpp"

#include <utility>

#include "llm/wire_json.hpp"
#include "luagent/error.hpp"

namespace luagent::llm {

NdjsonParser::NdjsonParser(ValueCallback on_value, std::size_t max_line_bytes)
    : on_value_(std::move(on_value)), max_line_bytes_(max_line_bytes) {}

void NdjsonParser::feed(std::string_view bytes) {
  while (!bytes.empty()) {
    const std::size_t end = bytes.find('\n');
    const std::string_view piece = bytes.substr(0, end);
    if (line_.size() + piece.size() > max_line_bytes_) {
      throw Error(ErrorCode::limit,
                  "NDJSON line longer than " + std::to_string(max_line_bytes_) + " bytes");
    }
    if (end == std::string_view::npos) {
      line_.append(piece);
      return;
    }
    if (line_.empty()) {
      process_line(piece);
    } else {
      line_.append(piece);
      std::string line = std::move(line_);
      line_.clear();
      process_line(line);
    }
    bytes.remove_prefix(end + 1);
  }
}

void NdjsonParser::finish() {
  std::string line = std::move(line_);
  line_.clear();
  process_line(line);
}

void NdjsonParser::process_line(std::string_view line) {
  if (line.find_first_not_of(" \t\r") == std::string_view::npos) return;
  const nlohmann::json value = parse_wire_json(line, "NDJSON stream line");
  if (on_value_) on_value_(value);
}

}  // namespace luagent::llm
