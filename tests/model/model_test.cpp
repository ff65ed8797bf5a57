// Loading and running models built with the synthetic-model writer: batch and thread-count
// invariance of the logits, refusal of unsupported types and architectures, shape checks.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <filesystem>
#include <vector>

#include "base/error.h"
#include "base/thread_pool.h"
#include "kernels/isa.h"
#include "kernels/repack.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "model/repack.h"
#include "model/synth.h"
#include "support.h"

namespace sq {
namespace {

using test::TempDir;


std::vector<int32_t> test_tokens(int n, int vocab) {
  std::vector<int32_t> ids;
  uint32_t x = 12345;
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    ids.push_back(static_cast<int32_t>((x >> 8) % static_cast<uint32_t>(vocab)));
  }
  return ids;
}

std::vector<float> run_batched(const Model& m, const std::vector<int32_t>& ids, int threads) {
  ThreadPool pool(threads);
  KvCache kv(m.config, static_cast<int32_t>(ids.size()));
  std::vector<float> out(ids.size() * static_cast<size_t>(m.config.n_vocab));
  m.forward(ids, 0, kv, pool, out, true);
  return out;
}

std::vector<float> run_one_by_one(const Model& m, const std::vector<int32_t>& ids, int threads) {
  ThreadPool pool(threads);
  KvCache kv(m.config, static_cast<int32_t>(ids.size()));
  const size_t V = static_cast<size_t>(m.config.n_vocab);
  std::vector<float> out(ids.size() * V);
  for (size_t t = 0; t < ids.size(); ++t) {
    m.forward(std::span<const int32_t>(&ids[t], 1), static_cast<int32_t>(t), kv, pool,
              std::span<float>(out.data() + t * V, V), false);
  }
  return out;
}

struct InvarianceCase {
  std::string name;
  SynthSpec spec;
};

class InvarianceTest : public ::testing::TestWithParam<InvarianceCase> {};

// DESIGN.md invariant 2: the logits of a sequence computed in one batch equal, bit for bit, the
// logits computed token by token, on 1 and on 2 threads.
TEST_P(InvarianceTest, BatchAndThreadInvariantBitForBit) {
  TempDir dir;
  const std::string path = dir.file("m.gguf");
  synth_model(GetParam().spec).write(path);
  auto model = load_model(path);
  auto ids = test_tokens(23, model->config.n_vocab);
  auto reference = run_batched(*model, ids, 1);
  for (int threads : {1, 2, 3}) {
    auto batched = run_batched(*model, ids, threads);
    auto single = run_one_by_one(*model, ids, threads);
    ASSERT_EQ(0, std::memcmp(reference.data(), batched.data(), reference.size() * sizeof(float)))
        << "batched logits depend on the thread count (" << threads << ")";
    ASSERT_EQ(0, std::memcmp(reference.data(), single.data(), reference.size() * sizeof(float)))
        << "token-by-token logits differ from batched ones on " << threads << " threads";
  }
  for (float v : reference) ASSERT_TRUE(std::isfinite(v));
}

std::vector<InvarianceCase> invariance_cases() {
  std::vector<InvarianceCase> out;
  SynthSpec base;
  out.push_back({"llama_f32", base});
  SynthSpec q = base;
  q.n_embd = 256;
  q.n_ff = 256;
  q.n_vocab = 96;
  for (GgmlType t : {GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1,
                     GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    q.type = t;
    out.push_back({"llama_" + type_name(t), q});
  }
  // Heads of 64 with seven query heads per key/value head (Qwen2.5-0.5B's grouping): the attention
  // kernels' sixteen-key blocks, a remainder of keys, and query groups that threads split.
  SynthSpec gqa = base;
  gqa.n_embd = 448;
  gqa.n_head = 7;
  gqa.n_head_kv = 1;
  gqa.n_ff = 320;
  gqa.type = GgmlType::Q8_0;
  out.push_back({"llama_gqa7_head64", gqa});
  SynthSpec qwen = base;
  qwen.arch = "qwen2";
  qwen.tied_output = true;
  out.push_back({"qwen2_tied", qwen});
  SynthSpec moe = base;
  moe.n_expert = 4;
  moe.n_expert_used = 2;
  out.push_back({"llama_moe", moe});
  SynthSpec freqs = base;
  freqs.rope_freqs = true;
  out.push_back({"llama_rope_freqs", freqs});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Synthetic, InvarianceTest, ::testing::ValuesIn(invariance_cases()),
                         [](const auto& info) { return info.param.name; });

// Load-time repacking (model/repack.h) changes where and how the matrices are stored, not one bit
// of the logits. Rows of 17 blocks give each x16 row a full group and a partial one; for the K
// types, rows of 3 blocks are one short group, and of 5 a full group and a short one.
TEST(ModelRepack, RepackedWeightsGiveTheMappedLayoutsBits) {
  TempDir dir;
  const std::pair<GgmlType, bool> cases[] = {
      {GgmlType::Q4_0, false}, {GgmlType::Q4_1, false}, {GgmlType::Q5_0, false}, {GgmlType::Q5_1, false},
      {GgmlType::Q8_0, false}, {GgmlType::Q4_0, true},  {GgmlType::Q4_1, true},  {GgmlType::Q5_0, true},
      {GgmlType::Q5_1, true},  {GgmlType::Q8_0, true},  {GgmlType::Q4_K, false}, {GgmlType::Q5_K, true}};
  for (auto [t, tied] : cases) {
    const bool k = type_info(t)->block_elems == 256;
    SynthSpec spec;
    spec.n_embd = k ? 768 : 544;
    spec.n_ff = k ? 1280 : 256;
    // 100 rows: a tied Q4_0 output matrix that is not whole groups of sixteen keeps Q4_0x16 beside
    // layers of sixteen interleaved rows (under avx512vnni); the tied Q8_0 one (96 rows) takes
    // Q8_0_R16, and the embedding lookup unpacks its rows.
    spec.n_vocab = t == GgmlType::Q4_0 && tied ? 100 : 96;
    spec.type = t;
    spec.tied_output = tied;
    const std::string path = dir.file(type_name(t) + (tied ? "-tied" : "") + ".gguf");
    synth_model(spec).write(path);
    ::setenv("SQUEEZE_REPACK", "0", 1);
    auto mapped = load_model(path);
    ::unsetenv("SQUEEZE_REPACK");
    auto packed = load_model(path);
    EXPECT_EQ(mapped->repacked.tensors, 0);
    EXPECT_EQ(mapped->layers[0].wq.type, t);
    if (!repack_enabled()) {
      EXPECT_EQ(packed->repacked.tensors, 0);
      GTEST_SKIP() << "the active kernels (" << kernels::isa_name(kernels::active_isa())
                   << ") have no packed layouts; nothing to compare";
    }
    const kernels::Isa isa = kernels::active_isa();
    EXPECT_EQ(packed->layers[0].wq.type, *kernels::load_layout(t, mapped->layers[0].wq.n_rows(), mapped->layers[0].wq.ne[0], isa));
    EXPECT_EQ(packed->layers[0].wq.n_bytes(), mapped->layers[0].wq.n_bytes());
    // 7 matrices per layer, plus the output matrix; when it is tied, the embedding lookup reads
    // the packed copy too.
    EXPECT_EQ(packed->repacked.tensors, 7 * static_cast<int32_t>(packed->layers.size()) + 1);
    EXPECT_EQ(packed->output_tied, tied);
    EXPECT_EQ(packed->output.type, *kernels::load_layout(t, mapped->output.n_rows(), mapped->output.ne[0], isa));
    if (tied) {
      EXPECT_EQ(packed->tok_embd.type, packed->output.type);
      EXPECT_EQ(packed->tok_embd.data, packed->output.data);
    } else {
      EXPECT_EQ(packed->tok_embd.type, mapped->tok_embd.type);
    }
    auto ids = test_tokens(19, mapped->config.n_vocab);
    for (int threads : {1, 2}) {
      const auto a = run_batched(*mapped, ids, threads);
      const auto b = run_batched(*packed, ids, threads);
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << type_name(t);
      const auto c = run_one_by_one(*packed, ids, threads);
      ASSERT_EQ(0, std::memcmp(a.data(), c.data(), a.size() * sizeof(float))) << type_name(t);
    }
  }
}

template <typename E>
std::string load_error(const std::string& path) {
  try {
    load_model(path);
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "no error";
}

TEST(ModelLoad, RefusesUnsupportedTensorTypeNamingTypeAndTensor) {
  TempDir dir;
  const std::string path = dir.file("q2k.gguf");
  // A model whose rows are 256 wide, with one layer matrix stored as Q2_K: valid GGUF, a type
  // squeeze does not compute with.
  SynthSpec s;
  SynthSpec wide = s;
  wide.n_embd = 256;
  wide.n_ff = 256;
  auto bytes = synth_model(wide).to_bytes();
  GgufFile parsed = GgufFile::parse(bytes, "wide");
  GgufWriter rebuilt;
  for (const auto& [k, v] : parsed.metadata()) rebuilt.set(k, v);
  for (const auto& t : parsed.tensors()) {
    if (t.name == "blk.1.attn_v.weight") {
      rebuilt.add_tensor(t.name, GgmlType::Q2_K, t.ne, std::vector<uint8_t>(t.n_elements / 256 * 84));
    } else {
      rebuilt.add_tensor(t.name, t.type(), t.ne, std::vector<uint8_t>(t.data, t.data + t.n_bytes));
    }
  }
  rebuilt.write(path);
  std::string msg = load_error<UnsupportedError>(path);
  EXPECT_NE(msg.find("Q2_K"), std::string::npos) << msg;
  EXPECT_NE(msg.find("blk.1.attn_v.weight"), std::string::npos) << msg;
}

TEST(ModelLoad, RefusesUnknownArchitecture) {
  TempDir dir;
  auto bytes = synth_model(SynthSpec{}).to_bytes();
  GgufFile parsed = GgufFile::parse(bytes, "m");
  GgufWriter rebuilt;
  for (const auto& [k, v] : parsed.metadata()) {
    rebuilt.set(k, k == "general.architecture" ? GgufValue::of_string("mamba9") : v);
  }
  for (const auto& t : parsed.tensors()) {
    rebuilt.add_tensor(t.name, t.type(), t.ne, std::vector<uint8_t>(t.data, t.data + t.n_bytes));
  }
  const std::string path = dir.file("arch.gguf");
  rebuilt.write(path);
  std::string msg = load_error<UnsupportedError>(path);
  EXPECT_NE(msg.find("mamba9"), std::string::npos) << msg;
  EXPECT_NE(msg.find("llama"), std::string::npos) << "should list what is supported: " << msg;
}

TEST(ModelLoad, MissingTensorAndWrongShapeAreFormatErrors) {
  TempDir dir;
  auto bytes = synth_model(SynthSpec{}).to_bytes();
  GgufFile parsed = GgufFile::parse(bytes, "m");
  for (int variant = 0; variant < 2; ++variant) {
    GgufWriter rebuilt;
    for (const auto& [k, v] : parsed.metadata()) rebuilt.set(k, v);
    for (const auto& t : parsed.tensors()) {
      if (t.name == "blk.1.ffn_up.weight") {
        if (variant == 0) continue;  // missing
        auto ne = t.ne;
        ne[1] -= 32;  // wrong shape
        rebuilt.add_tensor(t.name, t.type(), ne, std::vector<uint8_t>(t.data, t.data + t.n_bytes / t.ne[1] * ne[1]));
        continue;
      }
      rebuilt.add_tensor(t.name, t.type(), t.ne, std::vector<uint8_t>(t.data, t.data + t.n_bytes));
    }
    const std::string path = dir.file("bad" + std::to_string(variant) + ".gguf");
    rebuilt.write(path);
    std::string msg = load_error<FormatError>(path);
    EXPECT_NE(msg.find("blk.1.ffn_up.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find(variant == 0 ? "missing" : "shape"), std::string::npos) << msg;
  }
}

TEST(ModelLoad, TiedOutputUsesTheEmbedding) {
  TempDir dir;
  SynthSpec s;
  s.tied_output = true;
  synth_model(s).write(dir.file("tied.gguf"));
  auto m = load_model(dir.file("tied.gguf"));
  EXPECT_TRUE(m->output_tied);
  EXPECT_EQ(m->output.data, m->tok_embd.data);
}

TEST(ModelLoad, MissingFileAndDirectoryAreIoErrors) {
  EXPECT_NE(load_error<IoError>("/nonexistent/model.gguf").find("does not exist"), std::string::npos);
  EXPECT_NE(load_error<IoError>("/tmp").find("directory"), std::string::npos);
}

TEST(ModelLoad, GarbageIsNotAModel) {
  TempDir dir;
  std::string path = dir.file("garbage.bin");
  std::vector<uint8_t> junk(1000);
  for (size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<uint8_t>(i * 7 + 3);
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(junk.data(), 1, junk.size(), f);
  std::fclose(f);
  std::string msg = load_error<FormatError>(path);
  EXPECT_NE(msg.find("not a GGUF file"), std::string::npos) << msg;
}

int64_t resident_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return -1;
  long size = 0, resident = 0;
  const int got = std::fscanf(f, "%ld %ld", &size, &resident);
  std::fclose(f);
  return got == 2 ? static_cast<int64_t>(resident) * ::sysconf(_SC_PAGESIZE) : -1;
}

// DESIGN.md invariant 1: loading maps the file; resident memory grows by page faults on what is
// touched, not by a copy of the weights.
TEST(ModelLoad, LoadingALargeModelMapsItInsteadOfCopying) {
  if (resident_bytes() < 0) GTEST_SKIP() << "/proc/self/statm is not readable here";
  TempDir dir;
  const std::string path = dir.file("large.gguf");
  {
    SynthSpec s;
    s.n_embd = 2048;
    s.n_vocab = 16000;
    s.n_layer = 1;
    s.n_head = 16;
    s.n_head_kv = 4;
    s.n_ff = 2048;
    synth_model(s).write(path);
  }
  const auto file_size = static_cast<int64_t>(std::filesystem::file_size(path));
  ASSERT_GE(file_size, int64_t{256} << 20);
  const int64_t before = resident_bytes();
  auto model = load_model(path);
  const int64_t growth = resident_bytes() - before;
  EXPECT_EQ(model->config.n_vocab, 16000);
  EXPECT_LT(growth, file_size / 20) << "loading a " << file_size << "-byte model made " << growth
                                    << " bytes resident";
}

}  // namespace
}  // namespace sq
