#include "model/model.h"

#include "model/arch.h"

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

}  // namespace sq
