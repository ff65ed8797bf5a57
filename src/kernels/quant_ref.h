// Plain scalar reference kernels, one set per type (STYLE.md item 5). The faster variants are held
// against these; the dispatching entry points are in quant.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/isa.h"

namespace sq::kernels {

#define SQ_DECLARE_REF_KERNELS(name)                                           \
  void dequantize_row_##name##_ref(const void* src, float* dst, int64_t n);  \
  void quantize_row_##name##_ref(const float* src, void* dst, int64_t n);    \
  float dot_row_##name##_ref(const void* row, const float* x, int64_t n);

SQ_DECLARE_REF_KERNELS(f32)
SQ_DECLARE_REF_KERNELS(f16)
SQ_DECLARE_REF_KERNELS(bf16)
SQ_DECLARE_REF_KERNELS(q4_0)
SQ_DECLARE_REF_KERNELS(q4_1)
SQ_DECLARE_REF_KERNELS(q5_0)
SQ_DECLARE_REF_KERNELS(q5_1)
SQ_DECLARE_REF_KERNELS(q8_0)
SQ_DECLARE_REF_KERNELS(q4_k)
SQ_DECLARE_REF_KERNELS(q5_k)
SQ_DECLARE_REF_KERNELS(q6_k)
SQ_DECLARE_REF_KERNELS(q4_0x16)  // the packed layouts of kernels/repack.h
SQ_DECLARE_REF_KERNELS(q4_1x16)
SQ_DECLARE_REF_KERNELS(q5_0x16)
SQ_DECLARE_REF_KERNELS(q5_1x16)
SQ_DECLARE_REF_KERNELS(q8_0x16)
SQ_DECLARE_REF_KERNELS(q4_kx4)
SQ_DECLARE_REF_KERNELS(q5_kx4)

#undef SQ_DECLARE_REF_KERNELS

// Activation quantizers for the formats that are never weights here (Q8_0, F16 and BF16 activations
// use quantize_row_*_ref above), and their inverses.
void quantize_row_q8_1_ref(const float* src, void* dst, int64_t n);
void quantize_row_q8_k_ref(const float* src, void* dst, int64_t n);
void dequantize_row_q8_1_ref(const void* src, float* dst, int64_t n);
void dequantize_row_q8_k_ref(const void* src, float* dst, int64_t n);

// Dot products with activations in the weight type's vec_dot_type (quant.h gives the order).
float dot_row_q_f32_ref(const void* row, const void* qx, int64_t n);   // x: F32
float dot_row_q_f16_ref(const void* row, const void* qx, int64_t n);   // x: F16
float dot_row_q_bf16_ref(const void* row, const void* qx, int64_t n);  // x: BF16
float dot_row_q_q4_0_ref(const void* row, const void* qx, int64_t n);  // x: Q8_0
float dot_row_q_q4_1_ref(const void* row, const void* qx, int64_t n);  // x: Q8_1
float dot_row_q_q5_0_ref(const void* row, const void* qx, int64_t n);  // x: Q8_0
float dot_row_q_q5_1_ref(const void* row, const void* qx, int64_t n);  // x: Q8_1
float dot_row_q_q8_0_ref(const void* row, const void* qx, int64_t n);  // x: Q8_0
float dot_row_q_q4_k_ref(const void* row, const void* qx, int64_t n);  // x: Q8_K
float dot_row_q_q5_k_ref(const void* row, const void* qx, int64_t n);  // x: Q8_K
float dot_row_q_q6_k_ref(const void* row, const void* qx, int64_t n);  // x: Q8_K
float dot_row_q_q4_0x16_ref(const void* row, const void* qx, int64_t n);  // x: Q8_0
float dot_row_q_q4_1x16_ref(const void* row, const void* qx, int64_t n);  // x: Q8_1
float dot_row_q_q5_0x16_ref(const void* row, const void* qx, int64_t n);  // x: Q8_0
float dot_row_q_q5_1x16_ref(const void* row, const void* qx, int64_t n);  // x: Q8_1
float dot_row_q_q8_0x16_ref(const void* row, const void* qx, int64_t n);  // x: Q8_0
float dot_row_q_q4_kx4_ref(const void* row, const void* qx, int64_t n);   // x: Q8_K
float dot_row_q_q5_kx4_ref(const void* row, const void* qx, int64_t n);   // x: Q8_K

// The multi-row and tiled forms of the above (isa.h): loops over dot_row_q_*_ref.
#define SQ_DECLARE_REF_MULTI(name)                                                                \
  void dot_rows_q_##name##_ref(const void* w, size_t w_stride, int64_t rows, const void* qx,      \
                               int64_t n, float* out);                                            \
  void dot_tile_q_##name##_ref(const void* w, size_t w_stride, int64_t rows, const void* qx,      \
                               size_t x_stride, int64_t tokens, int64_t n, float* out,            \
                               int64_t out_stride);

SQ_DECLARE_REF_MULTI(f32)
SQ_DECLARE_REF_MULTI(f16)
SQ_DECLARE_REF_MULTI(bf16)
SQ_DECLARE_REF_MULTI(q4_0)
SQ_DECLARE_REF_MULTI(q4_1)
SQ_DECLARE_REF_MULTI(q5_0)
SQ_DECLARE_REF_MULTI(q5_1)
SQ_DECLARE_REF_MULTI(q8_0)
SQ_DECLARE_REF_MULTI(q4_k)
SQ_DECLARE_REF_MULTI(q5_k)
SQ_DECLARE_REF_MULTI(q6_k)
SQ_DECLARE_REF_MULTI(q4_0x16)
SQ_DECLARE_REF_MULTI(q4_1x16)
SQ_DECLARE_REF_MULTI(q5_0x16)
SQ_DECLARE_REF_MULTI(q5_1x16)
SQ_DECLARE_REF_MULTI(q8_0x16)
SQ_DECLARE_REF_MULTI(q4_kx4)
SQ_DECLARE_REF_MULTI(q5_kx4)

#undef SQ_DECLARE_REF_MULTI

// Q8_0_R16 and Q4_0_R16 (kernels/repack.h: sixteen rows interleaved): w at the start of a group,
// row r of the call in lane r % 16 of group r / 16 (groups 16 * w_stride bytes apart). Each block
// is unpacked and goes through Q8_0's (Q4_0's) per-block steps, so the results are that type's bits.
void dot_rows_q_q8_0r16_ref(const void* w, size_t w_stride, int64_t rows, const void* qx, int64_t n,
                            float* out);
void dot_tile_q_q8_0r16_ref(const void* w, size_t w_stride, int64_t rows, const void* qx,
                            size_t x_stride, int64_t tokens, int64_t n, float* out, int64_t out_stride);
void dot_rows_q_q4_0r16_ref(const void* w, size_t w_stride, int64_t rows, const void* qx, int64_t n,
                            float* out);
void dot_tile_q_q4_0r16_ref(const void* w, size_t w_stride, int64_t rows, const void* qx,
                            size_t x_stride, int64_t tokens, int64_t n, float* out, int64_t out_stride);

// The reference's int8 multiply-add peak (isa.h: Int8PeakFn): scalar multiply-adds of bytes.
int64_t int8_peak_ref(int64_t rounds, uint32_t* checksum);

// The reference table, as a constant expression so that every variant's table can start from it
// (entries a variant does not implement stay the reference's).
constexpr KernelTable ref_kernel_table() {
  KernelTable t;
  t.isa = Isa::Ref;
  t.int8_peak = int8_peak_ref;
  t.quantize[activation_index(GgmlType::F32)] = quantize_row_f32_ref;
  t.quantize[activation_index(GgmlType::F16)] = quantize_row_f16_ref;
  t.quantize[activation_index(GgmlType::BF16)] = quantize_row_bf16_ref;
  t.quantize[activation_index(GgmlType::Q8_0)] = quantize_row_q8_0_ref;
  t.quantize[activation_index(GgmlType::Q8_1)] = quantize_row_q8_1_ref;
  t.quantize[activation_index(GgmlType::Q8_K)] = quantize_row_q8_k_ref;
#define SQ_REF_WEIGHT(Type, name)                                                              \
  t.weight[weight_index(GgmlType::Type)] = {dot_row_q_##name##_ref, dot_rows_q_##name##_ref,   \
                                            dot_tile_q_##name##_ref};
  SQ_REF_WEIGHT(F32, f32)
  SQ_REF_WEIGHT(F16, f16)
  SQ_REF_WEIGHT(BF16, bf16)
  SQ_REF_WEIGHT(Q4_0, q4_0)
  SQ_REF_WEIGHT(Q4_1, q4_1)
  SQ_REF_WEIGHT(Q5_0, q5_0)
  SQ_REF_WEIGHT(Q5_1, q5_1)
  SQ_REF_WEIGHT(Q8_0, q8_0)
  SQ_REF_WEIGHT(Q4_K, q4_k)
  SQ_REF_WEIGHT(Q5_K, q5_k)
  SQ_REF_WEIGHT(Q6_K, q6_k)
  SQ_REF_WEIGHT(Q4_0_X16, q4_0x16)
  SQ_REF_WEIGHT(Q4_1_X16, q4_1x16)
  SQ_REF_WEIGHT(Q5_0_X16, q5_0x16)
  SQ_REF_WEIGHT(Q5_1_X16, q5_1x16)
  SQ_REF_WEIGHT(Q8_0_X16, q8_0x16)
  SQ_REF_WEIGHT(Q4_K_X4, q4_kx4)
  SQ_REF_WEIGHT(Q5_K_X4, q5_kx4)
#undef SQ_REF_WEIGHT
  // Rows of Q8_0_R16 and Q4_0_R16 are not addressable one by one: no dot_q.
  t.weight[weight_index(GgmlType::Q8_0_R16)] = {nullptr, dot_rows_q_q8_0r16_ref, dot_tile_q_q8_0r16_ref};
  t.weight[weight_index(GgmlType::Q4_0_R16)] = {nullptr, dot_rows_q_q4_0r16_ref, dot_tile_q_q4_0r16_ref};
  return t;
}

}  // namespace sq::kernels
