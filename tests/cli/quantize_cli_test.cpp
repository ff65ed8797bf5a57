// `squeeze synth` and `squeeze quantize` as a user runs them: files that load, and one clear line
// (and no file left behind) for every kind of bad input.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/mmap.h"
#include "model/gguf.h"
#include "model/synth.h"
#include "support.h"

namespace sq {
namespace {

using test::TempDir;
using test::quote;
using test::squeeze;
using test::expect_one_line_error;
using Result = test::RunResult;

TEST(CliSynth, CutDownPresetWritesALoadableModel) {
  TempDir dir;
  const std::string out = dir.file("moe.gguf");
  Result r = squeeze("synth --preset tiny-moe --type Q4_K_M --n-layer 1 --n-vocab 512 --seed 7 -o " + quote(out));
  ASSERT_EQ(r.status, 0) << r.err;
  GgufFile f = GgufFile::open(out);
  EXPECT_EQ(f.get_int("llama.block_count", 0), 1);
  EXPECT_EQ(f.get_int("llama.expert_count", 0), 8);
  EXPECT_EQ(f.get_int("general.file_type", 0), 15);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model", ""), "no_vocab");
  EXPECT_EQ(type_name(f.tensor("blk.0.attn_v.weight")->type()), "Q8_0");
  Result info = squeeze("info -m " + quote(out));
  EXPECT_EQ(info.status, 0) << info.err;
  EXPECT_EQ(dir.entries(), 1u);

  // The same seed gives the same file; the thread count does not matter.
  const std::string again = dir.file("again.gguf");
  r = squeeze("synth --preset tiny-moe --type Q4_K_M --n-layer 1 --n-vocab 512 --seed 7 -t 1 -o " + quote(again));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(read_file(out), read_file(again));
}

TEST(CliSynth, BadPresetOrTypeIsOneClearLine) {
  TempDir dir;
  const std::string out = dir.file("m.gguf");
  Result r = squeeze("synth --preset gpt-7 --type Q8_0 -o " + quote(out));
  expect_one_line_error(r, "unknown preset 'gpt-7'");
  EXPECT_NE(r.err.find("tinyllama-1.1b"), std::string::npos) << r.err;
  r = squeeze("synth --preset tinyllama-1.1b --type Q3_K_XL -o " + quote(out));
  expect_one_line_error(r, "unknown type 'Q3_K_XL'");
  EXPECT_NE(r.err.find("Q4_K_M"), std::string::npos) << r.err;
  EXPECT_EQ(dir.entries(), 0u);
}

TEST(CliQuantize, ParityModelToQ4KMatchesLlamaCppFile) {
  SQ_REQUIRE_SHARED(in, "fixtures/parity/qwen2-tied.f32.gguf");
  SQ_REQUIRE_SHARED(ref, "fixtures/parity/qwen2-tied.q4_k_m.gguf");
  TempDir dir;
  const std::string out = dir.file("q.gguf");
  Result r = squeeze("quantize " + quote(in) + " " + quote(out) + " q4_k_m");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(r.out.empty()) << "progress and summary go to stderr";
  EXPECT_EQ(read_file(out), read_file(ref));
}

TEST(CliQuantize, BadInputIsOneClearLineAndNoFile) {
  TempDir dir;
  const std::string out = dir.file("out.gguf");
  std::ofstream(dir.file("notes.txt")) << "these are my notes, not a model\n";
  SynthSpec s;
  s.n_embd = 256;
  s.n_ff = 256;
  synth_model(s).write(dir.file("f32.gguf"));
  s.type = GgmlType::Q4_0;
  synth_model(s).write(dir.file("q4.gguf"));

  expect_one_line_error(squeeze("quantize " + quote(dir.file("missing.gguf")) + " " + quote(out) + " Q8_0"),
                        "does not exist");
  expect_one_line_error(squeeze("quantize " + quote(dir.file("notes.txt")) + " " + quote(out) + " Q8_0"),
                        "not a GGUF file");
  expect_one_line_error(squeeze("quantize " + quote(dir.file("f32.gguf")) + " " + quote(out) + " Q3_K_XL"),
                        "unknown type 'Q3_K_XL'");
  expect_one_line_error(squeeze("quantize " + quote(dir.file("q4.gguf")) + " " + quote(out) + " Q8_0"),
                        "already quantized (Q4_0)");
  EXPECT_FALSE(std::filesystem::exists(out));
  EXPECT_EQ(dir.entries(), 3u) << "no temporary file may remain";

  Result r = squeeze("quantize --allow-requantize " + quote(dir.file("q4.gguf")) + " " + quote(out) + " Q8_0");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace sq
