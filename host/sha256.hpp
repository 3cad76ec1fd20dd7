// SHA-256 as lowercase hex: agent versions, file versions, and the keys under which the
// store keeps a request body once.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace luagent {

/// The first `hex_chars` hex digits (at most 64) of the SHA-256 of `data`.
std::string sha256_hex(std::string_view data, std::size_t hex_chars = 64);

}  // namespace luagent
