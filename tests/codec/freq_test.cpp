#include "codec/freq.h"

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "base/rng.h"

namespace sq::codec {
namespace {

TEST(FreqTable, EverySymbolHasFrequencyAndTheTotalFits) {
  Rng rng(3);
  for (int32_t n : {1, 2, 512, 32000, 152064}) {
    std::vector<float> logits(static_cast<size_t>(n));
    for (float& l : logits) l = static_cast<float>(rng.next_double() * 40 - 20);
    logits[static_cast<size_t>(n / 2)] = 30;  // one dominant token
    FreqTable t;
    t.build(logits.data(), n, true);
    ASSERT_EQ(t.size(), n + 1);
    EXPECT_LE(t.total(), kFreqTotal);
    EXPECT_GT(t.total(), kFreqTotal - static_cast<uint64_t>(n) - 2);  // little lost to rounding
    uint64_t sum = 0;
    for (int32_t s = 0; s <= n; ++s) {
      ASSERT_GE(t.freq(s), 1u);
      ASSERT_EQ(t.cum(s), sum);
      sum += t.freq(s);
    }
    EXPECT_EQ(t.freq(n), 1u);  // the escape
    // Frequencies follow the softmax: the dominant token's share is its probability.
    double z = 0;
    for (float l : logits) z += std::exp(static_cast<double>(l) - 30);
    const double want = 1 / z;
    const double got = static_cast<double>(t.freq(n / 2)) / static_cast<double>(t.total());
    EXPECT_NEAR(got, want, 1e-5 + static_cast<double>(n) / static_cast<double>(kFreqTotal));
    EXPECT_NEAR(t.model_bits(n / 2), -std::log2(want), 1e-4);
  }
}

TEST(FreqTable, FindIsTheInverseOfCum) {
  std::vector<float> logits{0, -1, 2, -50, 7, 7, -100, 3};
  FreqTable t;
  t.build(logits.data(), static_cast<int32_t>(logits.size()), false);
  for (int32_t s = 0; s < t.size(); ++s) {
    EXPECT_EQ(t.find(t.cum(s)), s);
    EXPECT_EQ(t.find(t.cum(s) + t.freq(s) - 1), s);
  }
}

TEST(FreqTable, NonFiniteLogitsStillGiveAUsableTable) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (std::vector<float> logits : {std::vector<float>{-inf, -inf, -inf}, std::vector<float>{nan, 1, -inf},
                                    std::vector<float>{inf, 0, 0}, std::vector<float>{nan, nan, nan}}) {
    FreqTable t;
    t.build(logits.data(), 3, true);
    uint64_t sum = 0;
    for (int32_t s = 0; s < 4; ++s) {
      ASSERT_GE(t.freq(s), 1u);
      sum += t.freq(s);
    }
    EXPECT_EQ(sum, t.total());
    EXPECT_LE(t.total(), kFreqTotal);
  }
}

TEST(FreqTable, SameLogitsSameTable) {
  // The table is a pure function of the logits' bits.
  Rng rng(9);
  std::vector<float> logits(1000);
  for (float& l : logits) l = static_cast<float>(rng.next_double() * 10);
  FreqTable a, b;
  a.build(logits.data(), 1000, true);
  b.build(logits.data(), 1000, true);
  for (int32_t s = 0; s <= 1000; ++s) ASSERT_EQ(a.cum(s), b.cum(s));
}

}  // namespace
}  // namespace sq::codec
