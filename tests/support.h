// Helpers shared by the test suites: where ../shared is, and skipping when it is absent.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace sq::test {

// $SQUEEZE_SHARED, else ../shared beside the repository; empty when neither exists.
inline std::string shared_dir() {
  if (const char* env = std::getenv("SQUEEZE_SHARED"); env != nullptr && *env != '\0') {
    if (std::filesystem::is_directory(env)) return env;
    return {};
  }
  std::filesystem::path beside = std::filesystem::path(SQUEEZE_SOURCE_DIR).parent_path() / "shared";
  if (std::filesystem::is_directory(beside)) return beside.string();
  return {};
}

// Path of a file under the shared folder, or empty when the folder or file is missing.
inline std::string shared_path(const std::string& relative) {
  std::string dir = shared_dir();
  if (dir.empty()) return {};
  std::filesystem::path p = std::filesystem::path(dir) / relative;
  return std::filesystem::exists(p) ? p.string() : std::string();
}

inline std::string binary_path() { return SQUEEZE_BINARY; }

}  // namespace sq::test

// Skips the current test, saying why, when a shared file is missing.
#define SQ_REQUIRE_SHARED(var, relative)                                                       \
  std::string var = ::sq::test::shared_path(relative);                                       \
  if (var.empty()) {                                                                          \
    GTEST_SKIP() << "needs " << (relative)                                                    \
                 << " from the shared data folder (set SQUEEZE_SHARED or put it at ../shared)"; \
  }
