#include "model/blocks.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <numeric>

#include "base/error.h"
#include "base/thread_pool.h"
#include "model/gguf.h"
#include "model/kv_cache.h"
#include "model/paged_kv.h"
#include "ops/ops.h"

namespace sq {

namespace {

int32_t to_i32(const GgufFile& file, const std::string& key, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    fail<FormatError>("{}: metadata '{}' is {}; expected a value in [{}, {}]", file.name(), key, v,
                      lo, hi);
  }
  return static_cast<int32_t>(v);
}

TensorView view_of(const GgufFile& file, const GgufTensorInfo& ti) {
  if (!ti.type_known() || !type_supported(ti.type())) {
    fail<UnsupportedError>(
        "{}: tensor '{}' has type {}, which squeeze does not support (supported: F32, F16, BF16, "
        "Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)",
        file.name(), ti.name, type_name(ti.type_id));
  }
  return tensor_view(ti);
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

TensorView check_shape(const GgufFile& file, const GgufTensorInfo& ti,
                       std::initializer_list<int64_t> shape) {
  std::vector<int64_t> want(shape);
  std::vector<int64_t> seen(ti.ne.begin(), ti.ne.end());
  // Trailing dimensions of 1 are the same shape.
  while (seen.size() > 1 && seen.back() == 1) seen.pop_back();
  while (want.size() > 1 && want.back() == 1) want.pop_back();
  if (seen != want) {
    fail<FormatError>("{}: tensor '{}' has shape {}; the hyper-parameters need {}", file.name(),
                      ti.name, shape_str(seen), shape_str(want));
  }
  return view_of(file, ti);
}

}  // namespace

TensorView tensor_view(const GgufTensorInfo& ti) {
  TensorView v;
  v.name = ti.name;
  v.type = ti.type();
  v.n_dims = static_cast<int>(ti.ne.size());
  for (size_t d = 0; d < ti.ne.size(); ++d) v.ne[d] = static_cast<int64_t>(ti.ne[d]);
  v.data = ti.data;
  return v;
}

ModelConfig read_decoder_config(const GgufFile& file, const std::string& arch) {
  const std::string p = arch + ".";
  auto req = [&](const std::string& k, int64_t lo, int64_t hi) {
    return to_i32(file, p + k, file.require_int(p + k), lo, hi);
  };
  auto opt = [&](const std::string& k, int64_t fallback, int64_t lo, int64_t hi) {
    return to_i32(file, p + k, file.get_int(p + k, fallback), lo, hi);
  };
  constexpr int64_t kBig = 1 << 24;
  ModelConfig c;
  c.arch = arch;
  c.n_embd = req("embedding_length", 1, kBig);
  c.n_layer = req("block_count", 1, 4096);
  c.n_head = req("attention.head_count", 1, 4096);
  c.n_head_kv = opt("attention.head_count_kv", c.n_head, 1, 4096);
  c.n_ff = req("feed_forward_length", 1, kBig);
  c.n_ctx_train = opt("context_length", 2048, 1, int64_t{1} << 30);
  c.head_dim = opt("attention.key_length", c.n_embd / c.n_head, 1, 65536);
  int32_t value_len = opt("attention.value_length", c.head_dim, 1, 65536);
  if (value_len != c.head_dim) {
    fail<UnsupportedError>("{}: key length {} differs from value length {}; squeeze needs them equal",
                           file.name(), c.head_dim, value_len);
  }
  c.n_rot = opt("rope.dimension_count", c.head_dim, 2, 65536);
  c.norm_eps = static_cast<float>(file.get_float(p + "attention.layer_norm_rms_epsilon", 1e-5));
  c.rope_freq_base = static_cast<float>(file.get_float(p + "rope.freq_base", 10000.0));
  std::string scaling = file.get_string(p + "rope.scaling.type", "none");
  if (scaling == "linear") {
    double factor = file.get_float(p + "rope.scaling.factor", 1.0);
    if (!(factor > 0)) {
      fail<FormatError>("{}: rope.scaling.factor is {}; expected a positive number", file.name(), factor);
    }
    c.rope_freq_scale = static_cast<float>(1.0 / factor);
  } else if (scaling != "none" && !scaling.empty()) {
    fail<UnsupportedError>("{}: rope scaling '{}' is not supported (supported: none, linear)",
                           file.name(), scaling);
  }
  // 2 and 3 name the first or the last token; 0 (none), 1 (mean) and what squeeze does not
  // compute (4, rank: a classifier head) pool by the mean, which is what a single vector per input
  // needs.
  switch (opt("pooling_type", 1, 0, 1024)) {
    case 2: c.pooling = Pooling::Cls; break;
    case 3: c.pooling = Pooling::Last; break;
    default: c.pooling = Pooling::Mean; break;
  }
  c.n_expert = opt("expert_count", 0, 0, 1024);
  c.n_expert_used = opt("expert_used_count", 0, 0, 1024);
  // The vocabulary size: the key when present, else the embedding's row count.
  if (auto v = file.get_int(p + "vocab_size")) {
    c.n_vocab = to_i32(file, p + "vocab_size", *v, 1, int64_t{1} << 30);
  } else if (const GgufTensorInfo* te = file.tensor("token_embd.weight"); te && te->ne.size() == 2) {
    c.n_vocab = to_i32(file, "token_embd.weight rows", static_cast<int64_t>(te->ne[1]), 1,
                       int64_t{1} << 30);
  } else {
    fail<FormatError>("{}: neither {}vocab_size nor a 2-D token_embd.weight gives the vocabulary size",
                      file.name(), p);
  }
  c.validate(file.name());
  return c;
}

void ModelConfig::validate(const std::string& source) const {
  if (n_head % n_head_kv != 0) {
    fail<FormatError>("{}: {} attention heads cannot be grouped over {} key/value heads", source,
                      n_head, n_head_kv);
  }
  if (n_rot > head_dim || n_rot % 2 != 0) {
    fail<FormatError>("{}: rope dimension count {} must be even and at most the head size {}", source,
                      n_rot, head_dim);
  }
  if (n_expert > 0 && (n_expert_used < 1 || n_expert_used > n_expert)) {
    fail<FormatError>("{}: expert_used_count is {}; expected 1 to expert_count ({})", source,
                      n_expert_used, n_expert);
  }
  if (!(norm_eps > 0) || !(rope_freq_base > 0)) {
    fail<FormatError>("{}: norm epsilon {} and rope base {} must be positive", source, norm_eps,
                      rope_freq_base);
  }
}

TensorView require_tensor(const GgufFile& file, const std::string& name,
                          std::initializer_list<int64_t> shape) {
  const GgufTensorInfo* ti = file.tensor(name);
  if (ti == nullptr) {
    fail<FormatError>("{}: tensor '{}' is missing", file.name(), name);
  }
  return check_shape(file, *ti, shape);
}

TensorView optional_tensor(const GgufFile& file, const std::string& name,
                           std::initializer_list<int64_t> shape) {
  const GgufTensorInfo* ti = file.tensor(name);
  if (ti == nullptr) return {};
  return check_shape(file, *ti, shape);
}

void bind_decoder(const GgufFile& file, Model& m, const DecoderBindOptions& options) {
  const ModelConfig& c = m.config;
  const int64_t E = c.n_embd, V = c.n_vocab, Q = c.q_dim(), KV = c.kv_dim(), F = c.n_ff;
  m.tok_embd = require_tensor(file, "token_embd.weight", {E, V});
  m.output_norm = require_tensor(file, "output_norm.weight", {E});
  m.output = optional_tensor(file, "output.weight", {E, V});
  m.output_tied = m.output.empty();
  if (m.output_tied) m.output = m.tok_embd;
  TensorView freqs = optional_tensor(file, "rope_freqs.weight", {c.n_rot / 2});
  if (!freqs.empty()) {
    if (freqs.type != GgmlType::F32) {
      fail<FormatError>("{}: rope_freqs.weight has type {}; expected F32", file.name(),
                        type_name(freqs.type));
    }
    const auto* f = reinterpret_cast<const float*>(freqs.data);
    m.rope_freq_factors.assign(f, f + c.n_rot / 2);
  }
  m.layers.resize(static_cast<size_t>(c.n_layer));
  for (int32_t l = 0; l < c.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    LayerWeights& L = m.layers[static_cast<size_t>(l)];
    L.attn_norm = require_tensor(file, b + "attn_norm.weight", {E});
    L.wq = require_tensor(file, b + "attn_q.weight", {E, Q});
    L.wk = require_tensor(file, b + "attn_k.weight", {E, KV});
    L.wv = require_tensor(file, b + "attn_v.weight", {E, KV});
    L.wo = require_tensor(file, b + "attn_output.weight", {Q, E});
    if (options.qkv_bias) {
      L.bq = require_tensor(file, b + "attn_q.bias", {Q});
      L.bk = require_tensor(file, b + "attn_k.bias", {KV});
      L.bv = require_tensor(file, b + "attn_v.bias", {KV});
    }
    L.ffn_norm = require_tensor(file, b + "ffn_norm.weight", {E});
    if (c.n_expert > 0) {
      const int64_t X = c.n_expert;
      L.ffn_gate_inp = require_tensor(file, b + "ffn_gate_inp.weight", {E, X});
      if (file.tensor(b + "ffn_gate_exps.weight") == nullptr &&
          file.tensor(b + "ffn_gate.0.weight") != nullptr) {
        fail<UnsupportedError>("{}: experts stored as separate tensors ('{}ffn_gate.0.weight') are not "
                               "supported; convert the file with a current GGUF converter, which "
                               "stacks them into '{}ffn_gate_exps.weight'",
                               file.name(), b, b);
      }
      L.ffn_gate_exps = require_tensor(file, b + "ffn_gate_exps.weight", {E, F, X});
      L.ffn_up_exps = require_tensor(file, b + "ffn_up_exps.weight", {E, F, X});
      L.ffn_down_exps = require_tensor(file, b + "ffn_down_exps.weight", {F, E, X});
    } else {
      L.ffn_gate = require_tensor(file, b + "ffn_gate.weight", {E, F});
      L.ffn_up = require_tensor(file, b + "ffn_up.weight", {E, F});
      L.ffn_down = require_tensor(file, b + "ffn_down.weight", {F, E});
    }
  }
}

namespace {

// Mixtral-style routing: softmax over the router's logits, the top expert_used_count experts
// (ties go to the lower index), their weights renormalised to sum to 1.
void moe_ffn(const Model& m, const LayerWeights& L, const float* cur, int64_t n_tokens, float* out,
             ThreadPool& pool) {
  const ModelConfig& c = m.config;
  const int64_t E = c.n_embd, F = c.n_ff, X = c.n_expert;
  std::vector<float> router(static_cast<size_t>(n_tokens * X));
  ops::matmul(L.ffn_gate_inp, cur, n_tokens, router.data(), pool);
  std::vector<float> gate(static_cast<size_t>(F)), up(static_cast<size_t>(F)),
      act(static_cast<size_t>(F)), down(static_cast<size_t>(E));
  std::vector<int32_t> order(static_cast<size_t>(X));
  for (int64_t t = 0; t < n_tokens; ++t) {
    float* probs = router.data() + t * X;
    ops::softmax(probs, X);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return probs[a] > probs[b]; });
    float total = 0.0f;
    for (int32_t k = 0; k < c.n_expert_used; ++k) total += probs[order[static_cast<size_t>(k)]];
    float* o = out + t * E;
    std::fill(o, o + E, 0.0f);
    for (int32_t k = 0; k < c.n_expert_used; ++k) {
      const int32_t e = order[static_cast<size_t>(k)];
      const float w = probs[e] / total;
      ops::matmul(L.ffn_gate_exps.slice(e), cur + t * E, 1, gate.data(), pool);
      ops::matmul(L.ffn_up_exps.slice(e), cur + t * E, 1, up.data(), pool);
      ops::swiglu(gate.data(), up.data(), act.data(), F);
      ops::matmul(L.ffn_down_exps.slice(e), act.data(), 1, down.data(), pool);
      for (int64_t i = 0; i < E; ++i) o[i] += w * down[static_cast<size_t>(i)];
    }
  }
}

ops::RopeOptions rope_options(const Model& m) {
  const ModelConfig& c = m.config;
  ops::RopeOptions rope;
  rope.mode = c.rope_style == RopeStyle::Neox ? ops::RopeMode::Neox : ops::RopeMode::Adjacent;
  rope.n_rot = c.n_rot;
  rope.freq_base = c.rope_freq_base;
  rope.freq_scale = c.rope_freq_scale;
  rope.freq_factors = m.rope_freq_factors;
  return rope;
}

// The decoder layers over the n tokens whose embeddings are in x (the residual stream, updated in
// place), shared by the single-sequence and the batched passes. Only where keys and values go and
// how attention reads them differ: slot_of(layer, t) is where token t's key and value rows go (in
// format kv_type), and attend(layer, q, out) writes attention's output for the queries q once the
// layer's new rows are stored.
template <class SlotOf, class Attend>
void run_layers(const Model& m, int64_t n, const ops::RopeTable& angles, std::vector<float>& x,
                ThreadPool& pool, ops::KvType kv_type, const SlotOf& slot_of, const Attend& attend) {
  const ModelConfig& c = m.config;
  const int64_t E = c.n_embd, Q = c.q_dim(), KV = c.kv_dim(), F = c.n_ff;
  std::vector<float> cur(static_cast<size_t>(n * E)), tmp(cur.size());
  std::vector<float> q(static_cast<size_t>(n * Q)), attn(q.size());
  std::vector<float> k(static_cast<size_t>(n * KV)), v(k.size());
  std::vector<float> gate, up;
  if (c.n_expert == 0) {
    gate.resize(static_cast<size_t>(n * F));
    up.resize(gate.size());
  }
  // The elementwise and per-token steps of a batch are split over the pool by tokens (each token's
  // values are computed by the same operations wherever it runs) in balanced regions; one token
  // stays on the caller, where a parallel region would cost more than the work.
  auto by_tokens = [&](auto&& fn) {
    if (n == 1) {
      fn(0, 1);
    } else {
      pool.parallel_for_balanced(n, fn, 1, 1);
    }
  };
  auto norm = [&](const TensorView& w) {
    by_tokens([&](int64_t t0, int64_t t1) {
      ops::rms_norm(x.data() + t0 * E, w, c.norm_eps, t1 - t0, E, cur.data() + t0 * E);
    });
  };
  auto add_tmp = [&] {
    by_tokens([&](int64_t t0, int64_t t1) {
      for (int64_t i = t0 * E; i < t1 * E; ++i) x[static_cast<size_t>(i)] += tmp[static_cast<size_t>(i)];
    });
  };
  for (int32_t l = 0; l < c.n_layer; ++l) {
    const LayerWeights& L = m.layers[static_cast<size_t>(l)];
    // The norm and the rounding of its output for the products in one pass (ops::rms_norm_rounded).
    const ops::MatmulPart qkv[] = {{&L.wq, q.data(), &L.bq}, {&L.wk, k.data(), &L.bk}, {&L.wv, v.data(), &L.bv}};
    ops::matmul_group(qkv, ops::rms_norm_rounded(qkv, x.data(), L.attn_norm, c.norm_eps, n, cur.data(), pool),
                      pool);
    // RoPE of the queries; the keys rotated on their way into the cache, beside the values.
    by_tokens([&](int64_t t0, int64_t t1) {
      std::vector<float> scratch(static_cast<size_t>(KV));
      ops::rope_tokens(q.data(), t0, t1, c.n_head, c.head_dim, angles);
      for (int64_t t = t0; t < t1; ++t) {
        const ops::KvSlot s = slot_of(l, t);
        ops::rope_store_key(kv_type, k.data() + t * KV, t, c.n_head_kv, c.head_dim, angles, s.k,
                            scratch);
        ops::store_kv_row(kv_type, v.data() + t * KV, s.v, KV);
      }
    });
    attend(l, q.data(), attn.data());
    ops::matmul(L.wo, attn.data(), n, tmp.data(), pool);
    add_tmp();

    if (c.n_expert > 0) {
      norm(L.ffn_norm);
      moe_ffn(m, L, cur.data(), n, tmp.data(), pool);
    } else {
      const ops::MatmulPart gate_up[] = {{&L.ffn_gate, gate.data(), nullptr}, {&L.ffn_up, up.data(), nullptr}};
      ops::matmul_group(
          gate_up, ops::rms_norm_rounded(gate_up, x.data(), L.ffn_norm, c.norm_eps, n, cur.data(), pool), pool);
      const ops::MatmulPart down[] = {{&L.ffn_down, tmp.data(), nullptr}};
      ops::matmul_group(down, ops::swiglu_rounded(down, gate.data(), up.data(), n, gate.data(), pool), pool);
    }
    add_tmp();
  }
}

}  // namespace

void run_decoder(const Model& m, std::span<const int32_t> tokens, int32_t pos0, KvCache& kv,
                 ThreadPool& pool, std::span<float> logits, bool all_logits) {
  const ModelConfig& c = m.config;
  const int64_t n = static_cast<int64_t>(tokens.size());
  assert(n > 0 && pos0 == kv.size() && pos0 + n <= kv.capacity());
  const int64_t E = c.n_embd;
  assert(static_cast<int64_t>(logits.size()) >= (all_logits ? n : 1) * c.n_vocab);

  std::vector<float> x(static_cast<size_t>(n * E));
  ops::embed(m.tok_embd, tokens, x.data());
  const ops::RopeTable angles = ops::rope_table(n, pos0, rope_options(m));
  const ops::AttentionShape shape{c.n_head, c.n_head_kv, c.head_dim};
  run_layers(
      m, n, angles, x, pool, kv.type(),
      [&](int32_t l, int64_t t) { return kv.slot(l, static_cast<int32_t>(pos0 + t)); },
      [&](int32_t l, const float* q, float* out) { ops::attention(q, kv.rows(l), n, pos0, shape, out, pool); });
  kv.grow_to(static_cast<int32_t>(pos0 + n));

  const int64_t first = all_logits ? 0 : n - 1;
  const int64_t rows = n - first;
  std::vector<float> cur(static_cast<size_t>(rows * E));
  const ops::MatmulPart output[] = {{&m.output, logits.data(), nullptr}};
  ops::matmul_group(
      output,
      ops::rms_norm_rounded(output, x.data() + first * E, m.output_norm, c.norm_eps, rows, cur.data(), pool),
      pool);
}

void run_decoder_batch(const Model& m, std::span<const BatchSlice> batch, PagedKvCache& kv,
                       ThreadPool& pool, std::span<float> logits, std::span<float> hidden) {
  const ModelConfig& c = m.config;
  const int64_t E = c.n_embd;
  int64_t n = 0, n_logits = 0, n_hidden = 0;
  for (const BatchSlice& s : batch) {
    const auto len = static_cast<int64_t>(s.tokens.size());
    assert(len > 0);
    assert(static_cast<int64_t>(s.blocks.size()) * kv.block_size() >= s.pos0 + len);
    n += len;
    n_logits += s.logits ? 1 : 0;
    n_hidden += s.hidden ? len : 0;
  }
  if (n == 0) return;
  assert(static_cast<int64_t>(logits.size()) >= n_logits * c.n_vocab);
  assert(static_cast<int64_t>(hidden.size()) >= n_hidden * E);

  std::vector<int32_t> tokens;
  tokens.reserve(static_cast<size_t>(n));
  for (const BatchSlice& s : batch) tokens.insert(tokens.end(), s.tokens.begin(), s.tokens.end());

  std::vector<float> x(static_cast<size_t>(n * E));
  ops::embed(m.tok_embd, tokens, x.data());
  const ops::RopeOptions rope = rope_options(m);
  // One table for the whole batch: each slice's rows for its own positions. An angle depends only
  // on its position, so these rows equal those of a single-sequence table.
  ops::RopeTable angles;
  angles.mode = rope.mode;
  angles.n_rot = rope.n_rot;
  angles.n_tokens = n;
  std::vector<ops::AttentionSlice> slices(batch.size());
  {
    int64_t first = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      const BatchSlice& s = batch[i];
      const auto len = static_cast<int64_t>(s.tokens.size());
      const ops::RopeTable part = ops::rope_table(len, s.pos0, rope);
      angles.cos.insert(angles.cos.end(), part.cos.begin(), part.cos.end());
      angles.sin.insert(angles.sin.end(), part.sin.begin(), part.sin.end());
      slices[i].first = first;
      slices[i].n_tokens = len;
      slices[i].pos0 = s.pos0;
      first += len;
    }
  }
  ops::AttentionShape shape{c.n_head, c.n_head_kv, c.head_dim};
  const int32_t bs = kv.block_size();

  // Each row's block and row within it.
  std::vector<std::pair<int32_t, int32_t>> row_slot;
  row_slot.reserve(static_cast<size_t>(n));
  for (const BatchSlice& s : batch) {
    for (int64_t t = 0; t < static_cast<int64_t>(s.tokens.size()); ++t) {
      const int64_t pos = s.pos0 + t;
      row_slot.emplace_back(s.blocks[static_cast<size_t>(pos / bs)], static_cast<int32_t>(pos % bs));
    }
  }
  run_layers(
      m, n, angles, x, pool, kv.type(),
      [&](int32_t l, int64_t row) {
        const auto [block, r] = row_slot[static_cast<size_t>(row)];
        return kv.slot(l, block, r);
      },
      [&](int32_t l, const float* q, float* out) {
        for (size_t i = 0; i < batch.size(); ++i) slices[i].kv = kv.rows(l, batch[i].blocks);
        ops::attention_paged(q, slices, shape, out, pool);
      });

  // Final norm of the rows asked for: the last of each slice that wants logits, then every row of
  // each slice that wants hidden states.
  if (n_logits > 0) {
    std::vector<float> last(static_cast<size_t>(n_logits * E));
    int64_t r = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!batch[i].logits) continue;
      const int64_t row = slices[i].first + slices[i].n_tokens - 1;
      std::copy_n(x.data() + row * E, E, last.data() + r * E);
      ++r;
    }
    const ops::MatmulPart output[] = {{&m.output, logits.data(), nullptr}};
    ops::matmul_group(
        output,
        ops::rms_norm_rounded(output, last.data(), m.output_norm, c.norm_eps, n_logits, last.data(), pool),
        pool);
  }
  if (n_hidden > 0) {
    int64_t r = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!batch[i].hidden) continue;
      ops::rms_norm(x.data() + slices[i].first * E, m.output_norm, c.norm_eps, slices[i].n_tokens,
                    E, hidden.data() + r * E);
      r += slices[i].n_tokens;
    }
  }
}

}  // namespace sq
