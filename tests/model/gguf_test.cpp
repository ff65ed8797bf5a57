// GGUF writer and reader: what the writer writes, the reader reads back value for value and byte for
// byte, in v3 and v2; files are opened through a mapping that does not copy the tensor data.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

#include "base/error.h"
#include "model/gguf.h"

namespace sq {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the system temp folder, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "squeeze-gguf-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

GgufValue scalar_u(GgufType t, uint64_t v) {
  GgufValue r;
  r.type = t;
  r.u = v;
  return r;
}
GgufValue scalar_i(GgufType t, int64_t v) {
  GgufValue r;
  r.type = t;
  r.i = v;
  return r;
}
GgufValue scalar_f(GgufType t, double v) {
  GgufValue r;
  r.type = t;
  r.f = v;
  return r;
}
GgufValue array_of(GgufType elem, std::vector<GgufValue> items) {
  GgufValue r;
  r.type = GgufType::ARRAY;
  r.elem_type = elem;
  r.array = std::move(items);
  return r;
}

// Values compare by their declared type; floats bit for bit, so that NaN, -0 and infinities count.
void expect_same_value(const GgufValue& want, const GgufValue& got, const std::string& where) {
  ASSERT_EQ(want.type, got.type) << where;
  switch (want.type) {
    case GgufType::UINT8: case GgufType::UINT16: case GgufType::UINT32: case GgufType::UINT64:
    case GgufType::BOOL:
      EXPECT_EQ(want.u, got.u) << where;
      break;
    case GgufType::INT8: case GgufType::INT16: case GgufType::INT32: case GgufType::INT64:
      EXPECT_EQ(want.i, got.i) << where;
      break;
    case GgufType::FLOAT32:
      EXPECT_EQ(std::bit_cast<uint32_t>(static_cast<float>(want.f)),
                std::bit_cast<uint32_t>(static_cast<float>(got.f)))
          << where;
      break;
    case GgufType::FLOAT64:
      EXPECT_EQ(std::bit_cast<uint64_t>(want.f), std::bit_cast<uint64_t>(got.f)) << where;
      break;
    case GgufType::STRING:
      EXPECT_EQ(want.str, got.str) << where;
      break;
    case GgufType::ARRAY:
      // Through array_size() and element(): either side may hold numbers packed or as values.
      ASSERT_EQ(want.elem_type, got.elem_type) << where;
      ASSERT_EQ(want.array_size(), got.array_size()) << where;
      for (size_t k = 0; k < want.array_size(); ++k) {
        expect_same_value(want.element(k), got.element(k), where + "[" + std::to_string(k) + "]");
      }
      break;
  }
}

// One value of every scalar type at its extremes, strings (empty, binary, UTF-8), arrays of every
// type (empty and not), and nested arrays.
std::vector<std::pair<std::string, GgufValue>> all_kinds_of_metadata() {
  const double nan64 = std::numeric_limits<double>::quiet_NaN();
  const float inf32 = std::numeric_limits<float>::infinity();
  std::vector<std::pair<std::string, GgufValue>> kv = {
      {"u8.max", scalar_u(GgufType::UINT8, 255)},
      {"u8.zero", scalar_u(GgufType::UINT8, 0)},
      {"i8.min", scalar_i(GgufType::INT8, -128)},
      {"i8.max", scalar_i(GgufType::INT8, 127)},
      {"u16.max", scalar_u(GgufType::UINT16, 65535)},
      {"i16.min", scalar_i(GgufType::INT16, -32768)},
      {"u32.max", GgufValue::of_u32(0xffffffffu)},
      {"i32.min", GgufValue::of_i32(std::numeric_limits<int32_t>::min())},
      {"u64.max", GgufValue::of_u64(std::numeric_limits<uint64_t>::max())},
      {"i64.min", scalar_i(GgufType::INT64, std::numeric_limits<int64_t>::min())},
      {"i64.max", scalar_i(GgufType::INT64, std::numeric_limits<int64_t>::max())},
      {"f32.value", GgufValue::of_f32(-0.1f)},
      {"f32.inf", GgufValue::of_f32(inf32)},
      {"f32.neg_zero", GgufValue::of_f32(-0.0f)},
      {"f32.denormal", GgufValue::of_f32(std::numeric_limits<float>::denorm_min())},
      {"f64.value", scalar_f(GgufType::FLOAT64, 3.141592653589793)},
      {"f64.nan", scalar_f(GgufType::FLOAT64, nan64)},
      {"f64.lowest", scalar_f(GgufType::FLOAT64, std::numeric_limits<double>::lowest())},
      {"bool.true", GgufValue::of_bool(true)},
      {"bool.false", GgufValue::of_bool(false)},
      {"string.plain", GgufValue::of_string("llama")},
      {"string.empty", GgufValue::of_string("")},
      {"string.utf8", GgufValue::of_string("\xe5\x8e\x8b\xe7\xbc\xa9 \xe2\x96\x81hello")},
      {"string.binary", GgufValue::of_string(std::string("a\0b\xff\n", 5))},
      {"", GgufValue::of_string("an empty key is legal")},
      {"array.u8", array_of(GgufType::UINT8, {scalar_u(GgufType::UINT8, 0), scalar_u(GgufType::UINT8, 255)})},
      {"array.i8", array_of(GgufType::INT8, {scalar_i(GgufType::INT8, -1), scalar_i(GgufType::INT8, 5)})},
      {"array.u16", array_of(GgufType::UINT16, {scalar_u(GgufType::UINT16, 65535)})},
      {"array.i16", array_of(GgufType::INT16, {scalar_i(GgufType::INT16, -300), scalar_i(GgufType::INT16, 300)})},
      {"array.u32", array_of(GgufType::UINT32, {GgufValue::of_u32(1), GgufValue::of_u32(0xffffffffu)})},
      {"array.i32", GgufValue::of_i32s({-5, 0, 5, std::numeric_limits<int32_t>::max()})},
      {"array.u64", array_of(GgufType::UINT64, {GgufValue::of_u64(1ULL << 40)})},
      {"array.i64", array_of(GgufType::INT64, {scalar_i(GgufType::INT64, -(1LL << 50))})},
      {"array.f32", GgufValue::of_f32s({0.0f, -1.5f, 1e-30f, inf32})},
      {"array.f64", array_of(GgufType::FLOAT64, {scalar_f(GgufType::FLOAT64, 1e300), scalar_f(GgufType::FLOAT64, -0.0)})},
      {"array.bool", array_of(GgufType::BOOL, {GgufValue::of_bool(true), GgufValue::of_bool(false), GgufValue::of_bool(true)})},
      {"array.string", GgufValue::of_strings({"<s>", "", "\xe2\x96\x81the", std::string(300, 'x')})},
  };
  // Empty arrays of every element type.
  for (uint32_t t = 0; t <= static_cast<uint32_t>(GgufType::FLOAT64); ++t) {
    kv.emplace_back("empty." + std::string(gguf_type_name(static_cast<GgufType>(t))),
                    array_of(static_cast<GgufType>(t), {}));
  }
  // Arrays of arrays: uneven lengths, an empty inner array, different inner element types, and three
  // levels deep.
  kv.emplace_back("nested.ints", array_of(GgufType::ARRAY, {GgufValue::of_i32s({1, 2, 3}),
                                                            GgufValue::of_i32s({}),
                                                            GgufValue::of_i32s({4})}));
  kv.emplace_back("nested.strings", array_of(GgufType::ARRAY, {GgufValue::of_strings({"a b", "c"}),
                                                               GgufValue::of_strings({""})}));
  kv.emplace_back("nested.deep",
                  array_of(GgufType::ARRAY,
                           {array_of(GgufType::ARRAY, {GgufValue::of_f32s({1.0f}), GgufValue::of_f32s({})}),
                            array_of(GgufType::ARRAY, {})}));
  return kv;
}

struct TensorSpec {
  std::string name;
  GgmlType type;
  std::vector<uint64_t> ne;
  std::vector<uint8_t> bytes;
};

// Tensors of several types and 1 to 4 dimensions, filled with seeded random bytes (the reader does
// not interpret them, so any bytes are a valid payload).
std::vector<TensorSpec> several_tensors() {
  std::vector<TensorSpec> specs = {
      {"f32.1d", GgmlType::F32, {7}, {}},
      {"f16.2d", GgmlType::F16, {5, 3}, {}},
      {"bf16.3d", GgmlType::BF16, {4, 3, 2}, {}},
      {"q8_0.2d", GgmlType::Q8_0, {64, 3}, {}},
      {"q4_0.1d", GgmlType::Q4_0, {32}, {}},
      {"q4_k.2d", GgmlType::Q4_K, {256, 2}, {}},
      {"q6_k.1d", GgmlType::Q6_K, {512}, {}},
      {"i8.4d", GgmlType::I8, {3, 2, 2, 2}, {}},
      {"i32.1d", GgmlType::I32, {1}, {}},
  };
  std::mt19937 rng(42);
  for (auto& s : specs) {
    auto info = type_info(s.type);
    uint64_t n = 1;
    for (uint64_t d : s.ne) n *= d;
    s.bytes.resize(n / info->block_elems * info->block_bytes);
    for (auto& b : s.bytes) b = static_cast<uint8_t>(rng());
  }
  return specs;
}

void check_tensors(const GgufFile& f, std::span<const uint8_t> file, const std::vector<TensorSpec>& specs,
                   uint64_t alignment) {
  ASSERT_EQ(f.tensors().size(), specs.size());
  EXPECT_EQ(f.data_offset() % alignment, 0u);
  for (size_t k = 0; k < specs.size(); ++k) {
    const GgufTensorInfo& t = f.tensors()[k];
    const TensorSpec& s = specs[k];
    SCOPED_TRACE(s.name);
    EXPECT_EQ(t.name, s.name);
    EXPECT_EQ(t.type(), s.type);
    EXPECT_TRUE(t.type_known());
    EXPECT_EQ(t.ne, s.ne);
    uint64_t n = 1;
    for (uint64_t d : s.ne) n *= d;
    EXPECT_EQ(t.n_elements, n);
    EXPECT_EQ(t.rows(), n / s.ne[0]);
    EXPECT_EQ(t.n_bytes, s.bytes.size());
    EXPECT_EQ(t.offset % alignment, 0u) << "offset " << t.offset;
    ASSERT_NE(t.data, nullptr);
    const auto at = static_cast<uint64_t>(t.data - file.data());
    EXPECT_EQ(at, f.data_offset() + t.offset);
    EXPECT_EQ(at % alignment, 0u);
    ASSERT_LE(at + t.n_bytes, file.size());
    EXPECT_EQ(std::memcmp(t.data, s.bytes.data(), s.bytes.size()), 0);
    EXPECT_EQ(f.tensor(s.name), &t);
  }
  EXPECT_EQ(f.tensor("no.such.tensor"), nullptr);
}

GgufWriter writer_with_everything(uint32_t alignment, const std::vector<TensorSpec>& tensors) {
  GgufWriter w;
  if (alignment != 0) w.set("general.alignment", GgufValue::of_u32(alignment));
  for (const auto& [k, v] : all_kinds_of_metadata()) w.set(k, v);
  for (const auto& t : tensors) w.add_tensor(t.name, t.type, t.ne, t.bytes);
  return w;
}

void check_metadata(const GgufFile& f, uint32_t alignment) {
  const auto want = all_kinds_of_metadata();
  const size_t extra = alignment != 0 ? 1 : 0;
  ASSERT_EQ(f.metadata().size(), want.size() + extra);
  for (size_t k = 0; k < want.size(); ++k) {
    const auto& [key, value] = f.metadata()[k + extra];
    EXPECT_EQ(key, want[k].first) << "metadata keeps file order";
    expect_same_value(want[k].second, value, want[k].first);
    ASSERT_NE(f.find(want[k].first), nullptr) << want[k].first;
    EXPECT_EQ(f.find(want[k].first), &value);
  }
}

// ---- round trips -------------------------------------------------------------------------------------

TEST(GgufRoundTrip, EveryValueTypeAndSeveralTensors) {
  const auto tensors = several_tensors();
  const std::vector<uint8_t> bytes = writer_with_everything(0, tensors).to_bytes();
  GgufFile f = GgufFile::parse(bytes, "rt.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u) << "GGUF's default alignment";
  EXPECT_EQ(f.file_size(), bytes.size());
  EXPECT_EQ(f.name(), "rt.gguf");
  check_metadata(f, 0);
  check_tensors(f, bytes, tensors, 32);
}

TEST(GgufRoundTrip, CustomAlignments) {
  const auto tensors = several_tensors();
  for (uint32_t alignment : {1u, 8u, 64u, 4096u}) {
    SCOPED_TRACE(alignment);
    const std::vector<uint8_t> bytes = writer_with_everything(alignment, tensors).to_bytes();
    GgufFile f = GgufFile::parse(bytes, "al.gguf");
    EXPECT_EQ(f.alignment(), alignment);
    EXPECT_EQ(f.get_int("general.alignment"), static_cast<int64_t>(alignment));
    check_metadata(f, alignment);
    check_tensors(f, bytes, tensors, alignment);
  }
}

// GGUF v2 has v3's layout (64-bit counts and lengths); only the version field differs.
TEST(GgufRoundTrip, Version2) {
  const auto tensors = several_tensors();
  std::vector<uint8_t> bytes = writer_with_everything(64, tensors).to_bytes();
  ASSERT_GE(bytes.size(), 8u);
  const uint32_t v2 = 2;
  std::memcpy(bytes.data() + 4, &v2, 4);
  GgufFile f = GgufFile::parse(bytes, "v2.gguf");
  EXPECT_EQ(f.version(), 2u);
  check_metadata(f, 64);
  check_tensors(f, bytes, tensors, 64);
}

TEST(GgufRoundTrip, NoTensorsAndNoMetadata) {
  GgufWriter w;
  const std::vector<uint8_t> bytes = w.to_bytes();
  GgufFile f = GgufFile::parse(bytes, "empty.gguf");
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_LE(f.data_offset(), bytes.size());
}

TEST(GgufRoundTrip, SetReplacesAndKeepsOrder) {
  GgufWriter w;
  w.set("a", GgufValue::of_u32(1));
  w.set("b", GgufValue::of_u32(2));
  w.set("a", GgufValue::of_string("again"));
  const std::vector<uint8_t> bytes = w.to_bytes();
  GgufFile f = GgufFile::parse(bytes, "set.gguf");
  ASSERT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata()[0].first, "a");
  EXPECT_EQ(f.get_string("a"), "again");
  EXPECT_EQ(f.get_int("b"), 2);
}

TEST(GgufRoundTrip, TypedLookups) {
  GgufWriter w;
  w.set("n", GgufValue::of_u32(7));
  w.set("big", GgufValue::of_u64(std::numeric_limits<uint64_t>::max()));
  w.set("x", GgufValue::of_f32(0.5f));
  w.set("s", GgufValue::of_string("text"));
  w.set("b", GgufValue::of_bool(true));
  w.set("toks", GgufValue::of_strings({"a", "b"}));
  w.set("ints", GgufValue::of_i32s({3, -4}));
  const std::vector<uint8_t> bytes = w.to_bytes();
  GgufFile f = GgufFile::parse(bytes, "lookups.gguf");
  EXPECT_EQ(f.require_int("n"), 7);
  EXPECT_EQ(f.get_float("n", 0.0), 7.0) << "integers widen to float";
  EXPECT_EQ(f.get_float("x", 0.0), 0.5);
  EXPECT_EQ(f.require_string("s"), "text");
  EXPECT_TRUE(f.get_bool("b", false));
  EXPECT_EQ(f.get_int("missing", 42), 42);
  EXPECT_FALSE(f.get_int("missing").has_value());
  EXPECT_FALSE(f.has("missing"));
  EXPECT_EQ(f.find("toks")->as_strings("toks"), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(f.find("ints")->as_ints("ints"), (std::vector<int64_t>{3, -4}));
  EXPECT_THROW(f.require_int("missing"), FormatError);
  EXPECT_THROW(f.get_int("s"), FormatError);
  EXPECT_THROW(f.get_string("n"), FormatError);
  EXPECT_THROW(f.get_int("big"), FormatError) << "above INT64_MAX";
  EXPECT_THROW(f.find("ints")->as_strings("ints"), FormatError);
  try {
    f.require_string("general.architecture");
    FAIL() << "expected a FormatError";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("general.architecture"), std::string::npos) << e.what();
  }
}

TEST(GgufRoundTrip, WriterRefusesInconsistentTensors) {
  GgufWriter w;
  EXPECT_THROW(w.add_tensor("t", GgmlType::F32, {4}, std::vector<uint8_t>(15)), InvalidArgument);
  EXPECT_THROW(w.add_tensor("t", GgmlType::Q8_0, {33}, std::vector<uint8_t>(34)), InvalidArgument);
  EXPECT_THROW(w.add_tensor("t", GgmlType::F32, {}, {}), InvalidArgument);
  EXPECT_THROW(w.add_tensor("t", GgmlType::F32, {1, 1, 1, 1, 1}, std::vector<uint8_t>(4)),
               InvalidArgument);
  w.add_tensor("t", GgmlType::F32, {1}, std::vector<uint8_t>(4));
  EXPECT_THROW(w.add_tensor("t", GgmlType::F32, {1}, std::vector<uint8_t>(4)), InvalidArgument);
}

// The writer must not produce what the reader refuses: a shape whose element count overflows (2^32 x
// 2^32 wraps to 0, which once let 0 bytes through), an alignment of 0 (once a division by zero), one
// that is not a power of two, or one that is not a uint32.
TEST(GgufRoundTrip, WriterRefusesWhatTheReaderRefuses) {
  GgufWriter overflow;
  EXPECT_THROW(overflow.add_tensor("t", GgmlType::F32, {uint64_t{1} << 32, uint64_t{1} << 32}, {}),
               InvalidArgument);
  for (GgufValue alignment : {GgufValue::of_u32(0), GgufValue::of_u32(48), GgufValue::of_string("64")}) {
    SCOPED_TRACE(alignment.summary());
    GgufWriter w;
    EXPECT_THROW(
        {
          w.set("general.alignment", alignment);
          w.add_tensor_f32("a", {3}, std::vector<float>{1, 2, 3});
          (void)w.to_bytes();
        },
        InvalidArgument);
  }
}

// ---- files --------------------------------------------------------------------------------------------

TEST(GgufOpen, WriteThenOpen) {
  TempDir dir;
  const auto tensors = several_tensors();
  const std::string path = (dir.path() / "model.gguf").string();
  writer_with_everything(64, tensors).write(path);
  // The temporary file the writer renames from is gone.
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 1u);

  GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.name(), path);
  EXPECT_EQ(f.file_size(), fs::file_size(path));
  check_metadata(f, 64);
  ASSERT_EQ(f.tensors().size(), tensors.size());
  for (size_t k = 0; k < tensors.size(); ++k) {
    const GgufTensorInfo& t = f.tensors()[k];
    ASSERT_NE(t.data, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u) << "mappings are page aligned";
    EXPECT_EQ(std::memcmp(t.data, tensors[k].bytes.data(), tensors[k].bytes.size()), 0);
  }

  // Moving the file object keeps the views valid: they point into the mapping, not the object.
  const uint8_t* data0 = f.tensors()[0].data;
  GgufFile moved = std::move(f);
  EXPECT_EQ(moved.tensors()[0].data, data0);
  EXPECT_EQ(std::memcmp(moved.tensors()[0].data, tensors[0].bytes.data(), tensors[0].bytes.size()), 0);
}

TEST(GgufOpen, WriteReplacesAnExistingFile) {
  TempDir dir;
  const std::string path = (dir.path() / "m.gguf").string();
  GgufWriter a;
  a.set("which", GgufValue::of_string("first"));
  a.write(path);
  GgufWriter b;
  b.set("which", GgufValue::of_string("second"));
  b.write(path);
  EXPECT_EQ(GgufFile::open(path).get_string("which"), "second");
}

TEST(GgufOpen, MissingFileIsAnIoError) {
  TempDir dir;
  const std::string path = (dir.path() / "does-not-exist.gguf").string();
  try {
    GgufFile::open(path);
    FAIL() << "expected an IoError";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("does-not-exist.gguf"), std::string::npos) << e.what();
  }
}

TEST(GgufOpen, DirectoryIsAnIoError) {
  TempDir dir;
  EXPECT_THROW(GgufFile::open(dir.path().string()), IoError);
}

TEST(GgufOpen, EmptyFileIsAFormatError) {
  TempDir dir;
  const std::string path = (dir.path() / "empty.gguf").string();
  { std::ofstream touch(path); }
  EXPECT_THROW(GgufFile::open(path), FormatError);
}

TEST(GgufOpen, WriteIntoAMissingDirectoryIsAnIoError) {
  TempDir dir;
  GgufWriter w;
  EXPECT_THROW(w.write((dir.path() / "no" / "such" / "dir.gguf").string()), IoError);
}

// ---- mapping, not copying (DESIGN.md, invariant 1) ------------------------------------------------------

int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size_pages = 0;
  int64_t resident_pages = -1;
  statm >> size_pages >> resident_pages;
  return resident_pages < 0 ? -1 : resident_pages * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

// The value stored at element `i` of tensor `t` in the large file.
float pattern(uint64_t t, uint64_t i) {
  return static_cast<float>((i * 2654435761u + t * 97) % 1000003) * 0.25f;
}

// Streams a GGUF file of `n_tensors` F32 tensors of [ne0, ne1] without holding it in memory (the
// writer would need the data twice over), following the format by hand.
void write_large_gguf(const std::string& path, uint64_t n_tensors, uint64_t ne0, uint64_t ne1) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(out) << path;
  auto put = [&](const auto& v) { out.write(reinterpret_cast<const char*>(&v), sizeof(v)); };
  auto put_str = [&](const std::string& s) {
    put(static_cast<uint64_t>(s.size()));
    out.write(s.data(), static_cast<std::streamsize>(s.size()));
  };
  const uint64_t alignment = 64;
  const uint64_t tensor_bytes = ne0 * ne1 * sizeof(float);
  uint64_t pos = 0;
  put(uint32_t{0x46554747});  // "GGUF"
  put(uint32_t{3});
  put(n_tensors);
  put(uint64_t{2});
  put_str("general.architecture");
  put(static_cast<uint32_t>(GgufType::STRING));
  put_str("test");
  put_str("general.alignment");
  put(static_cast<uint32_t>(GgufType::UINT32));
  put(static_cast<uint32_t>(alignment));
  for (uint64_t t = 0; t < n_tensors; ++t) {
    put_str("blk." + std::to_string(t) + ".weight");
    put(uint32_t{2});
    put(ne0);
    put(ne1);
    put(static_cast<uint32_t>(GgmlType::F32));
    put(t * tensor_bytes);  // tensor_bytes is a multiple of the alignment
  }
  pos = static_cast<uint64_t>(out.tellp());
  const std::vector<char> pad((alignment - pos % alignment) % alignment, 0);
  out.write(pad.data(), static_cast<std::streamsize>(pad.size()));

  std::vector<float> chunk(1 << 20);
  for (uint64_t t = 0; t < n_tensors; ++t) {
    const uint64_t n = ne0 * ne1;
    for (uint64_t start = 0; start < n; start += chunk.size()) {
      const uint64_t len = std::min<uint64_t>(chunk.size(), n - start);
      for (uint64_t k = 0; k < len; ++k) chunk[k] = pattern(t, start + k);
      out.write(reinterpret_cast<const char*>(chunk.data()),
                static_cast<std::streamsize>(len * sizeof(float)));
    }
  }
  out.close();
  ASSERT_TRUE(out) << "writing " << path;
}

TEST(GgufMapping, OpeningALargeFileDoesNotReadItIntoMemory) {
  const int64_t before_write = resident_bytes();
  if (before_write < 0) GTEST_SKIP() << "/proc/self/statm is not readable here";
  TempDir dir;
  const std::string path = (dir.path() / "large.gguf").string();
  // 4 tensors of 4096 x 4096 floats: 256 MiB of data.
  const uint64_t n_tensors = 4;
  const uint64_t ne0 = 4096;
  const uint64_t ne1 = 4096;
  write_large_gguf(path, n_tensors, ne0, ne1);
  const uint64_t file_size = fs::file_size(path);
  ASSERT_GE(file_size, uint64_t{256} << 20);

  const int64_t before = resident_bytes();
  GgufFile f = GgufFile::open(path);
  ASSERT_EQ(f.tensors().size(), n_tensors);
  // A few elements of every tensor, each in its own page: the views are into the file.
  for (uint64_t t = 0; t < n_tensors; ++t) {
    const GgufTensorInfo& ti = f.tensors()[t];
    ASSERT_EQ(ti.n_bytes, ne0 * ne1 * sizeof(float));
    for (uint64_t i : {uint64_t{0}, ne0 * ne1 / 3, ne0 * ne1 - 1}) {
      float v;
      std::memcpy(&v, ti.data + i * sizeof(float), sizeof(v));
      ASSERT_EQ(v, pattern(t, i)) << ti.name << " element " << i;
    }
  }
  const int64_t after = resident_bytes();
  const int64_t growth = after - before;
  EXPECT_LT(growth, static_cast<int64_t>(file_size / 10))
      << "opening a " << file_size << "-byte file made " << growth << " bytes resident";

  // The last tensor in full, through the mapping.
  const GgufTensorInfo& last = f.tensors().back();
  uint64_t mismatches = 0;
  for (uint64_t i = 0; i < ne0 * ne1; ++i) {
    float v;
    std::memcpy(&v, last.data + i * sizeof(float), sizeof(v));
    mismatches += v != pattern(n_tensors - 1, i) ? 1 : 0;
  }
  EXPECT_EQ(mismatches, 0u);
}

}  // namespace
}  // namespace sq
