// Synthetic models: GGUF files with random weights and a chosen shape, for tests and benchmarks
// that need a model of a given size without a download. Presets reproduce the shapes and
// hyper-parameters of real models, so that speed measured on them is the speed on the real thing.
//
// Values: matrices are uniform in ±1/sqrt(n_embd) (the embedding in ±1), so activations stay of
// order one through any number of layers; norms are uniform in 1 ± 0.2; biases in ±0.5. All come
// from one sq::Rng stream seeded by `seed`, drawn tensor by tensor in file order, so a spec and a
// seed name the same model whether it is built in memory or streamed to disk.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/types.h"
#include "model/gguf.h"
#include "model/gguf_stream.h"
#include "model/quantize.h"

namespace sq {

class ThreadPool;

struct SynthSpec {
  std::string arch = "llama";  // "llama" or "qwen2" (qwen2 has Q/K/V biases)
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
  bool rope_freqs = false;    // add a Llama 3.1-style rope_freqs.weight (made-up factors, for tests)
  bool rope_llama3 = false;   // add rope_freqs.weight with Llama 3.1/3.2's factors (scale 32, low 1,
                              // high 4, original context 8192), as converters write it
  float rope_base = 0;        // 0: the architecture's usual base (llama 10000, qwen2 1e6)
  float norm_eps = 1e-5f;
  std::string name;           // general.name; empty: "synthetic-<arch>"
  GgmlType type = GgmlType::F32;  // every converted matrix; norms, biases and the router stay F32
  // When set, each tensor's type is what `squeeze quantize` would choose for this target (the
  // output in Q6_K for Q4_0, Q4_K_M's upgrades, fallbacks for rows not a multiple of 256), and
  // `type` is ignored.
  std::optional<QuantTarget> target;
  uint64_t seed = 1;
  bool with_vocab = false;    // add a tiny byte-level SentencePiece vocabulary of n_vocab tokens
};

// The names of the presets: tinyllama-1.1b, llama-3.2-1b, qwen2.5-0.5b, qwen2.5-1.5b, tiny-moe.
std::vector<std::string> synth_preset_names();
// The spec of a preset (F32, seed 1), or nullopt for an unknown name.
std::optional<SynthSpec> synth_preset(std::string_view name);

// What a spec produces, without drawing a value: metadata and every tensor's name, type and shape,
// in file order.
struct SynthLayout {
  GgufMetadata metadata;
  std::vector<GgufTensorSpec> tensors;
};
SynthLayout synth_layout(const SynthSpec& spec);

// Builds the model in memory; write it with GgufWriter::write. For small models (tests).
GgufWriter synth_model(const SynthSpec& spec);

// Streams the model to `path` (through a temporary file renamed at the end; nothing is left at
// `path` on failure), quantizing rows on the pool's threads (pool may be null). The file's bytes do
// not depend on the pool. Returns the size of the file.
uint64_t synth_write(const SynthSpec& spec, const std::string& path, ThreadPool* pool,
                     const ProgressFn& progress = {});

}  // namespace sq
