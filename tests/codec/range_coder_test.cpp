#include "codec/range_coder.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "base/rng.h"

namespace sq::codec {
namespace {

struct Coded {
  uint64_t cum, freq, total;
};

// Random symbols under random distributions of every size up to 2^32; decoding must give them back
// and the output must stay within a hair of the information content.
TEST(RangeCoder, RoundTripsRandomSymbolsNearTheEntropy) {
  Rng rng(1);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<Coded> symbols;
    double bits = 0;
    RangeEncoder enc;
    const int n = 1 + static_cast<int>(rng.next_u64() % 5000);
    for (int i = 0; i < n; ++i) {
      const int shift = 1 + static_cast<int>(rng.next_u64() % 32);
      const uint64_t total = trial % 2 == 0 ? (uint64_t{1} << shift) : 1 + rng.next_u64() % (uint64_t{1} << shift);
      // Skewed symbols: often a large share, sometimes a frequency of 1.
      uint64_t freq = rng.next_u64() % 3 == 0 ? 1 : 1 + rng.next_u64() % total;
      if (freq > total) freq = total;
      const uint64_t cum = rng.next_u64() % (total - freq + 1);
      symbols.push_back({cum, freq, total});
      enc.encode(cum, freq, total);
      bits += std::log2(static_cast<double>(total) / static_cast<double>(freq));
    }
    const std::string out = enc.finish();
    EXPECT_LE(static_cast<double>(out.size()), bits / 8 * (1 + 1e-4) + 8) << "trial " << trial;
    RangeDecoder dec(out);
    for (const Coded& s : symbols) {
      uint64_t v = 0;
      ASSERT_TRUE(dec.peek(s.total, v));
      ASSERT_GE(v, s.cum);
      ASSERT_LT(v, s.cum + s.freq);
      dec.consume(s.cum, s.freq);
    }
    EXPECT_FALSE(dec.overrun());
  }
}

TEST(RangeCoder, CarriesThroughRunsOfFF) {
  // Symbols at the very top of every interval push the low end into long runs of 0xFF bytes that a
  // later carry must turn into zeros.
  for (uint64_t total : {uint64_t{2}, uint64_t{255}, uint64_t{1} << 31, uint64_t{1} << 32}) {
    RangeEncoder enc;
    std::vector<uint64_t> syms;
    for (int i = 0; i < 3000; ++i) {
      const uint64_t cum = i % 97 == 96 ? 0 : total - 1;
      syms.push_back(cum);
      enc.encode(cum, 1, total);
    }
    const std::string out = enc.finish();
    RangeDecoder dec(out);
    for (uint64_t cum : syms) {
      uint64_t v = 0;
      ASSERT_TRUE(dec.peek(total, v));
      ASSERT_EQ(v, cum) << "total " << total;
      dec.consume(cum, 1);
    }
  }
}

TEST(RangeCoder, EmptyAndRawBits) {
  RangeEncoder empty;
  EXPECT_EQ(empty.finish(), "");
  RangeEncoder enc;
  for (uint32_t b = 0; b < 256; ++b) enc.encode_bits(b, 8);
  enc.encode_bits(65535, 16);
  const std::string out = enc.finish();
  EXPECT_LE(out.size(), 256u + 2 + 2);
  RangeDecoder dec(out);
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t v = 0;
    ASSERT_TRUE(dec.decode_bits(8, v));
    EXPECT_EQ(v, b);
  }
  uint32_t v = 0;
  ASSERT_TRUE(dec.decode_bits(16, v));
  EXPECT_EQ(v, 65535u);
}

TEST(RangeCoder, GarbageNeverReadsOutOfBoundsOrLoopsForever) {
  Rng rng(5);
  std::string garbage(64, '\0');
  for (char& c : garbage) c = static_cast<char>(rng.next_u64());
  RangeDecoder dec(garbage);
  int bad = 0;
  for (int i = 0; i < 100000 && !dec.overrun(); ++i) {
    uint64_t v = 0;
    if (!dec.peek(1000, v)) {
      ++bad;
      break;
    }
    dec.consume(v, 1);
  }
  EXPECT_TRUE(dec.overrun() || bad > 0);
}

}  // namespace
}  // namespace sq::codec
