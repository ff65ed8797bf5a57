// llama2.c's tokenizer file, read as a SentencePiece vocabulary.
#include <cstring>
#include <fstream>
#include <limits>

#include "base/error.h"
#include "tokenizer/tokenizer.h"

namespace sq {
namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";

bool is_byte_piece(std::string_view s) {
  const auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
  return s.size() == 6 && s.substr(0, 3) == "<0x" && hex(s[3]) && hex(s[4]) && s[5] == '>';
}

}  // namespace

std::unique_ptr<Tokenizer> parse_tokenizer_llama2c(std::span<const uint8_t> bytes,
                                                   int32_t expected_vocab_size,
                                                   const std::string& name) {
  if (expected_vocab_size <= 0) {
    fail<InvalidArgument>("{}: expected vocabulary size is {}; it must be positive", name,
                          expected_vocab_size);
  }
  size_t pos = 0;
  const auto remaining = [&] { return bytes.size() - pos; };
  const auto read_i32 = [&] {
    int32_t v;
    std::memcpy(&v, bytes.data() + pos, 4);
    pos += 4;
    return v;
  };
  if (bytes.size() < 4) {
    fail<FormatError>("{}: llama2.c tokenizer file is {} bytes; expected at least a 4-byte header",
                      name, bytes.size());
  }
  const int32_t max_token_length = read_i32();
  if (max_token_length < 0) {
    fail<FormatError>("{}: max token length is {}; expected a non-negative number", name,
                      max_token_length);
  }

  VocabData d;
  d.model = "llama";
  const auto n = static_cast<size_t>(expected_vocab_size);
  // Each token takes at least 8 bytes: a garbage size cannot make us reserve more than the file.
  d.tokens.reserve(std::min(n, remaining() / 8));
  d.scores.reserve(d.tokens.capacity());
  for (size_t i = 0; i < n; ++i) {
    if (remaining() < 8) {
      fail<FormatError>("{}: the tokenizer file ends after {} tokens ({} bytes); the model's "
                        "vocabulary has {} tokens. Does the tokenizer belong to this model?",
                        name, i, bytes.size(), n);
    }
    float score;
    std::memcpy(&score, bytes.data() + pos, 4);
    pos += 4;
    const int32_t len = read_i32();
    if (len < 0 || static_cast<size_t>(len) > remaining()) {
      fail<FormatError>("{}: token {} has byte length {} at offset {}; expected 0..{} (the bytes left)",
                        name, i, len, pos - 4, remaining());
    }
    d.tokens.emplace_back(reinterpret_cast<const char*>(bytes.data() + pos), static_cast<size_t>(len));
    d.scores.push_back(score);
    pos += static_cast<size_t>(len);
  }
  if (remaining() != 0) {
    fail<FormatError>("{}: {} bytes are left after the {} tokens of the model's vocabulary; the "
                      "tokenizer has more tokens than the model. Does it belong to this model?",
                      name, remaining(), n);
  }

  // The format stores no types: llama2.c's export gives <unk>, <s>, </s> the first three ids, byte
  // pieces <0xXX>, and writes spaces where SentencePiece has U+2581.
  d.types.resize(n, TokenType::Normal);
  for (size_t i = 0; i < n; ++i) {
    std::string& t = d.tokens[i];
    if (i == 0) {
      d.types[i] = TokenType::Unknown;
    } else if (i == 1 || i == 2) {
      d.types[i] = TokenType::Control;
      // Stored as "\n<s>\n" and "\n</s>\n".
      const size_t b = t.find_first_not_of('\n');
      const size_t e = t.find_last_not_of('\n');
      t = b == std::string::npos ? std::string() : t.substr(b, e - b + 1);
    } else if (is_byte_piece(t)) {
      d.types[i] = TokenType::Byte;
    } else {
      std::string escaped;
      escaped.reserve(t.size());
      for (char c : t) {
        if (c == ' ') {
          escaped.append(kSpaceMark);
        } else {
          escaped += c;
        }
      }
      t = std::move(escaped);
    }
  }
  d.unk = 0;
  d.bos = n > 1 ? 1 : -1;
  d.eos = n > 2 ? 2 : -1;
  d.add_bos = true;
  d.add_space_prefix = true;
  return Tokenizer::create(std::move(d));
}

std::unique_ptr<Tokenizer> load_tokenizer_llama2c(const std::string& path, int32_t expected_vocab_size) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail<IoError>("cannot open tokenizer file '{}'", path);
  const std::streamoff size = in.tellg();
  if (size < 0) fail<IoError>("cannot read the size of tokenizer file '{}'", path);
  // A tokenizer of a 1M-token vocabulary is tens of MB; anything near this is not a tokenizer.
  constexpr std::streamoff kMaxSize = std::streamoff(1) << 31;
  if (size > kMaxSize) {
    fail<FormatError>("'{}' is {} bytes; a llama2.c tokenizer file is expected to be under {} bytes",
                      path, size, kMaxSize);
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), size)) {
    fail<IoError>("cannot read tokenizer file '{}'", path);
  }
  return parse_tokenizer_llama2c(bytes, expected_vocab_size, path);
}

}  // namespace sq
