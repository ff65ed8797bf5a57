#include "engine/vocab_loader.h"

#include <cstdint>
#include <string_view>

#include "base/error.h"
#include "tokenizer/pretokenize.h"

namespace sq {
namespace {

constexpr std::string_view kNoVocab = "no_vocab";

// A special token id: absent, or stored as -1 / UINT32_MAX (how converters write "none").
int32_t special_id(const GgufFile& file, std::string_view key) {
  const GgufValue* v = file.find(key);
  if (v == nullptr) return -1;
  const int64_t id = v->as_int(key);
  if (id == -1 || id == 0xFFFFFFFFLL) return -1;
  if (id < 0 || id > INT32_MAX) {
    fail<FormatError>("{}: metadata '{}' is {}; expected a token id (or -1 for none)", file.name(),
                      key, id);
  }
  return static_cast<int32_t>(id);
}

}  // namespace

VocabData vocab_from_gguf(const GgufFile& file) {
  VocabData d;
  d.model = file.get_string("tokenizer.ggml.model", std::string(kNoVocab));
  if (d.model == kNoVocab) return d;
  if (d.model != "llama" && d.model != "gpt2") {
    fail<UnsupportedError>(
        "{}: tokenizer model '{}' (tokenizer.ggml.model) is not supported; supported: llama "
        "(SentencePiece BPE), gpt2 (byte-level BPE), no_vocab",
        file.name(), d.model);
  }
  d.pre = file.get_string("tokenizer.ggml.pre", "");

  const GgufValue* tokens = file.find("tokenizer.ggml.tokens");
  if (tokens == nullptr) {
    fail<FormatError>("{}: tokenizer model is '{}' but 'tokenizer.ggml.tokens' is missing",
                      file.name(), d.model);
  }
  d.tokens = tokens->as_strings("tokenizer.ggml.tokens");
  if (const GgufValue* v = file.find("tokenizer.ggml.scores")) {
    d.scores = v->as_floats("tokenizer.ggml.scores");
  }
  if (const GgufValue* v = file.find("tokenizer.ggml.token_type")) {
    const std::vector<int64_t> types = v->as_ints("tokenizer.ggml.token_type");
    d.types.reserve(types.size());
    for (size_t i = 0; i < types.size(); ++i) {
      if (types[i] < 0 || types[i] > 6) {
        fail<FormatError>("{}: tokenizer.ggml.token_type[{}] is {}; expected 0..6", file.name(), i,
                          types[i]);
      }
      d.types.push_back(static_cast<TokenType>(types[i]));
    }
  }
  if (d.model == "gpt2") {
    const GgufValue* merges = file.find("tokenizer.ggml.merges");
    if (merges == nullptr) {
      fail<FormatError>("{}: tokenizer model is 'gpt2' but 'tokenizer.ggml.merges' is missing",
                        file.name());
    }
    d.merges = merges->as_strings("tokenizer.ggml.merges");
  }

  d.bos = special_id(file, "tokenizer.ggml.bos_token_id");
  d.eos = special_id(file, "tokenizer.ggml.eos_token_id");
  d.unk = special_id(file, "tokenizer.ggml.unknown_token_id");
  d.pad = special_id(file, "tokenizer.ggml.padding_token_id");
  d.eot = special_id(file, "tokenizer.ggml.eot_token_id");
  d.eom = special_id(file, "tokenizer.ggml.eom_token_id");

  // Defaults as llama.cpp's: SentencePiece adds BOS and a prefix space; byte-level BPE adds
  // neither, except the Llama 3 family, which adds BOS.
  const bool spm = d.model == "llama";
  const bool bos_default = spm || choose_pre_tokenizer(d.pre).ignore_merges;
  d.add_bos = file.get_bool("tokenizer.ggml.add_bos_token", bos_default);
  d.add_eos = file.get_bool("tokenizer.ggml.add_eos_token", false);
  d.add_space_prefix = file.get_bool("tokenizer.ggml.add_space_prefix", spm);
  d.chat_template = file.get_string("tokenizer.chat_template", "");
  return d;
}

std::unique_ptr<Tokenizer> load_tokenizer(const GgufFile& file) {
  VocabData d = vocab_from_gguf(file);
  if (d.model == kNoVocab) return nullptr;
  try {
    return Tokenizer::create(std::move(d));
  } catch (const FormatError& e) {
    throw FormatError(file.name() + ": " + e.what());
  } catch (const UnsupportedError& e) {
    throw UnsupportedError(file.name() + ": " + e.what());
  }
}

}  // namespace sq
