#include "codec/freq.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

#include "kernels/attn.h"

namespace sq::codec {

void FreqTable::build(const float* logits, int32_t n_vocab, bool escape) {
  assert(n_vocab > 0);
  const auto n = static_cast<size_t>(n_vocab);
  float m = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < n; ++i) {
    if (logits[i] > m) m = logits[i];  // NaN never compares greater
  }
  logits_ = logits;
  n_vocab_ = n_vocab;
  p_.assign(logits, logits + n);
  if (std::isfinite(m)) {
    for (float& x : p_) {
      if (!(x >= -std::numeric_limits<float>::max())) x = -std::numeric_limits<float>::infinity();
    }
    kernels::attn_kernels().exp_sub(p_.data(), m, n_vocab);  // -inf and NaN give 0
  } else {
    // No usable logit (all -inf or NaN): a uniform distribution.
    std::fill(p_.begin(), p_.end(), 1.0f);
    logits_ = nullptr;
    m = 0;
  }
  max_ = m;

  const size_t n_sym = n + (escape ? 1 : 0);
  std::vector<uint64_t>& e = cum_;  // reused: e[i] first, then the cumulative sums in place
  e.resize(n_sym + 1);
  uint64_t sum_e = 0;
  double sum_p = 0;
  for (size_t i = 0; i < n; ++i) {
    const float scaled = p_[i] * 1073741824.0f;  // 2^30: exact
    e[i + 1] = scaled >= 1.0f ? static_cast<uint64_t>(scaled) : 0;
    sum_e += e[i + 1];
    sum_p += static_cast<double>(p_[i]);
  }
  if (escape) e[n_sym] = 0;
  log2_sum_ = std::log2(sum_p);
  const uint64_t budget = kFreqTotal - n_sym;
  // floor(e * budget / sum_e), exactly: e < 2^31 and budget < 2^31, so the product fits 64 bits; a
  // floating-point reciprocal guesses the quotient and integer steps correct it, which is much
  // faster than a division per symbol and gives the same integers.
  const double inverse = sum_e > 0 ? 1.0 / static_cast<double>(sum_e) : 0.0;
  uint64_t running = 0;
  e[0] = 0;
  for (size_t i = 1; i <= n_sym; ++i) {
    uint64_t share = 0;
    if (e[i] > 0) {
      const uint64_t product = e[i] * budget;
      share = static_cast<uint64_t>(static_cast<double>(product) * inverse);
      while (share > 0 && share * sum_e > product) --share;
      while ((share + 1) * sum_e <= product) ++share;
    }
    running += 1 + share;
    e[i] = running;
  }
  assert(running <= kFreqTotal);
}

int32_t FreqTable::find(uint64_t value) const {
  // The last i with cum[i] <= value.
  const auto it = std::upper_bound(cum_.begin(), cum_.end(), value);
  return static_cast<int32_t>(it - cum_.begin()) - 1;
}

double FreqTable::model_bits(int32_t token) const {
  // log2(sum_j e^(l_j - m)) - (l_token - m) * log2(e): the log-sum-exp form, exact even when
  // p[token] underflows.
  if (logits_ == nullptr) return std::log2(static_cast<double>(n_vocab_));
  const double d = static_cast<double>(logits_[static_cast<size_t>(token)]) - static_cast<double>(max_);
  return log2_sum_ - d * 1.4426950408889634;
}

double token_bits(const float* logits, int32_t n, int32_t token, std::vector<float>& scratch) {
  const auto count = static_cast<size_t>(n);
  float m = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < count; ++i) {
    if (logits[i] > m) m = logits[i];
  }
  if (!std::isfinite(m)) return std::log2(static_cast<double>(n));
  scratch.assign(logits, logits + count);
  for (float& x : scratch) {
    if (!(x >= -std::numeric_limits<float>::max())) x = -std::numeric_limits<float>::infinity();
  }
  kernels::attn_kernels().exp_sub(scratch.data(), m, n);
  double sum = 0;
  for (float p : scratch) sum += static_cast<double>(p);
  const double d = static_cast<double>(logits[static_cast<size_t>(token)]) - static_cast<double>(m);
  return std::log2(sum) - d * 1.4426950408889634;
}

}  // namespace sq::codec
