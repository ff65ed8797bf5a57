// Kernels of attention over the KV cache: dot products of a query with cached keys and
// accumulation of weighted cached values, for F32 and F16 rows.
//
// Order of operations (the same in every instruction-set variant, so results are bit-identical
// on every machine; DESIGN.md invariants 2-3): a dot product rounds each product q[i] * k[i] to
// f32 and adds it to lane i % 16 of sixteen f32 partial sums, in increasing i, then folds the
// lanes as LaneSum does (quant.h): s[j] += s[j+8], s[j] += s[j+4], s[j] += s[j+2], s[0] + s[1].
// An accumulation computes out[i] = out[i] + (w * v[i]) element by element (no fused multiply-add);
// over several keys, key by key in increasing order.
//
// exp_sub computes x[i] = exp(x[i] - m) with squeeze's own exponential (not the C library's, whose
// last bit differs between libraries): inputs below -87.33 (and -inf, NaN) give 0, inputs above 88
// are taken as 88; n = round(x * log2(e)) by the 1.5 * 2^23 trick, r = (x - n * ln2_hi) -
// n * ln2_lo, a degree-6 Taylor polynomial in r by Horner's rule, scaled by 2^n built from the
// exponent bits. Only multiplications, additions and exact conversions, in this order, so every
// variant gives the same bits. Relative error about 2e-7.
//
// silu_mul is SwiGLU's elementwise step beside them, since it takes the same exponential:
// out[i] = (g / (1 + e)) * up[i] with g = gate[i] and e = exp_sub's value for -g - 0, in that order.
#pragma once

#include <cstdint>
#include <string_view>

namespace sq::kernels {

struct AttnKernels {
  std::string_view isa;
  float (*dot_f32)(const float* q, const float* k, int64_t n);
  float (*dot_f16)(const float* q, const uint16_t* k, int64_t n);
  void (*axpy_f32)(float w, const float* v, float* out, int64_t n);
  void (*axpy_f16)(float w, const uint16_t* v, float* out, int64_t n);
  void (*exp_sub)(float* x, float m, int64_t n);
  // Many keys against the queries that share them (grouped-query attention: the query heads of
  // one key/value head), each pair with dot_f16's order: out[h * out_stride + p] =
  // dot_f16(q + h * q_stride, k + p * stride, n) for h in [0, n_q) and p in [0, n_keys). Saves the
  // call per key, which dominates when heads are small, and lets the variants convert a key row
  // once for all the queries and fold sixteen keys' lanes at a time.
  void (*dots_f16)(const float* q, size_t q_stride, int64_t n_q, const uint16_t* k, size_t stride,
                   int64_t n_keys, int64_t n, float* out, size_t out_stride);
  // For each h in [0, n_q): axpy_f16(w[h * w_stride + p], v + p * stride, out + h * out_stride, n)
  // for p = 0, 1, .., n_keys - 1, in that order.
  void (*accum_f16)(const float* w, size_t w_stride, int64_t n_q, const uint16_t* v, size_t stride,
                    int64_t n_keys, float* out, size_t out_stride, int64_t n);
  // out[i] = silu(gate[i]) * up[i] for i in [0, n), in the order above; out may be gate.
  void (*silu_mul)(const float* gate, const float* up, float* out, int64_t n);
};

// The reference exponential of one value, as exp_sub computes it.
float exp_ref(float x);

// The variants compiled in; a variant's entry is nullptr when this build lacks it.
const AttnKernels& attn_kernels_ref();
const AttnKernels* attn_kernels_avx2();
const AttnKernels* attn_kernels_avx512();

// The variant for the instruction set in use (kernels::active_isa()).
const AttnKernels& attn_kernels();

}  // namespace sq::kernels
