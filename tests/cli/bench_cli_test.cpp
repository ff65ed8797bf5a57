// squeeze bench end to end: the table and the JSON object on a tiny synthetic model without a
// vocabulary, --membw and --peak, and one-line errors for bad flags.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "model/synth.h"
#include "support.h"

namespace sq {
namespace {

using Output = test::RunResult;

// Runs `squeeze bench ARGS` (arguments already shell-safe).
Output bench(const std::string& args) { return test::squeeze("bench " + args); }

class BenchCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::filesystem::path(std::filesystem::temp_directory_path() /
                                     ("squeeze-bench-cli-" + std::to_string(::getpid())));
    std::filesystem::create_directories(*dir_);
    SynthSpec s;
    s.type = GgmlType::Q8_0;
    s.n_vocab = 64;
    s.n_embd = 64;
    synth_model(s).write(model_path());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }
  static std::string model_path() { return (*dir_ / "tiny.gguf").string(); }

  static std::filesystem::path* dir_;
};

std::filesystem::path* BenchCli::dir_ = nullptr;

TEST_F(BenchCli, JsonIsOneObjectWithTheRequiredKeys) {
  Output r = bench("-m '" + model_path() + "' -p 8 -n 4 -r 2 -t 2 --membw-mib 8 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  // Exactly one JSON object on standard output, nothing else.
  nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1);
  EXPECT_TRUE(j["model"].is_string());
  EXPECT_EQ(j["threads"], 2);
  for (const char* part : {"pp", "tg"}) {
    ASSERT_TRUE(j[part].is_object()) << part;
    EXPECT_TRUE(j[part]["n_tokens"].is_number_integer());
    EXPECT_GT(j[part]["mean_tps"].get<double>(), 0);
    EXPECT_GE(j[part]["sd_tps"].get<double>(), 0);
  }
  EXPECT_EQ(j["pp"]["n_tokens"], 8);
  EXPECT_EQ(j["tg"]["n_tokens"], 4);
  EXPECT_GT(j["weight_bytes_per_token"].get<uint64_t>(), 0u);
  EXPECT_GT(j["membw_fraction"].get<double>(), 0);
}

TEST_F(BenchCli, TablePrintsPpAndTgRows) {
  Output r = bench("-m '" + model_path() + "' -p 8 -n 4 -r 1 -t 1 --membw-mib 8");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find(" pp8 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" tg4 |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("weights read per generated token"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("% of it"), std::string::npos) << r.out;
}

TEST_F(BenchCli, ProfilePrintsWhereTgTimeGoes) {
  Output r = bench("-m '" + model_path() + "' -p 0 -n 3 -r 1 -t 2 --membw-mib 8 --profile");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("where tg's time goes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("attention (f16 cache)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("outside them"), std::string::npos) << r.out;
  Output j = bench("-m '" + model_path() + "' -p 0 -n 3 -r 1 -t 2 --membw-mib 8 --profile --json");
  ASSERT_EQ(j.status, 0) << j.err;
  const nlohmann::json p = nlohmann::json::parse(j.out)["profile"];
  ASSERT_TRUE(p.is_object()) << j.out;
  ASSERT_FALSE(p["products"].empty());
  for (const auto& e : p["products"]) {
    EXPECT_EQ(e["calls"].get<int64_t>() % 3, 0) << e;  // once per generated token, or per layer and token
    EXPECT_GT(e["gbps"].get<double>(), 0.0) << e;
  }
  expect_one_line_error(bench("-m '" + model_path() + "' -p 4 -n 0 --profile"), "--profile");
}

TEST_F(BenchCli, ZeroPromptSkipsPp) {
  Output r = bench("-m '" + model_path() + "' -p 0 -n 2 -r 1 -t 1 --membw-mib 8 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j["pp"].is_null());
  EXPECT_TRUE(j["tg"].is_object());
}

TEST(BenchCliMachine, MembwJson) {
  Output r = bench("--membw --membw-mib 16 -t 2 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["read_gbps"].get<double>(), 0);
  EXPECT_EQ(j["threads"], 2);
}

TEST(BenchCliMachine, PeakJson) {
  Output r = bench("--peak -t 1 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["peak_gops"].get<double>(), 0);
  EXPECT_EQ(j["threads"], 1);
  EXPECT_TRUE(j["isa"].is_string());
}

TEST_F(BenchCli, BadFlagValuesAreOneLineErrors) {
  expect_one_line_error(bench("-m '" + model_path() + "' -p -3"), "-p is -3");
  expect_one_line_error(bench("-m '" + model_path() + "' -n -1"), "-n is -1");
  expect_one_line_error(bench("-m '" + model_path() + "' -r 0"), "-r is 0");
  expect_one_line_error(bench("-m '" + model_path() + "' -t -2"), "-t is -2");
}

TEST(BenchCliMachine, MissingModelIsOneLineError) {
  expect_one_line_error(bench("-m /nonexistent/model.gguf -p 8 -n 4"), "/nonexistent/model.gguf");
  expect_one_line_error(bench(""), "exactly one of -m MODEL, --membw or --peak");
  expect_one_line_error(bench("--membw --peak"), "exactly one of");
}

}  // namespace
}  // namespace sq
