// GGUF reader against damaged and hostile files (DESIGN.md, invariant 5). Every case must end in an
// sq::Error-derived exception — FormatError with a message naming the problem for the cases built
// on purpose — quickly and without a large allocation; never a crash, a hang or an abort. The suite
// also runs under ASan + UBSan (the `sanitize` label), which turns any read outside the buffer into
// a failure: each parse gets a heap buffer of exactly the file's size for that reason.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "model/gguf.h"

namespace sq {
namespace {

using Clock = std::chrono::steady_clock;

// Generous even for a sanitizer build on a loaded machine; a parser that loops over a claimed count
// of 2^62 or copies gigabytes takes far longer.
constexpr double kMaxParseSeconds = 2.0;
constexpr int64_t kMaxPeakGrowthBytes = int64_t{64} << 20;

constexpr uint32_t kF32 = static_cast<uint32_t>(GgmlType::F32);

// Hand-written GGUF bytes, so that a test can state any field, valid or not.
class Bytes {
 public:
  Bytes& u8(uint8_t v) { return raw(&v, 1); }
  Bytes& u32(uint32_t v) { return raw(&v, 4); }
  Bytes& u64(uint64_t v) { return raw(&v, 8); }
  Bytes& str(std::string_view s) {
    u64(s.size());
    return raw(s.data(), s.size());
  }
  Bytes& raw(const void* p, size_t n) {
    // resize + memcpy rather than insert: GCC 12 warns falsely (-Wstringop-overflow) on the latter.
    if (n == 0) return *this;
    const size_t at = bytes_.size();
    bytes_.resize(at + n);
    std::memcpy(bytes_.data() + at, p, n);
    return *this;
  }
  Bytes& zeros(size_t n) {
    bytes_.resize(bytes_.size() + n, 0);
    return *this;
  }
  Bytes& align(uint64_t a) {
    bytes_.resize((bytes_.size() + a - 1) / a * a, 0);
    return *this;
  }

  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    raw("GGUF", 4);
    u32(version);
    u64(n_tensors);
    return u64(n_kv);
  }
  Bytes& kv_u32(std::string_view key, uint32_t v) {
    str(key);
    u32(static_cast<uint32_t>(GgufType::UINT32));
    return u32(v);
  }
  Bytes& kv_string(std::string_view key, std::string_view v) {
    str(key);
    u32(static_cast<uint32_t>(GgufType::STRING));
    return str(v);
  }
  // Key, ARRAY, element type and count; the caller appends the elements.
  Bytes& kv_array(std::string_view key, GgufType elem, uint64_t count) {
    str(key);
    u32(static_cast<uint32_t>(GgufType::ARRAY));
    u32(static_cast<uint32_t>(elem));
    return u64(count);
  }
  Bytes& tensor_info(std::string_view name, const std::vector<uint64_t>& ne, uint32_t type,
                     uint64_t offset) {
    str(name);
    u32(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) u64(d);
    u32(type);
    return u64(offset);
  }

  const std::vector<uint8_t>& bytes() const { return bytes_; }
  size_t size() const { return bytes_.size(); }

 private:
  std::vector<uint8_t> bytes_;
};

// Peak resident memory, resettable through /proc/self/clear_refs (Linux 4.0+). Returns -1 where
// either is unavailable, and the memory checks are then skipped.
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

int64_t peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return -1;
}

struct ParseOutcome {
  bool parsed = false;
  bool format_error = false;
  std::string message;
  double seconds = 0;
  int64_t peak_growth = -1;  // bytes; -1 when not measurable
};

// Parses a private exact-size copy, so that ASan sees any read past the end.
ParseOutcome parse_copy(std::span<const uint8_t> bytes) {
  std::vector<uint8_t> copy(bytes.begin(), bytes.end());
  ParseOutcome out;
  const bool measure = reset_peak_rss();
  const int64_t before = measure ? peak_rss_bytes() : -1;
  auto t0 = Clock::now();
  try {
    GgufFile f = GgufFile::parse(copy, "test.gguf");
    out.parsed = true;
  } catch (const FormatError& e) {
    out.format_error = true;
    out.message = e.what();
  }
  out.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (measure && before >= 0) {
    int64_t after = peak_rss_bytes();
    if (after >= 0) out.peak_growth = after - before;
  }
  return out;
}

// The file must be refused with a FormatError that contains `needle` (and the file's name), quickly
// and without a large allocation.
void expect_format_error(const Bytes& b, const std::string& needle) {
  ParseOutcome r = parse_copy(b.bytes());
  ASSERT_FALSE(r.parsed) << "expected a FormatError containing '" << needle << "'";
  ASSERT_TRUE(r.format_error);
  EXPECT_NE(r.message.find(needle), std::string::npos)
      << "message: " << r.message << "\nexpected it to contain: " << needle;
  EXPECT_NE(r.message.find("test.gguf"), std::string::npos) << "message: " << r.message;
  EXPECT_LT(r.seconds, kMaxParseSeconds) << "message: " << r.message;
  if (r.peak_growth >= 0) {
    EXPECT_LT(r.peak_growth, kMaxPeakGrowthBytes) << r.message;
  }
}

// A small but varied valid file: scalars, strings, arrays (nested and empty), and three tensors
// whose last one ends exactly at the end of the file, so that every strict prefix is truncated.
std::vector<uint8_t> small_valid_file() {
  GgufWriter w;
  w.set("general.architecture", GgufValue::of_string("llama"));
  w.set("general.alignment", GgufValue::of_u32(32));
  w.set("llama.context_length", GgufValue::of_u32(128));
  w.set("llama.rope.freq_base", GgufValue::of_f32(10000.0f));
  w.set("tokenizer.ggml.add_bos_token", GgufValue::of_bool(true));
  w.set("tokenizer.ggml.tokens", GgufValue::of_strings({"<unk>", "<s>", "</s>", "a", "bc"}));
  w.set("tokenizer.ggml.scores", GgufValue::of_f32s({0.0f, -1.0f, -2.0f, -3.5f, -4.25f}));
  w.set("tokenizer.ggml.token_type", GgufValue::of_i32s({2, 3, 3, 1, 1}));
  GgufValue nested;
  nested.type = GgufType::ARRAY;
  nested.elem_type = GgufType::ARRAY;
  nested.array = {GgufValue::of_i32s({1, 2}), GgufValue::of_i32s({}), GgufValue::of_i32s({7})};
  w.set("test.nested", nested);
  w.set("test.empty", GgufValue::of_strings({}));
  GgufValue u64v = GgufValue::of_u64(0x0123456789abcdefULL);
  w.set("test.u64", u64v);

  std::vector<float> a(16), b(8 * 4), c(4 * 3 * 2);
  for (size_t k = 0; k < a.size(); ++k) a[k] = static_cast<float>(k) * 0.5f;
  for (size_t k = 0; k < b.size(); ++k) b[k] = -static_cast<float>(k);
  for (size_t k = 0; k < c.size(); ++k) c[k] = static_cast<float>(k * k);
  w.add_tensor_f32("token_embd.weight", {16}, a);
  w.add_tensor_f32("blk.0.attn_q.weight", {8, 4}, b);
  w.add_tensor_f32("output.weight", {4, 3, 2}, c);
  return w.to_bytes();
}

// ---- whole-file damage ---------------------------------------------------------------------------

TEST(GgufRobustness, SmallValidFileParses) {
  std::vector<uint8_t> bytes = small_valid_file();
  GgufFile f = GgufFile::parse(bytes, "small.gguf");
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.metadata().size(), 11u);
  const GgufTensorInfo& last = f.tensors().back();
  EXPECT_EQ(last.data + last.n_bytes, bytes.data() + bytes.size())
      << "the truncation test relies on the last tensor ending at the end of the file";
}

TEST(GgufRobustness, EveryTruncationIsAFormatError) {
  const std::vector<uint8_t> bytes = small_valid_file();
  for (size_t len = 0; len < bytes.size(); ++len) {
    std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(len));
    try {
      GgufFile::parse(prefix, "cut.gguf");
      ADD_FAILURE() << "a prefix of " << len << " of " << bytes.size() << " bytes parsed";
    } catch (const FormatError& e) {
      // Every message names the file, so that a user knows which one is damaged.
      ASSERT_NE(std::string(e.what()).find("cut.gguf"), std::string::npos) << e.what();
    }
  }
}

TEST(GgufRobustness, EmptyInputIsAFormatError) {
  expect_format_error(Bytes(), "not a GGUF file");
}

TEST(GgufRobustness, RandomBitFlipsNeverCrash) {
  const std::vector<uint8_t> original = small_valid_file();
  // Only the header, metadata and tensor table are interpreted; flips in tensor data would parse.
  const size_t table_end = GgufFile::parse(original, "x").data_offset();
  ASSERT_GT(table_end, 0u);
  std::mt19937_64 rng(20240611);
  std::uniform_int_distribution<size_t> pos(0, table_end - 1);
  std::uniform_int_distribution<int> bit(0, 7);
  std::uniform_int_distribution<int> n_flips(1, 4);
  int parsed = 0;
  int refused = 0;
  const auto t0 = Clock::now();
  for (int iter = 0; iter < 4000; ++iter) {
    std::vector<uint8_t> damaged = original;
    for (int k = n_flips(rng); k > 0; --k) damaged[pos(rng)] ^= static_cast<uint8_t>(1u << bit(rng));
    try {
      GgufFile f = GgufFile::parse(damaged, "flip.gguf");
      ++parsed;
      // What did parse must be safe to use: tensor views inside the buffer, values printable.
      for (const auto& t : f.tensors()) {
        if (t.data == nullptr || t.n_bytes == 0) continue;
        ASSERT_GE(t.data, damaged.data());
        ASSERT_LE(t.data + t.n_bytes, damaged.data() + damaged.size()) << t.name;
        volatile uint8_t first = t.data[0];
        volatile uint8_t last = t.data[t.n_bytes - 1];
        (void)first;
        (void)last;
      }
      for (const auto& [key, value] : f.metadata()) {
        (void)value.summary();
        try {
          (void)value.as_int(key);
        } catch (const Error&) {
        }
      }
    } catch (const Error&) {
      ++refused;  // FormatError or any other typed error is fine; anything else fails the test
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_EQ(parsed + refused, 4000);
  EXPECT_GT(refused, 0);
  EXPECT_LT(seconds, 60.0);
}

TEST(GgufRobustness, RandomBytesAfterAValidHeaderNeverCrash) {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> len(0, 300);
  std::uniform_int_distribution<int> small(0, 3);
  for (int iter = 0; iter < 2000; ++iter) {
    Bytes b;
    b.header(static_cast<uint64_t>(small(rng)), static_cast<uint64_t>(small(rng)));
    for (int k = len(rng); k > 0; --k) b.u8(static_cast<uint8_t>(byte(rng)));
    try {
      GgufFile::parse(b.bytes(), "noise.gguf");
    } catch (const Error&) {
    }
  }
}

// ---- header ---------------------------------------------------------------------------------------

TEST(GgufRobustness, BadMagic) {
  Bytes b;
  b.raw("GGML", 4).u32(3).u64(0).u64(0);
  expect_format_error(b, "not a GGUF file");
  Bytes bin;
  bin.u32(0xdeadbeef).u32(3).u64(0).u64(0);
  expect_format_error(bin, "not a GGUF file");
}

TEST(GgufRobustness, UnsupportedVersions) {
  for (uint32_t v : {0u, 1u, 4u, 0x03000000u}) {
    Bytes b;
    b.header(0, 0, v);
    SCOPED_TRACE(v);
    expect_format_error(b, "unsupported GGUF version " + std::to_string(v));
  }
}

TEST(GgufRobustness, AbsurdTensorCount) {
  Bytes b;
  b.header(uint64_t{1} << 62, 0).zeros(64);
  expect_format_error(b, "tensors");
  Bytes max;
  max.header(std::numeric_limits<uint64_t>::max(), 0).zeros(64);
  expect_format_error(max, "tensors");
}

TEST(GgufRobustness, AbsurdMetadataCount) {
  Bytes b;
  b.header(0, uint64_t{1} << 62).zeros(64);
  expect_format_error(b, "metadata entries");
  Bytes max;
  max.header(0, std::numeric_limits<uint64_t>::max()).zeros(64);
  expect_format_error(max, "metadata entries");
}

// A count just under what the file could hold passes the up-front check; the entries themselves
// then run out. Nothing may be allocated per claimed entry before it is read.
TEST(GgufRobustness, MetadataCountSlightlyTooLarge) {
  Bytes b;
  b.header(0, 3).kv_u32("a", 1).kv_u32("b", 2).zeros(12);
  ParseOutcome r = parse_copy(b.bytes());
  EXPECT_TRUE(r.format_error);
}

// ---- metadata -------------------------------------------------------------------------------------

TEST(GgufRobustness, AbsurdKeyLength) {
  Bytes b;
  b.header(0, 1).u64(uint64_t{1} << 63).zeros(32);
  expect_format_error(b, "key of metadata entry 0");
}

TEST(GgufRobustness, AbsurdStringValueLength) {
  Bytes b;
  b.header(0, 1).str("general.name").u32(static_cast<uint32_t>(GgufType::STRING));
  b.u64(uint64_t{1} << 63).raw("abc", 3);
  expect_format_error(b, "general.name");
  expect_format_error(b, "has length 9223372036854775808");
}

TEST(GgufRobustness, StringLengthOnePastTheEnd) {
  Bytes b;
  b.header(0, 1).str("k").u32(static_cast<uint32_t>(GgufType::STRING)).u64(4).raw("abc", 3);
  expect_format_error(b, "has length 4");
}

TEST(GgufRobustness, AbsurdArrayLength) {
  for (GgufType elem : {GgufType::UINT8, GgufType::UINT64, GgufType::STRING, GgufType::ARRAY}) {
    SCOPED_TRACE(gguf_type_name(elem));
    Bytes b;
    b.header(0, 1).kv_array("tokenizer.ggml.tokens", elem, uint64_t{1} << 61).zeros(64);
    expect_format_error(b, "claims an array of 2305843009213693952");
    Bytes max;
    max.header(0, 1).kv_array("tokenizer.ggml.tokens", elem, ~uint64_t{0}).zeros(64);
    expect_format_error(max, "tokenizer.ggml.tokens");
  }
}

// An array of strings whose count fits the bytes left (8 per empty string) but whose strings then
// claim lengths past the end.
TEST(GgufRobustness, ArrayOfStringsRunsOut) {
  Bytes b;
  b.header(0, 1).kv_array("tokenizer.ggml.tokens", GgufType::STRING, 4);
  b.str("a").u64(1000).zeros(24);
  expect_format_error(b, "tokenizer.ggml.tokens");
}

TEST(GgufRobustness, ArraysNestedTooDeep) {
  Bytes b;
  b.header(0, 1).str("deep").u32(static_cast<uint32_t>(GgufType::ARRAY));
  for (int k = 0; k < 200; ++k) b.u32(static_cast<uint32_t>(GgufType::ARRAY)).u64(1);
  b.u32(static_cast<uint32_t>(GgufType::UINT8)).u64(1).u8(0);
  expect_format_error(b, "nests arrays deeper");
}

TEST(GgufRobustness, UnknownValueTypes) {
  Bytes b;
  b.header(0, 1).str("general.name").u32(13).u32(0);
  expect_format_error(b, "unknown value type 13");
  Bytes arr;
  arr.header(0, 1).str("k").u32(static_cast<uint32_t>(GgufType::ARRAY)).u32(0xffffffffu).u64(1).zeros(8);
  expect_format_error(arr, "unknown value type 4294967295");
}

TEST(GgufRobustness, BoolOtherThanZeroOrOne) {
  Bytes b;
  b.header(0, 1).str("tokenizer.ggml.add_bos_token").u32(static_cast<uint32_t>(GgufType::BOOL)).u8(2);
  expect_format_error(b, "tokenizer.ggml.add_bos_token");
}

TEST(GgufRobustness, BoolArrayElementOtherThanZeroOrOne) {
  Bytes b;
  b.header(0, 1).kv_array("test.flags", GgufType::BOOL, 3).u8(1).u8(0).u8(7);
  expect_format_error(b, "test.flags");
}

TEST(GgufRobustness, DuplicateMetadataKey) {
  Bytes b;
  b.header(0, 2).kv_u32("llama.block_count", 2).kv_u32("llama.block_count", 3);
  expect_format_error(b, "duplicate metadata key 'llama.block_count'");
}

TEST(GgufRobustness, BadAlignment) {
  for (uint32_t al : {0u, 3u, 48u, 0x80000000u}) {
    SCOPED_TRACE(al);
    Bytes b;
    b.header(0, 1).kv_u32("general.alignment", al);
    expect_format_error(b, "general.alignment");
  }
  Bytes s;
  s.header(0, 1).kv_string("general.alignment", "32");
  expect_format_error(s, "general.alignment");
}

// ---- tensor table -----------------------------------------------------------------------------------

TEST(GgufRobustness, AbsurdTensorNameLength) {
  Bytes b;
  b.header(1, 0).u64(~uint64_t{0}).zeros(64);
  expect_format_error(b, "name of tensor 0");
}

TEST(GgufRobustness, TooManyDimensions) {
  Bytes b;
  b.header(1, 0).tensor_info("t", {1, 1, 1, 1, 1}, kF32, 0).align(32).zeros(4);
  expect_format_error(b, "tensor 't' has 5 dimensions; expected 1 to 4");
  Bytes huge;
  huge.header(1, 0).str("t").u32(0xffffffffu).zeros(256);
  expect_format_error(huge, "4294967295 dimensions");
}

TEST(GgufRobustness, ZeroDimensions) {
  Bytes b;
  b.header(1, 0).tensor_info("t", {}, kF32, 0).align(32).zeros(4);
  expect_format_error(b, "tensor 't' has 0 dimensions");
}

TEST(GgufRobustness, ElementCountOverflows) {
  // 2^32 * 2^32 = 2^64: wraps to 0 in 64-bit arithmetic, which would make a zero-byte tensor.
  Bytes b;
  b.header(1, 0).tensor_info("t", {uint64_t{1} << 32, uint64_t{1} << 32}, kF32, 0).align(32).zeros(4);
  expect_format_error(b, "overflows");
  // 2^21 in each of four dimensions: 2^84.
  const uint64_t d = uint64_t{1} << 21;
  Bytes four;
  four.header(1, 0).tensor_info("t", {d, d, d, d}, kF32, 0).align(32).zeros(4);
  expect_format_error(four, "overflows");
  // One dimension above INT64_MAX.
  Bytes one;
  one.header(1, 0).tensor_info("t", {~uint64_t{0}}, kF32, 0).align(32).zeros(4);
  expect_format_error(one, "overflows");
}

// The element count fits in 64 bits but the byte count does not (2^62 F32 elements = 2^64 bytes).
TEST(GgufRobustness, ByteCountOverflows) {
  Bytes b;
  b.header(1, 0).tensor_info("t", {uint64_t{1} << 31, uint64_t{1} << 31}, kF32, 0).align(32).zeros(4);
  expect_format_error(b, "'t'");
  ParseOutcome r = parse_copy(b.bytes());
  EXPECT_TRUE(r.message.find("overflow") != std::string::npos ||
              r.message.find("runs past the end") != std::string::npos)
      << r.message;
}

TEST(GgufRobustness, RowsNotAMultipleOfTheBlockSize) {
  Bytes b;
  b.header(1, 0).tensor_info("q", {33}, static_cast<uint32_t>(GgmlType::Q8_0), 0).align(32).zeros(64);
  expect_format_error(b, "block size 32");
}

TEST(GgufRobustness, TensorDataPastTheEnd) {
  // 16 floats = 64 bytes, only 60 present.
  Bytes b;
  b.header(1, 0).tensor_info("w", {16}, kF32, 0).align(32).zeros(60);
  expect_format_error(b, "tensor 'w' (64 bytes at data offset 0) runs past the end");
  // Right size, but placed at an offset past the data.
  Bytes far;
  far.header(1, 0).tensor_info("w", {16}, kF32, 1024).align(32).zeros(64);
  expect_format_error(far, "runs past the end");
  // An offset so large that offset + size wraps around.
  Bytes wrap;
  wrap.header(1, 0).tensor_info("w", {16}, kF32, ~uint64_t{0} - 31).align(32).zeros(64);
  expect_format_error(wrap, "runs past the end");
}

TEST(GgufRobustness, DataSectionStartsPastTheEnd) {
  // The tensor table ends mid-alignment, and the padding up to the data section is missing.
  Bytes b;
  b.header(1, 0).tensor_info("w", {0}, kF32, 0);
  ASSERT_NE(b.size() % 32, 0u);
  expect_format_error(b, "past the end of the file");
}

TEST(GgufRobustness, MisalignedOffset) {
  Bytes b;
  b.header(2, 0).tensor_info("a", {4}, kF32, 0).tensor_info("b", {4}, kF32, 16).align(32).zeros(64);
  expect_format_error(b, "tensor 'b' has data offset 16, not a multiple of the alignment 32");
  // With general.alignment = 16 the same offset is fine.
  Bytes ok;
  ok.header(2, 1).kv_u32("general.alignment", 16);
  ok.tensor_info("a", {4}, kF32, 0).tensor_info("b", {4}, kF32, 16).align(16).zeros(32);
  GgufFile f = GgufFile::parse(ok.bytes(), "ok.gguf");
  EXPECT_EQ(f.alignment(), 16u);
  EXPECT_EQ(f.data_offset() % 16, 0u);
}

TEST(GgufRobustness, DuplicateTensorName) {
  Bytes b;
  b.header(2, 0).tensor_info("w", {4}, kF32, 0).tensor_info("w", {4}, kF32, 32).align(32).zeros(64);
  expect_format_error(b, "duplicate tensor name 'w'");
}

// An unknown type id is not an error of the file's structure (a newer GGML type): the tensor is
// listed without data, and whoever needs it refuses it by name.
TEST(GgufRobustness, UnknownTensorTypeIsListedWithoutData) {
  Bytes b;
  b.header(1, 0).tensor_info("w", {4}, 200, 0).align(32).zeros(16);
  GgufFile f = GgufFile::parse(b.bytes(), "t.gguf");
  ASSERT_EQ(f.tensors().size(), 1u);
  EXPECT_FALSE(f.tensors()[0].type_known());
  EXPECT_EQ(f.tensors()[0].data, nullptr);
  EXPECT_EQ(f.tensors()[0].n_bytes, 0u);
}

// ---- cost bounds -------------------------------------------------------------------------------------

// A key of 512 KiB and an array of 64K empty strings (a 1 MiB file). Parsing must stay linear in the
// file: nothing that repeats per element may copy the key (a per-element message label once made
// this 32 GiB of copying).
TEST(GgufRobustness, LongKeyWithManyStringsParsesInLinearTime) {
  const std::string key(512 * 1024, 'k');
  const uint64_t n = 64 * 1024;
  Bytes b;
  b.header(0, 1).kv_array(key, GgufType::STRING, n).zeros(n * 8);
  ParseOutcome r = parse_copy(b.bytes());
  EXPECT_TRUE(r.parsed) << r.message;
  EXPECT_LT(r.seconds, kMaxParseSeconds);
}

// Memory for metadata must stay within a small multiple of the file: a 4 MiB file holding one array
// of 4M uint8 values (one GgufValue per element once took about 100 times the file).
TEST(GgufRobustness, ScalarArrayMemoryIsProportionalToTheFile) {
  const uint64_t n = 4u << 20;
  Bytes b;
  b.header(0, 1).kv_array("test.bytes", GgufType::UINT8, n).zeros(n);
  ParseOutcome r = parse_copy(b.bytes());
  EXPECT_TRUE(r.parsed) << r.message;
  if (r.peak_growth < 0) GTEST_SKIP() << "peak RSS is not measurable here";
  EXPECT_LT(r.peak_growth, static_cast<int64_t>(16 * b.size()));
}

}  // namespace
}  // namespace sq
