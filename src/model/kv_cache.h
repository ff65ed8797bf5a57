// Keys and values of the positions a sequence has seen: per layer, one row per position for keys
// and one for values, each n_head_kv * head_dim values stored as F16 (the default), F32 or Q8_0.
// The engine's paged cache will replace this for serving; a single sequence needs nothing more.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/mmap.h"
#include "ops/ops.h"

namespace sq {

struct ModelConfig;

class KvCache {
 public:
  // Throws InvalidArgument when `type` cannot hold this model's rows (Q8_0 needs multiples of 32).
  KvCache(const ModelConfig& config, int32_t n_ctx, ops::KvType type = ops::KvType::F16);

  int32_t capacity() const { return n_ctx_; }
  int32_t size() const { return size_; }
  ops::KvType type() const { return type_; }
  // Forgets positions from n on (n <= size()).
  void truncate(int32_t n);
  void clear() { size_ = 0; }
  // Marks positions [size(), n) as filled; the forward pass stores them first.
  void grow_to(int32_t n);

  // Where `pos` of `layer` goes, for the forward pass to write in the cache's format.
  ops::KvSlot slot(int32_t layer, int32_t pos);
  // The rows of positions 0.. of a layer, for attention.
  ops::KvRows rows(int32_t layer) const;
  size_t bytes() const { return k_.size() + v_.size(); }

 private:
  size_t offset(int32_t layer, int32_t pos) const {
    return (static_cast<size_t>(layer) * static_cast<size_t>(n_ctx_) + static_cast<size_t>(pos)) *
           row_bytes_;
  }
  int32_t n_ctx_;
  ops::KvType type_;
  size_t row_bytes_;
  int32_t size_ = 0;
  // Huge pages: a generated token reads each layer's rows after a gigabyte of weights has gone
  // through the caches and the TLB, and in 4 KiB pages the reads missed the TLB too (TinyLlama's
  // attention at a context of 64: the value pass 1.3x slower).
  AnonymousMemory k_;  // [n_layer, n_ctx, row_bytes]
  AnonymousMemory v_;  // [n_layer, n_ctx, row_bytes]
};

}  // namespace sq
