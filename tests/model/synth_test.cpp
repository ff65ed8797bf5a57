// Synthetic models: the presets carry the shapes and hyper-parameters of the real models (checked
// against their published parameter counts without writing gigabytes), mixes pick llama.cpp's
// types, and the streamed file is byte for byte the in-memory one, whatever the thread count.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "base/error.h"
#include "base/mmap.h"
#include "base/thread_pool.h"
#include "model/gguf.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "model/quantize.h"
#include "model/synth.h"
#include "support.h"

namespace sq {
namespace {

using test::TempDir;


const GgufValue* meta(const SynthLayout& l, const std::string& key) {
  for (const auto& [k, v] : l.metadata) {
    if (k == key) return &v;
  }
  return nullptr;
}

int64_t meta_int(const SynthLayout& l, const std::string& key) {
  const GgufValue* v = meta(l, key);
  return v ? v->as_int(key) : -1;
}

double meta_float(const SynthLayout& l, const std::string& key) {
  const GgufValue* v = meta(l, key);
  return v ? v->as_float(key) : -1;
}

// Parameters as Hugging Face counts them (rope_freqs is derived, not a parameter).
uint64_t parameter_count(const SynthLayout& l) {
  uint64_t n = 0;
  for (const auto& t : l.tensors) {
    if (t.name == "rope_freqs.weight") continue;
    uint64_t e = 1;
    for (uint64_t d : t.ne) e *= d;
    n += e;
  }
  return n;
}

const GgufTensorSpec* find(const SynthLayout& l, const std::string& name) {
  for (const auto& t : l.tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

struct Expected {
  std::string preset, arch;
  int64_t layers, embd, ff, heads, kv_heads, vocab, ctx;
  double rope_base, eps;
  bool tied;
  uint64_t params;  // the published count
};

TEST(SynthPresets, ShapesAndHyperParametersOfTheRealModels) {
  const std::vector<Expected> expected = {
      {"tinyllama-1.1b", "llama", 22, 2048, 5632, 32, 4, 32000, 2048, 10000, 1e-5, false, 1100048384},
      {"llama-3.2-1b", "llama", 16, 2048, 8192, 32, 8, 128256, 131072, 500000, 1e-5, true, 1235814400},
      {"qwen2.5-0.5b", "qwen2", 24, 896, 4864, 14, 2, 151936, 32768, 1e6, 1e-6, true, 494032768},
      {"qwen2.5-1.5b", "qwen2", 28, 1536, 8960, 12, 2, 151936, 32768, 1e6, 1e-6, true, 1543714304},
  };
  for (const auto& e : expected) {
    SCOPED_TRACE(e.preset);
    auto spec = synth_preset(e.preset);
    ASSERT_TRUE(spec.has_value());
    const SynthLayout l = synth_layout(*spec);
    const std::string a = e.arch + ".";
    EXPECT_EQ(meta(l, "general.architecture")->str, e.arch);
    EXPECT_EQ(meta_int(l, a + "block_count"), e.layers);
    EXPECT_EQ(meta_int(l, a + "embedding_length"), e.embd);
    EXPECT_EQ(meta_int(l, a + "feed_forward_length"), e.ff);
    EXPECT_EQ(meta_int(l, a + "attention.head_count"), e.heads);
    EXPECT_EQ(meta_int(l, a + "attention.head_count_kv"), e.kv_heads);
    EXPECT_EQ(meta_int(l, a + "vocab_size"), e.vocab);
    EXPECT_EQ(meta_int(l, a + "context_length"), e.ctx);
    EXPECT_EQ(meta_int(l, a + "rope.dimension_count"), e.embd / e.heads);
    EXPECT_FLOAT_EQ(static_cast<float>(meta_float(l, a + "rope.freq_base")), static_cast<float>(e.rope_base));
    EXPECT_FLOAT_EQ(static_cast<float>(meta_float(l, a + "attention.layer_norm_rms_epsilon")),
                    static_cast<float>(e.eps));
    EXPECT_EQ(meta(l, "tokenizer.ggml.model")->str, "no_vocab");
    EXPECT_EQ(meta_int(l, "general.quantization_version"), 2);
    EXPECT_EQ(meta_int(l, "general.file_type"), 0);
    EXPECT_EQ(find(l, "output.weight") == nullptr, e.tied);
    EXPECT_EQ(find(l, "blk.0.attn_q.bias") != nullptr, e.arch == "qwen2");
    EXPECT_EQ(parameter_count(l), e.params);
    EXPECT_EQ(find(l, "blk." + std::to_string(e.layers - 1) + ".ffn_down.weight")->ne,
              (std::vector<uint64_t>{static_cast<uint64_t>(e.ff), static_cast<uint64_t>(e.embd)}));
  }
}

TEST(SynthPresets, EveryNamedPresetExistsAndUnknownOnesDoNot) {
  for (const auto& name : synth_preset_names()) EXPECT_TRUE(synth_preset(name).has_value()) << name;
  EXPECT_FALSE(synth_preset("gpt-5").has_value());
}

TEST(SynthPresets, TinyMoeIsAMixtureOfEightExpertsOfModestSize) {
  auto spec = synth_preset("tiny-moe");
  ASSERT_TRUE(spec.has_value());
  spec->target = quant_target_from_name("Q8_0");
  const SynthLayout l = synth_layout(*spec);
  EXPECT_EQ(meta_int(l, "llama.expert_count"), 8);
  EXPECT_EQ(meta_int(l, "llama.expert_used_count"), 2);
  const GgufTensorSpec* down = find(l, "blk.0.ffn_down_exps.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->ne.size(), 3u);
  EXPECT_EQ(find(l, "blk.0.ffn_gate_inp.weight")->type, GgmlType::F32);
  uint64_t bytes = 0;
  for (const auto& t : l.tensors) {
    uint64_t e = 1;
    for (uint64_t d : t.ne) e *= d;
    bytes += e / type_info(t.type)->block_elems * type_info(t.type)->block_bytes;
  }
  EXPECT_LT(bytes, uint64_t{300} << 20) << "a few hundred MB at most";
}

TEST(SynthPresets, Llama32CarriesLlama3RopeFactors) {
  SynthSpec real = *synth_preset("llama-3.2-1b");
  real.n_layer = 1;
  real.n_vocab = 64;
  real.n_ff = 32;
  auto bytes = synth_model(real).to_bytes();
  GgufFile f = GgufFile::parse(bytes, "llama32");
  const GgufTensorInfo* freqs = f.tensor("rope_freqs.weight");
  ASSERT_NE(freqs, nullptr);
  ASSERT_EQ(freqs->ne, std::vector<uint64_t>{32});
  std::vector<float> v(32);
  std::memcpy(v.data(), freqs->data, 32 * sizeof(float));
  // High frequencies untouched, the lowest divided by the scale factor 32, monotone between.
  EXPECT_EQ(v.front(), 1.0f);
  EXPECT_EQ(v.back(), 32.0f);
  for (size_t i = 1; i < v.size(); ++i) EXPECT_GE(v[i], v[i - 1]);
  EXPECT_GT(std::count_if(v.begin(), v.end(), [](float x) { return x > 1.0f && x < 32.0f; }), 0);
}

std::map<std::string, GgmlType> types_of(const SynthLayout& l) {
  std::map<std::string, GgmlType> out;
  for (const auto& t : l.tensors) out[t.name] = t.type;
  return out;
}

bool more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

TEST(SynthMixes, Qwen05bQ4KMUsesTheFallbacksForRowsOf896) {
  auto spec = synth_preset("qwen2.5-0.5b");
  spec->target = quant_target_from_name("Q4_K_M");
  const SynthLayout l = synth_layout(*spec);
  auto types = types_of(l);
  EXPECT_EQ(meta_int(l, "general.file_type"), 15);
  EXPECT_EQ(types["token_embd.weight"], GgmlType::Q8_0);  // tied output, rows of 896
  EXPECT_EQ(types["output_norm.weight"], GgmlType::F32);
  for (int i = 0; i < 24; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    SCOPED_TRACE(b);
    EXPECT_EQ(types[b + "attn_q.weight"], GgmlType::Q5_0);
    EXPECT_EQ(types[b + "attn_k.weight"], GgmlType::Q5_0);
    EXPECT_EQ(types[b + "attn_v.weight"], more_bits(i, 24) ? GgmlType::Q8_0 : GgmlType::Q5_0);
    EXPECT_EQ(types[b + "attn_output.weight"], GgmlType::Q5_0);
    EXPECT_EQ(types[b + "ffn_gate.weight"], GgmlType::Q5_0);
    EXPECT_EQ(types[b + "ffn_up.weight"], GgmlType::Q5_0);
    // ffn_down rows are 4864 = 19 x 256: real K-quants.
    EXPECT_EQ(types[b + "ffn_down.weight"], more_bits(i, 24) ? GgmlType::Q6_K : GgmlType::Q4_K);
    EXPECT_EQ(types[b + "attn_q.bias"], GgmlType::F32);
    EXPECT_EQ(types[b + "attn_norm.weight"], GgmlType::F32);
  }
}

TEST(SynthMixes, TinyLlamaQ4KMAndQ5KMAndQ4_0) {
  auto spec = synth_preset("tinyllama-1.1b");
  spec->target = quant_target_from_name("Q4_K_M");
  auto types = types_of(synth_layout(*spec));
  EXPECT_EQ(types["output.weight"], GgmlType::Q6_K);
  EXPECT_EQ(types["token_embd.weight"], GgmlType::Q4_K);
  std::set<int> upgraded;
  for (int i = 0; i < 22; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    EXPECT_EQ(types[b + "attn_q.weight"], GgmlType::Q4_K);
    EXPECT_EQ(types[b + "ffn_up.weight"], GgmlType::Q4_K);
    EXPECT_EQ(types[b + "attn_v.weight"], types[b + "ffn_down.weight"]);
    if (types[b + "attn_v.weight"] == GgmlType::Q6_K) upgraded.insert(i);
  }
  // n = 22: i < 2, i >= 19, or (i - 2) % 3 == 2.
  EXPECT_EQ(upgraded, (std::set<int>{0, 1, 4, 7, 10, 13, 16, 19, 20, 21}));

  spec->target = quant_target_from_name("Q5_K_M");
  types = types_of(synth_layout(*spec));
  EXPECT_EQ(types["blk.2.attn_v.weight"], GgmlType::Q5_K);
  EXPECT_EQ(types["blk.4.attn_v.weight"], GgmlType::Q6_K);
  EXPECT_EQ(types["output.weight"], GgmlType::Q6_K);

  spec->target = quant_target_from_name("Q4_0");
  const SynthLayout q40 = synth_layout(*spec);
  types = types_of(q40);
  EXPECT_EQ(meta_int(q40, "general.file_type"), 2);
  EXPECT_EQ(types["output.weight"], GgmlType::Q6_K);  // as llama.cpp's Q4_0 files
  EXPECT_EQ(types["token_embd.weight"], GgmlType::Q4_0);
  EXPECT_EQ(types["blk.4.attn_v.weight"], GgmlType::Q4_0);
}

TEST(SynthMixes, EightExpertsUpgradeAttentionAsLlamaCppDoes) {
  auto spec = synth_preset("tiny-moe");
  spec->target = quant_target_from_name("Q4_K_M");
  auto types = types_of(synth_layout(*spec));
  EXPECT_EQ(types["blk.3.attn_v.weight"], GgmlType::Q8_0);
  EXPECT_EQ(types["blk.3.attn_k.weight"], GgmlType::Q8_0);
  EXPECT_EQ(types["blk.3.attn_output.weight"], GgmlType::Q5_K);
  EXPECT_EQ(types["blk.3.attn_q.weight"], GgmlType::Q4_K);
  EXPECT_EQ(types["blk.0.ffn_down_exps.weight"], GgmlType::Q6_K);  // layer 0 of 8: i < n/8
  EXPECT_EQ(types["blk.2.ffn_down_exps.weight"], GgmlType::Q4_K);
  EXPECT_EQ(types["blk.3.ffn_down_exps.weight"], GgmlType::Q6_K);  // (3 - 1) % 3 == 2
  EXPECT_EQ(types["blk.3.ffn_gate_inp.weight"], GgmlType::F32);
}

TEST(SynthWrite, StreamedFileEqualsTheInMemoryModelOnAnyThreadCount) {
  TempDir dir;
  SynthSpec s;
  s.arch = "qwen2";
  s.n_embd = 256;
  s.n_ff = 512;
  s.n_vocab = 300;
  s.n_layer = 3;
  s.tied_output = true;
  s.target = quant_target_from_name("Q4_K_M");
  const std::vector<uint8_t> expect = synth_model(s).to_bytes();
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    const std::string path = dir.file("m" + std::to_string(threads) + ".gguf");
    const uint64_t size = synth_write(s, path, &pool);
    EXPECT_EQ(size, expect.size());
    const std::string got = read_file(path);
    ASSERT_EQ(got.size(), expect.size());
    EXPECT_EQ(0, std::memcmp(got.data(), expect.data(), expect.size())) << threads << " threads";
  }
  EXPECT_EQ(dir.entries(), 3u) << "no temporary file may remain";
}

TEST(SynthWrite, SeedChangesTheWeightsNotTheLayout) {
  SynthSpec s;
  s.seed = 1;
  auto a = synth_model(s).to_bytes();
  s.seed = 2;
  auto b = synth_model(s).to_bytes();
  ASSERT_EQ(a.size(), b.size());
  EXPECT_NE(0, std::memcmp(a.data(), b.data(), a.size()));
}

TEST(SynthWrite, FailureLeavesNoFile) {
  TempDir dir;
  SynthSpec s;
  s.n_embd = 96;  // rows of 96 cannot be Q4_K, and no fallback is asked for with a plain type
  s.n_head = 4;
  s.type = GgmlType::Q4_K;
  EXPECT_THROW(synth_write(s, dir.file("bad.gguf"), nullptr), InvalidArgument);
  EXPECT_EQ(dir.entries(), 0u);
  EXPECT_THROW(synth_write(SynthSpec{}, dir.file("no/such/dir/m.gguf"), nullptr), IoError);
  EXPECT_EQ(dir.entries(), 0u);
}

std::vector<float> logits(const std::string& path, const std::vector<int32_t>& ids) {
  auto m = load_model(path);
  ThreadPool pool(2);
  KvCache kv(m->config, static_cast<int32_t>(ids.size()));
  std::vector<float> out(ids.size() * static_cast<size_t>(m->config.n_vocab));
  m->forward(ids, 0, kv, pool, out, true);
  return out;
}

// Presets cut to one layer and a small vocabulary still load and give finite logits: Llama 3.2's
// rope factors, Qwen's biases and fallback types, the mixture's routing.
TEST(SynthWrite, CutDownPresetsLoadAndRun) {
  TempDir dir;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"llama-3.2-1b", "Q8_0"}, {"qwen2.5-0.5b", "Q4_K_M"}, {"tiny-moe", "Q4_K_M"}, {"tinyllama-1.1b", "Q4_0"}};
  ThreadPool pool(2);
  for (const auto& [preset, type] : cases) {
    SCOPED_TRACE(preset + " " + type);
    auto spec = synth_preset(preset);
    spec->n_layer = 1;
    spec->n_vocab = 512;
    spec->target = quant_target_from_name(type);
    const std::string path = dir.file(preset + ".gguf");
    synth_write(*spec, path, &pool);
    auto out = logits(path, {1, 7, 300, 42, 511});
    for (float v : out) ASSERT_TRUE(std::isfinite(v));
    GgufFile f = GgufFile::open(path);
    EXPECT_EQ(f.get_string("general.architecture", ""), spec->arch);
    EXPECT_EQ(f.get_int("general.file_type", -1), static_cast<int64_t>(spec->target->file_type));
  }
}

// Every preset at full size (several GB in all: a slow test): the file has the size its layout
// says, loads, and gives finite logits.
TEST(SynthSlow, FullPresetsLoadAndGiveFiniteLogits) {
  TempDir dir;
  ThreadPool pool(2);
  for (const auto& preset : synth_preset_names()) {
    SCOPED_TRACE(preset);
    auto spec = synth_preset(preset);
    spec->target = quant_target_from_name("Q4_0");
    const std::string path = dir.file(preset + ".gguf");
    const uint64_t size = synth_write(*spec, path, &pool);
    EXPECT_EQ(std::filesystem::file_size(path), size);
    auto out = logits(path, {1, 2, 3});
    for (float v : out) ASSERT_TRUE(std::isfinite(v));
    std::filesystem::remove(path);
  }
}

}  // namespace
}  // namespace sq
