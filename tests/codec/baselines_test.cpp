// The classic compressors behind `squeeze eval`: round trips through their libraries, and sizes set
// against the command-line tools themselves where the machine has them.
#include "codec/baselines.h"

#include <cmath>
#include <cstdio>
#include <optional>

#include "base/error.h"
#include "base/mmap.h"
#include "base/rng.h"
#include "support.h"

namespace sq::codec {
namespace {

using test::quote;

// Some text to compress: the first `n` bytes of a Canterbury file when the shared folder is there,
// else sentences made up from a small word list (compressible, like text).
std::string sample_text(size_t n) {
  std::string path = test::shared_path("corpora/canterbury/alice29.txt");
  if (!path.empty()) {
    std::string all = read_file(path);
    return all.substr(0, std::min(n, all.size()));
  }
  static const char* kWords[] = {"the", "cat", "sat", "on", "a", "mat", "and", "looked", "at",
                                 "little", "girl", "who", "was", "very", "happy", "today"};
  Rng rng(7);
  std::string s;
  while (s.size() < n) {
    s += kWords[rng.next_u64() % 16];
    s += (rng.next_u64() % 9 == 0) ? ".\n" : " ";
  }
  s.resize(n);
  return s;
}

std::string random_bytes(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng.next_u64() & 0xff);
  return s;
}

// Size of what `command` (run through the shell) writes to standard output; nullopt when it fails.
std::optional<size_t> tool_output_size(const std::string& command) {
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  size_t total = 0;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) total += n;
  if (::pclose(p) != 0) return std::nullopt;
  return total;
}

TEST(Baseline, NamesAndOrder) {
  auto all = all_baselines();
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(baseline_name(all[0]), "gzip -9");
  EXPECT_EQ(baseline_name(all[1]), "bzip2 -9");
  EXPECT_EQ(baseline_name(all[2]), "xz -9");
  EXPECT_EQ(baseline_name(all[3]), "zstd -19");
  EXPECT_EQ(baseline_name(all[4]), "brotli -11");
}

TEST(Baseline, RoundTripsTextBinaryAndTinyInputs) {
  const std::vector<std::string> inputs = {std::string(), std::string(1, 'x'), std::string(1, '\0'),
                                           sample_text(20000), random_bytes(30000, 1),
                                           std::string(100000, 'a')};
  for (Baseline b : all_baselines()) {
    for (const std::string& in : inputs) {
      const std::string packed = baseline_compress(b, in);
      EXPECT_FALSE(packed.empty()) << baseline_name(b) << ": every format has a header";
      EXPECT_EQ(baseline_decompress(b, packed, in.size()), in) << baseline_name(b) << ", " << in.size();
      BaselineResult r = measure_baseline(b, in);
      EXPECT_EQ(r.compressed_bytes, packed.size()) << baseline_name(b) << ": deterministic";
      EXPECT_EQ(r.input_bytes, in.size());
      EXPECT_GE(r.compress_seconds, 0.0);
      EXPECT_GE(r.decompress_seconds, 0.0);
    }
  }
}

TEST(Baseline, EmptyInputHasNoBitsPerByte) {
  for (Baseline b : all_baselines()) {
    BaselineResult r = measure_baseline(b, "");
    EXPECT_EQ(r.input_bytes, 0u);
    EXPECT_GT(r.compressed_bytes, 0u) << baseline_name(b);
    EXPECT_TRUE(std::isnan(r.bits_per_byte())) << baseline_name(b);
  }
}

TEST(Baseline, TextShrinksRandomDoesNot) {
  const std::string text = sample_text(50000);
  const std::string noise = random_bytes(50000, 2);
  for (Baseline b : all_baselines()) {
    const double text_bpb = measure_baseline(b, text).bits_per_byte();
    const double noise_bpb = measure_baseline(b, noise).bits_per_byte();
    EXPECT_LT(text_bpb, 4.0) << baseline_name(b);
    EXPECT_GT(noise_bpb, 7.9) << baseline_name(b);
    EXPECT_LT(noise_bpb, 8.2) << baseline_name(b);
  }
}

TEST(Baseline, DamagedStreamsAreFormatErrors) {
  const std::string text = sample_text(5000);
  for (Baseline b : all_baselines()) {
    const std::string packed = baseline_compress(b, text);
    EXPECT_THROW(baseline_decompress(b, packed.substr(0, packed.size() / 2), text.size()), FormatError)
        << baseline_name(b) << ": truncated";
    EXPECT_THROW(baseline_decompress(b, packed + "junk", text.size()), Error)
        << baseline_name(b) << ": trailing bytes";
  }
}

// The library settings reproduce the tools' output sizes. bzip2, xz (single-threaded), zstd and
// brotli run the same library code as their tools, so the sizes are equal; gzip's tool has its own
// deflate, which parses a little differently from zlib's, so it is held to 1 %. A tool that is not
// installed skips its case with a message.
struct ToolCase {
  Baseline baseline;
  const char* tool;
  const char* args;
  double tolerance;  // relative
};

class BaselineTool : public testing::TestWithParam<ToolCase> {};

TEST_P(BaselineTool, SizeMatchesTheCommandLineTool) {
  const ToolCase& c = GetParam();
  if (std::system((std::string("command -v ") + c.tool + " >/dev/null 2>&1").c_str()) != 0) {
    GTEST_SKIP() << c.tool << " is not installed: its size is not compared";
  }
  test::TempDir dir;
  const std::vector<std::string> inputs = {sample_text(16384), sample_text(150000),
                                           random_bytes(20000, 3), std::string()};
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string path = dir.file("in" + std::to_string(i));
    write_file_atomic(path, inputs[i].data(), inputs[i].size());
    std::optional<size_t> tool =
        tool_output_size(std::string(c.tool) + " " + c.args + " " + quote(path));
    ASSERT_TRUE(tool.has_value()) << c.tool << " failed";
    const auto ours = static_cast<double>(baseline_compress(c.baseline, inputs[i]).size());
    EXPECT_NEAR(ours, static_cast<double>(*tool), c.tolerance * static_cast<double>(*tool))
        << c.tool << " on " << inputs[i].size() << " bytes (input " << i << ")";
  }
}

INSTANTIATE_TEST_SUITE_P(Baseline, BaselineTool,
                         testing::Values(ToolCase{Baseline::Gzip, "gzip", "-9 -n -c", 0.01},
                                         ToolCase{Baseline::Bzip2, "bzip2", "-9 -c", 0.0},
                                         ToolCase{Baseline::Xz, "xz", "-9 -T1 -c", 0.0},
                                         ToolCase{Baseline::Zstd, "zstd", "-19 -q -c", 0.0},
                                         ToolCase{Baseline::Brotli, "brotli", "-q 11 -c", 0.0}),
                         [](const testing::TestParamInfo<ToolCase>& info) {
                           return std::string(info.param.tool);
                         });

}  // namespace
}  // namespace sq::codec
