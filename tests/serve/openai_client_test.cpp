// `squeeze serve` as a user runs it, driven by a client squeeze did not write: the official OpenAI
// JavaScript client (tests/serve/openai_client.mjs) against a spawned server on stories260K. Also
// the command's own rules: no API key means loopback only, SIGTERM exits cleanly.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support.h"

namespace sq::test {
namespace {

using namespace std::chrono_literals;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A `squeeze serve` child process whose standard error goes to a file.
class ServeProcess {
 public:
  ServeProcess(const std::vector<std::string>& args, const std::string& log, const std::string& env_key = "")
      : log_(log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, STDERR_FILENO);
      const int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, STDOUT_FILENO);
      if (env_key.empty()) {
        ::unsetenv("SQUEEZE_API_KEY");
      } else {
        ::setenv("SQUEEZE_API_KEY", env_key.c_str(), 1);
      }
      std::vector<char*> argv;
      std::string bin = binary_path();
      argv.push_back(bin.data());
      std::vector<std::string> copy = args;
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(bin.c_str(), argv.data());
      ::_exit(127);
    }
  }
  ~ServeProcess() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  // Waits until the log holds `pattern` (a regex); returns the first match group, or "" on timeout
  // or when the process ended.
  std::string wait_for(const std::string& pattern, std::chrono::milliseconds limit) {
    const std::regex re(pattern);
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      std::smatch m;
      const std::string text = slurp(log_);
      if (std::regex_search(text, m, re)) return m.size() > 1 ? m[1].str() : m[0].str();
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped_ = true;
        status_ = status;
        return {};
      }
      std::this_thread::sleep_for(20ms);
    }
    return {};
  }

  // Sends `sig` and waits for the exit; the exit code, or -1 (signal / timeout).
  int stop(int sig, std::chrono::milliseconds limit) {
    if (!reaped_) {
      ::kill(pid_, sig);
      const auto end = std::chrono::steady_clock::now() + limit;
      while (std::chrono::steady_clock::now() < end) {
        if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
          reaped_ = true;
          break;
        }
        std::this_thread::sleep_for(20ms);
      }
      if (!reaped_) return -1;
    }
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
  }

  std::string log() const { return slurp(log_); }

 private:
  pid_t pid_ = -1;
  std::string log_;
  bool reaped_ = false;
  int status_ = 0;
};

TEST(OpenaiClient, OfficialJavaScriptClientTalksToSqueeze) {
  SQ_REQUIRE_SHARED(model, "models/stories260K/stories260K.gguf");
  const std::filesystem::path root = SQUEEZE_SOURCE_DIR;
  if (!std::filesystem::exists(root / "node_modules" / "openai" / "package.json") ||
      !std::filesystem::exists(root / "node_modules" / "ajv" / "package.json")) {
    GTEST_SKIP() << "needs node_modules/openai and node_modules/ajv (run scripts/setup.sh)";
  }
  if (std::system("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "needs node on PATH";

  TempDir dir;
  const std::string keys = dir.file("keys.txt");
  std::ofstream(keys) << "# a comment\n\nsk-squeeze-test-key\n";
  ServeProcess serve({"serve", "-m", model, "--port", "0", "-t", "1", "-c", "512", "--parallel", "4",
                      "--api-key-file", keys, "--price-per-cpu-hour", "0.5"},
                     dir.file("serve.log"));
  const std::string port = serve.wait_for("listening on http://127\\.0\\.0\\.1:([0-9]+)", 10s);
  ASSERT_FALSE(port.empty()) << serve.log();
  ASSERT_FALSE(serve.wait_for("squeeze: ready", 10s).empty()) << serve.log();

  const std::string out = dir.file("node.out");
  const std::string cmd = "SQUEEZE_URL=http://127.0.0.1:" + port + "/v1 SQUEEZE_KEY=sk-squeeze-test-key " +
                          "SQUEEZE_MODEL=stories260K node " + quote((root / "tests" / "serve" / "openai_client.mjs").string()) +
                          " > " + quote(out) + " 2>&1";
  const int st = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << slurp(out) << "\n--- server log ---\n" << serve.log();
  EXPECT_NE(slurp(out).find("checks passed"), std::string::npos) << slurp(out);

  // SIGTERM: a clean exit.
  EXPECT_EQ(serve.stop(SIGTERM, 15s), 0) << serve.log();
  const std::string log = serve.log();
  EXPECT_NE(log.find("squeeze: stopped"), std::string::npos) << log;
  // The access log: one JSON line per request, with no prompt text.
  EXPECT_NE(log.find("\"path\":\"/v1/chat/completions\""), std::string::npos) << log;
  EXPECT_EQ(log.find("Tell me a story"), std::string::npos) << "prompt text in the log";
}

TEST(ServeCli, NoKeyMeansLoopbackOnly) {
  SQ_REQUIRE_SHARED(model, "models/stories260K/stories260K.gguf");
  expect_one_line_error(squeeze("serve -m " + quote(model) + " --host 0.0.0.0 --port 0", "SQUEEZE_API_KEY="),
                        "--insecure-no-auth");
  expect_one_line_error(squeeze("serve -m " + quote(model) + " --api-key-file /nonexistent/keys --port 0"),
                        "/nonexistent/keys");
  TempDir dir;
  const std::string empty = dir.file("empty.txt");
  std::ofstream(empty) << "\n# nothing\n";
  expect_one_line_error(squeeze("serve -m " + quote(model) + " --api-key-file " + quote(empty) + " --port 0"),
                        "no key");
  expect_one_line_error(squeeze("serve -m " + quote(model) + " --parallel 0"), "--parallel");
  expect_one_line_error(squeeze("serve -m " + quote(model) + " --timeout 1e300"), "--timeout");
  expect_one_line_error(squeeze("serve -m " + quote(model) + " --shutdown-grace -1"), "--shutdown-grace");
  expect_one_line_error(squeeze("serve -m " + quote(model) + " --max-body-mib 99999999999"), "--max-body-mib");
}

TEST(ServeCli, KeyFromEnvironmentAndInterruptExitsCleanly) {
  SQ_REQUIRE_SHARED(model, "models/stories260K/stories260K.gguf");
  TempDir dir;
  // A key in the environment allows a non-loopback address.
  ServeProcess serve({"serve", "-m", model, "--host", "0.0.0.0", "--port", "0", "-t", "1", "-c", "256"},
                     dir.file("serve.log"), "sk-env");
  ASSERT_FALSE(serve.wait_for("squeeze: ready", 10s).empty()) << serve.log();
  EXPECT_NE(serve.log().find("1 API key(s)"), std::string::npos) << serve.log();
  EXPECT_EQ(serve.stop(SIGINT, 15s), 0) << serve.log();
}

TEST(ServeCli, MissingModelFailsAfterListening) {
  TempDir dir;
  ServeProcess serve({"serve", "-m", dir.file("missing.gguf"), "--port", "0"}, dir.file("serve.log"));
  EXPECT_FALSE(serve.wait_for("listening on", 10s).empty()) << serve.log();
  EXPECT_EQ(serve.stop(0, 10s), 1) << serve.log();  // signal 0: just wait for it to exit
  EXPECT_NE(serve.log().find("missing.gguf"), std::string::npos) << serve.log();
}

}  // namespace
}  // namespace sq::test
