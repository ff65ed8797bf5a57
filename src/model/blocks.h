// Building blocks shared by the architectures: reading hyper-parameters, binding tensors with
// shape checks, and the pieces of a pre-norm decoder layer (attention, dense and mixture-of-experts
// feed-forward), each taking an options struct.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "model/model.h"

namespace sq {

class GgufFile;
struct GgufTensorInfo;

// A view of a tensor as the file describes it, whatever its type (no check).
TensorView tensor_view(const GgufTensorInfo& info);

// Reads the llama-family keys under `<arch>.` (context_length, embedding_length, block_count,
// feed_forward_length, attention.head_count[_kv], attention.key_length,
// attention.layer_norm_rms_epsilon, rope.freq_base, rope.dimension_count, rope.scaling.*,
// expert_count, expert_used_count, vocab_size).
ModelConfig read_decoder_config(const GgufFile& file, const std::string& arch);

// A tensor that must exist with exactly this shape (ne[0] first) and a supported type.
TensorView require_tensor(const GgufFile& file, const std::string& name,
                          std::initializer_list<int64_t> shape);
// The same, but an empty view when the file has no such tensor.
TensorView optional_tensor(const GgufFile& file, const std::string& name,
                           std::initializer_list<int64_t> shape);

struct DecoderBindOptions {
  bool qkv_bias = false;  // qwen2: attn_q/k/v.bias
};

// Binds token_embd, output_norm, output (tied to token_embd when absent), rope_freqs and every
// layer's attention and feed-forward tensors (dense, or stacked experts when n_expert > 0).
void bind_decoder(const GgufFile& file, Model& model, const DecoderBindOptions& options);

// The pre-norm decoder forward pass shared by llama and qwen2: RMSNorm, attention with RoPE and
// grouped K/V heads, SwiGLU (or routed experts), final norm and output projection.
void run_decoder(const Model& model, std::span<const int32_t> tokens, int32_t pos0, KvCache& kv,
                 ThreadPool& pool, std::span<float> logits, bool all_logits);

// The same decoder over a batch of several sequences in a paged cache (Model::forward_batch):
// the same operations per token as run_decoder, so the same bits.
void run_decoder_batch(const Model& model, std::span<const BatchSlice> batch, PagedKvCache& kv,
                       ThreadPool& pool, std::span<float> logits, std::span<float> hidden);

}  // namespace sq
