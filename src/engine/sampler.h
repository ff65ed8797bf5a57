// Turning a row of logits into a token: a chain of small stages (STYLE.md, item 12).
//
// The default chain follows llama.cpp's order:
//
//   logit bias -> penalties (repeat, presence, frequency) -> top-k -> top-p -> min-p
//     -> temperature -> softmax and a seeded draw
//
// and, when temperature <= 0, logit bias -> penalties -> argmax. Top-k, top-p and min-p therefore
// look at the distribution at temperature 1; temperature only reshapes what survives them.
//
// Determinism: the draw uses sq::Rng (xoshiro256**, base/rng.h) and every stage leaves the
// candidates in a canonical order (vocabulary order, or descending logit with ties broken by the
// lower id), so a seed names the same token sequence on every machine and standard library. The
// sampler is not on the compressor's bit-exact path, so it uses std::exp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

namespace sq {

struct SamplingParams {
  // <= 0 means greedy: argmax after logit bias and penalties, ties to the lowest id. Negative
  // values are accepted (llama.cpp habit) and mean the same as 0. Must not be NaN or infinite.
  float temperature = 0.8f;
  // Keep the k most likely tokens. <= 0 disables; k >= n_vocab keeps everything.
  int32_t top_k = 40;
  // Keep the smallest set of most likely tokens whose probability reaches top_p (at least one).
  // In [0, 1]; 1 disables, 0 keeps only the most likely token.
  float top_p = 0.95f;
  // Drop tokens whose probability is below min_p times the most likely token's. In [0, 1];
  // 0 disables.
  float min_p = 0.05f;
  // llama.cpp semantics: a token seen in the window has its logit divided by repeat_penalty when
  // positive and multiplied by it when negative, so a penalty > 1 always makes it less likely.
  // Must be finite and > 0; 1 disables.
  float repeat_penalty = 1.0f;
  // The window of accepted tokens (prompt included) that all three penalties count over:
  // > 0 the last n tokens, 0 disables the penalties, -1 the whole history since reset().
  // OpenAI counts presence and frequency over the whole completion; set -1 (and accept only the
  // generated tokens) for exactly that.
  int32_t repeat_last_n = 64;
  // OpenAI semantics: logit -= presence_penalty * (count > 0) + frequency_penalty * count, with
  // count the token's occurrences in the window. Finite; negative values encourage repetition.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  // Seeds the draw; the same seed gives the same tokens for the same logits.
  uint64_t seed = 0;
  // (token, bias) added to the logits before anything else. A bias of -inf bans the token; +inf
  // and NaN are rejected. Entries for the same token add up.
  std::vector<std::pair<int32_t, float>> logit_bias;

  // Throws InvalidArgument naming the field, the value seen and the range expected. Token ids of
  // logit_bias are checked against the vocabulary by the Sampler, which knows its size.
  void validate() const;
  bool greedy() const { return temperature <= 0.0f; }
};

// One entry of the working set.
struct TokenData {
  int32_t id;
  float logit;
};

// The working set the stages narrow down. Storage is sized to the vocabulary once; a call only
// moves `size`, so sampling allocates nothing.
struct Candidates {
  std::vector<TokenData> data;  // [n_vocab]; the first `size` entries are live
  size_t size = 0;
  // data[i].id == i for every live i: the full vocabulary in its original order, so a stage may
  // index by token id instead of searching.
  bool indexed = false;
  // Live entries are in descending logit order, ties by ascending id.
  bool sorted = false;
  // Set by the final stage: the token and its place among the live entries.
  int32_t selected = -1;
  size_t selected_at = 0;

  std::span<TokenData> live() { return {data.data(), size}; }
};

// A stage of the chain. `apply` reshapes or narrows the candidates (the last stage selects one),
// `accept` sees every token recorded into the history, `reset` forgets that history.
class SamplerStage {
 public:
  virtual ~SamplerStage() = default;
  virtual void apply(Candidates& candidates) = 0;
  virtual void accept(int32_t /*token*/) {}
  virtual void reset() {}
};

class Sampler {
 public:
  // Validates `params` (InvalidArgument) and builds the chain. Memory: about 8 bytes per
  // vocabulary entry for the candidates, plus 8 more when penalties are on.
  Sampler(const SamplingParams& params, int32_t n_vocab);
  ~Sampler();
  Sampler(Sampler&&) noexcept;
  Sampler& operator=(Sampler&&) noexcept;
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Runs the chain over `logits` ([n_vocab]) and returns the drawn token. Does not record it: call
  // accept() with the token that is actually kept. NaN logits count as -inf. Throws
  // InvalidArgument when logits.size() != n_vocab, or when no token is left to draw (every logit
  // -inf after bias and penalties). Cost: O(n_vocab), plus O(m log m) to order the m tokens that
  // top-k or top-p keep; no full sort of the vocabulary. Allocates nothing.
  int32_t sample(std::span<const float> logits);

  // Records a token into the history the penalties count (prompt tokens too). Throws
  // InvalidArgument for an id outside [0, n_vocab).
  void accept(int32_t token);
  void accept(std::span<const int32_t> tokens) {
    for (int32_t t : tokens) accept(t);
  }

  // Forgets the history and puts the random stream back to the seed.
  void reset();

  // Probability of the last sampled token under the distribution it was drawn from: the softmax
  // of the survivors after truncation and temperature or, when greedy, of the biased and
  // penalised logits. Computed on request, O(survivors); 0 before the first sample or after
  // reset().
  float last_probability() const;

  const SamplingParams& params() const { return params_; }
  int32_t n_vocab() const { return n_vocab_; }

 private:
  SamplingParams params_;
  int32_t n_vocab_;
  Candidates candidates_;
  std::vector<std::unique_ptr<SamplerStage>> chain_;
};

}  // namespace sq
