// The OpenAI-compatible HTTP server. It speaks HTTP (cpp-httplib) and the OpenAI wire format
// (openai.h) and leaves the work to a Backend: the real one is the scheduler with the model's
// chat template and tokenizer (engine_backend.h); tests put a fake one behind the same interface.
//
// Threads: httplib's listener accepts connections and hands each to a worker of a pool sized so
// that HTTP never caps concurrency below the scheduler's (running + queued requests, plus room for
// health checks). A worker owns its connection until it closes; a streaming request holds its
// worker while it streams. Reading a request (headers and body) must end within a deadline, so a
// client that trickles bytes is cut off; a client that goes away cancels its request.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/constraint.h"
#include "serve/scheduler.h"

namespace sq::serve {

struct ModelInfo {
  std::string id;        // the name clients put in "model"
  int64_t created = 0;   // unix seconds (the model file's time)
  int32_t n_ctx = 0;     // per-sequence context
  int32_t n_vocab = 0;
  int32_t n_embd = 0;
  double price_per_cpu_hour = 0;
  // The most bytes of text one token stands for (0: unknown). A text longer than n_ctx times this
  // cannot fit the context, which the server can tell without tokenizing megabytes.
  int32_t max_token_bytes = 0;
};

// What the HTTP layer needs from the engine. Implementations are thread-safe.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual ModelInfo model_info() const = 0;
  // The prompt of a chat: the messages (contents already strings) rendered by the chat template
  // and tokenized. Throws InvalidArgument when the template refuses them (raise_exception).
  virtual std::vector<int32_t> tokenize_chat(const nlohmann::ordered_json& messages) const = 0;
  // A completion prompt or an embedding input given as text.
  virtual std::vector<int32_t> tokenize_text(std::string_view text) const = 0;
  // A token's bytes (for the alternatives of logprobs, which carry only ids).
  virtual std::string token_bytes(int32_t token) const = 0;
  // Structured output: a factory of constraints for a JSON Schema (null: any JSON object). Throws
  // UnsupportedError / InvalidArgument for a schema it cannot enforce.
  virtual std::function<std::unique_ptr<TokenConstraint>()> json_constraint(
      const nlohmann::ordered_json& schema) const = 0;
  // As Scheduler::submit / submit_embedding (QueueFull, InvalidArgument).
  virtual std::shared_ptr<RequestHandle> submit(GenerateRequest request) = 0;
  virtual std::shared_ptr<RequestHandle> submit_embedding(std::vector<int32_t> tokens) = 0;
  virtual SchedulerMetrics metrics() const = 0;
};

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port (see Server::port)
  // Bearer keys accepted on /v1/* and /metrics; empty: no authentication.
  std::vector<std::string> api_keys;
  // Worker threads; 0: parallel + queue + 8 (see the header comment).
  int32_t http_threads = 0;
  int32_t parallel = 4;
  int32_t queue = 64;
  size_t max_body_bytes = size_t{8} << 20;
  // A socket read or write that makes no progress for this long fails.
  std::chrono::milliseconds io_timeout{10000};
  // Reading one request, headers and body, must end within this (slow-loris defence).
  std::chrono::milliseconds read_deadline{30000};
  // Idle time allowed between requests on a kept-alive connection.
  std::chrono::milliseconds keep_alive{5000};
  // A generation request must end within this, queueing included (0: no limit).
  std::chrono::milliseconds request_timeout{0};
  // Called with one JSON line per request; null: standard error.
  std::function<void(const std::string&)> log;
  // Put the prompt (chat messages, completion prompt, embedding input) in each access-log line,
  // cut at 64 KiB. Off by default: prompts are the users' data.
  bool log_prompts = false;
};

// HTTP request counts and latency histograms, rendered in Prometheus text format.
class HttpMetrics;

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();  // stops the server if it runs
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts accepting on a thread of its own. Until set_backend() the /v1 routes answer
  // 503 and /health says "loading". Throws IoError when the address cannot be bound.
  void start();
  // The bound port (the chosen one when options.port was 0).
  int port() const { return port_; }

  // The model is ready.
  void set_backend(std::shared_ptr<Backend> backend);
  // The model failed to load: /health and the /v1 routes report it (503).
  void set_load_error(const std::string& message);

  // Graceful stop: accept nothing more (new requests on open connections get 503), wait up to
  // `grace` for running requests to end, cancel the rest, then close every connection and join the
  // threads. Safe to call more than once.
  void stop(std::chrono::milliseconds grace);

  // Requests being served now (generation and embedding).
  int32_t in_flight() const { return in_flight_.load(); }

  struct Impl;

 private:
  ServerOptions options_;
  int port_ = 0;
  std::atomic<int32_t> in_flight_{0};
  std::unique_ptr<Impl> impl_;
};

}  // namespace sq::serve
