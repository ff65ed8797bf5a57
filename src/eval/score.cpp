#include "eval/score.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <span>

#include "base/error.h"
#include "base/thread_pool.h"
#include "engine/engine.h"
#include "model/kv_cache.h"
#include "tokenizer/unicode.h"

namespace sq::eval {

namespace {

constexpr double kLn2 = 0.69314718055994530942;

// Logit rows held at once: at most 2^24 floats (64 MiB) per model, and never fewer than one row.
// Longer windows run in several batches; the kernels give the same logits either way.
int32_t max_rows(const Model& model, int32_t window) {
  const int64_t by_memory = (int64_t{1} << 24) / std::max<int64_t>(model.config.n_vocab, 1);
  return static_cast<int32_t>(std::clamp<int64_t>(by_memory, 1, window));
}

// log(sum(exp(row))) over a row of logits, in double, in index order.
double log_sum_exp(const float* row, int32_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (int32_t i = 0; i < n; ++i) m = std::max(m, static_cast<double>(row[i]));
  double s = 0;
  for (int32_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(row[i]) - m);
  return m + std::log(s);
}

int32_t argmax(const float* row, int32_t n) {
  int32_t best = 0;
  for (int32_t i = 1; i < n; ++i) {
    if (row[i] > row[best]) best = i;
  }
  return best;
}

// Runs one window's positions through a model in batches, keeping logits only where asked.
class WindowRunner {
 public:
  WindowRunner(const Model& model, const WindowPlan& plan, ops::KvType kv_type, int32_t rows)
      : model_(&model),
        kv_(model.config, plan.window, kv_type),
        logits_(static_cast<size_t>(rows) * static_cast<size_t>(model.config.n_vocab)) {}

  void start() { kv_.clear(); }

  // Runs seq[pos0, pos0 + n) at positions pos0..; with `keep`, returns their logits [n, n_vocab].
  std::span<const float> run(std::span<const int32_t> seq, int32_t pos0, int32_t n, bool keep,
                             ThreadPool& pool) {
    model_->forward(seq.subspan(static_cast<size_t>(pos0), static_cast<size_t>(n)), pos0, kv_, pool,
                    logits_, keep);
    return {logits_.data(), keep ? static_cast<size_t>(n) * model_->config.n_vocab : 0};
  }

 private:
  const Model* model_;
  KvCache kv_;
  std::vector<float> logits_;
};

// The model positions of one window and the rows among them whose logits predict a scored token.
struct WindowSeq {
  std::vector<int32_t> seq;  // BOS (when planned), then the window's tokens
  int32_t row_lo = 0;        // rows [row_lo, row_hi) predict scored tokens
  int32_t row_hi = 0;
  bool uniform_first = false;  // the window scores token 0 without any context (no BOS)
  uint64_t begin = 0;          // text index of seq[bos ? 1 : 0]
  bool bos = false;

  // The text index of the token at seq[j] (j > 0, or j >= 0 without BOS).
  size_t text_index(int32_t j) const {
    return static_cast<size_t>(begin + static_cast<uint64_t>(j - (bos ? 1 : 0)));
  }
};

WindowSeq build_window(std::span<const int32_t> tokens, const Window& w, const WindowPlan& plan,
                       int32_t bos_id) {
  WindowSeq ws;
  const int32_t b = plan.bos ? 1 : 0;
  if (plan.bos) ws.seq.push_back(bos_id);
  ws.seq.insert(ws.seq.end(), tokens.begin() + static_cast<ptrdiff_t>(w.begin),
                tokens.begin() + static_cast<ptrdiff_t>(w.end));
  // Token t sits at seq index t - begin + b and is predicted by the row before it.
  const auto first = static_cast<int32_t>(w.score_from - w.begin) + b;
  ws.uniform_first = first == 0;
  ws.begin = w.begin;
  ws.bos = plan.bos;
  ws.row_lo = std::max(first, 1) - 1;
  ws.row_hi = static_cast<int32_t>(ws.seq.size()) - 1;
  return ws;
}

// Runs fn(window, state, pool) for every window. With at least as many windows as threads, the
// windows are split over the threads, each with its own model state (make_state()) and a pool of
// one: small models gain most, since a forward pass of a few hundred tokens is too little work to
// share. Otherwise one window at a time, the whole pool inside each forward pass. The figures do
// not depend on which: the kernels are batch- and thread-invariant, and callers store results by
// text position and add them up in text order.
template <typename MakeState, typename Fn>
void for_each_window(size_t n_windows, ThreadPool& pool, MakeState make_state, Fn fn) {
  if (pool.size() > 1 && n_windows >= static_cast<size_t>(pool.size())) {
    pool.parallel_for(static_cast<int64_t>(n_windows), [&](int64_t a, int64_t b) {
      ThreadPool inner(1);
      auto state = make_state();
      for (int64_t i = a; i < b; ++i) fn(static_cast<size_t>(i), *state, inner);
    });
  } else {
    auto state = make_state();
    for (size_t i = 0; i < n_windows; ++i) fn(i, *state, pool);
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double ratio(double a, uint64_t b) {
  return b == 0 ? std::numeric_limits<double>::quiet_NaN() : a / static_cast<double>(b);
}

// Tokenizes the text as a whole and notes whether it decodes back to the same bytes.
std::vector<int32_t> tokenize(const Tokenizer& tok, std::string_view text, bool* round_trips) {
  std::vector<int32_t> ids = tok.encode(text, /*add_bos=*/false, /*parse_special=*/false);
  *round_trips = tok.decode(ids) == text;
  return ids;
}

}  // namespace

WindowPlan plan_windows(const Engine& engine, const ScoreOptions& options) {
  const Model& model = engine.model();
  const Tokenizer& tok = engine.require_tokenizer();
  WindowPlan p;
  p.bos = tok.add_bos_default() && tok.bos() >= 0;
  if (options.window < 0) {
    fail<InvalidArgument>("-c is {}; expected a positive window length", options.window);
  }
  if (options.stride < 0) {
    fail<InvalidArgument>("--stride is {}; expected a positive stride", options.stride);
  }
  p.window = options.window > 0 ? options.window : default_context(model);
  const int32_t min_window = p.bos ? 2 : 1;
  if (p.window < min_window) {
    fail<InvalidArgument>("-c is {}; a window needs at least {} positions ({}one token of text)",
                          p.window, min_window, p.bos ? "BOS and " : "");
  }
  if (model.config.n_ctx_train > 0 && p.window > model.config.n_ctx_train) {
    fail<InvalidArgument>("-c is {}, longer than the {} positions {} was trained for", p.window,
                          model.config.n_ctx_train, model.name);
  }
  p.stride = options.stride > 0 ? options.stride : std::max(1, p.window / 2);
  if (p.stride > p.text_positions()) {
    fail<InvalidArgument>("--stride is {}; expected 1 to {} (the window of {} positions{} holds {} "
                          "tokens of text, and a larger stride would skip tokens)",
                          p.stride, p.text_positions(), p.window, p.bos ? " with BOS" : "",
                          p.text_positions());
  }
  return p;
}

std::vector<Window> window_list(uint64_t n_tokens, const WindowPlan& plan) {
  std::vector<Window> out;
  const auto span = static_cast<uint64_t>(plan.text_positions());
  const auto stride = static_cast<uint64_t>(plan.stride);
  uint64_t scored = 0;
  for (uint64_t begin = 0; scored < n_tokens; begin += stride) {
    Window w;
    w.begin = begin;
    w.end = std::min(begin + span, n_tokens);
    w.score_from = scored;
    scored = w.end;
    out.push_back(w);
  }
  return out;
}

TextCounts count_text(std::string_view text) {
  TextCounts c;
  c.bytes = text.size();
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t len = utf8::sequence_length(text, pos);
    if (len == 0) {
      ++c.invalid_bytes;
      ++pos;
    } else {
      pos += len;
    }
    ++c.chars;
  }
  return c;
}

double ScoreResult::bits_per_byte() const { return ratio(bits, text.bytes); }
double ScoreResult::bits_per_char() const { return ratio(bits, text.chars); }
double ScoreResult::bits_per_token() const { return ratio(bits, n_tokens); }
double ScoreResult::perplexity() const { return std::exp2(bits_per_token()); }
double ScoreResult::tokens_per_second() const {
  if (n_tokens == 0 || seconds <= 0) return std::numeric_limits<double>::quiet_NaN();
  return static_cast<double>(n_tokens) / seconds;
}

ScoreResult score_text(const Engine& engine, std::string_view text, const ScoreOptions& options,
                       ThreadPool& pool) {
  const Model& model = engine.model();
  const Tokenizer& tok = engine.require_tokenizer();
  ScoreResult r;
  r.plan = plan_windows(engine, options);
  r.text = count_text(text);
  r.model_name = model.name;
  const std::vector<int32_t> tokens = tokenize(tok, text, &r.round_trips);
  r.n_tokens = tokens.size();
  const std::vector<Window> windows = window_list(tokens.size(), r.plan);
  r.n_windows = windows.size();

  const auto t0 = std::chrono::steady_clock::now();
  const int32_t n_vocab = model.config.n_vocab;
  const int32_t rows = max_rows(model, r.plan.window);
  std::vector<double> token_bits(tokens.size(), 0.0);  // by text position
  struct State {
    WindowRunner runner;
  };
  auto make_state = [&] {
    return std::make_unique<State>(State{WindowRunner(model, r.plan, options.kv_type, rows)});
  };
  for_each_window(windows.size(), pool, make_state, [&](size_t wi, State& st, ThreadPool& inner) {
    const Window& w = windows[wi];
    const WindowSeq ws = build_window(tokens, w, r.plan, tok.bos());
    if (ws.uniform_first) token_bits[ws.text_index(0)] = std::log2(static_cast<double>(n_vocab));
    st.runner.start();
    const auto len = static_cast<int32_t>(ws.seq.size());
    for (int32_t pos0 = 0; pos0 < len; pos0 += rows) {
      const int32_t n = std::min(rows, len - pos0);
      const int32_t lo = std::max(ws.row_lo, pos0), hi = std::min(ws.row_hi, pos0 + n);
      std::span<const float> logits = st.runner.run(ws.seq, pos0, n, lo < hi, inner);
      if (lo >= hi) continue;
      inner.parallel_for(hi - lo, [&](int64_t a, int64_t b) {
        for (int64_t i = a; i < b; ++i) {
          const auto row = static_cast<int32_t>(lo + i);
          const float* l = logits.data() + static_cast<size_t>(row - pos0) * n_vocab;
          const int32_t target = ws.seq[static_cast<size_t>(row) + 1];
          const double logp = static_cast<double>(l[target]) - log_sum_exp(l, n_vocab);
          token_bits[ws.text_index(row + 1)] = -logp / kLn2;
        }
      });
    }
  });
  for (const Window& w : windows) r.n_evaluated += (w.end - w.begin) + (r.plan.bos ? 1 : 0);
  // Summed in text order, so the total does not depend on how the work was split.
  for (double b : token_bits) r.bits += b;
  r.seconds = seconds_since(t0);
  return r;
}

KlStats summarize_kl(std::vector<double> kl, uint64_t top1_agree) {
  KlStats s;
  s.n_positions = kl.size();
  if (kl.empty()) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    s.mean = s.p50 = s.p90 = s.p99 = s.max = s.top1_agreement = nan;
    return s;
  }
  double sum = 0;
  for (double v : kl) sum += v;
  s.mean = sum / static_cast<double>(kl.size());
  std::sort(kl.begin(), kl.end());
  // Nearest rank: the smallest value with at least p % of the values at or below it.
  auto rank = [&](double p) {
    const auto n = static_cast<double>(kl.size());
    const auto k = static_cast<size_t>(std::max(1.0, std::ceil(p / 100.0 * n)));
    return kl[std::min(k, kl.size()) - 1];
  };
  s.p50 = rank(50);
  s.p90 = rank(90);
  s.p99 = rank(99);
  s.max = kl.back();
  s.top1_agreement = static_cast<double>(top1_agree) / static_cast<double>(kl.size());
  return s;
}

void check_same_tokenizer(const Engine& a, const Engine& b) {
  const Tokenizer& ta = a.require_tokenizer();
  const Tokenizer& tb = b.require_tokenizer();
  const std::string& na = a.model().name;
  const std::string& nb = b.model().name;
  auto refuse = [&](const std::string& what) {
    fail<InvalidArgument>("the two models' tokenizers differ ({}): {} and {} cannot be compared "
                          "position by position",
                          what, na, nb);
  };
  if (ta.model() != tb.model()) {
    refuse(fmt::format("{} vs {}", ta.kind(), tb.kind()));
  }
  if (ta.n_vocab() != tb.n_vocab()) {
    refuse(fmt::format("{} vs {} tokens", ta.n_vocab(), tb.n_vocab()));
  }
  if (a.model().config.n_vocab != b.model().config.n_vocab) {
    refuse(fmt::format("{} vs {} logits", a.model().config.n_vocab, b.model().config.n_vocab));
  }
  for (int32_t id = 0; id < ta.n_vocab(); ++id) {
    if (ta.token_text(id) != tb.token_text(id) || ta.token_type(id) != tb.token_type(id)) {
      refuse(fmt::format("token {} is '{}' vs '{}'", id, ta.token_text(id), tb.token_text(id)));
    }
  }
  if (ta.bos() != tb.bos() || ta.add_bos_default() != tb.add_bos_default() ||
      ta.add_space_prefix() != tb.add_space_prefix() || ta.pre() != tb.pre()) {
    refuse("BOS, space prefix or pre-tokenizer");
  }
}

KlResult compare_models(const Engine& base, const Engine& other, std::string_view text,
                        const ScoreOptions& options, ThreadPool& pool) {
  check_same_tokenizer(base, other);
  const Tokenizer& tok = base.require_tokenizer();
  KlResult r;
  const WindowPlan plan = plan_windows(base, options);
  {
    // B must take the same windows.
    ScoreOptions o = options;
    o.window = plan.window;
    o.stride = plan.stride;
    plan_windows(other, o);
  }
  const std::vector<int32_t> tokens = tokenize(tok, text, &r.base.round_trips);
  for (ScoreResult* s : {&r.base, &r.other}) {
    s->plan = plan;
    s->text = count_text(text);
    s->round_trips = r.base.round_trips;
    s->n_tokens = tokens.size();
  }
  r.base.model_name = base.model().name;
  r.other.model_name = other.model().name;
  const std::vector<Window> windows = window_list(tokens.size(), plan);

  const auto t0 = std::chrono::steady_clock::now();
  const int32_t n_vocab = base.model().config.n_vocab;
  const int32_t rows = max_rows(base.model(), plan.window);
  // By text position; without BOS token 0 has no position that predicts it.
  std::vector<double> kl(tokens.size(), 0.0), bits_a(tokens.size(), 0.0), bits_b(tokens.size(), 0.0);
  std::vector<uint8_t> agree(tokens.size(), 0);
  struct State {
    WindowRunner a, b;
  };
  auto make_state = [&] {
    return std::make_unique<State>(State{WindowRunner(base.model(), plan, options.kv_type, rows),
                                         WindowRunner(other.model(), plan, options.kv_type, rows)});
  };
  // Tokens no position predicts (without BOS: the first window's first, or every one at -c 1).
  std::vector<uint8_t> uniform(tokens.size(), 0);
  for_each_window(windows.size(), pool, make_state, [&](size_t wi, State& st, ThreadPool& inner) {
    const WindowSeq ws = build_window(tokens, windows[wi], plan, tok.bos());
    if (ws.uniform_first) uniform[ws.text_index(0)] = 1;
    st.a.start();
    st.b.start();
    const auto len = static_cast<int32_t>(ws.seq.size());
    for (int32_t pos0 = 0; pos0 < len; pos0 += rows) {
      const int32_t n = std::min(rows, len - pos0);
      const int32_t lo = std::max(ws.row_lo, pos0), hi = std::min(ws.row_hi, pos0 + n);
      std::span<const float> la = st.a.run(ws.seq, pos0, n, lo < hi, inner);
      std::span<const float> lb = st.b.run(ws.seq, pos0, n, lo < hi, inner);
      if (lo >= hi) continue;
      inner.parallel_for(hi - lo, [&](int64_t a, int64_t b) {
        for (int64_t i = a; i < b; ++i) {
          const auto row = static_cast<int32_t>(lo + i);
          const size_t off = static_cast<size_t>(row - pos0) * n_vocab;
          const float* pa = la.data() + off;
          const float* pb = lb.data() + off;
          const double za = log_sum_exp(pa, n_vocab), zb = log_sum_exp(pb, n_vocab);
          double d = 0;
          for (int32_t v = 0; v < n_vocab; ++v) {
            const double lpa = static_cast<double>(pa[v]) - za;
            const double lpb = static_cast<double>(pb[v]) - zb;
            d += std::exp(lpa) * (lpa - lpb);
          }
          const int32_t target = ws.seq[static_cast<size_t>(row) + 1];
          const size_t t = ws.text_index(row + 1);
          // KL is never negative; a rounding residue below zero is reported as 0.
          kl[t] = std::max(d, 0.0);
          bits_a[t] = -(static_cast<double>(pa[target]) - za) / kLn2;
          bits_b[t] = -(static_cast<double>(pb[target]) - zb) / kLn2;
          agree[t] = argmax(pa, n_vocab) == argmax(pb, n_vocab) ? 1 : 0;
        }
      });
    }
  });
  const double uniform_bits = std::log2(static_cast<double>(n_vocab));
  for (size_t t = 0; t < tokens.size(); ++t) {
    if (uniform[t]) {
      r.base.bits += uniform_bits;
      r.other.bits += uniform_bits;
      continue;
    }
    r.kl.push_back(kl[t]);
    r.base.bits += bits_a[t];
    r.other.bits += bits_b[t];
    r.top1_agree += agree[t];
  }
  for (const Window& w : windows) {
    r.base.n_evaluated += (w.end - w.begin) + (plan.bos ? 1 : 0);
  }
  r.other.n_evaluated = r.base.n_evaluated;
  r.base.seconds = r.other.seconds = seconds_since(t0);
  r.base.n_windows = r.other.n_windows = windows.size();
  r.stats = summarize_kl(r.kl, r.top1_agree);
  return r;
}

}  // namespace sq::eval
