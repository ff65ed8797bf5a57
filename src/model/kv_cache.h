// Keys and values of the positions a sequence has seen, one contiguous f32 block per layer:
// [n_ctx, kv_dim] for keys and the same for values. The engine's paged cache will replace this
// for serving; a single sequence needs nothing more.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sq {

struct ModelConfig;

class KvCache {
 public:
  KvCache(const ModelConfig& config, int32_t n_ctx);

  int32_t capacity() const { return n_ctx_; }
  int32_t size() const { return size_; }
  int64_t row_stride() const { return kv_dim_; }  // floats between consecutive positions
  // Forgets positions from n on (n <= size()).
  void truncate(int32_t n);
  void clear() { size_ = 0; }
  // Marks positions [size(), n) as filled; the forward pass writes them first.
  void grow_to(int32_t n);

  float* k(int32_t layer, int32_t pos) { return &k_[index(layer, pos)]; }
  float* v(int32_t layer, int32_t pos) { return &v_[index(layer, pos)]; }
  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }

 private:
  size_t index(int32_t layer, int32_t pos) const {
    return (static_cast<size_t>(layer) * static_cast<size_t>(n_ctx_) + static_cast<size_t>(pos)) *
           static_cast<size_t>(kv_dim_);
  }
  int32_t n_ctx_;
  int32_t kv_dim_;
  int32_t size_ = 0;
  std::vector<float> k_;  // [n_layer, n_ctx, kv_dim]
  std::vector<float> v_;  // [n_layer, n_ctx, kv_dim]
};

}  // namespace sq
