#include "model/kv_cache.h"

#include <cassert>

#include "model/model.h"

namespace sq {

KvCache::KvCache(const ModelConfig& config, int32_t n_ctx)
    : n_ctx_(n_ctx),
      kv_dim_(config.kv_dim()),
      k_(static_cast<size_t>(config.n_layer) * static_cast<size_t>(n_ctx) * static_cast<size_t>(config.kv_dim())),
      v_(k_.size()) {}

void KvCache::truncate(int32_t n) {
  assert(n >= 0 && n <= size_);
  size_ = n;
}

void KvCache::grow_to(int32_t n) {
  assert(n >= size_ && n <= n_ctx_);
  size_ = n;
}

}  // namespace sq
