#include "support/test_paths.hpp"

#include <stdlib.h>

#include <stdexcept>
#include <system_error>

namespace luagent::test {

TempDir::TempDir(const std::filesystem::path& parent) {
  std::string pattern = (parent / "luagent-test-XXXXXX").string();
  if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace luagent::test
