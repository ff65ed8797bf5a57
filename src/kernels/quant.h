// Conversions between f32 and the stored tensor types, and the dot product the matrix-vector
// product is built on. These are kernels: they never throw and never allocate; callers (the ops)
// validate types and sizes first, and a violated precondition here is an assert.
//
// The dot product is defined by its order of operations, not only its value (DESIGN.md,
// invariants 2-3): element i of the row is dequantized to f32 exactly as dequantize_row does, the
// product w[i] * x[i] is rounded to f32 and added to lane i % 16 of sixteen f32 partial sums, in
// increasing i, and the lanes are folded by a fixed tree:
//     s[j] += s[j + 8] (j < 8), s[j] += s[j + 4] (j < 4), s[j] += s[j + 2] (j < 2), s[0] + s[1].
// Nothing else (batch, threads, alignment of x) changes the result, and a SIMD variant with one
// 16-lane register (or two 8-lane ones) reproduces it bit for bit.
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

// One entry per type squeeze computes with (GGML's CPU type-traits table, in miniature).
struct TypeTraits {
  GgmlType type;
  int64_t block_elems;
  size_t block_bytes;
  DequantizeRowFn to_float;
  QuantizeRowFn from_float;
  DotRowFn dot;
  GgmlType vec_dot_type;  // the activation format `dot` takes: F32 for every reference kernel
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

// out[r] = dot_row(row r of w, x) for r in [r0, r1); w holds consecutive rows of n elements.
// Work is split over rows only, so any partition of [0, rows) over threads gives the same outputs.
void matvec_rows(GgmlType type, const void* w, const float* x, float* out, int64_t n, int64_t r0,
                 int64_t r1);

// The sixteen-lane accumulation every dot product shares. `add` takes `count` consecutive products
// (any count) starting at an element index that is a multiple of 16, as every block boundary is.
struct LaneSum {
  float lane[16] = {};

  void add(const float* w, const float* x, int64_t count) {
    for (int64_t i = 0; i < count; ++i) lane[i & 15] += w[i] * x[i];
  }
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
