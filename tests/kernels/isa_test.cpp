// Conformance of every instruction-set variant with the reference, bit for bit (memcmp): the
// activation quantizers, and per weight type the single-row dot product, the multi-row kernel and
// the tiled kernel with ragged edges. Variants the CPU lacks are skipped. Plus the selection of
// the variant from SQUEEZE_ISA.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/error.h"
#include "base/fp16.h"
#include "kernels/isa.h"
#include "kernels/quant.h"
#include "kernels/repack.h"
#include "kernels/types.h"

namespace sq::kernels {
namespace {

constexpr Isa kIsas[] = {Isa::Ref, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni};

std::string isa_label(Isa isa) { return std::string(isa_name(isa)); }

#define SQ_REQUIRE_ISA(isa)                                                                 \
  if (!isa_supported(isa)) {                                                                \
    GTEST_SKIP() << "this CPU does not support " << isa_name(isa) << "; nothing to compare"; \
  }

// Floats that stress the quantizers: gaussian of several scales, exact halves and ties (x * id
// landing on .5), zero blocks, one outlier, repeated extremes of both signs.
std::vector<float> stress_floats(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::uniform_int_distribution<int> pick(0, 9);
  std::vector<float> x(static_cast<size_t>(n));
  const float scale = std::ldexp(1.0f, static_cast<int>(seed % 40) - 20);
  for (auto& v : x) {
    switch (pick(rng)) {
      case 0:
        v = 0.0f;
        break;
      case 1:
        v = static_cast<float>(static_cast<int>(g(rng) * 100)) * 0.5f;  // halves
        break;
      case 2:
        v = -127.0f;
        break;
      default:
        v = g(rng) * scale;
    }
  }
  // A zero block, a block of one repeated magnitude with both signs, a denormal-ish block.
  if (n >= 768) {
    for (int64_t i = 0; i < 256; ++i) x[static_cast<size_t>(i)] = 0.0f;
    for (int64_t i = 256; i < 512; ++i) x[static_cast<size_t>(i)] = (i % 3 == 0) ? 3.0f : -3.0f;
    for (int64_t i = 512; i < 768; ++i) x[static_cast<size_t>(i)] = g(rng) * 1e-30f;
  }
  return x;
}

// ---- activation quantizers ----------------------------------------------------------------------

class IsaQuantizerTest : public ::testing::TestWithParam<std::tuple<Isa, GgmlType>> {};

TEST_P(IsaQuantizerTest, BitIdenticalToRef) {
  const auto [isa, vt] = GetParam();
  SQ_REQUIRE_ISA(isa);
  const int64_t be = type_info(vt)->block_elems;
  std::vector<int64_t> lengths = {256, 512, 768, 1024, 2048, 4096, 256 * 11};
  if (be == 1) lengths.insert(lengths.end(), {1, 7, 15, 17, 33, 1001});
  const QuantizeRowFn ref = table(Isa::Ref).quantize[activation_index(vt)];
  const QuantizeRowFn fn = table(isa).quantize[activation_index(vt)];
  for (int64_t n : lengths) {
    for (uint32_t seed = 0; seed < 6; ++seed) {
      const auto x = stress_floats(n, seed * 7919u + static_cast<uint32_t>(n));
      const size_t bytes = row_bytes(vt, n);
      std::vector<uint8_t> a(bytes + 1, 0xAB), b(bytes + 1, 0xAB);
      ref(x.data(), a.data(), n);
      fn(x.data(), b.data(), n);
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), bytes + 1))
          << isa_name(isa) << " " << type_name(vt) << " n=" << n << " seed=" << seed;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    All, IsaQuantizerTest,
    ::testing::Combine(::testing::ValuesIn(kIsas),
                       ::testing::Values(GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0,
                                         GgmlType::Q8_1, GgmlType::Q8_K)),
    [](const auto& info) {
      return isa_label(std::get<0>(info.param)) + "_" + type_name(std::get<1>(info.param));
    });

// ---- dot products -------------------------------------------------------------------------------

// Weight rows: either quantized from gaussian floats by the reference quantizer, or random bytes
// with every fp16 scale field replaced by a finite half (so that every bit pattern of the quants
// and of the packed sub-block scales occurs, -128 in Q8_0 included).
std::vector<uint8_t> weight_rows(GgmlType t, int64_t rows, int64_t n, uint32_t seed, bool raw) {
  const size_t rb = row_bytes(t, n);
  if (is_packed_type(t)) {
    // The load-time layouts: rows of the file type, packed as the loader packs them.
    const auto std_rows = weight_rows(unpacked_type(t), rows, n, seed, raw);
    std::vector<uint8_t> w(std_rows.size());
    for (int64_t r = 0; r < rows; ++r) {
      pack_row(t, std_rows.data() + rb * static_cast<size_t>(r), w.data() + rb * static_cast<size_t>(r), n);
    }
    return w;
  }
  std::vector<uint8_t> w(rb * static_cast<size_t>(rows));
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  if (!raw || t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16) {
    std::vector<float> f(static_cast<size_t>(n));
    for (int64_t r = 0; r < rows; ++r) {
      for (auto& v : f) v = g(rng);
      quantize_row(t, f.data(), w.data() + rb * static_cast<size_t>(r), n);
    }
    return w;
  }
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& v : w) v = static_cast<uint8_t>(byte(rng));
  const int64_t be = type_info(t)->block_elems;
  const size_t bb = type_info(t)->block_bytes;
  auto put_half = [&](uint8_t* p) {
    const uint16_t h = f32_to_fp16(g(rng) * 0.01f);
    std::memcpy(p, &h, 2);
  };
  for (size_t b = 0; b < w.size() / bb; ++b) {
    uint8_t* p = w.data() + b * bb;
    switch (t) {
      case GgmlType::Q4_1:
      case GgmlType::Q5_1:
      case GgmlType::Q4_K:
      case GgmlType::Q5_K:
        put_half(p);
        put_half(p + 2);
        break;
      case GgmlType::Q6_K:
        put_half(p + 208);
        break;
      default:
        put_half(p);
    }
  }
  (void)be;
  return w;
}

// Activations for `tokens` tokens, quantized by the reference quantizer.
std::vector<uint8_t> activations(GgmlType vt, int64_t tokens, int64_t n, uint32_t seed) {
  const size_t xb = row_bytes(vt, n);
  std::vector<uint8_t> q(xb * static_cast<size_t>(tokens));
  for (int64_t t = 0; t < tokens; ++t) {
    const auto x = stress_floats(n, seed + static_cast<uint32_t>(t) * 31u);
    table(Isa::Ref).quantize[activation_index(vt)](x.data(), q.data() + xb * static_cast<size_t>(t), n);
  }
  return q;
}

std::vector<int64_t> dot_lengths(GgmlType t) {
  const int64_t be = type_info(t)->block_elems;
  if (be == 1) return {1, 5, 16, 17, 31, 64, 100, 256, 1000, 2048};
  if (be == 32) return {32, 64, 96, 256, 288, 512, 544, 1024, 2048 + 96, 4096};
  return {256, 512, 1024, 256 * 7, 4096, 4096 + 256, 256 * 33};
}

class IsaDotTest : public ::testing::TestWithParam<std::tuple<Isa, GgmlType>> {};

TEST_P(IsaDotTest, SingleRowBitIdenticalToRef) {
  const auto [isa, t] = GetParam();
  SQ_REQUIRE_ISA(isa);
  const GgmlType vt = vec_dot_type(t);
  const WeightKernels& ref = table(Isa::Ref).weight[weight_index(t)];
  const WeightKernels& k = table(isa).weight[weight_index(t)];
  for (int64_t n : dot_lengths(t)) {
    for (bool raw : {false, true}) {
      for (uint32_t seed = 1; seed <= 4; ++seed) {
        const auto w = weight_rows(t, 1, n, seed * 101u + static_cast<uint32_t>(n), raw);
        const auto x = activations(vt, 1, n, seed * 977u + static_cast<uint32_t>(n));
        const float a = ref.dot_q(w.data(), x.data(), n);
        const float b = k.dot_q(w.data(), x.data(), n);
        ASSERT_EQ(0, std::memcmp(&a, &b, sizeof a))
            << isa_name(isa) << " " << type_name(t) << " n=" << n << " raw=" << raw << ": " << a
            << " vs " << b;
      }
    }
  }
}

TEST_P(IsaDotTest, MultiRowBitIdenticalToRef) {
  const auto [isa, t] = GetParam();
  SQ_REQUIRE_ISA(isa);
  const GgmlType vt = vec_dot_type(t);
  const WeightKernels& ref = table(Isa::Ref).weight[weight_index(t)];
  const WeightKernels& k = table(isa).weight[weight_index(t)];
  // Plus rows longer than the one-token kernels' prepared activations hold (32768 elements), which
  // take the tiled path.
  auto lengths = dot_lengths(t);
  lengths.push_back(type_info(t)->block_elems == 1 ? 4096 : 32768 + 8 * type_info(t)->block_elems);
  for (int64_t n : lengths) {
    for (int64_t rows : {1, 3, 4, 5, 8, 11}) {
      const size_t rb = row_bytes(t, n);
      const auto w = weight_rows(t, rows, n, static_cast<uint32_t>(n + rows), rows % 2 == 1);
      const auto x = activations(vt, 1, n, static_cast<uint32_t>(3 * n + rows));
      std::vector<float> a(static_cast<size_t>(rows)), b(static_cast<size_t>(rows), -1.0f);
      for (int64_t r = 0; r < rows; ++r) {
        a[static_cast<size_t>(r)] = ref.dot_q(w.data() + rb * static_cast<size_t>(r), x.data(), n);
      }
      k.dot_rows(w.data(), rb, rows, x.data(), n, b.data());
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)))
          << isa_name(isa) << " " << type_name(t) << " n=" << n << " rows=" << rows;
    }
  }
}

TEST_P(IsaDotTest, TiledBitIdenticalToRef) {
  const auto [isa, t] = GetParam();
  SQ_REQUIRE_ISA(isa);
  const GgmlType vt = vec_dot_type(t);
  const WeightKernels& ref = table(Isa::Ref).weight[weight_index(t)];
  const WeightKernels& k = table(isa).weight[weight_index(t)];
  const auto lengths = dot_lengths(t);
  std::vector<int64_t> tile_lengths = {lengths[1], lengths[lengths.size() / 2], lengths.back()};
  if (type_info(t)->block_elems == 32) {
    // A partial group of sixteen blocks, and rows long enough that only two tokens' prepared
    // activations fit the kernels' buffer at a time.
    tile_lengths.insert(tile_lengths.end(), {544, 2048 + 96, 32768 + 96});
  }
  if (t == GgmlType::Q4_K_X4 || t == GgmlType::Q5_K_X4) {
    // Rows of which only two tokens' prepared activations fit the kernels' buffer, and rows of which
    // not even one does (they take the tile of decoded blocks).
    tile_lengths.insert(tile_lengths.end(), {32768 + 2048, 256 * 360});
  }
  for (int64_t n : tile_lengths) {
    for (int64_t rows : {1, 4, 7, 9}) {
      for (int64_t tokens : {1, 2, 4, 5, 11, 17}) {
        const size_t rb = row_bytes(t, n);
        const size_t xb = row_bytes(vt, n);
        const auto w = weight_rows(t, rows, n, static_cast<uint32_t>(n + 13 * rows), tokens % 2 == 0);
        const auto x = activations(vt, tokens, n, static_cast<uint32_t>(n + 17 * tokens));
        const int64_t os = rows + 3;  // outputs of one token are a stride apart
        std::vector<float> a(static_cast<size_t>(os * tokens), 0.0f);
        std::vector<float> b(static_cast<size_t>(os * tokens), 0.0f);
        for (int64_t tok = 0; tok < tokens; ++tok) {
          for (int64_t r = 0; r < rows; ++r) {
            a[static_cast<size_t>(tok * os + r)] =
                ref.dot_q(w.data() + rb * static_cast<size_t>(r), x.data() + xb * static_cast<size_t>(tok), n);
          }
        }
        k.dot_tile(w.data(), rb, rows, x.data(), xb, tokens, n, b.data(), os);
        ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)))
            << isa_name(isa) << " " << type_name(t) << " n=" << n << " rows=" << rows
            << " tokens=" << tokens;
      }
    }
  }
}

// The weight types whose rows stand alone (all but Q8_0_R16 and Q4_0_R16, which the tests below
// take).
std::vector<GgmlType> row_types() {
  std::vector<GgmlType> v;
  for (GgmlType t : kTableWeightTypes) {
    if (interleaved_rows(t) == 1) v.push_back(t);
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(
    All, IsaDotTest,
    ::testing::Combine(::testing::ValuesIn(kIsas),
                       ::testing::ValuesIn(row_types())),
    [](const auto& info) {
      return isa_label(std::get<0>(info.param)) + "_" + type_name(std::get<1>(info.param));
    });

// ---- Q8_0_R16 and Q4_0_R16: sixteen rows interleaved ---------------------------------------------
//
// Q8_0 (Q4_0) rows packed sixteen at a time as the loader packs them (the last group filled up with
// zero rows, as storage rounded up to whole groups), against the reference Q8_0 (Q4_0) kernel on
// the rows themselves: the same bits, for rows of an odd block count (a lone last block) and of
// every remainder of sixteen blocks, rows that end inside a group, more groups than a tile pass
// takes, and tokens past the tiles' widths.

std::vector<uint8_t> r16_rows(GgmlType r16, const std::vector<uint8_t>& std_rows, int64_t rows, int64_t n) {
  const size_t rb = row_bytes(r16, n);
  const int64_t groups = (rows + 15) / 16;
  std::vector<uint8_t> w(rb * 16 * static_cast<size_t>(groups));
  for (int64_t g = 0; g < groups; ++g) {
    pack_rows_r16(r16, std_rows.data() + rb * 16 * static_cast<size_t>(g), rb, std::min<int64_t>(16, rows - 16 * g),
                  w.data() + rb * 16 * static_cast<size_t>(g), n);
  }
  return w;
}

class IsaR16Test : public ::testing::TestWithParam<std::tuple<Isa, GgmlType>> {};

TEST_P(IsaR16Test, RowsAndTilesBitIdenticalToTheFileType) {
  const auto [isa, r16] = GetParam();
  SQ_REQUIRE_ISA(isa);
  const GgmlType file = unpacked_type(r16);
  const WeightKernels& ref = table(Isa::Ref).weight[weight_index(file)];
  const WeightKernels& k = table(isa).weight[weight_index(r16)];
  ASSERT_NE(k.dot_rows, nullptr);
  ASSERT_NE(k.dot_tile, nullptr);
  // 1, 3, 17 and 29 blocks (odd: a lone last block), 16 and 32 (whole chunks), 28 (896, Qwen2.5-0.5B),
  // 152 (4 864), every remainder of 16 in 33..47, and 1 027 (past the prepared buffers: reference).
  std::vector<int64_t> blocks = {1, 3, 16, 17, 28, 29, 32, 152, 1027};
  for (int64_t b = 33; b < 48; ++b) blocks.push_back(b);
  for (int64_t nb : blocks) {
    const int64_t n = nb * 32;
    const size_t rb = row_bytes(file, n);
    for (int64_t rows : {16, 5, 37, 133}) {  // 133: more groups than a tile pass takes (8)
      for (bool raw : {false, true}) {
        const auto std_rows = weight_rows(file, rows, n, static_cast<uint32_t>(7 * nb + rows), raw);
        const auto w = r16_rows(r16, std_rows, rows, n);
        const int64_t tokens = nb > 200 ? 3 : 13;  // 13: tiles of 8, 4 and 1
        const auto x = activations(GgmlType::Q8_0, tokens, n, static_cast<uint32_t>(nb + 31 * rows));
        const size_t xb = row_bytes(GgmlType::Q8_0, n);
        std::vector<float> a(static_cast<size_t>(rows * tokens));
        for (int64_t t = 0; t < tokens; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            a[static_cast<size_t>(t * rows + r)] =
                ref.dot_q(std_rows.data() + rb * static_cast<size_t>(r), x.data() + xb * static_cast<size_t>(t), n);
          }
        }
        // One token: `rows` outputs and not one more.
        std::vector<float> b(static_cast<size_t>(rows) + 1, -1.0f);
        k.dot_rows(w.data(), rb, rows, x.data(), n, b.data());
        ASSERT_EQ(0, std::memcmp(a.data(), b.data(), static_cast<size_t>(rows) * sizeof(float)))
            << isa_name(isa) << " " << type_name(r16) << " blocks=" << nb << " rows=" << rows << " raw=" << raw;
        EXPECT_EQ(b[static_cast<size_t>(rows)], -1.0f) << "wrote past the rows";
        const int64_t os = rows + 3;
        std::vector<float> c(static_cast<size_t>(os * tokens), -1.0f);
        k.dot_tile(w.data(), rb, rows, x.data(), xb, tokens, n, c.data(), os);
        for (int64_t t = 0; t < tokens; ++t) {
          ASSERT_EQ(0, std::memcmp(a.data() + t * rows, c.data() + t * os, static_cast<size_t>(rows) * sizeof(float)))
              << isa_name(isa) << " " << type_name(r16) << " blocks=" << nb << " rows=" << rows << " token=" << t
              << " raw=" << raw;
          EXPECT_EQ(c[static_cast<size_t>(t * os + rows)], -1.0f) << "wrote past the rows";
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, IsaR16Test,
                         ::testing::Combine(::testing::ValuesIn(kIsas),
                                            ::testing::Values(GgmlType::Q8_0_R16, GgmlType::Q4_0_R16)),
                         [](const auto& info) {
                           return isa_label(std::get<0>(info.param)) + "_" + type_name(std::get<1>(info.param));
                         });

// ---- selection ----------------------------------------------------------------------------------

TEST(Isa, NamesAndSupport) {
  EXPECT_EQ(isa_name(Isa::Ref), "ref");
  EXPECT_EQ(isa_name(Isa::Avx2), "avx2");
  EXPECT_EQ(isa_name(Isa::Avx512), "avx512");
  EXPECT_EQ(isa_name(Isa::Avx512Vnni), "avx512vnni");
  const auto supported = supported_isas();
  ASSERT_FALSE(supported.empty());
  EXPECT_EQ(supported.front(), Isa::Ref);
  for (Isa isa : kIsas) EXPECT_EQ(table(isa).isa, isa);
  // The variants are not the reference under another name.
  for (Isa isa : {Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni}) {
    constexpr int kIndices[] = {weight_index(GgmlType::Q4_0), weight_index(GgmlType::Q8_0),
                                weight_index(GgmlType::Q4_K), weight_index(GgmlType::Q6_K)};
    for (int i : kIndices) {
      EXPECT_NE(table(isa).weight[i].dot_tile, table(Isa::Ref).weight[i].dot_tile);
    }
    EXPECT_NE(table(isa).quantize[activation_index(GgmlType::Q8_K)],
              table(Isa::Ref).quantize[activation_index(GgmlType::Q8_K)]);
  }
  // Each level implies the ones below it.
  EXPECT_TRUE(!isa_supported(Isa::Avx512Vnni) || isa_supported(Isa::Avx512));
  EXPECT_TRUE(!isa_supported(Isa::Avx512) || isa_supported(Isa::Avx2));
}

// bench --peak's loop: every variant the CPU runs does the multiply-adds it counts (its operands are
// all 1, so the accumulators sum to the count), the same number each round, and nothing for zero
// rounds; the SIMD variants are not the reference's loop.
TEST(Isa, Int8PeakDoesTheMultiplyAddsItCounts) {
  for (Isa isa : supported_isas()) {
    SCOPED_TRACE(std::string(isa_name(isa)));
    const Int8PeakFn peak = table(isa).int8_peak;
    ASSERT_NE(peak, nullptr);
    uint32_t checksum = 7;
    EXPECT_EQ(peak(0, &checksum), 0);
    EXPECT_EQ(checksum, 0u);
    const int64_t per_round = peak(1, &checksum);
    EXPECT_GT(per_round, 0);
    EXPECT_EQ(per_round % 32, 0);
    EXPECT_EQ(checksum, static_cast<uint32_t>(per_round));
    const int64_t rounds = 6000001;  // over 2^32 multiply-adds for the 512-bit loops: the sum wraps
    const int64_t macs = peak(rounds, &checksum);
    EXPECT_EQ(macs, rounds * per_round);
    EXPECT_EQ(checksum, static_cast<uint32_t>(macs));
    if (isa != Isa::Ref) {
      EXPECT_NE(peak, table(Isa::Ref).int8_peak);
    }
  }
}

// Sets SQUEEZE_ISA for the scope, then restores it and the active table.
class ScopedIsaEnv {
 public:
  explicit ScopedIsaEnv(const char* value) {
    if (const char* old = std::getenv("SQUEEZE_ISA")) saved_ = old, had_ = true;
    setenv("SQUEEZE_ISA", value, 1);
  }
  ~ScopedIsaEnv() {
    if (had_) {
      setenv("SQUEEZE_ISA", saved_.c_str(), 1);
    } else {
      unsetenv("SQUEEZE_ISA");
    }
    init_isa();
  }

 private:
  std::string saved_;
  bool had_ = false;
};

TEST(Isa, EnvironmentChoosesTheVariant) {
  for (Isa isa : supported_isas()) {
    ScopedIsaEnv env(std::string(isa_name(isa)).c_str());
    init_isa();
    EXPECT_EQ(active_isa(), isa);
  }
  {
    ScopedIsaEnv env("");
    init_isa();
    EXPECT_EQ(active_isa(), supported_isas().back());
  }
}

TEST(Isa, UnknownValueIsAnErrorNamingItAndTheSupportedOnes) {
  ScopedIsaEnv env("sse9");
  try {
    init_isa();
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("sse9"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ref"), std::string::npos) << msg;
  }
}

TEST(Isa, UnsupportedVariantIsAnError) {
  Isa missing = Isa::Ref;
  for (Isa isa : kIsas) {
    if (!isa_supported(isa)) missing = isa;
  }
  if (missing == Isa::Ref) GTEST_SKIP() << "this CPU supports every variant";
  ScopedIsaEnv env(std::string(isa_name(missing)).c_str());
  EXPECT_THROW(init_isa(), InvalidArgument);
}

TEST(IsaDeathTest, LazyInitWithABadValueExitsWithStatusOne) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        setenv("SQUEEZE_ISA", "nonsense", 1);
        // A fresh process image (threadsafe style re-executes): the first kernel call initialises.
        const float x[32] = {};
        uint8_t out[64];
        quantize_activation(GgmlType::Q8_0, x, out, 32);
      },
      ::testing::ExitedWithCode(1), "SQUEEZE_ISA='nonsense'");
}

}  // namespace
}  // namespace sq::kernels
