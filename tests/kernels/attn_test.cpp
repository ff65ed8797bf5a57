// Every instruction-set variant of the attention kernels gives the reference's bits.
#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "base/cpu_features.h"
#include "base/fp16.h"
#include "base/rng.h"
#include "kernels/attn.h"

namespace sq::kernels {
namespace {

std::vector<const AttnKernels*> available() {
  std::vector<const AttnKernels*> out;
  const CpuFeatures& f = cpu_features();
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  if (avx2) out.push_back(attn_kernels_avx2());
  if (avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq) out.push_back(attn_kernels_avx512());
  return out;
}

TEST(AttnKernels, EveryVariantMatchesReferenceBitForBit) {
  const AttnKernels& ref = attn_kernels_ref();
  auto variants = available();
  if (variants.empty()) GTEST_SKIP() << "this CPU has no SIMD variant of the attention kernels";
  Rng rng(7);
  for (int64_t n : {1, 7, 15, 16, 17, 31, 32, 64, 100, 128, 255}) {
    std::vector<float> q(static_cast<size_t>(n)), k(q.size()), out0(q.size());
    std::vector<uint16_t> kh(q.size());
    for (size_t i = 0; i < q.size(); ++i) {
      q[i] = static_cast<float>(rng.next_double() * 4 - 2);
      k[i] = static_cast<float>(rng.next_double() * 4 - 2);
      kh[i] = f32_to_fp16(k[i]);
      out0[i] = static_cast<float>(rng.next_double() - 0.5);
    }
    const float w = 0.37f;
    for (const AttnKernels* v : variants) {
      SCOPED_TRACE(std::string(v->isa) + " n=" + std::to_string(n));
      float a = ref.dot_f32(q.data(), k.data(), n), b = v->dot_f32(q.data(), k.data(), n);
      EXPECT_EQ(0, std::memcmp(&a, &b, 4)) << a << " vs " << b;
      a = ref.dot_f16(q.data(), kh.data(), n);
      b = v->dot_f16(q.data(), kh.data(), n);
      EXPECT_EQ(0, std::memcmp(&a, &b, 4)) << a << " vs " << b;
      auto o1 = out0, o2 = out0;
      ref.axpy_f32(w, k.data(), o1.data(), n);
      v->axpy_f32(w, k.data(), o2.data(), n);
      EXPECT_EQ(0, std::memcmp(o1.data(), o2.data(), o1.size() * 4));
      o1 = out0;
      o2 = out0;
      ref.axpy_f16(w, kh.data(), o1.data(), n);
      v->axpy_f16(w, kh.data(), o2.data(), n);
      EXPECT_EQ(0, std::memcmp(o1.data(), o2.data(), o1.size() * 4));
    }
  }
}

// The many-key kernels against the reference, for one query and for groups of queries that share
// the keys (grouped-query attention), with rows in a strided cache, outputs in strided rows, and
// zero products of both signs (a lane that only ever saw -0 must stay -0, as in the scalar order).
// Head sizes cover the sixteen-key path (multiples of 16 up to 256), the others, and key counts
// that leave a remainder after blocks of sixteen.
TEST(AttnKernels, ManyKeysMatchReferenceBitForBit) {
  const AttnKernels& ref = attn_kernels_ref();
  auto variants = available();
  if (variants.empty()) GTEST_SKIP() << "this CPU has no SIMD variant of the attention kernels";
  Rng rng(13);
  for (int64_t n : {1, 8, 15, 16, 17, 32, 64, 100, 128, 256, 272}) {
    for (int64_t n_keys : {1, 3, 16, 40, 67}) {
      for (int64_t n_q : {1, 3, 7}) {
        const auto stride = static_cast<size_t>(n + 5);
        const auto q_stride = static_cast<size_t>(n + 3), w_stride = static_cast<size_t>(n_keys + 2);
        const auto out_stride = static_cast<size_t>(n + 1);
        std::vector<float> q(q_stride * static_cast<size_t>(n_q)), w(w_stride * static_cast<size_t>(n_q));
        std::vector<float> out0(out_stride * static_cast<size_t>(n_q));
        std::vector<uint16_t> rows(stride * static_cast<size_t>(n_keys));
        for (float& x : q) x = rng.next_u64() % 4 == 0 ? -0.0f : static_cast<float>(rng.next_double() * 4 - 2);
        for (uint16_t& h : rows) {
          h = rng.next_u64() % 4 == 0 ? uint16_t{0x8000} : f32_to_fp16(static_cast<float>(rng.next_double() * 4 - 2));
        }
        for (float& x : w) x = static_cast<float>(rng.next_double());
        for (float& x : out0) x = rng.next_u64() % 3 == 0 ? -0.0f : static_cast<float>(rng.next_double() - 0.5);
        // Scores land in rows of n_keys + 1 with a sentinel after each, which no kernel may touch.
        const auto s_stride = static_cast<size_t>(n_keys + 1);
        std::vector<float> want(s_stride * static_cast<size_t>(n_q), 1234.5f), got(want.size(), 1234.5f);
        ref.dots_f16(q.data(), q_stride, n_q, rows.data(), stride, n_keys, n, want.data(), s_stride);
        for (int64_t h = 0; h < n_q; ++h) {
          for (int64_t p = 0; p < n_keys; ++p) {
            const float one = ref.dot_f16(q.data() + static_cast<size_t>(h) * q_stride,
                                          rows.data() + static_cast<size_t>(p) * stride, n);
            ASSERT_EQ(0, std::memcmp(&one, &want[static_cast<size_t>(h) * s_stride + static_cast<size_t>(p)], 4));
          }
        }
        auto acc_want = out0;
        ref.accum_f16(w.data(), w_stride, n_q, rows.data(), stride, n_keys, acc_want.data(), out_stride, n);
        for (int64_t h = 0; h < n_q; ++h) {
          std::vector<float> one(out0.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(h) * out_stride),
                                 out0.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(h) * out_stride + static_cast<size_t>(n)));
          for (int64_t p = 0; p < n_keys; ++p) {
            ref.axpy_f16(w[static_cast<size_t>(h) * w_stride + static_cast<size_t>(p)],
                         rows.data() + static_cast<size_t>(p) * stride, one.data(), n);
          }
          ASSERT_EQ(0, std::memcmp(one.data(), acc_want.data() + static_cast<size_t>(h) * out_stride, one.size() * 4));
        }
        for (const AttnKernels* v : variants) {
          SCOPED_TRACE(std::string(v->isa) + " n=" + std::to_string(n) + " keys=" + std::to_string(n_keys) +
                       " queries=" + std::to_string(n_q));
          std::fill(got.begin(), got.end(), 1234.5f);
          v->dots_f16(q.data(), q_stride, n_q, rows.data(), stride, n_keys, n, got.data(), s_stride);
          EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4));
          auto acc = out0;
          v->accum_f16(w.data(), w_stride, n_q, rows.data(), stride, n_keys, acc.data(), out_stride, n);
          EXPECT_EQ(0, std::memcmp(acc_want.data(), acc.data(), acc.size() * 4));
        }
      }
    }
  }
}

TEST(AttnKernels, ExponentialIsAccurateAndIdenticalEverywhere) {
  std::vector<float> x;
  for (float v = -100.0f; v <= 100.0f; v += 0.0137f) x.push_back(v);
  for (float v : {0.0f, -0.0f, 1.0f, -1.0f, 88.0f, 88.5f, -87.33f, -87.34f, -INFINITY, INFINITY, NAN}) x.push_back(v);
  std::vector<float> want = x;
  attn_kernels_ref().exp_sub(want.data(), 0.0f, static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] >= -87.0f && x[i] <= 87.0f) {
      const double exact = std::exp(static_cast<double>(x[i]));
      ASSERT_NEAR(want[i] / exact, 1.0, 3e-7) << "exp(" << x[i] << ")";
    }
    if (!(x[i] >= -87.33f)) {
      ASSERT_EQ(want[i], 0.0f) << x[i];
    }
    ASSERT_TRUE(std::isfinite(want[i])) << x[i];
  }
  for (const AttnKernels* v : available()) {
    std::vector<float> got = x;
    v->exp_sub(got.data(), 0.0f, static_cast<int64_t>(got.size()));
    EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * 4)) << v->isa;
    got = x;
    std::vector<float> want_m = x;
    attn_kernels_ref().exp_sub(want_m.data(), 3.5f, static_cast<int64_t>(want_m.size()));
    v->exp_sub(got.data(), 3.5f, static_cast<int64_t>(got.size()));
    EXPECT_EQ(0, std::memcmp(got.data(), want_m.data(), got.size() * 4)) << v->isa;
  }
}

TEST(AttnKernels, ExponentialOfEveryLengthMatchesTheReference) {
  // Every row length up to 40, so that each variant's tail (the lanes past its last full register)
  // sees every count, with the special values in it; the elements after the row stay untouched.
  const std::vector<float> pool = {-INFINITY, 0.5f, NAN, -87.34f, 88.5f, INFINITY, -0.0f, -3.25f,
                                   87.9f, -87.33f, 12.0f, -50.0f, 1.0f, -1.0f, 0.0f, 2.5f};
  for (int64_t n = 0; n <= 40; ++n) {
    std::vector<float> x(static_cast<size_t>(n) + 8, 7.0f);
    for (int64_t i = 0; i < n; ++i) x[static_cast<size_t>(i)] = pool[static_cast<size_t>((i * 7 + n) % 16)];
    std::vector<float> want = x;
    attn_kernels_ref().exp_sub(want.data(), 1.5f, n);
    for (const AttnKernels* v : available()) {
      std::vector<float> got = x;
      v->exp_sub(got.data(), 1.5f, n);
      EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * 4)) << v->isa << " n=" << n;
    }
  }
}

TEST(AttnKernels, SiluMulOfEveryLengthMatchesTheReferenceInPlaceToo) {
  // Every length up to 40 and one of a feed-forward width, special values included; each variant
  // writes the reference's bits, also when out is gate (as the decoder calls it), and nothing past n.
  const std::vector<float> specials = {-INFINITY, 0.5f, NAN, -90.0f, 90.0f, INFINITY, -0.0f, 0.0f, -3.25f, 87.9f};
  for (int64_t n : {0, 1, 2, 7, 8, 9, 15, 16, 17, 23, 31, 32, 33, 40, 5632}) {
    std::vector<float> gate(static_cast<size_t>(n) + 8, 7.0f), up(gate.size(), -2.0f);
    for (int64_t i = 0; i < n; ++i) {
      const auto k = static_cast<size_t>(i);
      gate[k] = i % 5 == 3 ? specials[(k + static_cast<size_t>(n)) % specials.size()] : 0.01f * static_cast<float>((i * 37) % 1001) - 5.0f;
      up[k] = 0.003f * static_cast<float>((i * 11) % 701) - 1.0f;
    }
    std::vector<float> want(gate.size(), 3.0f);
    attn_kernels_ref().silu_mul(gate.data(), up.data(), want.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const auto k = static_cast<size_t>(i);
      const double g = gate[k];
      if (std::isfinite(g) && std::fabs(g) < 80.0) {
        ASSERT_NEAR(want[k], g / (1.0 + std::exp(-g)) * up[k], 1e-5) << "g=" << g;
      }
    }
    for (const AttnKernels* v : available()) {
      std::vector<float> got(gate.size(), 3.0f);
      v->silu_mul(gate.data(), up.data(), got.data(), n);
      EXPECT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * 4)) << v->isa << " n=" << n;
      std::vector<float> in_place = gate;
      v->silu_mul(in_place.data(), up.data(), in_place.data(), n);
      EXPECT_EQ(0, std::memcmp(in_place.data(), want.data(), static_cast<size_t>(n) * 4)) << v->isa << " n=" << n;
      EXPECT_EQ(0, std::memcmp(in_place.data() + n, gate.data() + n, 8 * 4)) << v->isa << " n=" << n;
    }
  }
}

TEST(AttnKernels, ReferenceDotIsCloseToExact) {
  const AttnKernels& ref = attn_kernels_ref();
  std::vector<float> q(100), k(100);
  double exact = 0;
  for (int i = 0; i < 100; ++i) {
    q[i] = 0.01f * static_cast<float>(i);
    k[i] = 1.0f - 0.005f * static_cast<float>(i);
    exact += double(q[i]) * k[i];
  }
  EXPECT_NEAR(ref.dot_f32(q.data(), k.data(), 100), exact, 1e-4);
}

}  // namespace
}  // namespace sq::kernels
