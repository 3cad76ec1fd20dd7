// Incremental Server-Sent Events parser (WHATWG "event stream" interpretation).
// Bytes arrive in any fragmentation; complete events are handed to a callback.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace luagent::llm {

/// One dispatched event. `event` is "message" when the stream named none.
struct SseEvent {
  std::string event;
  std::string data;
  std::string id;
};

struct SseLimits {
  std::size_t max_line_bytes = 16u << 20;   // one line, terminator excluded
  std::size_t max_event_bytes = 16u << 20;  // the joined data of one event
};

class SseParser {
 public:
  using EventCallback = std::function<void(const SseEvent&)>;

  /// The callback runs synchronously from feed()/finish() for every complete event.
  explicit SseParser(EventCallback on_event, SseLimits limits = {});

  /// Consumes the next bytes of the body; throws Error(limit) when a line or event is too big.
  void feed(std::string_view bytes);
  /// Marks the end of the body: a last line without terminator and a last event without
  /// its blank line are dispatched (the spec discards them; providers and dropped
  /// connections leave them, and the decoders decide whether the stream was complete).
  void finish();

  /// The last `id:` seen (the spec's "last event ID"), for a reconnecting client.
  const std::string& last_event_id() const { return last_event_id_; }
  /// The last valid `retry:` value in milliseconds, or -1 if none was sent.
  long long retry_ms() const { return retry_ms_; }

 private:
  void process_line(std::string_view line);
  void dispatch();

  EventCallback on_event_;
  SseLimits limits_;
  std::string line_;
  bool after_cr_ = false;  // the previous byte was CR: a following LF belongs to it
  bool at_start_ = true;   // a UTF-8 BOM is skipped only at the very beginning
  std::string data_;
  std::string event_type_;
  std::string last_event_id_;
  bool has_data_ = false;
  long long retry_ms_ = -1;
};

/// Parses a complete body at once (replay, tests); same rules as feed() + finish().
std::vector<SseEvent> parse_sse(std::string_view body, SseLimits limits = {});

}  // namespace luagent::llm
