// The engine under the server: many requests share one copy of the weights. Every step of the
// scheduler's loop runs one batched forward pass over the running sequences (one new token each)
// and over a slice of the waiting prompts (chunked, so that a long prompt does not stall the
// others); sequences join and leave the batch at every step. Keys and values live in a paged
// cache: fixed-size blocks allocated on demand, freed when a request ends, and shared between
// requests whose prompts begin with the same full blocks.
//
// Threading: submit() and the handles are thread-safe; the loop runs on its own thread and uses
// the thread pool for the forward pass. Events reach each request's handle through a queue that
// the HTTP worker drains.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "engine/constraint.h"
#include "engine/sampler.h"
#include "ops/ops.h"

namespace sq {
class Engine;
}

namespace sq::serve {

// The queue of waiting requests is full (HTTP 429).
class QueueFull : public Error {
 public:
  using Error::Error;
};

// submit() after shutdown() began (HTTP 503). A QueueFull, so that code written before it existed
// still turns it away.
class ShuttingDown : public QueueFull {
 public:
  using QueueFull::QueueFull;
};

struct SchedulerOptions {
  int32_t n_ctx = 0;          // per-sequence context; 0: the model's, capped at 4096
  int32_t parallel = 4;       // most sequences in the running batch
  int32_t queue_size = 64;    // most requests waiting; submit() beyond it throws QueueFull
  int32_t n_threads = 0;      // 0: physical cores
  int32_t block_size = 16;    // positions per KV block
  int32_t kv_blocks = 0;      // 0: enough for `parallel` sequences of n_ctx, plus the prefix cache
  int32_t prefill_chunk = 256;  // most prompt tokens processed in one step, over all sequences
  ops::KvType kv_type = ops::KvType::F16;
  double price_per_cpu_hour = 0.0;  // money per CPU-hour, for each request's cost
};

// A generation request, already tokenized. The scheduler owns detokenization, stop strings and
// sampling.
struct GenerateRequest {
  std::vector<int32_t> prompt;
  int32_t n = 1;               // choices; they share the prompt's blocks. Choice i seeds with seed + i
  int32_t max_tokens = -1;     // -1: until the context is full (finish_reason "length")
  SamplingParams sampling;
  std::vector<std::string> stop;
  bool stop_at_eog = true;
  int32_t logprobs = -1;       // -1: none; k >= 0: each token's logprob and its k best alternatives
  // Structured output: called once per choice; null for free text.
  std::function<std::unique_ptr<TokenConstraint>()> make_constraint;
  // The whole request, queueing included, must end by then; it is cancelled otherwise
  // (finish_reason "cancelled"). time_point::max(): no deadline.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;  // natural log of the probability under the model's distribution
};

struct SampledToken {
  int32_t token = 0;
  std::string bytes;        // the token's bytes (Tokenizer::token_bytes)
  float logprob = 0;        // filled when logprobs >= 0
  std::vector<TokenLogprob> top;  // best `logprobs` alternatives, most likely first
};

struct Usage {
  int32_t prompt_tokens = 0;      // counted once, whatever n is
  int32_t completion_tokens = 0;  // summed over choices
  int32_t cached_tokens = 0;      // prompt tokens found in the prefix cache
};

struct Cost {
  double queue_seconds = 0;       // from submit to the first step that worked on it
  double ttft_seconds = 0;        // from submit to the first generated token
  double total_seconds = 0;       // from submit to the end
  double generation_tps = 0;      // generated tokens per second after the first one
  double cpu_seconds = 0;         // its share of the CPU time of every step it took part in
  double price = 0;               // cpu_seconds / 3600 * price_per_cpu_hour
};

struct Event {
  enum class Kind {
    Delta,     // new text (and the tokens behind it) for one choice
    Finished,  // one choice ended: finish_reason is set
    Done,      // the whole request ended: usage and cost are set; nothing follows
    Error,     // the request failed: message is set; nothing follows
  };
  Kind kind = Kind::Delta;
  int32_t choice = 0;
  std::string text;                  // Delta: text released (stop strings held back, then cut)
  std::vector<SampledToken> tokens;  // Delta: tokens sampled since this choice's last Delta
  std::string finish_reason;         // Finished: "stop", "length" or "cancelled"
  Usage usage;                       // Done
  Cost cost;                         // Done
  std::vector<float> embedding;      // Done, for embedding requests: L2-normalised
  std::string message;               // Error
};

class RequestHandle {
 public:
  virtual ~RequestHandle() = default;
  // Waits up to `wait` for the next event; false when none came in time.
  virtual bool next(Event& event, std::chrono::milliseconds wait) = 0;
  // Stops the request: its sequences leave the batch at the next step and their blocks are freed
  // (shared prefix blocks stay cached). The last events are Finished ("cancelled") and Done.
  virtual void cancel() = 0;
};

struct SchedulerMetrics {
  int64_t requests_total = 0;
  int64_t requests_rejected = 0;  // queue full
  int64_t requests_cancelled = 0;
  int64_t prompt_tokens_total = 0;
  int64_t cached_prompt_tokens_total = 0;
  int64_t generated_tokens_total = 0;
  int32_t running = 0;            // sequences in the batch now
  int32_t waiting = 0;            // requests queued now
  int32_t kv_blocks_total = 0;
  int32_t kv_blocks_used = 0;     // held by running sequences
  int32_t kv_blocks_cached = 0;   // free but holding a reusable prefix
  double cpu_seconds_total = 0;
  int64_t steps_total = 0;
  // The thread pool's balanced regions (products, attention, per-token steps), and those it ran on
  // one thread because its other threads were slower (base/thread_pool.h: other work on the CPUs).
  int64_t parallel_regions_total = 0;
  int64_t parallel_regions_alone_total = 0;
};

class Scheduler {
 public:
  // Allocates the paged cache and starts the loop. Throws InvalidArgument for options that do not
  // fit the model (a context above what the model allows, too few blocks for one sequence).
  Scheduler(const Engine& engine, const SchedulerOptions& options);
  ~Scheduler();  // cancels what runs and joins the loop
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request. Throws InvalidArgument (a prompt that does not fit the context, token ids
  // out of range, bad sampling parameters) or QueueFull; both before any work.
  std::shared_ptr<RequestHandle> submit(GenerateRequest request);
  // Embeddings of one input: pooled last hidden states (mean, unless the model names another
  // pooling), L2-normalised, delivered in the Done event.
  std::shared_ptr<RequestHandle> submit_embedding(std::vector<int32_t> tokens);

  // Stops taking requests; with `finish`, lets the running and queued ones end, else cancels them.
  // Returns when the loop is idle.
  void shutdown(bool finish);

  SchedulerMetrics metrics() const;
  const SchedulerOptions& options() const;
  int32_t n_ctx() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sq::serve
