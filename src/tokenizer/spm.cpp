// SentencePiece-style BPE: merge by token score, with byte fallback.
#include <queue>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace sq {
namespace {

// A run of the text; symbols form a linked list and absorb their right neighbour when merged.
struct Symbol {
  int32_t prev;
  int32_t next;
  size_t start;
  size_t len;  // 0 once merged into its left neighbour
};

struct Bigram {
  float score;
  int32_t left;
  int32_t right;
  size_t size;  // the merged length when queued; a mismatch later means the pair went stale
};

// Highest score first, then leftmost.
struct BigramOrder {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

void Tokenizer::encode_spm(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    size_t len = utf8::sequence_length(text, pos);
    if (len == 0) len = 1;  // a malformed byte is a symbol of its own; byte fallback keeps it
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{index - 1, index + 1, pos, len});
    pos += len;
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue;
  const auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const size_t size = symbols[left].len + symbols[right].len;
    const int32_t id = lookup_plain(text.substr(symbols[left].start, size));
    if (id < 0) return;
    queue.push(Bigram{scores_[id], left, right, size});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& left = symbols[b.left];
    Symbol& right = symbols[b.right];
    if (left.len == 0 || right.len == 0 || left.len + right.len != b.size) continue;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = b.left;
    try_add(left.prev, b.left);
    try_add(b.left, left.next);
  }

  // Merged symbols are tokens by construction; a lone character may not be one.
  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    const std::string_view piece = text.substr(symbols[i].start, symbols[i].len);
    const int32_t id = lookup_plain(piece);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    for (unsigned char c : piece) {
      if (byte_token_[c] >= 0) out.push_back(byte_token_[c]);
    }
  }
}

}  // namespace sq
