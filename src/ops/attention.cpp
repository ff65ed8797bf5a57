// Attention over the KV cache, and the cache's row formats.
#include <algorithm>
#include <array>
#include <chrono>
#include <cctype>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/fp16.h"
#include "base/thread_pool.h"
#include "kernels/attn.h"
#include "kernels/blocks.h"
#include "kernels/quant.h"
#include "ops/ops.h"

namespace sq::ops {

namespace {

// Half to float by table: 256 KiB, built once; exact (every half is a float).
const std::array<float, 65536>& half_table() {
  static const auto table = [] {
    auto t = std::make_unique<std::array<float, 65536>>();
    for (uint32_t h = 0; h < 65536; ++h) (*t)[h] = fp16_to_f32(static_cast<uint16_t>(h));
    return t;
  }();
  return *table;
}

// Reads values [first, first + n) of a cache row as floats.
template <KvType T>
struct RowReader;

template <>
struct RowReader<KvType::Q8_0> {
  static void read(const uint8_t* row, int64_t first, int64_t n, float* out) {
    const auto& lut = half_table();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t e = first + i;
      const uint8_t* block = row + (e / 32) * sizeof(kernels::BlockQ8_0);
      uint16_t d;
      std::memcpy(&d, block, 2);
      const auto q = static_cast<int8_t>(block[2 + e % 32]);
      out[i] = lut[d] * static_cast<float>(q);
    }
  }
};

// Later tokens of a prompt attend to more keys, so equal halves of the (token, head) pairs are
// unequal work (the second half of a prompt's pairs costs about three times the first): threads
// that run out take a few heads at a time from the others' pairs.
int64_t heads_per_piece(const AttentionShape& s) { return std::max<int32_t>(1, s.n_head / 4); }

// The query heads of (token, head) pairs [j, j1) that share token j's key/value head with pair j:
// the end of that run.
int64_t same_kv_head_end(int64_t j, int64_t j1, const AttentionShape& s) {
  const int32_t group = s.n_head / s.n_head_kv;
  const int64_t t = j / s.n_head;
  const int64_t h = j % s.n_head;
  return std::min(j1, t * s.n_head + (h / group + 1) * group);
}

// Each of n_q rows of scores (n_keys of them, rows ss apart) scaled, then softmax.
void scaled_softmax(float* scores, int64_t n_q, size_t ss, int64_t n_keys, float scale) {
  for (int64_t i = 0; i < n_q; ++i) {
    float* sc = scores + static_cast<size_t>(i) * ss;
    for (int64_t p = 0; p < n_keys; ++p) sc[p] *= scale;
    softmax(sc, n_keys);
  }
}

// Scores of one query against positions [0, n_keys) of a kv head, and the weighted sum of their
// values, through the attention kernels. F16 rows (the default cache) are read in place, by all
// the queries of a key/value head at once where the split gives a thread several of them (each
// pair's operations stay the same); F32 rows are read in place one query at a time, and Q8_0 rows
// are dequantized first.
template <KvType T>
void attend(const float* q, const KvRows& kv, int64_t n_tokens, int32_t pos0, const AttentionShape& s,
            float* out, ThreadPool& pool) {
  const kernels::AttnKernels& K = kernels::attn_kernels();
  const int32_t group = s.n_head / s.n_head_kv;
  const int64_t hd = s.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t n_ctx = pos0 + n_tokens;
  pool.parallel_for_balanced(n_tokens * s.n_head, [&](int64_t j0, int64_t j1) {
    std::vector<float> scores(static_cast<size_t>(n_ctx * (T == KvType::F16 ? group : 1)));
    std::vector<float> row(static_cast<size_t>(hd));
    for (int64_t j = j0; j < j1;) {
      const int64_t je = T == KvType::F16 ? same_kv_head_end(j, j1, s) : j + 1;
      const int64_t n_q = je - j;
      const int64_t t = j / s.n_head;
      const int32_t h = static_cast<int32_t>(j % s.n_head);
      const int64_t first = static_cast<int64_t>(h / group) * hd;
      const float* qh = q + (t * s.n_head + h) * hd;
      float* oh = out + (t * s.n_head + h) * hd;
      const int64_t n_keys = pos0 + t + 1;  // causal: positions 0 .. pos0 + t
      if constexpr (T == KvType::F16) {
        const auto qs = static_cast<size_t>(hd), ss = static_cast<size_t>(n_keys);
        K.dots_f16(qh, qs, n_q, reinterpret_cast<const uint16_t*>(kv.k) + first, kv.row_bytes / 2, n_keys, hd,
                   scores.data(), ss);
        scaled_softmax(scores.data(), n_q, ss, n_keys, scale);
        std::fill(oh, oh + n_q * hd, 0.0f);
        K.accum_f16(scores.data(), ss, n_q, reinterpret_cast<const uint16_t*>(kv.v) + first, kv.row_bytes / 2,
                    n_keys, oh, qs, hd);
      } else {
        for (int64_t p = 0; p < n_keys; ++p) {
          const uint8_t* kr = kv.k + static_cast<size_t>(p) * kv.row_bytes;
          float dot;
          if constexpr (T == KvType::F32) {
            dot = K.dot_f32(qh, reinterpret_cast<const float*>(kr) + first, hd);
          } else {
            RowReader<T>::read(kr, first, hd, row.data());
            dot = K.dot_f32(qh, row.data(), hd);
          }
          scores[static_cast<size_t>(p)] = dot * scale;
        }
        softmax(scores.data(), n_keys);
        std::fill(oh, oh + hd, 0.0f);
        for (int64_t p = 0; p < n_keys; ++p) {
          const uint8_t* vr = kv.v + static_cast<size_t>(p) * kv.row_bytes;
          const float w = scores[static_cast<size_t>(p)];
          if constexpr (T == KvType::F32) {
            K.axpy_f32(w, reinterpret_cast<const float*>(vr) + first, oh, hd);
          } else {
            RowReader<T>::read(vr, first, hd, row.data());
            K.axpy_f32(w, row.data(), oh, hd);
          }
        }
      }
      j = je;
    }
  }, 1, heads_per_piece(s));
}

// The paged twin of attend(): the same operations per (token, head), with the keys and values
// reached through the block table one block at a time.
template <KvType T>
void attend_paged(const float* q, std::span<const AttentionSlice> slices, const AttentionShape& s,
                  float* out, ThreadPool& pool) {
  const kernels::AttnKernels& K = kernels::attn_kernels();
  const int32_t group = s.n_head / s.n_head_kv;
  const int64_t hd = s.head_dim;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // Row r of the batch belongs to the slice whose [start, start + n_tokens) holds it.
  std::vector<int64_t> starts(slices.size() + 1, 0);
  int64_t max_ctx = 0;
  for (size_t i = 0; i < slices.size(); ++i) {
    starts[i + 1] = starts[i] + slices[i].n_tokens;
    max_ctx = std::max<int64_t>(max_ctx, slices[i].pos0 + slices[i].n_tokens);
  }
  const int64_t n_rows = starts.back();
  pool.parallel_for_balanced(n_rows * s.n_head, [&](int64_t j0, int64_t j1) {
    std::vector<float> scores(static_cast<size_t>(max_ctx * (T == KvType::F16 ? group : 1)));
    std::vector<float> row(static_cast<size_t>(hd));
    size_t si = 0;
    for (int64_t j = j0; j < j1;) {
      const int64_t je = T == KvType::F16 ? same_kv_head_end(j, j1, s) : j + 1;
      const int64_t n_q = je - j;
      const int64_t r = j / s.n_head;
      while (starts[si + 1] <= r) ++si;
      const AttentionSlice& sl = slices[si];
      const PagedKvRows& kv = sl.kv;
      const int64_t t = r - starts[si];
      const int32_t h = static_cast<int32_t>(j % s.n_head);
      const int64_t first = static_cast<int64_t>(h / group) * hd;
      const float* qh = q + ((sl.first + t) * s.n_head + h) * hd;
      float* oh = out + ((sl.first + t) * s.n_head + h) * hd;
      const int64_t n_keys = sl.pos0 + t + 1;
      const int64_t bs = kv.block_size;
      const size_t block_bytes = static_cast<size_t>(bs) * kv.row_bytes;
      auto key_row = [&](int64_t p) {
        return kv.k + static_cast<size_t>(kv.blocks[static_cast<size_t>(p / bs)]) * block_bytes +
               static_cast<size_t>(p % bs) * kv.row_bytes;
      };
      auto value_row = [&](int64_t p) {
        return kv.v + static_cast<size_t>(kv.blocks[static_cast<size_t>(p / bs)]) * block_bytes +
               static_cast<size_t>(p % bs) * kv.row_bytes;
      };
      if constexpr (T == KvType::F16) {
        const auto qs = static_cast<size_t>(hd), ss = static_cast<size_t>(n_keys);
        for (int64_t p0 = 0; p0 < n_keys; p0 += bs) {
          K.dots_f16(qh, qs, n_q, reinterpret_cast<const uint16_t*>(key_row(p0)) + first, kv.row_bytes / 2,
                     std::min(bs, n_keys - p0), hd, scores.data() + p0, ss);
        }
        scaled_softmax(scores.data(), n_q, ss, n_keys, scale);
        std::fill(oh, oh + n_q * hd, 0.0f);
        for (int64_t p0 = 0; p0 < n_keys; p0 += bs) {
          K.accum_f16(scores.data() + p0, ss, n_q, reinterpret_cast<const uint16_t*>(value_row(p0)) + first,
                      kv.row_bytes / 2, std::min(bs, n_keys - p0), oh, qs, hd);
        }
      } else {
        for (int64_t p = 0; p < n_keys; ++p) {
          const uint8_t* kr = key_row(p);
          float dot;
          if constexpr (T == KvType::F32) {
            dot = K.dot_f32(qh, reinterpret_cast<const float*>(kr) + first, hd);
          } else {
            RowReader<T>::read(kr, first, hd, row.data());
            dot = K.dot_f32(qh, row.data(), hd);
          }
          scores[static_cast<size_t>(p)] = dot * scale;
        }
        softmax(scores.data(), n_keys);
        std::fill(oh, oh + hd, 0.0f);
        for (int64_t p = 0; p < n_keys; ++p) {
          const uint8_t* vr = value_row(p);
          const float w = scores[static_cast<size_t>(p)];
          if constexpr (T == KvType::F32) {
            K.axpy_f32(w, reinterpret_cast<const float*>(vr) + first, oh, hd);
          } else {
            RowReader<T>::read(vr, first, hd, row.data());
            K.axpy_f32(w, row.data(), oh, hd);
          }
        }
      }
      j = je;
    }
  }, 1, heads_per_piece(s));
}

}  // namespace

std::string_view kv_type_name(KvType t) {
  switch (t) {
    case KvType::F32: return "f32";
    case KvType::F16: return "f16";
    case KvType::Q8_0: return "q8_0";
  }
  return "?";
}

KvType parse_kv_type(std::string_view name) {
  std::string lower;
  for (char c : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (KvType t : {KvType::F32, KvType::F16, KvType::Q8_0}) {
    if (lower == kv_type_name(t)) return t;
  }
  fail<InvalidArgument>("KV cache type '{}' is not one of f32, f16, q8_0", name);
}

size_t kv_row_bytes(KvType t, int64_t n) {
  switch (t) {
    case KvType::F32: return static_cast<size_t>(n) * 4;
    case KvType::F16: return static_cast<size_t>(n) * 2;
    case KvType::Q8_0:
      if (n % 32 != 0) {
        fail<InvalidArgument>("a Q8_0 KV cache needs rows that are a multiple of 32 values; this "
                              "model's key/value rows have {} (use f16)", n);
      }
      return static_cast<size_t>(n / 32) * sizeof(kernels::BlockQ8_0);
  }
  return 0;
}

void store_kv_row(KvType t, const float* src, uint8_t* dst, int64_t n) {
  switch (t) {
    case KvType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); break;
    // The instruction-set variants of the activation converters: the reference's bits (isa_test),
    // several times faster than the scalar quantize_row for F16.
    case KvType::F16: kernels::quantize_activation(GgmlType::F16, src, dst, n); break;
    case KvType::Q8_0: kernels::quantize_activation(GgmlType::Q8_0, src, dst, n); break;
  }
}

void attention(const float* q, const KvRows& kv, int64_t n_tokens, int32_t pos0,
               const AttentionShape& s, float* out, ThreadPool& pool) {
  if (s.n_head <= 0 || s.n_head_kv <= 0 || s.n_head % s.n_head_kv != 0 || s.head_dim <= 0) {
    fail<InvalidArgument>("attention: {} query heads cannot share {} key/value heads", s.n_head,
                          s.n_head_kv);
  }
  if (kv.row_bytes != kv_row_bytes(kv.type, static_cast<int64_t>(s.n_head_kv) * s.head_dim)) {
    fail<InvalidArgument>("attention: KV rows of {} bytes do not hold {} {} values", kv.row_bytes,
                          s.n_head_kv * s.head_dim, kv_type_name(kv.type));
  }
  ProductProfile* profile = n_tokens == 1 ? product_profile() : nullptr;
  const auto t0 = profile != nullptr ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  switch (kv.type) {
    case KvType::F32: attend<KvType::F32>(q, kv, n_tokens, pos0, s, out, pool); break;
    case KvType::F16: attend<KvType::F16>(q, kv, n_tokens, pos0, s, out, pool); break;
    case KvType::Q8_0: attend<KvType::Q8_0>(q, kv, n_tokens, pos0, s, out, pool); break;
  }
  if (profile != nullptr) {
    // One token reads the key and the value rows of positions 0 .. pos0.
    profile->add("attention (" + std::string(kv_type_name(kv.type)) + " cache)",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                 2.0 * static_cast<double>(pos0 + 1) * static_cast<double>(kv.row_bytes));
  }
}

void attention_paged(const float* q, std::span<const AttentionSlice> slices,
                     const AttentionShape& s, float* out, ThreadPool& pool) {
  if (s.n_head <= 0 || s.n_head_kv <= 0 || s.n_head % s.n_head_kv != 0 || s.head_dim <= 0) {
    fail<InvalidArgument>("attention: {} query heads cannot share {} key/value heads", s.n_head,
                          s.n_head_kv);
  }
  if (slices.empty()) return;
  const KvType type = slices[0].kv.type;
  const size_t row_bytes = kv_row_bytes(type, static_cast<int64_t>(s.n_head_kv) * s.head_dim);
  for (const AttentionSlice& sl : slices) {
    const PagedKvRows& kv = sl.kv;
    if (kv.type != type || kv.row_bytes != row_bytes) {
      fail<InvalidArgument>("attention: KV rows of {} bytes ({}) do not hold {} {} values",
                            kv.row_bytes, kv_type_name(kv.type), s.n_head_kv * s.head_dim,
                            kv_type_name(type));
    }
    if (sl.n_tokens < 0 || sl.pos0 < 0 || kv.block_size <= 0) {
      fail<InvalidArgument>("attention: a slice of {} tokens at position {} with blocks of {}",
                            sl.n_tokens, sl.pos0, kv.block_size);
    }
    const int64_t need = (sl.pos0 + sl.n_tokens + kv.block_size - 1) / kv.block_size;
    if (static_cast<int64_t>(kv.blocks.size()) < need) {
      fail<InvalidArgument>("attention: {} positions need {} blocks of {}; the table has {}",
                            sl.pos0 + sl.n_tokens, need, kv.block_size, kv.blocks.size());
    }
  }
  switch (type) {
    case KvType::F32: attend_paged<KvType::F32>(q, slices, s, out, pool); break;
    case KvType::F16: attend_paged<KvType::F16>(q, slices, s, out, pool); break;
    case KvType::Q8_0: attend_paged<KvType::Q8_0>(q, slices, s, out, pool); break;
  }
}

}  // namespace sq::ops
