// How well a model predicts a text, in the units a compressor is judged by: bits per byte, bits per
// character, bits per token, perplexity; and how far one model's predictions are from another's
// (KL divergence, top-1 agreement), the cost of quantizing it. docs/eval.md describes the method.
//
// The text is tokenized once, as a whole (no BOS, special-token text left as text), then scored
// with a sliding window: a window holds up to `window` model positions (BOS first when the
// tokenizer adds one by default), consecutive windows start `stride` tokens apart, and each window
// scores only the tokens that no earlier window scored, so that every token is scored exactly once,
// with at least `window - stride` tokens of context when the text is long enough (the first window
// scores all of its tokens). With stride = window - BOS the windows are disjoint: the chunking of
// `squeeze zip`. Log-probabilities come from a log-softmax computed in double.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ops/ops.h"

namespace sq {
class Engine;
class ThreadPool;
}  // namespace sq

namespace sq::eval {

struct ScoreOptions {
  int32_t window = 0;  // model positions per window, BOS included; 0: default_context(model)
  int32_t stride = 0;  // tokens between window starts; 0: window / 2
  ops::KvType kv_type = ops::KvType::F16;
};

// The window and stride actually used, with the defaults filled in and checked.
struct WindowPlan {
  int32_t window = 0;
  int32_t stride = 0;
  bool bos = false;  // each window starts with BOS
  int32_t text_positions() const { return window - (bos ? 1 : 0); }
};

// Fills in the defaults and checks them against the model: throws InvalidArgument for a window
// that holds no text token or is longer than the model's training context, or a stride outside
// 1..window - BOS.
WindowPlan plan_windows(const Engine& engine, const ScoreOptions& options);

// One window over the text's tokens: it holds tokens [begin, end) (after BOS when the plan has
// one) and scores tokens [score_from, end).
struct Window {
  uint64_t begin = 0;
  uint64_t end = 0;
  uint64_t score_from = 0;
};

// The windows that score `n_tokens` tokens under `plan`, in order; none for no tokens.
std::vector<Window> window_list(uint64_t n_tokens, const WindowPlan& plan);

// Bytes, UTF-8 characters (a byte that does not start a well-formed sequence counts as one
// character), and how many such bytes there were.
struct TextCounts {
  uint64_t bytes = 0;
  uint64_t chars = 0;
  uint64_t invalid_bytes = 0;
};
TextCounts count_text(std::string_view text);

struct ScoreResult {
  TextCounts text;
  WindowPlan plan;
  uint64_t n_tokens = 0;     // tokens of the text, every one scored
  uint64_t n_evaluated = 0;  // positions run through the model: BOS and re-read context included
  uint64_t n_windows = 0;
  // -sum log2 p(token | context) over the text's tokens. Without BOS a window's first token has
  // no context to be predicted from (the text's first token; every token with a window of 1); it
  // is charged log2(n_vocab) bits (a uniform guess), what a coder would pay for it.
  double bits = 0;
  double seconds = 0;        // the model's work (forward passes and log-softmax)
  bool round_trips = true;   // decode(encode(text)) == text
  std::string model_name;

  // NaN when the denominator is 0.
  double bits_per_byte() const;
  double bits_per_char() const;
  double bits_per_token() const;
  double perplexity() const;         // 2^bits_per_token
  double tokens_per_second() const;  // text tokens scored per second of model work (NaN: none)
};

// Tokenizes and scores `text` with the engine's model. Throws InvalidArgument when the model has
// no tokenizer or the options do not fit the model.
ScoreResult score_text(const Engine& engine, std::string_view text, const ScoreOptions& options,
                       ThreadPool& pool);

// What the KL divergence of one model's next-token distribution from another's looks like over
// the positions of a text.
struct KlStats {
  uint64_t n_positions = 0;
  double mean = 0;
  double p50 = 0, p90 = 0, p99 = 0, max = 0;  // nearest-rank percentiles
  double top1_agreement = 0;                   // share of positions where both argmaxes agree
};
// Summarises per-position KL values (in nats) and the count of positions whose top-1 agreed.
KlStats summarize_kl(std::vector<double> kl, uint64_t top1_agree);

struct KlResult {
  ScoreResult base;   // model A on the same windows
  ScoreResult other;  // model B
  std::vector<double> kl;  // KL(A || B) in nats per scored position, in text order
  uint64_t top1_agree = 0;
  KlStats stats;
};

// Throws InvalidArgument, saying what differs, unless the two engines have the same tokenizer
// (kind, vocabulary texts and types, special tokens) and the same logit width.
void check_same_tokenizer(const Engine& a, const Engine& b);

// KL(A || B) of the next-token distributions at every position that predicts a token of `text`
// (without BOS, not the tokens charged a uniform guess), on the windows `options` gives (planned for A, and
// checked against B's context), and top-1 agreement. Refuses different tokenizers.
KlResult compare_models(const Engine& base, const Engine& other, std::string_view text,
                        const ScoreOptions& options, ThreadPool& pool);

}  // namespace sq::eval
