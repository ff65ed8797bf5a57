// `squeeze eval` as a user runs it: the table, --json, --svg, directories, --kl-base, and one clear
// line for every kind of bad input.
#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/mmap.h"
#include "model/synth.h"
#include "support.h"

namespace sq {
namespace {

using test::TempDir;
using test::quote;
using test::squeeze;
using test::expect_one_line_error;
using Result = test::RunResult;

constexpr const char* kStories = "models/stories260K/stories260K.gguf";
constexpr const char* kValid = "corpora/tinystories/valid.txt";

// Writes the first `n` bytes of a shared file into `dir` under `name`; returns the path.
std::string head_file(const TempDir& dir, const std::string& from, const std::string& name, size_t n) {
  std::string s = read_file(from);
  s.resize(std::min(n, s.size()));
  const std::string path = dir.file(name);
  write_file_atomic(path, s.data(), s.size());
  return path;
}

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

TEST(EvalCli, TableHasEveryCompressorAndTheModel) {
  SQ_REQUIRE_SHARED(model, kStories);
  SQ_REQUIRE_SHARED(valid, kValid);
  TempDir dir;
  const std::string in = head_file(dir, valid, "valid-8k.txt", 8192);
  Result r = squeeze("eval -m " + quote(model) + " " + quote(in) + " -c 128 -t 2");
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* s : {"gzip -9", "bzip2 -9", "xz -9", "zstd -19", "brotli -11", "stories260K",
                        "valid-8k.txt", "bits/byte", "bits/char", "bits/token", "ppl", "tok/s",
                        "window 128 positions"}) {
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " in\n" << r.out;
  }
  EXPECT_TRUE(r.err.empty()) << r.err;
}

TEST(EvalCli, JsonParsesAndAgreesWithItself) {
  SQ_REQUIRE_SHARED(model, kStories);
  SQ_REQUIRE_SHARED(valid, kValid);
  TempDir dir;
  const std::string in = head_file(dir, valid, "valid-4k.txt", 4096);
  Result r = squeeze("eval --json -m " + quote(model) + " " + quote(in) + " -c 64 --stride 16 -t 2");
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["files"].size(), 1u);
  const auto& f = j["files"][0];
  EXPECT_EQ(f["bytes"].get<uint64_t>(), 4096u);
  ASSERT_EQ(f["baselines"].size(), 5u);
  for (const auto& b : f["baselines"]) {
    EXPECT_NEAR(b["bits_per_byte"].get<double>(), 8.0 * b["bytes"].get<double>() / 4096.0, 1e-9);
  }
  EXPECT_EQ(f["baselines"][2]["name"], "xz -9");
  ASSERT_EQ(f["models"].size(), 1u);
  const auto& m = f["models"][0];
  EXPECT_EQ(m["window"], 64);
  EXPECT_EQ(m["stride"], 16);
  EXPECT_EQ(m["bos"], true);
  EXPECT_EQ(m["round_trips"], true);
  const double bits = m["bits"].get<double>();
  EXPECT_NEAR(m["bits_per_byte"].get<double>(), bits / 4096.0, 1e-12);
  EXPECT_NEAR(m["bits_per_token"].get<double>(), bits / m["tokens"].get<double>(), 1e-12);
  EXPECT_NEAR(m["perplexity"].get<double>(), std::exp2(m["bits_per_token"].get<double>()), 1e-9);
  EXPECT_GT(m["bits_per_char"].get<double>(), 0.0);
  EXPECT_FALSE(m.contains("sqz"));
  // The model knows this kind of text better than any of the classic compressors do.
  for (const auto& b : f["baselines"]) {
    EXPECT_LT(m["bits_per_byte"].get<double>(), b["bits_per_byte"].get<double>()) << b["name"];
  }
  EXPECT_EQ(j["models"][0]["label"], "stories260K.gguf");
}

TEST(EvalCli, SvgHasOneBarPerFileAndCompressor) {
  SQ_REQUIRE_SHARED(model, kStories);
  SQ_REQUIRE_SHARED(valid, kValid);
  TempDir dir;
  const std::string a = head_file(dir, valid, "a.txt", 3000);
  const std::string b = head_file(dir, valid, "b.txt", 2000);
  const std::string svg = dir.file("chart.svg");
  Result r = squeeze("eval -m " + quote(model) + " -m " + quote(model) + " " + quote(a) + " " +
                     quote(b) + " -c 64 --svg " + quote(svg));
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string s = read_file(svg);
  EXPECT_EQ(s.rfind("<?xml", 0), 0u);
  EXPECT_NE(s.find("</svg>"), std::string::npos);
  EXPECT_EQ(count(s, "<rect class=\"bar\""), 2u * (5u + 2u));
  EXPECT_NE(s.find("a.txt"), std::string::npos);
  EXPECT_NE(s.find("bits per byte"), std::string::npos);
  // Two models: two rows per file.
  EXPECT_EQ(count(r.out, "| stories260K"), 4u) << r.out;
}

TEST(EvalCli, DirectoriesExpandToTheirFilesSorted) {
  SQ_REQUIRE_SHARED(model, kStories);
  SQ_REQUIRE_SHARED(valid, kValid);
  TempDir dir;
  std::filesystem::create_directories(dir.path() / "corpus" / "sub");
  head_file(dir, valid, "corpus/b.txt", 1000);
  head_file(dir, valid, "corpus/a.txt", 1500);
  head_file(dir, valid, "corpus/sub/c.txt", 500);
  Result r = squeeze("eval --json --no-baselines -m " + quote(model) + " " +
                     quote(dir.file("corpus")) + " -c 64");
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["files"].size(), 2u) << "regular files only, no descent";
  EXPECT_NE(j["files"][0]["path"].get<std::string>().find("a.txt"), std::string::npos);
  EXPECT_NE(j["files"][1]["path"].get<std::string>().find("b.txt"), std::string::npos);
  EXPECT_EQ(j["files"][0]["baselines"].size(), 0u);
}

TEST(EvalCli, KlAgainstItselfIsZeroAndOtherTokenizersAreRefused) {
  SQ_REQUIRE_SHARED(model, kStories);
  SQ_REQUIRE_SHARED(valid, kValid);
  SQ_REQUIRE_SHARED(other, "models/extras/llama-2-tiny-random.gguf");
  TempDir dir;
  const std::string in = head_file(dir, valid, "v.txt", 3000);
  Result r = squeeze("eval --json --kl-base " + quote(model) + " -m " + quote(model) + " " + quote(in) +
                     " -c 128");
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  const auto& kl = j["files"][0]["kl"][0];
  EXPECT_GT(kl["positions"].get<uint64_t>(), 100u);
  EXPECT_EQ(kl["mean"].get<double>(), 0.0);
  EXPECT_EQ(kl["max"].get<double>(), 0.0);
  EXPECT_EQ(kl["top1_agreement"].get<double>(), 1.0);
  Result table = squeeze("eval --kl-base " + quote(model) + " -m " + quote(model) + " " + quote(in) +
                         " -c 128");
  ASSERT_EQ(table.status, 0) << table.err;
  EXPECT_NE(table.out.find("top-1"), std::string::npos);
  EXPECT_NE(table.out.find("100.00 %"), std::string::npos) << table.out;
  expect_one_line_error(squeeze("eval --kl-base " + quote(model) + " -m " + quote(other) + " " + quote(in)),
                        "tokenizers differ");
  expect_one_line_error(squeeze("eval --kl-base " + quote(model) + " -m " + quote(model) + " --sqz " +
                                quote(in)),
                        "--kl-base");
}

TEST(EvalCli, BadInputIsOneClearLine) {
  SQ_REQUIRE_SHARED(model, kStories);
  SQ_REQUIRE_SHARED(valid, kValid);
  TempDir dir;
  const std::string in = head_file(dir, valid, "v.txt", 1000);
  const std::string m = "eval -m " + quote(model) + " ";
  expect_one_line_error(squeeze(m + quote(dir.file("missing.txt"))), "does not exist");
  std::filesystem::create_directories(dir.path() / "empty");
  expect_one_line_error(squeeze(m + quote(dir.file("empty"))), "no regular files");
  expect_one_line_error(squeeze(m + quote(in) + " -c 1"), "-c is 1");
  expect_one_line_error(squeeze(m + quote(in) + " -c 100000"), "trained for");
  expect_one_line_error(squeeze(m + quote(in) + " -c 64 --stride 64"), "--stride");
  expect_one_line_error(squeeze(m + quote(in) + " -t -3"), "-t");
  expect_one_line_error(squeeze("eval -m /nonexistent/model.gguf " + quote(in)), "does not exist");
  // A model file without a vocabulary has nothing to tokenize the text with.
  SynthSpec spec;
  const std::string bare = dir.file("bare.gguf");
  synth_model(spec).write(bare);
  expect_one_line_error(squeeze("eval -m " + quote(bare) + " " + quote(in)), "tokenizer");
  // An unreadable directory (unless running as root, who reads everything).
  if (::geteuid() != 0) {
    std::filesystem::create_directories(dir.path() / "locked");
    std::filesystem::permissions(dir.path() / "locked", std::filesystem::perms::none);
    expect_one_line_error(squeeze(m + quote(dir.file("locked"))), "cannot read");
    std::filesystem::permissions(dir.path() / "locked", std::filesystem::perms::owner_all);
  }
}

// An empty file has no figures (null in JSON, "-" in the table); text the tokenizer does not give
// back exactly is still scored, with a warning.
TEST(EvalCli, EmptyFileAndTextThatDoesNotRoundTrip) {
  SQ_REQUIRE_SHARED(model, kStories);
  TempDir dir;
  const std::string empty = dir.file("empty.txt");
  write_file_atomic(empty, "", 0);
  const std::string odd = dir.file("odd.txt");
  const std::string text = "The cat\xE2\x96\x81sat. Then it \xff ran.";
  write_file_atomic(odd, text.data(), text.size());
  Result r = squeeze("eval --json -m " + quote(model) + " " + quote(empty) + " " + quote(odd) + " -c 64");
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  const auto& e = j["files"][0];
  EXPECT_EQ(e["bytes"], 0);
  EXPECT_TRUE(e["models"][0]["bits_per_byte"].is_null());
  EXPECT_EQ(e["models"][0]["tokens"], 0);
  for (const auto& b : e["baselines"]) {
    EXPECT_TRUE(b["bits_per_byte"].is_null());
    EXPECT_GT(b["bytes"].get<int>(), 0);
  }
  const auto& o = j["files"][1];
  EXPECT_EQ(o["invalid_utf8_bytes"], 1);
  EXPECT_EQ(o["models"][0]["round_trips"], false);
  EXPECT_GT(o["models"][0]["bits_per_byte"].get<double>(), 0.0);
  EXPECT_NE(r.err.find("warning"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("odd.txt"), std::string::npos) << r.err;
  Result table = squeeze("eval --no-baselines -m " + quote(model) + " " + quote(empty) + " -c 64");
  ASSERT_EQ(table.status, 0) << table.err;
  EXPECT_NE(table.out.find(" - |"), std::string::npos) << table.out;
  EXPECT_EQ(table.out.find("nan"), std::string::npos) << table.out;
}

// With several files --kl-base adds a row over all of them.
TEST(EvalCli, KlOverSeveralFiles) {
  SQ_REQUIRE_SHARED(model, kStories);
  SQ_REQUIRE_SHARED(valid, kValid);
  TempDir dir;
  const std::string a = head_file(dir, valid, "a.txt", 1500);
  const std::string b = head_file(dir, valid, "b.txt", 1000);
  Result r = squeeze("eval --json --kl-base " + quote(model) + " -m " + quote(model) + " " + quote(a) +
                     " " + quote(b) + " -c 64");
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["files"].size(), 2u);
  const uint64_t n = j["files"][0]["kl"][0]["positions"].get<uint64_t>() +
                     j["files"][1]["kl"][0]["positions"].get<uint64_t>();
  EXPECT_EQ(j["overall"][0]["positions"].get<uint64_t>(), n);
  EXPECT_EQ(j["overall"][0]["top1_agreement"].get<double>(), 1.0);
  Result table = squeeze("eval --kl-base " + quote(model) + " -m " + quote(model) + " " + quote(a) + " " +
                         quote(b) + " -c 64");
  ASSERT_EQ(table.status, 0) << table.err;
  EXPECT_NE(table.out.find("(all files)"), std::string::npos) << table.out;
}

// --sqz sets the real archive beside the model's cross-entropy under the same chunking.
TEST(EvalCli, SqzReportsTheArchive) {
  SQ_REQUIRE_SHARED(model, kStories);
  SQ_REQUIRE_SHARED(valid, kValid);
  TempDir dir;
  const std::string in = head_file(dir, valid, "v.txt", 16384);
  Result r = squeeze("eval --json --no-baselines --sqz -m " + quote(model) + " " + quote(in) +
                     " -c 256 -t 2");
  ASSERT_EQ(r.status, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  const auto& m = j["files"][0]["models"][0];
  ASSERT_TRUE(m.contains("sqz")) << m.dump();
  const auto& z = m["sqz"];
  EXPECT_EQ(z["chunk_tokens"], 256);
  EXPECT_GT(z["archive_bytes"].get<uint64_t>(), z["payload_bytes"].get<uint64_t>());
  EXPECT_NEAR(z["bits_per_byte"].get<double>(), 8.0 * z["archive_bytes"].get<double>() / 16384.0, 1e-9);
  // zip's segments hold at most the window's positions, as the disjoint windows of --stride 255 do
  // (zip also starts segments afresh where the text does, so the figures are close, not equal).
  Result disjoint = squeeze("eval --json --no-baselines -m " + quote(model) + " " + quote(in) +
                            " -c 256 --stride 255");
  ASSERT_EQ(disjoint.status, 0) << disjoint.err;
  const double bits = nlohmann::json::parse(disjoint.out)["files"][0]["models"][0]["bits"].get<double>();
  EXPECT_NEAR(z["model_bits"].get<double>(), bits, 0.15 * bits);
  // What the coder loses: the payload over the model's bits plus the bits that start segments.
  const double coded = z["model_bits"].get<double>() + z["segment_bits"].get<double>();
  EXPECT_GT(z["segment_bits"].get<double>(), 0.0);
  EXPECT_NEAR(z["payload_overhead_percent"].get<double>(),
              100.0 * (8.0 * z["payload_bytes"].get<double>() - coded) / coded, 1e-9);
  EXPECT_GT(z["payload_overhead_percent"].get<double>(), -0.01);
  EXPECT_LT(z["payload_overhead_percent"].get<double>(), 2.0);
}

}  // namespace
}  // namespace sq
