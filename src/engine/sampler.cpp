#include "engine/sampler.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>

#include "base/error.h"
#include "base/rng.h"

namespace sq {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The canonical order: higher logit first, equal logits by lower id. A strict total order once NaN
// has been replaced, so sorts and selections give the same arrangement under any standard library.
bool ranks_before(const TokenData& a, const TokenData& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

float max_logit(const Candidates& c) {
  if (c.sorted) return c.data[0].logit;
  float m = kNegInf;
  for (size_t i = 0; i < c.size; ++i) m = std::max(m, c.data[i].logit);
  return m;
}

// exp(logit - max), in float for speed (sums are kept in double); stays sane when max is +inf:
// the tokens at +inf then share all the mass.
float weight(float logit, float max) {
  if (logit == max) return 1.0f;
  return std::exp(logit - max);
}

// Probability of live entry `at` under the softmax of the live logits.
double softmax_at(const Candidates& c, size_t at) {
  const float max = max_logit(c);
  double sum = 0.0;
  for (size_t i = 0; i < c.size; ++i) sum += weight(c.data[i].logit, max);
  return weight(c.data[at].logit, max) / sum;
}

[[noreturn]] void fail_nothing_left(size_t n) {
  fail<InvalidArgument>(
      "no token can be sampled: all {} candidates have logit -inf (or NaN) after logit bias and "
      "penalties; expected at least one finite logit (check logit_bias for bans)",
      n);
}

class LogitBiasStage final : public SamplerStage {
 public:
  // `bias`: sorted by id, one entry per id.
  explicit LogitBiasStage(std::vector<std::pair<int32_t, float>> bias) : bias_(std::move(bias)) {}

  void apply(Candidates& c) override {
    if (c.indexed) {
      for (const auto& [id, b] : bias_) {
        if (static_cast<size_t>(id) < c.size) add(c.data[id].logit, b);
      }
      return;
    }
    for (TokenData& t : c.live()) {
      auto it = std::lower_bound(bias_.begin(), bias_.end(), t.id,
                                 [](const auto& e, int32_t id) { return e.first < id; });
      if (it != bias_.end() && it->first == t.id) add(t.logit, it->second);
    }
    c.sorted = false;
  }

 private:
  // A ban is absolute: -inf must win even over a +inf logit (whose sum would be NaN).
  static void add(float& logit, float b) { logit = (b == kNegInf) ? kNegInf : logit + b; }
  std::vector<std::pair<int32_t, float>> bias_;
};

// Repeat, presence and frequency penalties over a sliding window of accepted tokens. Counts are
// kept incrementally on accept(), so apply() costs O(distinct tokens in the window) while the
// candidates are still the indexed vocabulary.
class PenaltyStage final : public SamplerStage {
 public:
  PenaltyStage(const SamplingParams& p, int32_t n_vocab)
      : repeat_(p.repeat_penalty),
        presence_(p.presence_penalty),
        frequency_(p.frequency_penalty),
        last_n_(p.repeat_last_n),
        counts_(static_cast<size_t>(n_vocab), 0),
        slot_(static_cast<size_t>(n_vocab), -1) {}

  void apply(Candidates& c) override {
    if (c.indexed) {
      for (int32_t id : distinct_) {
        if (static_cast<size_t>(id) < c.size) penalise(c.data[id].logit, counts_[id]);
      }
    } else {
      for (TokenData& t : c.live()) {
        if (counts_[t.id] > 0) penalise(t.logit, counts_[t.id]);
      }
    }
    c.sorted = false;
  }

  void accept(int32_t token) override {
    if (last_n_ > 0) {
      // The ring grows with the history up to last_n, so a huge window costs nothing until used.
      if (ring_.size() < static_cast<size_t>(last_n_)) {
        ring_.push_back(token);
      } else {
        drop(ring_[head_]);
        ring_[head_] = token;
        head_ = (head_ + 1) % ring_.size();
      }
    }
    if (counts_[token]++ == 0) {
      slot_[token] = static_cast<int32_t>(distinct_.size());
      distinct_.push_back(token);
    }
  }

  void reset() override {
    for (int32_t id : distinct_) {
      counts_[id] = 0;
      slot_[id] = -1;
    }
    distinct_.clear();
    ring_.clear();
    head_ = 0;
  }

 private:
  void penalise(float& logit, int32_t count) const {
    if (repeat_ != 1.0f) logit = logit > 0.0f ? logit / repeat_ : logit * repeat_;
    logit -= static_cast<float>(count) * frequency_ + presence_;
  }

  void drop(int32_t token) {
    assert(counts_[token] > 0);
    if (--counts_[token] > 0) return;
    const int32_t at = slot_[token];
    const int32_t moved = distinct_.back();
    distinct_[at] = moved;
    slot_[moved] = at;
    distinct_.pop_back();
    slot_[token] = -1;
  }

  float repeat_, presence_, frequency_;
  int32_t last_n_;
  std::vector<int32_t> counts_;    // [n_vocab] occurrences in the window
  std::vector<int32_t> slot_;      // [n_vocab] index into distinct_, -1 when absent
  std::vector<int32_t> distinct_;  // tokens with counts_ > 0, in no particular order
  std::vector<int32_t> ring_;      // the window, oldest at head_ once full
  size_t head_ = 0;
};

// Orders [begin, begin + n) so that its first m entries are the m best in canonical order, sorted,
// where m is the fewest whose weights, added to `cumulative`, reach `target`. Returns m, or n when
// the target is not reached. Mass usually sits in a few tokens, so a growing prefix is selected
// and sorted instead of the whole range: O(n + m log m) plus the rounds that overshoot.
size_t sorted_prefix_reaching(TokenData* begin, size_t n, bool sorted, float max,
                              double cumulative, double target) {
  size_t done = 0;
  size_t upto = sorted ? n : std::min<size_t>(n, 64);
  for (;;) {
    if (!sorted) {
      if (upto < n) std::nth_element(begin + done, begin + upto, begin + n, ranks_before);
      std::sort(begin + done, begin + upto, ranks_before);
    }
    for (size_t i = done; i < upto; ++i) {
      cumulative += static_cast<double>(weight(begin[i].logit, max));
      if (cumulative >= target) return i + 1;
    }
    done = upto;
    if (upto == n) return n;
    upto = std::min(n, upto * 8);
  }
}

class TopKStage final : public SamplerStage {
 public:
  explicit TopKStage(int32_t k) : k_(static_cast<size_t>(k)) { heap_.reserve(k_); }

  void apply(Candidates& c) override {
    if (k_ >= c.size) return;
    if (!c.sorted) {
      TokenData* begin = c.data.data();
      if (k_ * 16 <= c.size) {
        // A bounded heap whose top is the worst kept: one comparison for most tokens, against
        // the two or three passes and swaps of nth_element over the whole vocabulary.
        heap_.assign(begin, begin + k_);
        std::make_heap(heap_.begin(), heap_.end(), ranks_before);
        for (size_t i = k_; i < c.size; ++i) {
          if (ranks_before(begin[i], heap_.front())) {
            std::pop_heap(heap_.begin(), heap_.end(), ranks_before);
            heap_.back() = begin[i];
            std::push_heap(heap_.begin(), heap_.end(), ranks_before);
          }
        }
        std::sort_heap(heap_.begin(), heap_.end(), ranks_before);
        std::copy(heap_.begin(), heap_.end(), begin);
      } else {
        std::nth_element(begin, begin + k_, begin + c.size, ranks_before);
        std::sort(begin, begin + k_, ranks_before);
      }
      c.sorted = true;
    }
    c.size = k_;
    c.indexed = false;
  }

 private:
  size_t k_;
  std::vector<TokenData> heap_;  // [k] scratch
};

class TopPStage final : public SamplerStage {
 public:
  TopPStage(float p, int32_t n_vocab)
      : p_(p), scratch_(static_cast<size_t>(n_vocab)), bucket_of_(static_cast<size_t>(n_vocab)) {}

  void apply(Candidates& c) override {
    const float max = max_logit(c);
    if (c.size <= 1 || max == kNegInf) return;

    if (c.sorted || c.size <= kSmall) {
      double sum = 0.0;
      for (size_t i = 0; i < c.size; ++i) sum += static_cast<double>(weight(c.data[i].logit, max));
      const double target = static_cast<double>(p_) * sum;
      c.size = sorted_prefix_reaching(c.data.data(), c.size, c.sorted, max, 0.0, target);
      c.sorted = true;
      c.indexed = false;
      return;
    }

    // Large and unsorted (top-k off): bucket the tokens by logit below the maximum, find the
    // bucket where the mass crosses the target, and order only that bucket. A bucket is a
    // monotone function of the logit, so every token in an earlier bucket ranks before every
    // token in a later one. O(n_vocab) plus the sort of one bucket; the survivors keep their
    // vocabulary order.
    std::fill(std::begin(mass_), std::end(mass_), 0.0);
    for (size_t i = 0; i < c.size; ++i) {
      const uint16_t b = bucket(c.data[i].logit, max);
      bucket_of_[i] = b;
      mass_[b] += static_cast<double>(weight(c.data[i].logit, max));
    }
    double sum = 0.0;
    for (double m : mass_) sum += m;
    const double target = static_cast<double>(p_) * sum;
    double before = 0.0;
    size_t cross = 0;
    while (cross < kBuckets && before + mass_[cross] < target) before += mass_[cross++];
    if (cross == kBuckets) return;  // rounding left the total short of the target: keep all

    size_t n = 0;
    for (size_t i = 0; i < c.size; ++i) {
      if (bucket_of_[i] == cross) scratch_[n++] = c.data[i];
    }
    const size_t m = sorted_prefix_reaching(scratch_.data(), n, false, max, before, target);
    const TokenData last = scratch_[m - 1];  // the worst token kept
    size_t kept = 0;
    for (size_t i = 0; i < c.size; ++i) {
      const TokenData t = c.data[i];
      const size_t b = bucket_of_[i];
      if (b < cross || (b == cross && !ranks_before(last, t))) c.data[kept++] = t;
    }
    if (kept != c.size) c.indexed = false;
    c.size = kept;
  }

 private:
  static constexpr size_t kSmall = 1024;
  static constexpr size_t kBuckets = 512;
  // Buckets of 1/16 in logit; everything 32 or more below the maximum (weight < 1.3e-14) shares
  // the last one.
  static uint16_t bucket(float logit, float max) {
    if (logit == max) return 0;
    const float d = (max - logit) * 16.0f;
    return static_cast<uint16_t>(d >= static_cast<float>(kBuckets - 1) ? kBuckets - 1 : d);
  }

  float p_;
  double mass_[kBuckets] = {};
  std::vector<TokenData> scratch_;  // [n_vocab] the crossing bucket
  std::vector<uint16_t> bucket_of_;  // [n_vocab] bucket of each live entry
};

class MinPStage final : public SamplerStage {
 public:
  explicit MinPStage(float p) : log_p_(std::log(static_cast<double>(p))) {}

  // p_i >= min_p * p_max  <=>  logit_i - logit_max >= log(min_p): no exp needed.
  void apply(Candidates& c) override {
    const float max = max_logit(c);
    if (max == kNegInf) return;
    auto keep = [&](const TokenData& t) {
      return t.logit == max || static_cast<double>(t.logit) - static_cast<double>(max) >= log_p_;
    };
    if (c.sorted) {
      size_t n = 1;
      while (n < c.size && keep(c.data[n])) ++n;
      c.size = n;
    } else {
      // Stable compaction keeps the vocabulary order, which the draw relies on for determinism.
      size_t n = 0;
      for (size_t i = 0; i < c.size; ++i) {
        if (keep(c.data[i])) c.data[n++] = c.data[i];
      }
      if (n != c.size) c.indexed = false;
      c.size = n;
    }
  }

 private:
  double log_p_;
};

class TemperatureStage final : public SamplerStage {
 public:
  explicit TemperatureStage(float t) : t_(t) {}
  void apply(Candidates& c) override {
    for (TokenData& t : c.live()) t.logit /= t_;
  }

 private:
  float t_;
};

// Softmax over the survivors and one draw, walking them in their (canonical) order.
class DistStage final : public SamplerStage {
 public:
  DistStage(uint64_t seed, int32_t n_vocab) : seed_(seed), rng_(seed) {
    weights_.resize(static_cast<size_t>(n_vocab));
  }

  void apply(Candidates& c) override {
    const float max = max_logit(c);
    if (c.size == 0 || max == kNegInf) fail_nothing_left(c.size);
    double sum = 0.0;
    for (size_t i = 0; i < c.size; ++i) {
      weights_[i] = weight(c.data[i].logit, max);
      sum += static_cast<double>(weights_[i]);
    }
    const double u = rng_.next_double() * sum;
    double cumulative = 0.0;
    size_t chosen = c.size;
    size_t last_nonzero = 0;
    for (size_t i = 0; i < c.size; ++i) {
      if (weights_[i] <= 0.0f) continue;
      last_nonzero = i;
      cumulative += static_cast<double>(weights_[i]);
      if (u < cumulative) {
        chosen = i;
        break;
      }
    }
    // u < sum always, but a sum rounded differently from the running total can leave u past it.
    if (chosen == c.size) chosen = last_nonzero;
    c.selected = c.data[chosen].id;
    c.selected_at = chosen;
  }

  void reset() override { rng_.reseed(seed_); }

 private:
  uint64_t seed_;
  Rng rng_;
  std::vector<float> weights_;  // [n_vocab] scratch
};

class GreedyStage final : public SamplerStage {
 public:
  void apply(Candidates& c) override {
    if (c.size == 0) fail_nothing_left(0);
    size_t best = 0;
    for (size_t i = 1; i < c.size; ++i) {
      if (ranks_before(c.data[i], c.data[best])) best = i;
    }
    if (c.data[best].logit == kNegInf) fail_nothing_left(c.size);
    c.selected = c.data[best].id;
    c.selected_at = best;
  }
};

}  // namespace

void SamplingParams::validate() const {
  if (!std::isfinite(temperature)) {
    fail<InvalidArgument>("temperature is {}, expected a finite number (<= 0 means greedy)",
                          temperature);
  }
  if (!(top_p >= 0.0f && top_p <= 1.0f)) {
    fail<InvalidArgument>("top_p is {}, expected a value in [0, 1] (1 disables it)", top_p);
  }
  if (!(min_p >= 0.0f && min_p <= 1.0f)) {
    fail<InvalidArgument>("min_p is {}, expected a value in [0, 1] (0 disables it)", min_p);
  }
  if (!(std::isfinite(repeat_penalty) && repeat_penalty > 0.0f)) {
    fail<InvalidArgument>("repeat_penalty is {}, expected a finite value > 0 (1 disables it)",
                          repeat_penalty);
  }
  if (repeat_last_n < -1) {
    fail<InvalidArgument>(
        "repeat_last_n is {}, expected -1 (whole history), 0 (penalties off) or a window > 0",
        repeat_last_n);
  }
  if (!std::isfinite(presence_penalty)) {
    fail<InvalidArgument>("presence_penalty is {}, expected a finite number", presence_penalty);
  }
  if (!std::isfinite(frequency_penalty)) {
    fail<InvalidArgument>("frequency_penalty is {}, expected a finite number", frequency_penalty);
  }
  for (const auto& [id, bias] : logit_bias) {
    if (id < 0) fail<InvalidArgument>("logit_bias names token {}, expected a token id >= 0", id);
    if (std::isnan(bias) || bias == std::numeric_limits<float>::infinity()) {
      fail<InvalidArgument>(
          "logit_bias for token {} is {}, expected a finite number or -inf (to ban the token)", id,
          bias);
    }
  }
}

Sampler::Sampler(const SamplingParams& params, int32_t n_vocab)
    : params_(params), n_vocab_(n_vocab) {
  params_.validate();
  if (n_vocab <= 0) fail<InvalidArgument>("vocabulary size is {}, expected > 0", n_vocab);

  std::vector<std::pair<int32_t, float>> bias;
  bias.reserve(params_.logit_bias.size());
  for (const auto& [id, b] : params_.logit_bias) {
    if (id >= n_vocab) {
      fail<InvalidArgument>("logit_bias names token {}, expected a token id in [0, {})", id,
                            n_vocab);
    }
    bias.emplace_back(id, b);
  }
  std::sort(bias.begin(), bias.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::pair<int32_t, float>> merged;
  for (const auto& [id, b] : bias) {
    if (!merged.empty() && merged.back().first == id) {
      merged.back().second += b;  // -inf + finite stays -inf; +inf was rejected
    } else {
      merged.emplace_back(id, b);
    }
  }

  candidates_.data.resize(static_cast<size_t>(n_vocab));
  if (!merged.empty()) chain_.push_back(std::make_unique<LogitBiasStage>(std::move(merged)));
  const bool penalties = params_.repeat_last_n != 0 &&
                         (params_.repeat_penalty != 1.0f || params_.presence_penalty != 0.0f ||
                          params_.frequency_penalty != 0.0f);
  if (penalties) chain_.push_back(std::make_unique<PenaltyStage>(params_, n_vocab));
  if (params_.greedy()) {
    chain_.push_back(std::make_unique<GreedyStage>());
    return;
  }
  if (params_.top_k > 0 && params_.top_k < n_vocab) {
    chain_.push_back(std::make_unique<TopKStage>(params_.top_k));
  }
  if (params_.top_p < 1.0f) chain_.push_back(std::make_unique<TopPStage>(params_.top_p, n_vocab));
  if (params_.min_p > 0.0f) chain_.push_back(std::make_unique<MinPStage>(params_.min_p));
  if (params_.temperature != 1.0f) {
    chain_.push_back(std::make_unique<TemperatureStage>(params_.temperature));
  }
  chain_.push_back(std::make_unique<DistStage>(params_.seed, n_vocab));
}

Sampler::~Sampler() = default;
Sampler::Sampler(Sampler&&) noexcept = default;
Sampler& Sampler::operator=(Sampler&&) noexcept = default;

int32_t Sampler::sample(std::span<const float> logits) {
  if (logits.size() != static_cast<size_t>(n_vocab_)) {
    fail<InvalidArgument>("sampler got {} logits, expected n_vocab = {}", logits.size(), n_vocab_);
  }
  Candidates& c = candidates_;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float l = logits[i];
    c.data[i] = TokenData{static_cast<int32_t>(i), std::isnan(l) ? kNegInf : l};
  }
  c.size = logits.size();
  c.indexed = true;
  c.sorted = false;
  c.selected = -1;
  c.selected_at = 0;
  for (auto& stage : chain_) stage->apply(c);
  assert(c.selected >= 0 && c.selected < n_vocab_ && c.selected_at < c.size);
  return c.selected;
}

void Sampler::accept(int32_t token) {
  if (token < 0 || token >= n_vocab_) {
    fail<InvalidArgument>("sampler was given token {}, expected an id in [0, {})", token, n_vocab_);
  }
  for (auto& stage : chain_) stage->accept(token);
}

void Sampler::reset() {
  for (auto& stage : chain_) stage->reset();
  candidates_.selected = -1;
}

float Sampler::last_probability() const {
  if (candidates_.selected < 0) return 0.0f;
  return static_cast<float>(softmax_at(candidates_, candidates_.selected_at));
}

}  // namespace sq
