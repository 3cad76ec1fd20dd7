#include "sha256.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <memory>

#include "luagent/error.hpp"

namespace luagent {
namespace {

// Fetched once: EVP_Digest with EVP_sha256() looks the implementation up again on every
// call (OpenSSL 3's implicit fetch), which cost a sixth of hashing a request body. A
// fetched EVP_MD is immutable and may be shared between threads.
const EVP_MD* sha256_method() {
  static const std::unique_ptr<EVP_MD, decltype(&EVP_MD_free)> method(
      EVP_MD_fetch(nullptr, "SHA256", nullptr), &EVP_MD_free);
  if (!method) throw Error(ErrorCode::internal, "OpenSSL has no SHA-256");
  return method.get();
}

}  // namespace

std::string sha256_hex(std::string_view data, std::size_t hex_chars) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &length, sha256_method(), nullptr) != 1)
    throw Error(ErrorCode::internal, "SHA-256 failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length && hex.size() < hex_chars; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 15];
  }
  hex.resize(std::min(hex.size(), hex_chars));
  return hex;
}

}  // namespace luagent
