// Engine: a loaded model with its tokenizer, and single-sequence generation (prompt as one batch,
// then token by token) on a contiguous KV cache.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/sampler.h"
#include "ops/ops.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace sq {

class GgufFile;

struct LoadOptions {
  std::string model_path;
  std::string tokenizer_path;  // llama2.c only; empty: look beside the checkpoint
};

class Engine {
 public:
  // Loads the model and its tokenizer. A GGUF file's tokenizer comes from its metadata; a llama2.c
  // checkpoint's from `tokenizer_path`, else tokenizer.bin then tok<vocab>.bin beside it.
  static std::unique_ptr<Engine> load(const LoadOptions& options);

  const Model& model() const { return *model_; }
  // nullptr when the file carries no vocabulary (tokenizer.ggml.model = "no_vocab").
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  // The tokenizer, or InvalidArgument saying the model has none.
  const Tokenizer& require_tokenizer() const;
  const std::string& tokenizer_source() const { return tokenizer_source_; }

  // The model's own chat template (GGUF tokenizer.chat_template, Jinja source); empty when the
  // file has none (llama2.c checkpoints never do).
  const std::string& chat_template() const;
  // The text of the BOS / EOS tokens as a chat template sees bos_token / eos_token ("<s>",
  // "<|begin_of_text|>"); empty when the vocabulary has none.
  std::string bos_text() const;
  std::string eos_text() const;

 private:
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string tokenizer_source_;
};

// Resolves the llama2.c tokenizer for a checkpoint: `explicit_path` when given, else
// tokenizer.bin, then tok<n_vocab>.bin beside the checkpoint. Throws IoError naming every place
// it looked.
std::string find_llama2c_tokenizer(const std::string& model_path, const std::string& explicit_path,
                                   int32_t n_vocab);

struct GenerateOptions {
  int32_t n_predict = 128;     // tokens to generate (not counting the prompt)
  int32_t n_ctx = 0;           // context to allocate; 0: the model's, capped at 4096
  int32_t n_threads = 0;       // 0: physical cores
  ops::KvType kv_type = ops::KvType::F16;
  SamplingParams sampling;
  std::vector<std::string> stop;  // stop strings (not emitted)
  bool stop_at_eog = true;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids
  int32_t n_prompt = 0;
  double prompt_seconds = 0;
  double gen_seconds = 0;
  std::string finish_reason;  // "stop" (end-of-generation token or stop string) or "length"
};

// Generates from prompt ids, streaming text to `on_text` as characters complete (held back while it
// might begin a stop string). Checks that the prompt and n_predict fit the context before any work;
// throws InvalidArgument otherwise.
GenerateResult generate(const Engine& engine, const std::vector<int32_t>& prompt,
                        const GenerateOptions& options,
                        const std::function<void(std::string_view)>& on_text);

// The checks generate() makes before any work: the prompt and n_predict fit the context, token ids
// are in range, sampling parameters are valid. Throws InvalidArgument.
void check_request(const Engine& engine, const std::vector<int32_t>& prompt,
                   const GenerateOptions& options);

// The context length used when the user gives none.
int32_t default_context(const Model& model);

}  // namespace sq
