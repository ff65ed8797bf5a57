// The model's next-token distribution as integer frequencies for the range coder.
//
// The only floating-point steps are the ones the kernels define bit for bit on every instruction
// set: m = the largest logit, p[i] = exp(logit[i] - m) by the kernels' own exponential
// (kernels::attn_kernels().exp_sub, equal to exp_ref). From there on everything is integer, in a
// fixed order:
//   e[i] = floor(p[i] * 2^30)                      (exact: a power-of-two scale, then truncation)
//   S    = e[0] + e[1] + ... + e[n-1]              (64-bit)
//   f[i] = 1 + floor(e[i] * (kFreqTotal - n) / S)  (128-bit product)
// so every symbol has frequency at least 1 and the total is at most kFreqTotal. Logits that are
// NaN or -inf count as p = 0. An optional escape symbol (index n_vocab) gets frequency 1: it costs
// nothing measurable when unused and about 31 bits when used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sq::codec {

inline constexpr uint64_t kFreqTotal = uint64_t{1} << 31;

class FreqTable {
 public:
  // Builds the table for `n_vocab` logits, plus the escape symbol when `escape`. Returns the
  // model's cross-entropy helper: log2 of sum p (see bits()).
  void build(const float* logits, int32_t n_vocab, bool escape);

  int32_t size() const { return static_cast<int32_t>(cum_.size()) - 1; }
  uint64_t total() const { return cum_.back(); }
  uint64_t cum(int32_t symbol) const { return cum_[static_cast<size_t>(symbol)]; }
  uint64_t freq(int32_t symbol) const {
    return cum_[static_cast<size_t>(symbol) + 1] - cum_[static_cast<size_t>(symbol)];
  }
  // The symbol whose interval holds `value` (< total()).
  int32_t find(uint64_t value) const;
  // -log2 of the model's probability of `token` under the exact softmax of the logits given to
  // build() (not the integer frequencies): what an ideal coder would spend. Reads those logits
  // again: call it before the caller's buffer changes.
  double model_bits(int32_t token) const;

 private:
  std::vector<uint64_t> cum_{0};
  std::vector<float> p_;
  const float* logits_ = nullptr;  // the caller's; nullptr when no logit was usable (uniform)
  int32_t n_vocab_ = 0;
  float max_ = 0;
  double log2_sum_ = 0;
};

// -log2 p(token) under the softmax of `logits` (n of them): FreqTable::model_bits without building
// a table. `scratch` is reused between calls.
double token_bits(const float* logits, int32_t n, int32_t token, std::vector<float>& scratch);

}  // namespace sq::codec
