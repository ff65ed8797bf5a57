#include "codec/sqz.h"

#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <future>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include "base/detmath.h"
#include "base/error.h"
#include "base/thread_pool.h"
#include "codec/freq.h"
#include "codec/range_coder.h"
#include "engine/engine.h"
#include "kernels/isa.h"
#include "model/kv_cache.h"
#include "tokenizer/unicode.h"

namespace sq::codec {
namespace {

constexpr char kMagic[4] = {'S', 'Q', 'Z', '\x1a'};
constexpr uint16_t kFormatVersion = 2;
constexpr size_t kMaxNameBytes = 1024;
constexpr int32_t kMinChunkTokens = 2;
constexpr int32_t kPrefillBatch = 64;       // positions per forward pass when compressing
constexpr uint32_t kMaxRawSegment = 65536;  // bytes per escape (coded as 16 bits of length - 1)
constexpr size_t kPieceTarget = 16384;      // bytes per tokenization piece

// ---- little-endian writing and checked reading ----------------------------------------------

void put_u16(std::string& out, uint16_t v) {
  for (int i = 0; i < 2; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

uint64_t xxh3(std::string_view bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

// XXH3-64 of the chunk table followed by the coded data (everything after the header but the
// checksum itself): damage anywhere is found before decoding starts.
uint64_t body_checksum(std::string_view archive, size_t table_begin, size_t table_end,
                       size_t payload_begin) {
  XXH3_state_t* state = XXH3_createState();
  if (state == nullptr) throw std::bad_alloc();
  XXH3_64bits_reset(state);
  XXH3_64bits_update(state, archive.data() + table_begin, table_end - table_begin);
  XXH3_64bits_update(state, archive.data() + payload_begin, archive.size() - payload_begin);
  const uint64_t h = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return h;
}

class Reader {
 public:
  Reader(std::string_view bytes, const char* what) : bytes_(bytes), what_(what) {}
  size_t pos() const { return pos_; }
  std::string_view bytes(size_t n) {
    need(n);
    const std::string_view s = bytes_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  uint64_t uint(int n_bytes) {
    const std::string_view s = bytes(static_cast<size_t>(n_bytes));
    uint64_t v = 0;
    for (int i = n_bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(s[static_cast<size_t>(i)]);
    return v;
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      const auto b = static_cast<uint8_t>(bytes(1)[0]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if ((b & 0x80) == 0) {
        if (shift == 63 && b > 1) break;
        return v;
      }
    }
    fail<FormatError>("not a valid .sqz archive: a length in the {} does not fit 64 bits", what_);
  }

 private:
  void need(size_t n) const {
    if (n > bytes_.size() - pos_) {
      fail<FormatError>("truncated .sqz archive: the {} needs {} more bytes at offset {}, the file "
                        "has {}", what_, n, pos_, bytes_.size() - pos_);
    }
  }
  std::string_view bytes_;
  size_t pos_ = 0;
  const char* what_;
};

// ---- what a model needs to know to code --------------------------------------------------------

// Everything both sides derive from the engine.
struct Coder {
  const Engine* engine = nullptr;
  const Model* model = nullptr;
  const Tokenizer* tok = nullptr;
  int32_t n_vocab = 0;
  int32_t start_token = -1;  // fed before a chunk's first symbol; -1: the first symbol is uniform
  std::vector<std::string> piece;  // token_bytes of every token

  explicit Coder(const Engine& e) : engine(&e), model(&e.model()), tok(&e.require_tokenizer()) {
    n_vocab = model->config.n_vocab;
    if (tok->n_vocab() > n_vocab) {
      fail<InvalidArgument>("the tokenizer has {} tokens but the model's output has only {}: it "
                            "cannot compress with this model", tok->n_vocab(), n_vocab);
    }
    start_token = tok->bos() >= 0 ? tok->bos() : tok->eos();
    piece.resize(static_cast<size_t>(n_vocab));
    for (int32_t id = 0; id < tok->n_vocab(); ++id) piece[static_cast<size_t>(id)] = tok->token_bytes(id);
  }
  // Tokens a chunk of `positions` model positions can code.
  int32_t tokens_per_chunk(int32_t positions) const { return start_token >= 0 ? positions - 1 : positions; }
};

// ---- the input as symbols -------------------------------------------------------------------------

// A symbol is a token id (>= 0) or a raw segment, ~index into `raws`.
struct Symbols {
  std::vector<int32_t> syms;
  std::vector<std::pair<uint64_t, uint32_t>> raws;  // offset in the input, length

  void add_raw(uint64_t offset, uint32_t length) {
    if (!syms.empty() && syms.back() < 0) {
      auto& last = raws[static_cast<size_t>(~syms.back())];
      if (last.first + last.second == offset && last.second + length <= kMaxRawSegment) {
        last.second += length;
        return;
      }
    }
    syms.push_back(~static_cast<int32_t>(raws.size()));
    raws.emplace_back(offset, length);
  }
  void add_byte(const Coder& c, uint64_t offset, uint8_t byte) {
    const int32_t id = c.tok->byte_token(byte);
    if (id >= 0) {
      syms.push_back(id);
    } else {
      add_raw(offset, 1);
    }
  }
};

// Appends the tokens of `text` when their bytes give back exactly `text`; false otherwise.
bool add_if_exact(const Coder& c, std::string_view text, Symbols& out) {
  const std::vector<int32_t> ids = c.tok->encode_continuation(text);
  size_t at = 0;
  for (int32_t id : ids) {
    const std::string& p = c.piece[static_cast<size_t>(id)];
    if (p.empty() || text.compare(at, p.size(), p) != 0) return false;
    at += p.size();
  }
  if (at != text.size()) return false;
  out.syms.insert(out.syms.end(), ids.begin(), ids.end());
  return true;
}

// Valid UTF-8 text at `offset`: as tokens where they round-trip; else word by word, then character
// by character, then as byte tokens, then raw.
void symbolize_text(const Coder& c, std::string_view text, uint64_t offset, Symbols& out) {
  if (text.empty() || add_if_exact(c, text, out)) return;
  size_t word = 0;
  for (size_t i = 1; i <= text.size(); ++i) {
    if (i < text.size() && text[i] != ' ' && text[i] != '\n') continue;
    const std::string_view w = text.substr(word, i - word);
    if (!add_if_exact(c, w, out)) {
      for (size_t pos = 0; pos < w.size();) {
        const size_t len = utf8::sequence_length(w, pos);
        if (!add_if_exact(c, w.substr(pos, len), out)) {
          for (size_t k = 0; k < len; ++k) out.add_byte(c, offset + word + pos + k, static_cast<uint8_t>(w[pos + k]));
        }
        pos += len;
      }
    }
    word = i;
  }
}

void symbolize_piece(const Coder& c, std::string_view input, size_t begin, size_t end, Symbols& out) {
  size_t run = begin;
  size_t pos = begin;
  const std::string_view all = input.substr(0, end);
  while (pos < end) {
    const size_t len = utf8::sequence_length(all, pos);
    if (len > 0) {
      pos += len;
      continue;
    }
    symbolize_text(c, input.substr(run, pos - run), run, out);
    out.add_byte(c, pos, static_cast<uint8_t>(input[pos]));
    run = ++pos;
  }
  symbolize_text(c, input.substr(run, end - run), run, out);
}

// Cuts the input into pieces for parallel tokenization: after a newline where there is one in the
// second half of a piece, else after a space, else at a character boundary.
std::vector<size_t> piece_bounds(std::string_view input) {
  std::vector<size_t> bounds{0};
  size_t start = 0;
  while (input.size() - start > kPieceTarget) {
    const size_t lo = start + kPieceTarget / 2, hi = start + kPieceTarget;
    size_t cut = input.rfind('\n', hi - 1);
    if (cut == std::string_view::npos || cut < lo) cut = input.rfind(' ', hi - 1);
    if (cut == std::string_view::npos || cut < lo) {
      cut = hi - 1;
      while (cut > lo && (static_cast<uint8_t>(input[cut + 1]) & 0xC0) == 0x80) --cut;
    }
    start = cut + 1;
    bounds.push_back(start);
  }
  bounds.push_back(input.size());
  return bounds;
}

Symbols symbolize(const Coder& c, std::string_view input, ThreadPool& pool) {
  const std::vector<size_t> bounds = piece_bounds(input);
  const size_t n = bounds.size() - 1;
  std::vector<Symbols> parts(n);
  pool.parallel_for(static_cast<int64_t>(n), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      symbolize_piece(c, input, bounds[static_cast<size_t>(i)], bounds[static_cast<size_t>(i) + 1],
                      parts[static_cast<size_t>(i)]);
    }
  });
  Symbols all;
  for (Symbols& p : parts) {
    for (int32_t s : p.syms) {
      if (s >= 0) {
        all.syms.push_back(s);
      } else {
        const auto& raw = p.raws[static_cast<size_t>(~s)];
        all.add_raw(raw.first, raw.second);
      }
    }
  }
  return all;
}

// ---- chunks and segments --------------------------------------------------------------------------
//
// A chunk is the unit of the table: coded independently of every other chunk (so that chunks are
// coded and decoded in parallel), with its own length, size and checksum. Inside a chunk the text
// runs through the model in segments: a segment starts from a fresh context (the start token, an
// empty cache) and holds at most the chunk size (-c) in tokens. The coder may start a new segment
// at the start of any line, where the text no longer depends on what came before (a new story, a
// new document); the decoder learns of it from one adaptive bit coded after every line end.

constexpr int32_t kSegmentsPerChunk = 8;  // a chunk holds up to this many full segments of text
constexpr int32_t kProbeTokens = 24;      // tokens of a line compared with and without context
constexpr int kBitTotalLog = 16;          // resolution of the adaptive bits

// An adaptive binary probability: counts halved when they grow large, so that it follows the text.
// Integers only, so that both sides compute the same frequencies.
class AdaptiveBit {
 public:
  void encode(RangeEncoder& enc, bool bit) {
    const uint64_t f1 = freq_one();
    if (bit) {
      enc.encode(kTotal - f1, f1, kTotal);
    } else {
      enc.encode(0, kTotal - f1, kTotal);
    }
    update(bit);
  }
  bool decode(RangeDecoder& dec, bool& bit) {
    const uint64_t f1 = freq_one();
    uint64_t v = 0;
    if (!dec.peek(kTotal, v)) return false;
    bit = v >= kTotal - f1;
    dec.consume(bit ? kTotal - f1 : 0, bit ? f1 : kTotal - f1);
    update(bit);
    return true;
  }
  // What coding `bit` costs now, in bits (the encoder's choices and statistics only).
  double cost(bool bit) const {
    const uint64_t f1 = freq_one();
    const auto f = static_cast<double>(bit ? f1 : kTotal - f1);
    return -detmath::log(f / static_cast<double>(kTotal)) / detmath::log(2.0);
  }

 private:
  static constexpr uint64_t kTotal = uint64_t{1} << kBitTotalLog;
  uint64_t freq_one() const {
    const uint64_t f = (uint64_t{n1_} << kBitTotalLog) / (uint64_t{n0_} + n1_);
    return std::clamp<uint64_t>(f, 1, kTotal - 1);
  }
  void update(bool bit) {
    (bit ? n1_ : n0_) += 2;
    if (n0_ + n1_ > 4096) {
      n0_ = (n0_ + 1) / 2;
      n1_ = (n1_ + 1) / 2;
    }
  }
  uint32_t n0_ = 1, n1_ = 1;
};

// The bits a chunk codes beside its symbols, the same on both sides.
struct SegmentBits {
  AdaptiveBit restart[2];  // after a line end: start a new segment? (context: the line was empty)
  AdaptiveBit prefix;      // after a segment start: does its first token carry a space the text lacks?
  bool prefix_capable = false;

  explicit SegmentBits(const Coder& c)
      : prefix_capable(c.tok->model() == Tokenizer::Model::Spm && c.tok->add_space_prefix()) {}
};

struct Chunk {
  std::vector<int32_t> syms;  // the chunk's symbols as the whole input was tokenized
  uint64_t byte_begin = 0, byte_end = 0;
  std::string payload;  // coded bytes, or the original bytes when stored
  bool stored = false;
  uint64_t checksum = 0;
  double model_bits = 0;
  double segment_bits = 0;  // what the restart and prefix bits cost at their probabilities
  uint64_t n_tokens = 0;
  uint64_t n_segments = 0;
};

// Chunks of at most `per_chunk` tokens. A chunk ends at the start of a line where one begins in its
// second half.
std::vector<Chunk> cut_chunks(const Coder& c, const Symbols& s, int64_t per_chunk) {
  auto bytes_of = [&](int32_t sym) -> const std::string* {
    return sym >= 0 ? &c.piece[static_cast<size_t>(sym)] : nullptr;
  };
  auto length_of = [&](int32_t sym) -> uint64_t {
    return sym >= 0 ? c.piece[static_cast<size_t>(sym)].size() : s.raws[static_cast<size_t>(~sym)].second;
  };
  std::vector<Chunk> chunks;
  size_t begin = 0;
  uint64_t begin_byte = 0;
  while (begin < s.syms.size()) {
    int64_t tokens = 0;
    uint64_t at = begin_byte;
    size_t end = s.syms.size(), line_end = 0;
    uint64_t end_byte = 0, line_end_byte = 0;
    for (size_t i = begin; i < s.syms.size(); ++i) {
      const int32_t sym = s.syms[i];
      at += length_of(sym);
      if (sym < 0) continue;
      ++tokens;
      const std::string* p = bytes_of(sym);
      const std::string* next = i + 1 < s.syms.size() ? bytes_of(s.syms[i + 1]) : nullptr;
      if (tokens >= per_chunk / 2 && !p->empty() && p->back() == '\n' && next != nullptr &&
          !next->empty() && (*next)[0] != '\n') {
        line_end = i + 1;
        line_end_byte = at;
      }
      if (tokens == per_chunk) {
        end = i + 1;
        end_byte = at;
        break;
      }
    }
    if (end == s.syms.size()) {
      end_byte = at;
    } else if (line_end > 0) {
      end = line_end;
      end_byte = line_end_byte;
    }
    Chunk ch;
    ch.syms.assign(s.syms.begin() + static_cast<std::ptrdiff_t>(begin),
                   s.syms.begin() + static_cast<std::ptrdiff_t>(end));
    ch.byte_begin = begin_byte;
    ch.byte_end = end_byte;
    chunks.push_back(ch);
    begin = end;
    begin_byte = end_byte;
  }
  return chunks;
}

// One coding thread's model state.
struct Worker {
  const Coder& c;
  ThreadPool pool;
  KvCache kv;
  KvCache probe_kv;             // the start of a line from a fresh context (compressing)
  std::vector<float> logits;    // [kPrefillBatch, n_vocab] when compressing, [n_vocab] otherwise
  std::vector<float> prev_row;  // compressing: the last row of the previous batch
  std::vector<float> probe_logits;
  std::vector<float> uniform;   // all-zero logits: the distribution before any context
  FreqTable table;
  std::vector<float> scratch;   // token_bits()
  int64_t table_pos = -2;       // the context position `table` was built for

  Worker(const Coder& coder, int threads, int32_t positions)
      : c(coder), pool(threads), kv(coder.model->config, positions, ops::KvType::F16),
        probe_kv(coder.model->config, std::min(positions, kProbeTokens + 8), ops::KvType::F16),
        uniform(static_cast<size_t>(coder.n_vocab), 0.0f) {}

  // The table for the symbol after context position `pos` (-1: before any context), given the
  // logits of that position.
  void build(int64_t pos, const float* row) {
    if (pos == table_pos) return;
    table.build(pos < 0 ? uniform.data() : row, c.n_vocab, true);
    table_pos = pos;
  }
};

bool ends_line(std::string_view bytes) { return !bytes.empty() && bytes.back() == '\n'; }

// Compresses one chunk into chunk.payload.
class ChunkEncoder {
 public:
  ChunkEncoder(Worker& w, std::string_view input, const Symbols& s, Chunk& chunk, int32_t positions)
      : w_(w), c_(w.c), input_(input), s_(s), chunk_(chunk), bits_(c_),
        per_seg_(c_.tokens_per_chunk(positions)), n_vocab_(static_cast<size_t>(c_.n_vocab)) {}

  void run() {
    w_.logits.resize(kPrefillBatch * n_vocab_);
    w_.prev_row.resize(n_vocab_);
    // The chunk's lines: a line ends after a symbol whose bytes end with a newline.
    const std::vector<int32_t>& syms = chunk_.syms;
    size_t line = 0;
    uint64_t byte = chunk_.byte_begin;
    bool first = true;
    while (line < syms.size()) {
      size_t end = line;
      uint64_t end_byte = byte;
      while (end < syms.size()) {
        end_byte += length_of(syms[end]);
        if (ends_line(bytes_of(syms[end]))) {
          ++end;
          break;
        }
        ++end;
      }
      const std::span<const int32_t> original(syms.data() + line, end - line);
      code_line(original, byte, end_byte, first);
      first = false;
      line = end;
      byte = end_byte;
    }
    chunk_.n_tokens = static_cast<uint64_t>(coded_tokens_);
    const std::string_view text = input_.substr(chunk_.byte_begin, chunk_.byte_end - chunk_.byte_begin);
    chunk_.checksum = xxh3(text);
    chunk_.payload = enc_.finish();
    if (chunk_.payload.size() >= text.size()) {
      chunk_.payload.assign(text);
      chunk_.stored = true;
    }
  }

 private:
  uint64_t length_of(int32_t sym) const {
    return sym >= 0 ? c_.piece[static_cast<size_t>(sym)].size() : s_.raws[static_cast<size_t>(~sym)].second;
  }
  std::string_view bytes_of(int32_t sym) const {
    if (sym >= 0) return c_.piece[static_cast<size_t>(sym)];
    const auto& [at, len] = s_.raws[static_cast<size_t>(~sym)];
    return input_.substr(at, len);
  }
  static int32_t count_tokens(std::span<const int32_t> v) {
    int32_t n = 0;
    for (int32_t sym : v) n += sym >= 0 ? 1 : 0;
    return n;
  }

  // The line tokenized after a space, as a fresh segment would start it under a SentencePiece
  // vocabulary; empty when it would not round-trip or would end lines elsewhere.
  std::vector<int32_t> prefixed(std::span<const int32_t> original, uint64_t byte, uint64_t end_byte) const {
    if (!bits_.prefix_capable || byte == end_byte || input_[byte] == ' ') return {};
    std::string text(1, ' ');
    text.append(input_.substr(byte, end_byte - byte));
    Symbols redone;
    if (!add_if_exact(c_, text, redone) || redone.syms.empty()) return {};
    for (size_t i = 0; i + 1 < redone.syms.size(); ++i) {
      if (ends_line(bytes_of(redone.syms[i]))) return {};
    }
    if (ends_line(bytes_of(redone.syms.back())) != ends_line(bytes_of(original.back()))) return {};
    return redone.syms;
  }

  // The distribution row after context position `pos` of the current segment.
  const float* row(int64_t pos) {
    if (pos < 0) return nullptr;
    if (pos == batch_begin_ - 1 && prev_valid_) return w_.prev_row.data();
    if (pos >= batch_end_) {
      if (batch_end_ > batch_begin_) {
        std::memcpy(w_.prev_row.data(), w_.logits.data() + static_cast<size_t>(batch_end_ - 1 - batch_begin_) * n_vocab_,
                    n_vocab_ * sizeof(float));
        prev_valid_ = batch_end_ - 1 == w_.kv.size() - 1;
      }
      batch_begin_ = w_.kv.size();
      batch_end_ = std::min<int64_t>(batch_begin_ + kPrefillBatch, static_cast<int64_t>(ctx_.size()));
      const auto n = static_cast<size_t>(batch_end_ - batch_begin_);
      c_.model->forward(std::span<const int32_t>(ctx_.data() + batch_begin_, n),
                        static_cast<int32_t>(batch_begin_), w_.kv, w_.pool,
                        std::span<float>(w_.logits.data(), n * n_vocab_), true);
    }
    return w_.logits.data() + static_cast<size_t>(pos - batch_begin_) * n_vocab_;
  }
  // Context position before the next token of the segment.
  int64_t next_pos() const { return (c_.start_token >= 0 ? 0 : -1) + seg_tokens_; }

  void start_segment(bool prefix) {
    w_.kv.clear();
    ctx_.clear();
    if (c_.start_token >= 0) ctx_.push_back(c_.start_token);
    batch_begin_ = batch_end_ = 0;
    prev_valid_ = false;
    w_.table_pos = -2;
    seg_tokens_ = 0;
    if (bits_.prefix_capable) {
      chunk_.segment_bits += bits_.prefix.cost(prefix);
      bits_.prefix.encode(enc_, prefix);
    }
    ++chunk_.n_segments;
  }
  // Adds the tokens of v[from..] that still fit the segment to the context to run.
  void plan(std::span<const int32_t> v, size_t from) {
    int32_t room = per_seg_ - (static_cast<int32_t>(ctx_.size()) - (c_.start_token >= 0 ? 1 : 0));
    for (size_t i = from; i < v.size() && room > 0; ++i) {
      if (v[i] >= 0) {
        ctx_.push_back(v[i]);
        --room;
      }
    }
  }

  // Bits the first `max_tokens` tokens of `v` cost in the current segment, and the bytes they
  // cover. The context must hold them (plan()).
  std::pair<double, uint64_t> cost_here(std::span<const int32_t> v, int32_t max_tokens) {
    const int64_t planned = static_cast<int64_t>(ctx_.size()) - (c_.start_token >= 0 ? 1 : 0) - seg_tokens_;
    double bits = 0;
    uint64_t bytes = 0;
    int64_t pos = next_pos();
    int32_t n = 0;
    for (int32_t sym : v) {
      if (sym < 0 || n == max_tokens || n == planned) break;
      bits += token_bits(row(pos), c_.n_vocab, sym, w_.scratch);
      bytes += c_.piece[static_cast<size_t>(sym)].size();
      ++pos;
      ++n;
    }
    return {bits, bytes};
  }
  // Bits the tokens of `v` that cover `bytes` bytes (plus a prefix space) cost from a fresh start.
  double cost_fresh(std::span<const int32_t> v, uint64_t bytes, bool prefix) {
    std::vector<int32_t> probe{c_.start_token};
    uint64_t covered = 0;
    for (int32_t sym : v) {
      if (sym < 0 || covered >= bytes + (prefix ? 1 : 0) ||
          static_cast<int32_t>(probe.size()) >= w_.probe_kv.capacity()) break;
      probe.push_back(sym);
      covered += c_.piece[static_cast<size_t>(sym)].size();
    }
    const size_t n = probe.size();
    w_.probe_logits.resize(n * n_vocab_);
    w_.probe_kv.clear();
    c_.model->forward(probe, 0, w_.probe_kv, w_.pool, w_.probe_logits, true);
    double bits = 0;
    for (size_t i = 1; i < n; ++i) {
      bits += token_bits(w_.probe_logits.data() + (i - 1) * n_vocab_, c_.n_vocab, probe[i], w_.scratch);
    }
    // A probe that could not cover the same text (an escape, a tiny chunk size) does not count.
    return covered >= bytes + (prefix ? 1 : 0) ? bits : std::numeric_limits<double>::infinity();
  }

  void code_line(std::span<const int32_t> original, uint64_t byte, uint64_t end_byte, bool first) {
    const std::vector<int32_t> pre = prefixed(original, byte, end_byte);
    const std::span<const int32_t> fresh = pre.empty() ? original : std::span<const int32_t>(pre);
    bool restart = first;
    bool planned = false;
    if (!first) {
      const bool full = seg_tokens_ == per_seg_;
      if (!full) {
        const int32_t room = per_seg_ - seg_tokens_;
        const int32_t need = count_tokens(original);
        const bool blank = byte >= chunk_.byte_begin + 2 && input_[byte - 2] == '\n';
        AdaptiveBit& bit = bits_.restart[blank ? 1 : 0];
        if (need > room && count_tokens(fresh) <= per_seg_) {
          restart = true;  // the line fits a fresh segment but not this one
        } else if (blank && c_.start_token >= 0 && need > 0 &&
                   !(original.size() == 1 && bytes_of(original[0]) == "\n")) {
          // Only after an empty line, where documents and stories are separated: elsewhere a
          // fresh start rarely pays, and probing every line of code or of a table would double
          // the work.
          plan(original, 0);
          planned = true;
          const auto [here, bytes] = cost_here(original, kProbeTokens);
          const double fresh_bits = cost_fresh(fresh, bytes, !pre.empty());
          restart = fresh_bits + bit.cost(true) < here + bit.cost(false);
        }
        chunk_.segment_bits += bit.cost(restart);
        bit.encode(enc_, restart);
      } else {
        restart = true;  // forced: the segment is full
      }
    }
    const std::span<const int32_t> v = restart ? fresh : original;
    if (restart) start_segment(!pre.empty());
    if (restart || !planned) plan(v, 0);
    for (size_t i = 0; i < v.size(); ++i) {
      if (i > 0 && seg_tokens_ == per_seg_) {  // forced mid-line: the rest goes on in a new segment
        start_segment(false);
        plan(v, i);
      }
      const int32_t sym = v[i];
      const int64_t pos = next_pos();
      w_.build(pos, row(pos));
      if (sym >= 0) {
        enc_.encode(w_.table.cum(sym), w_.table.freq(sym), w_.table.total());
        chunk_.model_bits += w_.table.model_bits(sym);
        ++seg_tokens_;
        ++coded_tokens_;
      } else {
        const auto& [at, len] = s_.raws[static_cast<size_t>(~sym)];
        enc_.encode(w_.table.cum(c_.n_vocab), w_.table.freq(c_.n_vocab), w_.table.total());
        enc_.encode_bits(len - 1, 16);
        for (uint32_t k = 0; k < len; ++k) enc_.encode_bits(static_cast<uint8_t>(input_[at + k]), 8);
        chunk_.model_bits += 16 + 8.0 * len;
      }
    }
  }

  Worker& w_;
  const Coder& c_;
  std::string_view input_;
  const Symbols& s_;
  Chunk& chunk_;
  SegmentBits bits_;
  RangeEncoder enc_;
  const int32_t per_seg_;
  const size_t n_vocab_;
  std::vector<int32_t> ctx_;  // the segment's context: the start token, then its tokens
  int64_t batch_begin_ = 0, batch_end_ = 0;  // context positions whose rows are in w.logits
  bool prev_valid_ = false;
  int32_t seg_tokens_ = 0;
  int64_t coded_tokens_ = 0;
};

[[noreturn]] void corrupt_chunk(uint64_t index, const char* what) {
  fail<FormatError>("damaged .sqz archive: chunk {} does not decode ({}); the archive is damaged or "
                    "was not written with this model", index, what);
}

// Decompresses one chunk of `length` bytes into `out`.
void decode_chunk(Worker& w, uint64_t index, std::string_view payload, uint64_t length,
                  int32_t positions, char* out) {
  const Coder& c = w.c;
  const int32_t per_seg = c.tokens_per_chunk(positions);
  SegmentBits bits(c);
  RangeDecoder dec(payload);
  w.logits.resize(static_cast<size_t>(c.n_vocab));
  int32_t seg_tokens = 0;
  bool strip_space = false;
  auto feed = [&](int32_t token) {
    if (w.kv.size() >= positions) corrupt_chunk(index, "more tokens than the chunk size");
    c.model->forward(std::span<const int32_t>(&token, 1), w.kv.size(), w.kv, w.pool, w.logits, false);
  };
  auto start_segment = [&] {
    w.kv.clear();
    w.table_pos = -2;
    seg_tokens = 0;
    if (c.start_token >= 0) feed(c.start_token);
    strip_space = false;
    if (bits.prefix_capable && !bits.prefix.decode(dec, strip_space)) {
      corrupt_chunk(index, "a bad segment start");
    }
  };
  uint64_t produced = 0;
  if (length > 0) start_segment();
  while (produced < length) {
    const uint64_t before = produced;
    w.build(w.kv.size() - 1, w.logits.data());
    uint64_t v = 0;
    if (!dec.peek(w.table.total(), v)) corrupt_chunk(index, "a code outside the distribution");
    const int32_t sym = w.table.find(v);
    dec.consume(w.table.cum(sym), w.table.freq(sym));
    if (dec.overrun()) corrupt_chunk(index, "read past the end of its data");
    if (sym == c.n_vocab) {
      uint32_t len = 0;
      if (!dec.decode_bits(16, len)) corrupt_chunk(index, "a bad escape length");
      ++len;
      if (len > length - produced) corrupt_chunk(index, "an escape longer than the chunk");
      if (strip_space) corrupt_chunk(index, "an escape where a prefixed token was announced");
      for (uint32_t k = 0; k < len; ++k) {
        uint32_t b = 0;
        if (!dec.decode_bits(8, b)) corrupt_chunk(index, "a bad escaped byte");
        out[produced++] = static_cast<char>(b);
      }
    } else {
      std::string_view p = c.piece[static_cast<size_t>(sym)];
      if (p.empty()) corrupt_chunk(index, "a token that stands for no bytes");
      if (strip_space) {  // the first symbol of a segment: a token whose leading space is not in the
                          // text (it may be the space alone; every later token adds a byte)
        if (p[0] != ' ') corrupt_chunk(index, "no prefix space where one was announced");
        p.remove_prefix(1);
        strip_space = false;
      }
      if (p.size() > length - produced) corrupt_chunk(index, "more bytes than the chunk holds");
      std::memcpy(out + produced, p.data(), p.size());
      produced += p.size();
      ++seg_tokens;
    }
    if (produced == length) break;
    bool restart = false;
    if (seg_tokens == per_seg) {
      restart = true;
    } else if (produced > before && out[produced - 1] == '\n') {
      const bool blank = produced >= 2 && out[produced - 2] == '\n';
      if (!bits.restart[blank ? 1 : 0].decode(dec, restart)) corrupt_chunk(index, "a bad line end");
    }
    if (restart) {
      start_segment();
    } else if (sym != c.n_vocab) {
      feed(sym);
    }
  }
  if (dec.overrun()) corrupt_chunk(index, "read past the end of its data");
}

// Runs job(worker, i) for i in [0, n) on `n_threads` threads split into workers, reporting
// progress from the calling thread. The first exception is rethrown once every worker stopped.
template <typename Job>
void run_workers(const Coder& c, int n_threads, int32_t positions, size_t n, const Job& job,
                 const std::vector<uint64_t>& bytes_of, uint64_t total_bytes, const ProgressFn& progress) {
  if (n == 0) return;
  const int n_workers = static_cast<int>(std::min<size_t>(static_cast<size_t>(n_threads), n));
  const int per_worker = std::max(1, n_threads / n_workers);
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done_bytes{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto body = [&] {
    try {
      Worker w(c, per_worker, positions);
      for (size_t i; !failed.load() && (i = next.fetch_add(1)) < n;) {
        job(w, i);
        done_bytes.fetch_add(bytes_of[i]);
      }
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      failed.store(true);
    }
  };
  std::vector<std::future<void>> workers;
  for (int k = 0; k < n_workers; ++k) workers.push_back(std::async(std::launch::async, body));
  for (auto& f : workers) {
    while (f.wait_for(std::chrono::milliseconds(200)) != std::future_status::ready) {
      if (progress) progress(done_bytes.load(), total_bytes);
    }
  }
  if (error) std::rethrow_exception(error);
  if (progress) progress(total_bytes, total_bytes);
}

int resolve_threads(int n) { return n > 0 ? n : default_thread_count(); }

struct Header {
  SqzInfo info;
  struct Entry {
    uint64_t length = 0, payload = 0, checksum = 0;
    bool stored = false;
  };
  std::vector<Entry> chunks;
  size_t payload_offset = 0;
};

Header parse(std::string_view archive) {
  Header h;
  Reader r(archive, "header");
  if (archive.size() < 4 || std::memcmp(archive.data(), kMagic, 4) != 0) {
    fail<FormatError>("not a .sqz archive: it does not start with the magic bytes \"SQZ\\x1a\"");
  }
  r.bytes(4);
  SqzInfo& info = h.info;
  info.format_version = static_cast<uint32_t>(r.uint(2));
  if (info.format_version != kFormatVersion) {
    fail<FormatError>(".sqz format version {} is not supported; this squeeze reads version {}",
                      info.format_version, kFormatVersion);
  }
  const uint64_t flags = r.uint(2);
  info.kernel_version = static_cast<uint32_t>(r.uint(4));
  info.model_fingerprint = r.uint(8);
  info.chunk_tokens = static_cast<int32_t>(r.uint(4));
  info.original_bytes = r.uint(8);
  info.original_xxh3 = r.uint(8);
  info.n_chunks = r.uint(4);
  const auto name_len = static_cast<size_t>(r.uint(2));
  info.model_name = std::string(r.bytes(name_len));
  const size_t header_end = r.pos();
  const uint64_t header_sum = r.uint(8);
  if (header_sum != xxh3(archive.substr(0, header_end))) {
    fail<FormatError>("damaged .sqz archive: the header's checksum does not match its contents");
  }
  if (flags != 0) fail<FormatError>(".sqz archive has unknown flags {:#x}; this squeeze knows none", flags);
  if (name_len > kMaxNameBytes) fail<FormatError>(".sqz model name is {} bytes; at most {}", name_len, kMaxNameBytes);
  if (info.chunk_tokens < kMinChunkTokens) {
    fail<FormatError>(".sqz chunk size is {} tokens; expected at least {}", info.chunk_tokens, kMinChunkTokens);
  }
  // Every chunk holds at least one byte, so there cannot be more chunks than bytes.
  if (info.n_chunks > info.original_bytes || (info.original_bytes > 0 && info.n_chunks == 0)) {
    fail<FormatError>(".sqz archive claims {} chunks for {} bytes", info.n_chunks, info.original_bytes);
  }
  // Each table entry takes at least 6 bytes: a cheap bound before allocating.
  if (info.n_chunks > (archive.size() - r.pos()) / 6) {
    fail<FormatError>("truncated .sqz archive: {} chunks announced, the file is {} bytes",
                      info.n_chunks, archive.size());
  }
  const size_t table_begin = r.pos();
  Reader t(archive.substr(table_begin), "chunk table");
  h.chunks.resize(static_cast<size_t>(info.n_chunks));
  uint64_t sum_length = 0, sum_payload = 0;
  for (auto& e : h.chunks) {
    e.length = t.varint();
    const uint64_t p = t.varint();
    e.payload = p >> 2;
    e.stored = (p & 1) != 0;
    e.checksum = t.uint(4);
    if ((p & 2) != 0) fail<FormatError>("damaged .sqz archive: a chunk entry sets a reserved flag");
    if (e.length == 0 || e.length > info.original_bytes - sum_length) {
      fail<FormatError>("damaged .sqz archive: chunk lengths do not add up to the original size");
    }
    if (e.stored && e.payload != e.length) {
      fail<FormatError>("damaged .sqz archive: a stored chunk's entry is inconsistent");
    }
    sum_length += e.length;
    if (e.payload > archive.size()) fail<FormatError>("damaged .sqz archive: a chunk is larger than the file");
    sum_payload += e.payload;
  }
  const size_t table_end = table_begin + t.pos();
  Reader tail(archive.substr(table_end), "chunk table");
  const uint64_t body_sum = tail.uint(8);
  if (sum_length != info.original_bytes) {
    fail<FormatError>("damaged .sqz archive: chunks hold {} bytes, the header says {}", sum_length,
                      info.original_bytes);
  }
  h.payload_offset = table_end + 8;
  if (sum_payload != archive.size() - h.payload_offset) {
    fail<FormatError>("{} .sqz archive: the chunks need {} bytes of data after the table, the file has {}",
                      sum_payload > archive.size() - h.payload_offset ? "truncated" : "damaged",
                      sum_payload, archive.size() - h.payload_offset);
  }
  if (body_sum != body_checksum(archive, table_begin, table_end, h.payload_offset)) {
    fail<FormatError>("damaged .sqz archive: the checksum of the chunk table and the coded data does "
                      "not match them");
  }
  return h;
}

}  // namespace

int32_t default_chunk_tokens(const Engine& engine) {
  return std::min(engine.model().config.n_ctx_train > 0 ? engine.model().config.n_ctx_train : 2048, 2048);
}

uint64_t model_fingerprint(const Engine& engine) {
  XXH3_state_t* state = XXH3_createState();
  if (state == nullptr) throw std::bad_alloc();
  XXH3_64bits_reset(state);
  auto put = [&](const void* p, size_t n) { XXH3_64bits_update(state, p, n); };
  auto put_str = [&](std::string_view s) {
    const uint64_t n = s.size();
    put(&n, sizeof n);
    put(s.data(), s.size());
  };
  const Model& m = engine.model();
  const ModelConfig& cfg = m.config;
  put_str(cfg.arch);
  const int32_t ints[] = {cfg.n_vocab, cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.n_head_kv,
                          cfg.head_dim, cfg.n_ff, cfg.n_rot, static_cast<int32_t>(cfg.rope_style),
                          cfg.n_expert, cfg.n_expert_used, m.output_tied ? 1 : 0};
  put(ints, sizeof ints);
  const float floats[] = {cfg.norm_eps, cfg.rope_freq_base, cfg.rope_freq_scale};
  put(floats, sizeof floats);
  put(m.rope_freq_factors.data(), m.rope_freq_factors.size() * sizeof(float));
  for (const TensorView& t : m.tensors) {
    put_str(t.name);
    const auto type = static_cast<int32_t>(t.type);
    put(&type, sizeof type);
    put(t.ne.data(), sizeof t.ne);
    put(t.data, t.n_bytes());
  }
  const Tokenizer& tok = engine.require_tokenizer();
  put_str(tok.kind());
  for (int32_t id = 0; id < tok.n_vocab(); ++id) {
    put_str(tok.token_text(id));
    const auto type = static_cast<int32_t>(tok.token_type(id));
    const float score = tok.token_score(id);
    put(&type, sizeof type);
    put(&score, sizeof score);
  }
  const int32_t specials[] = {tok.bos(), tok.eos(), tok.add_bos_default() ? 1 : 0,
                              tok.add_space_prefix() ? 1 : 0};
  put(specials, sizeof specials);
  const uint64_t h = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return h;
}

std::string zip(const Engine& engine, std::string_view input, const ZipOptions& options, ZipStats* stats) {
  const auto t0 = std::chrono::steady_clock::now();
  const Coder c(engine);
  const int32_t context = engine.model().config.n_ctx_train;
  const int32_t positions = options.chunk_tokens > 0 ? options.chunk_tokens : default_chunk_tokens(engine);
  if (options.chunk_tokens < 0 || positions < kMinChunkTokens) {
    fail<InvalidArgument>("chunk size (-c) is {}; expected at least {} tokens", options.chunk_tokens,
                          kMinChunkTokens);
  }
  if (context > 0 && positions > context) {
    fail<InvalidArgument>("chunk size (-c) is {} tokens, more than the model's context of {}",
                          positions, context);
  }
  const int n_threads = resolve_threads(options.n_threads);
  std::vector<Chunk> chunks;
  Symbols symbols;
  {
    ThreadPool pool(n_threads);
    symbols = symbolize(c, input, pool);
  }
  chunks = cut_chunks(c, symbols, int64_t{kSegmentsPerChunk} * c.tokens_per_chunk(positions));
  std::vector<uint64_t> sizes;
  for (const Chunk& ch : chunks) sizes.push_back(ch.byte_end - ch.byte_begin);
  run_workers(c, n_threads, positions, chunks.size(),
              [&](Worker& w, size_t i) { ChunkEncoder(w, input, symbols, chunks[i], positions).run(); }, sizes,
              input.size(), options.progress);

  std::string out(kMagic, 4);
  put_u16(out, kFormatVersion);
  put_u16(out, 0);
  put_u32(out, kernels::kDeterministicPathVersion);
  put_u64(out, model_fingerprint(engine));
  put_u32(out, static_cast<uint32_t>(positions));
  put_u64(out, input.size());
  put_u64(out, xxh3(input));
  put_u32(out, static_cast<uint32_t>(chunks.size()));
  std::string name = engine.model().path;
  if (const size_t slash = name.find_last_of('/'); slash != std::string::npos) name.erase(0, slash + 1);
  if (name.size() > kMaxNameBytes) name.resize(kMaxNameBytes);
  put_u16(out, static_cast<uint16_t>(name.size()));
  out += name;
  put_u64(out, xxh3(out));
  const size_t table_begin = out.size();
  for (const Chunk& ch : chunks) {
    put_varint(out, ch.byte_end - ch.byte_begin);
    put_varint(out, (static_cast<uint64_t>(ch.payload.size()) << 2) | (ch.stored ? 1 : 0));
    put_u32(out, static_cast<uint32_t>(ch.checksum));
  }
  const size_t table_end = out.size();
  put_u64(out, 0);  // the body's checksum, filled in below
  const size_t payload_begin = out.size();
  for (const Chunk& ch : chunks) out += ch.payload;
  const uint64_t body = body_checksum(out, table_begin, table_end, payload_begin);
  for (int i = 0; i < 8; ++i) out[table_end + static_cast<size_t>(i)] = static_cast<char>(body >> (8 * i));

  if (stats != nullptr) {
    *stats = ZipStats{};
    stats->input_bytes = input.size();
    stats->archive_bytes = out.size();
    stats->payload_bytes = out.size() - payload_begin;
    stats->n_chunks = chunks.size();
    for (const Chunk& ch : chunks) {
      stats->n_tokens += ch.n_tokens;
      stats->model_bits += ch.model_bits;
      stats->stored_chunks += ch.stored ? 1 : 0;
      stats->n_segments += ch.n_segments;
      stats->segment_bits += ch.segment_bits;
    }
    for (const auto& raw : symbols.raws) stats->escaped_bytes += raw.second;
    stats->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return out;
}

SqzInfo read_info(std::string_view archive) { return parse(archive).info; }

std::string unzip(const Engine& engine, std::string_view archive, const UnzipOptions& options) {
  const Header h = parse(archive);
  const SqzInfo& info = h.info;
  if (info.kernel_version != kernels::kDeterministicPathVersion) {
    fail<InvalidArgument>("the archive was written by kernels of deterministic-path version {}; this "
                          "squeeze has version {} and would not reproduce its probabilities",
                          info.kernel_version, kernels::kDeterministicPathVersion);
  }
  const uint64_t fingerprint = model_fingerprint(engine);
  if (fingerprint != info.model_fingerprint) {
    fail<InvalidArgument>("the archive was written with model \"{}\" (fingerprint {:016x}), not with "
                          "{} (fingerprint {:016x})", info.model_name, info.model_fingerprint,
                          engine.model().path, fingerprint);
  }
  const Coder c(engine);
  const int32_t context = engine.model().config.n_ctx_train;
  if (context > 0 && info.chunk_tokens > context) {
    fail<FormatError>(".sqz chunk size {} exceeds the model's context of {}", info.chunk_tokens, context);
  }
  std::string out(static_cast<size_t>(info.original_bytes), '\0');
  std::vector<uint64_t> out_offset, in_offset, sizes;
  uint64_t o = 0, p = h.payload_offset;
  for (const auto& e : h.chunks) {
    out_offset.push_back(o);
    in_offset.push_back(p);
    sizes.push_back(e.length);
    o += e.length;
    p += e.payload;
  }
  run_workers(c, resolve_threads(options.n_threads), info.chunk_tokens, h.chunks.size(),
              [&](Worker& w, size_t i) {
                const auto& e = h.chunks[i];
                const std::string_view payload = archive.substr(in_offset[i], e.payload);
                char* dst = out.data() + out_offset[i];
                if (e.stored) {
                  std::memcpy(dst, payload.data(), payload.size());
                } else {
                  decode_chunk(w, i, payload, e.length, info.chunk_tokens, dst);
                }
                if ((xxh3(std::string_view(dst, e.length)) & 0xFFFFFFFF) != e.checksum) {
                  corrupt_chunk(i, "its checksum does not match");
                }
              },
              sizes, info.original_bytes, options.progress);
  if (xxh3(out) != info.original_xxh3) {
    fail<FormatError>("damaged .sqz archive: the decompressed data's checksum does not match the "
                      "original's");
  }
  return out;
}

}  // namespace sq::codec
