// Tokenizers: SentencePiece-style BPE ("llama") and byte-level BPE ("gpt2"), built from a
// vocabulary that does not depend on the file it came from (GGUF metadata, a llama2.c tokenizer
// file, or a test).
//
// Encoding follows llama.cpp, which follows the Hugging Face and SentencePiece tokenizers the
// vocabularies came from:
//   1. Special tokens are cut out of the text first, longest text first. Control (and unknown)
//      tokens only when `parse_special` is set; user-defined tokens always, since their text is
//      meant to be one token even in plain text (Qwen's <think>, GPT-NeoX's runs of spaces).
//   2. SentencePiece BPE: a space is put in front of the text at its start and after every special
//      token (when add_space_prefix), spaces become U+2581, and adjacent pieces are merged while
//      their concatenation is a token, best score first (leftmost on ties). Characters that are no
//      token become byte tokens <0xXX>.
//   3. Byte-level BPE: the pre-tokenizer cuts the text into words, each byte becomes GPT-2's printable
//      stand-in, and pairs are merged by rank from `merges` (lowest rank first, leftmost on ties).
//
// Decoding is exact: byte-level BPE and SentencePiece with byte fallback give back the bytes that
// were encoded, for any input (the one loss: SentencePiece reads a literal U+2581 as a space).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sq {

class PreTokenizer;

enum class TokenType : int32_t {
  Undefined = 0,
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
};

// Everything a tokenizer needs, independent of the file format.
struct VocabData {
  std::string model;  // "llama" (SentencePiece BPE) or "gpt2" (byte-level BPE)
  std::string pre;    // tokenizer.ggml.pre ("" when absent); gpt2 only
  std::vector<std::string> tokens;
  std::vector<float> scores;     // llama: merge priority per token; may be empty (all 0)
  std::vector<TokenType> types;  // may be empty: all Normal
  std::vector<std::string> merges;  // gpt2: "left right", highest priority first
  int32_t bos = -1, eos = -1, unk = -1, pad = -1, eot = -1, eom = -1;  // -1: none
  // Defaults are llama's; a gpt2 vocabulary normally says add_bos = false (vocab_from_gguf does).
  // add_space_prefix only applies to llama.
  bool add_bos = true, add_eos = false, add_space_prefix = true;
  std::string chat_template;  // "" when absent
};

struct DecodeOptions {
  // SentencePiece with add_space_prefix: drop the one space that the encoder put in front of the
  // text at its start and after each special token, so that decode(encode(x)) == x. Turn off to
  // decode a continuation (the middle of a sequence), as a generation stream does.
  bool strip_prefix_space = true;
  // Control tokens decode to nothing unless this is set; then to their text.
  bool render_special = false;
};

class Tokenizer {
 public:
  enum class Model { Spm, Bpe };

  // Validates the vocabulary: throws FormatError (inconsistent arrays, ids out of range, bad
  // merges) or UnsupportedError (a model other than llama / gpt2).
  static std::unique_ptr<Tokenizer> create(VocabData data);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Thread-safe (no mutable state). add_bos puts BOS first when the vocabulary has one; add_eos
  // likewise puts EOS last.
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special,
                              bool add_eos = false) const;

  // Encodes text that continues a sequence: no BOS, no special-token parsing (user-defined tokens
  // are still cut out, as in encode), and no prefix space, so that where the text round-trips the
  // tokens' bytes (token_bytes) concatenate to it exactly. The compressor encodes its input in
  // pieces this way.
  std::vector<int32_t> encode_continuation(std::string_view text) const;
  std::string decode(std::span<const int32_t> ids, const DecodeOptions& options = {}) const;

  // The bytes this token stands for in the middle of a sequence (control tokens: nothing, unless
  // render_special). May be part of a UTF-8 character. Throws InvalidArgument for an id out of range.
  std::string token_bytes(int32_t id, bool render_special = false) const;
  // The vocabulary string as stored (for `tokenize` output).
  const std::string& token_text(int32_t id) const;
  TokenType token_type(int32_t id) const;
  float token_score(int32_t id) const;
  // The id of a token by its stored text, -1 when there is none.
  int32_t find_token(std::string_view text) const;
  // Whether a byte that the merges leave alone still has a token that decodes to exactly that byte
  // (a byte token, or a byte-level character). Text made of such bytes round-trips exactly; many
  // byte-level vocabularies lack bytes that never occur in UTF-8 (0xC0, 0xC1, 0xF5..0xFF), and some
  // lack control characters.
  bool represents_byte(uint8_t byte) const;
  // The token that decodes to exactly this one byte, -1 when there is none.
  int32_t byte_token(uint8_t byte) const;
  bool represents_all_bytes() const;

  int32_t n_vocab() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos() const { return bos_; }
  int32_t eos() const { return eos_; }
  int32_t eot() const { return eot_; }
  int32_t eom() const { return eom_; }
  int32_t unk() const { return unk_; }
  int32_t pad() const { return pad_; }
  bool add_bos_default() const { return add_bos_; }
  bool add_eos_default() const { return add_eos_; }
  bool add_space_prefix() const { return add_space_prefix_; }
  // End of generation: eos, eot, eom, and control tokens whose text is a usual end marker
  // (<|eot_id|>, <|im_end|>, <|end|>, <end_of_turn>, <|endoftext|>, <|eom_id|>, <EOT>).
  bool is_eog(int32_t id) const;
  bool is_control(int32_t id) const;
  const std::vector<int32_t>& eog_ids() const { return eog_; }

  Model model() const { return model_; }
  std::string_view kind() const;  // "llama (SentencePiece BPE)" / "gpt2 (byte-level BPE)"
  const std::string& pre() const { return pre_; }
  const std::string& chat_template() const { return chat_template_; }

  // Used by decode and StreamDecoder: appends the bytes of `id` to `out`. `at_text_start` tracks
  // where the encoder would have added a prefix space (start, after a special token).
  void append_piece(int32_t id, const DecodeOptions& options, bool& at_text_start,
                    std::string& out) const;

 private:
  Tokenizer();

  // A piece of input: either text still to tokenize or a special token already found.
  struct Fragment {
    int32_t token = -1;  // >= 0: a special token
    size_t offset = 0, length = 0;
  };
  std::vector<Fragment> partition(std::string_view text, bool parse_special) const;
  std::vector<int32_t> encode_text(std::string_view text, bool add_bos, bool parse_special,
                                   bool add_eos, bool space_prefix) const;
  void encode_spm(std::string_view text, std::vector<int32_t>& out) const;
  void encode_bpe(std::string_view text, std::vector<int32_t>& out) const;
  void encode_bpe_word(std::string_view word, std::vector<int32_t>& out) const;
  int32_t lookup_plain(std::string_view text) const;
  void check_id(int32_t id) const;

  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Merge {
    int32_t rank;
    int32_t result;
  };

  Model model_ = Model::Spm;
  std::string pre_;
  std::vector<std::string> tokens_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> text_to_id_;
  std::vector<int32_t> special_;  // control / user-defined / unknown, longest text first
  std::vector<int32_t> eog_;
  int32_t bos_ = -1, eos_ = -1, unk_ = -1, pad_ = -1, eot_ = -1, eom_ = -1;
  bool add_bos_ = false, add_eos_ = false, add_space_prefix_ = false;
  std::string chat_template_;

  // SentencePiece: the token for each byte (<0xXX>, else the one-byte token, else unk, else -1).
  int32_t byte_token_[256] = {};

  // Byte-level BPE.
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  bool ignore_merges_ = false;
  int32_t byte_char_token_[256] = {};  // token of each byte's stand-in character, -1 if none
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> rank, result
};

// Turns token ids into text one at a time for a generation stream. Bytes of a UTF-8 character that
// is not complete yet (byte tokens can split one) are held back until it completes. Output is the
// exact bytes: push() never alters them, and the concatenation of everything push() and flush()
// return equals decode() of the same ids. Malformed bytes are passed through raw, not replaced:
// callers that need valid UTF-8 (JSON) apply utf8::sanitize at their boundary.
class StreamDecoder {
 public:
  // strip_prefix_space: treat the first token as the start of the text (see DecodeOptions); off
  // for a continuation, which is what generation wants.
  explicit StreamDecoder(const Tokenizer& tokenizer, bool strip_prefix_space = false,
                         bool render_special = false);
  std::string push(int32_t id);
  // What is left (an incomplete character, raw), and resets for a new stream.
  std::string flush();

 private:
  const Tokenizer* tokenizer_;
  DecodeOptions options_;
  bool at_text_start_ = true;
  std::string pending_;
};

// llama2.c's tokenizer file (tokenizer.bin, tok512.bin): int32 max token length, then per token a
// float32 score, an int32 byte length and the bytes. The file has no count: exactly
// `expected_vocab_size` tokens must be there, with nothing after them. Throws IoError / FormatError.
std::unique_ptr<Tokenizer> load_tokenizer_llama2c(const std::string& path, int32_t expected_vocab_size);
// The same from bytes in memory (tests, fuzzing); `name` appears in messages.
std::unique_ptr<Tokenizer> parse_tokenizer_llama2c(std::span<const uint8_t> bytes,
                                                   int32_t expected_vocab_size,
                                                   const std::string& name);

}  // namespace sq
