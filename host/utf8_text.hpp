// UTF-8 validation for text that must become JSON (events, tool results, prompt files):
// JSON text is UTF-8, and nlohmann refuses to write anything else, so bytes that are not
// are refused where they enter, with the offset, instead of deep inside a store commit.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace luagent {

/// Length of the UTF-8 sequence starting at `at`, or 0 when it is malformed (overlong
/// forms, surrogates and code points above U+10FFFF included), as nlohmann's writer judges.
std::size_t utf8_sequence(std::string_view text, std::size_t at);

/// The offset of the first byte of `text` that is not well-formed UTF-8; npos when all are.
std::size_t first_non_utf8(std::string_view text);

/// `text` with each byte that is not part of well-formed UTF-8 replaced by U+FFFD, for text
/// luagent writes itself (error messages quoting what they were given).
std::string replace_non_utf8(std::string text);

/// "not UTF-8 text (byte 0xE9 at offset 3)" for the byte at `offset` of `text`.
std::string describe_non_utf8(std::string_view text, std::size_t offset);

}  // namespace luagent
