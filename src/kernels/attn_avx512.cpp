// AVX-512 variant of the attention kernels: sixteen lanes as one register.
#include <immintrin.h>

#include <cstring>

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

// exp(v) for sixteen lanes: exp_ref's operations, lane by lane.
[[gnu::always_inline]] inline __m512 exp16(__m512 v) {
  const __m512 vmax = _mm512_set1_ps(88.0f), vmin = _mm512_set1_ps(-87.33f);
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f), round = _mm512_set1_ps(12582912.0f);
  const __m512 hi = _mm512_set1_ps(0.693145751953125f), lo = _mm512_set1_ps(1.42860682030941723e-6f);
  const float c[7] = {1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f};
  const __mmask16 keep = _mm512_cmp_ps_mask(v, vmin, _CMP_GE_OQ);
  v = _mm512_min_ps(v, vmax);
  const __m512 t = _mm512_add_ps(_mm512_mul_ps(v, log2e), round);
  const __m512 k = _mm512_sub_ps(t, round);
  const __m512 r = _mm512_sub_ps(_mm512_sub_ps(v, _mm512_mul_ps(k, hi)), _mm512_mul_ps(k, lo));
  __m512 p = _mm512_set1_ps(c[0]);
  for (int j = 1; j < 7; ++j) p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c[j]));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
  return _mm512_maskz_mov_ps(keep, _mm512_mul_ps(p, _mm512_castsi512_ps(e)));
}

void exp_sub_avx512(float* x, float m, int64_t n) {
  const __m512 vm = _mm512_set1_ps(m);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm)));
  // The last n % 16 in masked lanes rather than exp_ref one at a time: attention's rows of scores
  // end in one (a tenth of TinyLlama's attention time at a context of 64 went to them).
  if (i < n) {
    const __mmask16 t = tail_mask(n - i);
    _mm512_mask_storeu_ps(x + i, t, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(t, x + i), vm)));
  }
}

void silu_mul_avx512(const float* gate, const float* up, float* out, int64_t n) {
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f), sign = _mm512_set1_ps(-0.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 g = _mm512_loadu_ps(gate + i);
    const __m512 e = exp16(_mm512_sub_ps(_mm512_xor_ps(g, sign), zero));
    _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_loadu_ps(up + i)));
  }
  if (i < n) {
    const __mmask16 t = tail_mask(n - i);
    const __m512 g = _mm512_maskz_loadu_ps(t, gate + i);
    const __m512 e = exp16(_mm512_sub_ps(_mm512_xor_ps(g, sign), zero));
    _mm512_mask_storeu_ps(out + i, t, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(t, up + i)));
  }
}

// GCC 12 warns that the plain forms of these shuffles read an uninitialised register: masked forms
// with every lane selected.
template <int Imm>
__m512 quarters(__m512 a, __m512 b) {
  return _mm512_mask_shuffle_f32x4(_mm512_setzero_ps(), 0xFFFF, a, b, Imm);
}
template <int Imm>
__m512 pairs(__m512 a, __m512 b) {
  return _mm512_mask_shuffle_ps(_mm512_setzero_ps(), 0xFFFF, a, b, Imm);
}

// Sixteen keys' lane sums folded at once, a[j] holding key j's sixteen lanes: the additions of
// fold(), each on the same two operands, done for sixteen keys with a register per step. Key j's
// total ends in lane j.
[[gnu::always_inline]] inline __m512 fold16(const __m512* a) {
  // s[j] + s[j + 8]: 128-bit quarters 0 + 2 and 1 + 3, two keys per register.
  __m512 b[8];
  for (int m = 0; m < 8; ++m) {
    b[m] = _mm512_add_ps(quarters<0x44>(a[2 * m], a[2 * m + 1]), quarters<0xEE>(a[2 * m], a[2 * m + 1]));
  }
  // s[j] + s[j + 4]: quarter r of c holds key 4 * i + r's four sums.
  __m512 c[4];
  for (int i = 0; i < 4; ++i) {
    c[i] = _mm512_add_ps(quarters<0x88>(b[2 * i], b[2 * i + 1]), quarters<0xDD>(b[2 * i], b[2 * i + 1]));
  }
  // s[j] + s[j + 2], pairs of lanes as doubles.
  __m512 d[2];
  for (int i = 0; i < 2; ++i) {
    const __m512d x = _mm512_castps_pd(c[2 * i]), y = _mm512_castps_pd(c[2 * i + 1]);
    const __m512d zero = _mm512_setzero_pd();
    d[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_mask_unpacklo_pd(zero, 0xFF, x, y)),
                         _mm512_castpd_ps(_mm512_mask_unpackhi_pd(zero, 0xFF, x, y)));
  }
  // s[0] + s[1]: lane 4 * r + m now holds key r + 4 * m.
  const __m512 e = _mm512_add_ps(pairs<0x88>(d[0], d[1]), pairs<0xDD>(d[0], d[1]));
  return _mm512_mask_permutexvar_ps(_mm512_setzero_ps(), 0xFFFF,
                                    _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), e);
}

// The longest head dot_f16's sixteen-key path takes (its key rows are converted to a buffer on
// the stack).
constexpr int64_t kMaxGroupDim = 256;

// Queries against sixteen keys, n a multiple of 16: key row j's element i at row(j)[i]; every
// key's lanes start at +0 and take the products chunk by chunk, as dot_f16_avx512 does.
template <class Row>
void dots16(const float* q, size_t q_stride, int64_t n_q, int64_t n, Row row, float* out, size_t out_stride) {
  for (int64_t h = 0; h < n_q; ++h) {
    const float* qh = q + static_cast<size_t>(h) * q_stride;
    __m512 a[16];
#pragma GCC unroll 16
    for (__m512& x : a) x = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
      const __m512 qv = _mm512_loadu_ps(qh + i);
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) a[j] = _mm512_add_ps(a[j], _mm512_mul_ps(qv, row(j, i)));
    }
    _mm512_storeu_ps(out + static_cast<size_t>(h) * out_stride, fold16(a));
  }
}

void dots_f16_avx512(const float* q, size_t q_stride, int64_t n_q, const uint16_t* k, size_t stride,
                     int64_t n_keys, int64_t n, float* out, size_t out_stride) {
  int64_t p = 0;
  if (n % 16 == 0 && n <= kMaxGroupDim) {
    alignas(64) float rows[16 * kMaxGroupDim];
    for (; p + 16 <= n_keys; p += 16) {
      const uint16_t* kp = k + static_cast<size_t>(p) * stride;
      if (n_q == 1) {
        dots16(q, q_stride, n_q, n, [&](int j, int64_t i) { return cvtph(kp + static_cast<size_t>(j) * stride + i); },
               out + p, out_stride);
      } else {
        // Converted once for all the queries.
        for (int j = 0; j < 16; ++j) {
          for (int64_t i = 0; i < n; i += 16) _mm512_store_ps(rows + j * n + i, cvtph(kp + static_cast<size_t>(j) * stride + i));
        }
        dots16(q, q_stride, n_q, n, [&](int j, int64_t i) { return _mm512_load_ps(rows + j * n + i); }, out + p,
               out_stride);
      }
    }
    if (p < n_keys) {
      // The last n_keys % 16 keys as a block too, its missing rows zero and their sums dropped: one
      // fold16 rather than a fold per key and query (a tenth of TinyLlama's attention time at a
      // context of 64). Each kept key's sums are the ones the block above would give it.
      const int64_t count = n_keys - p;
      const uint16_t* kp = k + static_cast<size_t>(p) * stride;
      for (int j = 0; j < 16; ++j) {
        for (int64_t i = 0; i < n; i += 16) {
          _mm512_store_ps(rows + j * n + i, j < count ? cvtph(kp + static_cast<size_t>(j) * stride + i) : _mm512_setzero_ps());
        }
      }
      alignas(64) float sums[16];
      for (int64_t h = 0; h < n_q; ++h) {
        dots16(q + static_cast<size_t>(h) * q_stride, q_stride, 1, n,
               [&](int j, int64_t i) { return _mm512_load_ps(rows + j * n + i); }, sums, 16);
        std::memcpy(out + static_cast<size_t>(h) * out_stride + p, sums, static_cast<size_t>(count) * sizeof(float));
      }
      p = n_keys;
    }
  }
  for (int64_t h = 0; h < n_q; ++h) {
    const float* qh = q + static_cast<size_t>(h) * q_stride;
    float* oh = out + static_cast<size_t>(h) * out_stride;
    if (n > 16) {
      for (int64_t r = p; r < n_keys; ++r) oh[r] = dot_f16_avx512(qh, k + static_cast<size_t>(r) * stride, n);
      continue;
    }
    // One register per key, q loaded once (the tail path of dot_f16_avx512 with i = 0).
    const __mmask16 m = n == 16 ? static_cast<__mmask16>(0xFFFF) : tail_mask(n);
    const __m512 qv = _mm512_maskz_loadu_ps(m, qh);
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t r = p; r < n_keys; ++r) {
      const __m512 prod = _mm512_mul_ps(qv, cvtph_tail(m, k + static_cast<size_t>(r) * stride));
      oh[r] = fold(_mm512_mask_add_ps(zero, m, zero, prod));
    }
  }
}

// NH queries' sums over C registers of columns (the last one masked by `last`), held in registers
// across all the keys; each key row is converted once for the NH queries.
template <int NH, int C>
void accum_block(const float* w, size_t w_stride, const uint16_t* v, size_t stride, int64_t n_keys,
                 float* out, size_t out_stride, __mmask16 last) {
  __mmask16 m[C];
#pragma GCC unroll 4
  for (int c = 0; c < C; ++c) m[c] = c + 1 == C ? last : static_cast<__mmask16>(0xFFFF);
  __m512 acc[NH][C];
#pragma GCC unroll 4
  for (int h = 0; h < NH; ++h) {
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[h][c] = _mm512_maskz_loadu_ps(m[c], out + static_cast<size_t>(h) * out_stride + 16 * c);
  }
  for (int64_t p = 0; p < n_keys; ++p) {
    const uint16_t* row = v + static_cast<size_t>(p) * stride;
    __m512 x[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) x[c] = cvtph_tail(m[c], row + 16 * c);
#pragma GCC unroll 4
    for (int h = 0; h < NH; ++h) {
      const __m512 wv = _mm512_set1_ps(w[static_cast<size_t>(h) * w_stride + static_cast<size_t>(p)]);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[h][c] = _mm512_add_ps(acc[h][c], _mm512_mul_ps(wv, x[c]));
    }
  }
#pragma GCC unroll 4
  for (int h = 0; h < NH; ++h) {
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) _mm512_mask_storeu_ps(out + static_cast<size_t>(h) * out_stride + 16 * c, m[c], acc[h][c]);
  }
}

using AccumBlock = void (*)(const float*, size_t, const uint16_t*, size_t, int64_t, float*, size_t, __mmask16);

template <int NH>
constexpr AccumBlock kAccumByWidth[4] = {accum_block<NH, 1>, accum_block<NH, 2>, accum_block<NH, 3>, accum_block<NH, 4>};

void accum_f16_avx512(const float* w, size_t w_stride, int64_t n_q, const uint16_t* v, size_t stride,
                      int64_t n_keys, float* out, size_t out_stride, int64_t n) {
  // Up to four queries by up to 64 columns at a time: each element still sees its additions in
  // increasing key order.
  for (int64_t h = 0; h < n_q; h += 4) {
    const int64_t nh = n_q - h < 4 ? n_q - h : 4;
    for (int64_t i = 0; i < n; i += 64) {
      const int64_t cols = n - i < 64 ? n - i : 64;
      const int64_t regs = (cols + 15) / 16;
      const __mmask16 last = cols % 16 == 0 ? static_cast<__mmask16>(0xFFFF) : tail_mask(cols % 16);
      const AccumBlock f = nh == 4   ? kAccumByWidth<4>[regs - 1]
                           : nh == 3 ? kAccumByWidth<3>[regs - 1]
                           : nh == 2 ? kAccumByWidth<2>[regs - 1]
                                     : kAccumByWidth<1>[regs - 1];
      f(w + static_cast<size_t>(h) * w_stride, w_stride, v + i, stride, n_keys,
        out + static_cast<size_t>(h) * out_stride + i, out_stride, last);
    }
  }
}

}  // namespace

const AttnKernels* attn_kernels_avx512() {
  static const AttnKernels k{"avx512", dot_f32_avx512, dot_f16_avx512, axpy_f32_avx512, axpy_f16_avx512, exp_sub_avx512,
                             dots_f16_avx512, accum_f16_avx512, silu_mul_avx512};
  return &k;
}

}  // namespace sq::kernels
