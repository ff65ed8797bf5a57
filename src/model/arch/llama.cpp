// llama: Llama 1/2/3, Mistral, Yi, TinyLlama, Mixtral. RMSNorm, RoPE on adjacent pairs (GGUF
// stores llama's Q/K weights permuted for it), grouped-query attention, SwiGLU or routed experts,
// Llama 3.1 frequency factors from rope_freqs.weight.
#include "model/arch.h"
#include "model/blocks.h"
#include "model/gguf.h"

namespace sq {

namespace {

class Llama final : public Architecture {
 public:
  std::string_view name() const override { return "llama"; }

  void load(const GgufFile& file, Model& model) const override {
    model.config = read_decoder_config(file, "llama");
    model.config.rope_style = RopeStyle::Adjacent;
    bind_decoder(file, model, DecoderBindOptions{.qkv_bias = false});
  }

  void forward(const Model& model, std::span<const int32_t> tokens, int32_t pos0, KvCache& kv,
               ThreadPool& pool, std::span<float> logits, bool all_logits) const override {
    run_decoder(model, tokens, pos0, kv, pool, logits, all_logits);
  }
};

}  // namespace

const Architecture& llama_architecture() {
  static const Llama arch;
  return arch;
}

}  // namespace sq
