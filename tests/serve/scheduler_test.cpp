// The continuous-batching scheduler on stories260K: greedy output equals the single-sequence
// generate() (and llama2.c's published continuation) alone and amid other requests joining and
// leaving; prefix sharing; blocks back in the pool; backpressure, deadlines, stop strings,
// max_tokens, n > 1, constraints, logprobs against a log-softmax of Model::forward logits, cost
// shares, embeddings, errors and shutdown.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <thread>

#include "base/thread_pool.h"
#include "engine/engine.h"
#include "model/gguf.h"
#include "model/kv_cache.h"
#include "ops/ops.h"
#include "serve/scheduler.h"
#include "support.h"

namespace sq::serve {
namespace {

using namespace std::chrono_literals;

const Engine* stories() {
  static std::unique_ptr<Engine> engine = [] {
    std::string path = test::shared_path("models/stories260K/stories260K.gguf");
    return path.empty() ? nullptr : Engine::load({path, ""});
  }();
  return engine.get();
}

#define REQUIRE_STORIES()                                                         \
  const Engine* engine = stories();                                               \
  if (engine == nullptr) GTEST_SKIP() << "stories260K not found (set SQUEEZE_SHARED)"

struct Choice {
  std::vector<int32_t> tokens;
  std::vector<SampledToken> sampled;
  std::string text;
  std::string finish;
};

struct Outcome {
  std::map<int32_t, Choice> choices;
  Usage usage;
  Cost cost;
  std::vector<float> embedding;
  std::string error;
  bool done = false;
  std::vector<Event::Kind> kinds;
};

Outcome collect(RequestHandle& h) {
  Outcome o;
  Event e;
  for (;;) {
    if (!h.next(e, 20s)) {
      ADD_FAILURE() << "no event within 20 s";
      return o;
    }
    o.kinds.push_back(e.kind);
    switch (e.kind) {
      case Event::Kind::Delta: {
        Choice& c = o.choices[e.choice];
        EXPECT_TRUE(c.finish.empty()) << "a Delta after Finished";
        c.text += e.text;
        for (auto& t : e.tokens) {
          c.tokens.push_back(t.token);
          c.sampled.push_back(t);
        }
        break;
      }
      case Event::Kind::Finished:
        EXPECT_TRUE(o.choices[e.choice].finish.empty()) << "two Finished for one choice";
        o.choices[e.choice].finish = e.finish_reason;
        break;
      case Event::Kind::Done:
        o.usage = e.usage;
        o.cost = e.cost;
        o.embedding = e.embedding;
        o.done = true;
        EXPECT_FALSE(h.next(e, 0ms)) << "an event after Done";
        return o;
      case Event::Kind::Error:
        o.error = e.message;
        EXPECT_FALSE(h.next(e, 0ms)) << "an event after Error";
        return o;
    }
  }
}

GenerateRequest greedy(std::vector<int32_t> prompt, int32_t max_tokens) {
  GenerateRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0;
  return r;
}

// The single-sequence reference: sq::generate's tokens, without a final end-of-generation token
// (the scheduler reports it by finish_reason "stop", not as output).
struct Reference {
  std::vector<int32_t> tokens;
  std::string text;
  std::string finish;
};
Reference reference(const Engine& engine, const std::vector<int32_t>& prompt, int32_t n,
                    std::optional<SamplingParams> sampling = std::nullopt,
                    std::vector<std::string> stop = {}) {
  GenerateOptions o;
  o.n_predict = n;
  o.n_threads = 1;
  if (sampling) {
    o.sampling = *sampling;
  } else {
    o.sampling.temperature = 0;  // greedy
  }
  o.stop = std::move(stop);
  Reference r;
  GenerateResult g = generate(engine, prompt, o, [&](std::string_view t) { r.text += t; });
  r.tokens = g.tokens;
  r.finish = g.finish_reason;
  if (!r.tokens.empty() && engine.tokenizer()->is_eog(r.tokens.back())) r.tokens.pop_back();
  return r;
}

std::vector<int32_t> encode(const Engine& engine, const std::string& text) {
  return engine.tokenizer()->encode(text, true, false);
}

SchedulerOptions small_options() {
  SchedulerOptions o;
  o.n_ctx = 256;
  o.parallel = 4;
  o.n_threads = 2;
  o.block_size = 8;
  o.prefill_chunk = 32;
  return o;
}

const std::vector<std::string> kPrompts = {
    "Once upon a time", "The little dog", "Lily wanted to play with her friend Tom in the park",
    "One day, a big bear", "Tim"};

TEST(Scheduler, GreedyMatchesGenerateAndTheGoldenContinuation) {
  REQUIRE_STORIES();
  Scheduler s(*engine, small_options());
  for (const std::string& p : kPrompts) {
    auto prompt = encode(*engine, p);
    Outcome o = collect(*s.submit(greedy(prompt, 60)));
    ASSERT_TRUE(o.done) << o.error;
    Reference ref = reference(*engine, prompt, 60);
    EXPECT_EQ(o.choices[0].tokens, ref.tokens) << p;
    EXPECT_EQ(o.choices[0].text, ref.text) << p;
    EXPECT_EQ(o.choices[0].finish, ref.finish) << p;
    EXPECT_EQ(o.usage.prompt_tokens, static_cast<int32_t>(prompt.size()));
  }
  // llama2.c's and llama.cpp's greedy continuation of "Once upon a time" (BOS 1 403 407 261 378).
  const std::string ids_path = test::shared_path("models/stories260K/expected-once-upon-a-time.ids");
  if (ids_path.empty()) return;
  std::ifstream in(ids_path);
  std::vector<int32_t> golden;
  for (int32_t id; in >> id;) golden.push_back(id);
  ASSERT_GE(golden.size(), 100u);
  Outcome o = collect(*s.submit(greedy({1, 403, 407, 261, 378}, 100)));
  ASSERT_TRUE(o.done) << o.error;
  EXPECT_EQ(o.choices[0].tokens, std::vector<int32_t>(golden.begin(), golden.begin() + 100));
}

TEST(Scheduler, GreedyUnchangedByContinuousBatching) {
  REQUIRE_STORIES();
  SchedulerOptions opt = small_options();
  opt.parallel = 3;
  opt.prefill_chunk = 5;  // prompts run in several chunks, beside generating sequences
  opt.block_size = 4;
  Scheduler s(*engine, opt);
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& p : kPrompts) prompts.push_back(encode(*engine, p));
  std::vector<std::shared_ptr<RequestHandle>> handles, noise;
  for (size_t i = 0; i < prompts.size(); ++i) {
    handles.push_back(s.submit(greedy(prompts[i], 40 + static_cast<int32_t>(i) * 7)));
    // Others join and are cancelled while ours run.
    GenerateRequest other = greedy(encode(*engine, "A cat sat on the mat and"), 200);
    other.sampling.temperature = 1.0f;
    other.sampling.seed = i;
    noise.push_back(s.submit(other));
    if (i % 2 == 1) noise[i - 1]->cancel();
  }
  for (size_t i = 0; i < prompts.size(); ++i) {
    Outcome o = collect(*handles[i]);
    ASSERT_TRUE(o.done) << o.error;
    Reference ref = reference(*engine, prompts[i], 40 + static_cast<int32_t>(i) * 7);
    EXPECT_EQ(o.choices[0].tokens, ref.tokens) << kPrompts[i];
    EXPECT_EQ(o.choices[0].text, ref.text) << kPrompts[i];
  }
  for (auto& h : noise) h->cancel();
  for (auto& h : noise) EXPECT_TRUE(collect(*h).done);
  s.shutdown(true);
  EXPECT_EQ(s.metrics().kv_blocks_used, 0);
}

TEST(Scheduler, SharesPromptPrefixes) {
  REQUIRE_STORIES();
  Scheduler s(*engine, small_options());
  auto prompt = encode(*engine,
                       "Once upon a time, there was a little girl named Lily. She loved to play "
                       "outside in the sun with her dog and her ball");
  ASSERT_GT(prompt.size(), 24u);
  Outcome a = collect(*s.submit(greedy(prompt, 30)));
  Outcome b = collect(*s.submit(greedy(prompt, 30)));
  ASSERT_TRUE(a.done && b.done);
  EXPECT_EQ(a.usage.cached_tokens, 0);
  // Every full block but the one holding the last token (which must run for its logits).
  EXPECT_EQ(b.usage.cached_tokens, (static_cast<int32_t>(prompt.size()) - 1) / 8 * 8);
  EXPECT_EQ(a.choices[0].tokens, b.choices[0].tokens);
  EXPECT_EQ(b.choices[0].tokens, reference(*engine, prompt, 30).tokens);
  // A prompt that shares only the beginning reuses only those blocks.
  auto other = prompt;
  other[10] = other[10] == 5 ? 6 : 5;
  Outcome c = collect(*s.submit(greedy(other, 10)));
  EXPECT_EQ(c.usage.cached_tokens, 8);
  const SchedulerMetrics m = s.metrics();
  EXPECT_EQ(m.cached_prompt_tokens_total, b.usage.cached_tokens + 8);
  EXPECT_EQ(m.kv_blocks_used, 0);
  EXPECT_GT(m.kv_blocks_cached, 0);
  // The pool's regions are counted (two threads); the tests' pools never run one alone.
  EXPECT_GT(m.parallel_regions_total, 0);
  EXPECT_EQ(m.parallel_regions_alone_total, 0);
}

TEST(Scheduler, RequestsArrivingTogetherComputeASharedPromptOnce) {
  REQUIRE_STORIES();
  SchedulerOptions opt = small_options();
  opt.prefill_chunk = 16;  // the shared prompt takes several steps
  Scheduler s(*engine, opt);
  auto system = encode(*engine,
                       "Once upon a time, there was a little girl named Lily. She loved to play "
                       "outside in the sun with her dog and her ball. One day, she went to the park");
  ASSERT_GT(system.size(), 40u);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::shared_ptr<RequestHandle>> hs;
  for (const char* tail : {" and saw a bird", " and met Tom", " and found a box", " and"}) {
    auto p = system;
    auto more = engine->tokenizer()->encode(tail, false, false);
    p.insert(p.end(), more.begin(), more.end());
    prompts.push_back(p);
    hs.push_back(s.submit(greedy(p, 20)));
  }
  int32_t cached = 0;
  const int32_t shared_blocks = static_cast<int32_t>(system.size()) / 8 * 8;
  for (size_t i = 0; i < hs.size(); ++i) {
    Outcome o = collect(*hs[i]);
    ASSERT_TRUE(o.done) << o.error;
    EXPECT_EQ(o.choices[0].tokens, reference(*engine, prompts[i], 20).tokens);
    if (i > 0) {
      EXPECT_GE(o.usage.cached_tokens, shared_blocks) << "request " << i;
    }
    cached += o.usage.cached_tokens;
  }
  EXPECT_EQ(s.metrics().cached_prompt_tokens_total, cached);
}

TEST(Scheduler, BlocksReturnAfterCompletionAndCancel) {
  REQUIRE_STORIES();
  Scheduler s(*engine, small_options());
  GenerateRequest r = greedy(encode(*engine, "The sun"), -1);
  r.stop_at_eog = false;  // runs until the context is full unless cancelled
  auto h = s.submit(r);
  for (int i = 0; i < 200 && s.metrics().kv_blocks_used == 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_GT(s.metrics().kv_blocks_used, 0);
  h->cancel();
  Outcome o = collect(*h);
  ASSERT_TRUE(o.done);
  EXPECT_EQ(o.choices[0].finish, "cancelled");
  EXPECT_EQ(o.kinds.back(), Event::Kind::Done);
  EXPECT_EQ(s.metrics().kv_blocks_used, 0);
  EXPECT_EQ(s.metrics().requests_cancelled, 1);

  // Run to the full context: "length", and the blocks come back.
  Outcome full = collect(*s.submit(r));
  ASSERT_TRUE(full.done);
  EXPECT_EQ(full.choices[0].finish, "length");
  EXPECT_EQ(full.usage.completion_tokens + full.usage.prompt_tokens, 256);
  EXPECT_EQ(s.metrics().kv_blocks_used, 0);
}

TEST(Scheduler, QueueFullBeyondQueueSize) {
  REQUIRE_STORIES();
  SchedulerOptions opt = small_options();
  opt.parallel = 1;
  opt.queue_size = 2;
  Scheduler s(*engine, opt);
  GenerateRequest r = greedy(encode(*engine, "The sun"), -1);
  r.stop_at_eog = false;
  auto running = s.submit(r);
  for (int i = 0; i < 2000 && s.metrics().running == 0; ++i) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(s.metrics().running, 1);
  auto w1 = s.submit(r);
  auto w2 = s.submit(r);
  EXPECT_THROW(s.submit(r), QueueFull);
  EXPECT_EQ(s.metrics().requests_rejected, 1);
  s.shutdown(false);
  for (auto* h : {running.get(), w1.get(), w2.get()}) {
    Outcome o = collect(*h);
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.choices[0].finish, "cancelled");
  }
  EXPECT_THROW(s.submit(r), ShuttingDown);
}

TEST(Scheduler, RejectsBadRequestsBeforeAnyWork) {
  REQUIRE_STORIES();
  Scheduler s(*engine, small_options());
  EXPECT_THROW(s.submit(greedy({}, 5)), InvalidArgument);
  EXPECT_THROW(s.submit(greedy(std::vector<int32_t>(256, 5), 5)), InvalidArgument);
  EXPECT_THROW(s.submit(greedy({1, 512}, 5)), InvalidArgument);
  EXPECT_THROW(s.submit(greedy({1, 2}, 0)), InvalidArgument);
  GenerateRequest bad = greedy({1, 2}, 5);
  bad.sampling.top_p = 2;
  EXPECT_THROW(s.submit(bad), InvalidArgument);
  bad = greedy({1, 2}, 5);
  bad.n = 5;  // above parallel
  EXPECT_THROW(s.submit(bad), InvalidArgument);
  EXPECT_THROW(s.submit_embedding({}), InvalidArgument);
  SchedulerOptions o = small_options();
  o.n_ctx = 100000;
  EXPECT_THROW(Scheduler(*engine, o), InvalidArgument);
  o = small_options();
  o.kv_blocks = 3;  // 256 positions need 32 blocks of 8
  EXPECT_THROW(Scheduler(*engine, o), InvalidArgument);
}

TEST(Scheduler, DeadlineCancels) {
  REQUIRE_STORIES();
  SchedulerOptions opt = small_options();
  opt.n_ctx = 2048;
  Scheduler s(*engine, opt);
  GenerateRequest r = greedy(encode(*engine, "The sun"), -1);
  r.stop_at_eog = false;
  r.deadline = std::chrono::steady_clock::now() - 1ms;
  Outcome expired = collect(*s.submit(r));
  ASSERT_TRUE(expired.done);
  EXPECT_EQ(expired.choices[0].finish, "cancelled");
  EXPECT_EQ(expired.usage.completion_tokens, 0);

  r.deadline = std::chrono::steady_clock::now() + 30ms;
  auto t0 = std::chrono::steady_clock::now();
  Outcome late = collect(*s.submit(r));
  ASSERT_TRUE(late.done);
  if (late.choices[0].finish != "cancelled") {
    // Only possible if the whole context ran in 30 ms.
    EXPECT_EQ(late.choices[0].finish, "length");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 30ms);
  } else {
    EXPECT_LT(late.usage.completion_tokens, 2048 - 3);
  }
  EXPECT_EQ(s.metrics().kv_blocks_used, 0);
}

TEST(Scheduler, StopStringsCutTheText) {
  REQUIRE_STORIES();
  Scheduler s(*engine, small_options());
  auto prompt = encode(*engine, "Once upon a time");
  Reference full = reference(*engine, prompt, 80);
  ASSERT_GT(full.text.size(), 60u);
  // A stop string from the middle of the greedy text: the output ends right before it.
  const std::string stop = full.text.substr(40, 6);
  const size_t at = full.text.find(stop);
  GenerateRequest r = greedy(prompt, 80);
  r.stop = {"never appears in a story 12345", stop};
  Outcome o = collect(*s.submit(r));
  ASSERT_TRUE(o.done);
  EXPECT_EQ(o.choices[0].text, full.text.substr(0, at));
  EXPECT_EQ(o.choices[0].finish, "stop");
  // generate() cuts the same way.
  EXPECT_EQ(o.choices[0].text, reference(*engine, prompt, 80, std::nullopt, {stop}).text);
}

TEST(Scheduler, MaxTokensEndsWithLength) {
  REQUIRE_STORIES();
  Scheduler s(*engine, small_options());
  Outcome o = collect(*s.submit(greedy(encode(*engine, "Once upon a time"), 5)));
  ASSERT_TRUE(o.done);
  EXPECT_EQ(o.choices[0].tokens.size(), 5u);
  EXPECT_EQ(o.choices[0].finish, "length");
  EXPECT_EQ(o.usage.completion_tokens, 5);
}

TEST(Scheduler, ChoicesSeedFromTheRequestSeed) {
  REQUIRE_STORIES();
  Scheduler s(*engine, small_options());
  auto prompt = encode(*engine, "Lily and Tom went to the park. They saw a big tree and");
  GenerateRequest r;
  r.prompt = prompt;
  r.n = 3;
  r.max_tokens = 40;
  r.sampling.temperature = 1.0f;
  r.sampling.top_k = 0;
  r.sampling.top_p = 1.0f;
  r.sampling.min_p = 0.0f;
  r.sampling.seed = 7;
  Outcome o = collect(*s.submit(r));
  ASSERT_TRUE(o.done) << o.error;
  ASSERT_EQ(o.choices.size(), 3u);
  for (int32_t i = 0; i < 3; ++i) {
    SamplingParams p = r.sampling;
    p.seed = 7 + static_cast<uint64_t>(i);
    Reference ref = reference(*engine, prompt, 40, p);
    EXPECT_EQ(o.choices[i].tokens, ref.tokens) << "choice " << i;
  }
  EXPECT_NE(o.choices[0].tokens, o.choices[1].tokens);
  EXPECT_EQ(o.usage.prompt_tokens, static_cast<int32_t>(prompt.size()));
  int32_t total = 0;
  for (auto& [i, c] : o.choices) total += static_cast<int32_t>(c.tokens.size()) + (c.finish == "stop" ? 1 : 0);
  EXPECT_EQ(o.usage.completion_tokens, total);
  EXPECT_EQ(s.metrics().kv_blocks_used, 0);
}

// Allows only a few tokens; complete after three, finished after five.
class ToyConstraint final : public TokenConstraint {
 public:
  explicit ToyConstraint(std::vector<int32_t> allowed, int* applied)
      : allowed_(std::move(allowed)), applied_(applied) {}
  void apply(std::span<float> logits) override {
    ++*applied_;
    std::vector<float> keep(allowed_.size());
    for (size_t i = 0; i < allowed_.size(); ++i) keep[i] = logits[static_cast<size_t>(allowed_[i])];
    std::fill(logits.begin(), logits.end(), -INFINITY);
    for (size_t i = 0; i < allowed_.size(); ++i) logits[static_cast<size_t>(allowed_[i])] = keep[i];
  }
  void accept(int32_t token) override {
    EXPECT_NE(std::find(allowed_.begin(), allowed_.end(), token), allowed_.end());
    ++n_;
  }
  bool complete() const override { return n_ >= 3; }
  bool finished() const override { return n_ >= 5; }

 private:
  std::vector<int32_t> allowed_;
  int* applied_;
  int n_ = 0;
};

TEST(Scheduler, ConstraintIsHonoured) {
  REQUIRE_STORIES();
  Scheduler s(*engine, small_options());
  const std::vector<int32_t> allowed = {300, 301, 302, 2 /* EOS */};
  int applied = 0;
  GenerateRequest r = greedy(encode(*engine, "Once upon a time"), 50);
  r.make_constraint = [&] { return std::make_unique<ToyConstraint>(allowed, &applied); };
  Outcome o = collect(*s.submit(r));
  ASSERT_TRUE(o.done) << o.error;
  EXPECT_EQ(o.choices[0].finish, "stop");
  EXPECT_GE(o.usage.completion_tokens, 3);  // EOS only once complete
  EXPECT_LE(o.usage.completion_tokens, 5);
  for (int32_t t : o.choices[0].tokens) EXPECT_TRUE(t == 300 || t == 301 || t == 302) << t;
  EXPECT_EQ(applied, o.usage.completion_tokens);
}

TEST(Scheduler, LogprobsAreTheModelsLogSoftmax) {
  REQUIRE_STORIES();
  Scheduler s(*engine, small_options());
  auto prompt = encode(*engine, "The little dog");
  GenerateRequest r = greedy(prompt, 12);
  r.logprobs = 5;
  r.sampling.logit_bias = {{prompt.back(), -3.0f}};  // sampling transforms must not show
  Outcome o = collect(*s.submit(r));
  ASSERT_TRUE(o.done);
  const auto& toks = o.choices[0].sampled;
  ASSERT_FALSE(toks.empty());
  const Model& m = engine->model();
  const int32_t V = m.config.n_vocab;
  std::vector<int32_t> seq = prompt;
  for (auto& t : toks) seq.push_back(t.token);
  KvCache kc(m.config, static_cast<int32_t>(seq.size()));
  ThreadPool pool(1);
  std::vector<float> logits(seq.size() * static_cast<size_t>(V));
  m.forward(seq, 0, kc, pool, logits, true);
  for (size_t i = 0; i < toks.size(); ++i) {
    const float* row = logits.data() + (prompt.size() - 1 + i) * static_cast<size_t>(V);
    double mx = -INFINITY, sum = 0;
    for (int32_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
    for (int32_t v = 0; v < V; ++v) sum += std::exp(row[v] - mx);
    auto lp = [&](int32_t id) { return row[id] - mx - std::log(sum); };
    EXPECT_NEAR(toks[i].logprob, lp(toks[i].token), 1e-4);
    ASSERT_EQ(toks[i].top.size(), 5u);
    double mass = 0;
    for (size_t j = 0; j < 5; ++j) {
      EXPECT_NEAR(toks[i].top[j].logprob, lp(toks[i].top[j].token), 1e-4);
      if (j > 0) {
        EXPECT_GE(toks[i].top[j - 1].logprob, toks[i].top[j].logprob);
      }
      mass += std::exp(toks[i].top[j].logprob);
    }
    EXPECT_LE(mass, 1.0 + 1e-5);
    // Nothing outside the list is more likely than its last entry.
    for (int32_t v = 0; v < V; ++v) {
      bool listed = false;
      for (auto& t : toks[i].top) listed |= t.token == v;
      if (!listed) {
        EXPECT_LE(lp(v), toks[i].top.back().logprob + 1e-6);
      }
    }
  }
}

TEST(Scheduler, CostSharesAddUpToTheMeasuredTotal) {
  REQUIRE_STORIES();
  SchedulerOptions opt = small_options();
  opt.price_per_cpu_hour = 3.6;
  Scheduler s(*engine, opt);
  std::vector<std::shared_ptr<RequestHandle>> hs;
  for (const auto& p : kPrompts) hs.push_back(s.submit(greedy(encode(*engine, p), 30)));
  hs.push_back(s.submit_embedding(encode(*engine, "an embedding in the same steps")));
  double sum = 0;
  for (auto& h : hs) {
    Outcome o = collect(*h);
    ASSERT_TRUE(o.done);
    EXPECT_GT(o.cost.cpu_seconds, 0);
    EXPECT_DOUBLE_EQ(o.cost.price, o.cost.cpu_seconds / 3600 * 3.6);
    EXPECT_GE(o.cost.total_seconds, o.cost.queue_seconds);
    if (o.embedding.empty()) {
      EXPECT_GE(o.cost.ttft_seconds, o.cost.queue_seconds);
      EXPECT_LE(o.cost.ttft_seconds, o.cost.total_seconds);
    }
    sum += o.cost.cpu_seconds;
  }
  s.shutdown(true);
  const SchedulerMetrics m = s.metrics();
  EXPECT_NEAR(sum, m.cpu_seconds_total, 1e-9 * std::max(1.0, m.cpu_seconds_total));
  EXPECT_GT(m.steps_total, 0);
}

TEST(Scheduler, EmbeddingsAreNormalisedAndBatchInvariant) {
  REQUIRE_STORIES();
  Scheduler s(*engine, small_options());
  auto tokens = encode(*engine, "Lily saw a red ball under the big green tree in the park");
  Outcome alone = collect(*s.submit_embedding(tokens));
  ASSERT_TRUE(alone.done) << alone.error;
  ASSERT_EQ(alone.embedding.size(), static_cast<size_t>(engine->model().config.n_embd));
  double norm = 0;
  for (float v : alone.embedding) norm += static_cast<double>(v) * v;
  EXPECT_NEAR(norm, 1.0, 1e-5);
  EXPECT_EQ(alone.usage.prompt_tokens, static_cast<int32_t>(tokens.size()));
  // The same input beside generating sequences gives the same vector.
  auto g = s.submit(greedy(encode(*engine, "The cat"), 40));
  auto e = s.submit_embedding(tokens);
  Outcome batched = collect(*e);
  EXPECT_EQ(batched.embedding, alone.embedding);
  EXPECT_TRUE(collect(*g).done);
  Outcome other = collect(*s.submit_embedding(encode(*engine, "A dog barked")));
  EXPECT_NE(other.embedding, alone.embedding);
}

// A copy of stories260K that names a pooling type (GGUF llama.pooling_type): the embedding is then
// the normalised final hidden state of that one token, so the output matrix applied to it points
// the same way as Model::forward's logits at that position.
TEST(Scheduler, EmbeddingsFollowTheModelsPooling) {
  const std::string path = test::shared_path("models/stories260K/stories260K.gguf");
  if (path.empty()) GTEST_SKIP() << "stories260K not found (set SQUEEZE_SHARED)";
  test::TempDir dir;
  const GgufFile original = GgufFile::open(path);
  for (uint64_t type : {2u, 3u}) {
    GgufWriter w;
    for (const auto& [key, value] : original.metadata()) w.set(key, value);
    GgufValue pooling;
    pooling.type = GgufType::UINT32;
    pooling.u = type;
    w.set("llama.pooling_type", pooling);
    for (const GgufTensorInfo& t : original.tensors()) {
      w.add_tensor(t.name, t.type(), t.ne, std::vector<uint8_t>(t.data, t.data + t.n_bytes));
    }
    const std::string copy = dir.file("pooled" + std::to_string(type) + ".gguf");
    w.write(copy);
    auto engine = Engine::load({copy, ""});
    ASSERT_EQ(engine->model().config.pooling, type == 2 ? Pooling::Cls : Pooling::Last);
    Scheduler s(*engine, small_options());
    auto tokens = encode(*engine, "Lily saw a red ball under the big green tree");
    Outcome o = collect(*s.submit_embedding(tokens));
    ASSERT_TRUE(o.done) << o.error;

    const Model& m = engine->model();
    const int32_t V = m.config.n_vocab;
    KvCache kc(m.config, static_cast<int32_t>(tokens.size()));
    ThreadPool pool(1);
    std::vector<float> logits(tokens.size() * static_cast<size_t>(V));
    m.forward(tokens, 0, kc, pool, logits, true);
    const size_t pos = type == 2 ? 0 : tokens.size() - 1;
    const float* ref = logits.data() + pos * static_cast<size_t>(V);
    std::vector<float> got(static_cast<size_t>(V));
    ops::matmul(m.output, o.embedding.data(), 1, got.data(), pool);
    double dot = 0, na = 0, nb = 0;
    for (int32_t i = 0; i < V; ++i) {
      dot += static_cast<double>(got[static_cast<size_t>(i)]) * ref[i];
      na += static_cast<double>(got[static_cast<size_t>(i)]) * got[static_cast<size_t>(i)];
      nb += static_cast<double>(ref[i]) * ref[i];
    }
    EXPECT_GT(dot / std::sqrt(na * nb), 0.999999) << "pooling_type " << type;
  }
}

TEST(Scheduler, ARequestsErrorDoesNotStopTheLoop) {
  REQUIRE_STORIES();
  Scheduler s(*engine, small_options());
  GenerateRequest r = greedy(encode(*engine, "Once"), 10);
  r.sampling.logit_bias.clear();
  // A constraint that bans everything: the sampler has nothing to draw.
  class BanAll final : public TokenConstraint {
   public:
    void apply(std::span<float> l) override { std::fill(l.begin(), l.end(), -INFINITY); }
    void accept(int32_t) override {}
    bool complete() const override { return false; }
    bool finished() const override { return false; }
  };
  r.make_constraint = [] { return std::make_unique<BanAll>(); };
  auto bad = s.submit(r);
  auto good = s.submit(greedy(encode(*engine, "Once"), 10));
  Outcome b = collect(*bad);
  EXPECT_FALSE(b.error.empty());
  Outcome o = collect(*good);
  EXPECT_TRUE(o.done);
  EXPECT_EQ(o.choices[0].tokens.size(), 10u);
  // A constraint factory that fails for the second choice: an Error, and the prompt's blocks back.
  GenerateRequest two = greedy(encode(*engine, "Once upon a time, in a big forest, there lived"), 5);
  two.n = 2;
  auto calls = std::make_shared<int>(0);
  two.make_constraint = [calls]() -> std::unique_ptr<TokenConstraint> {
    if (++*calls == 2) throw InvalidArgument("the schema cannot be compiled");
    return nullptr;
  };
  Outcome failed = collect(*s.submit(two));
  EXPECT_EQ(failed.error, "the schema cannot be compiled");
  EXPECT_TRUE(collect(*s.submit(greedy(encode(*engine, "Once"), 3))).done);
  EXPECT_EQ(s.metrics().kv_blocks_used, 0);
}

// Length of the UTF-8 sequence a lead byte starts (0 for a continuation or invalid byte).
int utf8_length(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// Whether `a` ends inside a multi-byte character (its lead byte and fewer continuation bytes than
// the lead asks for) and `b` goes on with a continuation byte of it.
bool splits_character(const std::string& a, const std::string& b) {
  if (b.empty() || (static_cast<unsigned char>(b[0]) & 0xC0) != 0x80) return false;
  for (size_t back = 1; back <= 3 && back <= a.size(); ++back) {
    const int len = utf8_length(static_cast<unsigned char>(a[a.size() - back]));
    if (len == 0) continue;  // a continuation byte: look further back
    return static_cast<size_t>(len) > back;
  }
  return false;
}

TEST(Scheduler, DeltasHoldWholeCharacters) {
  const std::string path = test::shared_path("models/extras/llama-2-tiny-random.gguf");
  if (path.empty()) GTEST_SKIP() << "llama-2-tiny-random.gguf not found (set SQUEEZE_SHARED)";
  auto engine = Engine::load({path, ""});
  SchedulerOptions opt = small_options();
  Scheduler s(*engine, opt);
  // A random model over the Llama 2 vocabulary draws byte tokens (<0xE4> ...) that split
  // characters; a prompt in Chinese makes them likelier.
  auto prompt = engine->tokenizer()->encode("从前有一只小狗，它住在山里。", true, false);
  int split_tokens = 0;
  int raw_splits = 0;  // places where sending each token's bytes as they come would split one
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    GenerateRequest r;
    r.prompt = prompt;
    r.max_tokens = 48;
    r.sampling.temperature = 1.0f;
    r.sampling.top_k = 0;
    r.sampling.top_p = 1.0f;
    r.sampling.min_p = 0.0f;
    r.sampling.seed = seed;
    r.sampling.logit_bias.clear();
    // Favour the three byte tokens of U+4E2D (E4 B8 AD): the draws put them in every order, whole
    // characters spread over three tokens among them.
    for (int b : {0xE4, 0xB8, 0xAD}) {
      const int32_t id = engine->tokenizer()->byte_token(static_cast<uint8_t>(b));
      ASSERT_GE(id, 0);
      r.sampling.logit_bias.push_back({id, 12.0f});
    }
    auto h = s.submit(r);
    std::vector<std::string> texts;
    std::vector<int32_t> tokens;
    Event e;
    while (h->next(e, 20s)) {
      if (e.kind == Event::Kind::Delta) {
        texts.push_back(e.text);
        for (auto& t : e.tokens) {
          tokens.push_back(t.token);
          if (t.bytes.size() == 1 && static_cast<unsigned char>(t.bytes[0]) >= 0x80) ++split_tokens;
        }
      }
      if (e.kind == Event::Kind::Done || e.kind == Event::Kind::Error) break;
    }
    ASSERT_EQ(e.kind, Event::Kind::Done) << e.message;
    std::string all;
    for (size_t i = 0; i < texts.size(); ++i) {
      all += texts[i];
      if (i + 1 < texts.size()) {
        EXPECT_FALSE(splits_character(texts[i], texts[i + 1])) << "seed " << seed << " delta " << i;
      }
    }
    // The text is the exact decoding of the tokens (nothing lost or repaired).
    std::string expected;
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string piece = engine->tokenizer()->token_bytes(tokens[i]);
      if (i + 1 < tokens.size() &&
          splits_character(piece, engine->tokenizer()->token_bytes(tokens[i + 1]))) {
        ++raw_splits;
      }
      expected += piece;
    }
    EXPECT_EQ(all, expected);
  }
  EXPECT_GT(split_tokens, 10) << "the sampled text had too few byte tokens to test anything";
  EXPECT_GT(raw_splits, 0) << "no character was split across tokens: nothing was tested";
}

TEST(Scheduler, ManyClientsWithRandomDisconnects) {
  REQUIRE_STORIES();
  SchedulerOptions opt = small_options();
  opt.parallel = 8;
  opt.queue_size = 64;
  opt.block_size = 4;
  Scheduler s(*engine, opt);
  const std::vector<int32_t> shared = encode(*engine, "Once upon a time, there was a little dog named");
  std::vector<std::thread> clients;
  std::atomic<int> completed{0}, cancelled{0}, errors{0};
  for (int c = 0; c < 32; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937 rng(static_cast<uint32_t>(c));
      if (c % 8 == 7) {
        auto h = s.submit_embedding(shared);
        Outcome o = collect(*h);
        if (o.done) {
          ++completed;
        } else {
          ++errors;
        }
        return;
      }
      GenerateRequest r = greedy(shared, 20 + static_cast<int32_t>(rng() % 40));
      r.prompt.push_back(static_cast<int32_t>(100 + c));  // a private tail after a shared prefix
      r.n = 1 + c % 3;
      r.sampling.temperature = 0.8f;
      r.sampling.seed = static_cast<uint64_t>(c);
      auto h = s.submit(r);
      const bool disconnect = rng() % 3 == 0;
      if (disconnect) {
        std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20000));
        h->cancel();
      }
      Outcome o = collect(*h);
      if (!o.done) {
        ++errors;
        return;
      }
      bool was_cancelled = false;
      for (auto& [i, ch] : o.choices) was_cancelled |= ch.finish == "cancelled";
      EXPECT_TRUE(disconnect || !was_cancelled) << "client " << c;
      if (was_cancelled) {
        ++cancelled;
      } else {
        ++completed;
      }
      if (!was_cancelled) {
        EXPECT_EQ(o.choices.size(), static_cast<size_t>(r.n)) << "client " << c;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(completed.load() + cancelled.load(), 32);
  s.shutdown(true);
  const SchedulerMetrics m = s.metrics();
  EXPECT_EQ(m.kv_blocks_used, 0);
  EXPECT_EQ(m.running, 0);
  EXPECT_EQ(m.waiting, 0);
  EXPECT_EQ(m.requests_total, 32);
  EXPECT_EQ(m.requests_cancelled, cancelled.load());
}

TEST(Scheduler, ShutdownLetsRunningRequestsFinish) {
  REQUIRE_STORIES();
  Scheduler s(*engine, small_options());
  auto prompt = encode(*engine, "One day");
  auto h = s.submit(greedy(prompt, 30));
  s.shutdown(true);
  Outcome o = collect(*h);
  ASSERT_TRUE(o.done);
  EXPECT_EQ(o.choices[0].tokens, reference(*engine, prompt, 30).tokens);
  EXPECT_THROW(s.submit(greedy(prompt, 3)), QueueFull);
}

}  // namespace
}  // namespace sq::serve
