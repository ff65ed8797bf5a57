#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <limits>
#include <utility>

#include <fmt/format.h>

#include "base/error.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/unicode.h"

namespace sq {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581, SentencePiece's space
constexpr std::string_view kUnknownGlyph = "\xE2\x96\x85";  // U+2585, how llama.cpp shows <unk>

constexpr std::array<std::string_view, 7> kEndMarkers = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>"};

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string_view::npos; pos = hit + from.size()) {
    out.append(s.substr(pos, hit - pos));
    out.append(to);
  }
  out.append(s.substr(pos));
  return out;
}

// "<0xAB>" -> 0xAB; -1 when the text is not of that form.
int parse_byte_token(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  int value = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = text[i];
    int digit;
    if (c >= '0' && c <= '9') digit = c - '0';
    else if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    else if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    else return -1;
    value = value * 16 + digit;
  }
  return value;
}

bool is_special_type(TokenType t) {
  return t == TokenType::Control || t == TokenType::UserDefined || t == TokenType::Unknown;
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::create(VocabData d) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  if (d.model == "llama") {
    t->model_ = Model::Spm;
  } else if (d.model == "gpt2") {
    t->model_ = Model::Bpe;
  } else {
    fail<UnsupportedError>(
        "tokenizer model '{}' is not supported; supported: llama (SentencePiece BPE), gpt2 "
        "(byte-level BPE)",
        d.model);
  }
  const size_t n = d.tokens.size();
  if (n == 0) fail<FormatError>("the vocabulary has no tokens; expected at least one");
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    fail<FormatError>("the vocabulary has {} tokens; at most {} are supported", n,
                      std::numeric_limits<int32_t>::max());
  }
  if (!d.scores.empty() && d.scores.size() != n) {
    fail<FormatError>("the vocabulary has {} scores for {} tokens; expected one score per token",
                      d.scores.size(), n);
  }
  if (!d.types.empty() && d.types.size() != n) {
    fail<FormatError>("the vocabulary has {} token types for {} tokens; expected one per token",
                      d.types.size(), n);
  }
  for (size_t i = 0; i < d.types.size(); ++i) {
    const auto v = static_cast<int32_t>(d.types[i]);
    if (v < 0 || v > 6) {
      fail<FormatError>("token {} ('{}') has type {}; expected 0..6 (normal 1, unknown 2, control 3, "
                        "user-defined 4, unused 5, byte 6)",
                        i, d.tokens[i], v);
    }
  }
  const auto check_special = [n](int32_t id, std::string_view what) {
    if (id < -1 || id >= static_cast<int64_t>(n)) {
      fail<FormatError>("the {} token id is {}; expected an id below the vocabulary size {} (or none)",
                        what, id, n);
    }
  };
  check_special(d.bos, "BOS");
  check_special(d.eos, "EOS");
  check_special(d.unk, "unknown");
  check_special(d.pad, "padding");
  check_special(d.eot, "end-of-turn");
  check_special(d.eom, "end-of-message");

  t->pre_ = std::move(d.pre);
  t->tokens_ = std::move(d.tokens);
  t->scores_ = std::move(d.scores);
  t->scores_.resize(n, 0.0f);
  t->types_ = std::move(d.types);
  t->types_.resize(n, TokenType::Normal);
  t->bos_ = d.bos;
  t->eos_ = d.eos;
  t->unk_ = d.unk;
  t->pad_ = d.pad;
  t->eot_ = d.eot;
  t->eom_ = d.eom;
  t->add_bos_ = d.add_bos;
  t->add_eos_ = d.add_eos;
  t->add_space_prefix_ = t->model_ == Model::Spm && d.add_space_prefix;
  t->chat_template_ = std::move(d.chat_template);

  // Among tokens with the same text, a plain token (normal, byte) wins over a special one, so that
  // merging and byte lookups stay in the model's own alphabet (DeepSeek repeats byte characters as
  // user-defined tokens, which decode differently); otherwise the later one wins, as in llama.cpp.
  // Empty strings can never be matched.
  const auto plain = [&](int32_t id) {
    const TokenType ty = t->types_[id];
    return ty == TokenType::Normal || ty == TokenType::Undefined || ty == TokenType::Byte;
  };
  t->text_to_id_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (t->tokens_[i].empty()) continue;
    const auto id = static_cast<int32_t>(i);
    auto [it, inserted] = t->text_to_id_.try_emplace(t->tokens_[i], id);
    if (!inserted && (plain(id) || !plain(it->second))) it->second = id;
  }

  for (size_t i = 0; i < n; ++i) {
    if (is_special_type(t->types_[i]) && !t->tokens_[i].empty()) {
      t->special_.push_back(static_cast<int32_t>(i));
    }
  }
  std::stable_sort(t->special_.begin(), t->special_.end(), [&](int32_t a, int32_t b) {
    return t->tokens_[a].size() > t->tokens_[b].size();
  });

  for (int32_t id : {t->eos_, t->eot_, t->eom_}) {
    if (id >= 0) t->eog_.push_back(id);
  }
  for (std::string_view marker : kEndMarkers) {
    const int32_t id = t->find_token(marker);
    if (id >= 0 && t->types_[id] == TokenType::Control) t->eog_.push_back(id);
  }
  std::sort(t->eog_.begin(), t->eog_.end());
  t->eog_.erase(std::unique(t->eog_.begin(), t->eog_.end()), t->eog_.end());

  if (t->model_ == Model::Spm) {
    for (int b = 0; b < 256; ++b) {
      int32_t id = t->find_token(fmt::format("<0x{:02X}>", b));
      if (id < 0) id = t->find_token(std::string(1, static_cast<char>(b)));
      if (id < 0) id = t->unk_;
      t->byte_token_[b] = id;
    }
  } else {
    if (d.merges.empty()) {
      fail<FormatError>("the byte-level BPE vocabulary has no merges (tokenizer.ggml.merges); "
                        "expected a list of \"left right\" pairs");
    }
    const PreTokenizerChoice choice = choose_pre_tokenizer(t->pre_);
    if (!choice.known) {
      fmt::print(stderr,
                 "squeeze: warning: unknown pre-tokenizer '{}'; using the GPT-2 patterns (known: {})\n",
                 t->pre_, known_pre_tokenizers());
    }
    t->ignore_merges_ = choice.ignore_merges;
    t->pre_tokenizer_ = std::make_unique<PreTokenizer>(choice.kind);
    const auto& table = byte_level::byte_to_utf8();
    for (int b = 0; b < 256; ++b) t->byte_char_token_[b] = t->find_token(table[b]);

    t->merges_.reserve(d.merges.size());
    std::string joined;
    for (size_t i = 0; i < d.merges.size(); ++i) {
      const std::string& m = d.merges[i];
      const size_t space = m.find(' ', 1);
      if (space == std::string::npos || space + 1 >= m.size()) {
        fail<FormatError>("merge {} is '{}'; expected two tokens separated by one space", i, m);
      }
      if (i > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
        fail<FormatError>("the vocabulary has {} merges; at most {} are supported", d.merges.size(),
                          std::numeric_limits<int32_t>::max());
      }
      const std::string_view left(m.data(), space);
      const std::string_view right(m.data() + space + 1, m.size() - space - 1);
      joined.assign(left);
      joined.append(right);
      const int32_t l = t->find_token(left), r = t->find_token(right), result = t->find_token(joined);
      // A merge whose parts or result are no token can never apply to a word made of tokens.
      if (l < 0 || r < 0 || result < 0) continue;
      const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
      t->merges_.emplace(key, Merge{static_cast<int32_t>(i), result});  // the first rank wins
    }
  }
  return t;
}

int32_t Tokenizer::find_token(std::string_view text) const {
  const auto it = text_to_id_.find(text);
  return it == text_to_id_.end() ? -1 : it->second;
}

int32_t Tokenizer::lookup_plain(std::string_view text) const {
  const int32_t id = find_token(text);
  if (id < 0) return -1;
  switch (types_[id]) {
    case TokenType::Control:
    case TokenType::Unknown:
    case TokenType::Unused:
    case TokenType::Byte:
      return -1;  // text of these never comes from merging plain text (SentencePiece's rule)
    default:
      return id;
  }
}

void Tokenizer::check_id(int32_t id) const {
  if (id < 0 || id >= n_vocab()) {
    fail<InvalidArgument>("token id {} is out of range; expected 0..{}", id, n_vocab() - 1);
  }
}

const std::string& Tokenizer::token_text(int32_t id) const {
  check_id(id);
  return tokens_[id];
}

TokenType Tokenizer::token_type(int32_t id) const {
  check_id(id);
  return types_[id];
}

float Tokenizer::token_score(int32_t id) const {
  check_id(id);
  return scores_[id];
}

int32_t Tokenizer::byte_token(uint8_t byte) const {
  const int32_t id = model_ == Model::Spm ? byte_token_[byte] : byte_char_token_[byte];
  if (id < 0) return -1;
  const std::string bytes = token_bytes(id);
  return bytes.size() == 1 && static_cast<uint8_t>(bytes[0]) == byte ? id : -1;
}

bool Tokenizer::represents_byte(uint8_t byte) const { return byte_token(byte) >= 0; }

bool Tokenizer::represents_all_bytes() const {
  for (int b = 0; b < 256; ++b) {
    if (!represents_byte(static_cast<uint8_t>(b))) return false;
  }
  return true;
}

bool Tokenizer::is_eog(int32_t id) const { return std::binary_search(eog_.begin(), eog_.end(), id); }

bool Tokenizer::is_control(int32_t id) const {
  return id >= 0 && id < n_vocab() && types_[id] == TokenType::Control;
}

std::string_view Tokenizer::kind() const {
  return model_ == Model::Spm ? "llama (SentencePiece BPE)" : "gpt2 (byte-level BPE)";
}

std::string Tokenizer::token_bytes(int32_t id, bool render_special) const {
  check_id(id);
  const std::string& text = tokens_[id];
  switch (types_[id]) {
    case TokenType::Control:
    case TokenType::Unused:
      return render_special ? text : std::string();
    case TokenType::Unknown:
      if (render_special) return text;
      return model_ == Model::Spm ? std::string(kUnknownGlyph) : std::string();
    case TokenType::Byte:
      if (const int b = parse_byte_token(text); b >= 0) return std::string(1, static_cast<char>(b));
      break;
    case TokenType::UserDefined:
      // Added tokens are stored as plain text, not in the byte-level alphabet.
      if (model_ == Model::Bpe) return text;
      break;
    default:
      break;
  }
  if (model_ == Model::Spm) return replace_all(text, kSpaceMark, " ");
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    size_t len = utf8::sequence_length(text, pos);
    if (len == 0) len = 1;
    const int b = byte_level::utf8_to_byte(std::string_view(text).substr(pos, len));
    if (b >= 0) {
      out += static_cast<char>(b);
    } else {
      out.append(text, pos, len);  // not in the byte alphabet: keep the character itself
    }
    pos += len;
  }
  return out;
}

void Tokenizer::append_piece(int32_t id, const DecodeOptions& options, bool& at_text_start,
                             std::string& out) const {
  const std::string piece = token_bytes(id, options.render_special);
  const TokenType type = types_[id];
  if (type == TokenType::Control || type == TokenType::UserDefined) {
    // The encoder cut these out before adding the prefix space: text after them starts anew.
    out += piece;
    at_text_start = true;
    return;
  }
  if (piece.empty()) return;
  if (at_text_start && options.strip_prefix_space && add_space_prefix_ && piece[0] == ' ') {
    out.append(piece, 1);
  } else {
    out += piece;
  }
  at_text_start = false;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, const DecodeOptions& options) const {
  std::string out;
  bool at_text_start = true;
  for (int32_t id : ids) append_piece(id, options, at_text_start, out);
  return out;
}

std::vector<Tokenizer::Fragment> Tokenizer::partition(std::string_view text, bool parse_special) const {
  std::vector<Fragment> frags{Fragment{-1, 0, text.size()}};
  std::vector<Fragment> next;
  for (int32_t id : special_) {
    if (!parse_special && types_[id] != TokenType::UserDefined) continue;
    const std::string& s = tokens_[id];
    if (text.find(s) == std::string_view::npos) continue;
    next.clear();
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      const std::string_view window = text.substr(f.offset, f.length);
      size_t pos = 0;
      for (size_t hit; (hit = window.find(s, pos)) != std::string_view::npos; pos = hit + s.size()) {
        if (hit > pos) next.push_back(Fragment{-1, f.offset + pos, hit - pos});
        next.push_back(Fragment{id, f.offset + hit, s.size()});
      }
      if (pos < window.size()) next.push_back(Fragment{-1, f.offset + pos, window.size() - pos});
    }
    frags.swap(next);
  }
  return frags;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool parse_special,
                                       bool add_eos) const {
  return encode_text(text, add_bos, parse_special, add_eos, add_space_prefix_);
}

std::vector<int32_t> Tokenizer::encode_continuation(std::string_view text) const {
  return encode_text(text, false, false, false, false);
}

std::vector<int32_t> Tokenizer::encode_text(std::string_view text, bool add_bos, bool parse_special,
                                            bool add_eos, bool space_prefix) const {
  if (text.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    fail<InvalidArgument>("text to tokenize is {} bytes; at most {} bytes can be encoded at once",
                          text.size(), std::numeric_limits<int32_t>::max());
  }
  std::vector<int32_t> out;
  if (add_bos && bos_ >= 0) out.push_back(bos_);
  if (!text.empty()) {
    bool after_special = true;  // the start of the text counts as following a special token
    std::string escaped;
    for (const Fragment& f : partition(text, parse_special)) {
      if (f.token >= 0) {
        out.push_back(f.token);
        after_special = true;
        continue;
      }
      const std::string_view piece = text.substr(f.offset, f.length);
      if (model_ == Model::Spm) {
        escaped.clear();
        if (space_prefix && after_special) escaped.append(kSpaceMark);
        escaped += replace_all(piece, " ", kSpaceMark);
        encode_spm(escaped, out);
      } else {
        encode_bpe(piece, out);
      }
      after_special = false;
    }
  }
  if (add_eos && eos_ >= 0) out.push_back(eos_);
  return out;
}

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool strip_prefix_space, bool render_special)
    : tokenizer_(&tokenizer) {
  options_.strip_prefix_space = strip_prefix_space;
  options_.render_special = render_special;
}

std::string StreamDecoder::push(int32_t id) {
  tokenizer_->append_piece(id, options_, at_text_start_, pending_);
  const size_t ready = pending_.size() - utf8::incomplete_tail(pending_);
  std::string out = pending_.substr(0, ready);
  pending_.erase(0, ready);
  return out;
}

std::string StreamDecoder::flush() {
  at_text_start_ = true;
  return std::exchange(pending_, std::string());
}

}  // namespace sq
