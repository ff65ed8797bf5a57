// GGML's quantized block formats, byte for byte as GGUF files store them (ggml-common.h). A tensor
// row is an array of these blocks; a block holds `kElems` consecutive elements of the row.
//
// Half-precision scales are kept as raw uint16_t bits (convert with sq::fp16_to_f32), so every
// struct has 1- or 2-byte alignment and no padding. A mapped row is only guaranteed the file's
// alignment, so kernels copy blocks out with memcpy rather than casting the pointer.
//
// Element order inside the blocks (what the dequantizers in quant_ref.cpp rely on):
//   Q4_0/Q4_1/Q5_0/Q5_1: byte qs[j] holds element j in its low nibble and element j+16 in its high
//     nibble; for Q5, bit j of the little-endian 32-bit qh is bit 4 of element j (j in 0..31).
//   Q4_K/Q5_K: eight 32-element sub-blocks, each with a 6-bit scale and a 6-bit min packed into
//     `scales[12]` (see unpack_scale_min_k4). The 256 elements go in four 64-element chunks: chunk c
//     uses qs[32c .. 32c+31], low nibbles for sub-block 2c, high nibbles for sub-block 2c+1. Q5_K's
//     qh[l] holds bit 4 of element 64c+l in bit 2c and of element 64c+32+l in bit 2c+1.
//   Q6_K: two 128-element halves; half h uses ql[64h..64h+63], qh[32h..32h+31] and scales[8h..8h+7];
//     within a half, element l+32k (l<32, k<4) takes its low 4 bits from ql[l + 32*(k&1)] (low
//     nibble for k<2, high for k>=2) and its top 2 bits from bits 2k..2k+1 of qh[l]; scale index
//     l/16 + 2k. Values are stored offset by 32.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sq::kernels {

inline constexpr int kQK = 32;    // elements per block of the legacy formats
inline constexpr int kQKK = 256;  // elements per super-block of the K formats
inline constexpr int kKScaleBytes = 12;

struct BlockQ4_0 {
  static constexpr int kElems = kQK;
  uint16_t d;             // fp16 scale; x = (q - 8) * d
  uint8_t qs[kQK / 2];    // 4-bit quants
};
static_assert(sizeof(BlockQ4_0) == 18);

struct BlockQ4_1 {
  static constexpr int kElems = kQK;
  uint16_t d;             // fp16 scale; x = q * d + m
  uint16_t m;             // fp16 min
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ4_1) == 20);

struct BlockQ5_0 {
  static constexpr int kElems = kQK;
  uint16_t d;             // fp16 scale; x = (q - 16) * d
  uint8_t qh[4];          // bit 4 of each element, little-endian 32-bit word
  uint8_t qs[kQK / 2];    // low 4 bits
};
static_assert(sizeof(BlockQ5_0) == 22);

struct BlockQ5_1 {
  static constexpr int kElems = kQK;
  uint16_t d;             // fp16 scale; x = q * d + m
  uint16_t m;             // fp16 min
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
static_assert(sizeof(BlockQ5_1) == 24);

struct BlockQ8_0 {
  static constexpr int kElems = kQK;
  uint16_t d;             // fp16 scale; x = q * d
  int8_t qs[kQK];
};
static_assert(sizeof(BlockQ8_0) == 34);

struct BlockQ4_K {
  static constexpr int kElems = kQKK;
  uint16_t d;                     // fp16 super-scale of the 6-bit sub-block scales
  uint16_t dmin;                  // fp16 super-scale of the 6-bit sub-block mins
  uint8_t scales[kKScaleBytes];   // 8 scales and 8 mins, 6 bits each
  uint8_t qs[kQKK / 2];           // 4-bit quants; x = d*sc * q - dmin*m
};
static_assert(sizeof(BlockQ4_K) == 144);

struct BlockQ5_K {
  static constexpr int kElems = kQKK;
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kQKK / 8];           // bit 4 of each element
  uint8_t qs[kQKK / 2];           // low 4 bits
};
static_assert(sizeof(BlockQ5_K) == 176);

struct BlockQ6_K {
  static constexpr int kElems = kQKK;
  uint8_t ql[kQKK / 2];           // low 4 bits
  uint8_t qh[kQKK / 4];           // top 2 bits
  int8_t scales[kQKK / 16];       // 16-element sub-block scales, 8-bit signed
  uint16_t d;                     // fp16 super-scale; x = d * scale * (q - 32)
};
static_assert(sizeof(BlockQ6_K) == 210);

// Activation formats (GGML's vec_dot_type): a row of activations is quantized to one of these
// before an integer dot product with a weight row (quant.h). Q8_0 above serves Q4_0, Q5_0 and Q8_0
// weights; Q8_1 serves Q4_1 and Q5_1, whose offset m needs the sum of the activation block; Q8_K
// serves the K formats, whose per-sub-block mins need sums over 16 elements.
struct BlockQ8_1 {
  static constexpr int kElems = kQK;
  uint16_t d;             // fp16 scale; x = q * d
  uint16_t s;             // fp16 of d * sum(qs)
  int8_t qs[kQK];
};
static_assert(sizeof(BlockQ8_1) == 36);

struct BlockQ8_K {
  static constexpr int kElems = kQKK;
  float d;                        // f32 scale (may be negative); x = q * d
  int8_t qs[kQKK];
  int16_t bsums[kQKK / 16];       // sums of qs in groups of 16
};
static_assert(sizeof(BlockQ8_K) == 292);

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block. Sub-blocks 0..3 keep theirs in
// the low 6 bits of bytes j (scale) and j+4 (min); sub-blocks 4..7 keep the low 4 bits in the
// nibbles of byte j+4 and the top 2 bits in the spare top bits of bytes j-4 (scale) and j (min).
inline void unpack_scale_min_k4(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

}  // namespace sq::kernels
