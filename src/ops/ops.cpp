#include "ops/ops.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <vector>

#include "base/detmath.h"
#include "base/error.h"
#include "base/thread_pool.h"
#include "kernels/attn.h"
#include "kernels/quant.h"
#include "kernels/repack.h"
#include "kernels/types.h"

namespace sq {

size_t TensorView::row_size() const {
  // Any type GGML defines (a view may describe a tensor squeeze does not compute with).
  const auto info = type_info(type);
  return info ? static_cast<size_t>(ne[0] / info->block_elems) * info->block_bytes : 0;
}

TensorView TensorView::slice(int64_t i) const {
  TensorView s = *this;
  s.ne[2] = 1;
  s.ne[3] = 1;
  s.n_dims = 2;
  s.data = data + static_cast<size_t>(i) * row_size() * static_cast<size_t>(ne[1]);
  s.name = name + "[" + std::to_string(i) + "]";
  return s;
}

namespace ops {

namespace {

void require_f32_vector(const TensorView& t, int64_t width, const char* what) {
  if (t.empty() || t.type != GgmlType::F32 || t.n_elements() != width) {
    fail<InvalidArgument>("{} '{}': expected an F32 vector of {} elements, got {} of {} elements",
                          what, t.name, width, type_name(t.type), t.n_elements());
  }
}

}  // namespace

void rms_norm(const float* x, const TensorView& weight, float eps, int64_t n_tokens, int64_t width,
              float* out) {
  require_f32_vector(weight, width, "norm weight");
  const auto* w = reinterpret_cast<const float*>(weight.data);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float* xr = x + t * width;
    float* o = out + t * width;
    double ss = 0.0;
    for (int64_t i = 0; i < width; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(width) + eps));
    for (int64_t i = 0; i < width; ++i) o[i] = (xr[i] * scale) * w[i];
  }
}

namespace {

thread_local ProductProfile* t_profile = nullptr;

// The profile's name of a group of products: "TYPE n_inxn_out" per part, joined by " + ".
std::string products_name(std::span<const MatmulPart> parts) {
  std::string name;
  for (const MatmulPart& p : parts) {
    if (!name.empty()) name += " + ";
    name += std::string(type_name(p.w->type)) + " " + std::to_string(p.w->ne[0]) + "x" + std::to_string(p.w->ne[1]);
  }
  return name;
}

constexpr int64_t kRowGrain = 16;    // a multiple of every kernel's tile height
constexpr int64_t kTokenBlock = 64;  // tokens whose activations stay cached across a row block
constexpr size_t kStealBytes = 64 * 1024;     // weights in a piece taken from another thread's rows
constexpr size_t kRowBlockBytes = 256 * 1024;  // weights of a row block of the tiled kernels

void check_matrix(const TensorView& w, const TensorView* bias) {
  if (w.empty() || !type_supported(w.type)) {
    fail<UnsupportedError>("tensor '{}' has type {}, which squeeze cannot multiply with", w.name,
                           type_name(w.type));
  }
  if (w.ne[2] != 1 || w.ne[3] != 1) {
    fail<InvalidArgument>("matmul: tensor '{}' is not a matrix", w.name);
  }
  if (bias != nullptr && !bias->empty()) require_f32_vector(*bias, w.ne[1], "bias");
}

// Checks the parts of a group (one input width) and lists the activation formats they need other
// than F32, each once, sized for n_tokens.
RoundedInput input_for(std::span<const MatmulPart> parts, const float* x, int64_t n_tokens) {
  RoundedInput in;
  in.x = x;
  in.n_tokens = n_tokens;
  if (parts.empty()) return in;
  in.n_in = parts[0].w->ne[0];
  for (const MatmulPart& p : parts) {
    check_matrix(*p.w, p.bias);
    if (p.w->ne[0] != in.n_in) {
      fail<InvalidArgument>("matmul: tensors '{}' and '{}' take {} and {} inputs; a group shares its input",
                            parts[0].w->name, p.w->name, in.n_in, p.w->ne[0]);
    }
    const GgmlType vt = kernels::vec_dot_type(p.w->type);
    if (vt == GgmlType::F32) continue;
    bool seen = false;
    for (const RoundedInput::Format& f : in.formats) seen = seen || f.type == vt;
    if (seen) continue;
    RoundedInput::Format f;
    f.type = vt;
    f.stride = kernels::row_bytes(vt, in.n_in);
    f.data.resize(f.stride * static_cast<size_t>(n_tokens));
    in.formats.push_back(std::move(f));
  }
  return in;
}

// fn(t0, t1) over the tokens of a batch split over the pool (a balanced region: a thread that runs
// out takes tokens from another, and the pool may run it alone); one token stays on the caller,
// where a parallel region costs more than the work.
template <class Fn>
void by_tokens(int64_t n_tokens, Fn& fn, ThreadPool& pool) {
  if (n_tokens == 1) {
    fn(0, 1);
  } else {
    pool.parallel_for_balanced(n_tokens, fn, 1, 1);
  }
}

// Token t of x (already normalized, or the caller's floats) rounded into every format of in.
void round_token(RoundedInput& in, const float* xt, int64_t t) {
  for (RoundedInput::Format& f : in.formats) {
    kernels::quantize_activation(f.type, xt, f.data.data() + static_cast<size_t>(t) * f.stride, in.n_in);
  }
}

// The rows a part's kernels read: x itself for F32 weights, else its rounded copy.
struct PartInput {
  const uint8_t* data = nullptr;
  size_t stride = 0;
};

PartInput part_input(const RoundedInput& in, const TensorView& w) {
  const GgmlType vt = kernels::vec_dot_type(w.type);
  if (vt == GgmlType::F32) {
    return {reinterpret_cast<const uint8_t*>(in.x), static_cast<size_t>(in.n_in) * sizeof(float)};
  }
  for (const RoundedInput::Format& f : in.formats) {
    if (f.type == vt) return {f.data.data(), f.stride};
  }
  fail<InvalidArgument>("matmul: tensor '{}' needs its input rounded to {}, which this input lacks",
                        w.name, type_name(vt));
}

// Output rows [r0, r1) of one product, on the calling thread. One token runs the multi-row kernel;
// a batch runs the tiled kernel (a tile of rows times a tile of tokens, so each weight block loaded
// serves several tokens) over blocks of rows and tokens sized to stay in the L2 cache. Each output
// element follows dot_row_q's operations exactly whatever the split or the tile it falls in
// (DESIGN.md, invariant 2).
void product_rows(const TensorView& w, const PartInput& qx, int64_t n_tokens, const TensorView* bias,
                  float* out, int64_t r0, int64_t r1) {
  if (r0 >= r1) return;
  const int64_t n_in = w.ne[0];
  const int64_t n_out = w.ne[1];
  const size_t w_stride = w.row_size();
  const int64_t group = kernels::interleaved_rows(w.type);
  if (r0 % group != 0) {
    // Interleaved rows (Q8_0_R16, Q4_0_R16) are computed a group at a time: a range that starts inside one
    // (a part after one whose rows are not a multiple of 16) computes its first group whole and
    // keeps the rows it owns. The loader gives that layout to whole groups only, so this is rare.
    const int64_t g0 = r0 / group * group;
    const int64_t end = std::min(g0 + group, n_out);
    std::vector<float> tmp(static_cast<size_t>(group * n_tokens));
    // The tiled kernel takes any token count, one included.
    kernels::dot_tile_q(w.type, w.row(g0), w_stride, end - g0, qx.data, qx.stride, n_tokens, n_in, tmp.data(), group);
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t r = r0; r < std::min(r1, end); ++r) out[t * n_out + r] = tmp[static_cast<size_t>(t * group + r - g0)];
    }
  }
  const int64_t first = r0;  // the bias, below, goes to every row of the range
  r0 = std::min(r1, (r0 + group - 1) / group * group);  // past the group computed above, if any
  if (r0 < r1 && n_tokens == 1) {
    kernels::dot_rows_q(w.type, w.row(r0), w_stride, r1 - r0, qx.data, n_in, out + r0);
  } else if (r0 < r1) {
    // Rows of weights revisited for each token block: as many as stay in a core's L2 cache, since
    // the tiled kernels prepare each token's activations once per call (per block of rows). With a
    // single token block there is nothing to keep cached for the next one: one call over all the
    // rows given (matmul_group's pieces), so the kernel prepares each token's activations once per
    // piece.
    const int64_t row_block =
        std::max<int64_t>(kRowGrain, static_cast<int64_t>(kRowBlockBytes / w_stride) / kRowGrain * kRowGrain);
    const int64_t block = n_tokens <= kTokenBlock ? r1 - r0 : row_block;
    for (int64_t rb = r0; rb < r1; rb += block) {
      const int64_t rows = std::min(block, r1 - rb);
      for (int64_t tb = 0; tb < n_tokens; tb += kTokenBlock) {
        const int64_t tokens = std::min(kTokenBlock, n_tokens - tb);
        kernels::dot_tile_q(w.type, w.row(rb), w_stride, rows, qx.data + static_cast<size_t>(tb) * qx.stride,
                            qx.stride, tokens, n_in, out + tb * n_out + rb, n_out);
      }
    }
  }
  if (bias != nullptr && !bias->empty()) {
    const auto* b = reinterpret_cast<const float*>(bias->data);
    for (int64_t t = 0; t < n_tokens; ++t) {
      float* ot = out + t * n_out;
      for (int64_t r = first; r < r1; ++r) ot[r] = ot[r] + b[r];
    }
  }
}

}  // namespace

void matmul(const TensorView& w, const float* x, int64_t n_tokens, float* out, ThreadPool& pool,
            const TensorView* bias) {
  const MatmulPart part{&w, out, bias};
  matmul_group(std::span<const MatmulPart>(&part, 1), x, n_tokens, pool);
}

void matmul_group(std::span<const MatmulPart> parts, const float* x, int64_t n_tokens, ThreadPool& pool) {
  matmul_group(parts, round_input(parts, x, n_tokens, pool), pool);
}

RoundedInput round_input(std::span<const MatmulPart> parts, const float* x, int64_t n_tokens, ThreadPool& pool) {
  RoundedInput in = input_for(parts, x, n_tokens);
  if (in.formats.empty()) return in;
  auto run = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) round_token(in, x + t * in.n_in, t);
  };
  by_tokens(n_tokens, run, pool);
  return in;
}

RoundedInput rms_norm_rounded(std::span<const MatmulPart> parts, const float* x, const TensorView& weight,
                              float eps, int64_t n_tokens, float* out, ThreadPool& pool) {
  RoundedInput in = input_for(parts, out, n_tokens);
  require_f32_vector(weight, in.n_in, "norm weight");
  const int64_t width = in.n_in;
  auto run = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      rms_norm(x + t * width, weight, eps, 1, width, out + t * width);
      round_token(in, out + t * width, t);
    }
  };
  by_tokens(n_tokens, run, pool);
  return in;
}

RoundedInput swiglu_rounded(std::span<const MatmulPart> parts, const float* gate, const float* up,
                            int64_t n_tokens, float* out, ThreadPool& pool) {
  RoundedInput in = input_for(parts, out, n_tokens);
  const int64_t width = in.n_in;
  auto run = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      swiglu(gate + t * width, up + t * width, out + t * width, width);
      round_token(in, out + t * width, t);
    }
  };
  by_tokens(n_tokens, run, pool);
  return in;
}

void matmul_group(std::span<const MatmulPart> parts, const RoundedInput& in, ThreadPool& pool) {
  if (parts.empty()) return;
  const int64_t n_tokens = in.n_tokens;
  int64_t total = 0;
  std::vector<PartInput> of_part;
  for (const MatmulPart& p : parts) {
    check_matrix(*p.w, p.bias);
    if (p.w->ne[0] != in.n_in) {
      fail<InvalidArgument>("matmul: tensor '{}' takes {} inputs; its input rows have {}", p.w->name,
                            p.w->ne[0], in.n_in);
    }
    total += p.w->ne[1];
    of_part.push_back(part_input(in, *p.w));
  }
  // The parts' rows one after the other, split over the threads in whole row tiles (never the
  // reduced dimension); a thread's range may span the end of one part and the start of the next.
  auto rows = [&](int64_t a, int64_t b) {
    int64_t first = 0;
    for (size_t i = 0; i < parts.size(); ++i) {
      const int64_t n_out = parts[i].w->ne[1];
      const int64_t r0 = std::max(a, first) - first;
      const int64_t r1 = std::min(b, first + n_out) - first;
      if (r0 < r1) product_rows(*parts[i].w, of_part[i], n_tokens, parts[i].bias, parts[i].out, r0, r1);
      first += n_out;
    }
  };
  // The two halves of a product often finish 10-15 % apart on a shared machine (one CPU slowed by
  // other work), so a thread that runs out takes pieces of the other's rows: 64 KiB of weights for
  // one token (each call prepares the activations again), 128 KiB for a batch of up to 64 tokens,
  // a row block for a prompt (each block prepares its tokens anyway).
  size_t widest = 1;
  for (const MatmulPart& p : parts) widest = std::max(widest, p.w->row_size());
  auto rows_of = [&](size_t bytes) {
    return std::max<int64_t>(kRowGrain, static_cast<int64_t>(bytes / widest) / kRowGrain * kRowGrain);
  };
  const size_t piece = n_tokens == 1             ? kStealBytes
                       : n_tokens <= kTokenBlock ? 2 * kStealBytes
                                                 : kRowBlockBytes;
  ProductProfile* profile = n_tokens == 1 ? t_profile : nullptr;
  if (profile == nullptr) {
    pool.parallel_for_balanced(total, rows, kRowGrain, rows_of(piece));
    return;
  }
  double bytes = 0;
  for (const MatmulPart& p : parts) bytes += static_cast<double>(p.w->n_bytes());
  const auto t0 = std::chrono::steady_clock::now();
  pool.parallel_for_balanced(total, rows, kRowGrain, rows_of(piece));
  profile->add(products_name(parts), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
               bytes);
}

void ProductProfile::add(const std::string& products, double seconds, double bytes) {
  for (ProductTime& e : entries_) {
    if (e.products == products) {
      ++e.calls;
      e.seconds += seconds;
      e.bytes += bytes;
      return;
    }
  }
  entries_.push_back({products, 1, seconds, bytes});
}

double ProductProfile::seconds() const {
  double s = 0;
  for (const ProductTime& e : entries_) s += e.seconds;
  return s;
}

ProductProfile* product_profile() { return t_profile; }

ProductProfile* set_product_profile(ProductProfile* profile) {
  ProductProfile* previous = t_profile;
  t_profile = profile;
  return previous;
}

void embed(const TensorView& table, std::span<const int32_t> tokens, float* out) {
  if (table.empty() || !type_supported(table.type)) {
    fail<UnsupportedError>("embedding '{}' has type {}, which squeeze cannot read", table.name,
                           type_name(table.type));
  }
  const int64_t width = table.ne[0];
  const int64_t group = kernels::interleaved_rows(table.type);
  std::vector<uint8_t> row(group > 1 ? table.row_size() : 0);  // an interleaved row, unpacked
  for (size_t t = 0; t < tokens.size(); ++t) {
    if (tokens[t] < 0 || tokens[t] >= table.n_rows()) {
      fail<InvalidArgument>("token id {} is out of range: the vocabulary has {} tokens", tokens[t],
                            table.n_rows());
    }
    if (group > 1) {
      // A row of sixteen interleaved (a tied output matrix in Q8_0_R16 or Q4_0_R16): its blocks
      // unpacked first.
      kernels::unpack_row_r16(table.type, table.row(tokens[t] / group * group), tokens[t] % group, row.data(), width);
      kernels::dequantize_row(kernels::unpacked_type(table.type), row.data(), out + t * width, width);
      continue;
    }
    kernels::dequantize_row(table.type, table.row(tokens[t]), out + t * width, width);
  }
}

RopeTable rope_table(int64_t n_tokens, int32_t pos0, const RopeOptions& o) {
  if (o.n_rot <= 0 || o.n_rot % 2 != 0) {
    fail<InvalidArgument>("rope: rotary dimensions {} must be even and positive", o.n_rot);
  }
  const int32_t half = o.n_rot / 2;
  if (!o.freq_factors.empty() && static_cast<int32_t>(o.freq_factors.size()) != half) {
    fail<InvalidArgument>("rope: {} frequency factors given; expected {}", o.freq_factors.size(), half);
  }
  RopeTable table;
  table.mode = o.mode;
  table.n_rot = o.n_rot;
  table.n_tokens = n_tokens;
  table.cos.resize(static_cast<size_t>(n_tokens * half));
  table.sin.resize(table.cos.size());
  std::vector<float> freq(static_cast<size_t>(half));
  for (int32_t i = 0; i < half; ++i) {
    // squeeze's own pow, sin and cos (DESIGN.md, invariant 3): the C library's differ in the last
    // bit between machines, and the compressor needs the same angles everywhere.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(o.n_rot);
    float f = 1.0f / static_cast<float>(detmath::pow(o.freq_base, exponent));
    if (!o.freq_factors.empty()) f /= o.freq_factors[static_cast<size_t>(i)];
    freq[static_cast<size_t>(i)] = f;
  }
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float pos = static_cast<float>(pos0 + t) * o.freq_scale;
    for (int32_t i = 0; i < half; ++i) {
      const float theta = pos * freq[static_cast<size_t>(i)];
      table.cos[static_cast<size_t>(t * half + i)] = static_cast<float>(detmath::cos(theta));
      table.sin[static_cast<size_t>(t * half + i)] = static_cast<float>(detmath::sin(theta));
    }
  }
  return table;
}

namespace {

// Token t's row of n_heads heads, rotated in place by row t of the table.
void rope_row(float* row, int64_t t, int32_t n_heads, int32_t head_dim, const RopeTable& table) {
  const int32_t half = table.n_rot / 2;
  const bool adjacent = table.mode == RopeMode::Adjacent;
  const float* cs = table.cos.data() + t * half;
  const float* sn = table.sin.data() + t * half;
  for (int32_t h = 0; h < n_heads; ++h) {
    float* v = row + static_cast<int64_t>(h) * head_dim;
    for (int32_t i = 0; i < half; ++i) {
      const int32_t a = adjacent ? 2 * i : i;
      const int32_t b = adjacent ? 2 * i + 1 : i + half;
      const float c = cs[i], s = sn[i];
      const float x0 = v[a], x1 = v[b];
      v[a] = x0 * c - x1 * s;
      v[b] = x0 * s + x1 * c;
    }
  }
}

void check_rope(int64_t t1, int32_t head_dim, const RopeTable& table) {
  if (table.n_rot > head_dim || t1 > table.n_tokens) {
    fail<InvalidArgument>("rope: a table for {} dimensions of {} tokens cannot rotate {} tokens of "
                          "heads of {}", table.n_rot, table.n_tokens, t1, head_dim);
  }
}

}  // namespace

void rope(float* x, int64_t n_tokens, int32_t n_heads, int32_t head_dim, const RopeTable& table) {
  rope_tokens(x, 0, n_tokens, n_heads, head_dim, table);
}

void rope_tokens(float* x, int64_t t0, int64_t t1, int32_t n_heads, int32_t head_dim, const RopeTable& table) {
  check_rope(t1, head_dim, table);
  const int64_t width = static_cast<int64_t>(n_heads) * head_dim;
  for (int64_t t = t0; t < t1; ++t) rope_row(x + t * width, t, n_heads, head_dim, table);
}

void rope_store_key(KvType type, const float* k, int64_t t, int32_t n_heads, int32_t head_dim,
                    const RopeTable& table, uint8_t* dst, std::span<float> scratch) {
  check_rope(t + 1, head_dim, table);
  const int64_t width = static_cast<int64_t>(n_heads) * head_dim;
  if (static_cast<int64_t>(scratch.size()) < width) {
    fail<InvalidArgument>("rope_store_key: {} floats of scratch for a key row of {}", scratch.size(), width);
  }
  std::copy_n(k, width, scratch.data());
  rope_row(scratch.data(), t, n_heads, head_dim, table);
  store_kv_row(type, scratch.data(), dst, width);
}

void rope(float* x, int64_t n_tokens, int32_t n_heads, int32_t head_dim, int32_t pos0,
          const RopeOptions& o) {
  rope(x, n_tokens, n_heads, head_dim, rope_table(n_tokens, pos0, o));
}

void swiglu(const float* gate, const float* up, float* out, int64_t n) {
  // silu(g) = g / (1 + exp(-g)) with squeeze's own exp (DESIGN.md, invariant 3), in the kernels of
  // the instruction set in use (the same bits in each).
  kernels::attn_kernels().silu_mul(gate, up, out, n);
}

void softmax(float* x, int64_t n) {
  // Sixteen running maxima and sixteen partial sums (element i in lane i % 16), folded at the end:
  // the loops vectorize, and no chain of dependent additions limits them. The same order on every
  // machine; the maximum is exact whatever the order.
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  float lane_max[16];
  std::fill(lane_max, lane_max + 16, kNegInf);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) lane_max[j] = std::max(lane_max[j], x[i + j]);
  }
  for (int j = 0; i + j < n; ++j) lane_max[j] = std::max(lane_max[j], x[i + j]);
  float mx = lane_max[0];
  for (int j = 1; j < 16; ++j) mx = std::max(mx, lane_max[j]);
  if (mx == kNegInf) {
    for (int64_t k = 0; k < n; ++k) x[k] = 1.0f / static_cast<float>(n);
    return;
  }
  // squeeze's own exponential: the same bits on every machine (DESIGN.md, invariant 3).
  kernels::attn_kernels().exp_sub(x, mx, n);
  double lane_sum[16] = {};
  for (i = 0; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) lane_sum[j] += x[i + j];
  }
  for (int j = 0; i + j < n; ++j) lane_sum[j] += x[i + j];
  for (int width = 8; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) lane_sum[j] = lane_sum[j] + lane_sum[j + width];
  }
  const float inv = static_cast<float>(1.0 / lane_sum[0]);
  for (int64_t k = 0; k < n; ++k) x[k] *= inv;
}

}  // namespace ops
}  // namespace sq
