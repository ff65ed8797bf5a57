#include "model/kv_cache.h"

#include <cassert>

#include "model/model.h"

namespace sq {

KvCache::KvCache(const ModelConfig& config, int32_t n_ctx, ops::KvType type)
    : n_ctx_(n_ctx),
      type_(type),
      row_bytes_(ops::kv_row_bytes(type, config.kv_dim())),
      k_(allocate_anonymous(static_cast<size_t>(config.n_layer) * static_cast<size_t>(n_ctx) * row_bytes_,
                            "the KV cache's keys")),
      v_(allocate_anonymous(k_.size(), "the KV cache's values")) {}

void KvCache::truncate(int32_t n) {
  assert(n >= 0 && n <= size_);
  size_ = n;
}

void KvCache::grow_to(int32_t n) {
  assert(n >= size_ && n <= n_ctx_);
  size_ = n;
}

ops::KvSlot KvCache::slot(int32_t layer, int32_t pos) {
  assert(pos >= 0 && pos < n_ctx_);
  return {k_.data() + offset(layer, pos), v_.data() + offset(layer, pos)};
}

ops::KvRows KvCache::rows(int32_t layer) const {
  return {k_.data() + offset(layer, 0), v_.data() + offset(layer, 0), type_, row_bytes_};
}

}  // namespace sq
