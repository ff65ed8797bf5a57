// The compressor through its library interface: round trips on corpora and awkward bytes with two
// real vocabularies, what the coder costs against the model's cross-entropy, and damage of every
// kind refused with an error.
#include "codec/sqz.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/error.h"
#include "base/mmap.h"
#include "base/rng.h"
#include "codec/baselines.h"
#include "engine/engine.h"
#include "support.h"

namespace sq::codec {
namespace {

namespace fs = std::filesystem;

constexpr const char* kStories = "models/stories260K/stories260K.gguf";
constexpr const char* kTinyRandom = "models/extras/llama-2-tiny-random.gguf";

// Engines are loaded once per process and shared by the tests (loading is read-only).
const Engine* engine(const std::string& relative) {
  static std::map<std::string, std::unique_ptr<Engine>> cache;
  auto it = cache.find(relative);
  if (it == cache.end()) {
    const std::string path = test::shared_path(relative);
    if (path.empty()) return nullptr;
    it = cache.emplace(relative, Engine::load({path, ""})).first;
  }
  return it->second.get();
}

#define SQ_REQUIRE_ENGINE(var, relative)                                                     \
  const Engine* var = engine(relative);                                                      \
  if (var == nullptr) {                                                                      \
    GTEST_SKIP() << "needs " << (relative) << " from the shared data folder (set SQUEEZE_SHARED)"; \
  }

void expect_round_trip(const Engine& e, const std::string& data, int32_t chunk = 0, int threads = 2,
                       ZipStats* stats_out = nullptr) {
  ZipOptions zo;
  zo.chunk_tokens = chunk;
  zo.n_threads = threads;
  ZipStats stats;
  const std::string archive = zip(e, data, zo, &stats);
  EXPECT_EQ(stats.archive_bytes, archive.size());
  EXPECT_EQ(stats.input_bytes, data.size());
  UnzipOptions uo;
  uo.n_threads = threads;
  const std::string back = unzip(e, archive, uo);
  ASSERT_EQ(back.size(), data.size());
  EXPECT_TRUE(back == data) << "decoded bytes differ from the original";
  const SqzInfo info = read_info(archive);
  EXPECT_EQ(info.original_bytes, data.size());
  EXPECT_EQ(info.n_chunks, stats.n_chunks);
  if (stats_out != nullptr) *stats_out = stats;
}

std::string random_bytes(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng.next_u64());
  return s;
}

// The awkward inputs the issue names, for both vocabularies.
std::vector<std::pair<std::string, std::string>> awkward_inputs() {
  return {
      {"empty", ""},
      {"one byte", "a"},
      {"one NUL", std::string(1, '\0')},
      {"one 0xFF", "\xff"},
      {"invalid UTF-8", "caf\xc3 \xff\xfe broken \xe2\x82 tail \xc0\xaf \xed\xa0\x80 end\x80"},
      {"U+2581", "a\xe2\x96\x81" "b \xe2\x96\x81\xe2\x96\x81 c\xe2\x96\x81"},
      {"Chinese", "满纸荒唐言，一把辛酸泪！都云作者痴，谁解其中味？\r\n"},
      {"spaces", "   leading and trailing spaces   \n\n\t tabs\t\t and \r\n line ends  "},
      {"control tokens' text", "<s> </s> <unk> <0x41> <|endoftext|>"},
      // Every kind of line start a segment may begin at: blank lines, runs of them, a line of
      // spaces, an indented line, a line that starts with an escaped byte or with U+2581, a last
      // line without a newline.
      {"lines", "Once upon a time, there was a cat.\n\nThe end.\n\n\n \nOnce upon a time there "
                "was a dog named Max. Max liked to run.\n  indented line\n\n\xff\xfe bytes\n\n"
                "\xe2\x96\x81x and more\n\n\nOne day, Lily went to the park. She saw a big tree.\n"
                "last line"},
      {"random binary", random_bytes(1500, 42)},
      {"all bytes", [] {
         std::string s;
         for (int i = 0; i < 256; ++i) s.push_back(static_cast<char>(i));
         return s;
       }()},
  };
}

class AwkwardInput : public ::testing::TestWithParam<const char*> {};

TEST_P(AwkwardInput, RoundTripsEveryAwkwardInput) {
  SQ_REQUIRE_ENGINE(e, GetParam());
  for (const auto& [name, data] : awkward_inputs()) {
    SCOPED_TRACE(name);
    expect_round_trip(*e, data);
    expect_round_trip(*e, data, 3, 1);  // tiny segments: every boundary case of the cutter
    expect_round_trip(*e, data, 9, 2);  // short segments: restarts at line starts and mid-line
  }
}

INSTANTIATE_TEST_SUITE_P(Models, AwkwardInput, ::testing::Values(kStories, kTinyRandom),
                         [](const auto& info) {
                           return std::string(info.param).find("stories") != std::string::npos
                                      ? std::string("stories260K")
                                      : std::string("tiny_random");
                         });

// The first 16 kB of every corpus file, with both models (the whole files: the slow test below).
struct CorpusCase {
  std::string model;
  std::string file;
};

// How CTest's names show a case: the file, not its bytes.
void PrintTo(const CorpusCase& c, std::ostream* os) { *os << c.file; }

std::vector<CorpusCase> corpus_cases() {
  std::vector<CorpusCase> cases;
  const std::string dir = test::shared_path("corpora");
  if (dir.empty()) return cases;
  std::vector<std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  for (const char* m : {kStories, kTinyRandom}) {
    for (const std::string& f : files) cases.push_back({m, f});
  }
  return cases;
}

std::string case_name(const CorpusCase& c) {
  std::string name = (c.model == kStories ? "stories260K_" : "tiny_random_") +
                     fs::path(c.file).parent_path().filename().string() + "_" +
                     fs::path(c.file).filename().string();
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

class Corpus : public ::testing::TestWithParam<CorpusCase> {};
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(Corpus);

// Chunks of 512 positions: stories260K's training length (its GGUF says 2048), and four times less
// attention per token than the default for the 4096-context random model.
TEST_P(Corpus, First16kRoundTrip) {
  SQ_REQUIRE_ENGINE(e, GetParam().model.c_str());
  std::string data = read_file(GetParam().file);
  data.resize(std::min<size_t>(data.size(), 16384));
  expect_round_trip(*e, data, 512);
}

TEST_P(Corpus, SlowWholeFileRoundTrip) {
  SQ_REQUIRE_ENGINE(e, GetParam().model.c_str());
  expect_round_trip(*e, read_file(GetParam().file), 512);
}

// Issue 4's target: on held-out TinyStories text, stories260K's archive (-c 512, the length it was
// trained at) is at least 40 % smaller than what xz -9 makes of the same bytes. The whole file
// (600 kB) is the slow test; 100 kB from its middle is the fast one.
void expect_beats_xz(const std::string& text, double min_saving) {
  SQ_REQUIRE_ENGINE(e, kStories);
  ZipOptions o;
  o.chunk_tokens = 512;
  o.n_threads = 2;
  ZipStats st;
  const std::string archive = zip(*e, text, o, &st);
  const size_t xz = baseline_compress(Baseline::Xz, text).size();
  const double saving = 1.0 - static_cast<double>(archive.size()) / static_cast<double>(xz);
  std::printf("%zu bytes: .sqz %zu, xz -9 %zu: %.1f %% smaller (%llu segments, %llu chunks)\n",
              text.size(), archive.size(), xz, 100 * saving,
              static_cast<unsigned long long>(st.n_segments), static_cast<unsigned long long>(st.n_chunks));
  EXPECT_GE(saving, min_saving);
  EXPECT_GT(st.n_segments, st.n_chunks);  // the model started afresh inside chunks
  EXPECT_EQ(unzip(*e, archive, UnzipOptions{}), text);
}

TEST(SqzTarget, TinyStoriesSliceIsFortyPercentSmallerThanXz) {
  SQ_REQUIRE_SHARED(valid, "corpora/tinystories/valid.txt");
  const std::string all = read_file(valid);
  // A slice of whole lines from the middle of the file.
  size_t begin = all.find('\n', all.size() / 2) + 1;
  size_t end = all.find('\n', begin + 100000) + 1;
  expect_beats_xz(all.substr(begin, end - begin), 0.40);
}

TEST(SqzTarget, SlowTinyStoriesIsFortyPercentSmallerThanXz) {
  SQ_REQUIRE_SHARED(valid, "corpora/tinystories/valid.txt");
  expect_beats_xz(read_file(valid), 0.40);
}

INSTANTIATE_TEST_SUITE_P(Files, Corpus, ::testing::ValuesIn(corpus_cases()),
                         [](const auto& info) { return case_name(info.param); });

TEST(Sqz, CorporaArePresent) {
  SQ_REQUIRE_SHARED(dir, "corpora");
  EXPECT_GT(corpus_cases().size(), 20u);
}

// On in-domain text the archive must come close to the model's own cross-entropy: the coder, the
// integer frequencies and the container together lose little.
TEST(Sqz, CodeLengthIsCloseToTheModelsCrossEntropy) {
  SQ_REQUIRE_ENGINE(e, kStories);
  SQ_REQUIRE_SHARED(valid, "corpora/tinystories/valid.txt");
  std::string data = read_file(valid);
  data.resize(100000);
  ZipOptions o;
  o.chunk_tokens = 512;
  ZipStats st;
  zip(*e, data, o, &st);  // round trips are checked elsewhere; this is about size
  const double payload_bits = 8.0 * static_cast<double>(st.payload_bytes);
  // The information coded: the tokens at the model's probabilities, and the bits that start
  // segments at theirs (a fraction of a bit per line).
  const double ideal = st.model_bits + st.segment_bits;
  EXPECT_GT(payload_bits, ideal);
  EXPECT_GT(st.segment_bits, 0.0);
  EXPECT_LT(st.segment_bits, 0.01 * st.model_bits);
  // Issue 4: for 100 kB and more, the coded data is within 0.5 % of the cross-entropy (the range
  // coder's flush, a byte or less per chunk, included).
  EXPECT_LT(payload_bits, ideal * 1.005)
      << "payload " << st.payload_bytes << " bytes, model " << st.model_bits / 8
      << " bytes, segment bits " << st.segment_bits / 8 << " bytes";
  std::printf("payload %llu bytes, model %.1f + segments %.1f bytes (+%.3f %%), archive %llu bytes, "
              "%llu segments in %llu chunks\n",
              static_cast<unsigned long long>(st.payload_bytes), st.model_bits / 8, st.segment_bits / 8,
              100.0 * (payload_bits / ideal - 1), static_cast<unsigned long long>(st.archive_bytes),
              static_cast<unsigned long long>(st.n_segments), static_cast<unsigned long long>(st.n_chunks));
  EXPECT_EQ(st.escaped_bytes, 0u);
  EXPECT_EQ(st.stored_chunks, 0u);
  // And it compresses: TinyStories text under 1.5 bits per byte with the model it trained.
  EXPECT_LT(8.0 * static_cast<double>(st.archive_bytes) / static_cast<double>(data.size()), 1.5);
}

TEST(Sqz, RandomBytesAreStoredNotExpanded) {
  SQ_REQUIRE_ENGINE(e, kStories);
  const std::string data = random_bytes(5000, 7);
  ZipStats st;
  expect_round_trip(*e, data, 0, 2, &st);
  EXPECT_GT(st.stored_chunks, 0u);
  // Stored chunks cost their bytes plus a table entry.
  EXPECT_LT(st.archive_bytes, data.size() + 200 + 20 * st.n_chunks);
}

TEST(Sqz, ArchiveDoesNotDependOnThreads) {
  SQ_REQUIRE_ENGINE(e, kStories);
  SQ_REQUIRE_SHARED(valid, "corpora/tinystories/valid.txt");
  std::string data = read_file(valid);
  data.resize(12000);
  std::string first;
  for (int threads : {1, 2, 3}) {
    ZipOptions o;
    o.chunk_tokens = 256;
    o.n_threads = threads;
    const std::string a = zip(*e, data, o);
    if (first.empty()) first = a;
    EXPECT_TRUE(a == first) << threads << " threads gave another archive";
  }
}

TEST(Sqz, BadChunkSizesAreRefused) {
  SQ_REQUIRE_ENGINE(e, kStories);
  ZipOptions o;
  o.chunk_tokens = 1;
  EXPECT_THROW(zip(*e, "text", o), InvalidArgument);
  o.chunk_tokens = -5;
  EXPECT_THROW(zip(*e, "text", o), InvalidArgument);
  o.chunk_tokens = 1 << 20;  // beyond the model's context
  EXPECT_THROW(zip(*e, "text", o), InvalidArgument);
}

// ---- damage --------------------------------------------------------------------------------------

std::string small_archive(const Engine& e, std::string* original = nullptr) {
  const std::string data = "Once upon a time, there was a little dog named Max. \xff He liked to run.";
  if (original != nullptr) *original = data;
  ZipOptions o;
  o.chunk_tokens = 16;  // several chunks, so the table and chunk boundaries are covered
  o.n_threads = 1;
  return zip(e, data, o);
}

// A damaged archive must give an error: never other bytes, never a crash or a hang.
void expect_refused(const Engine& e, const std::string& archive, const std::string& what) {
  UnzipOptions o;
  o.n_threads = 1;
  try {
    const std::string out = unzip(e, archive, o);
    ADD_FAILURE() << what << ": decoded " << out.size() << " bytes instead of failing";
  } catch (const FormatError&) {
  } catch (const InvalidArgument&) {
  }
}

TEST(SqzDamage, EveryBitFlipIsRefused) {
  SQ_REQUIRE_ENGINE(e, kStories);
  std::string original;
  const std::string archive = small_archive(*e, &original);
  ASSERT_EQ(unzip(*e, archive, {}), original);
  for (size_t byte = 0; byte < archive.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = archive;
      bad[byte] = static_cast<char>(bad[byte] ^ (1 << bit));
      expect_refused(*e, bad, "bit " + std::to_string(bit) + " of byte " + std::to_string(byte));
    }
  }
}

TEST(SqzDamage, EveryTruncationAndExtensionIsRefused) {
  SQ_REQUIRE_ENGINE(e, kStories);
  const std::string archive = small_archive(*e);
  for (size_t n = 0; n < archive.size(); ++n) {
    expect_refused(*e, archive.substr(0, n), "truncated to " + std::to_string(n));
  }
  expect_refused(*e, archive + "x", "one byte appended");
  expect_refused(*e, archive + archive, "doubled");
  EXPECT_THROW(read_info("PK\x03\x04 not an archive"), FormatError);
}

TEST(SqzDamage, AnotherModelIsRefusedByName) {
  SQ_REQUIRE_ENGINE(e, kStories);
  SQ_REQUIRE_ENGINE(other, kTinyRandom);
  const std::string archive = small_archive(*e);
  try {
    unzip(*other, archive, {});
    FAIL() << "decoded with the wrong model";
  } catch (const InvalidArgument& err) {
    EXPECT_NE(std::string(err.what()).find("stories260K.gguf"), std::string::npos) << err.what();
  }
}

TEST(SqzDamage, FingerprintDependsOnTheWeights) {
  SQ_REQUIRE_ENGINE(e, kStories);
  SQ_REQUIRE_ENGINE(other, kTinyRandom);
  EXPECT_EQ(model_fingerprint(*e), model_fingerprint(*e));
  EXPECT_NE(model_fingerprint(*e), model_fingerprint(*other));
}

}  // namespace
}  // namespace sq::codec
