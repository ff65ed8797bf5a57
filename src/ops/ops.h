// Operations of the forward pass. Each op checks shapes and types (throwing InvalidArgument on
// misuse) and then runs kernels that neither throw nor allocate (STYLE.md, item 6).
//
// Activations are row-major [n_tokens, width] f32 arrays. Every op computes an output element by
// the same sequence of floating-point operations whatever the number of tokens or threads
// (DESIGN.md, invariant 2): work is split over outputs, reductions run in a fixed order.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ops/tensor.h"

namespace sq {

class ThreadPool;

namespace ops {

// out[t] = x[t] / rms(x[t]) * weight, for each of n_tokens rows of `width` (weight: F32 [width]).
void rms_norm(const float* x, const TensorView& weight, float eps, int64_t n_tokens, int64_t width,
              float* out);

// out[t, r] = sum_i W[r, i] * x[t, i]  (+ bias[r] when bias is not empty), for W of ne {n_in, n_out}.
// As llama.cpp does, each token's row x[t] is first rounded to the activation format W's type pairs
// with (kernels::vec_dot_type: F16 for F16, BF16 for BF16, 8-bit blocks for the quantized types),
// and the dot products are integer ones per block (kernels::dot_row_q); F32 weights use x exactly.
// Allocates that rounded copy of x, n_tokens * row_bytes(vec_dot_type, n_in) bytes, once per call.
// The kernels are the variant chosen at start-up (kernels/isa.h): the multi-row kernel for one
// token, the tiled kernel (rows x tokens) for a batch; output rows are split over the pool's
// threads. The result is bit-identical whatever the variant, batch or thread count.
void matmul(const TensorView& w, const float* x, int64_t n_tokens, float* out, ThreadPool& pool,
            const TensorView* bias = nullptr);

// One product of matmul_group: out = x W^T (+ bias), W of ne {n_in, n_out}.
struct MatmulPart {
  const TensorView* w = nullptr;
  float* out = nullptr;                // [n_tokens, n_out]
  const TensorView* bias = nullptr;    // or empty
};

// Several products of the same activations (a layer's query, key and value, or its gate and up
// projections) as matmul computes each one, bit for bit, but in one parallel region: x is rounded
// once per activation format, and the rows of all the parts, taken one after the other, are split
// over the threads together, so there is one hand-out and one wait instead of one per part.
void matmul_group(std::span<const MatmulPart> parts, const float* x, int64_t n_tokens, ThreadPool& pool);

// The activations of a group of products as their kernels read them: the floats x, and each token's
// row rounded once to every activation format the parts' weights pair with (vec_dot_type).
struct RoundedInput {
  struct Format {
    GgmlType type = GgmlType::F32;
    size_t stride = 0;           // bytes per token
    std::vector<uint8_t> data;   // [n_tokens, stride]
  };
  const float* x = nullptr;
  int64_t n_tokens = 0;
  int64_t n_in = 0;
  std::vector<Format> formats;  // the parts' formats other than F32, each once
};

// x rounded for the parts (one parallel region over the tokens of a batch).
RoundedInput round_input(std::span<const MatmulPart> parts, const float* x, int64_t n_tokens, ThreadPool& pool);
// RMSNorm fused with the rounding of its output: out = rms_norm(x) as rms_norm computes it, and
// each normalized row is rounded for the parts while it is still in the L1 cache (one pass over
// the tokens instead of two, split over the pool by tokens). Then matmul_group(parts, result)
// gives the bits of rms_norm followed by matmul_group(parts, out).
RoundedInput rms_norm_rounded(std::span<const MatmulPart> parts, const float* x, const TensorView& weight,
                              float eps, int64_t n_tokens, float* out, ThreadPool& pool);
// SwiGLU fused the same way: out = swiglu(gate, up) for n_tokens rows of the parts' input width,
// each row rounded for the parts (the feed-forward down projection) as soon as it is computed.
RoundedInput swiglu_rounded(std::span<const MatmulPart> parts, const float* gate, const float* up,
                            int64_t n_tokens, float* out, ThreadPool& pool);
void matmul_group(std::span<const MatmulPart> parts, const RoundedInput& in, ThreadPool& pool);

// Where a generated token's time goes, product by product (`squeeze bench --profile`): while a
// profile is installed on a thread, every one-token matmul_group that thread issues is timed (its
// parallel region, from hand-out to the last thread's end) and counted under its parts' types and
// shapes, and so is every one-token attention() (under "attention (TYPE cache)"). Off by default;
// the cost when off is one thread-local read per call.
struct ProductTime {
  std::string products;  // the parts, e.g. "Q8_0x16 896x4864 + Q8_0x16 896x4864" (n_in x n_out)
  int64_t calls = 0;
  double seconds = 0;
  double bytes = 0;  // weight bytes the calls read (attention: the cache rows' bytes)
};
class ProductProfile {
 public:
  void add(const std::string& products, double seconds, double bytes);
  // In the order the products were first seen (a token's order).
  const std::vector<ProductTime>& entries() const { return entries_; }
  double seconds() const;  // all the entries' time

 private:
  std::vector<ProductTime> entries_;
};
// Installs `profile` for the calling thread (nullptr removes it); returns the previous one.
ProductProfile* set_product_profile(ProductProfile* profile);
// The calling thread's profile, or nullptr.
ProductProfile* product_profile();

// Looks up rows of an embedding table of any supported type: out[t] = dequantized row tokens[t].
void embed(const TensorView& table, std::span<const int32_t> tokens, float* out);

enum class RopeMode { Adjacent, Neox };

struct RopeOptions {
  RopeMode mode = RopeMode::Adjacent;
  int32_t n_rot = 0;        // leading dimensions of each head that rotate (even)
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;  // positions are multiplied by this (linear scaling)
  std::span<const float> freq_factors;  // [n_rot/2] divisors of each frequency (Llama 3.1), or empty
};

// The rotation angles of tokens at positions pos0 .. pos0 + n_tokens - 1: computed once per forward
// pass and shared by every layer and by Q and K.
struct RopeTable {
  RopeMode mode = RopeMode::Adjacent;
  int32_t n_rot = 0;
  int64_t n_tokens = 0;
  std::vector<float> cos, sin;  // [n_tokens, n_rot / 2]
};
RopeTable rope_table(int64_t n_tokens, int32_t pos0, const RopeOptions& options);

// Rotates each of n_heads heads of head_dim in x [n_tokens, n_heads * head_dim] in place.
void rope(float* x, int64_t n_tokens, int32_t n_heads, int32_t head_dim, const RopeTable& table);
// The same for tokens [t0, t1) only (rows t0 .. t1 - 1 of x and of the table): a batch split by tokens.
void rope_tokens(float* x, int64_t t0, int64_t t1, int32_t n_heads, int32_t head_dim, const RopeTable& table);
// The same, computing the table for positions pos0 ...
void rope(float* x, int64_t n_tokens, int32_t n_heads, int32_t head_dim, int32_t pos0,
          const RopeOptions& options);

// out = silu(gate) * up, elementwise over n values.
void swiglu(const float* gate, const float* up, float* out, int64_t n);

// In-place softmax over n values, in a fixed order. -inf entries get probability 0.
void softmax(float* x, int64_t n);

// How the KV cache stores a position's keys or values (a row of n_head_kv * head_dim values).
enum class KvType {
  F32,
  F16,   // the default: half the memory of F32, exact enough that the logits do not move
  Q8_0,  // blocks of 32 int8 with an F16 scale; the row length must be a multiple of 32
};

std::string_view kv_type_name(KvType t);
// Parses "f32", "f16" or "q8_0" (any case); throws InvalidArgument naming the value and the choices.
KvType parse_kv_type(std::string_view name);
// Bytes of one row of n values; InvalidArgument when Q8_0 is asked for n not a multiple of 32.
size_t kv_row_bytes(KvType t, int64_t n);
// Converts one row of n floats into the cache format.
void store_kv_row(KvType t, const float* src, uint8_t* dst, int64_t n);
// RoPE fused with the KV-cache write: token t's key row k (n_heads * head_dim floats, left as it is)
// rotated by row t of the table into scratch (as many floats, stays in the L1 cache) and converted
// into the cache format at dst; the bits of rope() followed by store_kv_row().
void rope_store_key(KvType type, const float* k, int64_t t, int32_t n_heads, int32_t head_dim,
                    const RopeTable& table, uint8_t* dst, std::span<float> scratch);

// Where one position's key and value rows go in a cache (kv_row_bytes each).
struct KvSlot {
  uint8_t* k = nullptr;
  uint8_t* v = nullptr;
};

struct AttentionShape {
  int32_t n_head = 0;
  int32_t n_head_kv = 0;
  int32_t head_dim = 0;
};

// Keys and values of positions 0, 1, ... as consecutive rows of row_bytes.
struct KvRows {
  const uint8_t* k = nullptr;
  const uint8_t* v = nullptr;
  KvType type = KvType::F32;
  size_t row_bytes = 0;
};

// Causal multi-head attention with grouped K/V heads. q: [n_tokens, n_head * head_dim], token t at
// position pos0 + t; kv holds rows for positions 0 .. pos0 + n_tokens - 1 (the new tokens
// included). out: [n_tokens, n_head * head_dim]. Each (token, head) is computed by the same
// operations whatever the batch, so results are batch- and thread-invariant.
void attention(const float* q, const KvRows& kv, int64_t n_tokens, int32_t pos0,
               const AttentionShape& shape, float* out, ThreadPool& pool);

// Keys and values of one sequence in a paged cache (model/paged_kv.h): position p is row
// p % block_size of block blocks[p / block_size], and block b's rows start at
// k + b * block_size * row_bytes (the same for v).
struct PagedKvRows {
  const uint8_t* k = nullptr;  // one layer's key rows of the whole pool: [n_blocks, block_size, row_bytes]
  const uint8_t* v = nullptr;  // the same for values
  KvType type = KvType::F32;
  size_t row_bytes = 0;
  int32_t block_size = 0;
  std::span<const int32_t> blocks;  // the sequence's block table
};

// One sequence's rows in a batched attention call: q and out rows [first, first + n_tokens), the
// tokens at positions pos0, pos0 + 1, ..; kv holds that sequence's positions 0 .. pos0 + n_tokens - 1.
struct AttentionSlice {
  int64_t first = 0;
  int64_t n_tokens = 0;
  int32_t pos0 = 0;
  PagedKvRows kv;
};

// attention() for several sequences at once, each over its own paged rows. A (token, head) is
// computed by exactly the operations attention() uses for the same position over contiguous rows
// (the kernels work key by key, so cutting the keys at block edges changes nothing): the output
// is bit-identical whatever the batch, the block layout or the thread count. Throws
// InvalidArgument for a shape or block table that does not fit.
void attention_paged(const float* q, std::span<const AttentionSlice> slices,
                     const AttentionShape& shape, float* out, ThreadPool& pool);

}  // namespace ops
}  // namespace sq
