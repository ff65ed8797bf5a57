// squeeze's quantizer against llama.cpp's: from the parity fixtures' F32 files it must write the
// same tensor types and the same tensor bytes as llama-quantize did (Q8_0, Q6_K, Q4_K_M, Q4_0, F16,
// BF16). Also: the fallback types for rows not a multiple of 256, quantized models that load and
// compute close to the F32 one, and clean refusals that leave no file behind.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "base/error.h"
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


QuantTarget target(const std::string& name) {
  auto t = quant_target_from_name(name);
  EXPECT_TRUE(t.has_value()) << name;
  return t.value_or(QuantTarget{});
}

QuantizeSummary quantize(const std::string& in, const std::string& out, const std::string& type,
                         bool allow_requantize = false) {
  ThreadPool pool(2);
  QuantizeOptions o;
  o.pool = &pool;
  o.allow_requantize = allow_requantize;
  return quantize_model_file(in, out, target(type), o);
}

TEST(QuantTargets, NamesAndLlamaCppFileTypes) {
  const std::map<std::string, std::pair<GgmlType, uint32_t>> expect = {
      {"F32", {GgmlType::F32, 0}},     {"F16", {GgmlType::F16, 1}},     {"BF16", {GgmlType::BF16, 32}},
      {"Q4_0", {GgmlType::Q4_0, 2}},   {"Q4_1", {GgmlType::Q4_1, 3}},   {"Q8_0", {GgmlType::Q8_0, 7}},
      {"Q5_0", {GgmlType::Q5_0, 8}},   {"Q5_1", {GgmlType::Q5_1, 9}},   {"Q4_K", {GgmlType::Q4_K, 15}},
      {"Q5_K", {GgmlType::Q5_K, 17}},  {"Q6_K", {GgmlType::Q6_K, 18}},  {"Q4_K_M", {GgmlType::Q4_K, 15}},
      {"Q5_K_M", {GgmlType::Q5_K, 17}},
  };
  for (const auto& [name, e] : expect) {
    auto t = quant_target_from_name(name);
    ASSERT_TRUE(t.has_value()) << name;
    EXPECT_EQ(t->base, e.first) << name;
    EXPECT_EQ(static_cast<uint32_t>(t->file_type), e.second) << name;
    EXPECT_EQ(t->k_mix, name.size() == 6) << name;
  }
  EXPECT_TRUE(quant_target_from_name("q4_k_m").has_value());
  EXPECT_FALSE(quant_target_from_name("Q3_K_M").has_value());
  EXPECT_FALSE(quant_target_from_name("").has_value());
}

TEST(QuantRules, UseMoreBitsOverThirtyTwoLayers) {
  std::vector<QuantTensor> tensors = {{"token_embd.weight", {4096, 1000}}, {"output.weight", {4096, 1000}}};
  for (int i = 0; i < 32; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    tensors.push_back({b + "attn_v.weight", {4096, 1024}});
    tensors.push_back({b + "ffn_down.weight", {14336, 4096}});
    tensors.push_back({b + "attn_norm.weight", {4096}});
  }
  const QuantModelInfo model{"llama", 32, 32, 8, 0};
  const auto types = plan_tensor_types(tensors, model, target("Q4_K_M"));
  EXPECT_EQ(types[0], GgmlType::Q4_K);
  EXPECT_EQ(types[1], GgmlType::Q6_K);
  const std::set<int> upgraded = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31};
  for (int i = 0; i < 32; ++i) {
    const GgmlType want = upgraded.count(i) ? GgmlType::Q6_K : GgmlType::Q4_K;
    EXPECT_EQ(types[2 + 3 * i], want) << "attn_v " << i;
    EXPECT_EQ(types[3 + 3 * i], want) << "ffn_down " << i;
    EXPECT_FALSE(types[4 + 3 * i].has_value()) << "norms are not converted";
  }
  // The counters follow llama.cpp's order (by block number), not the order given.
  std::vector<QuantTensor> reversed(tensors.rbegin(), tensors.rend());
  const auto rtypes = plan_tensor_types(reversed, model, target("Q4_K_M"));
  for (size_t k = 0; k < tensors.size(); ++k) EXPECT_EQ(rtypes[tensors.size() - 1 - k], types[k]);
}

TEST(QuantRules, OrderIsLlamaCppLoaderOrder) {
  EXPECT_TRUE(llama_tensor_order("token_embd.weight", "blk.0.attn_q.weight"));
  EXPECT_TRUE(llama_tensor_order("blk.2.ffn_up.weight", "blk.10.attn_k.weight"));
  EXPECT_TRUE(llama_tensor_order("blk.3.attn_k.weight", "blk.3.attn_q.weight"));
  EXPECT_FALSE(llama_tensor_order("output.weight", "output.weight"));
}

// The strong test: llama.cpp's own outputs from the same F32 inputs.
TEST(QuantizeParity, SameTypesAndBytesAsLlamaCpp) {
  SQ_REQUIRE_SHARED(readme, "fixtures/parity/README.md");
  const std::string dir = std::filesystem::path(readme).parent_path().string();
  TempDir tmp;
  const std::vector<std::pair<std::string, std::string>> types = {
      {"q8_0", "Q8_0"}, {"q6_k", "Q6_K"}, {"q4_k_m", "Q4_K_M"}, {"q4_0", "Q4_0"}, {"f16", "F16"}, {"bf16", "BF16"}};
  for (const std::string stem : {"llama-gqa", "qwen2-tied", "llama-moe"}) {
    for (const auto& [suffix, type] : types) {
      SCOPED_TRACE(stem + "." + suffix);
      const std::string out = tmp.file(stem + "." + suffix + ".gguf");
      quantize(dir + "/" + stem + ".f32.gguf", out, type);
      GgufFile ours = GgufFile::open(out);
      GgufFile theirs = GgufFile::open(dir + "/" + stem + "." + suffix + ".gguf");
      ASSERT_EQ(ours.tensors().size(), theirs.tensors().size());
      for (size_t k = 0; k < theirs.tensors().size(); ++k) {
        const GgufTensorInfo& t = theirs.tensors()[k];
        const GgufTensorInfo* o = ours.tensor(t.name);
        ASSERT_NE(o, nullptr) << t.name;
        EXPECT_EQ(ours.tensors()[k].name, t.name) << "tensor order";
        EXPECT_EQ(type_name(o->type()), type_name(t.type())) << t.name;
        EXPECT_EQ(o->ne, t.ne) << t.name;
        ASSERT_EQ(o->n_bytes, t.n_bytes) << t.name;
        EXPECT_EQ(0, std::memcmp(o->data, t.data, t.n_bytes)) << t.name << ": bytes differ";
      }
      EXPECT_EQ(ours.get_int("general.file_type", -1), theirs.get_int("general.file_type", -2));
      EXPECT_EQ(ours.get_int("general.quantization_version", -1), 2);
      // Metadata in the same order, and so (with the same tensors) the very same file.
      ASSERT_EQ(ours.metadata().size(), theirs.metadata().size());
      for (size_t k = 0; k < ours.metadata().size(); ++k) {
        EXPECT_EQ(ours.metadata()[k].first, theirs.metadata()[k].first);
      }
      EXPECT_EQ(read_file(out), read_file(dir + "/" + stem + "." + suffix + ".gguf")) << "whole file";
    }
  }
}

// Rows of 896 (Qwen2.5-0.5B's width) are not a multiple of 256: the K types fall back.
TEST(QuantizeRules, RowsOf896GetTheFallbackTypes) {
  TempDir tmp;
  SynthSpec s;
  s.arch = "qwen2";
  s.n_embd = 896;
  s.n_head = 14;
  s.n_head_kv = 2;
  s.n_ff = 512;
  s.n_vocab = 64;
  s.n_layer = 2;
  const std::string in = tmp.file("in.gguf");
  synth_model(s).write(in);
  struct Want {
    std::string type;
    std::map<std::string, GgmlType> tensors;
  };
  const std::vector<Want> wants = {
      {"Q4_K_M",
       {{"output.weight", GgmlType::Q8_0}, {"token_embd.weight", GgmlType::Q5_0},
        {"blk.0.attn_q.weight", GgmlType::Q5_0}, {"blk.0.attn_v.weight", GgmlType::Q5_0},
        {"blk.1.attn_v.weight", GgmlType::Q8_0}, {"blk.1.ffn_gate.weight", GgmlType::Q5_0},
        {"blk.0.ffn_down.weight", GgmlType::Q4_K}, {"blk.1.ffn_down.weight", GgmlType::Q6_K},
        {"blk.0.attn_q.bias", GgmlType::F32}, {"output_norm.weight", GgmlType::F32}}},
      {"Q5_K_M",
       {{"blk.0.attn_q.weight", GgmlType::Q5_1}, {"blk.1.attn_v.weight", GgmlType::Q8_0},
        {"blk.0.ffn_down.weight", GgmlType::Q5_K}}},
      {"Q6_K", {{"blk.0.attn_q.weight", GgmlType::Q8_0}, {"blk.0.ffn_down.weight", GgmlType::Q6_K}}},
      {"Q4_0", {{"output.weight", GgmlType::Q8_0}, {"blk.0.attn_q.weight", GgmlType::Q4_0}}},
  };
  for (const auto& w : wants) {
    SCOPED_TRACE(w.type);
    const std::string out = tmp.file(w.type + ".gguf");
    quantize(in, out, w.type);
    GgufFile f = GgufFile::open(out);
    for (const auto& [name, type] : w.tensors) {
      ASSERT_NE(f.tensor(name), nullptr) << name;
      EXPECT_EQ(type_name(f.tensor(name)->type()), type_name(type)) << name;
    }
    load_model(out);
  }
}

std::vector<double> softmax(const float* x, size_t n) {
  double m = x[0];
  for (size_t i = 1; i < n; ++i) m = std::max(m, static_cast<double>(x[i]));
  std::vector<double> p(n);
  double z = 0;
  for (size_t i = 0; i < n; ++i) z += (p[i] = std::exp(x[i] - m));
  for (double& v : p) v /= z;
  return p;
}

// Mean over positions of KL(reference || other) of the softmax of the logits.
double mean_kl(const std::vector<float>& ref, const std::vector<float>& other, size_t vocab) {
  double total = 0;
  const size_t positions = ref.size() / vocab;
  for (size_t t = 0; t < positions; ++t) {
    auto p = softmax(ref.data() + t * vocab, vocab);
    auto q = softmax(other.data() + t * vocab, vocab);
    for (size_t i = 0; i < vocab; ++i) total += p[i] * std::log(p[i] / q[i]);
  }
  return total / static_cast<double>(positions);
}

std::vector<float> logits(const std::string& path, const std::vector<int32_t>& ids) {
  auto m = load_model(path);
  ThreadPool pool(2);
  KvCache kv(m->config, static_cast<int32_t>(ids.size()));
  std::vector<float> out(ids.size() * static_cast<size_t>(m->config.n_vocab));
  m->forward(ids, 0, kv, pool, out, true);
  return out;
}

TEST(QuantizeModel, QuantizedModelsLoadAndComputeCloseToF32) {
  TempDir tmp;
  SynthSpec s;
  s.n_embd = 256;
  s.n_ff = 512;
  s.n_head = 8;
  s.n_head_kv = 2;
  s.n_vocab = 256;
  s.n_layer = 2;
  const std::string in = tmp.file("f32.gguf");
  synth_model(s).write(in);
  std::vector<int32_t> ids;
  for (int i = 0; i < 24; ++i) ids.push_back((i * 37 + 11) % 256);
  const auto ref = logits(in, ids);
  // Bounds an order of magnitude above what each type shows on this model.
  const std::map<std::string, double> bound = {{"F16", 1e-5}, {"BF16", 1e-3}, {"Q8_0", 1e-3},
                                               {"Q6_K", 3e-3}, {"Q5_K_M", 1e-2}, {"Q4_K_M", 3e-2},
                                               {"Q4_0", 5e-2}, {"Q5_1", 1e-2}};
  for (const auto& [type, max_kl] : bound) {
    const std::string out = tmp.file(type + ".gguf");
    quantize(in, out, type);
    const double kl = mean_kl(ref, logits(out, ids), 256);
    EXPECT_LT(kl, max_kl) << type;
    EXPECT_GT(kl, 0.0) << type;
  }
}

TEST(QuantizeErrors, BadInputIsRefusedAndLeavesNoFile) {
  TempDir tmp;
  const std::string out = tmp.file("out.gguf");
  EXPECT_THROW(quantize(tmp.file("missing.gguf"), out, "Q8_0"), IoError);
  std::ofstream(tmp.file("notes.txt")) << "not a model at all, just some notes\n";
  EXPECT_THROW(quantize(tmp.file("notes.txt"), out, "Q8_0"), FormatError);

  SynthSpec s;
  s.n_embd = 256;
  s.n_ff = 256;
  s.type = GgmlType::Q8_0;
  synth_model(s).write(tmp.file("q8.gguf"));
  try {
    quantize(tmp.file("q8.gguf"), out, "Q4_K_M");
    ADD_FAILURE() << "already-quantized input was accepted";
  } catch (const UnsupportedError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("already quantized (Q8_0)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--allow-requantize"), std::string::npos) << msg;
  }
  // Rows of 80 fit no block of Q4_0 and no fallback.
  SynthSpec narrow;
  narrow.n_embd = 80;
  narrow.n_head = 4;
  synth_model(narrow).write(tmp.file("narrow.gguf"));
  EXPECT_THROW(quantize(tmp.file("narrow.gguf"), out, "Q4_0"), InvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(out));
  for (const auto& name : tmp.names()) EXPECT_EQ(name.find(".tmp."), std::string::npos) << name;

  // With the flag, through dequantized values.
  const QuantizeSummary sum = quantize(tmp.file("q8.gguf"), out, "Q4_K_M", true);
  EXPECT_GT(sum.n_converted, 0u);
  load_model(out);
}

TEST(QuantizeModel, SameTypeCopiesAndKeepsMetadata) {
  TempDir tmp;
  SynthSpec s;
  s.with_vocab = true;
  s.n_vocab = 300;
  s.n_embd = 256;
  s.n_ff = 256;
  synth_model(s).write(tmp.file("in.gguf"));
  quantize(tmp.file("in.gguf"), tmp.file("out.gguf"), "F32");
  GgufFile a = GgufFile::open(tmp.file("in.gguf"));
  GgufFile b = GgufFile::open(tmp.file("out.gguf"));
  EXPECT_EQ(b.find("tokenizer.ggml.tokens")->array_size(), 300u);
  for (const auto& t : a.tensors()) {
    const GgufTensorInfo* o = b.tensor(t.name);
    ASSERT_NE(o, nullptr);
    ASSERT_EQ(o->n_bytes, t.n_bytes);
    EXPECT_EQ(0, std::memcmp(o->data, t.data, t.n_bytes)) << t.name;
  }
}

}  // namespace
}  // namespace sq
