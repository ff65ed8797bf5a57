// The ops against plain double-precision formulas written out here.
#include <bit>
#include <cmath>
#include <array>
#include <cstring>
#include <vector>

#include "base/error.h"
#include "base/rng.h"
#include "base/thread_pool.h"
#include "kernels/quant.h"
#include "kernels/repack.h"
#include "ops/ops.h"
#include "support.h"

namespace sq {
namespace {

std::vector<float> random_values(size_t n, uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>((rng.next_double() * 2 - 1) * scale);
  return v;
}

TensorView f32_view(const std::vector<float>& v, std::array<int64_t, 4> ne, const char* name = "t") {
  TensorView t;
  t.name = name;
  t.type = GgmlType::F32;
  t.ne = ne;
  t.n_dims = 2;
  t.data = reinterpret_cast<const uint8_t*>(v.data());
  return t;
}

TEST(Ops, RmsNormMatchesFormula) {
  const int64_t width = 37, n = 3;
  auto x = random_values(width * n, 1, 3.0);
  auto w = random_values(width, 2);
  std::vector<float> out(x.size());
  ops::rms_norm(x.data(), f32_view(w, {width, 1, 1, 1}), 1e-5f, n, width, out.data());
  for (int64_t t = 0; t < n; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < width; ++i) ss += double(x[t * width + i]) * x[t * width + i];
    double scale = 1.0 / std::sqrt(ss / width + 1e-5);
    for (int64_t i = 0; i < width; ++i) {
      EXPECT_NEAR(out[t * width + i], x[t * width + i] * scale * w[i], 1e-5);
    }
  }
  std::vector<float> short_w(width - 1);
  EXPECT_THROW(ops::rms_norm(x.data(), f32_view(short_w, {width - 1, 1, 1, 1}), 1e-5f, n, width, out.data()),
               InvalidArgument);
}

TEST(Ops, MatmulWithBias) {
  const int64_t n_in = 40, n_out = 7, n = 5;
  auto w = random_values(n_in * n_out, 3);
  auto b = random_values(n_out, 4);
  auto x = random_values(n_in * n, 5);
  std::vector<float> out(n * n_out);
  ThreadPool pool(2);
  TensorView bias = f32_view(b, {n_out, 1, 1, 1});
  ops::matmul(f32_view(w, {n_in, n_out, 1, 1}), x.data(), n, out.data(), pool, &bias);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < n_out; ++r) {
      double s = b[r];
      for (int64_t i = 0; i < n_in; ++i) s += double(w[r * n_in + i]) * x[t * n_in + i];
      EXPECT_NEAR(out[t * n_out + r], s, 1e-4);
    }
  }
}

// Quantized weights: each token's row is rounded once to the vec_dot_type and every output is
// dot_row_q of it, bit for bit, whatever the batch or the number of threads.
TEST(Ops, MatmulQuantizesActivationsPerToken) {
  const int64_t n_in = 512, n_out = 37, n = 6;
  const auto wf = random_values(static_cast<size_t>(n_in * n_out), 11);
  const auto x = random_values(static_cast<size_t>(n_in * n), 12, 4.0);
  for (GgmlType t : {GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                     GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    const size_t rb = kernels::row_bytes(t, n_in);
    std::vector<uint8_t> wq(rb * static_cast<size_t>(n_out));
    for (int64_t r = 0; r < n_out; ++r) {
      kernels::quantize_row(t, wf.data() + r * n_in, wq.data() + static_cast<size_t>(r) * rb, n_in);
    }
    TensorView w;
    w.name = "w";
    w.type = t;
    w.ne = {n_in, n_out, 1, 1};
    w.n_dims = 2;
    w.data = wq.data();
    const GgmlType vt = kernels::vec_dot_type(t);
    std::vector<uint8_t> qx(kernels::row_bytes(vt, n_in));
    std::vector<float> want(static_cast<size_t>(n * n_out));
    for (int64_t tok = 0; tok < n; ++tok) {
      kernels::quantize_activation(vt, x.data() + tok * n_in, qx.data(), n_in);
      for (int64_t r = 0; r < n_out; ++r) {
        want[static_cast<size_t>(tok * n_out + r)] = kernels::dot_row_q(t, w.row(r), qx.data(), n_in);
      }
    }
    for (int threads : {1, 3}) {
      ThreadPool pool(threads);
      std::vector<float> batch(want.size()), single(want.size());
      ops::matmul(w, x.data(), n, batch.data(), pool);
      for (int64_t tok = 0; tok < n; ++tok) {
        ops::matmul(w, x.data() + tok * n_in, 1, single.data() + tok * n_out, pool);
      }
      for (size_t i = 0; i < want.size(); ++i) {
        EXPECT_EQ(std::bit_cast<uint32_t>(batch[i]), std::bit_cast<uint32_t>(want[i]))
            << type_name(t) << " threads " << threads << " i " << i;
        EXPECT_EQ(std::bit_cast<uint32_t>(single[i]), std::bit_cast<uint32_t>(want[i]))
            << type_name(t) << " threads " << threads << " i " << i;
      }
    }
  }
}

// A group of products (a layer's q/k/v) gives each part's matmul bits, with parts of different
// activation formats (Q4_0 pairs with Q8_0, Q6_K with Q8_K), a bias on one part, and part sizes
// that make a thread's range end inside a part; a group whose parts take different inputs is
// refused.
TEST(Ops, MatmulGroupGivesEachPartsBits) {
  const int64_t n_in = 512;
  const int64_t sizes[] = {37, 16, 53};
  const GgmlType types[] = {GgmlType::Q4_0, GgmlType::Q6_K, GgmlType::F16};
  std::vector<std::vector<uint8_t>> bytes(3);
  std::vector<TensorView> ws(3);
  for (int i = 0; i < 3; ++i) {
    const auto wf = random_values(static_cast<size_t>(n_in * sizes[i]), 20 + static_cast<uint64_t>(i));
    const size_t rb = kernels::row_bytes(types[i], n_in);
    bytes[i].resize(rb * static_cast<size_t>(sizes[i]));
    for (int64_t r = 0; r < sizes[i]; ++r) {
      kernels::quantize_row(types[i], wf.data() + r * n_in, bytes[i].data() + static_cast<size_t>(r) * rb, n_in);
    }
    ws[i].name = std::array{"wq", "wk", "wv"}[static_cast<size_t>(i)];
    ws[i].type = types[i];
    ws[i].ne = {n_in, sizes[i], 1, 1};
    ws[i].n_dims = 2;
    ws[i].data = bytes[i].data();
  }
  const auto b = random_values(static_cast<size_t>(sizes[1]), 30);
  const TensorView bias = f32_view(b, {sizes[1], 1, 1, 1});
  for (int64_t n : {1, 5, 70}) {
    const auto x = random_values(static_cast<size_t>(n_in * n), 31 + static_cast<uint64_t>(n), 3.0);
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      std::vector<std::vector<float>> want(3), got(3);
      std::vector<ops::MatmulPart> parts;
      for (int i = 0; i < 3; ++i) {
        want[static_cast<size_t>(i)].resize(static_cast<size_t>(n * sizes[i]));
        got[static_cast<size_t>(i)].resize(want[static_cast<size_t>(i)].size());
        // The reference: each token rounded to the part's activation format, then dot_row_q per
        // row (as in MatmulQuantizesActivationsPerToken), plus the bias.
        const GgmlType vt = kernels::vec_dot_type(types[i]);
        std::vector<uint8_t> qx(kernels::row_bytes(vt, n_in));
        for (int64_t tok = 0; tok < n; ++tok) {
          kernels::quantize_activation(vt, x.data() + tok * n_in, qx.data(), n_in);
          for (int64_t r = 0; r < sizes[i]; ++r) {
            float v = kernels::dot_row_q(types[i], ws[i].row(r), qx.data(), n_in);
            if (i == 1) v = v + b[static_cast<size_t>(r)];
            want[static_cast<size_t>(i)][static_cast<size_t>(tok * sizes[i] + r)] = v;
          }
        }
        parts.push_back({&ws[i], got[static_cast<size_t>(i)].data(), i == 1 ? &bias : nullptr});
      }
      ops::matmul_group(parts, x.data(), n, pool);
      for (size_t i = 0; i < 3; ++i) {
        ASSERT_EQ(0, std::memcmp(want[i].data(), got[i].data(), want[i].size() * sizeof(float)))
            << "part " << i << " tokens " << n << " threads " << threads;
      }
    }
  }
  TensorView other = ws[0];
  other.ne = {256, sizes[0], 1, 1};
  std::vector<float> o1(static_cast<size_t>(sizes[0])), o2(o1.size());
  const ops::MatmulPart mixed[] = {{&ws[0], o1.data(), nullptr}, {&other, o2.data(), nullptr}};
  const auto x = random_values(static_cast<size_t>(n_in), 40);
  ThreadPool pool(2);
  EXPECT_THROW(ops::matmul_group(mixed, x.data(), 1, pool), InvalidArgument);
}

// The fused RMSNorm + rounding gives rms_norm's floats and, through matmul_group, the bits of the
// norm followed by the group, for a batch split over threads and for one token.
TEST(Ops, RmsNormRoundedEqualsNormThenGroup) {
  const int64_t n_in = 256;
  const GgmlType types[] = {GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::F32};
  const int64_t rows = 19;
  std::vector<std::vector<uint8_t>> bytes(3);
  std::vector<TensorView> ws(3);
  for (int i = 0; i < 3; ++i) {
    const auto wf = random_values(static_cast<size_t>(n_in * rows), 50 + static_cast<uint64_t>(i));
    const size_t rb = kernels::row_bytes(types[i], n_in);
    bytes[i].resize(rb * static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      kernels::quantize_row(types[i], wf.data() + r * n_in, bytes[i].data() + static_cast<size_t>(r) * rb, n_in);
    }
    ws[i].name = std::array{"gate", "up", "extra"}[static_cast<size_t>(i)];
    ws[i].type = types[i];
    ws[i].ne = {n_in, rows, 1, 1};
    ws[i].n_dims = 2;
    ws[i].data = bytes[i].data();
  }
  const auto g = random_values(static_cast<size_t>(n_in), 60, 2.0);
  const TensorView norm_w = f32_view(g, {n_in, 1, 1, 1});
  for (int64_t n : {1, 9}) {
    const auto x = random_values(static_cast<size_t>(n_in * n), 61 + static_cast<uint64_t>(n), 4.0);
    std::vector<float> normed(x.size());
    ops::rms_norm(x.data(), norm_w, 1e-5f, n, n_in, normed.data());
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      std::vector<std::vector<float>> want(3, std::vector<float>(static_cast<size_t>(n * rows)));
      std::vector<std::vector<float>> got = want;
      std::vector<ops::MatmulPart> want_parts, got_parts;
      for (size_t i = 0; i < 3; ++i) {
        want_parts.push_back({&ws[i], want[i].data(), nullptr});
        got_parts.push_back({&ws[i], got[i].data(), nullptr});
      }
      ops::matmul_group(want_parts, normed.data(), n, pool);
      std::vector<float> out(x.size(), -1.0f);
      const ops::RoundedInput in = ops::rms_norm_rounded(got_parts, x.data(), norm_w, 1e-5f, n, out.data(), pool);
      EXPECT_EQ(2u, in.formats.size());  // Q8_0 and Q8_K; F32 reads the floats
      ASSERT_EQ(0, std::memcmp(normed.data(), out.data(), out.size() * sizeof(float)));
      ops::matmul_group(got_parts, in, pool);
      for (size_t i = 0; i < 3; ++i) {
        ASSERT_EQ(0, std::memcmp(want[i].data(), got[i].data(), want[i].size() * sizeof(float)))
            << "part " << i << " tokens " << n << " threads " << threads;
      }
    }
  }
  // An input rounded for other parts lacks the format a Q4_0 part needs.
  ThreadPool pool(1);
  std::vector<float> o(static_cast<size_t>(rows)), normed(static_cast<size_t>(n_in));
  const auto x = random_values(static_cast<size_t>(n_in), 70);
  const ops::MatmulPart f32_only[] = {{&ws[2], o.data(), nullptr}};
  const ops::RoundedInput in = ops::rms_norm_rounded(f32_only, x.data(), norm_w, 1e-5f, 1, normed.data(), pool);
  const ops::MatmulPart q8[] = {{&ws[0], o.data(), nullptr}};
  EXPECT_THROW(ops::matmul_group(q8, in, pool), InvalidArgument);
}

// Rotating pairs by pos * base^(-2i/n_rot): adjacent pairs for llama, halves for NEOX.
TEST(Ops, RopeAdjacentAndNeoxRotateTheRightPairs) {
  const int32_t head_dim = 8, n_heads = 2, pos0 = 5;
  auto x = random_values(static_cast<size_t>(head_dim * n_heads * 2), 6);
  for (ops::RopeMode mode : {ops::RopeMode::Adjacent, ops::RopeMode::Neox}) {
    auto y = x;
    ops::RopeOptions o;
    o.mode = mode;
    o.n_rot = head_dim;
    o.freq_base = 10000.0f;
    ops::rope(y.data(), 2, n_heads, head_dim, pos0, o);
    for (int t = 0; t < 2; ++t) {
      for (int h = 0; h < n_heads; ++h) {
        const float* a = x.data() + (t * n_heads + h) * head_dim;
        const float* b = y.data() + (t * n_heads + h) * head_dim;
        for (int i = 0; i < head_dim / 2; ++i) {
          double theta = (pos0 + t) * std::pow(10000.0, -2.0 * i / head_dim);
          int p = mode == ops::RopeMode::Adjacent ? 2 * i : i;
          int q = mode == ops::RopeMode::Adjacent ? 2 * i + 1 : i + head_dim / 2;
          EXPECT_NEAR(b[p], a[p] * std::cos(theta) - a[q] * std::sin(theta), 1e-5);
          EXPECT_NEAR(b[q], a[p] * std::sin(theta) + a[q] * std::cos(theta), 1e-5);
        }
      }
    }
  }
}

// SwiGLU fused with the rounding for the down projection: swiglu's floats, and the bits of swiglu
// followed by the product.
TEST(Ops, SwigluRoundedEqualsSwigluThenMatmul) {
  const int64_t width = 288, rows = 21;  // nine Q8_0 blocks per row
  const auto wf = random_values(static_cast<size_t>(width * rows), 90);
  const size_t rb = kernels::row_bytes(GgmlType::Q8_0, width);
  std::vector<uint8_t> bytes(rb * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    kernels::quantize_row(GgmlType::Q8_0, wf.data() + r * width, bytes.data() + static_cast<size_t>(r) * rb, width);
  }
  TensorView w;
  w.name = "ffn_down";
  w.type = GgmlType::Q8_0;
  w.ne = {width, rows, 1, 1};
  w.n_dims = 2;
  w.data = bytes.data();
  for (int64_t n : {1, 6}) {
    const auto gate = random_values(static_cast<size_t>(width * n), 91 + static_cast<uint64_t>(n), 5.0);
    const auto up = random_values(static_cast<size_t>(width * n), 93 + static_cast<uint64_t>(n), 2.0);
    std::vector<float> act(gate.size());
    ops::swiglu(gate.data(), up.data(), act.data(), width * n);
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      std::vector<float> want(static_cast<size_t>(n * rows)), got(want.size());
      ops::matmul(w, act.data(), n, want.data(), pool);
      auto out = gate;  // in place, as the forward pass runs it
      const ops::MatmulPart down[] = {{&w, got.data(), nullptr}};
      ops::matmul_group(down, ops::swiglu_rounded(down, out.data(), up.data(), n, out.data(), pool), pool);
      ASSERT_EQ(0, std::memcmp(act.data(), out.data(), act.size() * sizeof(float)));
      ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float)))
          << "tokens " << n << " threads " << threads;
    }
  }
}

// RoPE fused with the cache write stores the bytes of rope() then store_kv_row(), for every cache
// format and both pair layouts, and leaves the key floats as they were.
TEST(Ops, RopeStoreKeyEqualsRopeThenStore) {
  const int32_t head_dim = 64, n_heads = 2;
  const int64_t width = head_dim * n_heads, n = 3;
  const auto k = random_values(static_cast<size_t>(width * n), 80, 3.0);
  for (ops::RopeMode mode : {ops::RopeMode::Adjacent, ops::RopeMode::Neox}) {
    ops::RopeOptions o;
    o.mode = mode;
    o.n_rot = 32;  // partial rotation: the rest of each head passes through
    const ops::RopeTable table = ops::rope_table(n, 11, o);
    auto rotated = k;
    ops::rope(rotated.data(), n, n_heads, head_dim, table);
    for (ops::KvType type : {ops::KvType::F32, ops::KvType::F16, ops::KvType::Q8_0}) {
      const size_t rb = ops::kv_row_bytes(type, width);
      std::vector<uint8_t> want(rb * n), got(rb * n, 0xAB);
      std::vector<float> scratch(static_cast<size_t>(width));
      auto keys = k;
      for (int64_t t = 0; t < n; ++t) {
        ops::store_kv_row(type, rotated.data() + t * width, want.data() + rb * static_cast<size_t>(t), width);
        ops::rope_store_key(type, keys.data() + t * width, t, n_heads, head_dim, table,
                            got.data() + rb * static_cast<size_t>(t), scratch);
      }
      EXPECT_EQ(want, got) << ops::kv_type_name(type);
      EXPECT_EQ(k, keys);
    }
    std::vector<float> small(static_cast<size_t>(width - 1));
    std::vector<uint8_t> dst(ops::kv_row_bytes(ops::KvType::F32, width));
    EXPECT_THROW(ops::rope_store_key(ops::KvType::F32, k.data(), 0, n_heads, head_dim, table, dst.data(), small),
                 InvalidArgument);
    std::vector<float> scratch(static_cast<size_t>(width));
    EXPECT_THROW(ops::rope_store_key(ops::KvType::F32, k.data(), n, n_heads, head_dim, table, dst.data(), scratch),
                 InvalidArgument);
  }
}

// Llama 3.1 frequency factors divide each pair's frequency.
TEST(Ops, RopeFrequencyFactorsDivideFrequencies) {
  const int32_t head_dim = 8;
  auto x = random_values(head_dim, 7);
  std::vector<float> factors = {1.0f, 2.0f, 4.0f, 8.0f};
  auto y = x;
  ops::RopeOptions o;
  o.n_rot = head_dim;
  o.freq_factors = factors;
  ops::rope(y.data(), 1, 1, head_dim, 9, o);
  for (int i = 0; i < head_dim / 2; ++i) {
    double theta = 9 * std::pow(10000.0, -2.0 * i / head_dim) / factors[i];
    EXPECT_NEAR(y[2 * i], x[2 * i] * std::cos(theta) - x[2 * i + 1] * std::sin(theta), 1e-5);
  }
}

TEST(Ops, SoftmaxHandlesInfinities) {
  std::vector<float> v = {1.0f, -INFINITY, 3.0f, 2.0f};
  ops::softmax(v.data(), 4);
  double z = std::exp(1.0) + std::exp(3.0) + std::exp(2.0);
  EXPECT_NEAR(v[0], std::exp(1.0) / z, 1e-6);
  EXPECT_EQ(v[1], 0.0f);
  EXPECT_NEAR(v[2], std::exp(3.0) / z, 1e-6);
}

// Causal grouped-query attention against a direct double-precision evaluation.
TEST(Ops, AttentionIsCausalWithGroupedHeads) {
  const int32_t n_head = 4, n_kv = 2, hd = 6, pos0 = 3, n = 4;
  const int64_t ctx = pos0 + n, kv_stride = n_kv * hd;
  auto q = random_values(static_cast<size_t>(n * n_head * hd), 8);
  auto k = random_values(static_cast<size_t>(ctx * kv_stride), 9);
  auto v = random_values(static_cast<size_t>(ctx * kv_stride), 10);
  std::vector<float> out(q.size());
  ThreadPool pool(2);
  ops::KvRows rows{reinterpret_cast<const uint8_t*>(k.data()), reinterpret_cast<const uint8_t*>(v.data()),
                   ops::KvType::F32, static_cast<size_t>(kv_stride) * sizeof(float)};
  ops::attention(q.data(), rows, n, pos0, {n_head, n_kv, hd}, out.data(), pool);
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < n_head; ++h) {
      const int hk = h / (n_head / n_kv);
      std::vector<double> s;
      double mx = -1e300;
      for (int p = 0; p <= pos0 + t; ++p) {
        double d = 0;
        for (int i = 0; i < hd; ++i) d += double(q[(t * n_head + h) * hd + i]) * k[p * kv_stride + hk * hd + i];
        s.push_back(d / std::sqrt(double(hd)));
        mx = std::max(mx, s.back());
      }
      double z = 0;
      for (double& e : s) z += (e = std::exp(e - mx));
      for (int i = 0; i < hd; ++i) {
        double o = 0;
        for (size_t p = 0; p < s.size(); ++p) o += s[p] / z * v[p * kv_stride + hk * hd + i];
        EXPECT_NEAR(out[(t * n_head + h) * hd + i], o, 1e-5);
      }
    }
  }
}

// F16 and Q8_0 caches give what F32 gives, within their rounding.
TEST(Ops, AttentionOverF16AndQ8CachesMatchesF32) {
  const int32_t n_head = 4, n_kv = 2, hd = 16, pos0 = 5, n = 3;
  const int64_t ctx = pos0 + n, kv_dim = n_kv * hd;
  auto q = random_values(static_cast<size_t>(n * n_head * hd), 12);
  auto k = random_values(static_cast<size_t>(ctx * kv_dim), 13);
  auto v = random_values(static_cast<size_t>(ctx * kv_dim), 14);
  ThreadPool pool(2);
  std::vector<float> want(q.size());
  ops::attention(q.data(),
                 {reinterpret_cast<const uint8_t*>(k.data()), reinterpret_cast<const uint8_t*>(v.data()),
                  ops::KvType::F32, static_cast<size_t>(kv_dim) * 4},
                 n, pos0, {n_head, n_kv, hd}, want.data(), pool);
  for (auto [type, tol] : {std::pair{ops::KvType::F16, 2e-3}, std::pair{ops::KvType::Q8_0, 3e-2}}) {
    const size_t rb = ops::kv_row_bytes(type, kv_dim);
    std::vector<uint8_t> kc(rb * ctx), vc(rb * ctx);
    for (int64_t p = 0; p < ctx; ++p) {
      ops::store_kv_row(type, k.data() + p * kv_dim, kc.data() + p * rb, kv_dim);
      ops::store_kv_row(type, v.data() + p * kv_dim, vc.data() + p * rb, kv_dim);
    }
    std::vector<float> got(q.size());
    ops::attention(q.data(), {kc.data(), vc.data(), type, rb}, n, pos0, {n_head, n_kv, hd}, got.data(), pool);
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], tol) << ops::kv_type_name(type);
  }
  EXPECT_THROW(ops::kv_row_bytes(ops::KvType::Q8_0, 48), InvalidArgument);
  EXPECT_EQ(ops::parse_kv_type("Q8_0"), ops::KvType::Q8_0);
  EXPECT_THROW(ops::parse_kv_type("q4"), InvalidArgument);
}

// Matrices of sixteen interleaved rows (Q8_0_R16, Q4_0_R16) after a part of 37 rows: the threads'
// ranges then start inside their groups (product_rows computes such a group whole and keeps its
// own rows), with the bits of the file types' rows, a bias included; and the embedding lookup of a
// tied matrix in that layout gives the file rows' values.
TEST(Ops, InterleavedRowsAfterARaggedPartKeepTheirBits) {
  const int64_t n_in = 576;  // 18 blocks: a chunk of sixteen and two more
  const int64_t sizes[] = {37, 48, 32};
  const GgmlType file[] = {GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q4_0};
  const GgmlType layout[] = {GgmlType::Q8_0, GgmlType::Q8_0_R16, GgmlType::Q4_0_R16};
  std::vector<std::vector<uint8_t>> rows(3), stored(3);
  std::vector<TensorView> ws(3);
  for (int i = 0; i < 3; ++i) {
    const auto wf = random_values(static_cast<size_t>(n_in * sizes[i]), 50 + static_cast<uint64_t>(i));
    const size_t rb = kernels::row_bytes(file[i], n_in);
    rows[i].resize(rb * static_cast<size_t>(sizes[i]));
    for (int64_t r = 0; r < sizes[i]; ++r) {
      kernels::quantize_row(file[i], wf.data() + r * n_in, rows[i].data() + static_cast<size_t>(r) * rb, n_in);
    }
    stored[i] = rows[i];
    if (layout[i] != file[i]) {
      for (int64_t g = 0; g < sizes[i]; g += 16) {
        kernels::pack_rows_r16(layout[i], rows[i].data() + static_cast<size_t>(g) * rb, rb, 16,
                               stored[i].data() + static_cast<size_t>(g) * rb, n_in);
      }
    }
    ws[i].name = std::array{"a", "b", "c"}[static_cast<size_t>(i)];
    ws[i].type = layout[i];
    ws[i].ne = {n_in, sizes[i], 1, 1};
    ws[i].n_dims = 2;
    ws[i].data = stored[i].data();
  }
  const auto bv = random_values(static_cast<size_t>(sizes[2]), 60);
  const TensorView bias = f32_view(bv, {sizes[2], 1, 1, 1});
  for (int64_t n : {1, 5, 70}) {
    const auto x = random_values(static_cast<size_t>(n_in * n), 61 + static_cast<uint64_t>(n), 3.0);
    for (int threads : {1, 2, 3}) {
      ThreadPool pool(threads);
      std::vector<std::vector<float>> want(3), got(3);
      std::vector<ops::MatmulPart> parts;
      std::vector<uint8_t> qx(kernels::row_bytes(GgmlType::Q8_0, n_in));
      for (int i = 0; i < 3; ++i) {
        want[static_cast<size_t>(i)].resize(static_cast<size_t>(n * sizes[i]));
        got[static_cast<size_t>(i)].resize(want[static_cast<size_t>(i)].size());
        const size_t rb = kernels::row_bytes(file[i], n_in);
        for (int64_t tok = 0; tok < n; ++tok) {
          kernels::quantize_activation(GgmlType::Q8_0, x.data() + tok * n_in, qx.data(), n_in);
          for (int64_t r = 0; r < sizes[i]; ++r) {
            float v = kernels::dot_row_q(file[i], rows[i].data() + static_cast<size_t>(r) * rb, qx.data(), n_in);
            if (i == 2) v = v + bv[static_cast<size_t>(r)];
            want[static_cast<size_t>(i)][static_cast<size_t>(tok * sizes[i] + r)] = v;
          }
        }
        parts.push_back({&ws[i], got[static_cast<size_t>(i)].data(), i == 2 ? &bias : nullptr});
      }
      ops::matmul_group(parts, x.data(), n, pool);
      for (size_t i = 0; i < 3; ++i) {
        ASSERT_EQ(0, std::memcmp(want[i].data(), got[i].data(), want[i].size() * sizeof(float)))
            << "part " << i << " tokens " << n << " threads " << threads;
      }
    }
  }
  for (int i = 1; i < 3; ++i) {
    const std::vector<int32_t> tokens = {0, 17, static_cast<int32_t>(sizes[i] - 1)};
    std::vector<float> got(tokens.size() * static_cast<size_t>(n_in)), want(got.size());
    ops::embed(ws[i], tokens, got.data());
    const size_t rb = kernels::row_bytes(file[i], n_in);
    for (size_t t = 0; t < tokens.size(); ++t) {
      kernels::dequantize_row(file[i], rows[i].data() + static_cast<size_t>(tokens[t]) * rb, want.data() + t * n_in,
                              n_in);
    }
    EXPECT_EQ(0, std::memcmp(want.data(), got.data(), got.size() * sizeof(float))) << type_name(layout[i]);
  }
}

TEST(Ops, EmbedRejectsOutOfRangeTokens) {
  auto table = random_values(4 * 3, 11);
  std::vector<float> out(4);
  std::vector<int32_t> bad = {3};
  EXPECT_THROW(ops::embed(f32_view(table, {4, 3, 1, 1}), bad, out.data()), InvalidArgument);
  std::vector<int32_t> good = {2};
  ops::embed(f32_view(table, {4, 3, 1, 1}), good, out.data());
  EXPECT_EQ(out[0], table[8]);
}

TEST(ThreadPoolTest, CoversEveryIndexOnce) {
  for (int threads : {1, 2, 5}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 7, 100, 1001}) {
      std::vector<int> hits(static_cast<size_t>(n));
      pool.parallel_for(n, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
      }, 16);
      for (int h : hits) ASSERT_EQ(h, 1);
    }
  }
}

}  // namespace
}  // namespace sq
