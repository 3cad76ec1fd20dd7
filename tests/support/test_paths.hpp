// Where tests find the source tree, the shared fixtures and the built CLI.
#pragma once

#include <filesystem>
#include <string>

namespace luagent::test {

inline std::filesystem::path source_dir() {
  return LUAGENT_SOURCE_DIR;
}
inline std::filesystem::path fixtures_dir() {
  return LUAGENT_FIXTURES_DIR;
}
inline std::filesystem::path cli_path() {
  return LUAGENT_CLI_PATH;
}

/// A fresh, empty directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  /// A new folder under `parent` (default: the system's temp folder), removed with all
  /// it holds when this goes away.
  explicit TempDir(const std::filesystem::path& parent = std::filesystem::temp_directory_path());
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace luagent::test
