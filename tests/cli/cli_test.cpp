// End-to-end tests of the squeeze binary: the golden stories260K continuation (the text llama2.c
// and llama.cpp print), the logits hook, tokenize output, and one-line errors on bad input.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

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

TEST(Cli, GoldenStoriesContinuationFromLlama2cCheckpoint) {
  SQ_REQUIRE_SHARED(model, "models/stories260K/stories260K.bin");
  SQ_REQUIRE_SHARED(expected, "models/stories260K/expected-once-upon-a-time.txt");
  Result r = squeeze("run -m " + quote(model) + " -p 'Once upon a time' -n 200 --temp 0 -t 2");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, read_file(expected));
  EXPECT_NE(r.err.find("tokens/s"), std::string::npos) << "timings go to standard error";
}

TEST(Cli, GoldenStoriesContinuationFromGguf) {
  SQ_REQUIRE_SHARED(model, "models/stories260K/stories260K.gguf");
  SQ_REQUIRE_SHARED(expected, "models/stories260K/expected-once-upon-a-time.txt");
  Result r = squeeze("run -m " + quote(model) + " -p 'Once upon a time' -n 200 --temp 0 -t 1");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, read_file(expected));
}

// The KV cache's storage is selectable; F32 is what llama2.c keeps, and gives its text too.
TEST(Cli, KvCacheTypes) {
  SQ_REQUIRE_SHARED(model, "models/stories260K/stories260K.bin");
  SQ_REQUIRE_SHARED(expected, "models/stories260K/expected-once-upon-a-time.txt");
  Result f32 = squeeze("run -m " + quote(model) + " -p 'Once upon a time' -n 200 --temp 0 --kv-type f32");
  ASSERT_EQ(f32.status, 0) << f32.err;
  EXPECT_EQ(f32.out, read_file(expected));
  Result q8 = squeeze("run -m " + quote(model) + " -p 'Once upon a time' -n 50 --temp 0 --kv-type q8_0");
  ASSERT_EQ(q8.status, 0) << q8.err;
  EXPECT_EQ(q8.out.rfind("Once upon a time", 0), 0u);
  EXPECT_GT(q8.out.size(), 100u);
  expect_one_line_error(squeeze("run -m " + quote(model) + " -p hi --kv-type q4"), "q4");
}

TEST(Cli, SameSeedSameText) {
  SQ_REQUIRE_SHARED(model, "models/stories260K/stories260K.bin");
  const std::string args = "run -m " + quote(model) + " -p 'Lily' -n 40 --temp 1 --seed 42";
  Result a = squeeze(args), b = squeeze(args), c = squeeze("run -m " + quote(model) + " -p 'Lily' -n 40 --temp 1 --seed 43");
  ASSERT_EQ(a.status, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
}

TEST(Cli, StopStringEndsGeneration) {
  SQ_REQUIRE_SHARED(model, "models/stories260K/stories260K.bin");
  Result r = squeeze("run -m " + quote(model) + " -p 'Once upon a time' -n 200 --temp 0 --stop Lily");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "Once upon a time, there was a little girl named ");
}

TEST(Cli, ContextOverflowIsAnErrorBeforeAnyWork) {
  SQ_REQUIRE_SHARED(model, "models/stories260K/stories260K.bin");
  Result r = squeeze("run -m " + quote(model) + " -p 'Once upon a time' -n 600");
  expect_one_line_error(r, "context");
}

TEST(Cli, MissingFileIsOneClearLine) {
  Result r = squeeze("run -m /nonexistent/model.gguf -p hi");
  expect_one_line_error(r, "does not exist");
}

TEST(Cli, NotAModelIsOneClearLine) {
  TempDir dir;
  std::ofstream(dir.file("notes.txt")) << "these are my notes, not a model\n";
  Result r = squeeze("run -m " + quote(dir.file("notes.txt")) + " -p hi");
  expect_one_line_error(r, "not a GGUF file");
}

TEST(Cli, UnsupportedTensorTypeIsOneClearLine) {
  TempDir dir;
  SynthSpec s;
  s.n_embd = 256;
  s.n_ff = 256;
  s.with_vocab = true;
  s.n_vocab = 300;
  auto bytes = synth_model(s).to_bytes();
  GgufFile parsed = GgufFile::parse(bytes, "m");
  GgufWriter w;
  for (const auto& [k, v] : parsed.metadata()) w.set(k, v);
  for (const auto& t : parsed.tensors()) {
    GgmlType type = t.name == "blk.0.attn_q.weight" ? GgmlType::IQ4_XS : t.type();
    std::vector<uint8_t> data = type == t.type() ? std::vector<uint8_t>(t.data, t.data + t.n_bytes)
                                                 : std::vector<uint8_t>(t.n_elements / 256 * 136);
    w.add_tensor(t.name, type, t.ne, data);
  }
  w.write(dir.file("iq4.gguf"));
  Result r = squeeze("run -m " + quote(dir.file("iq4.gguf")) + " -p hi");
  expect_one_line_error(r, "IQ4_XS");
  EXPECT_NE(r.err.find("blk.0.attn_q.weight"), std::string::npos) << r.err;
}

TEST(Cli, LogitsHookWritesEveryPosition) {
  SQ_REQUIRE_SHARED(model, "fixtures/parity/llama-gqa.f32.gguf");
  SQ_REQUIRE_SHARED(tokens, "fixtures/parity/tokens-64.bin");
  SQ_REQUIRE_SHARED(ref, "fixtures/parity/llama-gqa.f32.logits-64.bin");
  TempDir dir;
  Result r = squeeze("logits -m " + quote(model) + " --tokens " + quote(tokens) + " -o " +
                     quote(dir.file("out.bin")));
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string got = read_file(dir.file("out.bin"));
  const std::string want = read_file(ref);
  ASSERT_EQ(got.size(), want.size());
  std::vector<float> g(got.size() / 4), w(want.size() / 4);
  std::memcpy(g.data(), got.data(), got.size());
  std::memcpy(w.data(), want.data(), want.size());
  double max_diff = 0;
  for (size_t i = 0; i < g.size(); ++i) max_diff = std::max(max_diff, std::abs(double(g[i]) - w[i]));
  EXPECT_LT(max_diff, 1e-2) << "f32 logits should agree with the reference closely";
}

TEST(Cli, LogitsRejectsBadTokenFiles) {
  SQ_REQUIRE_SHARED(model, "fixtures/parity/llama-gqa.f32.gguf");
  TempDir dir;
  std::ofstream(dir.file("odd.bin"), std::ios::binary) << "abcde";
  expect_one_line_error(squeeze("logits -m " + quote(model) + " --tokens " + quote(dir.file("odd.bin")) +
                                " -o " + quote(dir.file("o.bin"))),
                        "multiple of 4");
  int32_t big = 100000;
  std::ofstream(dir.file("big.bin"), std::ios::binary).write(reinterpret_cast<char*>(&big), 4);
  expect_one_line_error(squeeze("logits -m " + quote(model) + " --tokens " + quote(dir.file("big.bin")) +
                                " -o " + quote(dir.file("o.bin"))),
                        "out of range");
  EXPECT_FALSE(std::filesystem::exists(dir.file("o.bin")));
}

TEST(Cli, TokenizeJsonAndDetokenize) {
  SQ_REQUIRE_SHARED(model, "models/stories260K/stories260K.bin");
  Result r = squeeze("tokenize -m " + quote(model) + " --json --bos 'Once upon a time'");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "{\"ids\":[1,403,407,261,378]}\n");
  Result d = squeeze("detokenize -m " + quote(model) + " 403 407 261 378");
  ASSERT_EQ(d.status, 0) << d.err;
  EXPECT_EQ(d.out, "Once upon a time");
}

TEST(Cli, TokenizeWorksOnVocabularyOnlyFiles) {
  SQ_REQUIRE_SHARED(vocab, "fixtures/tokenizer/ggml-vocab-qwen2.gguf");
  Result r = squeeze("tokenize -m " + quote(vocab) + " --json 'Hello world'");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "{\"ids\":[9707,1879]}\n");
}

TEST(Cli, InfoDescribesTheModel) {
  SQ_REQUIRE_SHARED(model, "fixtures/parity/llama-moe.q4_k_m.gguf");
  Result r = squeeze("info -m " + quote(model));
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* needle : {"architecture:   llama", "Q4_K", "Q6_K", "4 experts (2 used", "context length: 2048",
                             "tokenizer:      none"}) {
    EXPECT_NE(r.out.find(needle), std::string::npos) << needle << "\n" << r.out;
  }
}

}  // namespace
}  // namespace sq
