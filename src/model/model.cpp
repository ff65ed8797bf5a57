#include "model/model.h"

#include "model/arch.h"
#include "model/blocks.h"

namespace sq {

uint64_t Model::n_params() const {
  uint64_t total = 0;
  for (const auto& t : tensors) total += static_cast<uint64_t>(t.n_elements());
  return total;
}

void Model::forward(std::span<const int32_t> tokens, int32_t pos0, KvCache& kv, ThreadPool& pool,
                    std::span<float> logits, bool all_logits) const {
  arch->forward(*this, tokens, pos0, kv, pool, logits, all_logits);
}

void Model::forward_batch(std::span<const BatchSlice> batch, PagedKvCache& kv, ThreadPool& pool,
                          std::span<float> logits, std::span<float> hidden) const {
  arch->forward_batch(*this, batch, kv, pool, logits, hidden);
}

void Architecture::forward_batch(const Model& model, std::span<const BatchSlice> batch,
                                 PagedKvCache& kv, ThreadPool& pool, std::span<float> logits,
                                 std::span<float> hidden) const {
  run_decoder_batch(model, batch, kv, pool, logits, hidden);
}

}  // namespace sq
