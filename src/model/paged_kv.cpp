#include "model/paged_kv.h"

#include <xxhash.h>

#include <algorithm>
#include <cassert>
#include <cstring>

#include "base/error.h"
#include "model/model.h"

namespace sq {

PagedKvCache::PagedKvCache(const ModelConfig& config, int32_t n_blocks, int32_t block_size,
                           ops::KvType type)
    : n_blocks_(n_blocks),
      block_size_(block_size),
      n_layer_(config.n_layer),
      kv_dim_(config.kv_dim()),
      type_(type),
      row_bytes_(ops::kv_row_bytes(type, config.kv_dim())) {
  if (n_blocks <= 0 || block_size <= 0) {
    fail<InvalidArgument>("a paged KV cache of {} blocks of {} positions; both must be positive",
                          n_blocks, block_size);
  }
  const size_t total = static_cast<size_t>(n_layer_) * static_cast<size_t>(n_blocks) *
                       static_cast<size_t>(block_size) * row_bytes_;
  k_ = allocate_anonymous(total, "the paged KV cache's keys");
  v_ = allocate_anonymous(total, "the paged KV cache's values");
  // Backed now, as the zero-filled vectors were: a server that cannot hold its cache fails as it
  // starts, not in the middle of a request.
  std::memset(k_.data(), 0, total);
  std::memset(v_.data(), 0, total);
  meta_.resize(static_cast<size_t>(n_blocks));
  free_.reserve(static_cast<size_t>(n_blocks));
  // Handed out lowest first: the pop comes from the back.
  for (int32_t b = n_blocks - 1; b >= 0; --b) free_.push_back(b);
}

void PagedKvCache::store(int32_t layer, int32_t block, int32_t row, const float* k, const float* v) {
  const ops::KvSlot s = slot(layer, block, row);
  ops::store_kv_row(type_, k, s.k, kv_dim_);
  ops::store_kv_row(type_, v, s.v, kv_dim_);
}

ops::KvSlot PagedKvCache::slot(int32_t layer, int32_t block, int32_t row) {
  assert(layer >= 0 && layer < n_layer_ && block >= 0 && block < n_blocks_ && row >= 0 &&
         row < block_size_);
  return {k_.data() + offset(layer, block, row), v_.data() + offset(layer, block, row)};
}

ops::PagedKvRows PagedKvCache::rows(int32_t layer, std::span<const int32_t> blocks) const {
  ops::PagedKvRows r;
  r.k = k_.data() + offset(layer, 0, 0);
  r.v = v_.data() + offset(layer, 0, 0);
  r.type = type_;
  r.row_bytes = row_bytes_;
  r.block_size = block_size_;
  r.blocks = blocks;
  return r;
}

int32_t PagedKvCache::allocate() {
  int32_t b = -1;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (!lru_.empty()) {
    b = lru_.front();
    lru_.pop_front();
    unname(b);
  } else {
    return -1;
  }
  meta_[static_cast<size_t>(b)].refs = 1;
  ++n_used_;
  return b;
}

void PagedKvCache::retain(int32_t block) {
  BlockMeta& m = meta_[static_cast<size_t>(block)];
  if (m.refs == 0) {
    // Only a cached (named) block can be picked up again without allocate().
    assert(m.named);
    lru_.erase(m.lru);
    ++n_used_;
  }
  ++m.refs;
}

void PagedKvCache::release(int32_t block) {
  BlockMeta& m = meta_[static_cast<size_t>(block)];
  assert(m.refs > 0);
  if (--m.refs > 0) return;
  --n_used_;
  if (m.named) {
    m.lru = lru_.insert(lru_.end(), block);
  } else {
    free_.push_back(block);
  }
}

uint64_t PagedKvCache::chain_hash(uint64_t prev, std::span<const int32_t> tokens) {
  return XXH3_64bits_withSeed(tokens.data(), tokens.size_bytes(), prev);
}

void PagedKvCache::publish(int32_t block, uint64_t name, std::span<const int32_t> tokens) {
  BlockMeta& m = meta_[static_cast<size_t>(block)];
  if (m.named) return;
  // Two sequences may compute the same prefix at once; the first published copy is the one found.
  if (by_name_.contains(name)) return;
  m.named = true;
  m.name = name;
  m.tokens.assign(tokens.begin(), tokens.end());
  by_name_.emplace(name, block);
}

void PagedKvCache::unname(int32_t block) {
  BlockMeta& m = meta_[static_cast<size_t>(block)];
  if (!m.named) return;
  auto it = by_name_.find(m.name);
  if (it != by_name_.end() && it->second == block) by_name_.erase(it);
  m.named = false;
  m.tokens.clear();
}

int32_t PagedKvCache::attach_prefix(KvSequence& seq, std::span<const int32_t> tokens,
                                    int32_t max_tokens) {
  assert(seq.blocks.empty() && seq.size == 0);
  const auto bs = static_cast<size_t>(block_size_);
  const size_t limit = std::min(tokens.size(), static_cast<size_t>(std::max(max_tokens, 0)));
  uint64_t name = 0;
  for (size_t at = 0; at + bs <= limit; at += bs) {
    std::span<const int32_t> part = tokens.subspan(at, bs);
    const uint64_t next = chain_hash(name, part);
    auto it = by_name_.find(next);
    if (it == by_name_.end()) break;
    const BlockMeta& m = meta_[static_cast<size_t>(it->second)];
    if (!std::equal(part.begin(), part.end(), m.tokens.begin(), m.tokens.end())) break;
    retain(it->second);
    seq.blocks.push_back(it->second);
    name = next;
  }
  seq.n_named = static_cast<int32_t>(seq.blocks.size());
  seq.last_name = name;
  seq.size = seq.n_named * block_size_;
  return seq.size;
}

bool PagedKvCache::reserve(KvSequence& seq, int32_t n) {
  const auto need = static_cast<size_t>((static_cast<int64_t>(n) + block_size_ - 1) / block_size_);
  while (seq.blocks.size() < need) {
    const int32_t b = allocate();
    if (b < 0) return false;
    seq.blocks.push_back(b);
  }
  return true;
}

void PagedKvCache::advance(KvSequence& seq, std::span<const int32_t> tokens, int32_t n) {
  assert(n >= seq.size && static_cast<size_t>(n) <= tokens.size());
  seq.size = n;
  const int32_t full = n / block_size_;
  while (seq.n_named < full) {
    const auto at = static_cast<size_t>(seq.n_named) * static_cast<size_t>(block_size_);
    std::span<const int32_t> part = tokens.subspan(at, static_cast<size_t>(block_size_));
    const uint64_t name = chain_hash(seq.last_name, part);
    publish(seq.blocks[static_cast<size_t>(seq.n_named)], name, part);
    seq.last_name = name;
    ++seq.n_named;
  }
}

bool PagedKvCache::fork(const KvSequence& src, KvSequence& dst) {
  assert(dst.blocks.empty());
  const size_t full = static_cast<size_t>(src.size / block_size_);
  const int32_t partial_rows = src.size % block_size_;
  int32_t copy = -1;
  if (partial_rows > 0) {
    copy = allocate();
    if (copy < 0) return false;
  }
  for (size_t i = 0; i < full; ++i) {
    retain(src.blocks[i]);
    dst.blocks.push_back(src.blocks[i]);
  }
  if (copy >= 0) {
    const int32_t from = src.blocks[full];
    const size_t n = static_cast<size_t>(partial_rows) * row_bytes_;
    for (int32_t l = 0; l < n_layer_; ++l) {
      std::memcpy(k_.data() + offset(l, copy, 0), k_.data() + offset(l, from, 0), n);
      std::memcpy(v_.data() + offset(l, copy, 0), v_.data() + offset(l, from, 0), n);
    }
    dst.blocks.push_back(copy);
  }
  dst.size = src.size;
  // dst continues src's chain of names; a shared block src has not named yet may be named by
  // either sequence, with the same name (publish() keeps the first).
  dst.n_named = src.n_named;
  dst.last_name = src.last_name;
  return true;
}

void PagedKvCache::free(KvSequence& seq) {
  for (int32_t b : seq.blocks) release(b);
  seq = KvSequence{};
}

}  // namespace sq
