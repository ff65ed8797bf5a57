// Parity with llama.cpp's tokenizer test pairs, and round trips, on real vocabularies.
#include <chrono>
#include <fstream>
#include <random>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "test_util.h"

namespace sq::test {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Case {
  std::string input;
  std::vector<int32_t> ids;
};

std::vector<Case> read_cases(const std::string& inp_path, const std::string& out_path) {
  const std::string inp = read_file(inp_path);
  const std::string outs = read_file(out_path);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  size_t pos = 0;
  for (size_t hit; (hit = inp.find(sep, pos)) != std::string::npos; pos = hit + sep.size()) {
    inputs.push_back(inp.substr(pos, hit - pos));
  }
  EXPECT_EQ(pos, inp.size()) << "the .inp file should end with a separator";
  std::vector<std::vector<int32_t>> id_lines;
  std::istringstream lines(outs);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::vector<int32_t> ids;
    for (int64_t id; fields >> id;) ids.push_back(static_cast<int32_t>(id));
    id_lines.push_back(std::move(ids));
  }
  EXPECT_EQ(inputs.size(), id_lines.size()) << inp_path;
  std::vector<Case> cases;
  for (size_t i = 0; i < std::min(inputs.size(), id_lines.size()); ++i) {
    cases.push_back(Case{inputs[i], id_lines[i]});
  }
  return cases;
}

// Whether every byte of `text` has a token of its own in this vocabulary (exactness needs it).
bool representable(const Tokenizer& tok, std::string_view text) {
  for (unsigned char c : text) {
    if (!tok.represents_byte(c)) return false;
  }
  return true;
}

class FixtureParity : public ::testing::TestWithParam<const char*> {};

TEST_P(FixtureParity, MatchesExpectedIds) {
  const std::string name = GetParam();
  SQ_REQUIRE_SHARED(inp, "fixtures/tokenizer/ggml-vocab-" + name + ".gguf.inp");
  SQ_REQUIRE_SHARED(out, "fixtures/tokenizer/ggml-vocab-" + name + ".gguf.out");
  const Tokenizer* tok = fixture_tokenizer(name);
  ASSERT_NE(tok, nullptr);
  const std::vector<Case> cases = read_cases(inp, out);
  ASSERT_FALSE(cases.empty());
  size_t passed = 0;
  for (const Case& c : cases) {
    const std::vector<int32_t> got = tok->encode(c.input, false, false);
    if (got == c.ids) {
      ++passed;
    } else {
      ADD_FAILURE() << name << ": input '" << c.input << "'\n  expected: " << fmt::format("{}", fmt::join(c.ids, " "))
                    << "\n  got:      " << fmt::format("{}", fmt::join(got, " "));
    }
    // Whatever the ids, the text must come back.
    EXPECT_EQ(tok->decode(got), c.input) << name << ": round trip of '" << c.input << "'";
  }
  RecordProperty("passed", static_cast<int>(passed));
  std::printf("[ fixture  ] %s: %zu of %zu cases match\n", name.c_str(), passed, cases.size());
}

INSTANTIATE_TEST_SUITE_P(Vocabs, FixtureParity,
                         ::testing::Values("llama-spm", "phi-3", "gpt-2", "llama-bpe", "qwen2",
                                           "deepseek-llm", "deepseek-coder", "falcon", "mpt",
                                           "starcoder", "refact"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s) {
                             if (c == '-') c = '_';
                           }
                           return s;
                         });

class FixtureRoundTrip : public ::testing::TestWithParam<const char*> {};

TEST_P(FixtureRoundTrip, RandomUtf8DecodesToItself) {
  const std::string name = GetParam();
  SQ_REQUIRE_SHARED(path, "fixtures/tokenizer/ggml-vocab-" + name + ".gguf");
  const Tokenizer* tok = fixture_tokenizer(name);
  ASSERT_NE(tok, nullptr);
  std::mt19937 rng(1234);
  int tested = 0;
  for (int iter = 0; iter < 300; ++iter) {
    const std::string text = random_utf8(rng, 1 + rng() % 60);
    if (!representable(*tok, text)) continue;
    ++tested;
    const std::vector<int32_t> ids = tok->encode(text, false, false);
    ASSERT_EQ(tok->decode(ids), text) << name << ": ids " << fmt::format("{}", fmt::join(ids, " "));
    // With BOS in front the text is the same: BOS decodes to nothing.
    const std::vector<int32_t> with_bos = tok->encode(text, true, false);
    ASSERT_EQ(tok->decode(with_bos), text) << name;
    // Streaming gives the same bytes, and each chunk is whole characters.
    StreamDecoder stream(*tok, /*strip_prefix_space=*/true);
    std::string streamed;
    for (int32_t id : ids) {
      const std::string chunk = stream.push(id);
      ASSERT_TRUE(utf8::is_valid(chunk)) << name << ": chunk splits a character";
      streamed += chunk;
    }
    streamed += stream.flush();
    ASSERT_EQ(streamed, text) << name;
  }
  EXPECT_GE(tested, 100) << name << ": too few strings the vocabulary can represent";
}

TEST_P(FixtureRoundTrip, ArbitraryBytesDecodeToThemselves) {
  const std::string name = GetParam();
  SQ_REQUIRE_SHARED(path, "fixtures/tokenizer/ggml-vocab-" + name + ".gguf");
  const Tokenizer* tok = fixture_tokenizer(name);
  ASSERT_NE(tok, nullptr);
  std::mt19937 rng(99);
  for (int iter = 0; iter < 200; ++iter) {
    std::string text = random_utf8(rng, 1 + rng() % 20);
    // Splice in malformed bytes: lone continuation bytes, truncated sequences, 0xFF.
    const size_t n_bad = 1 + rng() % 4;
    for (size_t k = 0; k < n_bad; ++k) {
      static const char bad[] = {'\x80', '\xBF', '\xC3', '\xE4', '\xF0', '\xFF', '\xC0', '\xED'};
      text.insert(text.begin() + static_cast<ptrdiff_t>(rng() % (text.size() + 1)), bad[rng() % sizeof bad]);
    }
    if (tok->model() == Tokenizer::Model::Spm && text.find("\xE2\x96\x81") != std::string::npos) continue;
    if (!representable(*tok, text)) continue;
    const std::vector<int32_t> ids = tok->encode(text, false, false);
    ASSERT_EQ(tok->decode(ids), text) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabs, FixtureRoundTrip,
                         ::testing::Values("llama-spm", "phi-3", "baichuan", "gpt-2", "gpt-neox",
                                           "llama-bpe", "qwen2", "deepseek-llm", "deepseek-coder",
                                           "falcon", "mpt", "starcoder", "refact"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s) {
                             if (c == '-') c = '_';
                           }
                           return s;
                         });

TEST(FixtureVocab, SpmTurnsSpaceMarkIntoSpace) {
  SQ_REQUIRE_SHARED(path, "fixtures/tokenizer/ggml-vocab-llama-spm.gguf");
  const Tokenizer* tok = fixture_tokenizer("llama-spm");
  EXPECT_EQ(tok->decode(tok->encode("a\xE2\x96\x81" "b", false, false)), "a b");
}

TEST(FixtureVocab, BertIsUnsupportedByName) {
  SQ_REQUIRE_SHARED(path, "fixtures/tokenizer/ggml-vocab-bert-bge.gguf");
  GgufFile file = GgufFile::open(path);
  try {
    load_tokenizer(file);
    FAIL() << "expected UnsupportedError";
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("'bert'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("gpt2"), std::string::npos) << e.what();
  }
}

TEST(FixtureVocab, MetadataAndEndOfGeneration) {
  SQ_REQUIRE_SHARED(path, "fixtures/tokenizer/ggml-vocab-llama-bpe.gguf");
  const Tokenizer* llama3 = fixture_tokenizer("llama-bpe");
  EXPECT_EQ(llama3->n_vocab(), 128256);
  EXPECT_EQ(llama3->bos(), 128000);
  EXPECT_EQ(llama3->eos(), 128001);
  EXPECT_TRUE(llama3->add_bos_default());
  EXPECT_TRUE(llama3->is_eog(128001));
  EXPECT_TRUE(llama3->is_eog(128009));  // <|eot_id|>
  EXPECT_FALSE(llama3->is_eog(128000));
  EXPECT_TRUE(llama3->is_control(128000));
  EXPECT_EQ(llama3->kind(), "gpt2 (byte-level BPE)");
  EXPECT_EQ(llama3->pre(), "llama-bpe");

  const Tokenizer* qwen = fixture_tokenizer("qwen2");
  ASSERT_NE(qwen, nullptr);
  EXPECT_FALSE(qwen->add_bos_default());
  EXPECT_TRUE(qwen->is_eog(151645));  // <|im_end|>
  EXPECT_TRUE(qwen->is_eog(151643));  // <|endoftext|>
  EXPECT_FALSE(qwen->chat_template().empty());

  const Tokenizer* spm = fixture_tokenizer("llama-spm");
  ASSERT_NE(spm, nullptr);
  EXPECT_EQ(spm->kind(), "llama (SentencePiece BPE)");
  EXPECT_TRUE(spm->add_bos_default());
  EXPECT_EQ(spm->token_text(1), "<s>");
}

TEST(FixtureVocab, SpecialTokensParsedOnlyWhenAsked) {
  SQ_REQUIRE_SHARED(path, "fixtures/tokenizer/ggml-vocab-llama-bpe.gguf");
  const Tokenizer* llama3 = fixture_tokenizer("llama-bpe");
  const std::string text = "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>";
  const auto special = llama3->encode(text, true, true);
  ASSERT_GE(special.size(), 5u);
  EXPECT_EQ(special[0], 128000);
  EXPECT_EQ(special[1], 128006);
  EXPECT_EQ(special.back(), 128009);
  const auto plain = llama3->encode(text, false, false);
  for (int32_t id : plain) EXPECT_LT(id, 128000) << "control text must stay plain text";
  EXPECT_EQ(llama3->decode(plain), text);
  DecodeOptions render;
  render.render_special = true;
  EXPECT_EQ(llama3->decode(std::vector<int32_t>(special.begin() + 1, special.end()), render), text);

  // Qwen's user-defined tokens match as whole tokens even in plain text.
  const Tokenizer* qwen = fixture_tokenizer("qwen2");
  ASSERT_NE(qwen, nullptr);
  const auto think = qwen->encode("<think>\nok\n</think>", false, false);
  ASSERT_FALSE(think.empty());
  EXPECT_EQ(think.front(), 151667);
  EXPECT_EQ(think.back(), 151668);
  EXPECT_EQ(qwen->decode(think), "<think>\nok\n</think>");
  // Its control tokens only when parsing special tokens.
  EXPECT_EQ(qwen->encode("<|im_start|>", false, true), std::vector<int32_t>{151644});
  EXPECT_NE(qwen->encode("<|im_start|>", false, false), std::vector<int32_t>{151644});

  // SentencePiece: text after a special token gets its own prefix space, and decoding removes it.
  const Tokenizer* spm = fixture_tokenizer("llama-spm");
  ASSERT_NE(spm, nullptr);
  const auto ids = spm->encode("<s>Hello", false, true);
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(spm->token_text(ids[1]), "\xE2\x96\x81Hello");
  EXPECT_EQ(spm->decode(ids), "Hello");
  EXPECT_NE(spm->encode("<s>Hello", false, false)[0], 1);
}

TEST(FixtureVocab, StreamingHoldsBackSplitCharacters) {
  SQ_REQUIRE_SHARED(path, "fixtures/tokenizer/ggml-vocab-llama-spm.gguf");
  const Tokenizer* spm = fixture_tokenizer("llama-spm");
  const int32_t e4 = spm->find_token("<0xE4>"), bd = spm->find_token("<0xBD>"), a0 = spm->find_token("<0xA0>");
  ASSERT_GE(e4, 0);
  StreamDecoder stream(*spm);
  EXPECT_EQ(stream.push(e4), "");
  EXPECT_EQ(stream.push(bd), "");
  EXPECT_EQ(stream.push(a0), "\xE4\xBD\xA0");  // 你
  EXPECT_EQ(stream.push(e4), "");
  EXPECT_EQ(stream.flush(), "\xE4");  // an unfinished character comes out raw
  EXPECT_EQ(stream.flush(), "");
  // Mid-sequence (the default), a space at the start is kept.
  const int32_t hello = spm->find_token("\xE2\x96\x81Hello");
  ASSERT_GE(hello, 0);
  EXPECT_EQ(stream.push(hello), " Hello");
  StreamDecoder from_start(*spm, true);
  EXPECT_EQ(from_start.push(hello), "Hello");
}

TEST(FixtureVocab, EncodeMegabyteSlow) {
  SQ_REQUIRE_SHARED(path, "fixtures/tokenizer/ggml-vocab-qwen2.gguf");
  std::mt19937 rng(7);
  std::string text;
  while (text.size() < (1u << 20)) text += random_utf8(rng, 200) + " the quick brown fox 12345\n";
  for (const char* name : {"qwen2", "llama-spm", "llama-bpe"}) {
    const Tokenizer* tok = fixture_tokenizer(name);
    ASSERT_NE(tok, nullptr);
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = tok->encode(text, false, false);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ perf     ] %s: 1 MiB -> %zu tokens in %.3f s\n", name, ids.size(), s);
    EXPECT_EQ(tok->decode(ids), text);
  }
}

}  // namespace
}  // namespace sq::test
