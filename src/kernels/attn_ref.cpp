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

void exp_sub_ref(float* x, float m, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = exp_ref(x[i] - m);
}

void silu_mul_ref(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = (g / (1.0f + exp_ref(-g - 0.0f))) * up[i];
  }
}

void dots_f16_ref(const float* q, size_t q_stride, int64_t n_q, const uint16_t* k, size_t stride,
                  int64_t n_keys, int64_t n, float* out, size_t out_stride) {
  for (int64_t h = 0; h < n_q; ++h) {
    const float* qh = q + static_cast<size_t>(h) * q_stride;
    float* oh = out + static_cast<size_t>(h) * out_stride;
    for (int64_t p = 0; p < n_keys; ++p) oh[p] = dot_f16_ref(qh, k + static_cast<size_t>(p) * stride, n);
  }
}

void accum_f16_ref(const float* w, size_t w_stride, int64_t n_q, const uint16_t* v, size_t stride,
                   int64_t n_keys, float* out, size_t out_stride, int64_t n) {
  for (int64_t h = 0; h < n_q; ++h) {
    const float* wh = w + static_cast<size_t>(h) * w_stride;
    float* oh = out + static_cast<size_t>(h) * out_stride;
    for (int64_t p = 0; p < n_keys; ++p) axpy_f16_ref(wh[p], v + static_cast<size_t>(p) * stride, oh, n);
  }
}

}  // namespace

float exp_ref(float x) {
  constexpr float kMax = 88.0f, kMin = -87.33f;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693145751953125f;    // ln 2 with its last 12 bits zero: n * hi is exact
  constexpr float kLn2Lo = 1.42860682030941723e-6f;
  constexpr float kRound = 12582912.0f;           // 1.5 * 2^23
  if (!(x >= kMin)) return 0.0f;  // below the normal range, -inf and NaN
  x = x > kMax ? kMax : x;
  const float t = x * kLog2e + kRound;
  const float n = t - kRound;
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const auto e = static_cast<int32_t>(n);  // in [-126, 127]
  const uint32_t bits = static_cast<uint32_t>(e + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

const AttnKernels& attn_kernels_ref() {
  static const AttnKernels k{"ref", dot_f32_ref, dot_f16_ref, axpy_f32_ref, axpy_f16_ref, exp_sub_ref,
                             dots_f16_ref, accum_f16_ref, silu_mul_ref};
  return k;
}

}  // namespace sq::kernels
