// The continuous-batching loop (scheduler.h). One thread owns the paged cache and the running
// sequences; submit() and the handles only touch the waiting queue and the event queues, under
// locks. A step: sweep cancelled and expired requests, admit waiting ones while there is room,
// build one batch (a token for every generating sequence, then prompt chunks up to
// prefill_chunk tokens), run it, sample, and hand out events. See docs/scheduler.md.
#include "serve/scheduler.h"

#include <time.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <limits>
#include <mutex>
#include <numeric>
#include <thread>

#include "base/thread_pool.h"
#include "engine/engine.h"
#include "engine/stop.h"
#include "model/paged_kv.h"
#include "tokenizer/tokenizer.h"

namespace sq::serve {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// CPU time of the whole process (every thread of the pool, and anything else running): what a
// step really cost the machine.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// The lock and wake-up shared by the loop and the handles (a handle may outlive the scheduler).
struct Wake {
  std::mutex mu;
  std::condition_variable cv;
};

class Request final : public RequestHandle {
 public:
  bool next(Event& event, std::chrono::milliseconds wait) override {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, wait, [&] { return !events_.empty(); })) return false;
    event = std::move(events_.front());
    events_.pop_front();
    return true;
  }

  void cancel() override {
    cancelled.store(true);
    std::lock_guard lock(wake->mu);
    wake->cv.notify_all();
  }

  void push(Event event) {
    {
      std::lock_guard lock(mu_);
      events_.push_back(std::move(event));
    }
    cv_.notify_all();
  }

  // Set by submit(), read-only afterwards.
  GenerateRequest request;
  bool embedding = false;
  Clock::time_point submitted;
  std::shared_ptr<Wake> wake;
  std::atomic<bool> cancelled{false};

  // The loop's own.
  bool started = false;
  bool ended = false;  // Done or Error sent (or about to be)
  bool has_first_token = false;
  Clock::time_point first_step, first_token;
  int32_t open_choices = 0;
  Usage usage;
  double cpu_seconds = 0;
  int64_t step_tokens = 0;      // tokens of this request in the current step
  std::vector<double> pooled;   // embeddings: sum of hidden states
  bool cancelled_seen = false;  // counted in requests_cancelled

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
};

enum class SeqState {
  Prefill,   // prompt (or embedding input) still to run
  ForkWait,  // choice > 0, waiting for choice 0's prompt
  Decode,    // the last token of `tokens` is still to run
};

struct Seq {
  std::shared_ptr<Request> req;
  int32_t choice = 0;
  SeqState state = SeqState::Prefill;
  KvSequence kv;
  std::vector<int32_t> tokens;  // the prompt, then the generated tokens that were kept
  int32_t n_prompt = 0;
  int32_t n_generated = 0;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<StreamDecoder> decoder;
  std::unique_ptr<StopMatcher> stops;
  std::unique_ptr<TokenConstraint> constraint;
  std::vector<uint64_t> prompt_names;  // chained names of the prompt's full blocks (prefix cache)
  std::string text;                   // released text not sent yet
  std::vector<SampledToken> pending;  // tokens not sent yet
  bool finished = false;
};

}  // namespace

struct Scheduler::Impl {
  Impl(const Engine& e, const SchedulerOptions& o);

  void loop();
  void step();
  enum class Admission { Admitted, NoRoom, Wait };
  Admission admit(const std::shared_ptr<Request>& req);
  void sample(Seq& seq, const float* logits);
  void finish_choice(Seq& seq, const std::string& reason);
  void cancel_request(const std::shared_ptr<Request>& req);
  void fail_request(const std::shared_ptr<Request>& req, const std::string& message);
  void finish_embedding(Seq& seq);
  void send_done(Request& req, Clock::time_point now);
  void check_tokens(std::span<const int32_t> tokens) const;
  // Puts a request on the waiting queue, or throws ShuttingDown / QueueFull.
  std::shared_ptr<Request> enqueue(std::shared_ptr<Request> req);
  int32_t running_count() const { return static_cast<int32_t>(running.size()); }

  const Engine& engine;
  const Model& model;
  const Tokenizer* tok;
  SchedulerOptions options;
  int32_t n_ctx = 0;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<PagedKvCache> kv;

  std::shared_ptr<Wake> wake = std::make_shared<Wake>();
  // Under wake->mu.
  std::deque<std::shared_ptr<Request>> waiting;
  bool accepting = true;
  bool stopping = false;
  bool cancel_all = false;
  SchedulerMetrics metrics;

  // The loop's own.
  std::vector<std::unique_ptr<Seq>> running;
  std::vector<std::shared_ptr<Request>> done;  // Done events to send at the end of the step
  std::vector<float> work;                      // [n_vocab] logits being sampled from
  std::thread thread;
};

Scheduler::Impl::Impl(const Engine& e, const SchedulerOptions& o)
    : engine(e), model(e.model()), tok(e.tokenizer()), options(o) {
  const ModelConfig& c = model.config;
  if (o.n_ctx < 0 || o.n_ctx > c.n_ctx_train) {
    fail<InvalidArgument>("context {} does not fit the model: expected 0 (the model's, capped at "
                          "4096) or 1 to {}",
                          o.n_ctx, c.n_ctx_train);
  }
  n_ctx = o.n_ctx > 0 ? o.n_ctx : default_context(model);
  if (o.parallel < 1 || o.parallel > 4096) {
    fail<InvalidArgument>("parallel is {}; expected 1 to 4096 sequences", o.parallel);
  }
  if (o.queue_size < 0) {
    fail<InvalidArgument>("queue size is {}; expected 0 or more", o.queue_size);
  }
  if (o.n_threads < 0) {
    fail<InvalidArgument>("{} threads; expected 0 (physical cores) or more", o.n_threads);
  }
  if (o.block_size < 1 || o.block_size > 4096) {
    fail<InvalidArgument>("KV block size is {}; expected 1 to 4096 positions", o.block_size);
  }
  if (o.prefill_chunk < 1) {
    fail<InvalidArgument>("prefill chunk is {}; expected at least 1 token", o.prefill_chunk);
  }
  if (!(o.price_per_cpu_hour >= 0) || !std::isfinite(o.price_per_cpu_hour)) {
    fail<InvalidArgument>("price per CPU-hour is {}; expected a finite number >= 0",
                          o.price_per_cpu_hour);
  }
  const int64_t per_seq = (static_cast<int64_t>(n_ctx) + o.block_size - 1) / o.block_size;
  int64_t blocks = o.kv_blocks;
  if (blocks == 0) {
    // Every running sequence can reach the full context, and one more context's worth keeps
    // prefixes cached.
    blocks = per_seq * (o.parallel + 1);
  } else if (blocks < per_seq) {
    fail<InvalidArgument>("{} KV blocks of {} positions cannot hold one sequence of {} positions; "
                          "expected at least {}",
                          blocks, o.block_size, n_ctx, per_seq);
  }
  if (blocks > std::numeric_limits<int32_t>::max()) {
    fail<InvalidArgument>("{} KV blocks are too many; use larger blocks or a smaller context", blocks);
  }
  options.n_ctx = n_ctx;
  options.kv_blocks = static_cast<int32_t>(blocks);
  kv = std::make_unique<PagedKvCache>(c, static_cast<int32_t>(blocks), o.block_size, o.kv_type);
  pool = std::make_unique<ThreadPool>(o.n_threads > 0 ? o.n_threads : default_thread_count());
  metrics.kv_blocks_total = static_cast<int32_t>(blocks);
  work.resize(static_cast<size_t>(c.n_vocab));
  thread = std::thread([this] { loop(); });
}

void Scheduler::Impl::check_tokens(std::span<const int32_t> tokens) const {
  for (int32_t id : tokens) {
    if (id < 0 || id >= model.config.n_vocab) {
      fail<InvalidArgument>("token id {} is out of range: the vocabulary has {} tokens", id,
                            model.config.n_vocab);
    }
  }
}

void Scheduler::Impl::loop() {
  for (;;) {
    {
      std::unique_lock lock(wake->mu);
      if (waiting.empty() && running.empty()) {
        if (stopping) return;
        wake->cv.wait_for(lock, std::chrono::milliseconds(200));
        if (waiting.empty() && running.empty()) continue;
      }
    }
    try {
      step();
    } catch (...) {
      // A failure outside any one request's handling (the forward pass): every request in the
      // batch gets it; the loop goes on.
      std::string what = "internal error";
      try {
        throw;
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      std::vector<std::shared_ptr<Request>> reqs;
      for (auto& s : running) {
        if (std::find(reqs.begin(), reqs.end(), s->req) == reqs.end()) reqs.push_back(s->req);
      }
      for (auto& r : reqs) fail_request(r, what);
      std::erase_if(running, [](const std::unique_ptr<Seq>& s) { return s->finished; });
      // Requests that ended earlier in the step (cancelled ones) still get their Done.
      for (auto& r : done) send_done(*r, Clock::now());
      done.clear();
    }
  }
}

// Places a waiting request into the batch: its sequences, their samplers, and the blocks of the
// whole prompt (reused from the prefix cache where they can be). NoRoom when the pool cannot hold
// the prompt now; Wait when a running sequence is computing the next block of this prompt right
// now, so that a prefix shared by requests arriving together (a system prompt) is computed once:
// the request is admitted once that block is published.
Scheduler::Impl::Admission Scheduler::Impl::admit(const std::shared_ptr<Request>& req) {
  const GenerateRequest& g = req->request;
  auto first = std::make_unique<Seq>();
  first->req = req;
  first->tokens = g.prompt;
  first->n_prompt = static_cast<int32_t>(g.prompt.size());
  int32_t cached = 0;
  if (!req->embedding) {
    // At least the last prompt token is run: its logits start the generation.
    const int32_t limit = first->n_prompt - 1;
    const int32_t bs = kv->block_size();
    uint64_t name = 0;
    for (int32_t at = 0; at + bs <= limit; at += bs) {
      name = PagedKvCache::chain_hash(
          name, std::span<const int32_t>(g.prompt).subspan(static_cast<size_t>(at), static_cast<size_t>(bs)));
      first->prompt_names.push_back(name);
    }
    cached = kv->attach_prefix(first->kv, g.prompt, limit);
    const auto next = static_cast<size_t>(cached / bs);
    if (next < first->prompt_names.size()) {
      for (const auto& s : running) {
        if (s->state == SeqState::Prefill && !s->finished && s->prompt_names.size() > next &&
            s->prompt_names[next] == first->prompt_names[next] &&
            s->kv.n_named <= static_cast<int32_t>(next)) {
          kv->free(first->kv);
          return Admission::Wait;
        }
      }
    }
  }
  if (!kv->reserve(first->kv, first->n_prompt)) {
    kv->free(first->kv);
    return Admission::NoRoom;
  }
  req->usage.cached_tokens = cached;
  {
    std::lock_guard lock(wake->mu);
    metrics.prompt_tokens_total += first->n_prompt;
    metrics.cached_prompt_tokens_total += cached;
  }
  req->open_choices = req->embedding ? 1 : g.n;
  if (req->embedding) {
    req->pooled.assign(static_cast<size_t>(model.config.n_embd), 0.0);
    running.push_back(std::move(first));
    return Admission::Admitted;
  }
  // Every choice is set up before any joins the batch: a constraint factory that throws leaves no
  // sequence behind, and the prompt's blocks go back.
  std::vector<std::unique_ptr<Seq>> made;
  made.push_back(std::move(first));
  try {
    for (int32_t i = 0; i < g.n; ++i) {
      if (i > 0) {
        auto s = std::make_unique<Seq>();
        s->req = req;
        s->choice = i;
        s->state = SeqState::ForkWait;
        s->tokens = g.prompt;
        s->n_prompt = static_cast<int32_t>(g.prompt.size());
        made.push_back(std::move(s));
      }
      Seq& s = *made.back();
      SamplingParams p = g.sampling;
      p.seed = g.sampling.seed + static_cast<uint64_t>(i);
      s.sampler = std::make_unique<Sampler>(p, model.config.n_vocab);
      if (tok != nullptr) s.decoder = std::make_unique<StreamDecoder>(*tok);
      s.stops = std::make_unique<StopMatcher>(g.stop);
      if (g.make_constraint) s.constraint = g.make_constraint();
    }
  } catch (...) {
    kv->free(made.front()->kv);
    throw;
  }
  for (auto& s : made) running.push_back(std::move(s));
  return Admission::Admitted;
}

void Scheduler::Impl::send_done(Request& req, Clock::time_point now) {
  if (req.ended) return;
  req.ended = true;
  Event e;
  e.kind = Event::Kind::Done;
  e.usage = req.usage;
  Cost& c = e.cost;
  c.total_seconds = seconds_between(req.submitted, now);
  c.queue_seconds = req.started ? seconds_between(req.submitted, req.first_step) : c.total_seconds;
  if (req.has_first_token) {
    c.ttft_seconds = seconds_between(req.submitted, req.first_token);
    const double gen = seconds_between(req.first_token, now);
    if (req.usage.completion_tokens > 1 && gen > 0) {
      c.generation_tps = (req.usage.completion_tokens - 1) / gen;
    }
  }
  c.cpu_seconds = req.cpu_seconds;
  c.price = req.cpu_seconds / 3600.0 * options.price_per_cpu_hour;
  if (req.embedding && !req.cancelled_seen) {
    // Mean (or the one token the model's pooling names), then L2 normalisation; the sum ran in
    // double over the tokens.
    std::vector<float>& out = e.embedding;
    out.resize(req.pooled.size());
    const double n =
        model.config.pooling == Pooling::Mean ? std::max(1, req.usage.prompt_tokens) : 1;
    double norm = 0;
    for (double v : req.pooled) norm += (v / n) * (v / n);
    norm = std::sqrt(norm);
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = static_cast<float>(norm > 0 ? (req.pooled[i] / n) / norm : 0.0);
    }
  }
  req.push(std::move(e));
}

void Scheduler::Impl::finish_choice(Seq& seq, const std::string& reason_in) {
  if (seq.finished) return;
  seq.finished = true;
  Request& req = *seq.req;
  std::string reason = reason_in;
  if (reason != "cancelled" && !req.embedding) {
    if (seq.decoder && !seq.stops->stopped()) {
      // Bytes of a character left incomplete, and text held back for a stop string that never
      // completed, are released now.
      auto r = seq.stops->push(seq.decoder->flush());
      seq.text += r.emit;
      if (r.stopped) {
        reason = "stop";
      } else {
        seq.text += seq.stops->finish();
      }
    }
    if (!seq.text.empty() || !seq.pending.empty()) {
      Event d;
      d.kind = Event::Kind::Delta;
      d.choice = seq.choice;
      d.text = std::move(seq.text);
      d.tokens = std::move(seq.pending);
      req.push(std::move(d));
    }
  }
  seq.text.clear();
  seq.pending.clear();
  kv->free(seq.kv);
  // Embeddings have no choices to finish, except to say that they were cancelled.
  if (!req.ended && (!req.embedding || reason == "cancelled")) {
    Event f;
    f.kind = Event::Kind::Finished;
    f.choice = seq.choice;
    f.finish_reason = reason;
    req.push(std::move(f));
  }
  if (--req.open_choices == 0 && !req.ended) done.push_back(seq.req);
}

void Scheduler::Impl::cancel_request(const std::shared_ptr<Request>& req) {
  if (!req->cancelled_seen) {
    req->cancelled_seen = true;
    std::lock_guard lock(wake->mu);
    ++metrics.requests_cancelled;
  }
  bool any = false;
  for (auto& s : running) {
    if (s->req == req && !s->finished) {
      any = true;
      finish_choice(*s, "cancelled");
    }
  }
  if (!any && !req->ended) {
    // Still waiting: no sequence was made.
    const int32_t n = req->embedding ? 1 : req->request.n;
    for (int32_t i = 0; i < n; ++i) {
      Event f;
      f.kind = Event::Kind::Finished;
      f.choice = i;
      f.finish_reason = "cancelled";
      req->push(std::move(f));
    }
    done.push_back(req);
  }
}

void Scheduler::Impl::fail_request(const std::shared_ptr<Request>& req, const std::string& message) {
  for (auto& s : running) {
    if (s->req == req && !s->finished) {
      s->finished = true;
      kv->free(s->kv);
    }
  }
  if (req->ended) return;
  req->ended = true;
  Event e;
  e.kind = Event::Kind::Error;
  e.message = message;
  req->push(std::move(e));
}

void Scheduler::Impl::sample(Seq& seq, const float* logits) {
  Request& req = *seq.req;
  const GenerateRequest& g = req.request;
  const int32_t V = model.config.n_vocab;
  work.assign(logits, logits + V);
  if (seq.constraint) {
    seq.constraint->apply(work);
    if (!seq.constraint->complete() && tok != nullptr) {
      for (int32_t id : tok->eog_ids()) work[static_cast<size_t>(id)] = -INFINITY;
    }
  }
  const int32_t token = seq.sampler->sample(work);
  // The history the penalties count is the completion alone, as OpenAI counts presence and
  // frequency (the prompt is never accepted).
  seq.sampler->accept(token);
  if (seq.constraint) seq.constraint->accept(token);
  ++seq.n_generated;
  ++req.usage.completion_tokens;
  {
    std::lock_guard lock(wake->mu);
    ++metrics.generated_tokens_total;
  }
  if (!req.has_first_token) {
    req.has_first_token = true;
    req.first_token = Clock::now();
  }

  SampledToken st;
  st.token = token;
  if (tok != nullptr) st.bytes = tok->token_bytes(token);
  if (g.logprobs >= 0) {
    // Log-softmax of the model's own logits, before bias, penalties, truncation or temperature.
    double mx = -INFINITY;
    for (int32_t i = 0; i < V; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
    double sum = 0;
    for (int32_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
    const double lse = mx + std::log(sum);
    st.logprob = static_cast<float>(logits[token] - lse);
    const int32_t k = std::min(g.logprobs, V);
    std::vector<int32_t> ids(static_cast<size_t>(V));
    std::iota(ids.begin(), ids.end(), 0);
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int32_t i = 0; i < k; ++i) {
      const int32_t id = ids[static_cast<size_t>(i)];
      st.top.push_back({id, static_cast<float>(logits[id] - lse)});
    }
  }

  if (g.stop_at_eog && tok != nullptr && tok->is_eog(token)) {
    finish_choice(seq, "stop");
    return;
  }
  seq.tokens.push_back(token);
  seq.pending.push_back(std::move(st));
  if (seq.decoder) {
    auto r = seq.stops->push(seq.decoder->push(token));
    seq.text += r.emit;
    if (r.stopped) {
      finish_choice(seq, "stop");
      return;
    }
  }
  if (seq.constraint && seq.constraint->finished()) {
    finish_choice(seq, "stop");
    return;
  }
  if ((g.max_tokens >= 0 && seq.n_generated >= g.max_tokens) ||
      static_cast<int32_t>(seq.tokens.size()) >= n_ctx) {
    finish_choice(seq, "length");
    return;
  }
  if (!seq.text.empty()) {
    Event d;
    d.kind = Event::Kind::Delta;
    d.choice = seq.choice;
    d.text = std::move(seq.text);
    d.tokens = std::move(seq.pending);
    seq.text.clear();
    seq.pending.clear();
    req.push(std::move(d));
  }
}

void Scheduler::Impl::step() {
  const double cpu0 = process_cpu_seconds();
  const Clock::time_point now = Clock::now();

  // Requests that were cancelled or ran out of time leave before any work.
  std::vector<std::shared_ptr<Request>> to_cancel;
  {
    std::lock_guard lock(wake->mu);
    if (cancel_all) {
      for (auto& r : waiting) r->cancelled.store(true);
      for (auto& s : running) s->req->cancelled.store(true);
    }
    for (auto it = waiting.begin(); it != waiting.end();) {
      if ((*it)->cancelled.load() || now >= (*it)->request.deadline) {
        to_cancel.push_back(*it);
        it = waiting.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& s : running) {
    const auto& r = s->req;
    if (!s->finished && (r->cancelled.load() || now >= r->request.deadline) &&
        std::find(to_cancel.begin(), to_cancel.end(), r) == to_cancel.end()) {
      to_cancel.push_back(r);
    }
  }
  for (auto& r : to_cancel) cancel_request(r);
  std::erase_if(running, [](const std::unique_ptr<Seq>& s) { return s->finished; });

  // Admission, first come first served: a request that does not fit blocks those behind it, so
  // that a long prompt is not starved by short ones.
  for (;;) {
    std::shared_ptr<Request> req;
    {
      std::lock_guard lock(wake->mu);
      if (waiting.empty()) break;
      req = waiting.front();
      const int32_t need = req->embedding ? 1 : req->request.n;
      if (running_count() + need > options.parallel) break;
      waiting.pop_front();
    }
    Admission a = Admission::NoRoom;
    try {
      a = admit(req);
    } catch (const std::exception& e) {
      fail_request(req, e.what());
      continue;
    }
    if (a != Admission::Admitted) {
      if (a == Admission::NoRoom && running.empty()) {
        fail_request(req, "the KV cache cannot hold this prompt even with nothing else running");
        continue;
      }
      std::lock_guard lock(wake->mu);
      waiting.push_front(req);
      break;
    }
  }

  // The batch: one token of every generating sequence, then prompt chunks in admission order.
  std::vector<BatchSlice> batch;
  std::vector<Seq*> owners;
  for (auto& s : running) {
    if (s->state != SeqState::Decode || s->finished) continue;
    if (!kv->reserve(s->kv, s->kv.size + 1)) {
      // The pool is exhausted (kv_blocks set below what the running sequences can reach).
      finish_choice(*s, "length");
      continue;
    }
    BatchSlice b;
    b.tokens = std::span<const int32_t>(s->tokens).subspan(static_cast<size_t>(s->kv.size), 1);
    b.pos0 = s->kv.size;
    b.blocks = s->kv.blocks;
    b.logits = true;
    batch.push_back(b);
    owners.push_back(s.get());
  }
  int32_t budget = options.prefill_chunk;
  for (auto& s : running) {
    if (s->state != SeqState::Prefill || s->finished || budget == 0) continue;
    const int32_t m = std::min(budget, s->n_prompt - s->kv.size);
    if (m <= 0) continue;
    budget -= m;
    BatchSlice b;
    b.tokens = std::span<const int32_t>(s->tokens).subspan(static_cast<size_t>(s->kv.size),
                                                           static_cast<size_t>(m));
    b.pos0 = s->kv.size;
    b.blocks = s->kv.blocks;
    b.logits = !s->req->embedding && s->kv.size + m == s->n_prompt;
    b.hidden = s->req->embedding;
    batch.push_back(b);
    owners.push_back(s.get());
  }

  int64_t n_tokens = 0, n_logits = 0, n_hidden = 0;
  for (const BatchSlice& b : batch) {
    n_tokens += static_cast<int64_t>(b.tokens.size());
    n_logits += b.logits ? 1 : 0;
    n_hidden += b.hidden ? static_cast<int64_t>(b.tokens.size()) : 0;
  }
  const Clock::time_point t_step = Clock::now();
  if (!batch.empty()) {
    std::vector<float> logits(static_cast<size_t>(n_logits * model.config.n_vocab));
    std::vector<float> hidden(static_cast<size_t>(n_hidden * model.config.n_embd));
    model.forward_batch(batch, *kv, *pool, logits, hidden);

    int64_t logit_row = 0, hidden_row = 0;
    for (size_t i = 0; i < batch.size(); ++i) {
      Seq& s = *owners[i];
      const BatchSlice& b = batch[i];
      const auto len = static_cast<int32_t>(b.tokens.size());
      auto req = s.req;
      if (!req->started) {
        req->started = true;
        req->first_step = t_step;
      }
      req->step_tokens += len;
      const float* row = b.logits ? logits.data() + logit_row * model.config.n_vocab : nullptr;
      if (b.logits) ++logit_row;
      if (s.finished) {
        if (b.hidden) hidden_row += len;
        continue;
      }
      try {
        kv->advance(s.kv, s.tokens, b.pos0 + len);
        if (b.hidden) {
          const int64_t E = model.config.n_embd;
          for (int32_t t = 0; t < len; ++t) {
            const int32_t pos = b.pos0 + t;
            const Pooling pooling = model.config.pooling;
            if ((pooling == Pooling::Cls && pos != 0) ||
                (pooling == Pooling::Last && pos != s.n_prompt - 1)) {
              continue;
            }
            const float* h = hidden.data() + (hidden_row + t) * E;
            for (int64_t d = 0; d < E; ++d) req->pooled[static_cast<size_t>(d)] += h[d];
          }
          hidden_row += len;
          if (s.kv.size == s.n_prompt) finish_choice(s, "stop");
          continue;
        }
        if (row == nullptr) continue;
        if (s.state == SeqState::Prefill) {
          // The prompt is in: the other choices take its blocks (the partial last one copied) and
          // draw their first token from the same logits.
          s.state = SeqState::Decode;
          for (auto& o : running) {
            if (o->req != req || o->state != SeqState::ForkWait || o->finished) continue;
            if (!kv->fork(s.kv, o->kv)) {
              finish_choice(*o, "length");
              continue;
            }
            o->state = SeqState::Decode;
            sample(*o, row);
          }
        }
        sample(s, row);
      } catch (const std::exception& e) {
        fail_request(req, e.what());
      }
    }
  }
  // The requests of this step, before finished sequences (and `owners`' pointers) go.
  std::vector<std::shared_ptr<Request>> in_step;
  for (Seq* s : owners) {
    if (std::find(in_step.begin(), in_step.end(), s->req) == in_step.end()) in_step.push_back(s->req);
  }
  std::erase_if(running, [](const std::unique_ptr<Seq>& s) { return s->finished; });

  // The step's CPU time, shared in proportion to the tokens each request had in the batch.
  const double cpu = std::max(0.0, process_cpu_seconds() - cpu0);
  if (n_tokens > 0) {
    for (auto& r : in_step) {
      r->cpu_seconds += cpu * static_cast<double>(r->step_tokens) / static_cast<double>(n_tokens);
    }
  }
  for (auto& r : in_step) r->step_tokens = 0;

  const Clock::time_point end = Clock::now();
  {
    std::lock_guard lock(wake->mu);
    if (n_tokens > 0) {
      metrics.cpu_seconds_total += cpu;
      ++metrics.steps_total;
    }
    metrics.running = running_count();
    metrics.waiting = static_cast<int32_t>(waiting.size());
    metrics.kv_blocks_used = kv->n_used();
    metrics.kv_blocks_cached = kv->n_cached();
  }
  for (auto& r : done) send_done(*r, end);
  done.clear();
}

Scheduler::Scheduler(const Engine& engine, const SchedulerOptions& options)
    : impl_(std::make_unique<Impl>(engine, options)) {}

Scheduler::~Scheduler() { shutdown(false); }

std::shared_ptr<Request> Scheduler::Impl::enqueue(std::shared_ptr<Request> req) {
  req->wake = wake;
  req->submitted = Clock::now();
  {
    std::lock_guard lock(wake->mu);
    if (!accepting) throw ShuttingDown("the server is shutting down; no new requests are taken");
    if (static_cast<int32_t>(waiting.size()) >= options.queue_size) {
      ++metrics.requests_rejected;
      fail<QueueFull>("the queue is full ({} requests waiting); try again later", waiting.size());
    }
    ++metrics.requests_total;
    waiting.push_back(req);
  }
  wake->cv.notify_all();
  return req;
}

std::shared_ptr<RequestHandle> Scheduler::submit(GenerateRequest request) {
  Impl& m = *impl_;
  const int32_t n_prompt = static_cast<int32_t>(std::min<size_t>(request.prompt.size(), INT32_MAX));
  if (request.prompt.empty()) {
    fail<InvalidArgument>("the prompt is empty: nothing to start from");
  }
  if (n_prompt >= m.n_ctx) {
    fail<InvalidArgument>("the prompt has {} tokens, but the context holds {} positions and at least "
                          "one must be left to generate",
                          request.prompt.size(), m.n_ctx);
  }
  m.check_tokens(request.prompt);
  if (request.n < 1 || request.n > m.options.parallel) {
    fail<InvalidArgument>("n is {}; expected 1 to {} choices (the server's parallel sequences)",
                          request.n, m.options.parallel);
  }
  if (request.max_tokens == 0 || request.max_tokens < -1) {
    fail<InvalidArgument>("max_tokens is {}; expected at least 1 (or none: until the context is full)",
                          request.max_tokens);
  }
  if (request.logprobs < -1) {
    fail<InvalidArgument>("logprobs is {}; expected 0 or more alternatives", request.logprobs);
  }
  request.sampling.validate();
  for (const auto& [id, bias] : request.sampling.logit_bias) {
    if (id < 0 || id >= m.model.config.n_vocab) {
      fail<InvalidArgument>("logit_bias names token {}; the vocabulary has {} tokens", id,
                            m.model.config.n_vocab);
    }
  }
  auto req = std::make_shared<Request>();
  req->usage.prompt_tokens = n_prompt;
  req->request = std::move(request);
  return m.enqueue(std::move(req));
}

std::shared_ptr<RequestHandle> Scheduler::submit_embedding(std::vector<int32_t> tokens) {
  Impl& m = *impl_;
  if (tokens.empty()) fail<InvalidArgument>("the input is empty: nothing to embed");
  if (tokens.size() > static_cast<size_t>(m.n_ctx)) {
    fail<InvalidArgument>("the input has {} tokens; the context holds {}", tokens.size(), m.n_ctx);
  }
  m.check_tokens(tokens);
  auto req = std::make_shared<Request>();
  req->usage.prompt_tokens = static_cast<int32_t>(tokens.size());
  req->request.prompt = std::move(tokens);
  req->embedding = true;
  return m.enqueue(std::move(req));
}

void Scheduler::shutdown(bool finish) {
  Impl& m = *impl_;
  {
    std::lock_guard lock(m.wake->mu);
    m.accepting = false;
    if (!finish) m.cancel_all = true;
    m.stopping = true;
  }
  m.wake->cv.notify_all();
  if (m.thread.joinable() && m.thread.get_id() != std::this_thread::get_id()) m.thread.join();
}

SchedulerMetrics Scheduler::metrics() const {
  std::lock_guard lock(impl_->wake->mu);
  SchedulerMetrics out = impl_->metrics;
  out.waiting = static_cast<int32_t>(impl_->waiting.size());
  const ThreadPool::Stats pool = impl_->pool->stats();
  out.parallel_regions_total = pool.balanced_regions;
  out.parallel_regions_alone_total = pool.alone_regions;
  return out;
}

const SchedulerOptions& Scheduler::options() const { return impl_->options; }

int32_t Scheduler::n_ctx() const { return impl_->n_ctx; }

}  // namespace sq::serve
