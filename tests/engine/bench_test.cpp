// squeeze bench's measurements on tiny synthetic models: speeds are positive and finite, the JSON
// carries the documented keys with the documented types, and the bytes a token reads match a sum
// computed here from the file's tensor table.
#include "engine/bench.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/error.h"
#include "base/membw.h"
#include "base/thread_pool.h"
#include "engine/engine.h"
#include "kernels/types.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/repack.h"
#include "model/synth.h"

namespace sq {
namespace {

class BenchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("squeeze-bench-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const SynthSpec& spec, const std::string& name) {
    const std::string path = (dir_ / name).string();
    synth_model(spec).write(path);
    return path;
  }

  std::filesystem::path dir_;
};

SynthSpec dense_spec() {
  SynthSpec s;
  s.n_vocab = 96;
  s.n_embd = 64;
  s.n_layer = 2;
  s.n_ff = 128;
  s.type = GgmlType::Q8_0;
  return s;
}

// One quick repetition of pp and tg, without the bandwidth measurement.
ModelBenchOptions quick_options(int32_t n_prompt, int32_t n_gen) {
  ModelBenchOptions o;
  o.n_prompt = n_prompt;
  o.n_gen = n_gen;
  o.repetitions = 1;
  o.measure_membw = false;
  return o;
}

SynthSpec moe_spec() {
  SynthSpec s = dense_spec();
  s.n_expert = 4;
  s.n_expert_used = 2;
  s.tied_output = true;
  return s;
}

// The bytes a token reads, from the file's own tensor table: the embedding contributes one row (and
// all of it again when it doubles as the output), stacked experts n_expert_used / n_expert of their
// bytes, everything else all of its bytes.
uint64_t expected_bytes_per_token(const std::string& path, int n_expert, int n_expert_used) {
  GgufFile f = GgufFile::open(path);
  uint64_t total = 0;
  bool has_output = false;
  for (const auto& t : f.tensors()) {
    if (t.name == "output.weight") has_output = true;
  }
  for (const auto& t : f.tensors()) {
    if (t.name == "token_embd.weight") {
      total += t.n_bytes / t.ne[1];
      if (!has_output) total += t.n_bytes;
    } else if (t.name.find("_exps.") != std::string::npos) {
      total += t.n_bytes / static_cast<uint64_t>(n_expert) * static_cast<uint64_t>(n_expert_used);
    } else {
      total += t.n_bytes;
    }
  }
  return total;
}

TEST_F(BenchTest, BytesPerTokenOfDenseModel) {
  const std::string path = write(dense_spec(), "dense.gguf");
  auto model = load_model(path);
  const uint64_t expected = expected_bytes_per_token(path, 0, 0);
  EXPECT_EQ(weight_bytes_per_token(*model), expected);
  // A dense untied model reads all of its weights but the embedding table less one row.
  const uint64_t row = static_cast<uint64_t>(model->tok_embd.row_size());
  const GgufFile file = GgufFile::open(path);
  uint64_t all = 0;
  for (const auto& t : file.tensors()) all += t.n_bytes;
  EXPECT_EQ(expected + model->tok_embd.n_bytes() - row, all);
}

TEST_F(BenchTest, BytesPerTokenOfMixtureCountsOnlyUsedExperts) {
  const SynthSpec spec = moe_spec();
  const std::string path = write(spec, "moe.gguf");
  auto model = load_model(path);
  ASSERT_EQ(model->config.n_expert, 4);
  EXPECT_EQ(weight_bytes_per_token(*model),
            expected_bytes_per_token(path, spec.n_expert, spec.n_expert_used));
  // Half of the experts are used: fewer bytes than the dense equivalent with all experts.
  uint64_t experts = 0;
  for (const auto& L : model->layers) {
    experts += L.ffn_gate_exps.n_bytes() + L.ffn_up_exps.n_bytes() + L.ffn_down_exps.n_bytes();
  }
  EXPECT_GT(experts, 0u);
}

TEST_F(BenchTest, SpeedsArePositiveAndFinite) {
  const std::string path = write(dense_spec(), "speed.gguf");
  auto model = load_model(path);
  ThreadPool pool(2);
  ModelBenchOptions o;
  o.n_prompt = 16;
  o.n_gen = 8;
  o.repetitions = 3;
  o.membw.buffer_bytes = size_t{4} << 20;
  o.membw.passes = 2;
  ModelBenchResult r = bench_model(*model, pool, o);
  ASSERT_TRUE(r.pp.has_value());
  ASSERT_TRUE(r.tg.has_value());
  for (const SpeedStats* s : {&*r.pp, &*r.tg}) {
    EXPECT_TRUE(std::isfinite(s->mean_tps));
    EXPECT_GT(s->mean_tps, 0);
    EXPECT_TRUE(std::isfinite(s->sd_tps));
    EXPECT_GE(s->sd_tps, 0);
    EXPECT_EQ(s->samples_tps.size(), 3u);
  }
  EXPECT_EQ(r.pp->n_tokens, 16);
  EXPECT_EQ(r.tg->n_tokens, 8);
  EXPECT_EQ(r.threads, 2);
  EXPECT_EQ(r.weight_type, "Q8_0");
  ASSERT_TRUE(r.membw.has_value());
  EXPECT_GT(r.membw->read_gbps, 0);
  EXPECT_GT(r.implied_gbps(), 0);
  EXPECT_GT(r.membw_fraction(), 0);
}

// An engine over a model whose matrices were repacked at load (model/repack.h) still finds the
// file's metadata, and bench reports the repacked memory.
TEST_F(BenchTest, EngineAndBenchOverARepackedModel) {
  const std::string path = write(dense_spec(), "repacked.gguf");
  auto engine = Engine::load({path, ""});
  const Model& m = engine->model();
  ThreadPool pool(1);
  ModelBenchOptions o = quick_options(4, 2);
  o.measure_peak = false;
  const ModelBenchResult r = bench_model(m, pool, o);
  EXPECT_EQ(r.weight_type, "Q8_0");
  if (!repack_enabled()) {
    EXPECT_EQ(r.repacked_tensors, 0);
    GTEST_SKIP() << "the active kernels have no packed layouts";
  }
  EXPECT_EQ(r.repacked_tensors, 7 * 2 + 1);
  EXPECT_EQ(r.repacked_bytes, m.repacked.bytes);
  EXPECT_GT(r.repacked_bytes, 0u);
}

TEST_F(BenchTest, JsonHasTheDocumentedKeysAndTypes) {
  const std::string path = write(moe_spec(), "json.gguf");
  auto model = load_model(path);
  ThreadPool pool(1);
  const ModelBenchOptions o = quick_options(8, 4);
  nlohmann::json j = to_json(bench_model(*model, pool, o));
  std::set<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.insert(it.key());
  EXPECT_EQ(keys, (std::set<std::string>{"model", "threads", "pp", "tg", "weight_bytes_per_token",
                                         "path", "weight_type", "n_params", "file_size", "isa",
                                         "repetitions", "implied_gbps", "membw_gbps",
                                         "membw_fraction", "pp_gops", "peak_gops",
                                         "peak_fraction", "repacked_bytes", "repacked_tensors"}));
  EXPECT_TRUE(j["model"].is_string());
  EXPECT_TRUE(j["threads"].is_number_integer());
  EXPECT_TRUE(j["weight_bytes_per_token"].is_number_unsigned());
  EXPECT_EQ(j["weight_bytes_per_token"].get<uint64_t>(), weight_bytes_per_token(*model));
  for (const char* part : {"pp", "tg"}) {
    ASSERT_TRUE(j[part].is_object()) << part;
    EXPECT_TRUE(j[part]["n_tokens"].is_number_integer());
    EXPECT_TRUE(j[part]["mean_tps"].is_number_float());
    EXPECT_TRUE(j[part]["sd_tps"].is_number_float());
    EXPECT_TRUE(j[part]["samples_tps"].is_array());
    // The tests' pools never fall back to one thread (tests/test_main.cpp).
    EXPECT_EQ(j[part]["alone_share"].get<double>(), 0.0) << part;
  }
  EXPECT_EQ(j["pp"]["n_tokens"], 8);
  EXPECT_EQ(j["tg"]["n_tokens"], 4);
  EXPECT_TRUE(j["membw_gbps"].is_null());  // not measured
  EXPECT_TRUE(j["peak_gops"].is_number());
  EXPECT_GT(j["peak_fraction"].get<double>(), 0.0);
}

// The matrix products of a prompt token: every layer matrix, the used share of the experts, not
// the output matrix.
TEST_F(BenchTest, PromptMacsCountTheLayerMatrices) {
  SynthSpec dense;
  auto model = load_model(write(dense, "macs.gguf"));
  const auto& c = model->config;
  const uint64_t attn = static_cast<uint64_t>(c.n_embd) * (2 * c.q_dim() + 2 * c.kv_dim());
  const uint64_t ffn = 3ull * c.n_embd * c.n_ff;
  EXPECT_EQ(prompt_macs_per_token(*model), c.n_layer * (attn + ffn));
  auto moe = load_model(write(moe_spec(), "macs-moe.gguf"));
  const auto& m = moe->config;
  const uint64_t moe_attn = static_cast<uint64_t>(m.n_embd) * (2 * m.q_dim() + 2 * m.kv_dim());
  const uint64_t router = static_cast<uint64_t>(m.n_embd) * m.n_expert;
  const uint64_t experts = 3ull * m.n_embd * m.n_ff * m.n_expert_used;
  EXPECT_EQ(prompt_macs_per_token(*moe), m.n_layer * (moe_attn + router + experts));
}

// --profile: every one-token product and attention of the timed tg runs is counted once per token
// (and layer) under its parts' types and shapes, the bytes counted are the matrices' bytes and the
// cache rows', and their time is part of tg's. Without it, no profile and no "profile" key.
TEST_F(BenchTest, ProfileCountsEveryProductOfEveryToken) {
  const SynthSpec spec = dense_spec();
  auto model = load_model(write(spec, "profile.gguf"));
  ThreadPool pool(2);
  ModelBenchOptions o = quick_options(4, 5);
  o.repetitions = 2;
  o.profile = true;
  const ModelBenchResult r = bench_model(*model, pool, o);
  const int64_t tokens = 5 * 2;  // the timed runs only: not the warm-up, not the prompt
  // Per layer q/k/v (one group), attention, the attention output, gate/up (one group), down; then
  // the output.
  const Model& m = *model;
  auto name = [](const TensorView& w) {
    return std::string(type_name(w.type)) + " " + std::to_string(w.ne[0]) + "x" + std::to_string(w.ne[1]);
  };
  const auto& L = m.layers[0];
  const std::vector<std::string> want = {name(L.wq) + " + " + name(L.wk) + " + " + name(L.wv),
                                         "attention (f16 cache)", name(L.wo),
                                         name(L.ffn_gate) + " + " + name(L.ffn_up), name(L.ffn_down),
                                         name(m.output)};
  ASSERT_EQ(r.profile.size(), want.size());
  double bytes = 0, seconds = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const ops::ProductTime& e = r.profile[i];
    EXPECT_EQ(e.products, want[i]);
    EXPECT_EQ(e.calls, (i + 1 < want.size() ? spec.n_layer : 1) * tokens) << e.products;
    EXPECT_GT(e.seconds, 0.0) << e.products;
    if (i != 1) bytes += e.bytes;
    seconds += e.seconds;
  }
  // Attention: token i of a run reads the key and value rows of positions 0..i, in every layer.
  const double row = static_cast<double>(ops::kv_row_bytes(ops::KvType::F16, model->config.kv_dim()));
  EXPECT_EQ(r.profile[1].bytes, 2 * 2.0 * row * (1 + 2 + 3 + 4 + 5) * spec.n_layer);
  double matrices = static_cast<double>(m.output.n_bytes());
  for (const auto& l : m.layers) {
    for (const TensorView* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_gate, &l.ffn_up, &l.ffn_down}) {
      matrices += static_cast<double>(w->n_bytes());
    }
  }
  EXPECT_EQ(bytes, matrices * tokens);
  EXPECT_GT(r.profile_tg_seconds, seconds);
  const nlohmann::json j = to_json(r);
  ASSERT_TRUE(j["profile"].is_object());
  EXPECT_EQ(j["profile"]["products"].size(), want.size());
  EXPECT_GT(j["profile"]["other_share"].get<double>(), 0.0);

  o.profile = false;
  const ModelBenchResult plain = bench_model(*model, pool, o);
  EXPECT_TRUE(plain.profile.empty());
  EXPECT_FALSE(to_json(plain).contains("profile"));
}

TEST_F(BenchTest, ZeroTokensSkipsThatPart) {
  const std::string path = write(dense_spec(), "skip.gguf");
  auto model = load_model(path);
  ThreadPool pool(1);
  const ModelBenchOptions o = quick_options(0, 2);
  ModelBenchResult r = bench_model(*model, pool, o);
  EXPECT_FALSE(r.pp.has_value());
  ASSERT_TRUE(r.tg.has_value());
  EXPECT_TRUE(to_json(r)["pp"].is_null());
}

TEST(BenchOptions, BadValuesNameTheFlagAndTheValue) {
  auto message = [](ModelBenchOptions o) -> std::string {
    try {
      check_bench_options(o);
    } catch (const InvalidArgument& e) {
      return e.what();
    }
    return "";
  };
  ModelBenchOptions o;
  o.n_prompt = -1;
  EXPECT_NE(message(o).find("-p is -1"), std::string::npos) << message(o);
  o = {};
  o.n_gen = -5;
  EXPECT_NE(message(o).find("-n is -5"), std::string::npos) << message(o);
  o = {};
  o.repetitions = 0;
  EXPECT_NE(message(o).find("-r is 0"), std::string::npos) << message(o);
  o = {};
  o.n_prompt = 0;
  o.n_gen = 0;
  EXPECT_NE(message(o).find("nothing to measure"), std::string::npos);
  EXPECT_EQ(message(ModelBenchOptions{}), "");
}

TEST(MemBw, SmallBufferGivesAPositiveRate) {
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    MemBwOptions o;
    o.buffer_bytes = size_t{8} << 20;
    o.passes = 3;
    MemBwResult r = measure_memory_bandwidth(pool, o);
    EXPECT_GT(r.read_gbps, 0);
    EXPECT_TRUE(std::isfinite(r.read_gbps));
    EXPECT_GE(r.read_gbps, r.median_gbps);
    EXPECT_EQ(r.pass_gbps.size(), 3u);
    EXPECT_EQ(r.threads, threads);
    nlohmann::json j = to_json(r);
    EXPECT_TRUE(j["read_gbps"].is_number_float());
    EXPECT_EQ(j["threads"], threads);
  }
}

TEST(Peak, ShortRunGivesAPositiveRate) {
  ThreadPool pool(2);
  PeakOptions o;
  o.pass_seconds = 0.01;
  o.passes = 2;
  PeakResult r = measure_dot_peak(pool, o);
  EXPECT_GT(r.peak_gops, 0);
  EXPECT_TRUE(std::isfinite(r.peak_gops));
  EXPECT_GT(r.tile_gops, 0);
  EXPECT_TRUE(std::isfinite(r.tile_gops));
  EXPECT_EQ(r.pass_gops.size(), 2u);
  EXPECT_EQ(r.tile_pass_gops.size(), 2u);
  EXPECT_FALSE(r.instructions.empty());
  nlohmann::json j = to_json(r);
  EXPECT_TRUE(j["peak_gops"].is_number_float());
  EXPECT_TRUE(j["tile_gops"].is_number_float());
  EXPECT_EQ(j["instructions"], r.instructions);
  EXPECT_EQ(j["threads"], 2);
  EXPECT_TRUE(j["isa"].is_string());
}

}  // namespace
}  // namespace sq

namespace sq {
namespace {

// Not a check: writes the synthetic models docs/benchmarks.md measures, when asked to with
// SQUEEZE_BENCH_MODEL_DIR (until `squeeze synth` exists). Skipped otherwise.
TEST(BenchModels, WriteSyntheticBenchModels) {
  const char* dir = std::getenv("SQUEEZE_BENCH_MODEL_DIR");
  if (dir == nullptr || *dir == '\0') GTEST_SKIP() << "set SQUEEZE_BENCH_MODEL_DIR to write them";
  std::filesystem::create_directories(dir);
  SynthSpec dense;  // ~107 M parameters: TinyLlama's layer shape, 8 layers, a small vocabulary
  dense.n_vocab = 8192;
  dense.n_embd = 1024;
  dense.n_layer = 8;
  dense.n_head = 16;
  dense.n_head_kv = 4;
  dense.n_ff = 2816;
  dense.n_ctx = 2048;
  dense.type = GgmlType::Q8_0;
  synth_model(dense).write((std::filesystem::path(dir) / "synth-107m.q8_0.gguf").string());
  SynthSpec moe = dense;  // 4 experts, 2 used
  moe.n_layer = 4;
  moe.n_expert = 4;
  moe.n_expert_used = 2;
  moe.n_ff = 1408;
  synth_model(moe).write((std::filesystem::path(dir) / "synth-moe.q8_0.gguf").string());
}

}  // namespace
}  // namespace sq
