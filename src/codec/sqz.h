// The model-driven lossless compressor behind `squeeze zip` / `squeeze unzip`, and its container,
// the .sqz archive (docs/sqz-format.md).
//
// The input bytes become a stream of symbols: model tokens, whose bytes are verified to give back
// the input exactly, and escapes for bytes the tokenizer cannot carry (raw segments). The stream is
// cut into chunks of a fixed number of model positions, coded independently (in parallel): each
// chunk starts from an empty context (BOS when the model uses one), is prefilled in one batch when
// compressing and rebuilt token by token when decompressing, and every symbol is range-coded with
// the model's next-token distribution turned into integer frequencies (codec/freq.h). The kernels'
// batch and thread invariance and their portability across instruction sets (DESIGN.md, invariants
// 2-3) are what make the two sides see the same frequencies.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace sq {
class Engine;
}

namespace sq::codec {

// Called from the coding threads' coordinator with the input bytes done so far and the total.
using ProgressFn = std::function<void(uint64_t done_bytes, uint64_t total_bytes)>;

struct ZipOptions {
  int32_t chunk_tokens = 0;  // model positions per chunk, BOS included; 0: default_chunk_tokens()
  int n_threads = 0;         // 0: physical cores
  ProgressFn progress;       // may be empty
};

struct ZipStats {
  uint64_t input_bytes = 0;
  uint64_t archive_bytes = 0;   // the whole .sqz
  uint64_t payload_bytes = 0;   // range-coded chunk data (archive minus header and chunk table)
  uint64_t n_tokens = 0;        // model tokens coded (escapes not counted)
  uint64_t n_chunks = 0;
  uint64_t n_segments = 0;      // fresh model contexts (a chunk holds one or more)
  uint64_t escaped_bytes = 0;   // input bytes carried by raw segments
  uint64_t stored_chunks = 0;   // chunks kept verbatim because coding did not shrink them
  // The model's cross-entropy of the symbols actually coded, in bits: -sum log2 p(token) under the
  // exact float softmax with the same segments. What an ideal coder would reach; payload_bytes * 8
  // minus this is what the range coder and the integer frequencies cost.
  double model_bits = 0;
  // What the bits that start segments cost (docs/sqz-format.md, "restart" and "prefix" bits), at
  // their adaptive probabilities: side information beside the model's cross-entropy. The payload
  // is model_bits + segment_bits plus what the range coder loses.
  double segment_bits = 0;
  double seconds = 0;
};

// The chunk size used when ZipOptions::chunk_tokens is 0: the model's context, capped at 2048.
int32_t default_chunk_tokens(const Engine& engine);

// Compresses `input` with the engine's model. Throws InvalidArgument for a bad option (a chunk too
// small or larger than the model's context).
std::string zip(const Engine& engine, std::string_view input, const ZipOptions& options,
                ZipStats* stats = nullptr);

// What an archive's header says, read without a model.
struct SqzInfo {
  uint32_t format_version = 0;
  uint32_t kernel_version = 0;   // kernels::kDeterministicPathVersion at writing
  uint64_t model_fingerprint = 0;
  std::string model_name;
  int32_t chunk_tokens = 0;
  uint64_t original_bytes = 0;
  uint64_t original_xxh3 = 0;
  uint64_t n_chunks = 0;
};
// Parses and checks the header and chunk table. Throws FormatError naming what is wrong.
SqzInfo read_info(std::string_view archive);

struct UnzipOptions {
  int n_threads = 0;
  ProgressFn progress;
};

// Decompresses. Throws FormatError for a damaged archive and InvalidArgument when the engine's
// model is not the one the archive was written with (names both). Never returns wrong bytes: the
// checksums of every chunk and of the whole are verified before returning.
std::string unzip(const Engine& engine, std::string_view archive, const UnzipOptions& options);

// The fingerprint of a loaded model: XXH3-64 over its tensors' data and its tokenizer's vocabulary.
uint64_t model_fingerprint(const Engine& engine);

}  // namespace sq::codec
