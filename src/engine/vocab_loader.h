// The bridge from GGUF metadata (tokenizer.ggml.*) to the tokenizer layer, which knows no file
// format.
#pragma once

#include <memory>

#include "model/gguf.h"
#include "tokenizer/tokenizer.h"

namespace sq {

// The vocabulary in a GGUF file's metadata. Throws FormatError (missing or mistyped keys,
// inconsistent arrays) or UnsupportedError (a tokenizer model squeeze does not implement).
// A file without a vocabulary ("no_vocab" or no tokenizer.ggml.model) gives a VocabData whose
// model is "no_vocab".
VocabData vocab_from_gguf(const GgufFile& file);

// The tokenizer of a GGUF file, whatever its architecture (vocabulary-only files included);
// nullptr when the file carries no vocabulary.
std::unique_ptr<Tokenizer> load_tokenizer(const GgufFile& file);

}  // namespace sq
