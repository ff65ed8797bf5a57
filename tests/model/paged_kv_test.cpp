// The paged KV cache (block pool, prefix names, eviction, fork) and the batched forward pass: the
// logits of every token run through Model::forward_batch, in any company and any block layout,
// must be bit-identical to Model::forward's for the same sequence.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "base/error.h"
#include "base/thread_pool.h"
#include "engine/engine.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "model/paged_kv.h"
#include "support.h"

namespace sq {
namespace {

ModelConfig tiny_config() {
  ModelConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.n_head_kv = 1;
  c.head_dim = 32;
  c.n_embd = 64;
  return c;
}

TEST(PagedKv, AllocatesAndReleasesBlocks) {
  PagedKvCache kv(tiny_config(), 4, 8, ops::KvType::F16);
  EXPECT_EQ(kv.n_available(), 4);
  KvSequence s;
  ASSERT_TRUE(kv.reserve(s, 17));  // three blocks of 8
  EXPECT_EQ(s.blocks.size(), 3u);
  EXPECT_EQ(kv.n_used(), 3);
  KvSequence t;
  EXPECT_FALSE(kv.reserve(t, 9));  // needs two, one is left
  EXPECT_EQ(kv.n_available(), 0);
  kv.free(t);
  kv.free(s);
  EXPECT_EQ(kv.n_used(), 0);
  EXPECT_EQ(kv.n_available(), 4);
  EXPECT_EQ(kv.n_cached(), 0);  // nothing was named
}

TEST(PagedKv, SharesNamedPrefixesAndEvictsLeastRecentlyReleased) {
  PagedKvCache kv(tiny_config(), 6, 4, ops::KvType::F32);
  std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  KvSequence s;
  ASSERT_TRUE(kv.reserve(s, 10));
  kv.advance(s, a, 10);  // two full blocks named, the third partial
  EXPECT_EQ(s.n_named, 2);

  // A prompt that begins with the same 8 tokens finds both blocks, one that diverges inside the
  // second block finds only the first.
  std::vector<int32_t> b = {1, 2, 3, 4, 5, 6, 7, 8, 42};
  KvSequence sb;
  EXPECT_EQ(kv.attach_prefix(sb, b, 8), 8);
  EXPECT_EQ(sb.blocks[0], s.blocks[0]);
  EXPECT_EQ(kv.refcount(s.blocks[0]), 2);
  std::vector<int32_t> c = {1, 2, 3, 4, 5, 6, 0, 8, 9};
  KvSequence sc;
  EXPECT_EQ(kv.attach_prefix(sc, c, 100), 4);
  // max_tokens caps the match.
  KvSequence sd;
  EXPECT_EQ(kv.attach_prefix(sd, b, 7), 4);
  kv.free(sd);
  // Same tokens at another place in the chain do not match (the name covers the prefix).
  std::vector<int32_t> shifted = {5, 6, 7, 8};
  KvSequence se;
  EXPECT_EQ(kv.attach_prefix(se, shifted, 4), 0);
  kv.free(se);

  const int32_t first = s.blocks[0], second = s.blocks[1];
  kv.free(sc);
  kv.free(sb);
  kv.free(s);
  EXPECT_EQ(kv.n_used(), 0);
  EXPECT_EQ(kv.n_cached(), 2);  // the named blocks stay; the partial one went back to the pool

  // The four never-named blocks go first, then the least recently released named one: s gave
  // its table back in order, so `first` is older than `second`.
  KvSequence big;
  ASSERT_TRUE(kv.reserve(big, 16));
  EXPECT_EQ(kv.n_cached(), 2);
  ASSERT_TRUE(kv.reserve(big, 20));
  EXPECT_EQ(kv.n_cached(), 1);
  EXPECT_EQ(big.blocks.back(), first);
  KvSequence again;
  EXPECT_EQ(kv.attach_prefix(again, a, 10), 0);  // the chain is broken at its first block
  kv.free(again);
  KvSequence still;
  EXPECT_EQ(kv.attach_prefix(still, std::span<const int32_t>(a).subspan(0, 4), 4), 0);
  kv.free(still);
  EXPECT_EQ(kv.refcount(second), 0);
  kv.free(big);
}

TEST(PagedKv, ForkSharesFullBlocksAndCopiesThePartialOne) {
  PagedKvCache kv(tiny_config(), 8, 4, ops::KvType::F32);
  std::vector<int32_t> a = {1, 2, 3, 4, 5, 6};
  KvSequence s;
  ASSERT_TRUE(kv.reserve(s, 6));
  std::vector<float> k(32), v(32);
  for (int32_t p = 0; p < 6; ++p) {
    for (int32_t l = 0; l < 2; ++l) {
      std::iota(k.begin(), k.end(), static_cast<float>(100 * p + l));
      std::iota(v.begin(), v.end(), static_cast<float>(-100 * p - l));
      kv.store(l, s.blocks[static_cast<size_t>(p / 4)], p % 4, k.data(), v.data());
    }
  }
  kv.advance(s, a, 6);
  KvSequence f;
  ASSERT_TRUE(kv.fork(s, f));
  ASSERT_EQ(f.blocks.size(), 2u);
  EXPECT_EQ(f.blocks[0], s.blocks[0]);
  EXPECT_NE(f.blocks[1], s.blocks[1]);
  EXPECT_EQ(f.size, 6);
  for (int32_t l = 0; l < 2; ++l) {
    ops::PagedKvRows rs = kv.rows(l, s.blocks), rf = kv.rows(l, f.blocks);
    for (int32_t p = 4; p < 6; ++p) {
      const size_t off_s = (static_cast<size_t>(s.blocks[1]) * 4 + static_cast<size_t>(p % 4)) * rs.row_bytes;
      const size_t off_f = (static_cast<size_t>(f.blocks[1]) * 4 + static_cast<size_t>(p % 4)) * rf.row_bytes;
      EXPECT_EQ(std::memcmp(rs.k + off_s, rf.k + off_f, rs.row_bytes), 0);
      EXPECT_EQ(std::memcmp(rs.v + off_s, rf.v + off_f, rs.row_bytes), 0);
    }
  }
  kv.free(f);
  kv.free(s);
  EXPECT_EQ(kv.n_used(), 0);
}

TEST(PagedKv, RejectsBadSizes) {
  EXPECT_THROW(PagedKvCache(tiny_config(), 0, 16), InvalidArgument);
  EXPECT_THROW(PagedKvCache(tiny_config(), 4, 0), InvalidArgument);
}

// Three sequences of different lengths, run in uneven chunks all in the same batches, with block
// tables scrambled over the pool; every slice's logits are compared with the bits of one
// single-sequence forward pass over the whole sequence.
void check_batched_logits(const std::string& relative, ops::KvType type) {
  const std::string path = test::shared_path(relative);
  if (path.empty()) GTEST_SKIP() << relative << " not found (set SQUEEZE_SHARED)";
  auto engine = Engine::load({path, ""});
  const Model& m = engine->model();
  const int32_t V = m.config.n_vocab;
  ThreadPool pool(2);

  std::vector<std::vector<int32_t>> seqs(3);
  const std::vector<int32_t> lengths = {37, 20, 9};
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (int32_t t = 0; t < lengths[i]; ++t) {
      seqs[i].push_back(static_cast<int32_t>((t * 7919 + static_cast<int32_t>(i) * 104729 + 1) % V));
    }
  }
  std::vector<std::vector<float>> ref(3);
  for (size_t i = 0; i < seqs.size(); ++i) {
    KvCache kc(m.config, lengths[i], type);
    ref[i].resize(static_cast<size_t>(lengths[i]) * static_cast<size_t>(V));
    m.forward(seqs[i], 0, kc, pool, ref[i], true);
  }

  const int32_t bs = 4;
  PagedKvCache kv(m.config, 40, bs, type);
  // Scramble the pool: take every block, give them back in a shuffled order.
  {
    std::vector<int32_t> all;
    for (int32_t b = 0; b < 40; ++b) all.push_back(kv.allocate());
    for (size_t i = 0; i < all.size(); ++i) {
      kv.release(all[(i * 17) % all.size()]);
    }
  }
  std::vector<KvSequence> ks(3);
  for (size_t i = 0; i < 3; ++i) ASSERT_TRUE(kv.reserve(ks[i], lengths[i]));

  // Chunk plans: sequence i runs chunks of these sizes (the last repeats), one per step.
  const std::vector<std::vector<int32_t>> plans = {{13, 1, 5, 1}, {1, 7, 2}, {3, 1}};
  std::vector<size_t> step_of(3, 0);
  int checked = 0;
  while (ks[0].size < lengths[0] || ks[1].size < lengths[1] || ks[2].size < lengths[2]) {
    std::vector<BatchSlice> batch;
    std::vector<size_t> who;
    for (size_t i = 0; i < 3; ++i) {
      if (ks[i].size >= lengths[i]) continue;
      const auto& plan = plans[i];
      const int32_t want = plan[std::min(step_of[i], plan.size() - 1)];
      ++step_of[i];
      const int32_t n = std::min(want, lengths[i] - ks[i].size);
      BatchSlice b;
      b.tokens = std::span<const int32_t>(seqs[i]).subspan(static_cast<size_t>(ks[i].size),
                                                           static_cast<size_t>(n));
      b.pos0 = ks[i].size;
      b.blocks = ks[i].blocks;
      b.logits = true;
      batch.push_back(b);
      who.push_back(i);
    }
    std::vector<float> logits(batch.size() * static_cast<size_t>(V));
    m.forward_batch(batch, kv, pool, logits, {});
    for (size_t j = 0; j < batch.size(); ++j) {
      const size_t i = who[j];
      const int32_t last = batch[j].pos0 + static_cast<int32_t>(batch[j].tokens.size()) - 1;
      ASSERT_EQ(std::memcmp(logits.data() + j * static_cast<size_t>(V),
                            ref[i].data() + static_cast<size_t>(last) * static_cast<size_t>(V),
                            static_cast<size_t>(V) * sizeof(float)),
                0)
          << relative << " sequence " << i << " position " << last;
      ++checked;
      kv.advance(ks[i], seqs[i], last + 1);
    }
  }
  EXPECT_GT(checked, 10);
}

TEST(BatchedForward, LogitsBitIdenticalStories260kF16) {
  check_batched_logits("models/stories260K/stories260K.gguf", ops::KvType::F16);
}
TEST(BatchedForward, LogitsBitIdenticalStories260kF32) {
  check_batched_logits("models/stories260K/stories260K.gguf", ops::KvType::F32);
}
TEST(BatchedForward, LogitsBitIdenticalStories260kQ8) {
  check_batched_logits("models/stories260K/stories260K.gguf", ops::KvType::Q8_0);
}
TEST(BatchedForward, LogitsBitIdenticalTinyRandomF16) {
  check_batched_logits("models/extras/llama-2-tiny-random.gguf", ops::KvType::F16);
}
TEST(BatchedForward, LogitsBitIdenticalTinyRandomF32) {
  check_batched_logits("models/extras/llama-2-tiny-random.gguf", ops::KvType::F32);
}
// Quantized weights, repacked at load under the 512-bit kernels (model/repack.h): the batched
// tiles and the one-token kernels of the packed layouts.
TEST(BatchedForward, LogitsBitIdenticalLlamaGqaQ4_0) {
  check_batched_logits("fixtures/parity/llama-gqa.q4_0.gguf", ops::KvType::F16);
}
TEST(BatchedForward, LogitsBitIdenticalLlamaGqaQ8_0) {
  check_batched_logits("fixtures/parity/llama-gqa.q8_0.gguf", ops::KvType::F16);
}

// The hidden-state output (for embeddings) is the final-normed state: the output matrix applied to
// a slice's last hidden row gives Model::forward's logits bit for bit.
TEST(BatchedForward, HiddenStatesAreTheFinalNormedStates) {
  const std::string path = test::shared_path("models/stories260K/stories260K.gguf");
  if (path.empty()) GTEST_SKIP() << "stories260K not found (set SQUEEZE_SHARED)";
  auto engine = Engine::load({path, ""});
  const Model& m = engine->model();
  const int32_t V = m.config.n_vocab, E = m.config.n_embd;
  ThreadPool pool(2);
  const std::vector<int32_t> a = {1, 403, 407, 261, 378, 30, 99, 7, 250};
  const std::vector<int32_t> b = {1, 20, 21, 22};
  std::vector<float> ref_a(a.size() * static_cast<size_t>(V)), ref_b(b.size() * static_cast<size_t>(V));
  {
    KvCache ka(m.config, static_cast<int32_t>(a.size()));
    m.forward(a, 0, ka, pool, ref_a, true);
    KvCache kb(m.config, static_cast<int32_t>(b.size()));
    m.forward(b, 0, kb, pool, ref_b, true);
  }
  PagedKvCache kv(m.config, 8, 4);
  KvSequence sa, sb;
  ASSERT_TRUE(kv.reserve(sa, static_cast<int32_t>(a.size())));
  ASSERT_TRUE(kv.reserve(sb, static_cast<int32_t>(b.size())));
  std::vector<BatchSlice> batch(2);
  batch[0].tokens = a;
  batch[0].blocks = sa.blocks;
  batch[0].hidden = true;
  batch[1].tokens = b;
  batch[1].blocks = sb.blocks;
  batch[1].logits = true;
  batch[1].hidden = true;
  std::vector<float> logits(static_cast<size_t>(V));
  std::vector<float> hidden((a.size() + b.size()) * static_cast<size_t>(E));
  m.forward_batch(batch, kv, pool, logits, hidden);
  EXPECT_EQ(std::memcmp(logits.data(), ref_b.data() + (b.size() - 1) * static_cast<size_t>(V),
                        static_cast<size_t>(V) * sizeof(float)),
            0);
  std::vector<float> out(static_cast<size_t>(V));
  for (size_t t = 0; t < a.size() + b.size(); ++t) {
    const bool in_a = t < a.size();
    const size_t pos = in_a ? t : t - a.size();
    ops::matmul(m.output, hidden.data() + t * static_cast<size_t>(E), 1, out.data(), pool);
    const float* ref = (in_a ? ref_a.data() : ref_b.data()) + pos * static_cast<size_t>(V);
    EXPECT_EQ(std::memcmp(out.data(), ref, static_cast<size_t>(V) * sizeof(float)), 0) << "row " << t;
  }
}

}  // namespace
}  // namespace sq
