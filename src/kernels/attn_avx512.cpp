// AVX-512 variant of the attention kernels: sixteen lanes as one register.
#include <immintrin.h>

#include "kernels/attn.h"

namespace sq::kernels {

namespace {

// Nothing from a header with inline functions is used here: this file is compiled with wider
// instructions than the rest, and an inline function instantiated here could be the copy the
// linker keeps for everybody. The lane fold and the half conversion are local.

// _mm512_cvtph_ps with an explicit source: GCC 12 warns that the plain form reads an
// uninitialised register.
__m512 cvtph(const uint16_t* p) {
  return _mm512_mask_cvtph_ps(_mm512_setzero_ps(), 0xFFFF,
                              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// The lane fold of attn.h in registers: s[j] += s[j + 8], s[j] += s[j + 4], s[j] += s[j + 2],
// s[0] + s[1]; the same additions in the same order.
float fold(__m512 acc) {
  // Masked extracts with an explicit source: GCC 12 warns that the plain forms read an
  // uninitialised register.
  const __m256 lo = _mm512_mask_extractf32x8_ps(_mm256_setzero_ps(), 0xFF, acc, 0);
  const __m256 hi = _mm512_mask_extractf32x8_ps(_mm256_setzero_ps(), 0xFF, acc, 1);
  const __m256 a = _mm256_add_ps(lo, hi);
  const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
  return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}

__mmask16 tail_mask(int64_t count) { return static_cast<__mmask16>((1u << count) - 1); }

// The last n % 16 elements go to lanes 0 .. count-1; the other lanes are left as they are (a masked
// add, so that even the sign of a zero lane is the reference's).
__m512 cvtph_tail(__mmask16 m, const uint16_t* p) {
  return _mm512_mask_cvtph_ps(_mm512_setzero_ps(), 0xFFFF, _mm256_maskz_loadu_epi16(m, p));
}

float dot_f32_avx512(const float* q, const float* k, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(k + i)));
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, q + i), _mm512_maskz_loadu_ps(m, k + i));
    acc = _mm512_mask_add_ps(acc, m, acc, p);
  }
  return fold(acc);
}

float dot_f16_avx512(const float* q, const uint16_t* k, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 kv = cvtph(k + i);
    acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_loadu_ps(q + i), kv));
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, q + i), cvtph_tail(m, k + i));
    acc = _mm512_mask_add_ps(acc, m, acc, p);
  }
  return fold(acc);
}

void axpy_f32_avx512(float w, const float* v, float* out, int64_t n) {
  const __m512 wv = _mm512_set1_ps(w);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(out + i), _mm512_mul_ps(wv, _mm512_loadu_ps(v + i))));
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 o = _mm512_maskz_loadu_ps(m, out + i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_add_ps(o, _mm512_mul_ps(wv, _mm512_maskz_loadu_ps(m, v + i))));
  }
}

void axpy_f16_avx512(float w, const uint16_t* v, float* out, int64_t n) {
  const __m512 wv = _mm512_set1_ps(w);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 x = cvtph(v + i);
    _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_loadu_ps(out + i), _mm512_mul_ps(wv, x)));
  }
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 o = _mm512_maskz_loadu_ps(m, out + i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_add_ps(o, _mm512_mul_ps(wv, cvtph_tail(m, v + i))));
  }
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

void dots_f16_avx512(const float* q, const uint16_t* k, size_t stride, int64_t n_keys, int64_t n,
                     float* out) {
  if (n > 16) {
    for (int64_t p = 0; p < n_keys; ++p) out[p] = dot_f16_avx512(q, k + static_cast<size_t>(p) * stride, n);
    return;
  }
  // One register per key, q loaded once (the tail path of dot_f16_avx512 with i = 0).
  const __mmask16 m = n == 16 ? static_cast<__mmask16>(0xFFFF) : tail_mask(n);
  const __m512 qv = _mm512_maskz_loadu_ps(m, q);
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t p = 0; p < n_keys; ++p) {
    const __m512 prod = _mm512_mul_ps(qv, cvtph_tail(m, k + static_cast<size_t>(p) * stride));
    out[p] = fold(_mm512_mask_add_ps(zero, m, zero, prod));
  }
}

void accum_f16_avx512(const float* w, const uint16_t* v, size_t stride, int64_t n_keys, float* out,
                      int64_t n) {
  // Sixteen columns at a time held in a register across all keys: each element still sees its
  // additions in increasing key order.
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail_mask(n - i);
    __m512 acc = _mm512_maskz_loadu_ps(m, out + i);
    const uint16_t* col = v + i;
    for (int64_t p = 0; p < n_keys; ++p) {
      const __m512 x = cvtph_tail(m, col + static_cast<size_t>(p) * stride);
      acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(w[p]), x));
    }
    _mm512_mask_storeu_ps(out + i, m, acc);
  }
}

}  // namespace

const AttnKernels* attn_kernels_avx512() {
  static const AttnKernels k{"avx512", dot_f32_avx512, dot_f16_avx512, axpy_f32_avx512, axpy_f16_avx512, exp_sub_avx512,
                             dots_f16_avx512, accum_f16_avx512};
  return &k;
}

}  // namespace sq::kernels
