// llama2.c tokenizer files: the known answer on stories260K, and damaged files.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <random>

#include "base/error.h"
#include "support.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace sq {
namespace {

void put_i32(std::vector<uint8_t>& out, int32_t v) {
  const size_t at = out.size();
  out.resize(at + 4);
  std::memcpy(out.data() + at, &v, 4);
}

void put_token(std::vector<uint8_t>& out, float score, const std::string& text) {
  const size_t at = out.size();
  out.resize(at + 4);
  std::memcpy(out.data() + at, &score, 4);
  put_i32(out, static_cast<int32_t>(text.size()));
  out.insert(out.end(), text.begin(), text.end());
}

// A tiny llama2.c tokenizer: <unk> <s> </s>, 256 byte tokens, " a", "b".
std::vector<uint8_t> tiny_file() {
  std::vector<uint8_t> out;
  put_i32(out, 6);
  put_token(out, 0, "<unk>");
  put_token(out, 0, "\n<s>\n");
  put_token(out, 0, "\n</s>\n");
  for (int b = 0; b < 256; ++b) put_token(out, 0, fmt::format("<0x{:02X}>", b));
  put_token(out, -1, " ");
  put_token(out, -2, "a");
  put_token(out, -3, " a");
  put_token(out, -4, "b");
  return out;
}
constexpr int32_t kTinyVocab = 263;

TEST(Llama2cTokenizer, OnceUponATime) {
  SQ_REQUIRE_SHARED(path, "models/stories260K/tok512.bin");
  auto tok = load_tokenizer_llama2c(path, 512);
  EXPECT_EQ(tok->encode("Once upon a time", true, false), (std::vector<int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok->decode(std::vector<int32_t>{1, 403, 407, 261, 378}), "Once upon a time");
  EXPECT_EQ(tok->token_text(1), "<s>");
  EXPECT_EQ(tok->token_text(2), "</s>");
  EXPECT_EQ(tok->bos(), 1);
  EXPECT_EQ(tok->eos(), 2);
  EXPECT_TRUE(tok->is_eog(2));
  EXPECT_EQ(tok->kind(), "llama (SentencePiece BPE)");
}

TEST(Llama2cTokenizer, DecodesTheReferenceContinuation) {
  SQ_REQUIRE_SHARED(path, "models/stories260K/tok512.bin");
  SQ_REQUIRE_SHARED(ids_path, "models/stories260K/expected-once-upon-a-time.ids");
  SQ_REQUIRE_SHARED(txt_path, "models/stories260K/expected-once-upon-a-time.txt");
  auto tok = load_tokenizer_llama2c(path, 512);
  std::vector<int32_t> ids = {1, 403, 407, 261, 378};
  std::ifstream in(ids_path);
  for (int32_t id; in >> id;) ids.push_back(id);
  ASSERT_EQ(ids.size(), 205u);
  std::ifstream txt(txt_path, std::ios::binary);
  const std::string expected((std::istreambuf_iterator<char>(txt)), std::istreambuf_iterator<char>());
  EXPECT_EQ(tok->decode(ids), expected);
  // A stream that starts at BOS gives the same text piece by piece.
  StreamDecoder stream(*tok, true);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.flush();
  EXPECT_EQ(streamed, expected);
}

TEST(Llama2cTokenizer, AgreesWithTheGgufVocabulary) {
  SQ_REQUIRE_SHARED(bin, "models/stories260K/tok512.bin");
  SQ_REQUIRE_SHARED(gguf, "models/stories260K/stories260K.gguf");
  auto a = load_tokenizer_llama2c(bin, 512);
  GgufFile file = GgufFile::open(gguf);
  auto b = load_tokenizer(file);
  ASSERT_NE(b, nullptr);
  for (int32_t id = 0; id < 512; ++id) {
    ASSERT_EQ(a->token_text(id), b->token_text(id)) << id;
    ASSERT_EQ(a->token_type(id), b->token_type(id)) << id;
  }
  std::mt19937 rng(3);
  for (int i = 0; i < 100; ++i) {
    const std::string text = test::random_utf8(rng, 1 + rng() % 50);
    ASSERT_EQ(a->encode(text, true, false), b->encode(text, true, false));
    ASSERT_EQ(a->decode(a->encode(text, true, false)), text);
  }
}

TEST(Llama2cTokenizer, WrongVocabularySizeIsNamed) {
  SQ_REQUIRE_SHARED(path, "models/stories260K/tok512.bin");
  try {
    load_tokenizer_llama2c(path, 513);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("ends after 512 tokens"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("513"), std::string::npos) << e.what();
  }
  try {
    load_tokenizer_llama2c(path, 511);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("left after the 511 tokens"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_tokenizer_llama2c(path, 0), InvalidArgument);
  EXPECT_THROW(load_tokenizer_llama2c("/nonexistent/tok.bin", 512), IoError);
}

TEST(Llama2cTokenizer, TinyFileEncodes) {
  const auto bytes = tiny_file();
  auto tok = parse_tokenizer_llama2c(bytes, kTinyVocab, "tiny");
  EXPECT_EQ(tok->token_text(259), "\xE2\x96\x81");  // spaces become U+2581
  EXPECT_EQ(tok->encode("ab", true, false), (std::vector<int32_t>{1, 261, 262}));
  EXPECT_EQ(tok->decode(tok->encode("ab z", false, false)), "ab z");
}

TEST(Llama2cTokenizer, DamagedFilesAreFormatErrors) {
  const auto good = tiny_file();
  // Truncated anywhere: a clear error, never a crash.
  for (size_t cut = 0; cut < good.size(); cut += 7) {
    std::vector<uint8_t> bad(good.begin(), good.begin() + static_cast<ptrdiff_t>(cut));
    EXPECT_THROW(parse_tokenizer_llama2c(bad, kTinyVocab, "cut"), FormatError) << cut;
  }
  // Negative and huge lengths in the first token.
  for (int32_t len : {-1, -100000, 0x7FFFFFFF, 1 << 20}) {
    std::vector<uint8_t> bad = good;
    std::memcpy(bad.data() + 8, &len, 4);
    try {
      parse_tokenizer_llama2c(bad, kTinyVocab, "bad");
      FAIL() << len;
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(fmt::format("byte length {}", len)), std::string::npos) << e.what();
    }
  }
  // A negative max token length.
  {
    std::vector<uint8_t> bad = good;
    const int32_t neg = -5;
    std::memcpy(bad.data(), &neg, 4);
    EXPECT_THROW(parse_tokenizer_llama2c(bad, kTinyVocab, "bad"), FormatError);
  }
  // A huge expected size on a small file: an error, not a huge allocation.
  EXPECT_THROW(parse_tokenizer_llama2c(good, 0x7FFFFFFF, "big"), FormatError);
  // Random garbage never crashes.
  std::mt19937 rng(11);
  for (int i = 0; i < 300; ++i) {
    std::vector<uint8_t> junk = good;
    for (int k = 0; k < 4; ++k) junk[rng() % junk.size()] = static_cast<uint8_t>(rng());
    try {
      auto tok = parse_tokenizer_llama2c(junk, kTinyVocab, "junk");
      (void)tok->encode("ab z", true, false);
    } catch (const FormatError&) {
    }
  }
}

}  // namespace
}  // namespace sq
