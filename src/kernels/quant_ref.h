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

}  // namespace sq::kernels
