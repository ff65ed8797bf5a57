// Round trips, the dot product's value and its fixed order of operations, and the traits table.
#include "kernels/quant.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/types.h"
#include "kernel_test_util.h"

namespace sq::kernels {
namespace {

constexpr auto& kAllTypes = test::kComputeTypes;
using test::gaussian;
constexpr auto quantize = test::quantize_weights;

std::vector<float> dequantize(GgmlType t, const std::vector<uint8_t>& q, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  dequantize_row(t, q.data(), y.data(), n);
  return y;
}

// sqrt(sum (x - y)^2 / sum x^2)
double relative_rms_error(const std::vector<float>& x, const std::vector<float>& y) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    err += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
    ref += static_cast<double>(x[i]) * x[i];
  }
  return std::sqrt(err / ref);
}

// Relative RMS error a correct quantizer reaches on Gaussian data, with a small margin (measured:
// F16 0.021 %, BF16 0.17 %, Q8_0 0.54 %, Q6_K 1.77 %, Q5_K 3.59 %, Q5_1 3.76 %, Q5_0 4.26 %,
// Q4_K 7.14 %, Q4_1 7.82 %, Q4_0 8.65 %). The K bounds sit below what a plain min/max fit of the
// same bits gives, so a weakened scale search fails them; layouts are proven by blocks_test and the
// real-file test, since a round trip through a consistently wrong layout would pass here.
double error_bound(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return 0.0;
    case GgmlType::F16: return 0.0004;
    case GgmlType::BF16: return 0.003;
    case GgmlType::Q8_0: return 0.006;
    case GgmlType::Q6_K: return 0.019;
    case GgmlType::Q5_K: return 0.037;
    case GgmlType::Q5_0: return 0.046;
    case GgmlType::Q5_1: return 0.041;
    case GgmlType::Q4_K: return 0.075;
    case GgmlType::Q4_1: return 0.082;
    case GgmlType::Q4_0: return 0.09;
    default: return 0.0;
  }
}

std::string name_of(const testing::TestParamInfo<GgmlType>& info) {
  return type_name(info.param);
}

class QuantTest : public testing::TestWithParam<GgmlType> {};

TEST_P(QuantTest, TraitsMatchTypeInfo) {
  const GgmlType t = GetParam();
  ASSERT_TRUE(type_supported(t));
  const TypeTraits* traits = type_traits(t);
  ASSERT_NE(traits, nullptr);
  EXPECT_EQ(traits->type, t);
  EXPECT_EQ(traits->block_elems, static_cast<int64_t>(type_info(t)->block_elems));
  EXPECT_EQ(traits->block_bytes, static_cast<size_t>(type_info(t)->block_bytes));
  EXPECT_EQ(traits->vec_dot_type, vec_dot_type(t));
  EXPECT_TRUE(activation_type_supported(traits->vec_dot_type));
  EXPECT_EQ(row_bytes(t, 4096), 4096 / type_info(t)->block_elems * type_info(t)->block_bytes);
}

TEST_P(QuantTest, RoundTripErrorWithinBound) {
  const GgmlType t = GetParam();
  const int64_t n = 256 * 64;
  const auto x = gaussian(n, 1234);
  const auto y = dequantize(t, quantize(t, x), n);
  const double err = relative_rms_error(x, y);
  EXPECT_LE(err, error_bound(t)) << type_name(t);
  // Scale does not matter to the relative error (no fixed step anywhere).
  auto big = x;
  for (auto& v : big) v *= 1000.0f;
  EXPECT_NEAR(relative_rms_error(big, dequantize(t, quantize(t, big), n)), err, 0.002);
}

// Distributions that stress the scale search: all zeros, a constant, one outlier, all positive.
TEST_P(QuantTest, EdgeCaseBlocks) {
  const GgmlType t = GetParam();
  const int64_t n = 512;
  std::vector<float> zeros(n, 0.0f);
  for (float v : dequantize(t, quantize(t, zeros), n)) EXPECT_EQ(v, 0.0f);

  std::vector<float> constant(n, 0.75f);
  for (float v : dequantize(t, quantize(t, constant), n)) EXPECT_NEAR(v, 0.75f, 0.75f * 0.07f);

  auto outlier = gaussian(n, 7, 0.01f);
  outlier[100] = 5.0f;
  const auto y = dequantize(t, quantize(t, outlier), n);
  EXPECT_NEAR(y[100], 5.0f, 5.0f * 0.02f);
  for (float v : y) EXPECT_TRUE(std::isfinite(v));

  auto positive = gaussian(n, 8);
  for (auto& v : positive) v = std::fabs(v) + 1.0f;
  EXPECT_LE(relative_rms_error(positive, dequantize(t, quantize(t, positive), n)),
            error_bound(t));
}

// dot_row is the f32 sum of exactly the dequantized weights times x: close to the same sum in
// double, within the rounding of n f32 additions.
TEST_P(QuantTest, DotMatchesDequantizedDot) {
  const GgmlType t = GetParam();
  for (int64_t n : {256, 1024, 4096}) {
    const auto w = gaussian(n, 11);
    const auto x = gaussian(n, 12);
    const auto q = quantize(t, w);
    const auto wd = dequantize(t, q, n);
    double exact = 0, magnitude = 0;
    for (int64_t i = 0; i < n; ++i) {
      exact += static_cast<double>(wd[i]) * x[i];
      magnitude += std::fabs(static_cast<double>(wd[i]) * x[i]);
    }
    const float got = dot_row(t, q.data(), x.data(), n);
    EXPECT_NEAR(got, exact, 1e-6 * magnitude + 1e-30) << type_name(t) << " n=" << n;
  }
}

// The order of operations is part of the contract (quant.h): emulate it here, independently of
// LaneSum, and demand the same bits.
TEST_P(QuantTest, DotFollowsSixteenLaneOrder) {
  const GgmlType t = GetParam();
  const int64_t n = 2048;
  const auto q = quantize(t, gaussian(n, 21));
  const auto x = gaussian(n, 22);
  const auto wd = dequantize(t, q, n);
  float lanes[16] = {};
  for (int64_t i = 0; i < n; ++i) {
    const float product = wd[i] * x[i];
    lanes[i % 16] = lanes[i % 16] + product;
  }
  float s8[8], s4[4], s2[2];
  for (int j = 0; j < 8; ++j) s8[j] = lanes[j] + lanes[j + 8];
  for (int j = 0; j < 4; ++j) s4[j] = s8[j] + s8[j + 4];
  for (int j = 0; j < 2; ++j) s2[j] = s4[j] + s4[j + 2];
  const float want = s2[0] + s2[1];
  EXPECT_EQ(std::bit_cast<uint32_t>(dot_row(t, q.data(), x.data(), n)),
            std::bit_cast<uint32_t>(want));
}

// Where the row and x live (alignment, a copy) does not change a single bit.
TEST_P(QuantTest, DotIndependentOfPlacement) {
  const GgmlType t = GetParam();
  const int64_t n = 1024;
  const auto q = quantize(t, gaussian(n, 31));
  const auto x = gaussian(n, 32);
  const float base = dot_row(t, q.data(), x.data(), n);
  for (size_t shift : {1, 2, 3, 5}) {
    std::vector<uint8_t> row_copy(q.size() + 8);
    std::memcpy(row_copy.data() + shift, q.data(), q.size());
    std::vector<float> x_copy(x.size() + 8);
    std::memcpy(x_copy.data() + shift, x.data(), x.size() * sizeof(float));
    const float moved = dot_row(t, row_copy.data() + shift, x_copy.data() + shift, n);
    EXPECT_EQ(std::bit_cast<uint32_t>(moved), std::bit_cast<uint32_t>(base)) << shift;
  }
}

// Any split of the rows gives the outputs dot_row gives row by row.
TEST_P(QuantTest, MatvecEqualsRowDots) {
  const GgmlType t = GetParam();
  const int64_t n = 512, rows = 37;
  const auto w = gaussian(n * rows, 41);
  std::vector<uint8_t> q(row_bytes(t, n) * rows);
  for (int64_t r = 0; r < rows; ++r) {
    quantize_row(t, w.data() + r * n, q.data() + r * row_bytes(t, n), n);
  }
  const auto x = gaussian(n, 42);
  std::vector<float> whole(rows), split(rows);
  matvec_rows(t, q.data(), x.data(), whole.data(), n, 0, rows);
  for (int64_t r0 = 0; r0 < rows; r0 += 5) {
    matvec_rows(t, q.data(), x.data(), split.data(), n, r0, std::min(rows, r0 + 5));
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float single = dot_row(t, q.data() + r * row_bytes(t, n), x.data(), n);
    EXPECT_EQ(std::bit_cast<uint32_t>(whole[r]), std::bit_cast<uint32_t>(single)) << r;
    EXPECT_EQ(std::bit_cast<uint32_t>(split[r]), std::bit_cast<uint32_t>(single)) << r;
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, QuantTest, testing::ValuesIn(kAllTypes), name_of);

TEST(Quant, UnsupportedTypesHaveNoTraits) {
  EXPECT_EQ(type_traits(GgmlType::Q2_K), nullptr);
  EXPECT_EQ(type_traits(GgmlType::IQ4_NL), nullptr);
  EXPECT_EQ(row_bytes(GgmlType::Q2_K, 512), 2u * 84u);  // geometry is known even so
}

// Rows whose length is not a multiple of 16 (F32/F16/BF16 only): the tail still goes to lane
// i % 16.
TEST(Quant, UnblockedTailFollowsLaneOrder) {
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16}) {
    for (int64_t n : {1, 7, 37, 300}) {
      const auto w = gaussian(n, 51);
      const auto x = gaussian(n, 52);
      const auto q = quantize(t, w);
      const auto wd = dequantize(t, q, n);
      float lanes[16] = {};
      for (int64_t i = 0; i < n; ++i) lanes[i % 16] = lanes[i % 16] + wd[i] * x[i];
      for (int width = 8; width >= 1; width /= 2) {
        for (int j = 0; j < width; ++j) lanes[j] = lanes[j] + lanes[j + width];
      }
      EXPECT_EQ(std::bit_cast<uint32_t>(dot_row(t, q.data(), x.data(), n)),
                std::bit_cast<uint32_t>(lanes[0]))
          << type_name(t) << " n=" << n;
    }
  }
}

// F16 and BF16 rows store exactly what the scalar conversions give.
TEST(Quant, HalfRowsAreBitConversions) {
  const std::vector<float> x = {1.0f, -2.0f, 65504.0f, 1e-7f, 3.14159f};
  const auto h = quantize(GgmlType::F16, x);
  ASSERT_EQ(h.size(), 10u);
  EXPECT_EQ(h[0], 0x00);
  EXPECT_EQ(h[1], 0x3C);
  EXPECT_EQ(h[4], 0xFF);
  EXPECT_EQ(h[5], 0x7B);
  const auto b = quantize(GgmlType::BF16, x);
  EXPECT_EQ(b[0], 0x80);
  EXPECT_EQ(b[1], 0x3F);
}

}  // namespace
}  // namespace sq::kernels
