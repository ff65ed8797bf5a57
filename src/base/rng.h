// A small deterministic random number generator: xoshiro256** seeded through splitmix64.
//
// Why not <random>: the engines are specified, but the distributions (uniform_real_distribution
// and friends) are implementation-defined, so the same seed would draw different tokens under
// libstdc++ and libc++. Everything here is integer arithmetic with a fixed definition, so a seed
// names the same stream on every machine and every compiler.
#pragma once

#include <cstdint>

namespace sq {

// splitmix64 (Steele, Lea, Flood 2014): one step of a 64-bit counter-based mixer. Used to expand a
// single 64-bit seed into the 256-bit xoshiro state, so that seeds 0, 1, 2... give unrelated streams
// and no seed yields the all-zero state.
inline uint64_t splitmix64_next(uint64_t& state) {
  state += 0x9E3779B97F4A7C15ull;
  uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// xoshiro256** (Blackman, Vigna 2018). Period 2^256 - 1; fast; good statistical quality for
// sampling. Not cryptographic.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }

  void reseed(uint64_t seed) {
    uint64_t sm = seed;
    for (uint64_t& word : s_) word = splitmix64_next(sm);
  }

  uint64_t next_u64() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1): the top 53 bits scaled by 2^-53, exact in a double, never 1.0.
  double next_double() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4] = {};
};

}  // namespace sq
