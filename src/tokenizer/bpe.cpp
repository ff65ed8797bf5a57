// Byte-level BPE: pre-tokenize, map bytes to GPT-2's alphabet, merge by rank.
#include <queue>
#include <vector>

#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace sq {
namespace {

struct Symbol {
  int32_t prev;
  int32_t next;
  int32_t id;  // token of this run, -1 when its character is not in the vocabulary
  size_t start;
  size_t len;  // bytes of the mapped word; 0 once merged into the left neighbour
};

struct Bigram {
  int32_t rank;
  int32_t left;
  int32_t right;
  int32_t result;
  size_t size;
};

// Lowest rank first, then leftmost.
struct BigramOrder {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

}  // namespace

void Tokenizer::encode_bpe(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<std::string_view> words;
  pre_tokenizer_->split(text, words);
  for (std::string_view word : words) encode_bpe_word(word, out);
}

void Tokenizer::encode_bpe_word(std::string_view word, std::vector<int32_t>& out) const {
  const auto& table = byte_level::byte_to_utf8();
  std::string mapped;
  mapped.reserve(word.size() * 2);
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (unsigned char c : word) {
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{index - 1, index + 1, byte_char_token_[c], mapped.size(), table[c].size()});
    mapped += table[c];
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  if (ignore_merges_) {
    if (const int32_t id = find_token(mapped); id >= 0) {
      out.push_back(id);
      return;
    }
  }

  std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue;
  const auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const int32_t l = symbols[left].id, r = symbols[right].id;
    if (l < 0 || r < 0) return;
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
    const auto it = merges_.find(key);
    if (it == merges_.end()) return;
    queue.push(Bigram{it->second.rank, left, right, it->second.result,
                      symbols[left].len + symbols[right].len});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& left = symbols[b.left];
    Symbol& right = symbols[b.right];
    if (left.len == 0 || right.len == 0 || left.len + right.len != b.size) continue;
    left.len += right.len;
    left.id = b.result;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = b.left;
    try_add(left.prev, b.left);
    try_add(b.left, left.next);
  }

  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    if (symbols[i].id >= 0) {
      out.push_back(symbols[i].id);
    } else if (unk_ >= 0) {
      out.push_back(unk_);  // a byte whose stand-in character the vocabulary lacks
    }
  }
}

}  // namespace sq
