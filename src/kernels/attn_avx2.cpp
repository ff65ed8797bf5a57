// AVX2 + F16C variant of the attention kernels: sixteen lanes as two 8-lane registers.
#include <immintrin.h>

#include "kernels/attn.h"

namespace sq::kernels {

namespace {

// Nothing from a header with inline functions is used here: this file is compiled with wider
// instructions than the rest, and an inline function instantiated here could be the copy the
// linker keeps for everybody. The lane fold and the half conversion are local.
struct Lanes {
  float lane[16];
  float total() const {
    float s[16];
    for (int j = 0; j < 16; ++j) s[j] = lane[j];
    for (int width = 8; width >= 1; width /= 2) {
      for (int j = 0; j < width; ++j) s[j] = s[j] + s[j + width];
    }
    return s[0];
  }
};

float half(uint16_t h) { return _cvtsh_ss(h); }

// Adds the products of the elements past the last full group of 16 to their lanes, then folds.
template <typename Load>
float finish(__m256 lo, __m256 hi, const float* q, int64_t start, int64_t n, Load load) {
  Lanes s;
  _mm256_storeu_ps(s.lane, lo);
  _mm256_storeu_ps(s.lane + 8, hi);
  for (int64_t i = start; i < n; ++i) s.lane[i & 15] += q[i] * load(i);
  return s.total();
}

float dot_f32_avx2(const float* q, const float* k, int64_t n) {
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    lo = _mm256_add_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i)));
    hi = _mm256_add_ps(hi, _mm256_mul_ps(_mm256_loadu_ps(q + i + 8), _mm256_loadu_ps(k + i + 8)));
  }
  return finish(lo, hi, q, i, n, [k](int64_t j) { return k[j]; });
}

float dot_f16_avx2(const float* q, const uint16_t* k, int64_t n) {
  __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 k0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(k + i)));
    const __m256 k1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(k + i + 8)));
    lo = _mm256_add_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(q + i), k0));
    hi = _mm256_add_ps(hi, _mm256_mul_ps(_mm256_loadu_ps(q + i + 8), k1));
  }
  return finish(lo, hi, q, i, n, [k](int64_t j) { return half(k[j]); });
}

void axpy_f32_avx2(float w, const float* v, float* out, int64_t n) {
  const __m256 wv = _mm256_set1_ps(w);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(out + i), _mm256_mul_ps(wv, _mm256_loadu_ps(v + i))));
  }
  for (; i < n; ++i) out[i] = out[i] + w * v[i];
}

void axpy_f16_avx2(float w, const uint16_t* v, float* out, int64_t n) {
  const __m256 wv = _mm256_set1_ps(w);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + i)));
    _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(out + i), _mm256_mul_ps(wv, x)));
  }
  for (; i < n; ++i) out[i] = out[i] + w * half(v[i]);
}

float exp_scalar(float x) { return exp_ref(x); }

void exp_sub_avx2(float* x, float m, int64_t n) {
  const __m256 vm = _mm256_set1_ps(m), vmax = _mm256_set1_ps(88.0f), vmin = _mm256_set1_ps(-87.33f);
  const __m256 log2e = _mm256_set1_ps(1.44269504088896341f), round = _mm256_set1_ps(12582912.0f);
  const __m256 hi = _mm256_set1_ps(0.693145751953125f), lo = _mm256_set1_ps(1.42860682030941723e-6f);
  const float c[7] = {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
    const __m256 keep = _mm256_cmp_ps(v, vmin, _CMP_GE_OQ);
    v = _mm256_min_ps(v, vmax);
    const __m256 t = _mm256_add_ps(_mm256_mul_ps(v, log2e), round);
    const __m256 k = _mm256_sub_ps(t, round);
    const __m256 r = _mm256_sub_ps(_mm256_sub_ps(v, _mm256_mul_ps(k, hi)), _mm256_mul_ps(k, lo));
    __m256 p = _mm256_set1_ps(c[0]);
    for (int j = 1; j < 7; ++j) p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c[j]));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    _mm256_storeu_ps(x + i, _mm256_and_ps(keep, _mm256_mul_ps(p, _mm256_castsi256_ps(e))));
  }
  for (; i < n; ++i) x[i] = exp_scalar(x[i] - m);
}

void dots_f16_avx2(const float* q, const uint16_t* k, size_t stride, int64_t n_keys, int64_t n,
                   float* out) {
  for (int64_t p = 0; p < n_keys; ++p) out[p] = dot_f16_avx2(q, k + static_cast<size_t>(p) * stride, n);
}

void accum_f16_avx2(const float* w, const uint16_t* v, size_t stride, int64_t n_keys, float* out,
                    int64_t n) {
  for (int64_t p = 0; p < n_keys; ++p) axpy_f16_avx2(w[p], v + static_cast<size_t>(p) * stride, out, n);
}

}  // namespace

const AttnKernels* attn_kernels_avx2() {
  static const AttnKernels k{"avx2", dot_f32_avx2, dot_f16_avx2, axpy_f32_avx2, axpy_f16_avx2, exp_sub_avx2,
                             dots_f16_avx2, accum_f16_avx2};
  return &k;
}

}  // namespace sq::kernels
