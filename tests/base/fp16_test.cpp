#include "base/fp16.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include <gtest/gtest.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace sq {
namespace {

uint32_t bits_of(float f) { return std::bit_cast<uint32_t>(f); }

bool is_half_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }

// The value of a half by its definition, computed in double: (-1)^s * 2^(e-15) * 1.m, or
// 2^-14 * 0.m for subnormals.
double half_value(uint16_t h) {
  const int e = (h >> 10) & 0x1f;
  const int m = h & 0x3ff;
  const double sign = (h & 0x8000) != 0 ? -1.0 : 1.0;
  if (e == 0) return sign * std::ldexp(m, -24);
  if (e == 31) return m == 0 ? sign * std::numeric_limits<double>::infinity() : std::nan("");
  return sign * std::ldexp(1024 + m, e - 25);
}

TEST(Fp16, KnownValues) {
  EXPECT_EQ(f32_to_fp16(1.0f), 0x3C00);
  EXPECT_EQ(f32_to_fp16(-2.0f), 0xC000);
  EXPECT_EQ(f32_to_fp16(0.5f), 0x3800);
  EXPECT_EQ(f32_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(f32_to_fp16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_fp16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_fp16(0x1p-24f), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_fp16(0x1p-14f), 0x0400);  // smallest normal
  EXPECT_EQ(f32_to_fp16(0x1.ff8p-15f), 0x03FF);  // largest subnormal
  EXPECT_EQ(f32_to_fp16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(f32_to_fp16(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_EQ(f32_to_fp16(1e10f), 0x7C00);
  EXPECT_EQ(f32_to_fp16(std::numeric_limits<float>::max()), 0x7C00);

  EXPECT_EQ(fp16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(fp16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(fp16_to_f32(0x0001), 0x1p-24f);
  EXPECT_EQ(fp16_to_f32(0x8001), -0x1p-24f);
  EXPECT_EQ(fp16_to_f32(0x03FF), 0x1.ff8p-15f);
  EXPECT_EQ(bits_of(fp16_to_f32(0x8000)), 0x80000000u);
  EXPECT_EQ(fp16_to_f32(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(fp16_to_f32(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(fp16_to_f32(0x7E00)));
  EXPECT_TRUE(std::isnan(fp16_to_f32(0x7C01)));
}

TEST(Fp16, RoundsToNearestEven) {
  // Between 1 (0x3C00) and 1 + 2^-10 (0x3C01): the midpoint goes to the even 0x3C00, just above
  // it goes up; between 0x3C01 and 0x3C02 the midpoint goes up to the even 0x3C02.
  EXPECT_EQ(f32_to_fp16(1.0f + 0x1p-11f), 0x3C00);
  EXPECT_EQ(f32_to_fp16(std::nextafter(1.0f + 0x1p-11f, 2.0f)), 0x3C01);
  EXPECT_EQ(f32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3C02);
  // 65504 + 16 is the midpoint to the next (non-existent) value: ties to even, which is infinity.
  EXPECT_EQ(f32_to_fp16(65519.996f), 0x7BFF);
  EXPECT_EQ(f32_to_fp16(65520.0f), 0x7C00);
  // Subnormal ties: 2^-25 is half the smallest subnormal -> 0; 3 * 2^-25 -> 2 (even).
  EXPECT_EQ(f32_to_fp16(0x1p-25f), 0x0000);
  EXPECT_EQ(f32_to_fp16(std::nextafter(0x1p-25f, 1.0f)), 0x0001);
  EXPECT_EQ(f32_to_fp16(3 * 0x1p-25f), 0x0002);
  EXPECT_EQ(f32_to_fp16(-3 * 0x1p-25f), 0x8002);
  // Rounding up from the largest subnormal carries into the smallest normal.
  EXPECT_EQ(f32_to_fp16(std::nextafter(0x1p-14f, 0.0f)), 0x0400);
  // Float subnormals are far below the half range.
  EXPECT_EQ(f32_to_fp16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

TEST(Fp16, ExhaustiveRoundTrip) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    const float f = fp16_to_f32(h);
    if (is_half_nan(h)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << i;
      ASSERT_EQ(bits_of(f) >> 31, i >> 15) << std::hex << i;
      // A NaN stays a NaN with its payload; a signalling one comes back quiet.
      ASSERT_EQ(f32_to_fp16(f), h | 0x0200) << std::hex << i;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), half_value(h)) << std::hex << i;
    ASSERT_EQ(f32_to_fp16(f), h) << std::hex << i;
  }
}

// For every pair of adjacent finite halves, the floats at, just below and just above the midpoint
// round to the right side: the boundaries are where a conversion goes wrong.
TEST(Fp16, ExhaustiveMidpoints) {
  for (uint32_t i = 0; i < 0x7BFF; ++i) {
    const auto lo = static_cast<uint16_t>(i);
    const auto hi = static_cast<uint16_t>(i + 1);
    const float mid = static_cast<float>((half_value(lo) + half_value(hi)) / 2);  // exact in float
    ASSERT_EQ(static_cast<double>(mid), (half_value(lo) + half_value(hi)) / 2);
    const uint16_t even = (lo & 1) == 0 ? lo : hi;
    ASSERT_EQ(f32_to_fp16(mid), even) << std::hex << i;
    ASSERT_EQ(f32_to_fp16(std::nextafter(mid, 0.0f)), lo) << std::hex << i;
    ASSERT_EQ(f32_to_fp16(std::nextafter(mid, 1e9f)), hi) << std::hex << i;
    ASSERT_EQ(f32_to_fp16(-mid), even | 0x8000) << std::hex << i;
  }
}

#ifdef __FLT16_MAX__
// The compiler's own _Float16 conversion as an independent oracle on a sample of all floats.
void check_against_compiler(uint32_t start, uint32_t step) {
  for (uint64_t u = start; u <= 0xffffffffu; u += step) {
    const float f = std::bit_cast<float>(static_cast<uint32_t>(u));
    const uint16_t mine = f32_to_fp16(f);
    const uint16_t theirs = std::bit_cast<uint16_t>(static_cast<_Float16>(f));
    if (std::isnan(f)) {
      ASSERT_TRUE(is_half_nan(mine)) << std::hex << u;
      ASSERT_EQ(mine >> 15, theirs >> 15) << std::hex << u;
    } else {
      ASSERT_EQ(mine, theirs) << std::hex << u;
    }
  }
}

TEST(Fp16, MatchesCompilerOnSample) { check_against_compiler(0, 4999); }
#endif

#if defined(__x86_64__)
// Every float against the F16C instruction (round to nearest even), where the CPU has it.
__attribute__((target("f16c"))) uint16_t f16c_convert(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

TEST(Fp16, SlowMatchesF16cOnEveryFloat) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "the CPU has no F16C";
  for (uint64_t u = 0; u <= 0xffffffffu; ++u) {
    const float f = std::bit_cast<float>(static_cast<uint32_t>(u));
    const uint16_t mine = f32_to_fp16(f);
    const uint16_t theirs = f16c_convert(f);
    ASSERT_EQ(mine, theirs) << std::hex << u;
  }
}
#endif

TEST(Bf16, KnownValues) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(f32_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(bf16_to_f32(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0x4049), 3.140625f);
  // Ties to even: 1 + 2^-8 lies halfway between 0x3F80 and 0x3F81 -> 0x3F80; 1 + 3*2^-8 halfway
  // between 0x3F81 and 0x3F82 -> 0x3F82.
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3F808000u)), 0x3F80);
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3F808001u)), 0x3F81);
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3F818000u)), 0x3F82);
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3F817FFFu)), 0x3F81);
  // The largest float rounds up to infinity, as round-to-nearest says.
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7F80);
  // NaN stays NaN and comes back quiet, including a signalling NaN whose payload is all low bits.
  const uint16_t nan = f32_to_bf16(std::bit_cast<float>(0x7F800001u));
  EXPECT_EQ(nan & 0x7F80, 0x7F80);
  EXPECT_NE(nan & 0x0040, 0);
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0xFFC00000u)), 0xFFC0);
}

TEST(Bf16, ExhaustiveRoundTrip) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    const float f = bf16_to_f32(h);
    ASSERT_EQ(bits_of(f), i << 16);
    const bool nan = (h & 0x7F80) == 0x7F80 && (h & 0x7F) != 0;
    ASSERT_EQ(f32_to_bf16(f), nan ? (h | 0x40) : h) << std::hex << i;
  }
}

// Against rounding by comparing distances in double, on a sample of all finite floats.
TEST(Bf16, RoundsToNearestOnSample) {
  for (uint64_t u = 0; u <= 0xffffffffu; u += 1009) {
    const float f = std::bit_cast<float>(static_cast<uint32_t>(u));
    if (!std::isfinite(f)) continue;
    const uint16_t got = f32_to_bf16(f);
    const uint32_t lo = static_cast<uint32_t>(u) & 0xffff0000u;
    const double dlo = std::fabs(static_cast<double>(std::bit_cast<float>(lo)) - f);
    const uint32_t hi = lo + 0x10000u;
    // Above the largest finite bf16 the upper neighbour is infinity; the spacing still decides.
    const double dhi = (hi & 0x7f800000u) == 0x7f800000u
                           ? std::ldexp(1.0, 128) - std::fabs(static_cast<double>(f))
                           : std::fabs(static_cast<double>(std::bit_cast<float>(hi)) - f);
    uint16_t want;
    if (dlo < dhi) want = static_cast<uint16_t>(lo >> 16);
    else if (dhi < dlo) want = static_cast<uint16_t>(hi >> 16);
    else want = static_cast<uint16_t>(((lo >> 16) & 1) == 0 ? lo >> 16 : hi >> 16);
    ASSERT_EQ(got, want) << std::hex << u;
  }
}

}  // namespace
}  // namespace sq
