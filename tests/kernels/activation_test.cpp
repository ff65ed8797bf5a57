// Quantized activations (GGML's vec_dot_type) and the integer dot products on them: the quantizers
// against hand-computed blocks and against GGML's formulas written out here, the dot products
// against a double-precision sum of the dequantized operands, and the fixed order of quant.h.
#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernel_test_util.h"

#include "base/fp16.h"
#include "kernels/blocks.h"
#include "kernels/quant.h"
#include "kernels/types.h"

namespace sq::kernels {
namespace {

constexpr auto& kWeightTypes = test::kComputeTypes;
using test::gaussian;
using test::quantize_weights;

std::vector<uint8_t> quantize_act(GgmlType vt, const std::vector<float>& x) {
  std::vector<uint8_t> q(row_bytes(vt, static_cast<int64_t>(x.size())));
  quantize_activation(vt, x.data(), q.data(), static_cast<int64_t>(x.size()));
  return q;
}

template <typename Block>
Block block_at(const std::vector<uint8_t>& bytes, size_t i) {
  Block b;
  std::memcpy(&b, bytes.data() + i * sizeof(Block), sizeof(Block));
  return b;
}

uint32_t bits(float f) { return std::bit_cast<uint32_t>(f); }

// ---- the pairing -------------------------------------------------------------------------------

TEST(Activation, VecDotTypesFollowGgml) {
  EXPECT_EQ(vec_dot_type(GgmlType::F32), GgmlType::F32);
  EXPECT_EQ(vec_dot_type(GgmlType::F16), GgmlType::F16);
  EXPECT_EQ(vec_dot_type(GgmlType::BF16), GgmlType::BF16);
  EXPECT_EQ(vec_dot_type(GgmlType::Q4_0), GgmlType::Q8_0);
  EXPECT_EQ(vec_dot_type(GgmlType::Q5_0), GgmlType::Q8_0);
  EXPECT_EQ(vec_dot_type(GgmlType::Q8_0), GgmlType::Q8_0);
  EXPECT_EQ(vec_dot_type(GgmlType::Q4_1), GgmlType::Q8_1);
  EXPECT_EQ(vec_dot_type(GgmlType::Q5_1), GgmlType::Q8_1);
  EXPECT_EQ(vec_dot_type(GgmlType::Q4_K), GgmlType::Q8_K);
  EXPECT_EQ(vec_dot_type(GgmlType::Q5_K), GgmlType::Q8_K);
  EXPECT_EQ(vec_dot_type(GgmlType::Q6_K), GgmlType::Q8_K);
  for (GgmlType t : kWeightTypes) {
    EXPECT_EQ(type_info(vec_dot_type(t))->block_elems, type_info(t)->block_elems) << type_name(t);
  }
  EXPECT_FALSE(activation_type_supported(GgmlType::Q4_0));
  EXPECT_EQ(row_bytes(GgmlType::Q8_1, 64), 2 * sizeof(BlockQ8_1));
  EXPECT_EQ(row_bytes(GgmlType::Q8_K, 512), 2 * sizeof(BlockQ8_K));
}

// ---- the quantizers on hand-computed blocks -------------------------------------------------------

// A block whose largest magnitude is 127 has scale 1, so the quants are the rounded inputs. Q8_0
// and Q8_1 round halves away from zero (roundf); Q8_K rounds them to even.
std::vector<float> hand_block(int n, float extreme) {
  std::vector<float> x(static_cast<size_t>(n), 0.0f);
  x[0] = 2.5f;
  x[1] = -2.5f;
  x[2] = 3.5f;
  x[3] = 0.49f;
  x[4] = -126.6f;
  x[5] = extreme;
  x[6] = 1.0f;
  return x;
}

TEST(Activation, Q8_0HandComputed) {
  const auto q = quantize_act(GgmlType::Q8_0, hand_block(32, 127.0f));
  const auto b = block_at<BlockQ8_0>(q, 0);
  EXPECT_EQ(b.d, 0x3C00);  // fp16 1.0
  const int8_t want[7] = {3, -3, 4, 0, -127, 127, 1};
  for (int j = 0; j < 7; ++j) EXPECT_EQ(b.qs[j], want[j]) << j;
  for (int j = 7; j < 32; ++j) EXPECT_EQ(b.qs[j], 0) << j;
}

TEST(Activation, Q8_1HandComputed) {
  const auto q = quantize_act(GgmlType::Q8_1, hand_block(32, -127.0f));
  const auto b = block_at<BlockQ8_1>(q, 0);
  EXPECT_EQ(b.d, 0x3C00);
  const int8_t want[7] = {3, -3, 4, 0, -127, -127, 1};
  for (int j = 0; j < 7; ++j) EXPECT_EQ(b.qs[j], want[j]) << j;
  // s = d * sum(q) = 3 - 3 + 4 + 0 - 127 - 127 + 1 = -249, as fp16.
  EXPECT_EQ(fp16_to_f32(b.s), -249.0f);
}

TEST(Activation, Q8_KHandComputedWithNegativeExtreme) {
  // max = -127: iscale = -127 / -127 = 1, d = 1, quants are the inputs rounded half to even.
  const auto q = quantize_act(GgmlType::Q8_K, hand_block(256, -127.0f));
  const auto b = block_at<BlockQ8_K>(q, 0);
  EXPECT_EQ(b.d, 1.0f);
  const int8_t want[7] = {2, -2, 4, 0, -127, -127, 1};
  for (int j = 0; j < 7; ++j) EXPECT_EQ(b.qs[j], want[j]) << j;
  EXPECT_EQ(b.bsums[0], 2 - 2 + 4 + 0 - 127 - 127 + 1);
  for (int g = 1; g < 16; ++g) EXPECT_EQ(b.bsums[g], 0);
}

TEST(Activation, Q8_KHandComputedWithPositiveExtreme) {
  // max = +127: iscale = -1, so d = -1 and every quant changes sign; the extreme maps to -127.
  const auto q = quantize_act(GgmlType::Q8_K, hand_block(256, 127.0f));
  const auto b = block_at<BlockQ8_K>(q, 0);
  EXPECT_EQ(b.d, -1.0f);
  const int8_t want[7] = {-2, 2, -4, 0, 127, -127, -1};
  for (int j = 0; j < 7; ++j) EXPECT_EQ(b.qs[j], want[j]) << j;
  std::vector<float> y(256);
  dequantize_activation(GgmlType::Q8_K, q.data(), y.data(), 256);
  EXPECT_EQ(y[5], 127.0f);
  EXPECT_EQ(y[4], -127.0f);
}

TEST(Activation, Q8_KTieOfMagnitudesTakesTheFirst) {
  std::vector<float> x(256, 0.0f);
  x[10] = -4.0f;  // first of largest magnitude: iscale = 127 / 4, d > 0
  x[20] = 4.0f;
  const auto b = block_at<BlockQ8_K>(quantize_act(GgmlType::Q8_K, x), 0);
  EXPECT_GT(b.d, 0.0f);
  EXPECT_EQ(b.qs[10], -127);
  EXPECT_EQ(b.qs[20], 127);
}

TEST(Activation, ZeroBlocksGiveZeroScaleAndQuants) {
  const std::vector<float> zeros(256, 0.0f);
  for (GgmlType vt : {GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K}) {
    const auto q = quantize_act(vt, zeros);
    for (uint8_t byte : q) EXPECT_EQ(byte, 0) << type_name(vt);
  }
}

TEST(Activation, HalfFormatsAreElementwiseConversions) {
  const auto x = gaussian(37, 3);  // not a multiple of any block: block size 1
  const auto h = quantize_act(GgmlType::F16, x);
  const auto b = quantize_act(GgmlType::BF16, x);
  ASSERT_EQ(h.size(), 74u);
  for (size_t i = 0; i < x.size(); ++i) {
    uint16_t hv, bv;
    std::memcpy(&hv, h.data() + 2 * i, 2);
    std::memcpy(&bv, b.data() + 2 * i, 2);
    EXPECT_EQ(hv, f32_to_fp16(x[i]));
    EXPECT_EQ(bv, f32_to_bf16(x[i]));
  }
}

// ---- the quantizers against GGML's reference formulas, written out independently -------------------

int ggml_nearest_int(float f) {  // round half to even, as GGML's magic-number trick
  return static_cast<int>(std::nearbyint(f));
}

void ggml_q8_0(const float* x, BlockQ8_0& b) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::fabs(x[j]) > amax ? std::fabs(x[j]) : amax;
  const float d = amax / ((1 << 7) - 1);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b.d = f32_to_fp16(d);
  for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(roundf(x[j] * id));
}

void ggml_q8_1(const float* x, BlockQ8_1& b) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::fabs(x[j]) > amax ? std::fabs(x[j]) : amax;
  const float d = amax / ((1 << 7) - 1);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b.d = f32_to_fp16(d);
  int sum = 0;
  for (int j = 0; j < 32; ++j) {
    b.qs[j] = static_cast<int8_t>(roundf(x[j] * id));
    sum += b.qs[j];
  }
  b.s = f32_to_fp16(static_cast<float>(sum) * d);  // the unrounded f32 d, as GGML
}

void ggml_q8_k(const float* x, BlockQ8_K& b) {
  b = BlockQ8_K{};
  float max = 0, amax = 0;
  for (int j = 0; j < 256; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  if (amax == 0) return;
  const float iscale = -127.f / max;
  for (int j = 0; j < 256; ++j) {
    const int v = ggml_nearest_int(iscale * x[j]);
    b.qs[j] = static_cast<int8_t>(v < 127 ? v : 127);
  }
  for (int g = 0; g < 16; ++g) {
    int s = 0;
    for (int j = 0; j < 16; ++j) s += b.qs[16 * g + j];
    b.bsums[g] = static_cast<int16_t>(s);
  }
  b.d = 1 / iscale;
}

template <typename Block, void (*Ggml)(const float*, Block&)>
void expect_same_as_ggml(GgmlType vt, const std::vector<float>& x) {
  const auto q = quantize_act(vt, x);
  for (size_t i = 0; i < x.size() / Block::kElems; ++i) {
    Block want;
    std::memset(&want, 0, sizeof want);
    Ggml(x.data() + i * Block::kElems, want);
    EXPECT_EQ(std::memcmp(q.data() + i * sizeof(Block), &want, sizeof(Block)), 0)
        << type_name(vt) << " block " << i;
  }
}

TEST(Activation, QuantizersMatchGgmlFormulas) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    auto x = gaussian(256 * 8, seed, seed == 3 ? 1000.0f : 1.0f);
    x[5] = 0.0f;
    x[300] = -x[301];  // a tie of magnitudes inside one block
    std::fill(x.begin() + 512, x.begin() + 768, 0.0f);  // an all-zero block
    expect_same_as_ggml<BlockQ8_0, ggml_q8_0>(GgmlType::Q8_0, x);
    expect_same_as_ggml<BlockQ8_1, ggml_q8_1>(GgmlType::Q8_1, x);
    expect_same_as_ggml<BlockQ8_K, ggml_q8_k>(GgmlType::Q8_K, x);
  }
}

// Activation blocks depend only on their own floats: where x lies and what precedes it change
// nothing.
TEST(Activation, QuantizersIndependentOfPlacement) {
  const auto x = gaussian(512, 9);
  for (GgmlType vt : {GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K}) {
    const auto base = quantize_act(vt, x);
    for (size_t shift : {1, 3}) {
      std::vector<float> xs(x.size() + 4);
      std::memcpy(xs.data() + shift, x.data(), x.size() * sizeof(float));
      std::vector<uint8_t> out(base.size() + 8, 0xAB);
      quantize_activation(vt, xs.data() + shift, out.data() + shift, static_cast<int64_t>(x.size()));
      EXPECT_EQ(std::memcmp(out.data() + shift, base.data(), base.size()), 0) << type_name(vt);
      EXPECT_EQ(out[shift + base.size()], 0xAB) << type_name(vt);  // nothing written past the row
    }
  }
}

// ---- the dot products ------------------------------------------------------------------------------

class DotQTest : public testing::TestWithParam<GgmlType> {};

std::string name_of(const testing::TestParamInfo<GgmlType>& info) { return type_name(info.param); }

// The Q8_1 block sum s is rounded to fp16, so Q4_1/Q5_1 dots differ from the dequantized operands'
// dot by m * (s - d * sum(q)) per block; add that term to the double reference.
double q8_1_offset_correction(GgmlType t, const std::vector<uint8_t>& w, const std::vector<uint8_t>& qx,
                              int64_t n) {
  if (t != GgmlType::Q4_1 && t != GgmlType::Q5_1) return 0.0;
  double c = 0;
  for (int64_t i = 0; i < n / 32; ++i) {
    const auto a = block_at<BlockQ8_1>(qx, static_cast<size_t>(i));
    uint16_t m;  // both Q4_1 and Q5_1 keep d then m in their first four bytes
    std::memcpy(&m, w.data() + static_cast<size_t>(i) * type_info(t)->block_bytes + 2, 2);
    int sum = 0;
    for (int j = 0; j < 32; ++j) sum += a.qs[j];
    c += static_cast<double>(fp16_to_f32(m)) *
         (static_cast<double>(fp16_to_f32(a.s)) - static_cast<double>(fp16_to_f32(a.d)) * sum);
  }
  return c;
}

// The integer dot product is the dot product of the two dequantized rows, up to the f32 rounding of
// a few operations per block.
TEST_P(DotQTest, EqualsDequantizedDotInDouble) {
  const GgmlType t = GetParam();
  const GgmlType vt = vec_dot_type(t);
  for (int64_t n : {256, 1024, 4096}) {
    for (uint32_t seed = 0; seed < 8; ++seed) {
      const auto w = quantize_weights(t, gaussian(n, 100 + seed));
      const auto x = gaussian(n, 200 + seed, seed % 2 == 0 ? 1.0f : 30.0f);
      const auto qx = quantize_act(vt, x);
      std::vector<float> wd(static_cast<size_t>(n)), xd(static_cast<size_t>(n));
      dequantize_row(t, w.data(), wd.data(), n);
      dequantize_activation(vt, qx.data(), xd.data(), n);
      double exact = q8_1_offset_correction(t, w, qx, n), magnitude = 0;
      for (int64_t i = 0; i < n; ++i) {
        exact += static_cast<double>(wd[i]) * xd[i];
        magnitude += std::fabs(static_cast<double>(wd[i]) * xd[i]);
      }
      const float got = dot_row_q(t, w.data(), qx.data(), n);
      EXPECT_NEAR(got, exact, 2e-6 * magnitude) << type_name(t) << " n=" << n << " seed=" << seed;
    }
  }
}

// Per-block values accumulate over sixteen lanes by block index, then fold by the fixed tree. A
// one-block row yields its block's value unchanged, so the test builds the row's result from those.
TEST_P(DotQTest, BlocksAccumulateInSixteenLanes) {
  const GgmlType t = GetParam();
  const GgmlType vt = vec_dot_type(t);
  const int64_t be = type_info(t)->block_elems;
  if (be == 1) GTEST_SKIP() << "element-wise types follow dot_row's order (tested below)";
  const int64_t nb = 37;
  const int64_t n = nb * be;
  const auto w = quantize_weights(t, gaussian(n, 5));
  const auto qx = quantize_act(vt, gaussian(n, 6));
  const size_t wb = type_info(t)->block_bytes, ab = type_info(vt)->block_bytes;
  float lanes[16] = {};
  for (int64_t i = 0; i < nb; ++i) {
    const float v = dot_row_q(t, w.data() + i * wb, qx.data() + i * ab, be);
    lanes[i % 16] = lanes[i % 16] + v;
  }
  for (int width = 8; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) lanes[j] = lanes[j] + lanes[j + width];
  }
  EXPECT_EQ(bits(dot_row_q(t, w.data(), qx.data(), n)), bits(lanes[0])) << type_name(t);
}

TEST_P(DotQTest, IndependentOfPlacement) {
  const GgmlType t = GetParam();
  const GgmlType vt = vec_dot_type(t);
  const int64_t n = 1024;
  const auto w = quantize_weights(t, gaussian(n, 31));
  const auto qx = quantize_act(vt, gaussian(n, 32));
  const float base = dot_row_q(t, w.data(), qx.data(), n);
  for (size_t shift : {1, 2, 3, 5}) {
    std::vector<uint8_t> w_copy(w.size() + 8), x_copy(qx.size() + 8);
    std::memcpy(w_copy.data() + shift, w.data(), w.size());
    std::memcpy(x_copy.data() + (7 - shift), qx.data(), qx.size());
    EXPECT_EQ(bits(dot_row_q(t, w_copy.data() + shift, x_copy.data() + (7 - shift), n)), bits(base))
        << type_name(t) << " shift " << shift;
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, DotQTest, testing::ValuesIn(kWeightTypes), name_of);

// The per-block formulas of quant.h, evaluated here from the blocks' fields.
TEST(Activation, BlockFormulasAsDocumented) {
  const auto xf = gaussian(256, 77);
  {  // Q8_0 x Q8_0: (dw * dy) * (float)isum
    const auto w = quantize_weights(GgmlType::Q8_0, std::vector<float>(xf.begin(), xf.begin() + 32));
    const auto a = quantize_act(GgmlType::Q8_0, gaussian(32, 78));
    const auto bw = block_at<BlockQ8_0>(w, 0);
    const auto ba = block_at<BlockQ8_0>(a, 0);
    int32_t isum = 0;
    for (int j = 0; j < 32; ++j) isum += bw.qs[j] * ba.qs[j];
    const float want = (fp16_to_f32(bw.d) * fp16_to_f32(ba.d)) * static_cast<float>(isum);
    EXPECT_EQ(bits(dot_row_q(GgmlType::Q8_0, w.data(), a.data(), 32)), bits(want));
  }
  {  // Q4_1 x Q8_1: (dw * dy) * (float)isum + mw * sy
    const auto w = quantize_weights(GgmlType::Q4_1, std::vector<float>(xf.begin(), xf.begin() + 32));
    const auto a = quantize_act(GgmlType::Q8_1, gaussian(32, 79));
    const auto bw = block_at<BlockQ4_1>(w, 0);
    const auto ba = block_at<BlockQ8_1>(a, 0);
    int32_t isum = 0;
    for (int j = 0; j < 16; ++j) isum += (bw.qs[j] & 15) * ba.qs[j] + (bw.qs[j] >> 4) * ba.qs[j + 16];
    const float want = (fp16_to_f32(bw.d) * fp16_to_f32(ba.d)) * static_cast<float>(isum) +
                       fp16_to_f32(bw.m) * fp16_to_f32(ba.s);
    EXPECT_EQ(bits(dot_row_q(GgmlType::Q4_1, w.data(), a.data(), 32)), bits(want));
  }
  {  // Q4_K x Q8_K, levels read back from the dequantized weights: w = d*sc*q - dmin*m
    const auto w = quantize_weights(GgmlType::Q4_K, xf);
    const auto a = quantize_act(GgmlType::Q8_K, gaussian(256, 80));
    const auto bw = block_at<BlockQ4_K>(w, 0);
    const auto ba = block_at<BlockQ8_K>(a, 0);
    int32_t isum = 0, imin = 0;
    for (int s = 0; s < 8; ++s) {
      uint8_t sc, m;
      unpack_scale_min_k4(s, bw.scales, &sc, &m);
      int32_t dot = 0;
      for (int l = 0; l < 32; ++l) {
        const int e = 32 * s + l;  // sub-block s: chunk s/2, low nibbles for even s
        const uint8_t byte = bw.qs[32 * (s / 2) + l];
        const int q = s % 2 == 0 ? (byte & 15) : (byte >> 4);
        dot += q * ba.qs[e];
      }
      isum += sc * dot;
      imin += m * (ba.bsums[2 * s] + ba.bsums[2 * s + 1]);
    }
    const float want = (fp16_to_f32(bw.d) * ba.d) * static_cast<float>(isum) -
                       (fp16_to_f32(bw.dmin) * ba.d) * static_cast<float>(imin);
    EXPECT_EQ(bits(dot_row_q(GgmlType::Q4_K, w.data(), a.data(), 256)), bits(want));
  }
}

// F32 weights: dot_row_q reads the floats (at any byte offset) and gives dot_row's bits. F16/BF16:
// dot_row's order with the activations rounded to the weight's format.
TEST(Activation, FloatTypesFollowDotRowOrder) {
  for (int64_t n : {1, 7, 37, 300, 1024}) {
    const auto wf = gaussian(n, 61);
    const auto x = gaussian(n, 62);
    for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16}) {
      const auto w = quantize_weights(t, wf);
      const auto qx = quantize_act(t, x);
      std::vector<float> xr(static_cast<size_t>(n));
      dequantize_activation(t, qx.data(), xr.data(), n);
      EXPECT_EQ(bits(dot_row_q(t, w.data(), qx.data(), n)), bits(dot_row(t, w.data(), xr.data(), n)))
          << type_name(t) << " n=" << n;
      std::vector<uint8_t> shifted(qx.size() + 3);
      std::memcpy(shifted.data() + 3, qx.data(), qx.size());
      EXPECT_EQ(bits(dot_row_q(t, w.data(), shifted.data() + 3, n)),
                bits(dot_row(t, w.data(), xr.data(), n)))
          << type_name(t) << " n=" << n;
    }
    EXPECT_EQ(bits(dot_row_q(GgmlType::F32, quantize_weights(GgmlType::F32, wf).data(), x.data(), n)),
              bits(dot_row(GgmlType::F32, quantize_weights(GgmlType::F32, wf).data(), x.data(), n)));
  }
}

}  // namespace
}  // namespace sq::kernels
