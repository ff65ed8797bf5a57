#include "model/synth.h"

#include <cmath>
#include <vector>

#include "base/error.h"
#include "base/rng.h"
#include "kernels/quant.h"

namespace sq {

namespace {

class Filler {
 public:
  explicit Filler(uint64_t seed) : rng_(seed) {}
  // Uniform in [-scale, scale).
  std::vector<float> values(int64_t n, float scale) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = static_cast<float>((rng_.next_double() * 2.0 - 1.0) * scale);
    return v;
  }

 private:
  Rng rng_;
};

void add(GgufWriter& w, const std::string& name, GgmlType type, std::vector<uint64_t> ne,
         const std::vector<float>& values) {
  if (type == GgmlType::F32) {
    w.add_tensor_f32(name, std::move(ne), values);
    return;
  }
  const int64_t row = static_cast<int64_t>(ne[0]);
  const int64_t rows = static_cast<int64_t>(values.size()) / row;
  const size_t rb = kernels::row_bytes(type, row);
  std::vector<uint8_t> bytes(rb * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    kernels::quantize_row(type, values.data() + r * row, bytes.data() + static_cast<size_t>(r) * rb, row);
  }
  w.add_tensor(name, type, std::move(ne), std::move(bytes));
}

}  // namespace

GgufWriter synth_model(const SynthSpec& s) {
  if (s.arch != "llama" && s.arch != "qwen2") {
    fail<InvalidArgument>("synth: architecture '{}' is not one squeeze can generate (llama, qwen2)",
                          s.arch);
  }
  if (!type_supported(s.type)) fail<InvalidArgument>("synth: type {} is not supported", type_name(s.type));
  GgufWriter w;
  const std::string a = s.arch + ".";
  const int32_t head_dim = s.n_embd / s.n_head;
  w.set("general.architecture", GgufValue::of_string(s.arch));
  w.set("general.name", GgufValue::of_string("synthetic-" + s.arch));
  w.set(a + "context_length", GgufValue::of_u32(static_cast<uint32_t>(s.n_ctx)));
  w.set(a + "embedding_length", GgufValue::of_u32(static_cast<uint32_t>(s.n_embd)));
  w.set(a + "block_count", GgufValue::of_u32(static_cast<uint32_t>(s.n_layer)));
  w.set(a + "feed_forward_length", GgufValue::of_u32(static_cast<uint32_t>(s.n_ff)));
  w.set(a + "attention.head_count", GgufValue::of_u32(static_cast<uint32_t>(s.n_head)));
  w.set(a + "attention.head_count_kv", GgufValue::of_u32(static_cast<uint32_t>(s.n_head_kv)));
  w.set(a + "rope.dimension_count", GgufValue::of_u32(static_cast<uint32_t>(head_dim)));
  w.set(a + "rope.freq_base", GgufValue::of_f32(s.arch == "qwen2" ? 1e6f : 10000.0f));
  w.set(a + "attention.layer_norm_rms_epsilon", GgufValue::of_f32(1e-5f));
  w.set(a + "vocab_size", GgufValue::of_u32(static_cast<uint32_t>(s.n_vocab)));
  if (s.n_expert > 0) {
    w.set(a + "expert_count", GgufValue::of_u32(static_cast<uint32_t>(s.n_expert)));
    w.set(a + "expert_used_count", GgufValue::of_u32(static_cast<uint32_t>(s.n_expert_used)));
  }
  if (s.with_vocab) {
    // <unk>, <s>, </s>, then byte tokens, then "▁"-prefixed letters: enough to encode any text.
    std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
    std::vector<float> scores = {0, 0, 0};
    std::vector<int32_t> types = {2, 3, 3};
    for (int b = 0; b < 256 && static_cast<int32_t>(tokens.size()) < s.n_vocab; ++b) {
      tokens.push_back(fmt::format("<0x{:02X}>", b));
      scores.push_back(0);
      types.push_back(6);
    }
    for (int k = 0; static_cast<int32_t>(tokens.size()) < s.n_vocab; ++k) {
      tokens.push_back("\xE2\x96\x81" + std::string(1, static_cast<char>('a' + k % 26)) +
                       std::to_string(k / 26));
      scores.push_back(-static_cast<float>(k));
      types.push_back(1);
    }
    w.set("tokenizer.ggml.model", GgufValue::of_string("llama"));
    w.set("tokenizer.ggml.tokens", GgufValue::of_strings(tokens));
    w.set("tokenizer.ggml.scores", GgufValue::of_f32s(scores));
    w.set("tokenizer.ggml.token_type", GgufValue::of_i32s(types));
    w.set("tokenizer.ggml.bos_token_id", GgufValue::of_u32(1));
    w.set("tokenizer.ggml.eos_token_id", GgufValue::of_u32(2));
  } else {
    w.set("tokenizer.ggml.model", GgufValue::of_string("no_vocab"));
  }

  Filler fill(s.seed);
  const uint64_t E = static_cast<uint64_t>(s.n_embd), V = static_cast<uint64_t>(s.n_vocab);
  const uint64_t Q = static_cast<uint64_t>(s.n_head * head_dim);
  const uint64_t KV = static_cast<uint64_t>(s.n_head_kv * head_dim);
  const uint64_t F = static_cast<uint64_t>(s.n_ff);
  const float ws = 1.0f / std::sqrt(static_cast<float>(s.n_embd));
  auto n = [](std::initializer_list<uint64_t> d) {
    int64_t p = 1;
    for (uint64_t x : d) p *= static_cast<int64_t>(x);
    return p;
  };
  auto norm = [&](int64_t width) {
    std::vector<float> v = fill.values(width, 0.2f);
    for (float& x : v) x += 1.0f;
    return v;
  };
  add(w, "token_embd.weight", s.type, {E, V}, fill.values(n({E, V}), 1.0f));
  add(w, "output_norm.weight", GgmlType::F32, {E}, norm(static_cast<int64_t>(E)));
  if (!s.tied_output) add(w, "output.weight", s.type, {E, V}, fill.values(n({E, V}), ws));
  if (s.rope_freqs) {
    std::vector<float> f(static_cast<size_t>(head_dim / 2));
    for (size_t i = 0; i < f.size(); ++i) f[i] = 1.0f + static_cast<float>(i) * 0.5f;
    add(w, "rope_freqs.weight", GgmlType::F32, {f.size()}, f);
  }
  for (int32_t l = 0; l < s.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add(w, b + "attn_norm.weight", GgmlType::F32, {E}, norm(static_cast<int64_t>(E)));
    add(w, b + "attn_q.weight", s.type, {E, Q}, fill.values(n({E, Q}), ws));
    add(w, b + "attn_k.weight", s.type, {E, KV}, fill.values(n({E, KV}), ws));
    add(w, b + "attn_v.weight", s.type, {E, KV}, fill.values(n({E, KV}), ws));
    add(w, b + "attn_output.weight", s.type, {Q, E}, fill.values(n({Q, E}), ws));
    if (s.arch == "qwen2") {
      add(w, b + "attn_q.bias", GgmlType::F32, {Q}, fill.values(static_cast<int64_t>(Q), 0.5f));
      add(w, b + "attn_k.bias", GgmlType::F32, {KV}, fill.values(static_cast<int64_t>(KV), 0.5f));
      add(w, b + "attn_v.bias", GgmlType::F32, {KV}, fill.values(static_cast<int64_t>(KV), 0.5f));
    }
    add(w, b + "ffn_norm.weight", GgmlType::F32, {E}, norm(static_cast<int64_t>(E)));
    if (s.n_expert > 0) {
      const uint64_t X = static_cast<uint64_t>(s.n_expert);
      add(w, b + "ffn_gate_inp.weight", GgmlType::F32, {E, X}, fill.values(n({E, X}), 1.0f));
      add(w, b + "ffn_gate_exps.weight", s.type, {E, F, X}, fill.values(n({E, F, X}), ws));
      add(w, b + "ffn_up_exps.weight", s.type, {E, F, X}, fill.values(n({E, F, X}), ws));
      add(w, b + "ffn_down_exps.weight", s.type, {F, E, X}, fill.values(n({F, E, X}), ws));
    } else {
      add(w, b + "ffn_gate.weight", s.type, {E, F}, fill.values(n({E, F}), ws));
      add(w, b + "ffn_up.weight", s.type, {E, F}, fill.values(n({E, F}), ws));
      add(w, b + "ffn_down.weight", s.type, {F, E}, fill.values(n({F, E}), ws));
    }
  }
  return w;
}

}  // namespace sq
