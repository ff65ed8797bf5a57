// The llama2.c checkpoint reader: the same model as GGUF, separate classifiers, and damaged files.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "base/error.h"
#include "base/mmap.h"
#include "base/thread_pool.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "support.h"

namespace sq {
namespace {

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& ids) {
  ThreadPool pool(1);
  KvCache kv(m.config, static_cast<int32_t>(ids.size()));
  std::vector<float> out(ids.size() * static_cast<size_t>(m.config.n_vocab));
  m.forward(ids, 0, kv, pool, out, true);
  return out;
}

class TempFile {
 public:
  explicit TempFile(const std::string& bytes) {
    path_ = (std::filesystem::temp_directory_path() /
             ("squeeze-l2c-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++) + ".bin"))
                .string();
    std::ofstream(path_, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  ~TempFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::string path_;
};

TEST(Llama2c, SameModelAsTheGguf) {
  SQ_REQUIRE_SHARED(bin, "models/stories260K/stories260K.bin");
  SQ_REQUIRE_SHARED(gguf, "models/stories260K/stories260K.gguf");
  auto a = load_model(bin);
  auto b = load_model(gguf);
  EXPECT_EQ(a->format, "llama2.c");
  EXPECT_EQ(a->config.n_embd, 64);
  EXPECT_EQ(a->config.n_layer, 5);
  EXPECT_EQ(a->config.n_head, 8);
  EXPECT_EQ(a->config.n_head_kv, 4);
  EXPECT_EQ(a->config.n_ff, 172);
  EXPECT_EQ(a->config.n_vocab, 512);
  EXPECT_EQ(a->config.n_ctx_train, 512);
  EXPECT_TRUE(a->output_tied);
  std::vector<int32_t> ids = {1, 403, 407, 261, 378, 11, 10, 300};
  auto la = logits_of(*a, ids), lb = logits_of(*b, ids);
  ASSERT_EQ(la.size(), lb.size());
  double max_diff = 0;
  for (size_t i = 0; i < la.size(); ++i) max_diff = std::max(max_diff, std::abs(double(la[i]) - lb[i]));
  EXPECT_LT(max_diff, 1e-4);
}

// A tiny checkpoint written here: dim 8, hidden 16, 1 layer, 2 heads, 1 kv head, vocab 5, seq 4.
std::string tiny_checkpoint(int32_t vocab_field, bool with_classifier, float classifier_value) {
  const int32_t dim = 8, hidden = 16, layers = 1, heads = 2, kv = 1, vocab = 5, seq = 4;
  const int32_t head = dim / heads, kv_dim = head * kv;
  int32_t header[7] = {dim, hidden, layers, heads, kv, vocab_field, seq};
  std::string out(reinterpret_cast<const char*>(header), sizeof(header));
  auto put = [&](size_t n, float v) {
    for (size_t i = 0; i < n; ++i) {
      float x = v + 0.01f * static_cast<float>(i % 7);
      out.append(reinterpret_cast<const char*>(&x), 4);
    }
  };
  put(vocab * dim, 0.1f);            // token embedding
  put(layers * dim, 1.0f);           // rms_att
  put(layers * dim * dim, 0.02f);    // wq
  put(layers * dim * kv_dim, 0.02f); // wk
  put(layers * dim * kv_dim, 0.02f); // wv
  put(layers * dim * dim, 0.02f);    // wo
  put(layers * dim, 1.0f);           // rms_ffn
  put(layers * dim * hidden, 0.02f); // w1
  put(layers * hidden * dim, 0.02f); // w2
  put(layers * dim * hidden, 0.02f); // w3
  put(dim, 1.0f);                    // rms_final
  put(seq * head / 2, 0.0f);         // freq_cis_real
  put(seq * head / 2, 0.0f);         // freq_cis_imag
  if (with_classifier) put(vocab * dim, classifier_value);
  return out;
}

TEST(Llama2c, NegativeVocabMeansSeparateClassifier) {
  TempFile shared(tiny_checkpoint(5, false, 0));
  TempFile separate(tiny_checkpoint(-5, true, -0.3f));
  auto a = load_model(shared.path());
  auto b = load_model(separate.path());
  EXPECT_TRUE(a->output_tied);
  EXPECT_FALSE(b->output_tied);
  EXPECT_EQ(b->config.n_vocab, 5);
  EXPECT_NE(b->output.data, b->tok_embd.data);
  EXPECT_FLOAT_EQ(reinterpret_cast<const float*>(b->output.data)[0], -0.3f);
  auto la = logits_of(*a, {1, 2}), lb = logits_of(*b, {1, 2});
  EXPECT_NE(la, lb);
}

TEST(Llama2c, EveryTruncationIsAFormatError) {
  const std::string good = tiny_checkpoint(5, false, 0);
  ASSERT_NO_THROW(load_model(TempFile(good).path()));
  for (size_t len : {size_t{0}, size_t{3}, size_t{27}, size_t{28}, size_t{100}, good.size() - 4, good.size() - 1}) {
    TempFile f(good.substr(0, len));
    EXPECT_THROW(load_model(f.path()), FormatError) << "length " << len;
  }
  TempFile longer(good + "junk");
  try {
    load_model(longer.path());
    ADD_FAILURE() << "trailing bytes accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("needs"), std::string::npos) << e.what();
  }
}

TEST(Llama2c, AbsurdHeadersAreRefusedWithoutHugeAllocations) {
  const std::string good = tiny_checkpoint(5, false, 0);
  for (int field = 0; field < 7; ++field) {
    for (int32_t v : {0, -1, 3, 1 << 30, INT32_MIN}) {
      std::string bad = good;
      std::memcpy(bad.data() + field * 4, &v, 4);
      TempFile f(bad);
      try {
        load_model(f.path());
      } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("llama2.c"), std::string::npos) << e.what();
      }
    }
  }
}

}  // namespace
}  // namespace sq
