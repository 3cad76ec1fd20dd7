#include "llm/lenient_json.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <optional>
#include <utility>

#include "json_depth.hpp"
#include "luagent/error.hpp"

namespace luagent::llm {
namespace {

using nlohmann::json;

// Kinds of small repairs that can happen many times in one reply; they are counted
// and reported once per kind so a reply with 500 unquoted keys yields one note.
enum class Fix {
  trailing_comma,
  comment,
  single_quote,
  unquoted_key,
  literal,
  raw_control,
  missing_comma,
  bare_word,
  invalid_escape,
  invalid_utf8,
  unclosed_bracket,
  wrong_closer,
  missing_value,
  non_finite,
  number_format,
  duplicate_key,
  count_,
};

struct FixText {
  std::string_view verb, one, many;
};

constexpr std::array<FixText, static_cast<std::size_t>(Fix::count_)> kFixTexts{{
    {"removed", "trailing comma", "trailing commas"},
    {"removed", "comment", "comments"},
    {"converted", "single-quoted string", "single-quoted strings"},
    {"quoted", "unquoted key", "unquoted keys"},
    {"converted", "non-JSON literal (True/False/None)", "non-JSON literals (True/False/None)"},
    {"escaped", "raw newline or control character in a string",
     "raw newlines or control characters in strings"},
    {"inserted", "missing comma", "missing commas"},
    {"quoted", "bare word value", "bare word values"},
    {"kept the backslash of", "invalid escape", "invalid escapes"},
    {"replaced", "invalid UTF-8 byte", "invalid UTF-8 bytes"},
    {"closed", "bracket left open before a mismatched closer",
     "brackets left open before mismatched closers"},
    {"replaced", "mismatched closing bracket", "mismatched closing brackets"},
    {"removed", "empty value", "empty values"},
    {"replaced", "non-finite number (NaN/Infinity) with null",
     "non-finite numbers (NaN/Infinity) with null"},
    {"normalised", "non-JSON number", "non-JSON numbers"},
    {"kept the last of", "duplicate key", "duplicate keys"},
}};

// "3:14" for a byte offset into the reply, so a human can find the spot.
std::string line_column(std::string_view text, std::size_t offset) {
  offset = std::min(offset, text.size());
  std::size_t line = 1, line_start = 0;
  for (std::size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return std::to_string(line) + ":" + std::to_string(offset - line_start + 1);
}

// Repairs in the order they first happened; counted fixes and one-off notes.
class RepairLog {
 public:
  void fix(Fix kind, std::size_t offset) {
    auto& slot = counts_[static_cast<std::size_t>(kind)];
    if (slot.count++ == 0) {
      slot.first = offset;
      items_.push_back({static_cast<int>(kind), {}});
    }
  }
  void note(std::string text) { items_.push_back({-1, std::move(text)}); }

  void append_to(std::vector<std::string>& out, std::string_view text) const {
    for (const auto& item : items_) {
      if (item.fix < 0) {
        out.push_back(item.note);
        continue;
      }
      const auto& slot = counts_[static_cast<std::size_t>(item.fix)];
      const auto& words = kFixTexts[static_cast<std::size_t>(item.fix)];
      std::string where = line_column(text, slot.first);
      if (slot.count == 1)
        out.push_back(std::string(words.verb) + " " + std::string(words.one) + " at " + where);
      else
        out.push_back(std::string(words.verb) + " " + std::to_string(slot.count) + " " +
                      std::string(words.many) + " (first at " + where + ")");
    }
  }

 private:
  struct Count {
    std::size_t count = 0;
    std::size_t first = 0;
  };
  struct Item {
    int fix;
    std::string note;
  };
  std::array<Count, static_cast<std::size_t>(Fix::count_)> counts_{};
  std::vector<Item> items_;
};

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_ident_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$';
}
bool is_ident_char(char c) {
  return is_ident_start(c) || is_digit(c) || c == '-';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

constexpr std::uint32_t kReplacementChar = 0xFFFD;

// Length of the well-formed UTF-8 sequence at text[pos] (a non-ASCII lead byte):
// 2..4, 0 when malformed, -1 when well-formed so far but cut off by `end`.
int utf8_sequence_length(std::string_view text, std::size_t pos, std::size_t end) {
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  unsigned char lead = byte(pos);
  int length;
  unsigned char low = 0x80, high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;  // no UTF-16 surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return 0;
  }
  for (int i = 1; i < length; ++i) {
    if (pos + i >= end) return -1;
    unsigned char c = byte(pos + i);
    if (i == 1 ? (c < low || c > high) : (c < 0x80 || c > 0xBF)) return 0;
  }
  return length;
}

// False where a strict parse fails for sure: after nlohmann's optional UTF-8 byte order
// mark and whitespace, no JSON value can start (a fence, prose, nothing). Replies often
// open so, and a failed strict parse still builds its error message.
bool may_be_strict_json(std::string_view text) {
  std::size_t i = text.substr(0, 3) == "\xEF\xBB\xBF" ? 3 : 0;
  while (i < text.size() && is_space(text[i])) ++i;
  if (i == text.size()) return false;
  char c = text[i];
  return c == '{' || c == '[' || c == '"' || c == '-' || is_digit(c) || c == 't' || c == 'f' ||
         c == 'n';
}

// One try at reading a single JSON value starting at `begin`.
struct Attempt {
  bool ok = false;
  json value;
  std::size_t begin = 0;
  std::size_t end = 0;  // one past the value's last byte
  bool complete = true;
  RepairLog log;
  std::string failure;  // why it failed
  std::size_t failure_offset = 0;
};

// A hand-written, iterative parser: an explicit stack of open containers, so nesting
// depth costs heap (capped) rather than C++ stack.
class ValueParser {
 public:
  ValueParser(std::string_view text, std::size_t begin, std::size_t end,
              const LenientOptions& options)
      : text_(text), pos_(begin), end_(end), options_(options) {
    attempt_.begin = begin;
  }

  Attempt run() {
    try {
      parse();
      attempt_.ok = true;
      attempt_.value = std::move(result_);
      if (cut_string_ && attempt_.complete) {  // a bare top-level string cut off mid-way
        attempt_.complete = false;
        attempt_.log.note("reply was cut off at " + line_column(text_, end_) +
                          "; closed an unterminated string");
      }
    } catch (const Failure& failure) {
      attempt_.ok = false;
      attempt_.failure = failure.reason;  // line:column only for the one that gets reported
      attempt_.failure_offset = failure.offset;
    }
    attempt_.end = pos_;
    return std::move(attempt_);
  }

 private:
  struct Failure {
    std::size_t offset;
    std::string reason;
  };

  enum class State {
    key_or_end,         // after '{'
    key_after_comma,    // after ',' in an object; '}' here means a trailing comma
    colon,              // after a key
    value,              // after ':'
    comma_or_end,       // after a member's value
    item_or_end,        // after '['
    item_after_comma,   // after ',' in an array; ']' here means a trailing comma
    item_comma_or_end,  // after an element
  };

  struct Frame {
    bool is_object;
    json value;
    std::string key;
    State state;
    std::size_t comma_offset = 0;
  };

  // A scalar token's outcome: a value, or "cut off by the end of input" (no value).
  struct Scalar {
    std::optional<json> value;
    bool cut = false;
  };

  [[noreturn]] void fail(std::string reason) { throw Failure{pos_, std::move(reason)}; }

  std::string describe_char(char c) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x80)
      return "byte " + std::to_string(static_cast<unsigned char>(c));
    return std::string("'") + c + "'";
  }

  void skip_space_and_comments() {
    while (pos_ < end_) {
      char c = text_[pos_];
      if (is_space(c)) {
        ++pos_;
      } else if (c == '#' || (c == '/' && pos_ + 1 < end_ && text_[pos_ + 1] == '/')) {
        attempt_.log.fix(Fix::comment, pos_);
        while (pos_ < end_ && text_[pos_] != '\n') ++pos_;
      } else if (c == '/' && pos_ + 1 < end_ && text_[pos_ + 1] == '*') {
        attempt_.log.fix(Fix::comment, pos_);
        auto close = text_.substr(0, end_).find("*/", pos_ + 2);
        pos_ = close == std::string_view::npos ? end_ : close + 2;
      } else {
        return;
      }
    }
  }

  // Reads a quoted string; returns false when the input ends before the closing quote.
  bool read_string(std::string& out) {
    char quote = text_[pos_];
    if (quote == '\'') attempt_.log.fix(Fix::single_quote, pos_);
    ++pos_;
    while (pos_ < end_) {
      std::size_t run = pos_;
      while (run < end_) {
        unsigned char u = static_cast<unsigned char>(text_[run]);
        if (u == static_cast<unsigned char>(quote) || u == '\\' || u < 0x20 || u >= 0x80) break;
        ++run;
      }
      out.append(text_.substr(pos_, run - pos_));
      pos_ = run;
      if (pos_ >= end_) break;
      char c = text_[pos_];
      unsigned char u = static_cast<unsigned char>(c);
      if (c == quote) {
        ++pos_;
        return true;
      }
      if (c == '\\') {
        if (!read_escape(out)) return false;
      } else if (u < 0x20) {
        attempt_.log.fix(Fix::raw_control, pos_);
        out += c;
        ++pos_;
      } else {
        int length = utf8_sequence_length(text_, pos_, end_);
        if (length < 0) {  // a multi-byte character cut by the end of the stream
          pos_ = end_;
          return false;
        }
        if (length == 0) {
          attempt_.log.fix(Fix::invalid_utf8, pos_);
          append_utf8(out, kReplacementChar);
          ++pos_;
        } else {
          out.append(text_.substr(pos_, static_cast<std::size_t>(length)));
          pos_ += static_cast<std::size_t>(length);
        }
      }
    }
    return false;
  }

  // At a backslash; returns false when the input ends inside the escape.
  bool read_escape(std::string& out) {
    if (pos_ + 1 >= end_) {
      pos_ = end_;
      return false;
    }
    char e = text_[pos_ + 1];
    switch (e) {
      case '"':
      case '\\':
      case '/':
      case '\'':
        out += e;
        pos_ += 2;
        return true;
      case 'b':
        out += '\b';
        pos_ += 2;
        return true;
      case 'f':
        out += '\f';
        pos_ += 2;
        return true;
      case 'n':
        out += '\n';
        pos_ += 2;
        return true;
      case 'r':
        out += '\r';
        pos_ += 2;
        return true;
      case 't':
        out += '\t';
        pos_ += 2;
        return true;
      case 'u':
        return read_unicode_escape(out);
      default:
        // "\d" in a regex or "C:\Users" in a path: the author meant the backslash.
        attempt_.log.fix(Fix::invalid_escape, pos_);
        out += '\\';
        ++pos_;
        return true;
    }
  }

  // Reads 4 hex digits after "\u" at pos_+2: the code unit, -1 if malformed, -2 if cut off.
  long hex4(std::size_t at) {
    if (at + 4 > end_) {
      for (std::size_t i = at; i < end_; ++i)
        if (hex_value(text_[i]) < 0) return -1;
      return -2;
    }
    long unit = 0;
    for (std::size_t i = at; i < at + 4; ++i) {
      int h = hex_value(text_[i]);
      if (h < 0) return -1;
      unit = unit * 16 + h;
    }
    return unit;
  }

  bool read_unicode_escape(std::string& out) {
    long unit = hex4(pos_ + 2);
    if (unit == -2) {
      pos_ = end_;
      return false;
    }
    if (unit == -1) {
      attempt_.log.fix(Fix::invalid_escape, pos_);
      out += '\\';
      ++pos_;
      return true;
    }
    std::size_t start = pos_;
    pos_ += 6;
    if (unit >= 0xD800 && unit <= 0xDBFF) {
      if (pos_ + 1 < end_ && text_[pos_] == '\\' && text_[pos_ + 1] == 'u') {
        long low = hex4(pos_ + 2);
        if (low == -2) {
          pos_ = end_;
          return false;
        }
        if (low >= 0xDC00 && low <= 0xDFFF) {
          pos_ += 6;
          append_utf8(out, 0x10000 + ((static_cast<std::uint32_t>(unit) - 0xD800) << 10) +
                               (static_cast<std::uint32_t>(low) - 0xDC00));
          return true;
        }
      } else if (pos_ >= end_ || (pos_ + 1 >= end_ && text_[pos_] == '\\')) {
        pos_ = end_;  // the low half may still be on its way
        return false;
      }
      attempt_.log.fix(Fix::invalid_escape, start);
      append_utf8(out, kReplacementChar);
      return true;
    }
    if (unit >= 0xDC00 && unit <= 0xDFFF) {
      attempt_.log.fix(Fix::invalid_escape, start);
      append_utf8(out, kReplacementChar);
      return true;
    }
    append_utf8(out, static_cast<std::uint32_t>(unit));
    return true;
  }

  Scalar read_number() {
    std::size_t start = pos_;
    bool odd = false;
    std::string digits;
    if (text_[pos_] == '+') {
      odd = true;
      ++pos_;
    } else if (text_[pos_] == '-') {
      digits += '-';
      ++pos_;
    }
    if (pos_ < end_ && is_ident_start(text_[pos_])) return read_word(start);  // -Infinity
    std::size_t int_start = pos_;
    while (pos_ < end_ && is_digit(text_[pos_])) digits += text_[pos_++];
    std::size_t int_digits = pos_ - int_start;
    if (int_digits > 1 && text_[int_start] == '0') odd = true;
    bool is_float = false;
    if (pos_ < end_ && text_[pos_] == '.') {
      ++pos_;
      std::string frac;
      while (pos_ < end_ && is_digit(text_[pos_])) frac += text_[pos_++];
      if (int_digits == 0 || frac.empty()) odd = true;
      if (int_digits == 0) digits += '0';
      if (!frac.empty()) {
        digits += '.';
        digits += frac;
        is_float = true;
      }
    }
    if (int_digits == 0 && !is_float) {
      if (pos_ >= end_) return {std::nullopt, true};  // "-" or "." at the end of a stream
      fail("expected a number");
    }
    bool negative_exponent = false;
    if (pos_ < end_ && (text_[pos_] == 'e' || text_[pos_] == 'E')) {
      std::size_t e = pos_ + 1;
      std::string exponent = "e";
      if (e < end_ && (text_[e] == '+' || text_[e] == '-')) {
        negative_exponent = text_[e] == '-';
        exponent += text_[e++];
      }
      if (e < end_ && is_digit(text_[e])) {
        while (e < end_ && is_digit(text_[e])) exponent += text_[e++];
        digits += exponent;
        is_float = true;
        pos_ = e;
      } else if (e >= end_) {
        pos_ = e;  // cut off inside the exponent: keep the mantissa
      } else {
        odd = true;
        pos_ = e;
      }
    }
    if (odd) attempt_.log.fix(Fix::number_format, start);
    const char* first = digits.data();
    const char* last = digits.data() + digits.size();
    if (!is_float) {
      std::int64_t i = 0;
      auto [ptr, ec] = std::from_chars(first, last, i);
      if (ec == std::errc() && ptr == last) return {json(i), false};
      std::uint64_t u = 0;
      auto [uptr, uec] = std::from_chars(first, last, u);
      if (uec == std::errc() && uptr == last) return {json(u), false};
    }
    double d = 0;
    auto [ptr, ec] = std::from_chars(first, last, d);
    if (ec == std::errc::result_out_of_range) {
      if (negative_exponent) return {json(0.0), false};
      attempt_.log.fix(Fix::non_finite, start);
      return {json(nullptr), false};
    }
    if (ec != std::errc() || ptr != last) fail("malformed number");
    return {json(d), false};
  }

  // A bare word in value position: a literal, Python's spelling of one, or (as an object
  // member's value) an unquoted string.
  Scalar read_word(std::size_t start) {
    while (pos_ < end_ && is_ident_char(text_[pos_])) ++pos_;
    std::string_view word = text_.substr(start, pos_ - start);
    if (word == "true") return {json(true), false};
    if (word == "false") return {json(false), false};
    if (word == "null") return {json(nullptr), false};
    if (word == "True" || word == "False" || word == "None" || word == "undefined") {
      attempt_.log.fix(Fix::literal, start);
      if (word == "True") return {json(true), false};
      if (word == "False") return {json(false), false};
      return {json(nullptr), false};
    }
    if (word == "NaN" || word == "Infinity" || word == "-Infinity" || word == "+Infinity" ||
        word == "inf" || word == "-inf" || word == "nan") {
      attempt_.log.fix(Fix::non_finite, start);
      return {json(nullptr), false};
    }
    if (pos_ >= end_) {
      // Possibly "tr" of a "true" still streaming in: no value yet.
      for (std::string_view literal : {"true", "false", "null", "True", "False", "None"})
        if (literal.substr(0, word.size()) == word) return {std::nullopt, true};
    }
    if (!stack_.empty() && stack_.back().is_object && !word.empty() && word[0] != '-' &&
        word[0] != '+') {
      attempt_.log.fix(Fix::bare_word, start);
      return {json(std::string(word)), false};
    }
    pos_ = start;
    fail("unexpected word '" + std::string(word.substr(0, 40)) + "'");
  }

  // Reads a scalar, or opens a container (pushes a frame and returns no value).
  Scalar read_value(bool& opened) {
    opened = false;
    char c = text_[pos_];
    if (c == '{' || c == '[') {
      if (static_cast<int>(stack_.size()) >= options_.max_depth)
        throw Error(ErrorCode::limit, "JSON in the reply nests deeper than " +
                                          std::to_string(options_.max_depth) + " levels");
      bool object = c == '{';
      stack_.push_back(Frame{object,
                             object ? json::object() : json::array(),
                             {},
                             object ? State::key_or_end : State::item_or_end});
      ++pos_;
      opened = true;
      return {};
    }
    if (c == '"' || c == '\'') {
      std::string s;
      bool closed = read_string(s);
      if (!closed) cut_string_ = true;
      return {json(std::move(s)), !closed};
    }
    if (is_digit(c) || c == '-' || c == '+' || c == '.') return read_number();
    if (is_ident_start(c)) return read_word(pos_);
    fail("unexpected " + describe_char(c));
  }

  // Gives a finished value to the innermost open container, or makes it the result.
  void attach(json value) {
    if (stack_.empty()) {
      result_ = std::move(value);
      have_result_ = true;
      return;
    }
    Frame& top = stack_.back();
    if (top.is_object) {
      if (top.value.contains(top.key)) attempt_.log.fix(Fix::duplicate_key, pos_);
      top.value[top.key] = std::move(value);
      top.key.clear();
      top.state = State::comma_or_end;
    } else {
      top.value.push_back(std::move(value));
      top.state = State::item_comma_or_end;
    }
  }

  void close_top() {
    json value = std::move(stack_.back().value);
    stack_.pop_back();
    attach(std::move(value));
  }

  // A '}' or ']' arrives: close up to the matching open bracket; a closer with no match
  // closes the innermost container (the model typed the wrong bracket).
  void close_with(char closer) {
    bool want_object = closer == '}';
    std::size_t match = stack_.size();
    for (std::size_t i = stack_.size(); i-- > 0;) {
      if (stack_[i].is_object == want_object) {
        match = i;
        break;
      }
    }
    if (match == stack_.size()) {
      attempt_.log.fix(Fix::wrong_closer, pos_);
      match = stack_.size() - 1;
    }
    while (stack_.size() > match + 1) {
      attempt_.log.fix(Fix::unclosed_bracket, pos_);
      drop_pending_key();
      close_top();
    }
    drop_pending_key();
    ++pos_;
    close_top();
  }

  void drop_pending_key() {
    Frame& top = stack_.back();
    if (top.is_object && (top.state == State::colon || top.state == State::value)) {
      attempt_.log.fix(Fix::missing_value, pos_);
      top.key.clear();
      top.state = State::comma_or_end;
    }
  }

  // The reply ended with containers still open: close them all, dropping a key that has
  // no value yet, as a streaming consumer needs.
  void close_at_end_of_input() {
    attempt_.complete = false;
    std::string what = cut_string_ ? "closed an unterminated string" : "";
    std::size_t open = stack_.size();
    while (!stack_.empty()) {
      Frame& top = stack_.back();
      if (top.is_object && (top.state == State::colon || top.state == State::value)) {
        attempt_.log.note("dropped dangling key \"" + top.key.substr(0, 60) + "\" at end of reply");
        top.key.clear();
      }
      close_top();
    }
    if (open > 0) {
      if (!what.empty()) what += " and ";
      what += "closed " + std::to_string(open) + (open == 1 ? " open bracket" : " open brackets");
    }
    if (!what.empty())
      attempt_.log.note("reply was cut off at " + line_column(text_, end_) + "; " + what);
  }

  void parse() {
    while (true) {
      if (stack_.empty() && have_result_) return;
      skip_space_and_comments();
      if (pos_ >= end_) {
        if (stack_.empty()) {
          if (!have_result_) fail("no JSON value before the end of the reply");
          return;
        }
        close_at_end_of_input();
        return;
      }
      char c = text_[pos_];
      if (stack_.empty()) {
        take_value();
        continue;
      }
      Frame& top = stack_.back();
      switch (top.state) {
        case State::key_or_end:
        case State::key_after_comma:
          if (c == '}') {
            if (top.state == State::key_after_comma)
              attempt_.log.fix(Fix::trailing_comma, top.comma_offset);
            close_with(c);
          } else if (c == ']') {
            close_with(c);
          } else if (c == ',') {
            attempt_.log.fix(Fix::missing_value, pos_);
            ++pos_;
          } else if (c == '"' || c == '\'') {
            std::string key;
            if (!read_string(key)) {
              pos_ = end_;  // a key cut off mid-way has no value: drop it
              cut_string_ = true;
              continue;
            }
            top.key = std::move(key);
            top.state = State::colon;
          } else if (is_ident_start(c)) {
            std::size_t start = pos_;
            while (pos_ < end_ && is_ident_char(text_[pos_])) ++pos_;
            if (pos_ >= end_) continue;  // may still be growing
            attempt_.log.fix(Fix::unquoted_key, start);
            top.key = std::string(text_.substr(start, pos_ - start));
            top.state = State::colon;
          } else {
            fail("expected a key or '}', found " + describe_char(c));
          }
          break;
        case State::colon:
          if (c != ':')
            fail("expected ':' after key \"" + top.key.substr(0, 40) + "\", found " +
                 describe_char(c));
          ++pos_;
          top.state = State::value;
          break;
        case State::value:
          if (c == ',') {
            drop_pending_key();
            top.state = State::key_after_comma;
            top.comma_offset = pos_++;
          } else if (c == '}' || c == ']') {
            close_with(c);
          } else {
            take_value();
          }
          break;
        case State::comma_or_end:
          if (c == ',') {
            top.state = State::key_after_comma;
            top.comma_offset = pos_++;
          } else if (c == '}' || c == ']') {
            close_with(c);
          } else if (c == '"' || c == '\'') {
            attempt_.log.fix(Fix::missing_comma, pos_);
            top.state = State::key_after_comma;
            top.comma_offset = pos_;
          } else {
            fail("expected ',' or '}' after a value, found " + describe_char(c));
          }
          break;
        case State::item_or_end:
        case State::item_after_comma:
          if (c == ']') {
            if (top.state == State::item_after_comma)
              attempt_.log.fix(Fix::trailing_comma, top.comma_offset);
            close_with(c);
          } else if (c == '}') {
            close_with(c);
          } else if (c == ',') {
            attempt_.log.fix(Fix::missing_value, pos_);
            top.state = State::item_after_comma;
            top.comma_offset = pos_++;
          } else {
            take_value();
          }
          break;
        case State::item_comma_or_end:
          if (c == ',') {
            top.state = State::item_after_comma;
            top.comma_offset = pos_++;
          } else if (c == ']' || c == '}') {
            close_with(c);
          } else if (c == '"' || c == '\'' || c == '{' || c == '[' || is_digit(c) || c == '-') {
            attempt_.log.fix(Fix::missing_comma, pos_);
            top.state = State::item_after_comma;
            top.comma_offset = pos_;
          } else {
            fail("expected ',' or ']' after an array element, found " + describe_char(c));
          }
          break;
      }
    }
  }

  void take_value() {
    bool opened = false;
    Scalar scalar = read_value(opened);
    if (opened) return;
    if (scalar.value) {
      attach(std::move(*scalar.value));
    } else if (scalar.cut) {
      pos_ = end_;  // nothing usable yet; the end-of-input step drops a dangling key
    }
  }

  std::string_view text_;
  std::size_t pos_;
  std::size_t end_;
  const LenientOptions& options_;
  Attempt attempt_;
  std::vector<Frame> stack_;
  json result_;
  bool have_result_ = false;
  bool cut_string_ = false;
};

struct Range {
  std::size_t begin, end;
};

bool is_blank(std::string_view text, std::size_t begin, std::size_t end) {
  for (std::size_t i = begin; i < end; ++i)
    if (!is_space(text[i])) return false;
  return true;
}

// Splits off <think>...</think> reasoning, which often holds braces of its own.
std::vector<Range> strip_thinking(std::string_view text, RepairLog& log, bool& ended_thinking) {
  std::vector<Range> kept;
  std::size_t pos = 0;
  ended_thinking = false;
  auto find_tag = [&](std::string_view a, std::string_view b, std::size_t from,
                      std::size_t& length) {
    std::size_t pa = text.find(a, from), pb = text.find(b, from);
    if (pa <= pb) {
      length = a.size();
      return pa;
    }
    length = b.size();
    return pb;
  };
  while (pos < text.size()) {
    std::size_t open_len = 0, close_len = 0;
    std::size_t open = find_tag("<think>", "<thinking>", pos, open_len);
    std::size_t close = find_tag("</think>", "</thinking>", pos, close_len);
    if (close != std::string_view::npos && (open == std::string_view::npos || close < open)) {
      // The opening tag was in the prompt template: everything before the close is reasoning.
      log.note("removed reasoning before </think>");
      kept.clear();
      pos = close + close_len;
      continue;
    }
    if (open == std::string_view::npos) break;
    if (open > pos) kept.push_back({pos, open});
    std::size_t end = text.find(open_len == 7 ? "</think>" : "</thinking>", open);
    if (end == std::string_view::npos) {
      log.note("removed an unfinished <think> block");
      ended_thinking = true;
      return kept;
    }
    log.note("removed <think> block");
    pos = end + (open_len == 7 ? 8 : 11);
  }
  if (pos < text.size()) kept.push_back({pos, text.size()});
  return kept;
}

// Contents of ``` fenced blocks that contain a bracket; json-tagged or untagged blocks win
// over blocks tagged with another language.
std::vector<Range> fenced_blocks(std::string_view text, const std::vector<Range>& ranges) {
  std::vector<Range> jsonish, other;
  for (const Range& range : ranges) {
    std::size_t pos = range.begin;
    bool inside = false;
    Range block{0, 0};
    bool block_is_json = false;
    while (pos < range.end) {
      std::size_t line_end = text.find('\n', pos);
      if (line_end == std::string_view::npos || line_end > range.end) line_end = range.end;
      std::size_t first = pos;
      while (first < line_end && (text[first] == ' ' || text[first] == '\t')) ++first;
      bool marker = text.substr(first, 3) == "```" && first + 3 <= line_end;
      if (marker && !inside) {
        inside = true;
        std::string_view tag = text.substr(first + 3, line_end - first - 3);
        while (!tag.empty() && is_space(tag.back())) tag.remove_suffix(1);
        std::string lower;
        for (char c : tag) lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
        block_is_json =
            lower.empty() || lower.rfind("json", 0) == 0 || lower == "js" || lower == "javascript";
        block = {std::min(line_end + 1, range.end), range.end};
      } else if (marker && inside) {
        inside = false;
        block.end = pos;
        auto& into = block_is_json ? jsonish : other;
        std::string_view content = text.substr(block.begin, block.end - block.begin);
        if (content.find_first_of("{[") != std::string_view::npos) into.push_back(block);
      }
      pos = line_end + 1;
    }
    if (inside) {  // an unclosed fence: the stream was cut inside it
      auto& into = block_is_json ? jsonish : other;
      std::string_view content = text.substr(block.begin, block.end - block.begin);
      if (content.find_first_of("{[") != std::string_view::npos) into.push_back(block);
    }
  }
  return jsonish.empty() ? other : jsonish;
}

struct Hunt {
  std::vector<Attempt> found;
  std::string first_failure;
};

constexpr std::size_t kMaxValuesCounted = 16;

// Looks for JSON values inside `ranges`: every '{' or '[' is a candidate start; after a
// success the search resumes past that value, so a second object is seen and counted.
Hunt hunt(std::string_view text, const std::vector<Range>& ranges, const LenientOptions& options) {
  Hunt result;
  // Failed candidates rescan text; this budget keeps the total work linear in the input.
  std::size_t budget = 8 * text.size() + (std::size_t{1} << 20);
  for (const Range& range : ranges) {
    std::size_t pos = range.begin;
    while (pos < range.end && result.found.size() < kMaxValuesCounted) {
      std::size_t start = text.substr(0, range.end).find_first_of("{[", pos);
      if (start == std::string_view::npos) break;
      Attempt attempt = ValueParser(text, start, range.end, options).run();
      std::size_t spent = std::max(attempt.end, start + 1) - start;
      if (spent > budget) {
        if (!result.found.empty()) return result;  // keep what was found before the prose
        throw Error(ErrorCode::invalid_output,
                    "gave up looking for JSON: too much bracketed text that does not parse");
      }
      budget -= spent;
      if (attempt.ok) {
        pos = std::max(attempt.end, start + 1);
        result.found.push_back(std::move(attempt));
      } else {
        if (result.first_failure.empty())
          result.first_failure =
              "at " + line_column(text, attempt.failure_offset) + ": " + attempt.failure;
        pos = start + 1;
      }
    }
  }
  if (!result.found.empty()) return result;
  // No object or array: accept a reply that is one bare scalar ("42", "'yes'", "True").
  for (const Range& range : ranges) {
    std::size_t begin = range.begin, end = range.end;
    while (begin < end && is_space(text[begin])) ++begin;
    while (end > begin && is_space(text[end - 1])) --end;
    if (begin == end) continue;
    Attempt attempt = ValueParser(text, begin, end, options).run();
    if (attempt.ok && is_blank(text, attempt.end, end)) {
      result.found.push_back(std::move(attempt));
      return result;
    }
  }
  return result;
}

bool is_empty_container(const json& value) {
  return (value.is_object() || value.is_array()) && value.empty();
}

// Objects beat arrays (citations like "[1]" are arrays), non-empty beats empty ("{}" in prose).
std::size_t choose(const std::vector<Attempt>& found) {
  std::optional<std::size_t> best;
  auto rank = [](const json& v) {
    return (v.is_object() ? 0 : v.is_array() ? 2 : 4) + (is_empty_container(v) ? 1 : 0);
  };
  for (std::size_t i = 0; i < found.size(); ++i)
    if (!best || rank(found[i].value) < rank(found[*best].value)) best = i;
  return *best;
}

}  // namespace

LenientResult parse_lenient_json(std::string_view text, const LenientOptions& options) {
  if (text.size() > options.max_bytes)
    throw Error(ErrorCode::limit, "reply is " + std::to_string(text.size()) +
                                      " bytes; the JSON parser accepts at most " +
                                      std::to_string(options.max_bytes));
  if (may_be_strict_json(text) && options.max_depth >= 0 &&
      json_nesting_depth(text) <= static_cast<std::size_t>(options.max_depth)) {
    json strict = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!strict.is_discarded()) return LenientResult{std::move(strict), {}, true, 1};
  }
  if (is_blank(text, 0, text.size()))
    throw Error(ErrorCode::invalid_output, "reply is empty; expected JSON");

  RepairLog log;
  bool ended_thinking = false;
  std::vector<Range> outside_thinking = strip_thinking(text, log, ended_thinking);
  bool all_blank = std::all_of(outside_thinking.begin(), outside_thinking.end(),
                               [&](const Range& r) { return is_blank(text, r.begin, r.end); });
  if (all_blank && ended_thinking)
    throw Error(ErrorCode::invalid_output, "reply ended inside a <think> block, before any JSON");

  std::vector<Range> fenced = fenced_blocks(text, outside_thinking);
  Hunt found;
  std::vector<Range> searched;
  if (!fenced.empty()) {
    found = hunt(text, fenced, options);
    searched = fenced;
  }
  bool used_fence = !found.found.empty();
  if (!used_fence) {
    found = hunt(text, outside_thinking, options);
    searched = outside_thinking;
  }
  bool removed_thinking = outside_thinking.size() != 1 || outside_thinking[0].begin != 0 ||
                          outside_thinking[0].end != text.size();
  if (found.found.empty() && removed_thinking) {
    // The think-tag split may have cut a JSON string holding "<think>"; try the raw text.
    Hunt raw = hunt(text, {{0, text.size()}}, options);
    if (!raw.found.empty() || found.first_failure.empty()) found = std::move(raw);
    searched = {{0, text.size()}};
  }
  if (found.found.empty()) {
    if (!found.first_failure.empty())
      throw Error(ErrorCode::invalid_output, "reply holds no valid JSON: " + found.first_failure);
    throw Error(ErrorCode::invalid_output, "reply holds no JSON object or array (no '{' or '[')");
  }

  std::size_t chosen = choose(found.found);
  Attempt& best = found.found[chosen];
  if (used_fence) log.note("removed markdown fence");
  bool prose_before = false, prose_after = false;
  for (const Range& r : searched) {
    if (r.begin < best.begin && !is_blank(text, r.begin, std::min(r.end, best.begin)))
      prose_before = true;
    if (r.end > best.end && !is_blank(text, std::max(r.begin, best.end), r.end)) prose_after = true;
  }
  if (prose_before) log.note("skipped text before the JSON");

  LenientResult result;
  log.append_to(result.repairs, text);
  best.log.append_to(result.repairs, text);
  if (prose_after) result.repairs.push_back("skipped text after the JSON");

  bool want_object = best.value.is_object();
  int same_kind = 0;
  for (const Attempt& a : found.found)
    if (a.value.is_object() == want_object && a.value.is_array() == best.value.is_array() &&
        (!is_empty_container(a.value) || is_empty_container(best.value)))
      ++same_kind;
  result.objects_found = std::max(same_kind, 1);
  if (result.objects_found > 1) {
    std::string kind = want_object ? "objects" : best.value.is_array() ? "arrays" : "values";
    std::string count = std::to_string(result.objects_found);
    if (result.objects_found >= static_cast<int>(kMaxValuesCounted)) count += " or more";
    // The chosen value is always the first of its kind that was counted.
    result.repairs.push_back("reply held " + count + " JSON " + kind + "; used the first");
  }
  result.complete = best.complete;
  result.value = std::move(best.value);
  return result;
}

}  // namespace luagent::llm
