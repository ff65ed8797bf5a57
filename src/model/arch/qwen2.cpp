// qwen2: Qwen 1.5 / 2 / 2.5. The llama block with biases on Q, K and V and RoPE rotating halves
// (NEOX style); the smaller models tie the output to the embedding.
#include "model/arch.h"
#include "model/blocks.h"
#include "model/gguf.h"

namespace sq {

namespace {

class Qwen2 final : public Architecture {
 public:
  std::string_view name() const override { return "qwen2"; }

  void load(const GgufFile& file, Model& model) const override {
    model.config = read_decoder_config(file, "qwen2");
    model.config.rope_style = RopeStyle::Neox;
    bind_decoder(file, model, DecoderBindOptions{.qkv_bias = true});
  }

  void forward(const Model& model, std::span<const int32_t> tokens, int32_t pos0, KvCache& kv,
               ThreadPool& pool, std::span<float> logits, bool all_logits) const override {
    run_decoder(model, tokens, pos0, kv, pool, logits, all_logits);
  }
};

}  // namespace

const Architecture& qwen2_architecture() {
  static const Qwen2 arch;
  return arch;
}

}  // namespace sq
