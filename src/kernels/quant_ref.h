// Plain scalar reference kernels, one set per type (STYLE.md item 5). The faster variants are held
// against these; the dispatching entry points are in quant.h.
#pragma once

#include <cstdint>

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

}  // namespace sq::kernels
