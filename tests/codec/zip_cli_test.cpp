// squeeze zip / unzip as a user runs them: files, standard streams, overwriting, finding the model,
// and archives that decode with any thread count and on any instruction set.
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "base/mmap.h"
#include "kernels/isa.h"
#include "support.h"

namespace sq {
namespace {

namespace fs = std::filesystem;
using test::quote;
using test::squeeze;

constexpr const char* kStories = "models/stories260K/stories260K.gguf";

std::string sample_text() {
  return "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. "
         "One day, she saw a big red ball in the park.\n\xe2\x96\x81 caf\xc3\xa9 \xff\xfe\n"
         "\xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96\xe7\x95\x8c\n";
}

void write(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

TEST(ZipCli, RoundTripWithDefaultNames) {
  SQ_REQUIRE_SHARED(model, kStories);
  test::TempDir dir;
  const std::string in = dir.file("story.txt");
  write(in, sample_text());
  auto r = squeeze("zip -m " + quote(model) + " " + quote(in) + " -q");
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_TRUE(fs::exists(in + ".sqz"));
  fs::remove(in);
  r = squeeze("unzip -m " + quote(model) + " " + quote(in + ".sqz") + " -q");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(read_file(in), sample_text());
}

TEST(ZipCli, StandardInputAndOutput) {
  SQ_REQUIRE_SHARED(model, kStories);
  test::TempDir dir;
  const std::string in = dir.file("in.txt");
  write(in, sample_text());
  auto r = squeeze("zip -m " + quote(model) + " - < " + quote(in) + " > " + quote(dir.file("a.sqz")));
  ASSERT_EQ(r.status, 0) << r.err;
  r = squeeze("unzip -m " + quote(model) + " - -o - < " + quote(dir.file("a.sqz")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, sample_text());
}

TEST(ZipCli, ExistingOutputIsKeptWithoutForce) {
  SQ_REQUIRE_SHARED(model, kStories);
  test::TempDir dir;
  const std::string in = dir.file("in.txt"), out = dir.file("out.sqz");
  write(in, sample_text());
  write(out, "precious");
  auto r = squeeze("zip -m " + quote(model) + " " + quote(in) + " -o " + quote(out));
  test::expect_one_line_error(r, "already exists");
  EXPECT_EQ(read_file(out), "precious");
  r = squeeze("zip -m " + quote(model) + " " + quote(in) + " -o " + quote(out) + " -f -q");
  ASSERT_EQ(r.status, 0) << r.err;
  write(dir.file("back.txt"), "precious too");
  r = squeeze("unzip -m " + quote(model) + " " + quote(out) + " -o " + quote(dir.file("back.txt")));
  test::expect_one_line_error(r, "already exists");
  EXPECT_EQ(read_file(dir.file("back.txt")), "precious too");
}

TEST(ZipCli, UnzipFindsTheModelInSqueezeModels) {
  SQ_REQUIRE_SHARED(model, kStories);
  test::TempDir dir;
  const std::string in = dir.file("in.txt");
  write(in, sample_text());
  ASSERT_EQ(squeeze("zip -m " + quote(model) + " " + quote(in) + " -q").status, 0);
  // The shared models folder keeps each model in its own subfolder: one level is searched.
  const std::string models = fs::path(model).parent_path().parent_path().string();
  auto r = squeeze("unzip " + quote(in + ".sqz") + " -o - -q", "SQUEEZE_MODELS=" + quote(models));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, sample_text());
  r = squeeze("unzip " + quote(in + ".sqz") + " -o " + quote(dir.file("x")),
              "SQUEEZE_MODELS=" + quote(dir.file("nowhere")) + " HOME=" + quote(dir.file("nohome")));
  test::expect_one_line_error(r, "stories260K.gguf");
  EXPECT_FALSE(fs::exists(dir.file("x")));
}

TEST(ZipCli, DamagedArchiveOrWrongModelWritesNothing) {
  SQ_REQUIRE_SHARED(model, kStories);
  SQ_REQUIRE_SHARED(other, "models/extras/llama-2-tiny-random.gguf");
  test::TempDir dir;
  const std::string in = dir.file("in.txt");
  write(in, sample_text());
  ASSERT_EQ(squeeze("zip -m " + quote(model) + " " + quote(in) + " -q").status, 0);
  std::string archive = read_file(in + ".sqz");
  archive[archive.size() / 2] = static_cast<char>(archive[archive.size() / 2] ^ 0x10);
  write(dir.file("bad.sqz"), archive);
  auto r = squeeze("unzip -m " + quote(model) + " " + quote(dir.file("bad.sqz")));
  test::expect_one_line_error(r, "damaged");
  EXPECT_FALSE(fs::exists(dir.file("bad")));
  r = squeeze("unzip -m " + quote(other) + " " + quote(in + ".sqz") + " -o " + quote(dir.file("o")));
  test::expect_one_line_error(r, "stories260K.gguf");
  EXPECT_FALSE(fs::exists(dir.file("o")));
  r = squeeze("unzip -m " + quote(model) + " " + quote(in) + " -o " + quote(dir.file("o2")));
  test::expect_one_line_error(r, "not a .sqz archive");
  r = squeeze("unzip -m " + quote(model) + " " + quote(in));
  test::expect_one_line_error(r, "does not end in .sqz");
  r = squeeze("zip -m " + quote(model) + " " + quote(dir.file("missing.txt")));
  test::expect_one_line_error(r, "missing.txt");
}

// An archive written with -t 2 decodes with -t 1 and -t 4, and archives written by every
// instruction-set variant this CPU has are the same bytes and decode with every other variant.
TEST(ZipCli, ArchivesArePortableAcrossThreadsAndInstructionSets) {
  SQ_REQUIRE_SHARED(model, kStories);
  SQ_REQUIRE_SHARED(valid, "corpora/tinystories/valid.txt");
  test::TempDir dir;
  std::string text = read_file(valid);
  text.resize(1500);
  text += sample_text();
  const std::string in = dir.file("in.txt");
  write(in, text);
  const std::string m = "-m " + quote(model) + " ";
  ASSERT_EQ(squeeze("zip " + m + quote(in) + " -o " + quote(dir.file("t2.sqz")) + " -c 64 -t 2 -q").status, 0);
  for (int t : {1, 4}) {
    auto r = squeeze("unzip " + m + quote(dir.file("t2.sqz")) + " -o - -q -t " + std::to_string(t));
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(r.out == text) << "-t " << t;
  }
  const std::string reference = read_file(dir.file("t2.sqz"));
  std::vector<std::string> isas;
  for (kernels::Isa isa : kernels::supported_isas()) isas.emplace_back(kernels::isa_name(isa));
  ASSERT_FALSE(isas.empty());
  for (const std::string& a : isas) {
    const std::string archive = dir.file("isa-" + a + ".sqz");
    auto r = squeeze("zip " + m + quote(in) + " -o " + quote(archive) + " -c 64 -t 2 -q", "SQUEEZE_ISA=" + a);
    ASSERT_EQ(r.status, 0) << a << ": " << r.err;
    EXPECT_TRUE(read_file(archive) == reference) << "the archive written with " << a << " differs";
    for (const std::string& b : isas) {
      r = squeeze("unzip " + m + quote(archive) + " -o - -q -t 2", "SQUEEZE_ISA=" + b);
      ASSERT_EQ(r.status, 0) << a << " -> " << b << ": " << r.err;
      EXPECT_TRUE(r.out == text) << "written with " << a << ", read with " << b;
    }
  }
}

}  // namespace
}  // namespace sq
