#include <cstring>

#include "base/fp16.h"
#include "kernels/attn.h"
#include "kernels/quant.h"

namespace sq::kernels {

namespace {

float dot_f32_ref(const float* q, const float* k, int64_t n) {
  LaneSum s;
  for (int64_t i = 0; i < n; ++i) s.lane[i & 15] += q[i] * k[i];
  return s.total();
}

float dot_f16_ref(const float* q, const uint16_t* k, int64_t n) {
  LaneSum s;
  for (int64_t i = 0; i < n; ++i) s.lane[i & 15] += q[i] * fp16_to_f32(k[i]);
  return s.total();
}

void axpy_f32_ref(float w, const float* v, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = out[i] + w * v[i];
}

void axpy_f16_ref(float w, const uint16_t* v, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = out[i] + w * fp16_to_f32(v[i]);
}

}  // namespace

const AttnKernels& attn_kernels_ref() {
  static const AttnKernels k{"ref", dot_f32_ref, dot_f16_ref, axpy_f32_ref, axpy_f16_ref};
  return k;
}

}  // namespace sq::kernels
