// Converting a model's weights to another tensor type, choosing each tensor's type as llama.cpp's
// quantizer (llama-quantize, without an importance matrix) does, so that a file squeeze writes holds
// the same types and the same bytes as the one llama.cpp writes from the same input.
//
// The rules, for a target whose base type B is a block type:
//   * Converted at all: 2-D and 3-D tensors whose name ends in "weight", except norms
//     ("_norm.weight"), the mixture-of-experts router ("ffn_gate_inp.weight") and the small 2-D
//     tensors of other architectures llama.cpp also keeps (position embeddings, RWKV time-mix,
//     Mamba convolutions, ...). Everything else (norms, biases, 1-D tensors, the router) keeps
//     its type and bytes.
//   * The output matrix, and token_embd when there is no output.weight (tied): Q8_0 when its rows
//     are not a multiple of B's block, else Q6_K unless B is Q8_0 (then Q8_0).
//   * token_embd (untied): B.
//   * Q4_K_M and Q5_K_M only: attn_v of layer i and ffn_down of layer i are Q6_K when
//     use_more_bits(i, n) holds, with n the number of attn_v tensors (resp. of layers):
//         i < n/8  or  i >= 7n/8  or  (i - n/8) % 3 == 2
//     attn_qkv (fused) is Q5_K under Q4_K_M and Q6_K under Q5_K_M.
//     (Falcon, under Q4_K_M: ffn_down is Q6_K below n/16, else Q5_K where use_more_bits holds;
//     its output is always Q8_0.)
//   * Models with exactly 8 experts: attn_v and attn_k are Q8_0; under Q4_K_M attn_output is Q5_K.
//     70B-class models (80 layers, grouped-query attention): attn_v in Q4_K becomes Q5_K.
//   * Fallback, last: a type whose block does not divide the rows is replaced, Q4_K -> Q5_0,
//     Q5_K -> Q5_1, Q6_K -> Q8_0, and F16 when even that does not divide them; a row that no
//     fallback fits (a Q4_0 target with rows not a multiple of 32) is an InvalidArgument.
// For F32, F16 and BF16 targets every converted tensor simply gets that type.
//
// llama.cpp visits tensors in its loader's order (tensors outside blocks first, then by block
// number, then by name) and counts attn_v / ffn_down tensors in that order; plan_tensor_types and
// the output files follow the same order.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/types.h"

namespace sq {

class ThreadPool;

// llama.cpp's LLAMA_FTYPE numbers, stored in general.file_type.
enum class FileType : uint32_t {
  ALL_F32 = 0,
  MOSTLY_F16 = 1,
  MOSTLY_Q4_0 = 2,
  MOSTLY_Q4_1 = 3,
  MOSTLY_Q8_0 = 7,
  MOSTLY_Q5_0 = 8,
  MOSTLY_Q5_1 = 9,
  MOSTLY_Q4_K_S = 14,
  MOSTLY_Q4_K_M = 15,
  MOSTLY_Q5_K_S = 16,
  MOSTLY_Q5_K_M = 17,
  MOSTLY_Q6_K = 18,
  MOSTLY_BF16 = 32,
};

// What `squeeze quantize` and `squeeze synth` are asked to produce.
struct QuantTarget {
  std::string name;                  // "Q4_K_M", "Q8_0", "F16", ...
  GgmlType base = GgmlType::F32;     // the type of most weight matrices
  FileType file_type = FileType::ALL_F32;
  bool k_mix = false;                // Q4_K_M / Q5_K_M: the use_more_bits upgrades
};

// Parses a target name, case-insensitively: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K
// Q4_K_M Q5_K_M. A plain Q4_K or Q5_K is written with the file type llama.cpp's loader infers for
// such a file (Q4_K_M, Q5_K_M). nullopt for anything else.
std::optional<QuantTarget> quant_target_from_name(std::string_view name);
// "F32, F16, BF16, ..., Q5_K_M": for messages.
std::string quant_target_names();
// The target whose plain type is `t` (what SynthSpec::type means), nullopt for unsupported types.
std::optional<QuantTarget> quant_target_for_type(GgmlType t);

// What the type rules need to know about the model.
struct QuantModelInfo {
  std::string arch;
  int32_t n_layer = 0;
  int32_t n_head = 0;
  int32_t n_head_kv = 0;
  int32_t n_expert = 0;
};

struct QuantTensor {
  std::string name;
  std::vector<uint64_t> ne;
};

// Whether llama.cpp's quantizer converts this tensor at all (first rule above).
bool quantizable_tensor(std::string_view name, size_t n_dims);

// llama.cpp's loader order: true when tensor a comes before tensor b.
bool llama_tensor_order(const std::string& a, const std::string& b);

// The type of every tensor, index for index, for a model converted to `target`; nullopt for a tensor
// that is not converted (it keeps its type). Throws InvalidArgument when a row fits no type.
std::vector<std::optional<GgmlType>> plan_tensor_types(const std::vector<QuantTensor>& tensors,
                                                       const QuantModelInfo& model,
                                                       const QuantTarget& target);

// Quantizes `rows` rows of `n_per_row` floats into dst (row_bytes(type, n_per_row) each), split over
// the pool's threads by rows; the bytes do not depend on the thread count. pool may be null.
void quantize_rows(GgmlType type, const float* src, uint8_t* dst, int64_t n_per_row, int64_t rows,
                   ThreadPool* pool);

// Progress of a long write: bytes of output done, bytes in all, and the tensor being written.
using ProgressFn = std::function<void(uint64_t done, uint64_t total, const std::string& tensor)>;

struct QuantizeOptions {
  bool allow_requantize = false;  // accept block-quantized input tensors (dequantized first)
  ThreadPool* pool = nullptr;
  ProgressFn progress;
};

struct QuantizeSummary {
  size_t n_tensors = 0;
  size_t n_converted = 0;
  uint64_t in_bytes = 0;   // tensor data read
  uint64_t out_bytes = 0;  // size of the file written
};

// Reads a GGUF model (mapped), converts its weights to `target` and writes `out_path` (streamed,
// through a temporary file renamed at the end). Metadata is copied in order, except that
// general.quantization_version (2) and general.file_type are set last, as llama.cpp does. Errors:
// IoError / FormatError for the input, UnsupportedError for block-quantized input without
// allow_requantize or a type squeeze cannot convert, InvalidArgument for a tensor no type fits.
// Nothing is left at out_path when it fails.
QuantizeSummary quantize_model_file(const std::string& in_path, const std::string& out_path,
                                    const QuantTarget& target, const QuantizeOptions& options);

}  // namespace sq
