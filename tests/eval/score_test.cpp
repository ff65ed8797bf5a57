// Bits per byte and KL divergence (src/eval/score.h) against computations made here independently:
// the model run one token at a time, the log-softmax written out in double.
#include "eval/score.h"

#include <cmath>
#include <numeric>

#include "base/error.h"
#include "base/mmap.h"
#include "base/thread_pool.h"
#include "engine/engine.h"
#include "model/kv_cache.h"
#include "model/synth.h"
#include "support.h"

namespace sq::eval {
namespace {

using test::TempDir;
using test::quote;

constexpr const char* kStories = "models/stories260K/stories260K.gguf";
constexpr const char* kValid = "corpora/tinystories/valid.txt";

std::string head(const std::string& path, size_t n) {
  std::string s = read_file(path);
  return s.substr(0, std::min(n, s.size()));
}

// -log2 softmax(row)[target], written out independently of the library.
double reference_bits(const std::vector<float>& row, int32_t target) {
  double m = row[0];
  for (float v : row) m = std::max(m, static_cast<double>(v));
  double sum = 0;
  for (float v : row) sum += std::exp(static_cast<double>(v) - m);
  return -((static_cast<double>(row[static_cast<size_t>(target)]) - m) - std::log(sum)) / std::log(2.0);
}

// The cross-entropy of `text` in bits, token by token: token i is predicted from BOS and the
// tokens of the window that scores it, which begins at k * stride, k the first window whose end
// passes i (windows hold `window - 1` tokens after BOS).
double token_by_token_bits(const Engine& engine, const std::string& text, int32_t window,
                           int32_t stride) {
  const Tokenizer& tok = engine.require_tokenizer();
  const Model& model = engine.model();
  const std::vector<int32_t> ids = tok.encode(text, false, false);
  const int64_t span = window - 1;  // BOS takes one position
  ThreadPool pool(1);
  KvCache kv(model.config, window);
  std::vector<float> logits(static_cast<size_t>(model.config.n_vocab));
  int64_t current = -1;
  double bits = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(ids.size()); ++i) {
    const int64_t k = i < span ? 0 : (i - span) / stride + 1;
    const int64_t begin = k * stride;
    if (k != current) {
      // A new window: BOS, then its tokens before i, one at a time.
      kv.clear();
      const int32_t bos = tok.bos();
      model.forward(std::span<const int32_t>(&bos, 1), 0, kv, pool, logits, false);
      for (int64_t j = begin; j < i; ++j) {
        model.forward(std::span<const int32_t>(&ids[static_cast<size_t>(j)], 1), kv.size(), kv, pool,
                      logits, false);
      }
      current = k;
    }
    bits += reference_bits(logits, ids[static_cast<size_t>(i)]);
    model.forward(std::span<const int32_t>(&ids[static_cast<size_t>(i)], 1), kv.size(), kv, pool,
                  logits, false);
  }
  return bits;
}

TEST(EvalText, CountsCharactersAndInvalidBytes) {
  TextCounts a = count_text("");
  EXPECT_EQ(a.bytes, 0u);
  EXPECT_EQ(a.chars, 0u);
  TextCounts b = count_text("h\xC3\xA9llo \xE4\xB8\xAD\xF0\x9F\x98\x80");  // é, 中, 😀
  EXPECT_EQ(b.bytes, 14u);
  EXPECT_EQ(b.chars, 8u);
  EXPECT_EQ(b.invalid_bytes, 0u);
  // A stray continuation byte, an overlong form, a truncated sequence at the end: one each per byte.
  TextCounts c = count_text("a\x80" "b\xC0\xAF" "c\xE4\xB8");
  EXPECT_EQ(c.bytes, 8u);
  EXPECT_EQ(c.invalid_bytes, 5u);
  EXPECT_EQ(c.chars, 8u);
}

TEST(EvalWindows, EveryTokenIsScoredOnceWithTheMostContext) {
  WindowPlan p;
  p.window = 9;
  p.bos = true;  // 8 tokens of text per window
  for (int32_t stride : {1, 3, 4, 8}) {
    p.stride = stride;
    for (uint64_t n : {0u, 1u, 7u, 8u, 9u, 20u, 101u}) {
      std::vector<Window> ws = window_list(n, p);
      std::vector<int> scored(n, 0);
      uint64_t prev_begin = 0;
      for (size_t k = 0; k < ws.size(); ++k) {
        const Window& w = ws[k];
        EXPECT_EQ(w.begin, k * static_cast<uint64_t>(stride));
        EXPECT_LE(w.end - w.begin, 8u);
        EXPECT_LE(w.begin, w.score_from);
        EXPECT_LT(w.score_from, w.end) << "a window that scores nothing is wasted";
        if (k > 0) {
          EXPECT_EQ(w.score_from, ws[k - 1].end);
          EXPECT_GE(w.begin, prev_begin);
        }
        prev_begin = w.begin;
        for (uint64_t t = w.score_from; t < w.end; ++t) ++scored[t];
        // Every token scored after the first window has window - stride tokens of context at least.
        if (k > 0) {
          EXPECT_GE(w.score_from - w.begin, static_cast<uint64_t>(8 - stride));
        }
      }
      for (uint64_t t = 0; t < n; ++t) EXPECT_EQ(scored[t], 1) << "token " << t << ", stride " << stride;
      if (n == 0) {
        EXPECT_TRUE(ws.empty());
      }
    }
  }
  // stride = window - BOS: disjoint windows, each scoring all of its tokens (zip's chunking).
  p.stride = 8;
  std::vector<Window> ws = window_list(20, p);
  ASSERT_EQ(ws.size(), 3u);
  EXPECT_EQ(ws[1].begin, 8u);
  EXPECT_EQ(ws[1].score_from, 8u);
  EXPECT_EQ(ws[2].end, 20u);
}

TEST(EvalWindows, OptionsAreCheckedAgainstTheModel) {
  SQ_REQUIRE_SHARED(model, kStories);
  auto engine = Engine::load({model, ""});
  WindowPlan d = plan_windows(*engine, {});
  EXPECT_EQ(d.window, 2048);  // the context the GGUF file states
  EXPECT_EQ(d.stride, 1024);
  EXPECT_TRUE(d.bos);
  ScoreOptions o;
  o.window = 1;
  EXPECT_THROW(plan_windows(*engine, o), InvalidArgument) << "no room for a token after BOS";
  o.window = 2049;
  EXPECT_THROW(plan_windows(*engine, o), InvalidArgument) << "longer than the training context";
  o.window = 64;
  o.stride = 64;
  EXPECT_THROW(plan_windows(*engine, o), InvalidArgument) << "would skip a token";
  o.stride = 63;
  EXPECT_EQ(plan_windows(*engine, o).stride, 63);
  o.window = 2;
  o.stride = 0;
  EXPECT_EQ(plan_windows(*engine, o).stride, 1);
}

// The library's figure equals the cross-entropy computed here token by token, for disjoint and
// overlapping windows.
TEST(EvalScore, BitsMatchTokenByTokenComputation) {
  SQ_REQUIRE_SHARED(model, kStories);
  SQ_REQUIRE_SHARED(valid, kValid);
  auto engine = Engine::load({model, ""});
  const std::string text = head(valid, 3000);
  ThreadPool pool(2);
  for (auto [window, stride] : {std::pair{64, 63}, std::pair{64, 32}, std::pair{40, 7}}) {
    ScoreOptions o;
    o.window = window;
    o.stride = stride;
    ScoreResult r = score_text(*engine, text, o, pool);
    const double expected = token_by_token_bits(*engine, text, window, stride);
    EXPECT_NEAR(r.bits, expected, 1e-9 * expected) << "window " << window << " stride " << stride;
    EXPECT_EQ(r.text.bytes, text.size());
    EXPECT_DOUBLE_EQ(r.bits_per_byte(), r.bits / static_cast<double>(text.size()));
    EXPECT_DOUBLE_EQ(r.bits_per_token(), r.bits / static_cast<double>(r.n_tokens));
    EXPECT_NEAR(r.perplexity(), std::exp2(r.bits / static_cast<double>(r.n_tokens)), 1e-9);
    EXPECT_EQ(r.n_windows, window_list(r.n_tokens, r.plan).size());
    EXPECT_TRUE(r.round_trips);
    // stories260K on its own kind of text: well under the 8 bits a byte costs raw.
    EXPECT_LT(r.bits_per_byte(), 3.0);
    EXPECT_GT(r.bits_per_byte(), 0.5);
  }
}

// Window 2 with BOS and stride 1: every token is predicted from BOS alone.
TEST(EvalScore, WindowOfTwoPredictsFromBosAlone) {
  SQ_REQUIRE_SHARED(model, kStories);
  auto engine = Engine::load({model, ""});
  const Tokenizer& tok = engine->require_tokenizer();
  const std::string text = "Once upon a time, there was a little dog.";
  ThreadPool pool(1);
  KvCache kv(engine->model().config, 1);
  std::vector<float> logits(static_cast<size_t>(engine->model().config.n_vocab));
  const int32_t bos = tok.bos();
  engine->model().forward(std::span<const int32_t>(&bos, 1), 0, kv, pool, logits, false);
  double expected = 0;
  for (int32_t id : tok.encode(text, false, false)) expected += reference_bits(logits, id);
  ScoreOptions o;
  o.window = 2;
  o.stride = 1;
  ScoreResult r = score_text(*engine, text, o, pool);
  EXPECT_NEAR(r.bits, expected, 1e-9 * expected);
  EXPECT_EQ(r.n_windows, r.n_tokens);
  EXPECT_EQ(r.n_evaluated, 2 * r.n_tokens);
}

TEST(EvalScore, SameBitsOnAnyNumberOfThreads) {
  SQ_REQUIRE_SHARED(model, kStories);
  SQ_REQUIRE_SHARED(valid, kValid);
  auto engine = Engine::load({model, ""});
  const std::string text = head(valid, 4000);
  ScoreOptions o;
  o.window = 128;
  ThreadPool one(1), two(2), three(3);
  const double a = score_text(*engine, text, o, one).bits;
  EXPECT_EQ(score_text(*engine, text, o, two).bits, a);
  EXPECT_EQ(score_text(*engine, text, o, three).bits, a);
}

TEST(EvalScore, EmptyTextHasNoFigures) {
  SQ_REQUIRE_SHARED(model, kStories);
  auto engine = Engine::load({model, ""});
  ThreadPool pool(1);
  ScoreResult r = score_text(*engine, "", {}, pool);
  EXPECT_EQ(r.n_tokens, 0u);
  EXPECT_EQ(r.bits, 0.0);
  EXPECT_TRUE(std::isnan(r.bits_per_byte()));
  EXPECT_TRUE(std::isnan(r.bits_per_token()));
}

// SentencePiece reads a literal U+2581 as a space: the tokens do not give the bytes back, and the
// result says so.
TEST(EvalScore, NotesTextTheTokenizerDoesNotRoundTrip) {
  SQ_REQUIRE_SHARED(model, kStories);
  auto engine = Engine::load({model, ""});
  ThreadPool pool(1);
  EXPECT_TRUE(score_text(*engine, "a cat", {}, pool).round_trips);
  EXPECT_FALSE(score_text(*engine, "a\xE2\x96\x81" "cat", {}, pool).round_trips);
}

// Without BOS the first token has no context; it is charged log2(n_vocab) bits.
TEST(EvalScore, FirstTokenWithoutBosCostsAUniformGuess) {
  TempDir dir;
  SynthSpec spec;
  spec.n_vocab = 300;
  spec.with_vocab = true;
  spec.n_ctx = 64;
  GgufWriter w = synth_model(spec);
  w.set("tokenizer.ggml.add_bos_token", GgufValue::of_bool(false));
  const std::string path = dir.file("nobos.gguf");
  w.write(path);
  auto engine = Engine::load({path, ""});
  ASSERT_FALSE(engine->require_tokenizer().add_bos_default());
  ThreadPool pool(1);
  const std::string text = "abcabcabc";
  const std::vector<int32_t> ids = engine->require_tokenizer().encode(text, false, false);
  ASSERT_GE(ids.size(), 2u);
  // Window 2 without BOS, stride 1: token 0 uniform, token i predicted from token i-1 alone.
  double expected = std::log2(300.0);
  KvCache kv(engine->model().config, 1);
  std::vector<float> logits(300);
  for (size_t i = 1; i < ids.size(); ++i) {
    kv.clear();
    engine->model().forward(std::span<const int32_t>(&ids[i - 1], 1), 0, kv, pool, logits, false);
    expected += reference_bits(logits, ids[i]);
  }
  ScoreOptions o;
  o.window = 2;
  o.stride = 1;
  ScoreResult r = score_text(*engine, text, o, pool);
  EXPECT_FALSE(r.plan.bos);
  EXPECT_NEAR(r.bits, expected, 1e-9 * expected);
  ThreadPool two(2);
  EXPECT_EQ(score_text(*engine, text, o, two).bits, r.bits) << "windows split over threads";
  KlResult kl = compare_models(*engine, *engine, text, o, two);
  EXPECT_EQ(kl.stats.n_positions, ids.size() - 1) << "token 0 has no predicting position";
  EXPECT_EQ(kl.base.bits, r.bits);
  // Window 1 holds one token: every token a uniform guess, no KL position at all.
  o.window = 1;
  r = score_text(*engine, text, o, pool);
  EXPECT_NEAR(r.bits, static_cast<double>(ids.size()) * std::log2(300.0), 1e-9);
  EXPECT_EQ(score_text(*engine, text, o, two).bits, r.bits);
  kl = compare_models(*engine, *engine, text, o, two);
  EXPECT_EQ(kl.stats.n_positions, 0u);
  EXPECT_NEAR(kl.base.bits, r.bits, 1e-9);
}

TEST(EvalKl, SummaryUsesNearestRankPercentiles) {
  std::vector<double> v(100);
  std::iota(v.begin(), v.end(), 1.0);  // 1..100, shuffled order does not matter
  std::reverse(v.begin(), v.end());
  KlStats s = summarize_kl(v, 75);
  EXPECT_EQ(s.n_positions, 100u);
  EXPECT_DOUBLE_EQ(s.mean, 50.5);
  EXPECT_EQ(s.p50, 50.0);
  EXPECT_EQ(s.p90, 90.0);
  EXPECT_EQ(s.p99, 99.0);
  EXPECT_EQ(s.max, 100.0);
  EXPECT_DOUBLE_EQ(s.top1_agreement, 0.75);
  KlStats one = summarize_kl({0.25}, 1);
  EXPECT_EQ(one.p50, 0.25);
  EXPECT_EQ(one.p99, 0.25);
  EXPECT_TRUE(std::isnan(summarize_kl({}, 0).mean));
}

TEST(EvalKl, ModelAgainstItselfIsZero) {
  SQ_REQUIRE_SHARED(model, kStories);
  SQ_REQUIRE_SHARED(valid, kValid);
  auto a = Engine::load({model, ""});
  auto b = Engine::load({model, ""});
  ThreadPool pool(2);
  ScoreOptions o;
  o.window = 128;
  KlResult r = compare_models(*a, *b, head(valid, 3000), o, pool);
  ASSERT_GT(r.stats.n_positions, 100u);
  EXPECT_EQ(r.stats.n_positions, r.base.n_tokens) << "with BOS every token has a position";
  EXPECT_EQ(r.stats.mean, 0.0);
  EXPECT_EQ(r.stats.max, 0.0);
  EXPECT_EQ(r.stats.top1_agreement, 1.0);
  EXPECT_EQ(r.base.bits, r.other.bits);
  // The same figure as scoring alone.
  EXPECT_NEAR(r.base.bits, score_text(*a, head(valid, 3000), o, pool).bits, 1e-9 * r.base.bits);
}

// Rounding the weights costs stories260K a little: KL small and positive, the argmax nearly always
// kept. (Its feed-forward rows of 172 do not split into the 32-element blocks of Q8_0, so the
// rounding tested is BF16's; `squeeze quantize` refuses Q8_0 for this model.)
TEST(EvalKl, QuantizedCopyIsCloseButNotEqual) {
  SQ_REQUIRE_SHARED(model, kStories);
  SQ_REQUIRE_SHARED(valid, kValid);
  TempDir dir;
  const std::string bf16 = dir.file("stories260K-bf16.gguf");
  test::RunResult q = test::squeeze("quantize " + quote(model) + " " + quote(bf16) + " BF16 -t 2");
  ASSERT_EQ(q.status, 0) << q.err;
  auto a = Engine::load({model, ""});
  auto b = Engine::load({bf16, ""});
  ThreadPool pool(2);
  ScoreOptions o;
  o.window = 256;
  KlResult r = compare_models(*a, *b, head(valid, 4000), o, pool);
  EXPECT_GT(r.stats.mean, 0.0);
  EXPECT_LT(r.stats.mean, 0.01);
  EXPECT_LE(r.stats.p50, r.stats.p90);
  EXPECT_LE(r.stats.p90, r.stats.p99);
  EXPECT_LE(r.stats.p99, r.stats.max);
  EXPECT_GT(r.stats.top1_agreement, 0.9);
  EXPECT_LT(r.stats.top1_agreement, 1.0 + 1e-12);
  EXPECT_NEAR(r.other.bits_per_byte(), r.base.bits_per_byte(), 0.05);
}

TEST(EvalKl, DifferentTokenizersAreRefused) {
  SQ_REQUIRE_SHARED(model, kStories);
  SQ_REQUIRE_SHARED(other, "models/extras/llama-2-tiny-random.gguf");
  auto a = Engine::load({model, ""});
  auto b = Engine::load({other, ""});
  ThreadPool pool(1);
  EXPECT_THROW(check_same_tokenizer(*a, *b), InvalidArgument);
  try {
    compare_models(*a, *b, "hello", {}, pool);
    FAIL() << "expected a refusal";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizers differ"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(check_same_tokenizer(*a, *a));
}

}  // namespace
}  // namespace sq::eval
