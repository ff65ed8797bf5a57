// Tokenizer unit tests on small hand-made vocabularies (no shared data needed).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "base/error.h"
#include "engine/vocab_loader.h"
#include "model/gguf.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace sq {
namespace {

const std::string kMark = "\xE2\x96\x81";  // U+2581

// A SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, then pieces with scores.
VocabData small_spm() {
  VocabData d;
  d.model = "llama";
  d.tokens = {"<unk>", "<s>", "</s>"};
  d.types = {TokenType::Unknown, TokenType::Control, TokenType::Control};
  for (int b = 0; b < 256; ++b) {
    d.tokens.push_back(fmt::format("<0x{:02X}>", b));
    d.types.push_back(TokenType::Byte);
  }
  const std::vector<std::pair<std::string, float>> pieces = {
      {kMark, -1}, {"a", -2}, {"b", -3}, {"c", -4}, {"ab", -5}, {kMark + "a", -6},
      {kMark + "ab", -7}, {"bc", -0.5f}, {"<tag>", 0}};
  for (const auto& [text, score] : pieces) {
    d.tokens.push_back(text);
    d.types.push_back(text == "<tag>" ? TokenType::UserDefined : TokenType::Normal);
  }
  d.scores.assign(d.tokens.size(), 0.0f);
  for (size_t i = 0; i < pieces.size(); ++i) d.scores[259 + i] = pieces[i].second;
  d.unk = 0;
  d.bos = 1;
  d.eos = 2;
  return d;
}

// A byte-level vocabulary: the 256 byte characters, then merges building "ab", "abc", " the".
VocabData small_bpe() {
  VocabData d;
  d.model = "gpt2";
  d.pre = "gpt-2";
  for (const std::string& ch : byte_level::byte_to_utf8()) d.tokens.push_back(ch);
  const std::string g = byte_level::byte_to_utf8()[' '];  // "Ġ"
  for (const std::string& t : {std::string("ab"), std::string("abc"), g + "t", std::string("he"), g + "the",
                               std::string("<|end|>")}) {
    d.tokens.push_back(t);
  }
  d.types.assign(d.tokens.size(), TokenType::Normal);
  d.types.back() = TokenType::Control;
  d.merges = {"a b", "ab c", g + " t", "h e", g + "t he"};
  d.eos = static_cast<int32_t>(d.tokens.size()) - 1;
  d.add_bos = false;
  return d;
}

std::vector<std::string> texts(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(tok.token_text(id));
  return out;
}

TEST(Spm, MergesByScoreWithPrefixSpace) {
  auto tok = Tokenizer::create(small_spm());
  // "abc" -> ▁abc: "bc" has the best score, then ▁ + a.
  EXPECT_EQ(texts(*tok, tok->encode("abc", false, false)),
            (std::vector<std::string>{kMark + "a", "bc"}));
  EXPECT_EQ(texts(*tok, tok->encode("ab", false, false)), (std::vector<std::string>{kMark + "ab"}));
  EXPECT_EQ(tok->encode("ab", true, false).front(), 1);
  EXPECT_EQ(tok->encode("ab", true, false, true).back(), 2);
  EXPECT_TRUE(tok->encode("", false, false).empty());
  EXPECT_EQ(tok->decode(tok->encode("ab  c", false, false)), "ab  c");
}

TEST(Spm, ByteFallbackIsExact) {
  auto tok = Tokenizer::create(small_spm());
  const std::string text = "a\xE4\xBD\xA0z\xFF";  // 你 and an invalid byte: not in the vocabulary
  const auto ids = tok->encode(text, false, false);
  EXPECT_EQ(tok->decode(ids), text);
  EXPECT_EQ(tok->token_type(ids.back()), TokenType::Byte);
  EXPECT_TRUE(tok->represents_all_bytes());
}

TEST(Spm, ControlTextStaysPlainUnlessParsed) {
  auto tok = Tokenizer::create(small_spm());
  const auto plain = tok->encode("<s>a", false, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 1), 0);
  EXPECT_EQ(tok->decode(plain), "<s>a");
  const auto parsed = tok->encode("<s>a", false, true);
  EXPECT_EQ(texts(*tok, parsed), (std::vector<std::string>{"<s>", kMark + "a"}));
  EXPECT_EQ(tok->decode(parsed), "a");
  DecodeOptions render;
  render.render_special = true;
  EXPECT_EQ(tok->decode(parsed, render), "<s>a");
  // User-defined text is one token either way, and the text after it gets its prefix space.
  const auto user = tok->encode("a<tag>a", false, false);
  EXPECT_EQ(texts(*tok, user), (std::vector<std::string>{kMark + "a", "<tag>", kMark + "a"}));
  EXPECT_EQ(tok->decode(user), "a<tag>a");
}

TEST(Spm, PrefixSpaceStripIsAnOption) {
  auto tok = Tokenizer::create(small_spm());
  const auto ids = tok->encode("ab", false, false);
  EXPECT_EQ(tok->decode(ids), "ab");
  DecodeOptions keep;
  keep.strip_prefix_space = false;
  EXPECT_EQ(tok->decode(ids, keep), " ab");
  EXPECT_EQ(tok->token_bytes(ids[0]), " ab");
}

TEST(Spm, NoPrefixWhenDisabled) {
  VocabData d = small_spm();
  d.add_space_prefix = false;
  auto tok = Tokenizer::create(std::move(d));
  EXPECT_EQ(texts(*tok, tok->encode("ab", false, false)), (std::vector<std::string>{"ab"}));
  EXPECT_EQ(tok->decode(tok->encode(" ab", false, false)), " ab");
}

TEST(Bpe, MergesByRank) {
  auto tok = Tokenizer::create(small_bpe());
  const std::string g = byte_level::byte_to_utf8()[' '];
  EXPECT_EQ(texts(*tok, tok->encode("abc the", false, false)),
            (std::vector<std::string>{"abc", g + "the"}));
  EXPECT_EQ(tok->decode(tok->encode("abc the\n\t x", false, false)), "abc the\n\t x");
  EXPECT_TRUE(tok->represents_all_bytes());
  EXPECT_FALSE(tok->add_bos_default());
  EXPECT_TRUE(tok->is_eog(tok->eos()));
  EXPECT_TRUE(tok->is_eog(tok->find_token("<|end|>")));
}

TEST(Bpe, AnyBytesRoundTrip) {
  auto tok = Tokenizer::create(small_bpe());
  std::mt19937 rng(5);
  for (int i = 0; i < 200; ++i) {
    std::string s(rng() % 40, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    ASSERT_EQ(tok->decode(tok->encode(s, false, false)), s);
  }
}

TEST(Bpe, SpecialTokensParsedOnRequest) {
  auto tok = Tokenizer::create(small_bpe());
  const int32_t end = tok->find_token("<|end|>");
  EXPECT_EQ(tok->encode("ab<|end|>", false, true).back(), end);
  const auto plain = tok->encode("ab<|end|>", false, false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), end), 0);
  EXPECT_EQ(tok->decode(plain), "ab<|end|>");
}

TEST(Bpe, UnknownPreUsesGpt2Patterns) {
  VocabData d = small_bpe();
  d.pre = "no-such-pre";
  auto tok = Tokenizer::create(std::move(d));
  EXPECT_EQ(tok->encode("abc the", false, false), Tokenizer::create(small_bpe())->encode("abc the", false, false));
}

template <typename E>
std::string error_of(VocabData d) {
  try {
    Tokenizer::create(std::move(d));
  } catch (const E& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Validation, RejectsInconsistentVocabularies) {
  {
    VocabData d = small_spm();
    d.model = "bert";
    const std::string msg = error_of<UnsupportedError>(std::move(d));
    EXPECT_NE(msg.find("'bert'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("llama"), std::string::npos) << msg;
  }
  {
    VocabData d = small_spm();
    d.scores.pop_back();
    EXPECT_NE(error_of<FormatError>(std::move(d)).find("267 scores for 268 tokens"), std::string::npos);
  }
  {
    VocabData d = small_spm();
    d.types.resize(3);
    EXPECT_NE(error_of<FormatError>(std::move(d)).find("3 token types"), std::string::npos);
  }
  {
    VocabData d = small_spm();
    d.types[5] = static_cast<TokenType>(9);
    EXPECT_NE(error_of<FormatError>(std::move(d)).find("type 9"), std::string::npos);
  }
  {
    VocabData d = small_spm();
    d.bos = 268;
    const std::string msg = error_of<FormatError>(std::move(d));
    EXPECT_NE(msg.find("BOS token id is 268"), std::string::npos) << msg;
  }
  {
    VocabData d = small_spm();
    d.tokens.clear();
    d.scores.clear();
    d.types.clear();
    d.bos = d.eos = d.unk = -1;
    EXPECT_NE(error_of<FormatError>(std::move(d)).find("no tokens"), std::string::npos);
  }
  {
    VocabData d = small_bpe();
    d.merges.push_back("abc");
    const std::string msg = error_of<FormatError>(std::move(d));
    EXPECT_NE(msg.find("merge 5 is 'abc'"), std::string::npos) << msg;
  }
  {
    VocabData d = small_bpe();
    d.merges.clear();
    EXPECT_NE(error_of<FormatError>(std::move(d)).find("no merges"), std::string::npos);
  }
  auto tok = Tokenizer::create(small_spm());
  EXPECT_THROW(tok->decode(std::vector<int32_t>{100000}), InvalidArgument);
  EXPECT_THROW(tok->token_text(-1), InvalidArgument);
}

TEST(PreTokenizer, Gpt2AndLlama3Patterns) {
  const auto split = [](PreTokenizerKind kind, std::string_view text) {
    PreTokenizer pre(kind);
    std::vector<std::string_view> out;
    pre.split(text, out);
    return std::vector<std::string>(out.begin(), out.end());
  };
  EXPECT_EQ(split(PreTokenizerKind::Gpt2, "Hello world's  test 12345!!"),
            (std::vector<std::string>{"Hello", " world", "'s", " ", " test", " 12345", "!!"}));
  EXPECT_EQ(split(PreTokenizerKind::Llama3, "12345 I'LL go\n\n"),
            (std::vector<std::string>{"123", "45", " I", "'LL", " go", "\n\n"}));
  EXPECT_EQ(split(PreTokenizerKind::Qwen2, "123"), (std::vector<std::string>{"1", "2", "3"}));
  // Malformed bytes are pieces of their own; the text around them is still split.
  EXPECT_EQ(split(PreTokenizerKind::Gpt2, "ab\xFF" "cd ef"),
            (std::vector<std::string>{"ab", "\xFF", "cd", " ef"}));
  EXPECT_EQ(choose_pre_tokenizer("").kind, PreTokenizerKind::Gpt2);
  EXPECT_FALSE(choose_pre_tokenizer("made-up").known);
  EXPECT_TRUE(choose_pre_tokenizer("llama-bpe").ignore_merges);
  EXPECT_EQ(choose_pre_tokenizer("refact").kind, PreTokenizerKind::Starcoder);
  // Every kind compiles.
  for (auto kind : {PreTokenizerKind::DeepseekLlm, PreTokenizerKind::DeepseekCoder,
                    PreTokenizerKind::Falcon, PreTokenizerKind::Starcoder, PreTokenizerKind::Poro,
                    PreTokenizerKind::Viking}) {
    EXPECT_NO_THROW(PreTokenizer{kind});
  }
}

TEST(Utf8, IncompleteTailAndSanitize) {
  EXPECT_EQ(utf8::incomplete_tail(""), 0u);
  EXPECT_EQ(utf8::incomplete_tail("abc"), 0u);
  EXPECT_EQ(utf8::incomplete_tail("a\xE4"), 1u);
  EXPECT_EQ(utf8::incomplete_tail("a\xE4\xBD"), 2u);
  EXPECT_EQ(utf8::incomplete_tail("a\xE4\xBD\xA0"), 0u);
  EXPECT_EQ(utf8::incomplete_tail("\xF0\x9F\x98"), 3u);
  EXPECT_EQ(utf8::incomplete_tail("\xE0\x80"), 0u);  // overlong: can never complete
  EXPECT_EQ(utf8::incomplete_tail("\x80\x80"), 0u);
  EXPECT_EQ(utf8::sanitize("a\xFF" "b\xE4"), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
  EXPECT_TRUE(utf8::is_valid("\xF0\x9F\x98\x80"));
  EXPECT_FALSE(utf8::is_valid("\xED\xA0\x80"));  // a surrogate
  EXPECT_EQ(byte_level::utf8_to_byte(byte_level::byte_to_utf8()[' ']), ' ');
  EXPECT_EQ(byte_level::byte_to_utf8()[' '], "\xC4\xA0");  // Ġ
  EXPECT_EQ(byte_level::utf8_to_byte("\xE4\xBD\xA0"), -1);
}

TEST(StreamDecoder, ConcatenationEqualsDecode) {
  auto tok = Tokenizer::create(small_spm());
  const std::string text = "ab\xE4\xBD\xA0\xF0\x9F\x98\x80 c\xFF";
  const auto ids = tok->encode(text, true, false);
  StreamDecoder stream(*tok, true);
  std::string out;
  for (int32_t id : ids) out += stream.push(id);
  out += stream.flush();
  EXPECT_EQ(out, text);
  EXPECT_EQ(out, tok->decode(ids));
}

// --- GGUF metadata -------------------------------------------------------------------------------

GgufFile parse(const std::vector<uint8_t>& bytes) { return GgufFile::parse(bytes, "test.gguf"); }

GgufWriter spm_writer() {
  VocabData d = small_spm();
  GgufWriter w;
  w.set("general.architecture", GgufValue::of_string("whatever"));
  w.set("tokenizer.ggml.model", GgufValue::of_string("llama"));
  w.set("tokenizer.ggml.tokens", GgufValue::of_strings(d.tokens));
  w.set("tokenizer.ggml.scores", GgufValue::of_f32s(d.scores));
  std::vector<int32_t> types;
  for (TokenType t : d.types) types.push_back(static_cast<int32_t>(t));
  w.set("tokenizer.ggml.token_type", GgufValue::of_i32s(types));
  w.set("tokenizer.ggml.bos_token_id", GgufValue::of_u32(1));
  w.set("tokenizer.ggml.eos_token_id", GgufValue::of_u32(2));
  w.set("tokenizer.ggml.padding_token_id", GgufValue::of_u32(0xFFFFFFFFu));
  w.set("tokenizer.chat_template", GgufValue::of_string("{{ messages }}"));
  return w;
}

TEST(VocabLoader, ReadsGgufMetadata) {
  const auto bytes = spm_writer().to_bytes();
  GgufFile file = parse(bytes);
  auto tok = load_tokenizer(file);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->n_vocab(), 268);
  EXPECT_EQ(tok->bos(), 1);
  EXPECT_EQ(tok->pad(), -1);  // UINT32_MAX means none
  EXPECT_TRUE(tok->add_bos_default());
  EXPECT_EQ(tok->chat_template(), "{{ messages }}");
  EXPECT_EQ(tok->decode(tok->encode("abc", true, false)), "abc");
}

TEST(VocabLoader, NoVocabularyGivesNull) {
  GgufWriter none;
  none.set("general.architecture", GgufValue::of_string("llama"));
  const auto b1 = none.to_bytes();
  EXPECT_EQ(load_tokenizer(parse(b1)), nullptr);
  GgufWriter no_vocab;
  no_vocab.set("tokenizer.ggml.model", GgufValue::of_string("no_vocab"));
  const auto b2 = no_vocab.to_bytes();
  EXPECT_EQ(load_tokenizer(parse(b2)), nullptr);
}

TEST(VocabLoader, ErrorsNameTheProblem) {
  {
    GgufWriter w = spm_writer();
    w.set("tokenizer.ggml.model", GgufValue::of_string("rwkv"));
    const auto b = w.to_bytes();
    try {
      load_tokenizer(parse(b));
      FAIL();
    } catch (const UnsupportedError& e) {
      EXPECT_NE(std::string(e.what()).find("'rwkv'"), std::string::npos) << e.what();
    }
  }
  {
    GgufWriter w = spm_writer();
    w.set("tokenizer.ggml.token_type", GgufValue::of_i32s({1, 1}));
    const auto b = w.to_bytes();
    EXPECT_THROW(load_tokenizer(parse(b)), FormatError);
  }
  {
    GgufWriter w = spm_writer();
    w.set("tokenizer.ggml.bos_token_id", GgufValue::of_u32(5000));
    const auto b = w.to_bytes();
    EXPECT_THROW(load_tokenizer(parse(b)), FormatError);
  }
  {
    GgufWriter w = spm_writer();
    w.set("tokenizer.ggml.model", GgufValue::of_string("gpt2"));  // no merges
    const auto b = w.to_bytes();
    EXPECT_THROW(load_tokenizer(parse(b)), FormatError);
  }
}

}  // namespace
}  // namespace sq
