#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/error.h"
#include "base/rng.h"

namespace sq {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Plain sampling: no truncation, temperature 1.
SamplingParams plain(uint64_t seed = 1) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = seed;
  return p;
}

SamplingParams greedy_params() {
  SamplingParams p = plain();
  p.temperature = 0.0f;
  return p;
}

std::vector<float> random_logits(size_t n, uint64_t seed, float scale = 4.0f) {
  Rng rng(seed);
  std::vector<float> l(n);
  for (float& x : l) x = static_cast<float>((rng.next_double() * 2.0 - 1.0) * scale);
  return l;
}

std::vector<double> softmax(const std::vector<float>& logits, double temperature = 1.0) {
  double max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    p[i] = std::exp((logits[i] - max) / temperature);
    sum += p[i];
  }
  for (double& x : p) x /= sum;
  return p;
}

std::vector<float> log_probs(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(p > 0 ? static_cast<float>(std::log(p)) : -kInf);
  return l;
}

std::vector<int> histogram(Sampler& s, const std::vector<float>& logits, int draws) {
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts[s.sample(logits)];
  return counts;
}

// Pearson's statistic of observed counts against expected probabilities (cells with p == 0 must be
// empty).
double chi_square(const std::vector<int>& counts, const std::vector<double>& probs, int draws) {
  double chi = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (probs[i] == 0) {
      EXPECT_EQ(counts[i], 0) << "token " << i << " has probability 0";
      continue;
    }
    double expected = probs[i] * draws;
    chi += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return chi;
}

TEST(Rng, SplitmixKnownValuesAndDoubleRange) {
  // Reference outputs of splitmix64 from state 0.
  uint64_t state = 0;
  EXPECT_EQ(splitmix64_next(state), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(splitmix64_next(state), 0x6E789E6AA1B965F4ull);
  EXPECT_EQ(splitmix64_next(state), 0x06C45D188009454Full);

  Rng a(42), b(42), c(43);
  bool differs = false;
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    double x = a.next_double();
    ASSERT_GE(x, 0.0);
    ASSERT_LT(x, 1.0);
    EXPECT_EQ(x, b.next_double());
    differs |= x != c.next_double();
    sum += x;
  }
  EXPECT_TRUE(differs);
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
  a.reseed(42);
  Rng fresh(42);
  EXPECT_EQ(a.next_u64(), fresh.next_u64());
}

TEST(Sampler, GreedyPicksArgmax) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::vector<float> logits = random_logits(1000, seed);
    Sampler s(greedy_params(), 1000);
    int32_t expect = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    EXPECT_EQ(s.sample(logits), expect);
  }
}

TEST(Sampler, GreedyTiesGoToLowestIdAndNegativeTemperatureIsGreedy) {
  SamplingParams p = greedy_params();
  p.temperature = -1.0f;
  Sampler s(p, 6);
  std::vector<float> logits = {0, 3, 1, 3, 3, -1};
  EXPECT_EQ(s.sample(logits), 1);
  // Probability reported under the softmax: three tied tokens.
  double expected = 1.0 / (3 + std::exp(-3.0) + std::exp(-2.0) + std::exp(-4.0));
  EXPECT_NEAR(s.last_probability(), expected, 1e-6);

  std::vector<float> equal(6, 0.5f);
  EXPECT_EQ(s.sample(equal), 0);
}

TEST(Sampler, SameSeedSameSequenceDifferentSeedsDiffer) {
  std::vector<float> logits = random_logits(500, 7, 2.0f);
  SamplingParams p;  // defaults: top-k 40, top-p 0.95, min-p 0.05, temperature 0.8
  p.seed = 1234;
  Sampler a(p, 500), b(p, 500);
  p.seed = 1235;
  Sampler c(p, 500);
  std::vector<int32_t> seq_a, seq_c;
  for (int i = 0; i < 200; ++i) {
    int32_t ta = a.sample(logits);
    EXPECT_EQ(ta, b.sample(logits));
    seq_a.push_back(ta);
    seq_c.push_back(c.sample(logits));
  }
  EXPECT_NE(seq_a, seq_c);
  EXPECT_GT(std::set<int32_t>(seq_a.begin(), seq_a.end()).size(), 3u);

  a.reset();
  for (int i = 0; i < 200; ++i) EXPECT_EQ(a.sample(logits), seq_a[i]) << "draw " << i;
}

TEST(Sampler, SeedZeroIsAnOrdinarySeed) {
  std::vector<float> logits(16, 0.0f);
  Sampler a(plain(0), 16), b(plain(0), 16);
  std::set<int32_t> seen;
  for (int i = 0; i < 200; ++i) {
    int32_t t = a.sample(logits);
    EXPECT_EQ(t, b.sample(logits));
    seen.insert(t);
  }
  EXPECT_EQ(seen.size(), 16u);
}

TEST(Sampler, TemperatureOneMatchesSoftmax) {
  std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f, 2.5f, -0.5f};
  Sampler s(plain(99), 8);
  const int draws = 200000;
  std::vector<int> counts = histogram(s, logits, draws);
  // 7 degrees of freedom: P(chi2 > 30) ~ 1e-4.
  EXPECT_LT(chi_square(counts, softmax(logits), draws), 30.0);
}

TEST(Sampler, TemperatureScalesLogits) {
  std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f};
  const int draws = 200000;
  for (float t : {0.5f, 2.0f}) {
    SamplingParams p = plain(5);
    p.temperature = t;
    Sampler s(p, 6);
    std::vector<int> counts = histogram(s, logits, draws);
    EXPECT_LT(chi_square(counts, softmax(logits, t), draws), 25.0) << "temperature " << t;
    // And the wrong temperature must be rejected by the same bound.
    EXPECT_GT(chi_square(counts, softmax(logits, 1.0), draws), 1000.0) << "temperature " << t;
  }
}

TEST(Sampler, TopKOneEqualsGreedy) {
  SamplingParams p = plain(3);
  p.top_k = 1;
  p.temperature = 1.5f;
  Sampler s(p, 2000);
  Sampler g(greedy_params(), 2000);
  for (uint64_t seed = 0; seed < 50; ++seed) {
    std::vector<float> logits = random_logits(2000, seed, 1.0f);
    EXPECT_EQ(s.sample(logits), g.sample(logits));
    EXPECT_FLOAT_EQ(s.last_probability(), 1.0f);
  }
}

TEST(Sampler, TopKKeepsTheKBestInProportion) {
  std::vector<float> logits = {0.1f, 2.0f, 0.2f, 1.0f, 1.5f, 0.3f, -3.0f, 0.0f};
  SamplingParams p = plain(11);
  p.top_k = 3;  // tokens 1, 4, 3
  Sampler s(p, 8);
  const int draws = 100000;
  std::vector<int> counts = histogram(s, logits, draws);
  std::vector<float> kept(8, -kInf);
  for (int id : {1, 4, 3}) kept[id] = logits[id];
  EXPECT_LT(chi_square(counts, softmax(kept), draws), 20.0);

  p.top_k = 100;  // more than the vocabulary: no truncation
  Sampler all(p, 8);
  counts = histogram(all, logits, draws);
  EXPECT_LT(chi_square(counts, softmax(logits), draws), 30.0);
}

TEST(Sampler, TopPKeepsSmallestSetReachingP) {
  // Probabilities by id, deliberately not in order.
  std::vector<double> probs = {0.15, 0.5, 0.05, 0.3};
  std::vector<float> logits = log_probs(probs);
  auto drawn = [&](float top_p) {
    SamplingParams p = plain(21);
    p.top_p = top_p;
    Sampler s(p, 4);
    std::set<int32_t> seen;
    for (int i = 0; i < 4000; ++i) seen.insert(s.sample(logits));
    return seen;
  };
  EXPECT_EQ(drawn(0.0f), (std::set<int32_t>{1}));
  EXPECT_EQ(drawn(0.45f), (std::set<int32_t>{1}));
  EXPECT_EQ(drawn(0.55f), (std::set<int32_t>{1, 3}));
  EXPECT_EQ(drawn(0.75f), (std::set<int32_t>{1, 3}));
  EXPECT_EQ(drawn(0.85f), (std::set<int32_t>{0, 1, 3}));
  EXPECT_EQ(drawn(0.97f), (std::set<int32_t>{0, 1, 2, 3}));

  // Within the kept set, renormalised probabilities.
  SamplingParams p = plain(22);
  p.top_p = 0.75f;
  Sampler s(p, 4);
  const int draws = 100000;
  std::vector<int> counts = histogram(s, logits, draws);
  EXPECT_LT(chi_square(counts, {0, 0.5 / 0.8, 0, 0.3 / 0.8}, draws), 15.0);
}

TEST(Sampler, TopPOnLargeFlatVocabularyKeepsExactCount) {
  // Uniform logits: the smallest set reaching 0.5 is half the vocabulary, the lower ids by the
  // tie rule. Exercises the growing-prefix selection well past its first slice.
  const int32_t n = 50000;
  std::vector<float> logits(n, 0.25f);
  SamplingParams p = plain(8);
  p.top_p = 0.5f;
  Sampler s(p, n);
  for (int i = 0; i < 200; ++i) {
    int32_t t = s.sample(logits);
    EXPECT_LT(t, n / 2);
    EXPECT_NEAR(s.last_probability(), 1.0 / (n / 2), 1e-9);
  }
}

TEST(Sampler, TopPOnLargeVocabularyMatchesFullSort) {
  // Above a thousand candidates without top-k, top-p selects by buckets of logit; hold it against
  // the definition: sort everything, keep the shortest prefix reaching p.
  const int32_t n = 20000;
  for (uint64_t seed : {1u, 2u, 3u}) {
    for (float top_p : {0.3f, 0.9f, 0.999f}) {
      std::vector<float> logits = random_logits(n, seed, seed == 3 ? 20.0f : 5.0f);
      std::vector<double> probs = softmax(logits);
      std::vector<int32_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
      std::vector<bool> keep(n, false);
      double cumulative = 0, kept_mass = 0;
      for (int32_t id : order) {
        keep[id] = true;
        kept_mass += probs[id];
        cumulative += probs[id];
        if (cumulative >= top_p) break;
      }
      SamplingParams p = plain(seed);
      p.top_p = top_p;
      Sampler s(p, n);
      for (int i = 0; i < 50; ++i) {
        int32_t t = s.sample(logits);
        ASSERT_TRUE(keep[t]) << "token " << t << " outside the top-p set, p " << top_p;
        EXPECT_NEAR(s.last_probability(), probs[t] / kept_mass, 1e-4 * probs[t] / kept_mass);
      }
    }
  }
}

TEST(Sampler, MinPThresholdIsRelativeToTheMaximum) {
  std::vector<double> probs = {0.5, 0.2, 0.04, 0.26};
  std::vector<float> logits = log_probs(probs);
  SamplingParams p = plain(31);
  p.min_p = 0.1f;  // threshold 0.05: drops token 2 (0.04) only
  Sampler s(p, 4);
  const int draws = 100000;
  std::vector<int> counts = histogram(s, logits, draws);
  EXPECT_LT(chi_square(counts, {0.5 / 0.96, 0.2 / 0.96, 0, 0.26 / 0.96}, draws), 15.0);

  p.min_p = 0.5f;  // threshold 0.25: keeps 0 and 3
  Sampler t(p, 4);
  std::set<int32_t> seen;
  for (int i = 0; i < 4000; ++i) seen.insert(t.sample(logits));
  EXPECT_EQ(seen, (std::set<int32_t>{0, 3}));

  p.min_p = 1.0f;  // only the maximum
  Sampler u(p, 4);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(u.sample(logits), 0);
}

TEST(Sampler, RepeatPenaltyDividesPositiveAndMultipliesNegative) {
  SamplingParams p = greedy_params();
  p.repeat_penalty = 2.0f;
  Sampler s(p, 3);
  // Token 0 at logit 2 falls to 1, under token 2 at 1.5.
  std::vector<float> logits = {2.0f, -5.0f, 1.5f};
  EXPECT_EQ(s.sample(logits), 0);
  s.accept(0);
  EXPECT_EQ(s.sample(logits), 2);
  double z = std::exp(1.0) + std::exp(-5.0) + std::exp(1.5);
  EXPECT_NEAR(s.last_probability(), std::exp(1.5) / z, 1e-6);

  // Negative logits are multiplied: -1 becomes -2, now under -1.5. (Dividing would give -0.5.)
  Sampler n(p, 2);
  std::vector<float> negative = {-1.0f, -1.5f};
  n.accept(0);
  EXPECT_EQ(n.sample(negative), 1);
  EXPECT_NEAR(n.last_probability(), 1.0 / (1.0 + std::exp(-0.5)), 1e-6);

  s.reset();
  EXPECT_EQ(s.sample(logits), 0);
}

TEST(Sampler, RepeatPenaltyWindow) {
  SamplingParams p = greedy_params();
  p.repeat_penalty = 4.0f;
  p.repeat_last_n = 2;
  Sampler s(p, 4);
  std::vector<float> logits = {3.0f, 2.0f, 1.0f, 0.5f};
  s.accept(0);
  EXPECT_EQ(s.sample(logits), 1);  // 0 -> 0.75
  s.accept(1);
  EXPECT_EQ(s.sample(logits), 2);  // 0 -> 0.75, 1 -> 0.5
  s.accept(2);                     // 0 leaves the window
  EXPECT_EQ(s.sample(logits), 0);
  s.accept(3);
  s.accept(3);  // window is {3, 3}: 1 and 2 are free again
  EXPECT_EQ(s.sample(logits), 0);
  EXPECT_NEAR(s.last_probability(),
              std::exp(3.0) / (std::exp(3.0) + std::exp(2.0) + std::exp(1.0) + std::exp(0.125)),
              1e-6);

  // -1: the whole history counts.
  p.repeat_last_n = -1;
  Sampler w(p, 4);
  for (int32_t t : {0, 1, 2, 3, 3, 3, 3, 3, 3}) w.accept(t);
  // 3.0/4, 2.0/4, 1.0/4, 0.5/4: order unchanged, but the probability shows all four penalised.
  EXPECT_EQ(w.sample(logits), 0);
  EXPECT_NEAR(w.last_probability(),
              std::exp(0.75) / (std::exp(0.75) + std::exp(0.5) + std::exp(0.25) + std::exp(0.125)),
              1e-6);

  // 0: penalties off.
  p.repeat_last_n = 0;
  Sampler off(p, 4);
  off.accept(0);
  EXPECT_EQ(off.sample(logits), 0);
}

TEST(Sampler, PresenceAndFrequencyPenalties) {
  SamplingParams p = greedy_params();
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  Sampler s(p, 4);
  std::vector<float> logits(4, 0.0f);
  for (int32_t t : {1, 1, 2}) s.accept(t);
  // token 1: -0.5 - 2*0.25 = -1; token 2: -0.5 - 0.25 = -0.75.
  EXPECT_EQ(s.sample(logits), 0);
  double z = 2.0 + std::exp(-1.0) + std::exp(-0.75);
  EXPECT_NEAR(s.last_probability(), 1.0 / z, 1e-6);

  // Frequency alone separates by count: with token 0 said 3 times and token 1 once, 1 wins.
  SamplingParams f = greedy_params();
  f.frequency_penalty = 1.0f;
  Sampler sf(f, 2);
  std::vector<float> two = {2.5f, 0.0f};
  for (int32_t t : {0, 0, 0, 1}) sf.accept(t);  // 2.5 - 3 = -0.5 vs 0 - 1 = -1
  EXPECT_EQ(sf.sample(two), 0);
  sf.accept(0);  // 2.5 - 4 = -1.5
  EXPECT_EQ(sf.sample(two), 1);

  // A negative presence penalty encourages repetition.
  SamplingParams n = greedy_params();
  n.presence_penalty = -1.0f;
  Sampler sn(n, 3);
  sn.accept(2);
  EXPECT_EQ(sn.sample(std::vector<float>{0.5f, 0.0f, 0.0f}), 2);
}

TEST(Sampler, LogitBiasShiftsAndBans) {
  std::vector<float> logits = {1.0f, 3.0f, 2.0f, 0.0f};
  SamplingParams p = greedy_params();
  p.logit_bias = {{1, -kInf}};
  Sampler g(p, 4);
  EXPECT_EQ(g.sample(logits), 2);

  p.logit_bias = {{3, 2.5f}, {3, 1.0f}};  // entries add up: 0 + 3.5
  Sampler h(p, 4);
  EXPECT_EQ(h.sample(logits), 3);

  // Sampling never draws a banned token, even the most likely one; the rest keep their
  // proportions.
  SamplingParams q = plain(41);
  q.logit_bias = {{1, -kInf}, {3, 1.0f}};
  Sampler s(q, 4);
  const int draws = 50000;
  std::vector<int> counts = histogram(s, logits, draws);
  EXPECT_EQ(counts[1], 0);
  EXPECT_LT(chi_square(counts, softmax({1.0f, -kInf, 2.0f, 1.0f}), draws), 20.0);

  // A ban beats even a +inf logit.
  Sampler b(q, 4);
  EXPECT_EQ(b.sample(std::vector<float>{0.0f, kInf, 0.0f, 0.0f}), 3);
}

TEST(Sampler, BanningEverythingThrows) {
  SamplingParams p = plain();
  p.logit_bias = {{0, -kInf}, {1, -kInf}};
  Sampler s(p, 2);
  EXPECT_THROW(s.sample(std::vector<float>{1.0f, 2.0f}), InvalidArgument);
  SamplingParams g = greedy_params();
  g.logit_bias = p.logit_bias;
  Sampler sg(g, 2);
  EXPECT_THROW(sg.sample(std::vector<float>{1.0f, 2.0f}), InvalidArgument);
}

TEST(Sampler, NaNAndInfiniteLogits) {
  // NaN counts as -inf.
  Sampler g(greedy_params(), 3);
  EXPECT_EQ(g.sample(std::vector<float>{kNaN, 1.0f, kNaN}), 1);
  Sampler s(plain(), 3);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(s.sample(std::vector<float>{kNaN, -kInf, -3.0f}), 2);
  EXPECT_THROW(s.sample(std::vector<float>{kNaN, -kInf, kNaN}), InvalidArgument);

  // +inf tokens share all the mass.
  SamplingParams p;  // default chain
  p.seed = 3;
  Sampler d(p, 4);
  std::set<int32_t> seen;
  for (int i = 0; i < 400; ++i) {
    seen.insert(d.sample(std::vector<float>{kInf, 5.0f, kInf, 1.0f}));
    EXPECT_FLOAT_EQ(d.last_probability(), 0.5f);
  }
  EXPECT_EQ(seen, (std::set<int32_t>{0, 2}));
}

TEST(Sampler, AllEqualLogitsAreUniformUnderTheDefaultChain) {
  // Top-k keeps ids 0..39 (ties to the lower id), top-p 0.95 of forty equal shares keeps 38.
  SamplingParams p;
  p.seed = 17;
  Sampler s(p, 64);
  std::vector<float> logits(64, -2.0f);
  const int draws = 80000;
  std::vector<int> counts = histogram(s, logits, draws);
  std::vector<double> probs(64, 0.0);
  for (int i = 0; i < 38; ++i) probs[i] = 1.0 / 38;
  EXPECT_LT(chi_square(counts, probs, draws), 80.0);  // 37 dof: P(chi2 > 80) ~ 1e-4
}

TEST(Sampler, DefaultChainOnLargeVocabularyStaysInTopK) {
  const int32_t n = 152000;
  const std::vector<float> logits = random_logits(n, 77, 8.0f);
  std::vector<float> penalised = logits;  // what the repeat penalty makes of them
  SamplingParams p;
  p.repeat_penalty = 1.1f;
  p.repeat_last_n = -1;
  p.seed = 5;
  Sampler s(p, n);
  std::set<int32_t> seen;
  for (int i = 0; i < 100; ++i) {
    std::vector<float> sorted = penalised;
    std::nth_element(sorted.begin(), sorted.begin() + 39, sorted.end(), std::greater<float>());
    const float kth = sorted[39];
    int32_t t = s.sample(logits);
    EXPECT_GE(penalised[t], kth) << "draw " << i << " is outside the top 40";
    EXPECT_GT(s.last_probability(), 0.0f);
    if (seen.insert(t).second) {
      penalised[t] = penalised[t] > 0 ? penalised[t] / 1.1f : penalised[t] * 1.1f;
    }
    s.accept(t);
  }
  EXPECT_GT(seen.size(), 10u);
}

TEST(Sampler, RejectsWrongSizesAndTokens) {
  Sampler s(plain(), 4);
  EXPECT_THROW(s.sample(std::vector<float>{1.0f, 2.0f}), InvalidArgument);
  EXPECT_THROW(s.accept(4), InvalidArgument);
  EXPECT_THROW(s.accept(-1), InvalidArgument);
  EXPECT_THROW(Sampler(plain(), 0), InvalidArgument);
  SamplingParams p = plain();
  p.logit_bias = {{4, 1.0f}};
  try {
    Sampler bad(p, 4);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("token 4"), std::string::npos) << e.what();
  }
}

TEST(SamplingParams, ValidateRejectsBadValuesWithTheValueSeen) {
  auto message = [](auto mutate) -> std::string {
    SamplingParams p;
    mutate(p);
    try {
      p.validate();
    } catch (const InvalidArgument& e) {
      return e.what();
    }
    return "";
  };
  auto expect_rejects = [&](auto mutate, const std::string& field, const std::string& value) {
    std::string m = message(mutate);
    EXPECT_NE(m.find(field), std::string::npos) << "message: '" << m << "'";
    EXPECT_NE(m.find(value), std::string::npos) << "message: '" << m << "'";
  };
  expect_rejects([](SamplingParams& p) { p.top_p = 1.5f; }, "top_p", "1.5");
  expect_rejects([](SamplingParams& p) { p.top_p = -0.25f; }, "top_p", "-0.25");
  expect_rejects([](SamplingParams& p) { p.top_p = kNaN; }, "top_p", "nan");
  expect_rejects([](SamplingParams& p) { p.min_p = 2.0f; }, "min_p", "2");
  expect_rejects([](SamplingParams& p) { p.min_p = -0.5f; }, "min_p", "-0.5");
  expect_rejects([](SamplingParams& p) { p.temperature = kNaN; }, "temperature", "nan");
  expect_rejects([](SamplingParams& p) { p.temperature = kInf; }, "temperature", "inf");
  expect_rejects([](SamplingParams& p) { p.repeat_penalty = 0.0f; }, "repeat_penalty", "0");
  expect_rejects([](SamplingParams& p) { p.repeat_penalty = -1.0f; }, "repeat_penalty", "-1");
  expect_rejects([](SamplingParams& p) { p.repeat_last_n = -2; }, "repeat_last_n", "-2");
  expect_rejects([](SamplingParams& p) { p.presence_penalty = kNaN; }, "presence_penalty", "nan");
  expect_rejects([](SamplingParams& p) { p.frequency_penalty = -kInf; }, "frequency_penalty",
                 "-inf");
  expect_rejects([](SamplingParams& p) { p.logit_bias = {{5, kNaN}}; }, "logit_bias", "nan");
  expect_rejects([](SamplingParams& p) { p.logit_bias = {{5, kInf}}; }, "logit_bias", "inf");
  expect_rejects([](SamplingParams& p) { p.logit_bias = {{-3, 1.0f}}; }, "logit_bias", "-3");

  // Accepted: negative temperature (greedy), edges of the ranges, bans.
  SamplingParams ok;
  ok.temperature = -0.5f;
  ok.top_p = 0.0f;
  ok.min_p = 1.0f;
  ok.top_k = -5;
  ok.repeat_last_n = -1;
  ok.presence_penalty = -2.0f;
  ok.logit_bias = {{0, -kInf}, {1, -100.0f}};
  EXPECT_NO_THROW(ok.validate());
  EXPECT_TRUE(ok.greedy());

  // The constructor validates too.
  SamplingParams bad;
  bad.top_p = 3.0f;
  EXPECT_THROW(Sampler(bad, 10), InvalidArgument);
}

TEST(Sampler, MovedSamplerKeepsItsStream) {
  std::vector<float> logits = random_logits(100, 3, 1.0f);
  Sampler a(plain(9), 100), b(plain(9), 100);
  EXPECT_EQ(a.sample(logits), b.sample(logits));
  Sampler moved = std::move(a);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(moved.sample(logits), b.sample(logits));
}

}  // namespace
}  // namespace sq
