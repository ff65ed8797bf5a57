// Hand-built blocks with known bits dequantize to known values. The expected values come from the
// layout as GGML documents it (written out again in each test, independently of quant_ref.cpp), so
// a wrong nibble order, bit position or scale packing fails here.
#include "kernels/blocks.h"

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/quant.h"

namespace sq::kernels {
namespace {

constexpr uint16_t kHalfOne = 0x3C00;      // 1.0
constexpr uint16_t kHalfHalf = 0x3800;     // 0.5
constexpr uint16_t kHalfQuarter = 0x3400;  // 0.25
constexpr uint16_t kHalfMinusOne = 0xBC00; // -1.0
constexpr uint16_t kHalfMinusTwo = 0xC000; // -2.0

template <typename Block>
std::vector<float> dequantize(GgmlType type, const Block& b) {
  std::vector<float> y(Block::kElems);
  dequantize_row(type, &b, y.data(), Block::kElems);
  return y;
}

TEST(Blocks, Q4_0) {
  BlockQ4_0 b{};
  b.d = kHalfHalf;
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const auto y = dequantize(GgmlType::Q4_0, b);
  EXPECT_EQ(y[0], -4.0f);   // (0 - 8) * 0.5
  EXPECT_EQ(y[15], 3.5f);   // (15 - 8) * 0.5
  EXPECT_EQ(y[16], 3.5f);   // high nibble of byte 0: 15
  EXPECT_EQ(y[31], -4.0f);  // high nibble of byte 15: 0
  for (int e = 0; e < 32; ++e) {
    const int q = e < 16 ? e : 15 - (e - 16);
    EXPECT_EQ(y[e], (q - 8) * 0.5f) << e;
  }
}

TEST(Blocks, Q4_1) {
  BlockQ4_1 b{};
  b.d = kHalfQuarter;
  b.m = kHalfMinusOne;
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((j ^ 5) << 4));
  const auto y = dequantize(GgmlType::Q4_1, b);
  EXPECT_EQ(y[0], -1.0f);
  EXPECT_EQ(y[15], 2.75f);  // 15 * 0.25 - 1
  EXPECT_EQ(y[16], 0.25f);  // (0 ^ 5) * 0.25 - 1
  for (int e = 0; e < 32; ++e) {
    const int q = e < 16 ? e : ((e - 16) ^ 5);
    EXPECT_EQ(y[e], q * 0.25f - 1.0f) << e;
  }
}

TEST(Blocks, Q5_0) {
  BlockQ5_0 b{};
  b.d = kHalfOne;
  // qh as a little-endian word: 0xA5A5F00F. Bit e is bit 4 of element e.
  const uint8_t qh[4] = {0x0F, 0xF0, 0xA5, 0xA5};
  std::memcpy(b.qh, qh, 4);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const auto y = dequantize(GgmlType::Q5_0, b);
  EXPECT_EQ(y[0], 0.0f);     // 0 | 16 -> 16 - 16
  EXPECT_EQ(y[4], -12.0f);   // 4, bit 4 clear
  EXPECT_EQ(y[12], 12.0f);   // 12 | 16 (bit 12 set) -> 28 - 16
  EXPECT_EQ(y[16], 15.0f);   // 15 | 16 (bit 16 set) -> 31 - 16
  EXPECT_EQ(y[17], -2.0f);   // 14, bit 17 clear
  EXPECT_EQ(y[31], 0.0f);    // 0 | 16 (bit 31 set)
  const uint32_t word = 0xA5A5F00Fu;
  for (int e = 0; e < 32; ++e) {
    const int lo = e < 16 ? e : 15 - (e - 16);
    const int q = lo | (static_cast<int>((word >> e) & 1u) << 4);
    EXPECT_EQ(y[e], static_cast<float>(q - 16)) << e;
  }
}

TEST(Blocks, Q5_1) {
  BlockQ5_1 b{};
  b.d = kHalfHalf;
  b.m = kHalfMinusTwo;
  const uint8_t qh[4] = {0x01, 0x80, 0x00, 0xFF};  // word 0xFF008001: bits 0, 15, 24..31
  std::memcpy(b.qh, qh, 4);
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(((j + 3) % 16) | (j << 4));
  const auto y = dequantize(GgmlType::Q5_1, b);
  EXPECT_EQ(y[0], 7.5f);    // (3 | 16) * 0.5 - 2
  EXPECT_EQ(y[1], 0.0f);    // 4 * 0.5 - 2
  EXPECT_EQ(y[15], 7.0f);   // (2 | 16) * 0.5 - 2
  EXPECT_EQ(y[16], -2.0f);  // 0
  EXPECT_EQ(y[24], 10.0f);  // (8 | 16) * 0.5 - 2
  EXPECT_EQ(y[31], 13.5f);  // (15 | 16) * 0.5 - 2
  const uint32_t word = 0xFF008001u;
  for (int e = 0; e < 32; ++e) {
    const int lo = e < 16 ? (e + 3) % 16 : e - 16;
    const int q = lo | (static_cast<int>((word >> e) & 1u) << 4);
    EXPECT_EQ(y[e], q * 0.5f - 2.0f) << e;
  }
}

TEST(Blocks, Q8_0) {
  BlockQ8_0 b{};
  b.d = kHalfHalf;
  for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(j - 16);
  b.qs[31] = -128;
  const auto y = dequantize(GgmlType::Q8_0, b);
  EXPECT_EQ(y[0], -8.0f);
  EXPECT_EQ(y[16], 0.0f);
  EXPECT_EQ(y[30], 7.0f);
  EXPECT_EQ(y[31], -64.0f);
}

// Sub-block scales and mins of the K-quant tests, and their packing into scales[12], worked out by
// hand from the 6-bit layout: bytes 0-3 scale[0..3] with scale[4..7] >> 4 in bits 6-7; bytes 4-7
// min[0..3] with min[4..7] >> 4 in bits 6-7; bytes 8-11 scale[4..7] & 15 | (min[4..7] & 15) << 4.
constexpr uint8_t kSc[8] = {1, 2, 3, 4, 40, 50, 60, 63};
constexpr uint8_t kMin[8] = {0, 5, 10, 15, 33, 44, 55, 62};
constexpr uint8_t kPacked[12] = {0x81, 0xC2, 0xC3, 0xC4, 0x80, 0x85,
                                 0xCA, 0xCF, 0x18, 0xC2, 0x7C, 0xEF};

TEST(Blocks, UnpackScaleMinK4) {
  for (int j = 0; j < 8; ++j) {
    uint8_t sc = 0, m = 0;
    unpack_scale_min_k4(j, kPacked, &sc, &m);
    EXPECT_EQ(sc, kSc[j]) << j;
    EXPECT_EQ(m, kMin[j]) << j;
  }
}

TEST(Blocks, Q4_K) {
  BlockQ4_K b{};
  b.d = kHalfHalf;
  b.dmin = kHalfQuarter;
  std::memcpy(b.scales, kPacked, 12);
  // Chunk c (64 elements) uses qs[32c..32c+31]: low nibble (l + c) & 15 is element 64c + l
  // (sub-block 2c), high nibble (3l + c) & 15 is element 64c + 32 + l (sub-block 2c + 1).
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      b.qs[32 * c + l] = static_cast<uint8_t>(((l + c) & 15) | (((3 * l + c) & 15) << 4));
    }
  }
  const auto y = dequantize(GgmlType::Q4_K, b);
  EXPECT_EQ(y[0], 0.0f);      // sub-block 0, q 0
  EXPECT_EQ(y[33], 1.75f);    // sub-block 1, q 3: 0.5*2*3 - 0.25*5
  EXPECT_EQ(y[130], 71.75f);  // sub-block 4, q 4: 0.5*40*4 - 0.25*33
  EXPECT_EQ(y[255], -15.5f);  // sub-block 7, q (93+3)&15 = 0: -0.25*62
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, r = e % 64, l = r % 32;
    const int sub = 2 * c + (r >= 32 ? 1 : 0);
    const int q = r < 32 ? (l + c) & 15 : (3 * l + c) & 15;
    EXPECT_EQ(y[e], 0.5f * kSc[sub] * q - 0.25f * kMin[sub]) << e;
  }
}

TEST(Blocks, Q5_K) {
  BlockQ5_K b{};
  b.d = kHalfHalf;
  b.dmin = kHalfQuarter;
  std::memcpy(b.scales, kPacked, 12);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      b.qs[32 * c + l] = static_cast<uint8_t>(((l + c) & 15) | (((3 * l + c) & 15) << 4));
    }
  }
  // qh[l]: bit 2c is bit 4 of element 64c + l, bit 2c+1 of element 64c + 32 + l.
  for (int l = 0; l < 32; ++l) b.qh[l] = static_cast<uint8_t>(l * 37);
  const auto y = dequantize(GgmlType::Q5_K, b);
  EXPECT_EQ(y[33], 1.75f);    // qh[1] = 37 = 0b100101, bit 1 clear: q 3
  EXPECT_EQ(y[34], 20.75f);   // qh[2] = 74 = 0b1001010, bit 1 set: q 6 + 16 -> 0.5*2*22 - 1.25
  EXPECT_EQ(y[1], 8.5f);      // qh[1] bit 0 set: q 1 + 16 -> 0.5*1*17 - 0.25*0
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, r = e % 64, l = r % 32;
    const int sub = 2 * c + (r >= 32 ? 1 : 0);
    const int bit = 2 * c + (r >= 32 ? 1 : 0);
    const int lo = r < 32 ? (l + c) & 15 : (3 * l + c) & 15;
    const int q = lo + (((l * 37) & 0xFF) >> bit & 1) * 16;
    EXPECT_EQ(y[e], 0.5f * kSc[sub] * q - 0.25f * kMin[sub]) << e;
  }
}

TEST(Blocks, Q6_K) {
  BlockQ6_K b{};
  b.d = kHalfQuarter;
  for (int i = 0; i < 16; ++i) b.scales[i] = static_cast<int8_t>(i % 2 != 0 ? -(i + 1) : i + 1);
  for (int k = 0; k < 128; ++k) b.ql[k] = static_cast<uint8_t>(k * 7);
  for (int k = 0; k < 64; ++k) b.qh[k] = static_cast<uint8_t>(k * 13);
  const auto y = dequantize(GgmlType::Q6_K, b);
  EXPECT_EQ(y[0], -8.0f);      // ql 0, qh 0: q -32, scale 1
  EXPECT_EQ(y[200], -55.25f);  // half 1, k 2, l 8: ql[72] = 0xF8 high nibble 15, qh[40] bits 4-5 0,
                               // q 15 - 32; scale[8 + 0 + 4] = 13: 0.25 * 13 * -17
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, r = e % 128, k = r / 32, l = r % 32;
    const int ql = (64 * h + l + 32 * (k & 1)) * 7 & 0xFF;
    const int lo = k < 2 ? ql & 15 : ql >> 4;
    const int hi = (((32 * h + l) * 13 & 0xFF) >> (2 * k)) & 3;
    const int q = (lo | (hi << 4)) - 32;
    const int scale = b.scales[8 * h + l / 16 + 2 * k];
    EXPECT_EQ(y[e], 0.25f * static_cast<float>(scale) * static_cast<float>(q)) << e;
  }
}

}  // namespace
}  // namespace sq::kernels
