#include "text/lua_pattern.hpp"

#include <array>
#include <cstring>
#include <string>

#include "luagent/error.hpp"

namespace luagent::text {
namespace {

// Character classes as the C locale defines them (Lua's matcher calls isalpha & co. and
// the host never changes the locale), as bits per byte; kNul is the deprecated %z.
enum ClassBit : std::uint16_t {
  kAlpha = 1,
  kDigit = 2,
  kLower = 4,
  kUpper = 8,
  kSpace = 16,
  kControl = 32,
  kPunctuation = 64,
  kHexDigit = 128,
  kNul = 256,
};

constexpr std::array<std::uint16_t, 256> make_class_table() {
  std::array<std::uint16_t, 256> table{};
  for (int c = 0; c < 256; ++c) {
    std::uint16_t bits = 0;
    const bool lower = c >= 'a' && c <= 'z';
    const bool upper = c >= 'A' && c <= 'Z';
    const bool digit = c >= '0' && c <= '9';
    if (lower) bits |= kLower | kAlpha;
    if (upper) bits |= kUpper | kAlpha;
    if (digit) bits |= kDigit;
    if (c == ' ' || (c >= '\t' && c <= '\r')) bits |= kSpace;
    if (c < 32 || c == 127) bits |= kControl;
    if (c > 32 && c < 127 && !lower && !upper && !digit) bits |= kPunctuation;
    if (digit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) bits |= kHexDigit;
    if (c == 0) bits |= kNul;
    table[static_cast<std::size_t>(c)] = bits;
  }
  return table;
}

constexpr std::array<std::uint16_t, 256> kClassBits = make_class_table();

// The class a letter after '%' names (§6.4.1: %a %c %d %g %l %p %s %u %w %x, and %z, which
// Lua 5.4 still accepts), lower and upper case alike; 0 for any other byte.
constexpr std::array<std::uint16_t, 256> make_letter_table() {
  std::array<std::uint16_t, 256> table{};
  const struct {
    char letter;
    std::uint16_t bits;
  } classes[] = {{'a', kAlpha},
                 {'c', kControl},
                 {'d', kDigit},
                 {'g', kAlpha | kDigit | kPunctuation},
                 {'l', kLower},
                 {'p', kPunctuation},
                 {'s', kSpace},
                 {'u', kUpper},
                 {'w', kAlpha | kDigit},
                 {'x', kHexDigit},
                 {'z', kNul}};
  for (const auto& named : classes) {
    table[static_cast<unsigned char>(named.letter)] = named.bits;
    table[static_cast<unsigned char>(named.letter - 'a' + 'A')] = named.bits;
  }
  return table;
}

constexpr std::array<std::uint16_t, 256> kLetterClass = make_letter_table();

// `%x` for class letter x; an upper-case letter is the complement; any other byte stands
// for itself.
bool matches_class(unsigned char c, unsigned char letter) {
  const std::uint16_t bits = kLetterClass[letter];
  if (bits == 0) return letter == c;
  const bool in_class = (kClassBits[c] & bits) != 0;
  return (kClassBits[letter] & kUpper) ? !in_class : in_class;
}

[[noreturn]] void malformed(const char* message) {
  throw Error(ErrorCode::runtime, message);
}

// One backtracking point: a Lua matcher frame that still has an alternative to try.
struct ChoicePoint {
  enum Kind : std::uint8_t {
    optional,  // `x?` took x; the alternative skips it
    greedy,    // `x*` / `x+` took `count` more; the alternative gives one back
    lazy,      // `x-` took none more; the alternative takes one more
  };
  Kind kind;
  int depth;               // the frame's depth: alternatives run one deeper
  int trail_height;        // capture changes to undo when coming back here
  std::size_t subject;     // optional: where to go on; greedy: start of the run; lazy: next
  std::size_t count;       // greedy: how many the current attempt took
  std::size_t item;        // lazy: the repeated item's first pattern byte
  std::size_t after_item;  // the pattern after the quantifier
};

// A capture change to undo on backtracking: opening one (undo: drop it) or closing
// capture `index` (undo: unfinished again).
struct TrailEntry {
  int closed_index;  // -1 for an opening
};

class Matcher {
 public:
  Matcher(std::string_view subject, std::string_view pattern, PatternWorkMeter& meter)
      : subject_(reinterpret_cast<const unsigned char*>(subject.data())),
        subject_size_(subject.size()),
        pattern_(reinterpret_cast<const unsigned char*>(pattern.data())),
        pattern_size_(pattern.size()),
        meter_(meter) {}

  // Matches the pattern at exactly `start`; on success fills `match`.
  bool match_at(std::size_t start, PatternMatch& match);

 private:
  unsigned char pattern_at(std::size_t i) const { return i < pattern_size_ ? pattern_[i] : 0; }
  std::size_t item_end(std::size_t p) const;
  bool set_matches(unsigned char c, std::size_t open, std::size_t close) const;
  bool item_matches(std::size_t s, std::size_t p, std::size_t end) const;
  void enter_call(int& depth) const;
  std::size_t greedy_count(std::size_t s, std::size_t p, std::size_t end) const;
  void push_choice(const ChoicePoint& choice);
  void undo_to(int height);

  const unsigned char* subject_;
  std::size_t subject_size_;
  const unsigned char* pattern_;
  std::size_t pattern_size_;
  PatternWorkMeter& meter_;

  int level_ = 0;
  PatternCapture captures_[kMaxPatternCaptures];
  int choice_count_ = 0;
  ChoicePoint choices_[kMaxPatternDepth + 1];
  int trail_height_ = 0;
  TrailEntry trail_[kMaxPatternDepth + 1];
};

// The pattern position after the single-character class starting at p.
std::size_t Matcher::item_end(std::size_t p) const {
  const unsigned char first = pattern_[p++];
  if (first == '%') {
    if (p >= pattern_size_) malformed("malformed pattern (ends with '%')");
    return p + 1;
  }
  if (first == '[') {
    if (pattern_at(p) == '^') ++p;
    // The first member may be ']' itself, so look for the closing one after it.
    do {
      if (p >= pattern_size_) malformed("malformed pattern (missing ']')");
      const unsigned char member = pattern_[p++];
      if (member == '%' && p < pattern_size_) ++p;
    } while (pattern_at(p) != ']');
    return p + 1;
  }
  return p;
}

bool Matcher::set_matches(unsigned char c, std::size_t open, std::size_t close) const {
  std::size_t i = open + 1;
  bool member_result = true;
  if (pattern_[i] == '^') {
    member_result = false;
    ++i;
  }
  for (; i < close; ++i) {
    const unsigned char member = pattern_[i];
    if (member == '%') {
      ++i;
      if (matches_class(c, pattern_[i])) return member_result;
    } else if (pattern_[i + 1] == '-' && i + 2 < close) {
      if (member <= c && c <= pattern_[i + 2]) return member_result;
      i += 2;
    } else if (member == c) {
      return member_result;
    }
  }
  return !member_result;
}

// Whether subject byte s matches the class pattern[p, end).
bool Matcher::item_matches(std::size_t s, std::size_t p, std::size_t end) const {
  if (s >= subject_size_) return false;
  const unsigned char c = subject_[s];
  switch (pattern_[p]) {
    case '.':
      return true;
    case '%':
      return matches_class(c, pattern_[p + 1]);
    case '[':
      return set_matches(c, p, end - 1);
    default:
      return pattern_[p] == c;
  }
}

// Where Lua's matcher recurses, the depth grows; past kMaxPatternDepth Lua gives up.
void Matcher::enter_call(int& depth) const {
  if (++depth > kMaxPatternDepth) malformed("pattern too complex");
}

std::size_t Matcher::greedy_count(std::size_t s, std::size_t p, std::size_t end) const {
  std::size_t count = 0;
  while (item_matches(s + count, p, end)) ++count;
  meter_.spend(static_cast<std::int64_t>(count));
  return count;
}

void Matcher::push_choice(const ChoicePoint& choice) {
  // Every choice point is a frame of its own depth, and enter_call bounds depth.
  choices_[choice_count_++] = choice;
}

void Matcher::undo_to(int height) {
  while (trail_height_ > height) {
    const int index = trail_[--trail_height_].closed_index;
    if (index < 0)
      --level_;
    else
      captures_[index].length = PatternCapture::kUnfinished;
  }
}

bool Matcher::match_at(std::size_t start, PatternMatch& match) {
  level_ = 0;
  choice_count_ = 0;
  trail_height_ = 0;
  std::size_t s = start;
  std::size_t p = 0;
  int depth = 1;
  for (;;) {
    meter_.spend(1);
    if (p >= pattern_size_) {
      match.start = start;
      match.end = s;
      match.capture_count = level_;
      std::memcpy(match.captures, captures_, sizeof(PatternCapture) * level_);
      return true;
    }
    switch (pattern_[p]) {
      case '(': {
        if (level_ >= kMaxPatternCaptures) malformed("too many captures");
        const bool position = pattern_at(p + 1) == ')';
        captures_[level_] = {s, position ? PatternCapture::kPosition : PatternCapture::kUnfinished};
        ++level_;
        trail_[trail_height_++] = {-1};
        p += position ? 2 : 1;
        enter_call(depth);
        continue;
      }
      case ')': {
        int open = level_ - 1;
        while (open >= 0 && captures_[open].length != PatternCapture::kUnfinished) --open;
        if (open < 0) malformed("invalid pattern capture");
        captures_[open].length = static_cast<std::ptrdiff_t>(s - captures_[open].start);
        trail_[trail_height_++] = {open};
        ++p;
        enter_call(depth);
        continue;
      }
      case '$':
        if (p + 1 == pattern_size_) {
          if (s == subject_size_) {
            ++p;
            continue;
          }
          break;
        }
        goto single_item;
      case '%':
        switch (pattern_at(p + 1)) {
          case 'b': {
            if (p + 3 >= pattern_size_) malformed("malformed pattern (missing arguments to '%b')");
            const unsigned char open = pattern_[p + 2];
            const unsigned char close = pattern_[p + 3];
            if (s >= subject_size_ || subject_[s] != open) {
              break;
            }
            std::size_t i = s;
            int nesting = 1;
            bool balanced = false;
            while (++i < subject_size_) {
              if (subject_[i] == close) {
                if (--nesting == 0) {
                  balanced = true;
                  break;
                }
              } else if (subject_[i] == open) {
                ++nesting;
              }
            }
            meter_.spend(static_cast<std::int64_t>(i - s));
            if (!balanced) {
              break;
            }
            s = i + 1;
            p += 4;
            continue;
          }
          case 'f': {
            p += 2;
            if (pattern_at(p) != '[') malformed("missing '[' after '%f' in pattern");
            const std::size_t end = item_end(p);
            const unsigned char before = s == 0 ? 0 : subject_[s - 1];
            const unsigned char here = s < subject_size_ ? subject_[s] : 0;
            if (!set_matches(before, p, end - 1) && set_matches(here, p, end - 1)) {
              p = end;
              continue;
            }
            break;
          }
          case '0':
          case '1':
          case '2':
          case '3':
          case '4':
          case '5':
          case '6':
          case '7':
          case '8':
          case '9': {
            const int index = pattern_[p + 1] - '1';
            if (index < 0 || index >= level_ ||
                captures_[index].length == PatternCapture::kUnfinished)
              malformed(("invalid capture index %" + std::to_string(index + 1)).c_str());
            const std::ptrdiff_t length = captures_[index].length;
            // A position capture never matches as a back-reference, as in Lua.
            if (length < 0 || subject_size_ - s < static_cast<std::size_t>(length) ||
                std::memcmp(subject_ + captures_[index].start, subject_ + s,
                            static_cast<std::size_t>(length)) != 0) {
              break;
            }
            meter_.spend(length);
            s += static_cast<std::size_t>(length);
            p += 2;
            continue;
          }
          default:
            goto single_item;
        }
        break;
      default:
      single_item : {
        const std::size_t end = item_end(p);
        const unsigned char quantifier = pattern_at(end);
        if (!item_matches(s, p, end)) {
          if (quantifier == '*' || quantifier == '?' || quantifier == '-') {
            p = end + 1;
            continue;
          }
          break;
        }
        switch (quantifier) {
          case '?':
            push_choice({ChoicePoint::optional, depth, trail_height_, s, 0, 0, end + 1});
            ++s;
            p = end + 1;
            enter_call(depth);
            continue;
          case '+':
          case '*': {
            const std::size_t run_start = quantifier == '+' ? s + 1 : s;
            const std::size_t count = greedy_count(run_start, p, end);
            push_choice({ChoicePoint::greedy, depth, trail_height_, run_start, count, 0, end + 1});
            s = run_start + count;
            p = end + 1;
            enter_call(depth);
            continue;
          }
          case '-':
            push_choice({ChoicePoint::lazy, depth, trail_height_, s, 0, p, end + 1});
            p = end + 1;
            enter_call(depth);
            continue;
          default:
            ++s;
            p = end;
            continue;
        }
      }
    }
    // Failed: resume the most recent frame that has an alternative left.
    for (;;) {
      if (choice_count_ == 0) return false;
      meter_.spend(1);
      ChoicePoint& choice = choices_[choice_count_ - 1];
      undo_to(choice.trail_height);
      depth = choice.depth;
      if (choice.kind == ChoicePoint::optional) {
        s = choice.subject;
        p = choice.after_item;
        --choice_count_;
        break;
      }
      if (choice.kind == ChoicePoint::greedy) {
        if (choice.count == 0) {
          --choice_count_;
          continue;
        }
        --choice.count;
        s = choice.subject + choice.count;
      } else {
        const std::size_t item_end_at = choice.after_item - 1;
        if (!item_matches(choice.subject, choice.item, item_end_at)) {
          --choice_count_;
          continue;
        }
        s = ++choice.subject;
      }
      p = choice.after_item;
      enter_call(depth);
      break;
    }
  }
}

}  // namespace

void PatternWorkMeter::probe() {
  until_probe_ = interval_;
  if (probe_) probe_->keep_going();
}

bool find_pattern(const PatternSearch& search, PatternMatch& match, PatternWorkMeter& meter) {
  Matcher matcher(search.subject, search.pattern, meter);
  const std::string_view pattern = search.pattern;
  const std::size_t size = search.subject.size();
  // A pattern that opens with a plain byte (not repeated zero times) can only match where
  // that byte is: skip to those places. Lua would fail elsewhere without reading further.
  int first_byte = -1;
  if (!pattern.empty() && std::strchr("()%[.$", pattern[0]) == nullptr &&
      (pattern.size() == 1 || std::strchr("*?-", pattern[1]) == nullptr || pattern[1] == '\0'))
    first_byte = static_cast<unsigned char>(pattern[0]);
  for (std::size_t start = search.from; start <= size; ++start) {
    if (first_byte >= 0 && !search.anchored) {
      const void* found = start < size
                              ? std::memchr(search.subject.data() + start, first_byte, size - start)
                              : nullptr;
      if (!found) return false;
      const std::size_t next =
          static_cast<std::size_t>(static_cast<const char*>(found) - search.subject.data());
      meter.spend(static_cast<std::int64_t>(next - start) / 16);
      start = next;
    }
    if (matcher.match_at(start, match) &&
        !(match.end == start && start == search.no_empty_match_at))
      return true;
    if (search.anchored) return false;
  }
  return false;
}

bool has_no_pattern_specials(std::string_view pattern) {
  static constexpr std::string_view kSpecials = "^$*+?.([%-";
  return pattern.find_first_of(kSpecials) == std::string_view::npos;
}

std::size_t find_plain(std::string_view subject, std::string_view needle, std::size_t from,
                       PatternWorkMeter& meter) {
  if (from > subject.size()) return std::string_view::npos;
  // memmem scans a byte in well under the time of one matcher step.
  meter.spend(static_cast<std::int64_t>((subject.size() - from + needle.size()) / 16));
  // glibc's memmem is linear in the subject (two-way search); the naive scan is O(n*m).
  const void* found =
      ::memmem(subject.data() + from, subject.size() - from, needle.data(), needle.size());
  if (!found) return std::string_view::npos;
  return static_cast<std::size_t>(static_cast<const char*>(found) - subject.data());
}

}  // namespace luagent::text
