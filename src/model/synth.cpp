#include "model/synth.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numbers>
#include <vector>

#include "base/error.h"
#include "base/rng.h"
#include "kernels/quant.h"

namespace sq {

namespace {

// Elements generated per piece while streaming: bounds memory whatever the tensor's size.
constexpr int64_t kChunkElems = int64_t{4} << 20;

enum class Fill {
  Uniform,        // uniform in [-scale, scale)
  Norm,           // 1 + uniform in [-scale, scale)
  RopeFreqsTest,  // 1 + 0.5 i: no draws
  RopeLlama3,     // Llama 3.1 long-context factors: no draws
};

struct PlannedTensor {
  GgufTensorSpec spec;
  Fill fill = Fill::Uniform;
  float scale = 1.0f;
};

struct SynthPlan {
  GgufMetadata metadata;
  std::vector<PlannedTensor> tensors;
};

class Filler {
 public:
  explicit Filler(uint64_t seed) : rng_(seed) {}
  void uniform(float* out, int64_t n, float scale) {
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>((rng_.next_double() * 2.0 - 1.0) * scale);
  }

 private:
  Rng rng_;
};

// Llama 3.1's rope frequency factors (as convert_hf_to_gguf computes them from rope_scaling):
// high frequencies kept, low ones divided by `factor`, a smooth ramp between.
std::vector<float> llama3_rope_factors(int32_t n_rot, double base) {
  constexpr double kFactor = 32, kLow = 1, kHigh = 4, kOriginalContext = 8192;
  const double low_wavelen = kOriginalContext / kLow, high_wavelen = kOriginalContext / kHigh;
  std::vector<float> out(static_cast<size_t>(n_rot / 2));
  for (size_t i = 0; i < out.size(); ++i) {
    const double freq = 1.0 / std::pow(base, static_cast<double>(2 * i) / n_rot);
    const double wavelen = 2 * std::numbers::pi / freq;
    double f;
    if (wavelen < high_wavelen) {
      f = 1.0;
    } else if (wavelen > low_wavelen) {
      f = kFactor;
    } else {
      const double smooth = (kOriginalContext / wavelen - kLow) / (kHigh - kLow);
      f = 1.0 / ((1 - smooth) / kFactor + smooth);
    }
    out[i] = static_cast<float>(f);
  }
  return out;
}

void validate(const SynthSpec& s) {
  if (s.arch != "llama" && s.arch != "qwen2") {
    fail<InvalidArgument>("synth: architecture '{}' is not one squeeze can generate (llama, qwen2)",
                          s.arch);
  }
  if (!s.target && !type_supported(s.type)) {
    fail<InvalidArgument>("synth: type {} is not supported", type_name(s.type));
  }
  if (s.n_vocab < 1 || s.n_embd < 1 || s.n_layer < 1 || s.n_head < 1 || s.n_head_kv < 1 || s.n_ff < 1 ||
      s.n_ctx < 1) {
    fail<InvalidArgument>("synth: every size must be positive (vocab {}, embd {}, layers {}, heads {}/{}, "
                          "ff {}, ctx {})", s.n_vocab, s.n_embd, s.n_layer, s.n_head, s.n_head_kv, s.n_ff,
                          s.n_ctx);
  }
  if (s.n_embd % s.n_head != 0 || s.n_head % s.n_head_kv != 0) {
    fail<InvalidArgument>("synth: {} heads must divide n_embd {} and be a multiple of {} kv heads", s.n_head,
                          s.n_embd, s.n_head_kv);
  }
  if (s.n_expert < 0 || (s.n_expert > 0 && (s.n_expert_used < 1 || s.n_expert_used > s.n_expert))) {
    fail<InvalidArgument>("synth: {} experts with {} used; expected 1 to n_expert used", s.n_expert,
                          s.n_expert_used);
  }
}

SynthPlan make_plan(const SynthSpec& s) {
  validate(s);
  SynthPlan plan;
  auto set = [&](std::string key, GgufValue v) { plan.metadata.emplace_back(std::move(key), std::move(v)); };
  auto u32 = [](int32_t v) { return GgufValue::of_u32(static_cast<uint32_t>(v)); };
  const std::string a = s.arch + ".";
  const int32_t head_dim = s.n_embd / s.n_head;
  const float rope_base = s.rope_base > 0 ? s.rope_base : (s.arch == "qwen2" ? 1e6f : 10000.0f);
  const FileType file_type = s.target ? s.target->file_type
                                      : quant_target_for_type(s.type).value_or(QuantTarget{}).file_type;
  set("general.architecture", GgufValue::of_string(s.arch));
  set("general.name", GgufValue::of_string(s.name.empty() ? "synthetic-" + s.arch : s.name));
  set("general.file_type", GgufValue::of_u32(static_cast<uint32_t>(file_type)));
  set(a + "context_length", u32(s.n_ctx));
  set(a + "embedding_length", u32(s.n_embd));
  set(a + "block_count", u32(s.n_layer));
  set(a + "feed_forward_length", u32(s.n_ff));
  set(a + "attention.head_count", u32(s.n_head));
  set(a + "attention.head_count_kv", u32(s.n_head_kv));
  set(a + "rope.dimension_count", u32(head_dim));
  set(a + "rope.freq_base", GgufValue::of_f32(rope_base));
  set(a + "attention.layer_norm_rms_epsilon", GgufValue::of_f32(s.norm_eps));
  set(a + "vocab_size", u32(s.n_vocab));
  if (s.n_expert > 0) {
    set(a + "expert_count", u32(s.n_expert));
    set(a + "expert_used_count", u32(s.n_expert_used));
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
    set("tokenizer.ggml.model", GgufValue::of_string("llama"));
    set("tokenizer.ggml.tokens", GgufValue::of_strings(tokens));
    set("tokenizer.ggml.scores", GgufValue::of_f32s(scores));
    set("tokenizer.ggml.token_type", GgufValue::of_i32s(types));
    set("tokenizer.ggml.bos_token_id", GgufValue::of_u32(1));
    set("tokenizer.ggml.eos_token_id", GgufValue::of_u32(2));
  } else {
    set("tokenizer.ggml.model", GgufValue::of_string("no_vocab"));
  }
  set("general.quantization_version", GgufValue::of_u32(2));

  // Tensors in the order their values are drawn (the order synth_model has always used).
  const uint64_t E = static_cast<uint64_t>(s.n_embd), V = static_cast<uint64_t>(s.n_vocab);
  const uint64_t Q = static_cast<uint64_t>(s.n_head * head_dim);
  const uint64_t KV = static_cast<uint64_t>(s.n_head_kv * head_dim);
  const uint64_t F = static_cast<uint64_t>(s.n_ff);
  const float ws = 1.0f / std::sqrt(static_cast<float>(s.n_embd));
  auto add = [&](std::string name, std::vector<uint64_t> ne, Fill fill, float scale) {
    plan.tensors.push_back({{std::move(name), GgmlType::F32, std::move(ne)}, fill, scale});
  };
  add("token_embd.weight", {E, V}, Fill::Uniform, 1.0f);
  add("output_norm.weight", {E}, Fill::Norm, 0.2f);
  if (!s.tied_output) add("output.weight", {E, V}, Fill::Uniform, ws);
  if (s.rope_freqs || s.rope_llama3) {
    add("rope_freqs.weight", {static_cast<uint64_t>(head_dim / 2)},
        s.rope_llama3 ? Fill::RopeLlama3 : Fill::RopeFreqsTest, 0);
  }
  for (int32_t l = 0; l < s.n_layer; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add(b + "attn_norm.weight", {E}, Fill::Norm, 0.2f);
    add(b + "attn_q.weight", {E, Q}, Fill::Uniform, ws);
    add(b + "attn_k.weight", {E, KV}, Fill::Uniform, ws);
    add(b + "attn_v.weight", {E, KV}, Fill::Uniform, ws);
    add(b + "attn_output.weight", {Q, E}, Fill::Uniform, ws);
    if (s.arch == "qwen2") {
      add(b + "attn_q.bias", {Q}, Fill::Uniform, 0.5f);
      add(b + "attn_k.bias", {KV}, Fill::Uniform, 0.5f);
      add(b + "attn_v.bias", {KV}, Fill::Uniform, 0.5f);
    }
    add(b + "ffn_norm.weight", {E}, Fill::Norm, 0.2f);
    if (s.n_expert > 0) {
      const uint64_t X = static_cast<uint64_t>(s.n_expert);
      add(b + "ffn_gate_inp.weight", {E, X}, Fill::Uniform, 1.0f);
      add(b + "ffn_gate_exps.weight", {E, F, X}, Fill::Uniform, ws);
      add(b + "ffn_up_exps.weight", {E, F, X}, Fill::Uniform, ws);
      add(b + "ffn_down_exps.weight", {F, E, X}, Fill::Uniform, ws);
    } else {
      add(b + "ffn_gate.weight", {E, F}, Fill::Uniform, ws);
      add(b + "ffn_up.weight", {E, F}, Fill::Uniform, ws);
      add(b + "ffn_down.weight", {F, E}, Fill::Uniform, ws);
    }
  }

  // Types: the quantizer's choice for a target, else `type` for every converted matrix.
  if (s.target) {
    std::vector<QuantTensor> shapes;
    for (const auto& t : plan.tensors) shapes.push_back({t.spec.name, t.spec.ne});
    const QuantModelInfo info{s.arch, s.n_layer, s.n_head, s.n_head_kv, s.n_expert};
    const auto types = plan_tensor_types(shapes, info, *s.target);
    for (size_t k = 0; k < types.size(); ++k) {
      if (types[k]) plan.tensors[k].spec.type = *types[k];
    }
  } else {
    for (auto& t : plan.tensors) {
      if (quantizable_tensor(t.spec.name, t.spec.ne.size())) t.spec.type = s.type;
    }
  }
  return plan;
}

using Sink = std::function<void(const uint8_t*, size_t)>;

// Draws a tensor's values piece by piece, converts each piece to the tensor's type and hands the
// bytes to `sink` in order.
void produce(const PlannedTensor& t, const SynthSpec& s, Filler& fill, ThreadPool* pool, const Sink& sink) {
  const auto n = static_cast<int64_t>(t.spec.ne[0]);
  int64_t rows = 1;
  for (size_t d = 1; d < t.spec.ne.size(); ++d) rows *= static_cast<int64_t>(t.spec.ne[d]);
  std::vector<float> values;
  if (t.fill == Fill::RopeFreqsTest || t.fill == Fill::RopeLlama3) {
    const int32_t head_dim = s.n_embd / s.n_head;
    const float base = s.rope_base > 0 ? s.rope_base : (s.arch == "qwen2" ? 1e6f : 10000.0f);
    if (t.fill == Fill::RopeLlama3) {
      values = llama3_rope_factors(head_dim, base);
    } else {
      values.resize(static_cast<size_t>(n));
      for (size_t i = 0; i < values.size(); ++i) values[i] = 1.0f + static_cast<float>(i) * 0.5f;
    }
    sink(reinterpret_cast<const uint8_t*>(values.data()), values.size() * sizeof(float));
    return;
  }
  const int64_t chunk_rows = std::max<int64_t>(1, kChunkElems / n);
  std::vector<uint8_t> bytes;
  for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
    const int64_t cnt = std::min(chunk_rows, rows - r0);
    values.resize(static_cast<size_t>(cnt * n));
    fill.uniform(values.data(), cnt * n, t.scale);
    if (t.fill == Fill::Norm) {
      for (float& x : values) x += 1.0f;
    }
    if (t.spec.type == GgmlType::F32) {
      sink(reinterpret_cast<const uint8_t*>(values.data()), values.size() * sizeof(float));
      continue;
    }
    bytes.resize(kernels::row_bytes(t.spec.type, n) * static_cast<size_t>(cnt));
    quantize_rows(t.spec.type, values.data(), bytes.data(), n, cnt, pool);
    sink(bytes.data(), bytes.size());
  }
}

SynthSpec preset_base(std::string name, std::string arch) {
  SynthSpec s;
  s.name = std::move(name);
  s.arch = std::move(arch);
  return s;
}

}  // namespace

std::vector<std::string> synth_preset_names() {
  return {"tinyllama-1.1b", "llama-3.2-1b", "qwen2.5-0.5b", "qwen2.5-1.5b", "tiny-moe"};
}

std::optional<SynthSpec> synth_preset(std::string_view name) {
  // Hyper-parameters from each model's config.json (HF transformers names in the comments).
  if (name == "tinyllama-1.1b") {
    SynthSpec s = preset_base("TinyLlama-1.1B (synthetic)", "llama");
    s.n_layer = 22;      // num_hidden_layers
    s.n_embd = 2048;     // hidden_size
    s.n_ff = 5632;       // intermediate_size
    s.n_head = 32;       // num_attention_heads
    s.n_head_kv = 4;     // num_key_value_heads
    s.n_vocab = 32000;   // vocab_size
    s.n_ctx = 2048;      // max_position_embeddings
    s.rope_base = 10000.0f;
    s.norm_eps = 1e-5f;
    return s;
  }
  if (name == "llama-3.2-1b") {
    SynthSpec s = preset_base("Llama-3.2-1B (synthetic)", "llama");
    s.n_layer = 16;
    s.n_embd = 2048;
    s.n_ff = 8192;
    s.n_head = 32;
    s.n_head_kv = 8;
    s.n_vocab = 128256;
    s.n_ctx = 131072;
    s.rope_base = 500000.0f;
    s.norm_eps = 1e-5f;
    s.tied_output = true;  // tie_word_embeddings
    s.rope_llama3 = true;  // rope_scaling: llama3, factor 32, low 1, high 4, original 8192
    return s;
  }
  if (name == "qwen2.5-0.5b") {
    SynthSpec s = preset_base("Qwen2.5-0.5B (synthetic)", "qwen2");
    s.n_layer = 24;
    s.n_embd = 896;
    s.n_ff = 4864;
    s.n_head = 14;
    s.n_head_kv = 2;
    s.n_vocab = 151936;
    s.n_ctx = 32768;
    s.rope_base = 1000000.0f;
    s.norm_eps = 1e-6f;
    s.tied_output = true;
    return s;
  }
  if (name == "qwen2.5-1.5b") {
    SynthSpec s = preset_base("Qwen2.5-1.5B (synthetic)", "qwen2");
    s.n_layer = 28;
    s.n_embd = 1536;
    s.n_ff = 8960;
    s.n_head = 12;
    s.n_head_kv = 2;
    s.n_vocab = 151936;
    s.n_ctx = 32768;
    s.rope_base = 1000000.0f;
    s.norm_eps = 1e-6f;
    s.tied_output = true;
    return s;
  }
  if (name == "tiny-moe") {
    // Not a published model: a Mixtral-shaped llama small enough to write quickly (~140M
    // parameters, 8 experts of which 2 are used, so ~45M active per token).
    SynthSpec s = preset_base("tiny-moe (synthetic)", "llama");
    s.n_layer = 8;
    s.n_embd = 512;
    s.n_ff = 1024;
    s.n_head = 8;
    s.n_head_kv = 4;
    s.n_vocab = 32000;
    s.n_ctx = 4096;
    s.n_expert = 8;
    s.n_expert_used = 2;
    s.rope_base = 10000.0f;
    s.norm_eps = 1e-5f;
    return s;
  }
  return std::nullopt;
}

SynthLayout synth_layout(const SynthSpec& spec) {
  SynthPlan plan = make_plan(spec);
  SynthLayout out;
  out.metadata = std::move(plan.metadata);
  for (auto& t : plan.tensors) out.tensors.push_back(std::move(t.spec));
  return out;
}

GgufWriter synth_model(const SynthSpec& spec) {
  const SynthPlan plan = make_plan(spec);
  GgufWriter w;
  for (const auto& [key, value] : plan.metadata) w.set(key, value);
  Filler fill(spec.seed);
  for (const auto& t : plan.tensors) {
    std::vector<uint8_t> bytes;
    produce(t, spec, fill, nullptr, [&](const uint8_t* p, size_t n) { bytes.insert(bytes.end(), p, p + n); });
    w.add_tensor(t.spec.name, t.spec.type, t.spec.ne, std::move(bytes));
  }
  return w;
}

uint64_t synth_write(const SynthSpec& spec, const std::string& path, ThreadPool* pool,
                     const ProgressFn& progress) {
  const SynthPlan plan = make_plan(spec);
  std::vector<GgufTensorSpec> specs;
  for (const auto& t : plan.tensors) specs.push_back(t.spec);
  GgufStreamWriter out(path, plan.metadata, std::move(specs));
  const uint64_t total = out.file_size();
  uint64_t done = total;
  for (const auto& l : out.tensors()) done -= l.n_bytes;
  Filler fill(spec.seed);
  for (const auto& t : plan.tensors) {
    if (progress) progress(done, total, t.spec.name);
    produce(t, spec, fill, pool, [&](const uint8_t* p, size_t n) {
      out.write(p, n);
      done += n;
      if (progress) progress(done, total, t.spec.name);
    });
  }
  out.commit();
  return total;
}

}  // namespace sq
