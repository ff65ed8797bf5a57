// AVX2 + F16C variant of the attention kernels: sixteen lanes as two 8-lane registers.
#include <immintrin.h>

#include <cstring>

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

// exp(v) for eight lanes: exp_ref's operations, lane by lane.
[[gnu::always_inline]] inline __m256 exp8(__m256 v) {
  const __m256 vmax = _mm256_set1_ps(88.0f), vmin = _mm256_set1_ps(-87.33f);
  const __m256 log2e = _mm256_set1_ps(1.44269504088896341f), round = _mm256_set1_ps(12582912.0f);
  const __m256 hi = _mm256_set1_ps(0.693145751953125f), lo = _mm256_set1_ps(1.42860682030941723e-6f);
  const float c[7] = {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f};
  const __m256 keep = _mm256_cmp_ps(v, vmin, _CMP_GE_OQ);
  v = _mm256_min_ps(v, vmax);
  const __m256 t = _mm256_add_ps(_mm256_mul_ps(v, log2e), round);
  const __m256 k = _mm256_sub_ps(t, round);
  const __m256 r = _mm256_sub_ps(_mm256_sub_ps(v, _mm256_mul_ps(k, hi)), _mm256_mul_ps(k, lo));
  __m256 p = _mm256_set1_ps(c[0]);
  for (int j = 1; j < 7; ++j) p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c[j]));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(keep, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

void exp_sub_avx2(float* x, float m, int64_t n) {
  const __m256 vm = _mm256_set1_ps(m);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm)));
  // The last n % 8 through a zero-padded copy rather than exp_ref one at a time (attention's rows
  // of scores end in one).
  if (i < n) {
    alignas(32) float tail[8] = {};
    std::memcpy(tail, x + i, static_cast<size_t>(n - i) * sizeof(float));
    _mm256_store_ps(tail, exp8(_mm256_sub_ps(_mm256_load_ps(tail), vm)));
    std::memcpy(x + i, tail, static_cast<size_t>(n - i) * sizeof(float));
  }
}

void silu_mul_avx2(const float* gate, const float* up, float* out, int64_t n) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  auto step = [&](const float* g8, const float* u8, float* o8) {
    const __m256 g = _mm256_loadu_ps(g8);
    const __m256 e = exp8(_mm256_sub_ps(_mm256_xor_ps(g, sign), zero));
    _mm256_storeu_ps(o8, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(u8)));
  };
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) step(gate + i, up + i, out + i);
  if (i < n) {
    // The last n % 8 through zero-padded copies.
    alignas(32) float g[8] = {}, u[8] = {}, o[8];
    const size_t bytes = static_cast<size_t>(n - i) * sizeof(float);
    std::memcpy(g, gate + i, bytes);
    std::memcpy(u, up + i, bytes);
    step(g, u, o);
    std::memcpy(out + i, o, bytes);
  }
}

__m256 cvt8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

// Four keys' sixteen lanes (lo[j]: lanes 0-7 of key j, hi[j]: lanes 8-15) folded at once: the
// additions of Lanes::total, each on the same two operands. Key j's total ends in element j.
[[gnu::always_inline]] inline __m128 fold4(const __m256* lo, const __m256* hi) {
  __m256 t[4];
  for (int j = 0; j < 4; ++j) t[j] = _mm256_add_ps(lo[j], hi[j]);  // s[j] + s[j + 8]
  // s[j] + s[j + 4]: 128-bit half r of u[i] holds key 2 * i + r.
  const __m256 u0 = _mm256_add_ps(_mm256_permute2f128_ps(t[0], t[1], 0x20), _mm256_permute2f128_ps(t[0], t[1], 0x31));
  const __m256 u1 = _mm256_add_ps(_mm256_permute2f128_ps(t[2], t[3], 0x20), _mm256_permute2f128_ps(t[2], t[3], 0x31));
  // s[j] + s[j + 2], pairs of lanes as doubles: half r holds keys r and 2 + r.
  const __m256d x = _mm256_castps_pd(u0), y = _mm256_castps_pd(u1);
  const __m256 v = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(x, y)), _mm256_castpd_ps(_mm256_unpackhi_pd(x, y)));
  // s[0] + s[1]: elements 0, 1 of half r hold keys r and 2 + r.
  const __m256 e = _mm256_add_ps(_mm256_shuffle_ps(v, v, 0x88), _mm256_shuffle_ps(v, v, 0xDD));
  return _mm256_castps256_ps128(_mm256_permutevar8x32_ps(e, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0)));
}

void dots_f16_avx2(const float* q, size_t q_stride, int64_t n_q, const uint16_t* k, size_t stride,
                   int64_t n_keys, int64_t n, float* out, size_t out_stride) {
  for (int64_t h = 0; h < n_q; ++h) {
    const float* qh = q + static_cast<size_t>(h) * q_stride;
    float* oh = out + static_cast<size_t>(h) * out_stride;
    int64_t p = 0;
    if (n % 16 == 0) {
      // Four keys at a time, every key's lanes starting at +0 as dot_f16_avx2's do.
      for (; p + 4 <= n_keys; p += 4) {
        const uint16_t* kp = k + static_cast<size_t>(p) * stride;
        __m256 lo[4], hi[4];
        for (int j = 0; j < 4; ++j) lo[j] = hi[j] = _mm256_setzero_ps();
        for (int64_t i = 0; i < n; i += 16) {
          const __m256 q0 = _mm256_loadu_ps(qh + i), q1 = _mm256_loadu_ps(qh + i + 8);
          for (int j = 0; j < 4; ++j) {
            const uint16_t* row = kp + static_cast<size_t>(j) * stride + i;
            lo[j] = _mm256_add_ps(lo[j], _mm256_mul_ps(q0, cvt8(row)));
            hi[j] = _mm256_add_ps(hi[j], _mm256_mul_ps(q1, cvt8(row + 8)));
          }
        }
        _mm_storeu_ps(oh + p, fold4(lo, hi));
      }
    }
    for (; p < n_keys; ++p) oh[p] = dot_f16_avx2(qh, k + static_cast<size_t>(p) * stride, n);
  }
}

// NH queries by C registers of eight columns, held in registers across all the keys; each key
// row is converted once for the NH queries.
template <int NH, int C>
void accum_block(const float* w, size_t w_stride, const uint16_t* v, size_t stride, int64_t n_keys,
                 float* out, size_t out_stride) {
  __m256 acc[NH][C];
#pragma GCC unroll 4
  for (int h = 0; h < NH; ++h) {
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[h][c] = _mm256_loadu_ps(out + static_cast<size_t>(h) * out_stride + 8 * c);
  }
  for (int64_t p = 0; p < n_keys; ++p) {
    const uint16_t* row = v + static_cast<size_t>(p) * stride;
    __m256 x[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) x[c] = cvt8(row + 8 * c);
#pragma GCC unroll 4
    for (int h = 0; h < NH; ++h) {
      const __m256 wv = _mm256_set1_ps(w[static_cast<size_t>(h) * w_stride + static_cast<size_t>(p)]);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[h][c] = _mm256_add_ps(acc[h][c], _mm256_mul_ps(wv, x[c]));
    }
  }
#pragma GCC unroll 4
  for (int h = 0; h < NH; ++h) {
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) _mm256_storeu_ps(out + static_cast<size_t>(h) * out_stride + 8 * c, acc[h][c]);
  }
}

using AccumBlock = void (*)(const float*, size_t, const uint16_t*, size_t, int64_t, float*, size_t);
constexpr AccumBlock kAccum[2][4] = {{accum_block<1, 1>, accum_block<1, 2>, accum_block<1, 3>, accum_block<1, 4>},
                                     {accum_block<2, 1>, accum_block<2, 2>, accum_block<2, 3>, accum_block<2, 4>}};

void accum_f16_avx2(const float* w, size_t w_stride, int64_t n_q, const uint16_t* v, size_t stride,
                    int64_t n_keys, float* out, size_t out_stride, int64_t n) {
  // Two queries by up to 32 columns at a time, and the columns past the last eight one by one:
  // each element still sees its additions in increasing key order.
  const int64_t vec = n / 8 * 8;
  for (int64_t h = 0; h < n_q; h += 2) {
    const int64_t nh = n_q - h < 2 ? n_q - h : 2;
    for (int64_t i = 0; i < vec; i += 32) {
      const int64_t regs = (vec - i < 32 ? vec - i : 32) / 8;
      kAccum[nh - 1][regs - 1](w + static_cast<size_t>(h) * w_stride, w_stride, v + i, stride, n_keys,
                               out + static_cast<size_t>(h) * out_stride + i, out_stride);
    }
    for (int64_t g = h; g < h + nh; ++g) {
      const float* wg = w + static_cast<size_t>(g) * w_stride;
      float* og = out + static_cast<size_t>(g) * out_stride;
      for (int64_t p = 0; p < n_keys; ++p) {
        const uint16_t* row = v + static_cast<size_t>(p) * stride;
        for (int64_t i = vec; i < n; ++i) og[i] = og[i] + wg[p] * half(row[i]);
      }
    }
  }
}

}  // namespace

const AttnKernels* attn_kernels_avx2() {
  static const AttnKernels k{"avx2", dot_f32_avx2, dot_f16_avx2, axpy_f32_avx2, axpy_f16_avx2, exp_sub_avx2,
                             dots_f16_avx2, accum_f16_avx2, silu_mul_avx2};
  return &k;
}

}  // namespace sq::kernels
