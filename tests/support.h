// Helpers shared by the test suites: where ../shared is, and skipping when it is absent.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

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

// A fresh directory under the system's temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("squeeze-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  size_t entries() const {
    return static_cast<size_t>(std::distance(std::filesystem::directory_iterator(path_),
                                             std::filesystem::directory_iterator()));
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(path_)) {
      out.push_back(e.path().filename().string());
    }
    return out;
  }

 private:
  std::filesystem::path path_;
};

// Single-quotes a string for the shell.
inline std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

struct RunResult {
  int status = -1;  // exit status; -1 when killed by a signal
  std::string out;
  std::string err;
};

// Runs the squeeze binary with `args` (already shell-quoted where needed), capturing both streams.
// `env` (e.g. "SQUEEZE_ISA=ref") is put before the command.
inline RunResult squeeze(const std::string& args, const std::string& env = "") {
  static int counter = 0;
  const std::string err_path = (std::filesystem::temp_directory_path() /
                                ("squeeze-test-err-" + std::to_string(::getpid()) + "-" +
                                 std::to_string(counter++)))
                                   .string();
  const std::string cmd =
      (env.empty() ? "" : env + " ") + quote(binary_path()) + " " + args + " 2>" + quote(err_path);
  RunResult r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  std::ifstream e(err_path);
  std::stringstream ss;
  ss << e.rdbuf();
  r.err = ss.str();
  std::filesystem::remove(err_path);
  return r;
}

// A command that failed as a user should see it: non-zero exit (not a signal), nothing on standard
// output, one line on standard error containing `needle`.
inline void expect_one_line_error(const RunResult& r, const std::string& needle) {
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.status, -1) << "killed by a signal";
  EXPECT_TRUE(r.out.empty()) << r.out;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "expected one line, got: " << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
}

}  // namespace sq::test

// Skips the current test, saying why, when a shared file is missing.
#define SQ_REQUIRE_SHARED(var, relative)                                                       \
  std::string var = ::sq::test::shared_path(relative);                                       \
  if (var.empty()) {                                                                          \
    GTEST_SKIP() << "needs " << (relative)                                                    \
                 << " from the shared data folder (set SQUEEZE_SHARED or put it at ../shared)"; \
  }
