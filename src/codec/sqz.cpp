#include "codec/sqz.h"

#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

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
constexpr uint16_t kFormatVersion = 1;
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

// ---- chunks ---------------------------------------------------------------------------------------

struct Chunk {
  std::vector<int32_t> syms;  // the chunk's symbols (its head may be re-tokenized, see add_prefix_spaces)
  bool prefix_space = false;  // the first token carries a space that is not in the text
  uint64_t byte_begin = 0, byte_end = 0;
  std::string payload;  // coded bytes, or the original bytes when stored
  bool stored = false;
  uint64_t checksum = 0;
  double model_bits = 0;
  uint64_t n_tokens = 0;
};

// Chunks of at most `per_chunk` tokens. A chunk ends at the start of a line where one begins in its
// second half: the next chunk then starts where text starts, which the model predicts better than
// the middle of a sentence.
std::vector<Chunk> cut_chunks(const Coder& c, const Symbols& s, int32_t positions) {
  const int32_t per_chunk = c.tokens_per_chunk(positions);
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
    int32_t tokens = 0;
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

// SentencePiece models saw every text start as "▁Word" after BOS (the encoder's prefix space);
// a chunk that starts with "Word" would begin with tokens the model rarely saw there. Where the
// vocabulary adds a prefix space, the first line of each chunk is tokenized again with a space in
// front, kept only if it still round-trips and fits the chunk; the decoder drops that one space.
void add_prefix_spaces(const Coder& c, std::string_view input, std::vector<Chunk>& chunks,
                       int32_t positions) {
  if (c.tok->model() != Tokenizer::Model::Spm || !c.tok->add_space_prefix()) return;
  const int32_t per_chunk = c.tokens_per_chunk(positions);
  for (Chunk& ch : chunks) {
    size_t head = 0;
    uint64_t head_bytes = 0;
    while (head < ch.syms.size() && ch.syms[head] >= 0) {
      const std::string& p = c.piece[static_cast<size_t>(ch.syms[head])];
      head_bytes += p.size();
      ++head;
      if (!p.empty() && p.back() == '\n') break;
    }
    if (head == 0 || input[ch.byte_begin] == ' ') continue;
    std::string text(1, ' ');
    text.append(input.substr(ch.byte_begin, head_bytes));
    Symbols redone;
    if (!add_if_exact(c, text, redone) || redone.syms.empty()) continue;
    int32_t tokens = 0;
    for (int32_t sym : ch.syms) tokens += sym >= 0 ? 1 : 0;
    const auto grow = static_cast<int32_t>(redone.syms.size()) - static_cast<int32_t>(head);
    if (tokens + grow > per_chunk) continue;
    ch.syms.erase(ch.syms.begin(), ch.syms.begin() + static_cast<std::ptrdiff_t>(head));
    ch.syms.insert(ch.syms.begin(), redone.syms.begin(), redone.syms.end());
    ch.prefix_space = true;
  }
}

// One coding thread's model state.
struct Worker {
  const Coder& c;
  ThreadPool pool;
  KvCache kv;
  std::vector<float> logits;    // [kPrefillBatch, n_vocab] when compressing, [n_vocab] otherwise
  std::vector<float> uniform;   // all-zero logits: the distribution before any context
  FreqTable table;
  int64_t table_pos = -2;       // the context position `table` was built for

  Worker(const Coder& coder, int threads, int32_t positions)
      : c(coder), pool(threads), kv(coder.model->config, positions, ops::KvType::F16),
        uniform(static_cast<size_t>(coder.n_vocab), 0.0f) {}

  // The table for the symbol after context position `pos` (-1: before any context), given the
  // logits of that position.
  void build(int64_t pos, const float* row) {
    if (pos == table_pos) return;
    table.build(pos < 0 ? uniform.data() : row, c.n_vocab, true);
    table_pos = pos;
  }
};

// Compresses one chunk into chunk.payload.
void encode_chunk(Worker& w, std::string_view input, const Symbols& s, Chunk& chunk) {
  const Coder& c = w.c;
  // The model's context: the start token, then every token of the chunk.
  std::vector<int32_t> ctx;
  if (c.start_token >= 0) ctx.push_back(c.start_token);
  for (int32_t sym : chunk.syms) {
    if (sym >= 0) ctx.push_back(sym);
  }
  w.kv.clear();
  w.table_pos = -2;
  const auto n_vocab = static_cast<size_t>(c.n_vocab);
  w.logits.resize(kPrefillBatch * n_vocab);
  int64_t batch_begin = -1, batch_end = -1;  // context positions whose logits are in w.logits
  auto logits_at = [&](int64_t pos) -> const float* {
    if (pos < 0) return nullptr;
    if (pos >= batch_end) {
      batch_begin = w.kv.size();
      batch_end = std::min<int64_t>(batch_begin + kPrefillBatch, static_cast<int64_t>(ctx.size()));
      const auto n = static_cast<size_t>(batch_end - batch_begin);
      w.c.model->forward(std::span<const int32_t>(ctx.data() + batch_begin, n),
                         static_cast<int32_t>(batch_begin), w.kv, w.pool,
                         std::span<float>(w.logits.data(), n * n_vocab), true);
    }
    return w.logits.data() + static_cast<size_t>(pos - batch_begin) * n_vocab;
  };

  RangeEncoder enc;
  const int64_t offset = c.start_token >= 0 ? 0 : -1;  // context position before token 0
  int64_t coded = 0;
  for (const int32_t sym : chunk.syms) {
    const int64_t pos = offset + coded;
    w.build(pos, logits_at(pos));
    if (sym >= 0) {
      enc.encode(w.table.cum(sym), w.table.freq(sym), w.table.total());
      chunk.model_bits += w.table.model_bits(sym);
      ++coded;
    } else {
      const auto& [at, len] = s.raws[static_cast<size_t>(~sym)];
      enc.encode(w.table.cum(c.n_vocab), w.table.freq(c.n_vocab), w.table.total());
      enc.encode_bits(len - 1, 16);
      for (uint32_t k = 0; k < len; ++k) enc.encode_bits(static_cast<uint8_t>(input[at + k]), 8);
      chunk.model_bits += 16 + 8.0 * len;
    }
  }
  chunk.n_tokens = static_cast<uint64_t>(coded);
  const std::string_view original = input.substr(chunk.byte_begin, chunk.byte_end - chunk.byte_begin);
  chunk.checksum = xxh3(original);
  chunk.payload = enc.finish();
  if (chunk.payload.size() >= original.size()) {
    chunk.payload.assign(original);
    chunk.stored = true;
    chunk.prefix_space = false;
  }
}

[[noreturn]] void corrupt_chunk(uint64_t index, const char* what) {
  fail<FormatError>("damaged .sqz archive: chunk {} does not decode ({}); the archive is damaged or "
                    "was not written with this model", index, what);
}

// Decompresses one chunk of `length` bytes into `out`.
void decode_chunk(Worker& w, uint64_t index, std::string_view payload, uint64_t length,
                  int32_t positions, bool prefix_space, char* out) {
  const Coder& c = w.c;
  w.kv.clear();
  w.table_pos = -2;
  w.logits.resize(static_cast<size_t>(c.n_vocab));
  auto feed = [&](int32_t token) {
    if (w.kv.size() >= positions) corrupt_chunk(index, "more tokens than the chunk size");
    c.model->forward(std::span<const int32_t>(&token, 1), w.kv.size(), w.kv, w.pool, w.logits, false);
  };
  if (c.start_token >= 0 && length > 0) feed(c.start_token);
  RangeDecoder dec(payload);
  uint64_t produced = 0;
  while (produced < length) {
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
      if (prefix_space) corrupt_chunk(index, "an escape where a prefixed token was announced");
      for (uint32_t k = 0; k < len; ++k) {
        uint32_t b = 0;
        if (!dec.decode_bits(8, b)) corrupt_chunk(index, "a bad escaped byte");
        out[produced++] = static_cast<char>(b);
      }
      continue;
    }
    std::string_view p = c.piece[static_cast<size_t>(sym)];
    if (p.empty()) corrupt_chunk(index, "a token that stands for no bytes");
    if (prefix_space) {  // the first symbol: a token whose leading space is not in the text (it
                         // may be the space alone; every later token adds at least one byte)
      if (p[0] != ' ') corrupt_chunk(index, "no prefix space where one was announced");
      p.remove_prefix(1);
      prefix_space = false;
    }
    if (p.size() > length - produced) corrupt_chunk(index, "more bytes than the chunk holds");
    std::memcpy(out + produced, p.data(), p.size());
    produced += p.size();
    if (produced < length) feed(sym);
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
    bool stored = false, prefix_space = false;
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
    e.prefix_space = (p & 2) != 0;
    e.checksum = t.uint(4);
    if (e.length == 0 || e.length > info.original_bytes - sum_length) {
      fail<FormatError>("damaged .sqz archive: chunk lengths do not add up to the original size");
    }
    if (e.stored && (e.payload != e.length || e.prefix_space)) {
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
  chunks = cut_chunks(c, symbols, positions);
  add_prefix_spaces(c, input, chunks, positions);
  std::vector<uint64_t> sizes;
  for (const Chunk& ch : chunks) sizes.push_back(ch.byte_end - ch.byte_begin);
  run_workers(c, n_threads, positions, chunks.size(),
              [&](Worker& w, size_t i) { encode_chunk(w, input, symbols, chunks[i]); }, sizes,
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
    put_varint(out, (static_cast<uint64_t>(ch.payload.size()) << 2) | (ch.prefix_space ? 2 : 0) |
                        (ch.stored ? 1 : 0));
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
                  decode_chunk(w, i, payload, e.length, info.chunk_tokens, e.prefix_space, dst);
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
