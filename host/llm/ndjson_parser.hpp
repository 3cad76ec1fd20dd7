// Incremental newline-delimited JSON (Ollama's native streaming format).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace luagent::llm {

class NdjsonParser {
 public:
  using ValueCallback = std::function<void(const nlohmann::json&)>;

  /// The callback runs synchronously from feed()/finish() for every complete line's value.
  explicit NdjsonParser(ValueCallback on_value, std::size_t max_line_bytes = 16u << 20);

  /// Consumes the next bytes; blank lines are skipped, "\r\n" is accepted. Throws
  /// Error(provider) on a line that is not JSON, Error(limit) on a line over the cap.
  void feed(std::string_view bytes);
  /// Marks the end of the body: a last line without newline is parsed too.
  void finish();

 private:
  void process_line(std::string_view line);

  ValueCallback on_value_;
  std::size_t max_line_bytes_;
  std::string line_;
};

}  // namespace luagent::llm
