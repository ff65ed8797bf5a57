// Reference conversions between f32 and GGML's block formats, and the reference dot products.
//
// The quantizers reproduce GGML's quantize_row_*_ref (no importance matrix): the same max-abs or
// min/max formulas for the 32-element formats, the same weighted least-squares search for the K
// formats, and the same round-half-to-even `nearest_int`. Dequantization uses GGML's expressions in
// GGML's order, so a dequantized weight is the same float llama.cpp computes.
//
// The activation quantizers (Q8_0, Q8_1, Q8_K) reproduce quantize_row_q8_*_ref, and the dot
// products with quantized activations compute exact integer sums per block, as GGML's vec_dot
// kernels do; how those sums become one float is squeeze's own fixed order (quant.h).
#include "kernels/quant_ref.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

#include "base/fp16.h"
#include "kernels/blocks.h"
#include "kernels/quant.h"
#include "kernels/repack.h"

namespace sq::kernels {

namespace {

// Blocks of a mapped row only have the file's alignment: copy them out rather than cast.
template <typename Block>
inline Block load_block(const void* row, int64_t index) {
  Block b;
  std::memcpy(&b, static_cast<const uint8_t*>(row) + index * static_cast<int64_t>(sizeof(Block)),
              sizeof(Block));
  return b;
}

template <typename Block>
inline void store_block(void* row, int64_t index, const Block& b) {
  std::memcpy(static_cast<uint8_t*>(row) + index * static_cast<int64_t>(sizeof(Block)), &b,
              sizeof(Block));
}

// Round half to even by the float magic-number trick, as GGML does (|x| below 2^22).
inline int nearest_int(float x) {
  const float shifted = x + 12582912.f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  return (bits & 0x007fffff) - 0x00400000;
}

constexpr float kGroupMaxEps = 1e-15f;

// ---- per-block dequantizers -------------------------------------------------------------------

void dequant_block(const BlockQ4_0& b, float* y) {
  const float d = fp16_to_f32(b.d);
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>((b.qs[j] & 0x0F) - 8) * d;
    y[j + kQK / 2] = static_cast<float>((b.qs[j] >> 4) - 8) * d;
  }
}

void dequant_block(const BlockQ4_1& b, float* y) {
  const float d = fp16_to_f32(b.d);
  const float m = fp16_to_f32(b.m);
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>(b.qs[j] & 0x0F) * d + m;
    y[j + kQK / 2] = static_cast<float>(b.qs[j] >> 4) * d + m;
  }
}

inline uint32_t load_qh(const uint8_t (&qh)[4]) {
  return static_cast<uint32_t>(qh[0]) | (static_cast<uint32_t>(qh[1]) << 8) |
         (static_cast<uint32_t>(qh[2]) << 16) | (static_cast<uint32_t>(qh[3]) << 24);
}

inline void store_qh(uint8_t (&qh)[4], uint32_t v) {
  for (int k = 0; k < 4; ++k) qh[k] = static_cast<uint8_t>(v >> (8 * k));
}

void dequant_block(const BlockQ5_0& b, float* y) {
  const float d = fp16_to_f32(b.d);
  const uint32_t qh = load_qh(b.qh);
  for (int j = 0; j < kQK / 2; ++j) {
    const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
    const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    y[j] = static_cast<float>(((b.qs[j] & 0x0F) | h0) - 16) * d;
    y[j + kQK / 2] = static_cast<float>(((b.qs[j] >> 4) | h1) - 16) * d;
  }
}

void dequant_block(const BlockQ5_1& b, float* y) {
  const float d = fp16_to_f32(b.d);
  const float m = fp16_to_f32(b.m);
  const uint32_t qh = load_qh(b.qh);
  for (int j = 0; j < kQK / 2; ++j) {
    const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
    const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    y[j] = static_cast<float>((b.qs[j] & 0x0F) | h0) * d + m;
    y[j + kQK / 2] = static_cast<float>((b.qs[j] >> 4) | h1) * d + m;
  }
}

void dequant_block(const BlockQ8_0& b, float* y) {
  const float d = fp16_to_f32(b.d);
  for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
}

void dequant_block(const BlockQ4_K& b, float* y) {
  const float d = fp16_to_f32(b.d);
  const float dmin = fp16_to_f32(b.dmin);
  const uint8_t* q = b.qs;
  for (int chunk = 0; chunk < 4; ++chunk) {
    uint8_t sc, m;
    unpack_scale_min_k4(2 * chunk, b.scales, &sc, &m);
    const float d1 = d * sc;
    const float m1 = dmin * m;
    unpack_scale_min_k4(2 * chunk + 1, b.scales, &sc, &m);
    const float d2 = d * sc;
    const float m2 = dmin * m;
    for (int l = 0; l < 32; ++l) y[l] = d1 * static_cast<float>(q[l] & 0x0F) - m1;
    for (int l = 0; l < 32; ++l) y[l + 32] = d2 * static_cast<float>(q[l] >> 4) - m2;
    q += 32;
    y += 64;
  }
}

void dequant_block(const BlockQ5_K& b, float* y) {
  const float d = fp16_to_f32(b.d);
  const float dmin = fp16_to_f32(b.dmin);
  const uint8_t* ql = b.qs;
  for (int chunk = 0; chunk < 4; ++chunk) {
    uint8_t sc, m;
    unpack_scale_min_k4(2 * chunk, b.scales, &sc, &m);
    const float d1 = d * sc;
    const float m1 = dmin * m;
    unpack_scale_min_k4(2 * chunk + 1, b.scales, &sc, &m);
    const float d2 = d * sc;
    const float m2 = dmin * m;
    const uint8_t bit_lo = static_cast<uint8_t>(1u << (2 * chunk));
    const uint8_t bit_hi = static_cast<uint8_t>(2u << (2 * chunk));
    for (int l = 0; l < 32; ++l) {
      const int q = (ql[l] & 0x0F) + ((b.qh[l] & bit_lo) != 0 ? 16 : 0);
      y[l] = d1 * static_cast<float>(q) - m1;
    }
    for (int l = 0; l < 32; ++l) {
      const int q = (ql[l] >> 4) + ((b.qh[l] & bit_hi) != 0 ? 16 : 0);
      y[l + 32] = d2 * static_cast<float>(q) - m2;
    }
    ql += 32;
    y += 64;
  }
}

void dequant_block(const BlockQ6_K& b, float* y) {
  const float d = fp16_to_f32(b.d);
  const uint8_t* ql = b.ql;
  const uint8_t* qh = b.qh;
  const int8_t* sc = b.scales;
  for (int half = 0; half < 2; ++half) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

// ---- activation formats ---------------------------------------------------------------------------

// quantize_row_q8_1_ref: Q8_0's scale and rounding, plus d times the sum of the quants for the
// offset term of Q4_1/Q5_1 weights.
void quant_block(const float* x, BlockQ8_1& b) {
  float amax = 0.0f;
  for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b.d = f32_to_fp16(d);
  int sum = 0;
  for (int j = 0; j < kQK; ++j) {
    b.qs[j] = static_cast<int8_t>(std::round(x[j] * id));
    sum += b.qs[j];
  }
  b.s = f32_to_fp16(static_cast<float>(sum) * d);
}

// quantize_row_q8_K_ref: the signed extreme maps to -127, so d = 1 / iscale carries the opposite
// sign of that extreme; the min(127, .) guards the other side against rounding past 127.
void quant_block(const float* x, BlockQ8_K& b) {
  float max = 0.0f;
  float amax = 0.0f;
  for (int j = 0; j < kQKK; ++j) {
    const float ax = std::fabs(x[j]);
    if (ax > amax) {
      amax = ax;
      max = x[j];
    }
  }
  if (amax == 0.0f) {
    b = BlockQ8_K{};
    return;
  }
  const float iscale = -127.f / max;
  for (int j = 0; j < kQKK; ++j) b.qs[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * x[j])));
  for (int g = 0; g < kQKK / 16; ++g) {
    int sum = 0;
    for (int j = 0; j < 16; ++j) sum += b.qs[16 * g + j];
    b.bsums[g] = static_cast<int16_t>(sum);
  }
  b.d = 1 / iscale;
}

void dequant_block(const BlockQ8_1& b, float* y) {
  const float d = fp16_to_f32(b.d);
  for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
}

void dequant_block(const BlockQ8_K& b, float* y) {
  for (int j = 0; j < kQKK; ++j) y[j] = static_cast<float>(b.qs[j]) * b.d;
}

template <typename Block>
void dequantize_blocks(const void* src, float* dst, int64_t n) {
  assert(n % Block::kElems == 0);
  const int64_t nb = n / Block::kElems;
  for (int64_t i = 0; i < nb; ++i) dequant_block(load_block<Block>(src, i), dst + i * Block::kElems);
}

// Dequantizes one block at a time into a stack buffer and accumulates, so that the dot product
// sees exactly the weights dequantize_row produces.
template <typename Block>
float dot_blocks(const void* row, const float* x, int64_t n) {
  assert(n % Block::kElems == 0);
  const int64_t nb = n / Block::kElems;
  float w[Block::kElems];
  LaneSum sum;
  for (int64_t i = 0; i < nb; ++i) {
    dequant_block(load_block<Block>(row, i), w);
    sum.add(w, x + i * Block::kElems, Block::kElems);
  }
  return sum.total();
}

// ---- quantizers for the 32-element formats ------------------------------------------------------

void quant_block(const float* x, BlockQ4_0& b) {
  float amax = 0.0f;
  float max = 0.0f;  // the element of largest magnitude, with its sign
  for (int j = 0; j < kQK; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  // Mapping the extreme to -8 uses all 16 levels on the side where it lies.
  const float d = max / -8;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b.d = f32_to_fp16(d);
  for (int j = 0; j < kQK / 2; ++j) {
    const float x0 = x[j] * id;
    const float x1 = x[j + kQK / 2] * id;
    const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 8.5f)));
    const int q1 = std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 8.5f)));
    b.qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

void quant_block(const float* x, BlockQ4_1& b) {
  float min = x[0];
  float max = x[0];
  for (int j = 1; j < kQK; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
  const float d = (max - min) / 15;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b.d = f32_to_fp16(d);
  b.m = f32_to_fp16(min);
  for (int j = 0; j < kQK / 2; ++j) {
    const float x0 = (x[j] - min) * id;
    const float x1 = (x[j + kQK / 2] - min) * id;
    const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 0.5f)));
    const int q1 = std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 0.5f)));
    b.qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

void quant_block(const float* x, BlockQ5_0& b) {
  float amax = 0.0f;
  float max = 0.0f;
  for (int j = 0; j < kQK; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -16;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b.d = f32_to_fp16(d);
  uint32_t qh = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    const float x0 = x[j] * id;
    const float x1 = x[j + kQK / 2] * id;
    const int q0 = std::min(31, static_cast<int>(static_cast<int8_t>(x0 + 16.5f)));
    const int q1 = std::min(31, static_cast<int>(static_cast<int8_t>(x1 + 16.5f)));
    b.qs[j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
    qh |= static_cast<uint32_t>((q0 >> 4) & 1) << j;
    qh |= static_cast<uint32_t>((q1 >> 4) & 1) << (j + kQK / 2);
  }
  store_qh(b.qh, qh);
}

void quant_block(const float* x, BlockQ5_1& b) {
  float min = x[0];
  float max = x[0];
  for (int j = 1; j < kQK; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
  const float d = (max - min) / 31;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b.d = f32_to_fp16(d);
  b.m = f32_to_fp16(min);
  uint32_t qh = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    const float x0 = (x[j] - min) * id;
    const float x1 = (x[j + kQK / 2] - min) * id;
    const int q0 = std::min(31, static_cast<int>(x0 + 0.5f));
    const int q1 = std::min(31, static_cast<int>(x1 + 0.5f));
    b.qs[j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
    qh |= static_cast<uint32_t>((q0 >> 4) & 1) << j;
    qh |= static_cast<uint32_t>((q1 >> 4) & 1) << (j + kQK / 2);
  }
  store_qh(b.qh, qh);
}

void quant_block(const float* x, BlockQ8_0& b) {
  float amax = 0.0f;
  for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  b.d = f32_to_fp16(d);
  for (int j = 0; j < kQK; ++j) b.qs[j] = static_cast<int8_t>(std::round(x[j] * id));
}

// ---- the K-quant searches -----------------------------------------------------------------------

// Fits x ~ scale * L - the_min with L in [0, nmax] by weighted least squares: start from the
// min/max grid, then try nstep+1 slightly different grids (rmin + rdelta*k extra levels over the
// range), re-solving scale and min for each assignment, and keep the one of least weighted error.
// Returns the scale; *the_min is the (non-negative) offset subtracted.
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L,
                       float* the_min, uint8_t* Laux, float rmin, float rdelta, int nstep,
                       bool use_mad) {
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    min = std::min(min, x[i]);
    max = std::max(max, x[i]);
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;  // the offset only ever lowers the grid
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(nearest_int(iscale * (x[i] - min)), 0, nmax);
    L[i] = static_cast<uint8_t>(l);
    float diff = scale * l + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest_int(iscale * (x[i] - min)), 0, nmax);
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (det > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Fits x ~ scale * (L - nmax) with L - nmax in [-nmax, nmax-1], weights x^2 (rmse_type 1 in GGML),
// trying 18 grids around the max-abs one and keeping the best least-squares fit.
float make_qx_quants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        L[i] = static_cast<int8_t>(nmax + l);
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Shared by Q4_K (nmax 15) and Q5_K (nmax 31): per 32-element sub-block scale and min by
// make_qkx2_quants, both quantized to 6 bits against the block's largest, then the levels
// recomputed against the quantized scale and min. Writes d, dmin, scales; leaves levels in L.
template <typename Block>
void quant_k_scales(const float* x, Block& b, int nmax, float rmin, float rdelta, int nstep,
                    uint8_t* L) {
  float weights[32];
  uint8_t Laux[32];
  float mins[kQKK / 32];
  float scales[kQKK / 32];
  float max_scale = 0;  // the min is subtracted, so scales are never negative
  float max_min = 0;
  for (int j = 0; j < kQKK / 32; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
    scales[j] = make_qkx2_quants(32, nmax, xs, weights, L + 32 * j, &mins[j], Laux, rmin, rdelta,
                                 nstep, false);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  std::memset(b.scales, 0, sizeof b.scales);
  for (int j = 0; j < kQKK / 32; ++j) {
    const uint8_t ls = static_cast<uint8_t>(std::min(63, nearest_int(inv_scale * scales[j])));
    const uint8_t lm = static_cast<uint8_t>(std::min(63, nearest_int(inv_min * mins[j])));
    if (j < 4) {
      b.scales[j] = ls;
      b.scales[j + 4] = lm;
    } else {
      b.scales[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      b.scales[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      b.scales[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  b.d = f32_to_fp16(max_scale / 63.f);
  b.dmin = f32_to_fp16(max_min / 63.f);
  for (int j = 0; j < kQKK / 32; ++j) {
    uint8_t sc, m;
    unpack_scale_min_k4(j, b.scales, &sc, &m);
    const float d = fp16_to_f32(b.d) * sc;
    if (d == 0.0f) continue;
    const float dm = fp16_to_f32(b.dmin) * m;
    for (int ii = 0; ii < 32; ++ii) {
      L[32 * j + ii] = static_cast<uint8_t>(std::clamp(nearest_int((x[32 * j + ii] + dm) / d), 0, nmax));
    }
  }
}

void quant_block(const float* x, BlockQ4_K& b) {
  uint8_t L[kQKK];
  quant_k_scales(x, b, 15, -1.f, 0.1f, 20, L);
  uint8_t* q = b.qs;
  for (int j = 0; j < kQKK; j += 64) {
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    q += 32;
  }
}

void quant_block(const float* x, BlockQ5_K& b) {
  uint8_t L[kQKK];
  quant_k_scales(x, b, 31, -0.5f, 0.1f, 15, L);
  std::memset(b.qh, 0, sizeof b.qh);
  uint8_t* ql = b.qs;
  uint8_t bit_lo = 1;
  uint8_t bit_hi = 2;
  for (int n = 0; n < kQKK; n += 64) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j];
      if (l1 > 15) {
        l1 -= 16;
        b.qh[j] |= bit_lo;
      }
      int l2 = L[n + j + 32];
      if (l2 > 15) {
        l2 -= 16;
        b.qh[j] |= bit_hi;
      }
      ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
    }
    bit_lo = static_cast<uint8_t>(bit_lo << 2);
    bit_hi = static_cast<uint8_t>(bit_hi << 2);
    ql += 32;
  }
}

void quant_block(const float* x, BlockQ6_K& b) {
  int8_t L[kQKK];
  float scales[kQKK / 16];
  float max_scale = 0;
  float max_abs_scale = 0;
  for (int ib = 0; ib < kQKK / 16; ++ib) {
    const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
    scales[ib] = scale;
    if (std::fabs(scale) > max_abs_scale) {
      max_abs_scale = std::fabs(scale);
      max_scale = scale;
    }
  }
  if (max_abs_scale < kGroupMaxEps) {
    std::memset(&b, 0, sizeof b);
    return;
  }
  const float iscale = -128.f / max_scale;
  b.d = f32_to_fp16(1 / iscale);
  for (int ib = 0; ib < kQKK / 16; ++ib) {
    b.scales[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
  }
  for (int j = 0; j < kQKK / 16; ++j) {
    const float d = fp16_to_f32(b.d) * b.scales[j];
    if (d == 0.0f) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = std::clamp(nearest_int(x[16 * j + ii] / d), -32, 31);
      L[16 * j + ii] = static_cast<int8_t>(l + 32);
    }
  }
  uint8_t* ql = b.ql;
  uint8_t* qh = b.qh;
  for (int j = 0; j < kQKK; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l + 0];
      const int q2 = L[j + l + 32];
      const int q3 = L[j + l + 64];
      const int q4 = L[j + l + 96];
      ql[l] = static_cast<uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
      ql[l + 32] = static_cast<uint8_t>((q2 & 0xF) | ((q4 & 0xF) << 4));
      qh[l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}

template <typename Block>
void quantize_blocks(const float* src, void* dst, int64_t n) {
  assert(n % Block::kElems == 0);
  const int64_t nb = n / Block::kElems;
  for (int64_t i = 0; i < nb; ++i) {
    Block b{};
    quant_block(src + i * Block::kElems, b);
    store_block(dst, i, b);
  }
}

// ---- integer block dot products (formulas and order in quant.h) ------------------------------------
//
// Every int32 sum is exact: |y| <= 127, so a legacy block sums at most 32 * 31 * 127 in magnitude,
// Q4_K/Q5_K 8 sub-blocks * 63 * 32 * 31 * 127 (< 2^26), their mins 8 * 63 * 2 * 16 * 127
// (< 2^21), Q6_K 16 sub-blocks * 128 * 16 * 32 * 127 (< 2^27).

float block_dot(const BlockQ4_0& w, const BlockQ8_0& a) {
  int32_t isum = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    isum += ((w.qs[j] & 0x0F) - 8) * a.qs[j];
    isum += ((w.qs[j] >> 4) - 8) * a.qs[j + kQK / 2];
  }
  return (fp16_to_f32(w.d) * fp16_to_f32(a.d)) * static_cast<float>(isum);
}

float block_dot(const BlockQ4_1& w, const BlockQ8_1& a) {
  int32_t isum = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    isum += (w.qs[j] & 0x0F) * a.qs[j];
    isum += (w.qs[j] >> 4) * a.qs[j + kQK / 2];
  }
  return (fp16_to_f32(w.d) * fp16_to_f32(a.d)) * static_cast<float>(isum) +
         fp16_to_f32(w.m) * fp16_to_f32(a.s);
}

float block_dot(const BlockQ5_0& w, const BlockQ8_0& a) {
  const uint32_t qh = load_qh(w.qh);
  int32_t isum = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
    const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    isum += (((w.qs[j] & 0x0F) | h0) - 16) * a.qs[j];
    isum += (((w.qs[j] >> 4) | h1) - 16) * a.qs[j + kQK / 2];
  }
  return (fp16_to_f32(w.d) * fp16_to_f32(a.d)) * static_cast<float>(isum);
}

float block_dot(const BlockQ5_1& w, const BlockQ8_1& a) {
  const uint32_t qh = load_qh(w.qh);
  int32_t isum = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    const int h0 = static_cast<int>((qh >> j) & 1u) << 4;
    const int h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    isum += ((w.qs[j] & 0x0F) | h0) * a.qs[j];
    isum += ((w.qs[j] >> 4) | h1) * a.qs[j + kQK / 2];
  }
  return (fp16_to_f32(w.d) * fp16_to_f32(a.d)) * static_cast<float>(isum) +
         fp16_to_f32(w.m) * fp16_to_f32(a.s);
}

float block_dot(const BlockQ8_0& w, const BlockQ8_0& a) {
  int32_t isum = 0;
  for (int j = 0; j < kQK; ++j) isum += w.qs[j] * a.qs[j];
  return (fp16_to_f32(w.d) * fp16_to_f32(a.d)) * static_cast<float>(isum);
}

float block_dot(const BlockQ4_K& w, const BlockQ8_K& a) {
  int32_t isum = 0;
  int32_t imin = 0;
  const uint8_t* q = w.qs;
  for (int chunk = 0; chunk < 4; ++chunk) {
    const int8_t* y = a.qs + 64 * chunk;
    int32_t lo = 0;
    int32_t hi = 0;
    for (int l = 0; l < 32; ++l) {
      lo += (q[l] & 0x0F) * y[l];
      hi += (q[l] >> 4) * y[l + 32];
    }
    uint8_t sc, m;
    unpack_scale_min_k4(2 * chunk, w.scales, &sc, &m);
    isum += sc * lo;
    imin += m * (a.bsums[4 * chunk] + a.bsums[4 * chunk + 1]);
    unpack_scale_min_k4(2 * chunk + 1, w.scales, &sc, &m);
    isum += sc * hi;
    imin += m * (a.bsums[4 * chunk + 2] + a.bsums[4 * chunk + 3]);
    q += 32;
  }
  return (fp16_to_f32(w.d) * a.d) * static_cast<float>(isum) -
         (fp16_to_f32(w.dmin) * a.d) * static_cast<float>(imin);
}

float block_dot(const BlockQ5_K& w, const BlockQ8_K& a) {
  int32_t isum = 0;
  int32_t imin = 0;
  const uint8_t* ql = w.qs;
  for (int chunk = 0; chunk < 4; ++chunk) {
    const int8_t* y = a.qs + 64 * chunk;
    const uint8_t bit_lo = static_cast<uint8_t>(1u << (2 * chunk));
    const uint8_t bit_hi = static_cast<uint8_t>(2u << (2 * chunk));
    int32_t lo = 0;
    int32_t hi = 0;
    for (int l = 0; l < 32; ++l) {
      lo += ((ql[l] & 0x0F) + ((w.qh[l] & bit_lo) != 0 ? 16 : 0)) * y[l];
      hi += ((ql[l] >> 4) + ((w.qh[l] & bit_hi) != 0 ? 16 : 0)) * y[l + 32];
    }
    uint8_t sc, m;
    unpack_scale_min_k4(2 * chunk, w.scales, &sc, &m);
    isum += sc * lo;
    imin += m * (a.bsums[4 * chunk] + a.bsums[4 * chunk + 1]);
    unpack_scale_min_k4(2 * chunk + 1, w.scales, &sc, &m);
    isum += sc * hi;
    imin += m * (a.bsums[4 * chunk + 2] + a.bsums[4 * chunk + 3]);
    ql += 32;
  }
  return (fp16_to_f32(w.d) * a.d) * static_cast<float>(isum) -
         (fp16_to_f32(w.dmin) * a.d) * static_cast<float>(imin);
}

float block_dot(const BlockQ6_K& w, const BlockQ8_K& a) {
  int32_t isum = 0;
  for (int half = 0; half < 2; ++half) {
    const uint8_t* ql = w.ql + 64 * half;
    const uint8_t* qh = w.qh + 32 * half;
    const int8_t* sc = w.scales + 8 * half;
    const int8_t* y = a.qs + 128 * half;
    for (int group = 0; group < 2; ++group) {  // elements l in [16 group, 16 group + 16)
      int32_t s[4] = {};
      for (int l = 16 * group; l < 16 * group + 16; ++l) {
        s[0] += (((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32) * y[l];
        s[1] += (((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32) * y[l + 32];
        s[2] += (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * y[l + 64];
        s[3] += (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * y[l + 96];
      }
      for (int k = 0; k < 4; ++k) isum += sc[group + 2 * k] * s[k];
    }
  }
  return (fp16_to_f32(w.d) * a.d) * static_cast<float>(isum);
}

// One value per block pair, accumulated over sixteen lanes by block index.
template <typename WBlock, typename ABlock>
float dot_q_blocks(const void* row, const void* qx, int64_t n) {
  static_assert(WBlock::kElems == ABlock::kElems);
  assert(n % WBlock::kElems == 0);
  const int64_t nb = n / WBlock::kElems;
  LaneSum sum;
  for (int64_t i = 0; i < nb; ++i) {
    sum.add_block(i, block_dot(load_block<WBlock>(row, i), load_block<ABlock>(qx, i)));
  }
  return sum.total();
}

// ---- unblocked float types ------------------------------------------------------------------

inline uint16_t load_u16(const void* src, int64_t i) {
  uint16_t v;
  std::memcpy(&v, static_cast<const uint8_t*>(src) + 2 * i, sizeof v);
  return v;
}

inline void store_u16(void* dst, int64_t i, uint16_t v) {
  std::memcpy(static_cast<uint8_t*>(dst) + 2 * i, &v, sizeof v);
}

// Converts 16-bit rows 256 elements at a time into a stack buffer for the shared lane sum.
template <float (*Convert)(uint16_t)>
float dot_u16(const void* row, const float* x, int64_t n) {
  constexpr int64_t kChunk = 256;  // a multiple of 16, so chunk starts stay on lane 0
  float w[kChunk];
  LaneSum sum;
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t count = std::min(kChunk, n - start);
    for (int64_t i = 0; i < count; ++i) w[i] = Convert(load_u16(row, start + i));
    sum.add(w, x + start, count);
  }
  return sum.total();
}

// Both operands 16-bit: widen 256 of each at a time, then the same lane sum as dot_row.
template <float (*Convert)(uint16_t)>
float dot_u16_u16(const void* row, const void* qx, int64_t n) {
  constexpr int64_t kChunk = 256;
  float w[kChunk];
  float x[kChunk];
  LaneSum sum;
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t count = std::min(kChunk, n - start);
    for (int64_t i = 0; i < count; ++i) {
      w[i] = Convert(load_u16(row, start + i));
      x[i] = Convert(load_u16(qx, start + i));
    }
    sum.add(w, x, count);
  }
  return sum.total();
}

}  // namespace

void dequantize_row_f32_ref(const void* src, float* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}
void quantize_row_f32_ref(const float* src, void* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}
float dot_row_f32_ref(const void* row, const float* x, int64_t n) {
  constexpr int64_t kChunk = 256;
  float w[kChunk];
  LaneSum sum;
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t count = std::min(kChunk, n - start);
    std::memcpy(w, static_cast<const uint8_t*>(row) + start * 4, static_cast<size_t>(count) * 4);
    sum.add(w, x + start, count);
  }
  return sum.total();
}

void dequantize_row_f16_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32(load_u16(src, i));
}
void quantize_row_f16_ref(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store_u16(dst, i, f32_to_fp16(src[i]));
}
float dot_row_f16_ref(const void* row, const float* x, int64_t n) {
  return dot_u16<fp16_to_f32>(row, x, n);
}

void dequantize_row_bf16_ref(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(src, i));
}
void quantize_row_bf16_ref(const float* src, void* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store_u16(dst, i, f32_to_bf16(src[i]));
}
float dot_row_bf16_ref(const void* row, const float* x, int64_t n) {
  return dot_u16<bf16_to_f32>(row, x, n);
}

#define SQ_DEFINE_BLOCK_REF_KERNELS(name, Block)                               \
  void dequantize_row_##name##_ref(const void* src, float* dst, int64_t n) {  \
    dequantize_blocks<Block>(src, dst, n);                                     \
  }                                                                            \
  void quantize_row_##name##_ref(const float* src, void* dst, int64_t n) {    \
    quantize_blocks<Block>(src, dst, n);                                       \
  }                                                                            \
  float dot_row_##name##_ref(const void* row, const float* x, int64_t n) {    \
    return dot_blocks<Block>(row, x, n);                                       \
  }

SQ_DEFINE_BLOCK_REF_KERNELS(q4_0, BlockQ4_0)
SQ_DEFINE_BLOCK_REF_KERNELS(q4_1, BlockQ4_1)
SQ_DEFINE_BLOCK_REF_KERNELS(q5_0, BlockQ5_0)
SQ_DEFINE_BLOCK_REF_KERNELS(q5_1, BlockQ5_1)
SQ_DEFINE_BLOCK_REF_KERNELS(q8_0, BlockQ8_0)
SQ_DEFINE_BLOCK_REF_KERNELS(q4_k, BlockQ4_K)
SQ_DEFINE_BLOCK_REF_KERNELS(q5_k, BlockQ5_K)
SQ_DEFINE_BLOCK_REF_KERNELS(q6_k, BlockQ6_K)

#undef SQ_DEFINE_BLOCK_REF_KERNELS

// The packed layouts (kernels/repack.h): each group of sixteen blocks (four for Q4_Kx4, Q5_Kx4) is
// unpacked into standard blocks on the stack and goes through the standard kernels' per-block
// steps, block index for block index, so the results are the unpacked type's bits.
namespace {

template <GgmlType P>
constexpr int64_t kG = pack_group_blocks(P);  // blocks per group

template <GgmlType P>
int64_t group_count(int64_t nb, int64_t g) {
  return std::min(kG<P>, nb - kG<P> * g);
}

template <GgmlType P, typename Block>
void dequantize_packed(const void* src, float* dst, int64_t n) {
  const int64_t nb = n / Block::kElems;
  Block tmp[kPackGroup];
  for (int64_t g = 0; g * kG<P> < nb; ++g) {
    unpack_group(P, src, nb, g, tmp);
    dequantize_blocks<Block>(tmp, dst + g * kG<P> * Block::kElems, group_count<P>(nb, g) * Block::kElems);
  }
}

template <GgmlType P, typename Block>
void quantize_packed(const float* src, void* dst, int64_t n) {
  const int64_t nb = n / Block::kElems;
  Block tmp[kPackGroup];
  for (int64_t g = 0; g * kG<P> < nb; ++g) {
    quantize_blocks<Block>(src + g * kG<P> * Block::kElems, tmp, group_count<P>(nb, g) * Block::kElems);
    pack_group(P, tmp, nb, g, dst);
  }
}

template <GgmlType P, typename Block>
float dot_packed(const void* row, const float* x, int64_t n) {
  const int64_t nb = n / Block::kElems;
  Block tmp[kPackGroup];
  float w[Block::kElems];
  LaneSum sum;
  for (int64_t g = 0; g * kG<P> < nb; ++g) {
    unpack_group(P, row, nb, g, tmp);
    for (int64_t i = 0; i < group_count<P>(nb, g); ++i) {
      dequant_block(tmp[i], w);
      sum.add(w, x + (g * kG<P> + i) * Block::kElems, Block::kElems);
    }
  }
  return sum.total();
}

template <GgmlType P, typename Block, typename ABlock>
float dot_q_packed(const void* row, const void* qx, int64_t n) {
  const int64_t nb = n / Block::kElems;
  Block tmp[kPackGroup];
  LaneSum sum;
  for (int64_t g = 0; g * kG<P> < nb; ++g) {
    unpack_group(P, row, nb, g, tmp);
    for (int64_t i = 0; i < group_count<P>(nb, g); ++i) {
      const int64_t b = g * kG<P> + i;
      sum.add_block(b, block_dot(tmp[i], load_block<ABlock>(qx, b)));
    }
  }
  return sum.total();
}

}  // namespace

#define SQ_DEFINE_PACKED_REF_KERNELS(name, Type, Block, ABlock)                                \
  void dequantize_row_##name##_ref(const void* src, float* dst, int64_t n) {                 \
    dequantize_packed<GgmlType::Type, Block>(src, dst, n);                                   \
  }                                                                                          \
  void quantize_row_##name##_ref(const float* src, void* dst, int64_t n) {                   \
    quantize_packed<GgmlType::Type, Block>(src, dst, n);                                     \
  }                                                                                          \
  float dot_row_##name##_ref(const void* row, const float* x, int64_t n) {                  \
    return dot_packed<GgmlType::Type, Block>(row, x, n);                                     \
  }                                                                                          \
  float dot_row_q_##name##_ref(const void* row, const void* qx, int64_t n) {                \
    return dot_q_packed<GgmlType::Type, Block, ABlock>(row, qx, n);                          \
  }

SQ_DEFINE_PACKED_REF_KERNELS(q4_0x16, Q4_0_X16, BlockQ4_0, BlockQ8_0)
SQ_DEFINE_PACKED_REF_KERNELS(q4_1x16, Q4_1_X16, BlockQ4_1, BlockQ8_1)
SQ_DEFINE_PACKED_REF_KERNELS(q5_0x16, Q5_0_X16, BlockQ5_0, BlockQ8_0)
SQ_DEFINE_PACKED_REF_KERNELS(q5_1x16, Q5_1_X16, BlockQ5_1, BlockQ8_1)
SQ_DEFINE_PACKED_REF_KERNELS(q8_0x16, Q8_0_X16, BlockQ8_0, BlockQ8_0)
SQ_DEFINE_PACKED_REF_KERNELS(q4_kx4, Q4_K_X4, BlockQ4_K, BlockQ8_K)
SQ_DEFINE_PACKED_REF_KERNELS(q5_kx4, Q5_K_X4, BlockQ5_K, BlockQ8_K)

#undef SQ_DEFINE_PACKED_REF_KERNELS

void quantize_row_q8_1_ref(const float* src, void* dst, int64_t n) {
  quantize_blocks<BlockQ8_1>(src, dst, n);
}
void quantize_row_q8_k_ref(const float* src, void* dst, int64_t n) {
  quantize_blocks<BlockQ8_K>(src, dst, n);
}
void dequantize_row_q8_1_ref(const void* src, float* dst, int64_t n) {
  dequantize_blocks<BlockQ8_1>(src, dst, n);
}
void dequantize_row_q8_k_ref(const void* src, float* dst, int64_t n) {
  dequantize_blocks<BlockQ8_K>(src, dst, n);
}

// x may be any byte offset (a slice of a quantized-activation buffer), so it is copied out too.
float dot_row_q_f32_ref(const void* row, const void* qx, int64_t n) {
  constexpr int64_t kChunk = 256;
  float w[kChunk];
  float x[kChunk];
  LaneSum sum;
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t count = std::min(kChunk, n - start);
    std::memcpy(w, static_cast<const uint8_t*>(row) + start * 4, static_cast<size_t>(count) * 4);
    std::memcpy(x, static_cast<const uint8_t*>(qx) + start * 4, static_cast<size_t>(count) * 4);
    sum.add(w, x, count);
  }
  return sum.total();
}
float dot_row_q_f16_ref(const void* row, const void* qx, int64_t n) {
  return dot_u16_u16<fp16_to_f32>(row, qx, n);
}
float dot_row_q_bf16_ref(const void* row, const void* qx, int64_t n) {
  return dot_u16_u16<bf16_to_f32>(row, qx, n);
}

#define SQ_DEFINE_DOT_Q_REF(name, Block, ActBlock)                               \
  float dot_row_q_##name##_ref(const void* row, const void* qx, int64_t n) {   \
    return dot_q_blocks<Block, ActBlock>(row, qx, n);                          \
  }

SQ_DEFINE_DOT_Q_REF(q4_0, BlockQ4_0, BlockQ8_0)
SQ_DEFINE_DOT_Q_REF(q4_1, BlockQ4_1, BlockQ8_1)
SQ_DEFINE_DOT_Q_REF(q5_0, BlockQ5_0, BlockQ8_0)
SQ_DEFINE_DOT_Q_REF(q5_1, BlockQ5_1, BlockQ8_1)
SQ_DEFINE_DOT_Q_REF(q8_0, BlockQ8_0, BlockQ8_0)
SQ_DEFINE_DOT_Q_REF(q4_k, BlockQ4_K, BlockQ8_K)
SQ_DEFINE_DOT_Q_REF(q5_k, BlockQ5_K, BlockQ8_K)
SQ_DEFINE_DOT_Q_REF(q6_k, BlockQ6_K, BlockQ8_K)

#undef SQ_DEFINE_DOT_Q_REF

namespace {

template <DotRowQFn Dot>
void dot_rows_loop(const void* w, size_t w_stride, int64_t rows, const void* qx, int64_t n,
                   float* out) {
  const auto* base = static_cast<const uint8_t*>(w);
  for (int64_t r = 0; r < rows; ++r) out[r] = Dot(base + static_cast<size_t>(r) * w_stride, qx, n);
}

template <DotRowQFn Dot>
void dot_tile_loop(const void* w, size_t w_stride, int64_t rows, const void* qx, size_t x_stride,
                   int64_t tokens, int64_t n, float* out, int64_t out_stride) {
  const auto* x = static_cast<const uint8_t*>(qx);
  for (int64_t t = 0; t < tokens; ++t) {
    dot_rows_loop<Dot>(w, w_stride, rows, x + static_cast<size_t>(t) * x_stride, n,
                       out + t * out_stride);
  }
}

}  // namespace

#define SQ_DEFINE_REF_MULTI(name)                                                                \
  void dot_rows_q_##name##_ref(const void* w, size_t w_stride, int64_t rows, const void* qx,     \
                               int64_t n, float* out) {                                          \
    dot_rows_loop<dot_row_q_##name##_ref>(w, w_stride, rows, qx, n, out);                        \
  }                                                                                              \
  void dot_tile_q_##name##_ref(const void* w, size_t w_stride, int64_t rows, const void* qx,     \
                               size_t x_stride, int64_t tokens, int64_t n, float* out,           \
                               int64_t out_stride) {                                             \
    dot_tile_loop<dot_row_q_##name##_ref>(w, w_stride, rows, qx, x_stride, tokens, n, out,       \
                                          out_stride);                                           \
  }

SQ_DEFINE_REF_MULTI(f32)
SQ_DEFINE_REF_MULTI(f16)
SQ_DEFINE_REF_MULTI(bf16)
SQ_DEFINE_REF_MULTI(q4_0)
SQ_DEFINE_REF_MULTI(q4_1)
SQ_DEFINE_REF_MULTI(q5_0)
SQ_DEFINE_REF_MULTI(q5_1)
SQ_DEFINE_REF_MULTI(q8_0)
SQ_DEFINE_REF_MULTI(q4_k)
SQ_DEFINE_REF_MULTI(q5_k)
SQ_DEFINE_REF_MULTI(q6_k)
SQ_DEFINE_REF_MULTI(q4_0x16)
SQ_DEFINE_REF_MULTI(q4_1x16)
SQ_DEFINE_REF_MULTI(q5_0x16)
SQ_DEFINE_REF_MULTI(q5_1x16)
SQ_DEFINE_REF_MULTI(q8_0x16)
SQ_DEFINE_REF_MULTI(q4_kx4)
SQ_DEFINE_REF_MULTI(q5_kx4)

#undef SQ_DEFINE_REF_MULTI

namespace {

template <GgmlType R, typename Block>
float dot_r16_row(const uint8_t* group, int64_t lane, const void* qx, int64_t n) {
  const int64_t nb = n / Block::kElems;
  LaneSum sum;
  Block blk;
  for (int64_t b = 0; b < nb; ++b) {
    unpack_block_r16(R, group, nb, lane, b, &blk);
    sum.add_block(b, block_dot(blk, load_block<BlockQ8_0>(qx, b)));
  }
  return sum.total();
}

template <GgmlType R, typename Block>
void dot_rows_r16(const void* w, size_t w_stride, int64_t rows, const void* qx, int64_t n, float* out) {
  const auto* base = static_cast<const uint8_t*>(w);
  for (int64_t r = 0; r < rows; ++r) {
    out[r] = dot_r16_row<R, Block>(base + static_cast<size_t>(r / 16) * 16 * w_stride, r % 16, qx, n);
  }
}

template <GgmlType R, typename Block>
void dot_tile_r16(const void* w, size_t w_stride, int64_t rows, const void* qx, size_t x_stride, int64_t tokens,
                  int64_t n, float* out, int64_t out_stride) {
  for (int64_t t = 0; t < tokens; ++t) {
    dot_rows_r16<R, Block>(w, w_stride, rows, static_cast<const uint8_t*>(qx) + static_cast<size_t>(t) * x_stride, n,
                           out + t * out_stride);
  }
}

}  // namespace

#define SQ_DEFINE_R16_REF_KERNELS(name, Type, Block)                                                    \
  void dot_rows_q_##name##_ref(const void* w, size_t w_stride, int64_t rows, const void* qx, int64_t n,   \
                               float* out) {                                                              \
    dot_rows_r16<GgmlType::Type, Block>(w, w_stride, rows, qx, n, out);                                   \
  }                                                                                                       \
  void dot_tile_q_##name##_ref(const void* w, size_t w_stride, int64_t rows, const void* qx,              \
                               size_t x_stride, int64_t tokens, int64_t n, float* out, int64_t out_stride) { \
    dot_tile_r16<GgmlType::Type, Block>(w, w_stride, rows, qx, x_stride, tokens, n, out, out_stride);     \
  }

SQ_DEFINE_R16_REF_KERNELS(q8_0r16, Q8_0_R16, BlockQ8_0)
SQ_DEFINE_R16_REF_KERNELS(q4_0r16, Q4_0_R16, BlockQ4_0)

#undef SQ_DEFINE_R16_REF_KERNELS

int64_t int8_peak_ref(int64_t rounds, uint32_t* checksum) {
  // 64 byte pairs a round into 16 accumulators, as one 512-bit multiply-add fills its lanes; the
  // barrier makes each round read its operands again.
  constexpr int kBytes = 64;
  uint8_t w[kBytes];
  int8_t y[kBytes];
  std::memset(w, 1, sizeof w);
  std::memset(y, 1, sizeof y);
  uint32_t acc[16] = {};
  for (int64_t r = 0; r < rounds; ++r) {
    asm volatile("" : : "r"(w), "r"(y) : "memory");
    for (int i = 0; i < kBytes; ++i) acc[i % 16] += static_cast<uint32_t>(w[i] * y[i]);
  }
  uint32_t sum = 0;
  for (uint32_t v : acc) sum += v;
  *checksum = sum;
  return rounds * kBytes;
}

constinit const KernelTable kRefTable = ref_kernel_table();

}  // namespace sq::kernels
