// The paged KV cache of the server: one pool of fixed-size blocks (block_size positions; per layer
// a key row and a value row per position, in KvCache's row formats) that every sequence draws from.
// A sequence holds a block table (KvSequence), so memory follows what each sequence has really
// used instead of a whole context per slot.
//
// Prefix sharing: a FULL block is named by a chained hash, XXH3 of its token ids seeded with its
// predecessor's hash, so the name covers the whole prefix up to the block's end. A published block
// can be found by a later sequence whose tokens begin the same way; it is then shared (refcounted,
// never written again). A block whose last user leaves stays cached if it carries a name, and such
// blocks are handed out again least recently released first when the pool has no never-named block
// left. The token ids are kept beside the name, so a hash collision can only miss, never share
// wrong keys.
//
// Not thread-safe: the scheduler's loop owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

#include "base/mmap.h"
#include "ops/ops.h"

namespace sq {

struct ModelConfig;

// A sequence's share of the pool.
struct KvSequence {
  std::vector<int32_t> blocks;  // block table: position p lives in blocks[p / block_size]
  int32_t size = 0;             // positions whose keys and values are stored
  int32_t n_named = 0;          // leading full blocks already published (or found) by name
  uint64_t last_name = 0;       // chained hash of block n_named - 1 (0 before the first)
};

class PagedKvCache {
 public:
  // Throws InvalidArgument when `type` cannot hold the model's rows or the sizes are not positive.
  PagedKvCache(const ModelConfig& config, int32_t n_blocks, int32_t block_size,
               ops::KvType type = ops::KvType::F16);

  int32_t n_blocks() const { return n_blocks_; }
  int32_t block_size() const { return block_size_; }
  int32_t n_layer() const { return n_layer_; }
  ops::KvType type() const { return type_; }
  size_t bytes() const { return k_.size() + v_.size(); }

  // Blocks held by at least one sequence.
  int32_t n_used() const { return n_used_; }
  // Blocks held by none that keep a published prefix (reusable until evicted).
  int32_t n_cached() const { return static_cast<int32_t>(lru_.size()); }
  // Blocks allocate() can still hand out: never-named free blocks plus cached ones.
  int32_t n_available() const { return n_blocks_ - n_used_; }

  // --- Storage -------------------------------------------------------------------------------
  // Stores the key and value rows (kv_dim floats each) of `row` in `block`, layer `layer`.
  void store(int32_t layer, int32_t block, int32_t row, const float* k, const float* v);
  // Where `row` of `block` goes in `layer`, for the forward pass to write in the cache's format.
  ops::KvSlot slot(int32_t layer, int32_t block, int32_t row);
  // A layer's rows as the sequence with this block table sees them, for ops::attention_paged.
  ops::PagedKvRows rows(int32_t layer, std::span<const int32_t> blocks) const;

  // --- Single blocks ---------------------------------------------------------------------------
  // A block for exclusive use (refcount 1), evicting the least recently released cached block
  // when no never-named block is free; -1 when every block is in use.
  int32_t allocate();
  void retain(int32_t block);
  void release(int32_t block);
  int32_t refcount(int32_t block) const { return meta_[static_cast<size_t>(block)].refs; }

  // --- Sequences -------------------------------------------------------------------------------
  // Starts `seq` (empty) with the longest run of published blocks that begin `tokens`, taking at
  // most `max_tokens` positions. Returns the positions reused (a multiple of block_size).
  int32_t attach_prefix(KvSequence& seq, std::span<const int32_t> tokens, int32_t max_tokens);
  // Makes sure the table covers positions [0, n). False when the pool ran out; the blocks already
  // added stay in the table (free() returns them).
  bool reserve(KvSequence& seq, int32_t n);
  // Records that positions [seq.size, n) are now stored, and publishes the blocks that became
  // full. `tokens` are the sequence's tokens from position 0 (at least n of them).
  void advance(KvSequence& seq, std::span<const int32_t> tokens, int32_t n);
  // A second sequence with the same positions as `src`: full blocks are shared, a partial last
  // block is copied (it will be written). False when no block is left for that copy.
  bool fork(const KvSequence& src, KvSequence& dst);
  // Gives the sequence's blocks back; published ones stay cached.
  void free(KvSequence& seq);

  // The chained name of a full block of `tokens` following a block named `prev` (0 for the first).
  static uint64_t chain_hash(uint64_t prev, std::span<const int32_t> tokens);

 private:
  struct BlockMeta {
    int32_t refs = 0;
    bool named = false;
    uint64_t name = 0;
    std::vector<int32_t> tokens;       // the block's token ids, when named
    std::list<int32_t>::iterator lru;  // place in lru_, when cached
  };
  size_t offset(int32_t layer, int32_t block, int32_t row) const {
    return ((static_cast<size_t>(layer) * static_cast<size_t>(n_blocks_) + static_cast<size_t>(block)) *
                static_cast<size_t>(block_size_) +
            static_cast<size_t>(row)) *
           row_bytes_;
  }
  void publish(int32_t block, uint64_t name, std::span<const int32_t> tokens);
  void unname(int32_t block);

  int32_t n_blocks_;
  int32_t block_size_;
  int32_t n_layer_;
  int32_t kv_dim_;
  ops::KvType type_;
  size_t row_bytes_;
  // In huge pages, as KvCache's rows (kv_cache.h), but backed when the cache is made.
  AnonymousMemory k_;  // [n_layer, n_blocks, block_size, row_bytes]
  AnonymousMemory v_;  // [n_layer, n_blocks, block_size, row_bytes]

  std::vector<BlockMeta> meta_;                   // [n_blocks]
  std::vector<int32_t> free_;                     // never-named blocks with no user
  std::list<int32_t> lru_;                        // named blocks with no user, least recent first
  std::unordered_map<uint64_t, int32_t> by_name_;  // published blocks
  int32_t n_used_ = 0;
};

}  // namespace sq
