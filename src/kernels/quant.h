// Conversions between f32 and the stored tensor types, and the dot products the matrix product is
// built on. These are kernels: they never throw and never allocate; callers (the ops) validate
// types and sizes first, and a violated precondition here is an assert.
//
// Two dot products exist. Each is defined by its order of operations, not only its value
// (DESIGN.md, invariants 2-3); nothing else (batch, threads, alignment of the row or of x) changes
// the result, and a SIMD variant reproduces it bit for bit.
//
// dot_row (f32 activations, exact): element i of the row is dequantized to f32 exactly as
// dequantize_row does, the product w[i] * x[i] is rounded to f32 and added to lane i % 16 of
// sixteen f32 partial sums, in increasing i, and the lanes are folded by a fixed tree:
//     s[j] += s[j + 8] (j < 8), s[j] += s[j + 4] (j < 4), s[j] += s[j + 2] (j < 2), s[0] + s[1].
//
// dot_row_q (quantized activations, what llama.cpp computes): the activation row is first
// converted once, by quantize_activation, to the weight type's vec_dot_type (GGML's pairing):
//     F32 -> F32, F16 -> F16, BF16 -> BF16, Q4_0/Q5_0/Q8_0 -> Q8_0, Q4_1/Q5_1 -> Q8_1,
//     Q4_K/Q5_K/Q6_K -> Q8_K.
// Then:
//   * F32, F16, BF16 weights: as dot_row, with x[i] replaced by the converted activation widened
//     back to f32. For F16 and BF16 the product of two half values is exact in f32, so only the
//     lane additions round.
//   * Block types: for weight block b (and the activation block covering the same elements) an
//     int32 sum is computed exactly from the integer quants (its order is irrelevant: it cannot
//     overflow), turned into one f32 value v[b] by the formula below, and v[b] is added to lane
//     b % 16 of sixteen f32 partial sums in increasing b; the lanes are folded by the tree above.
//     fp16 scales are widened to f32 first; every product and sum below rounds to f32 in the order
//     the parentheses give, with no fused multiply-add; (float) is round-to-nearest-even.
//       Q4_0 x Q8_0: isum = sum_j (q[j] - 8) * y[j]          v = (dw * dy) * (float)isum
//       Q5_0 x Q8_0: isum = sum_j (q[j] - 16) * y[j]         v = (dw * dy) * (float)isum
//       Q8_0 x Q8_0: isum = sum_j q[j] * y[j]                v = (dw * dy) * (float)isum
//       Q4_1 x Q8_1, Q5_1 x Q8_1: isum = sum_j q[j] * y[j]   v = (dw * dy) * (float)isum + mw * sy
//       Q4_K x Q8_K, Q5_K x Q8_K (sub-blocks s of 32 with 6-bit scale sc[s] and min m[s]):
//         isum = sum_s sc[s] * sum_{j in s} q[j] * y[j]
//         imin = sum_s m[s] * (bsums[2s] + bsums[2s + 1])
//         v = (dw * dy) * (float)isum - (dminw * dy) * (float)imin
//       Q6_K x Q8_K (sub-blocks s of 16 with signed 8-bit scale sc[s]):
//         isum = sum_s sc[s] * sum_{j in s} (q[j] - 32) * y[j]
//         v = (dw * dy) * (float)isum
//     Here q are the weight quants as the block layouts in blocks.h order them, y the activation
//     quants, dy the activation block scale (fp16 for Q8_0/Q8_1, f32 for Q8_K), sy the Q8_1 block's
//     fp16 s, and dw, mw, dminw the weight block's scales.
//
// quantize_activation, dot_row_q, dot_rows_q and dot_tile_q run the instruction-set variant chosen
// at start-up (isa.h: ref, avx2, avx512, avx512vnni; SQUEEZE_ISA forces one). Every variant gives
// the reference's bits for finite inputs, which tests/kernels/isa_test.cpp checks with memcmp. The
// variants rely on the activation quants lying in [-127, 127] (what the Q8 quantizers produce):
// their 8-bit products are summed in 16 bits before widening, which cannot saturate then.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/types.h"

namespace sq::kernels {

// Converts n elements (a multiple of the block size) of one row to f32.
using DequantizeRowFn = void (*)(const void* src, float* dst, int64_t n);
// Converts n floats (a multiple of the block size) into blocks.
using QuantizeRowFn = void (*)(const float* src, void* dst, int64_t n);
// Dot product of n elements of one stored row with f32 activations, in the order described above.
using DotRowFn = float (*)(const void* row, const float* x, int64_t n);
// Dot product of n elements of one stored row with an activation row already converted to the
// type's vec_dot_type, in the order described above.
using DotRowQFn = float (*)(const void* row, const void* qx, int64_t n);

// One entry per type squeeze computes with (GGML's CPU type-traits table, in miniature).
struct TypeTraits {
  GgmlType type;
  int64_t block_elems;
  size_t block_bytes;
  DequantizeRowFn to_float;
  QuantizeRowFn from_float;
  DotRowFn dot;           // f32 activations
  DotRowQFn dot_q;        // activations in vec_dot_type
  GgmlType vec_dot_type;  // the activation format `dot_q` takes (GGML's pairing)
};

// The reference traits of a type, or nullptr when type_supported(t) is false.
const TypeTraits* type_traits(GgmlType t);

// Bytes of a row of n elements; n must be a multiple of the block size.
size_t row_bytes(GgmlType type, int64_t n);

// Dispatch through the traits table. Types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
// Q5_K, Q6_K; n a multiple of the block size.
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);
// The quantizers follow GGML's reference quantizers (quantize_row_*_ref, without an importance
// matrix), so a file written by squeeze has the quality of one written by llama.cpp.
void quantize_row(GgmlType type, const float* src, void* dst, int64_t n);
float dot_row(GgmlType type, const void* row, const float* x, int64_t n);

// The activation format weights of `weight_type` pair with in dot_row_q (table above).
GgmlType vec_dot_type(GgmlType weight_type);

// Whether `t` is an activation format quantize_activation produces: F32, F16, BF16, Q8_0, Q8_1,
// Q8_K.
bool activation_type_supported(GgmlType t);

// Converts n activations (a multiple of the format's block size; any n for F32, F16, BF16) into
// row_bytes(vec_type, n) bytes. Deterministic, elementwise or blockwise, so the bytes of a block
// depend only on that block's floats. Q8_0 and Q8_1 follow GGML's quantize_row_q8_0_ref and
// quantize_row_q8_1_ref: d = max|x| / 127, q = round-half-away(x * (1 / d)); Q8_1 also stores
// s = fp16(d * sum(q)). Q8_K follows quantize_row_q8_K_ref: with `max` the element of largest
// magnitude (the first one on ties), iscale = -127 / max, q = min(127, round-half-even(iscale * x)),
// d = 1 / iscale (f32, so negative when max is positive), bsums the sums of q over 16 elements;
// an all-zero block gives d = 0 and zero quants. F16 and BF16 round to nearest even.
void quantize_activation(GgmlType vec_type, const float* x, void* out, int64_t n);

// The floats an activation row stands for (q * d per element), for tests and diagnostics.
void dequantize_activation(GgmlType vec_type, const void* qx, float* out, int64_t n);

// Dot product of a row of `weight_type` with activations quantize_activation converted to
// vec_dot_type(weight_type), in the order described at the top of this file. For F32 weights
// (qx holding n floats, any alignment) it gives dot_row's bits.
float dot_row_q(GgmlType weight_type, const void* row, const void* qx, int64_t n);

// dot_row_q for `rows` consecutive rows (row r at w + r * w_stride) and one token: out[r].
void dot_rows_q(GgmlType weight_type, const void* w, size_t w_stride, int64_t rows, const void* qx,
                int64_t n, float* out);

// dot_row_q for `rows` rows and `tokens` tokens (token t's activations at qx + t * x_stride):
// out[t * out_stride + r]. Tiled over rows and tokens so each weight block loaded serves several
// tokens; every output has dot_row_q's bits whatever the tile it falls in.
void dot_tile_q(GgmlType weight_type, const void* w, size_t w_stride, int64_t rows, const void* qx,
                size_t x_stride, int64_t tokens, int64_t n, float* out, int64_t out_stride);

// out[r] = dot_row(row r of w, x) for r in [r0, r1); w holds consecutive rows of n elements.
// Work is split over rows only, so any partition of [0, rows) over threads gives the same outputs.
void matvec_rows(GgmlType type, const void* w, const float* x, float* out, int64_t n, int64_t r0,
                 int64_t r1);

// The sixteen-lane accumulation every dot product shares. `add` takes `count` consecutive products
// (any count) starting at an element index that is a multiple of 16, as every block boundary is;
// `add_block` takes the per-block values of dot_row_q.
struct LaneSum {
  float lane[16] = {};

  void add(const float* w, const float* x, int64_t count) {
    for (int64_t i = 0; i < count; ++i) lane[i & 15] += w[i] * x[i];
  }
  // Adds the value of block `index` (of a row's blocks, counted from 0) to lane index % 16.
  void add_block(int64_t index, float v) { lane[index & 15] += v; }
  float total() const {
    float s[16];
    for (int j = 0; j < 16; ++j) s[j] = lane[j];
    for (int width = 8; width >= 1; width /= 2) {
      for (int j = 0; j < width; ++j) s[j] = s[j] + s[j + width];
    }
    return s[0];
  }
};

}  // namespace sq::kernels
