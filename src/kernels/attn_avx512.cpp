// AVX-512 variant of the attention kernels: sixteen lanes as one register.
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

// _mm512_cvtph_ps with an explicit source: GCC 12 warns that the plain form reads an
// uninitialised register.
__m512 cvtph(const uint16_t* p) {
  return _mm512_mask_cvtph_ps(_mm512_setzero_ps(), 0xFFFF,
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

template <typename Load>
float finish(__m512 acc, const float* q, int64_t start, int64_t n, Load load) {
  Lanes s;
  _mm512_storeu_ps(s.lane, acc);
  for (int64_t i = start; i < n; ++i) s.lane[i & 15] += q[i] * load(i);
  return s.total();
}

float dot_f32_avx512(const float* q, const float* k, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(k + i)));
  }
  return finish(acc, q, i, n, [k](int64_t j) { return k[j]; });
}

float dot_f16_avx512(const float* q, const uint16_t* k, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 kv = cvtph(k + i);
    acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_loadu_ps(q + i), kv));
  }
  return finish(acc, q, i, n, [k](int64_t j) { return half(k[j]); });
}

void axpy_f32_avx512(float w, const float* v, float* out, int64_t n) {
  const __m512 wv = _mm512_set1_ps(w);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(out + i), _mm512_mul_ps(wv, _mm512_loadu_ps(v + i))));
  }
  for (; i < n; ++i) out[i] = out[i] + w * v[i];
}

void axpy_f16_avx512(float w, const uint16_t* v, float* out, int64_t n) {
  const __m512 wv = _mm512_set1_ps(w);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 x = cvtph(v + i);
    _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(out + i), _mm512_mul_ps(wv, x)));
  }
  for (; i < n; ++i) out[i] = out[i] + w * half(v[i]);
}

float exp_scalar(float x) { return exp_ref(x); }

void exp_sub_avx512(float* x, float m, int64_t n) {
  const __m512 vm = _mm512_set1_ps(m), vmax = _mm512_set1_ps(88.0f), vmin = _mm512_set1_ps(-87.33f);
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f), round = _mm512_set1_ps(12582912.0f);
  const __m512 hi = _mm512_set1_ps(0.693145751953125f), lo = _mm512_set1_ps(1.42860682030941723e-6f);
  const float c[7] = {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_sub_ps(_mm512_loadu_ps(x + i), vm);
    const __mmask16 keep = _mm512_cmp_ps_mask(v, vmin, _CMP_GE_OQ);
    v = _mm512_min_ps(v, vmax);
    const __m512 t = _mm512_add_ps(_mm512_mul_ps(v, log2e), round);
    const __m512 k = _mm512_sub_ps(t, round);
    const __m512 r = _mm512_sub_ps(_mm512_sub_ps(v, _mm512_mul_ps(k, hi)), _mm512_mul_ps(k, lo));
    __m512 p = _mm512_set1_ps(c[0]);
    for (int j = 1; j < 7; ++j) p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c[j]));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
    _mm512_storeu_ps(x + i, _mm512_maskz_mov_ps(keep, _mm512_mul_ps(p, _mm512_castsi512_ps(e))));
  }
  for (; i < n; ++i) x[i] = exp_scalar(x[i] - m);
}

}  // namespace

const AttnKernels* attn_kernels_avx512() {
  static const AttnKernels k{"avx512", dot_f32_avx512, dot_f16_avx512, axpy_f32_avx512, axpy_f16_avx512, exp_sub_avx512};
  return &k;
}

}  // namespace sq::kernels
