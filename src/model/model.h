// The in-memory model: typed hyper-parameters, views of the weight tensors, and the architecture
// that runs them. GGUF files and llama2.c checkpoints both load into this one shape.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kernels/types.h"
#include "model/repack.h"
#include "ops/tensor.h"

namespace sq {

class ThreadPool;
class KvCache;
class PagedKvCache;
class Architecture;
class GgufFile;

enum class RopeStyle {
  Adjacent,  // rotates pairs (2i, 2i+1): llama weights as GGUF stores them, llama2.c
  Neox,      // rotates pairs (i, i + n_rot/2): qwen2 and GPT-NeoX
};

// How an embedding is pooled from the final hidden states (GGUF `<arch>.pooling_type`).
enum class Pooling {
  Mean,  // the mean of every token's (pooling_type 1, and the default)
  Cls,   // the first token's (2)
  Last,  // the last token's (3)
};

struct ModelConfig {
  std::string arch;          // general.architecture
  int32_t n_vocab = 0;
  int32_t n_embd = 0;
  int32_t n_layer = 0;
  int32_t n_head = 0;
  int32_t n_head_kv = 0;
  int32_t head_dim = 0;      // per head, for Q and K and V
  int32_t n_ff = 0;          // feed-forward width (per expert for mixtures)
  int32_t n_ctx_train = 0;   // context the model was trained for
  int32_t n_rot = 0;         // dimensions of each head that RoPE rotates
  float norm_eps = 1e-5f;
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // linear position scaling (rope.scaling.factor = 1/scale)
  RopeStyle rope_style = RopeStyle::Adjacent;
  int32_t n_expert = 0;      // 0: dense feed-forward
  int32_t n_expert_used = 0;
  Pooling pooling = Pooling::Mean;  // for embeddings

  int32_t q_dim() const { return n_head * head_dim; }
  int32_t kv_dim() const { return n_head_kv * head_dim; }
  // Checks the numbers against each other; throws FormatError naming the offending key.
  void validate(const std::string& source) const;
};

struct LayerWeights {
  TensorView attn_norm;  // [n_embd]
  TensorView wq;         // [n_embd -> q_dim]     (ne = {n_embd, q_dim})
  TensorView wk;         // [n_embd -> kv_dim]
  TensorView wv;         // [n_embd -> kv_dim]
  TensorView wo;         // [q_dim -> n_embd]
  TensorView bq, bk, bv; // [q_dim], [kv_dim], [kv_dim]; empty when the architecture has none
  TensorView ffn_norm;   // [n_embd]
  // Dense feed-forward.
  TensorView ffn_gate;   // [n_embd -> n_ff]
  TensorView ffn_up;     // [n_embd -> n_ff]
  TensorView ffn_down;   // [n_ff -> n_embd]
  // Mixture of experts (n_expert > 0).
  TensorView ffn_gate_inp;   // router [n_embd -> n_expert]
  TensorView ffn_gate_exps;  // [n_embd, n_ff, n_expert]
  TensorView ffn_up_exps;    // [n_embd, n_ff, n_expert]
  TensorView ffn_down_exps;  // [n_ff, n_embd, n_expert]
};

// One sequence's part of a batched forward pass (Model::forward_batch).
struct BatchSlice {
  std::span<const int32_t> tokens;  // new tokens, at positions pos0, pos0 + 1, ..
  int32_t pos0 = 0;                 // positions [0, pos0) are already in the sequence's blocks
  std::span<const int32_t> blocks;  // the sequence's block table; covers pos0 + tokens.size()
  bool logits = false;              // logits of the slice's last token
  bool hidden = false;              // final-normed hidden state of every token of the slice
};

class Model {
 public:
  ModelConfig config;
  TensorView tok_embd;     // [n_embd, n_vocab]
  TensorView output_norm;  // [n_embd]
  TensorView output;       // [n_embd -> n_vocab]; the embedding itself when tied
  bool output_tied = false;
  std::vector<float> rope_freq_factors;  // [n_rot / 2]; empty unless the file has rope_freqs
  std::vector<LayerWeights> layers;
  const Architecture* arch = nullptr;

  // Provenance, for `info` and messages.
  std::string path;
  std::string name;         // general.name, else the file's stem
  std::string format;       // "GGUF v3", "llama2.c"
  uint64_t file_size = 0;
  std::vector<TensorView> tensors;  // every tensor of the file, in file order

  // Keeps the mapping (or the converted buffers) alive for as long as the views are used.
  std::shared_ptr<const void> storage;
  // The parsed file, for its metadata (the tokenizer); null for llama2.c checkpoints.
  std::shared_ptr<const GgufFile> gguf;
  // The matrices load_model copied into the kernels' packed layouts (model/repack.h).
  RepackSummary repacked;

  // Total number of weights (elements of every tensor).
  uint64_t n_params() const;

  // Runs `tokens` at positions pos0.. through the model, appending their keys and values to `kv`.
  // Writes logits [n_tokens, n_vocab] into `logits` when all_logits, else only the last row
  // [n_vocab]. Preconditions (asserted; the engine checks them for the user): pos0 equals
  // kv.size(), pos0 + tokens.size() <= kv.capacity(), every token below n_vocab.
  void forward(std::span<const int32_t> tokens, int32_t pos0, KvCache& kv, ThreadPool& pool,
               std::span<float> logits, bool all_logits) const;

  // Runs several sequences' new tokens in one pass: every matrix product covers all the batch's
  // tokens (the weights are read once per step), each token is rotated for its own position, its
  // keys and values go into its sequence's blocks, and it attends over its own sequence only.
  // Writes one logits row [n_vocab] per slice with `logits`, in batch order, and one row [n_embd]
  // per token of each slice with `hidden`, in batch order. The logits of a token are bit-identical
  // to what forward() gives for the same sequence, whatever else is in the batch and wherever its
  // blocks lie (DESIGN.md, invariant 2). Preconditions (asserted): tokens below n_vocab, block
  // tables long enough, the slices' sequences distinct, outputs large enough.
  void forward_batch(std::span<const BatchSlice> batch, PagedKvCache& kv, ThreadPool& pool,
                     std::span<float> logits, std::span<float> hidden) const;
};

// Loads a model file: GGUF (by its magic) or a llama2.c checkpoint. Throws IoError, FormatError or
// UnsupportedError (an unknown architecture, a tensor type squeeze does not compute with).
std::unique_ptr<Model> load_model(const std::string& path);

// True when the file starts with the GGUF magic.
bool is_gguf_file(const std::string& path);

}  // namespace sq
