// Synthetic models: GGUF files with random weights and a chosen shape, for tests and benchmarks
// that need a model of a given size without a download.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/types.h"
#include "model/gguf.h"

namespace sq {

struct SynthSpec {
  std::string arch = "llama";  // "llama" or "qwen2"
  int32_t n_vocab = 64;
  int32_t n_embd = 64;
  int32_t n_layer = 2;
  int32_t n_head = 4;
  int32_t n_head_kv = 2;
  int32_t n_ff = 96;
  int32_t n_ctx = 256;
  int32_t n_expert = 0;       // > 0: mixture of experts with stacked expert tensors
  int32_t n_expert_used = 0;
  bool tied_output = false;   // no output.weight
  bool rope_freqs = false;    // add a Llama 3.1-style rope_freqs.weight
  GgmlType type = GgmlType::F32;  // matrices; norms, biases and the router stay F32
  uint64_t seed = 1;
  bool with_vocab = false;    // add a tiny byte-level SentencePiece vocabulary of n_vocab tokens
};

// Builds the model in memory; write it with GgufWriter::write.
GgufWriter synth_model(const SynthSpec& spec);

}  // namespace sq
