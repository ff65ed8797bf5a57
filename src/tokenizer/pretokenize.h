// Pre-tokenizers of byte-level BPE vocabularies: the regular expressions that cut text into words
// before merging, chosen by `tokenizer.ggml.pre`.
//
// A pre-tokenizer is a sequence of PCRE2 patterns (UTF + UCP, JIT-compiled when available). Each
// pattern splits every piece left by the previous one into its matches and the gaps between them,
// as llama.cpp and Hugging Face's "Split(behavior=Isolated)" do; a pattern sees one piece at a
// time, so look-aheads stop at the piece's end. Bytes that are not well-formed UTF-8 become
// one-byte pieces of their own and are never given to PCRE2, so any byte string can be split.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sq {

enum class PreTokenizerKind {
  Gpt2,           // gpt-2, mpt, olmo, jais, default, absent, unknown
  Llama3,         // llama3, llama-bpe, dbrx, smaug-bpe, chatglm-bpe
  Qwen2,          // qwen2, stablelm2, hunyuan, deepseek-r1-qwen
  DeepseekLlm,    // deepseek-llm
  DeepseekCoder,  // deepseek-coder
  Falcon,         // falcon
  Starcoder,      // starcoder, refact, command-r, smollm, codeshell, exaone, minerva-7b
  Poro,           // poro-chat, bloom, gpt3-finnish
  Viking,         // viking
};

struct PreTokenizerChoice {
  PreTokenizerKind kind = PreTokenizerKind::Gpt2;
  bool known = true;           // false: `pre` was not recognised and the GPT-2 patterns stand in
  bool ignore_merges = false;  // a word that is itself a token is emitted whole (Llama 3 family)
};

// Maps a `tokenizer.ggml.pre` value to its patterns. "" and "default" give the GPT-2 patterns.
PreTokenizerChoice choose_pre_tokenizer(std::string_view pre);

// The pattern names recognised, for messages.
std::string known_pre_tokenizers();

class PreTokenizer {
 public:
  explicit PreTokenizer(PreTokenizerKind kind);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Appends to `out` the pieces of `text`, in order; together they are exactly `text`.
  // Thread-safe: the compiled patterns are shared read-only, match state is per call.
  void split(std::string_view text, std::vector<std::string_view>& out) const;

 private:
  struct Pattern;
  std::vector<std::unique_ptr<Pattern>> patterns_;
};

}  // namespace sq
