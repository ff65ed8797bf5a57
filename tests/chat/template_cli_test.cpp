// squeeze template, end to end: the exact prompt on standard output (no newline added) and
// one-line errors for the mistakes a user makes.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "model/gguf.h"
#include "support.h"

namespace sq {
namespace {

using test::quote;
using test::squeeze;

bool have_binary() { return std::filesystem::exists(test::binary_path()); }

#define SQ_REQUIRE_BINARY()                                                          \
  if (!have_binary()) GTEST_SKIP() << "needs the squeeze binary (not built in the sanitizer preset)"

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

TEST(TemplateCli, PrintsTheRenderedPromptExactly) {
  SQ_REQUIRE_BINARY();
  test::TempDir dir;
  write(dir.file("m.json"), R"([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])");
  auto r = squeeze("template --builtin chatml --messages " + quote(dir.file("m.json")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
  r = squeeze("template --builtin chatml --no-generation-prompt --messages " + quote(dir.file("m.json")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n");

  write(dir.file("t.jinja"),
        "{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}"
        "{{ strftime_now('%d %B %Y') }}|{{ enable_thinking }}\n");
  r = squeeze("template --template " + quote(dir.file("t.jinja")) + " --messages " +
              quote(dir.file("m.json")) +
              " --var bos_token='<s>' --var enable_thinking=false --date 2024-07-26");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "<s>[system:S][user:U]26 July 2024|false");
}

TEST(TemplateCli, ModelWithoutTemplateFallsBackToChatml) {
  SQ_REQUIRE_BINARY();
  SQ_REQUIRE_SHARED(model, "models/stories260K/stories260K.gguf");
  test::TempDir dir;
  write(dir.file("m.json"), R"([{"role": "user", "content": "U"}])");
  auto r = squeeze("template -m " + quote(model) + " --messages " + quote(dir.file("m.json")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_NE(r.err.find("chatml"), std::string::npos) << r.err;
}

TEST(TemplateCli, ModelTemplateAndSpecialTokensComeFromGgufMetadata) {
  SQ_REQUIRE_BINARY();
  test::TempDir dir;
  // A vocabulary-only GGUF file: `template -m` reads metadata and needs no weights.
  GgufWriter w;
  w.set("general.architecture", GgufValue::of_string("llama"));
  w.set("tokenizer.ggml.model", GgufValue::of_string("llama"));
  w.set("tokenizer.ggml.tokens", GgufValue::of_strings({"<unk>", "<|begin|>", "<|end|>", "a"}));
  w.set("tokenizer.ggml.scores", GgufValue::of_f32s({0, 0, 0, -1}));
  w.set("tokenizer.ggml.token_type", GgufValue::of_i32s({2, 3, 3, 1}));
  w.set("tokenizer.ggml.bos_token_id", GgufValue::of_u32(1));
  w.set("tokenizer.ggml.eos_token_id", GgufValue::of_u32(2));
  w.set("tokenizer.chat_template",
        GgufValue::of_string("{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content }}]"
                             "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}>{% endif %}"));
  w.write(dir.file("vocab.gguf"));
  write(dir.file("m.json"), R"([{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}])");
  auto r = squeeze("template -m " + quote(dir.file("vocab.gguf")) + " --messages " + quote(dir.file("m.json")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "<|begin|>[user:U]<|end|>[assistant:A]<|end|>>");
  EXPECT_TRUE(r.err.empty()) << r.err;
}

TEST(TemplateCli, ErrorsAreOneLineAndSayWhatIsWrong) {
  SQ_REQUIRE_BINARY();
  test::TempDir dir;
  write(dir.file("obj.json"), R"({"role": "user"})");
  write(dir.file("norole.json"), R"([{"content": "x"}])");
  write(dir.file("ok.json"), R"([{"role": "user", "content": "x"}])");
  write(dir.file("bad.jinja"), "hello\n{% for m in messages %}{{ m.content }\n");
  write(dir.file("raise.jinja"), "{{ raise_exception('Only user and assistant roles are supported!') }}");
  test::expect_one_line_error(
      squeeze("template --builtin chatml --messages " + quote(dir.file("obj.json"))), "JSON array");
  test::expect_one_line_error(
      squeeze("template --builtin chatml --messages " + quote(dir.file("norole.json"))), "\"role\"");
  test::expect_one_line_error(
      squeeze("template --template " + quote(dir.file("bad.jinja")) + " --messages " +
              quote(dir.file("ok.json"))),
      "line 2, column");
  test::expect_one_line_error(
      squeeze("template --template " + quote(dir.file("raise.jinja")) + " --messages " +
              quote(dir.file("ok.json"))),
      "Only user and assistant roles are supported!");
  test::expect_one_line_error(
      squeeze("template --builtin vicuna --messages " + quote(dir.file("ok.json"))), "chatml");
  test::expect_one_line_error(squeeze("template --messages " + quote(dir.file("ok.json"))),
                              "exactly one of");
}

}  // namespace
}  // namespace sq
