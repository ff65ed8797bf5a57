#include "engine/engine.h"

#include <chrono>
#include <filesystem>

#include "base/error.h"
#include "base/thread_pool.h"
#include "engine/stop.h"
#include "engine/vocab_loader.h"
#include "model/gguf.h"
#include "model/kv_cache.h"

namespace sq {

std::string find_llama2c_tokenizer(const std::string& model_path, const std::string& explicit_path,
                                   int32_t n_vocab) {
  if (!explicit_path.empty()) {
    if (!std::filesystem::is_regular_file(explicit_path)) {
      fail<IoError>("tokenizer file '{}' does not exist", explicit_path);
    }
    return explicit_path;
  }
  const auto dir = std::filesystem::path(model_path).parent_path();
  const auto a = dir / "tokenizer.bin";
  const auto b = dir / ("tok" + std::to_string(n_vocab) + ".bin");
  if (std::filesystem::is_regular_file(a)) return a.string();
  if (std::filesystem::is_regular_file(b)) return b.string();
  fail<IoError>("no tokenizer for llama2.c checkpoint '{}': looked for '{}' and '{}'; name one with "
                "--tokenizer FILE",
                model_path, a.string(), b.string());
}

std::unique_ptr<Engine> Engine::load(const LoadOptions& options) {
  auto engine = std::unique_ptr<Engine>(new Engine());
  engine->model_ = load_model(options.model_path);
  const Model& m = *engine->model_;
  if (m.format == "llama2.c") {
    std::string tok = find_llama2c_tokenizer(m.path, options.tokenizer_path, m.config.n_vocab);
    engine->tokenizer_ = load_tokenizer_llama2c(tok, m.config.n_vocab);
    engine->tokenizer_source_ = tok;
  } else {
    if (!options.tokenizer_path.empty()) {
      fail<InvalidArgument>("--tokenizer is for llama2.c checkpoints; '{}' is a GGUF file and "
                            "carries its own vocabulary", m.path);
    }
    if (m.gguf == nullptr) fail<InvalidArgument>("{}: the model was not loaded from a GGUF file", m.path);
    engine->tokenizer_ = load_tokenizer(*m.gguf);
    engine->tokenizer_source_ = m.path;
    if (engine->tokenizer_ && engine->tokenizer_->n_vocab() != m.config.n_vocab) {
      fail<FormatError>("{}: the vocabulary has {} tokens but the model's embedding has {} rows",
                        m.path, engine->tokenizer_->n_vocab(), m.config.n_vocab);
    }
  }
  return engine;
}

const Tokenizer& Engine::require_tokenizer() const {
  if (!tokenizer_) {
    fail<InvalidArgument>("{}: the model has no vocabulary (tokenizer.ggml.model = \"no_vocab\"); "
                          "use token ids instead of text",
                          model_->path);
  }
  return *tokenizer_;
}

const std::string& Engine::chat_template() const {
  static const std::string kNone;
  return tokenizer_ ? tokenizer_->chat_template() : kNone;
}

std::string Engine::bos_text() const {
  if (!tokenizer_ || tokenizer_->bos() < 0) return {};
  return tokenizer_->token_text(tokenizer_->bos());
}

std::string Engine::eos_text() const {
  if (!tokenizer_ || tokenizer_->eos() < 0) return {};
  return tokenizer_->token_text(tokenizer_->eos());
}

int32_t default_context(const Model& model) { return std::min(model.config.n_ctx_train, 4096); }

void check_request(const Engine& engine, const std::vector<int32_t>& prompt,
                   const GenerateOptions& options) {
  const Model& model = engine.model();
  const int32_t n_ctx = options.n_ctx > 0 ? options.n_ctx : default_context(model);
  const auto n_prompt = static_cast<int64_t>(prompt.size());
  if (prompt.empty()) {
    fail<InvalidArgument>("the prompt is empty and no BOS token is added: nothing to start from");
  }
  if (options.n_ctx < 0) {
    fail<InvalidArgument>("-c is {}; expected a positive context length", options.n_ctx);
  }
  if (options.n_predict < 0) {
    fail<InvalidArgument>("-n is {}; expected 0 or more tokens to generate", options.n_predict);
  }
  if (n_prompt + options.n_predict > n_ctx) {
    fail<InvalidArgument>("the prompt ({} tokens) plus {} tokens to generate need {} positions, but the "
                          "context holds {} (raise -c, up to the model's {}, or lower -n)",
                          n_prompt, options.n_predict, n_prompt + options.n_predict, n_ctx,
                          model.config.n_ctx_train);
  }
  for (int32_t id : prompt) {
    if (id < 0 || id >= model.config.n_vocab) {
      fail<InvalidArgument>("token id {} is out of range: the vocabulary has {} tokens", id,
                            model.config.n_vocab);
    }
  }
  options.sampling.validate();
  ops::kv_row_bytes(options.kv_type, model.config.kv_dim());  // throws when the type cannot hold the rows
}

GenerateResult generate(const Engine& engine, const std::vector<int32_t>& prompt,
                        const GenerateOptions& options,
                        const std::function<void(std::string_view)>& on_text) {
  using Clock = std::chrono::steady_clock;
  const Model& model = engine.model();
  const Tokenizer& tok = engine.require_tokenizer();
  check_request(engine, prompt, options);
  const auto n_prompt = static_cast<int64_t>(prompt.size());
  Sampler sampler(options.sampling, model.config.n_vocab);
  ThreadPool pool(options.n_threads > 0 ? options.n_threads : default_thread_count());
  // Only the positions this request can reach: a long default context costs no memory.
  KvCache kv(model.config, static_cast<int32_t>(n_prompt + options.n_predict), options.kv_type);
  std::vector<float> logits(static_cast<size_t>(model.config.n_vocab));
  StreamDecoder decoder(tok);
  StopMatcher stops(options.stop);

  GenerateResult result;
  result.n_prompt = static_cast<int32_t>(n_prompt);
  result.finish_reason = "length";
  for (int32_t id : prompt) sampler.accept(id);

  auto t0 = Clock::now();
  if (options.n_predict > 0) model.forward(prompt, 0, kv, pool, logits, false);
  auto t1 = Clock::now();
  result.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();

  bool stopped = false;
  for (int32_t i = 0; i < options.n_predict && !stopped; ++i) {
    const int32_t next = sampler.sample(logits);
    sampler.accept(next);
    result.tokens.push_back(next);
    if (options.stop_at_eog && tok.is_eog(next)) {
      result.finish_reason = "stop";
      break;
    }
    auto r = stops.push(decoder.push(next));
    if (!r.emit.empty()) on_text(r.emit);
    if (r.stopped) {
      result.finish_reason = "stop";
      stopped = true;
      break;
    }
    if (i + 1 < options.n_predict) {
      model.forward(std::span<const int32_t>(&next, 1), kv.size(), kv, pool, logits, false);
    }
  }
  if (!stopped) {
    auto r = stops.push(decoder.flush());
    if (!r.emit.empty()) on_text(r.emit);
    if (r.stopped) {
      result.finish_reason = "stop";
    } else {
      std::string rest = stops.finish();
      if (!rest.empty()) on_text(rest);
    }
  }
  result.gen_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  return result;
}

}  // namespace sq
