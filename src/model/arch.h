// The architecture registry (STYLE.md, items 2 and 12): one file per architecture under
// model/arch/, each reading its hyper-parameters, binding its tensors and running its forward
// pass with the shared blocks of model/blocks.h.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sq {

class GgufFile;
class KvCache;
class Model;
class PagedKvCache;
struct BatchSlice;
class ThreadPool;

class Architecture {
 public:
  virtual ~Architecture() = default;
  virtual std::string_view name() const = 0;
  // Reads hyper-parameters from `file` into model.config and binds model's tensor views. Throws
  // FormatError for a missing tensor or key, or a shape that does not fit the hyper-parameters.
  virtual void load(const GgufFile& file, Model& model) const = 0;
  virtual void forward(const Model& model, std::span<const int32_t> tokens, int32_t pos0,
                       KvCache& kv, ThreadPool& pool, std::span<float> logits,
                       bool all_logits) const = 0;
  // Model::forward_batch. The default runs the shared decoder (run_decoder_batch, blocks.h), which
  // is what every architecture built from those blocks needs.
  virtual void forward_batch(const Model& model, std::span<const BatchSlice> batch,
                             PagedKvCache& kv, ThreadPool& pool, std::span<float> logits,
                             std::span<float> hidden) const;
};

// nullptr for a name squeeze does not know.
const Architecture* find_architecture(std::string_view name);
// "llama, qwen2", for messages.
std::string architecture_names();

// Defined in model/arch/<name>.cpp.
const Architecture& llama_architecture();
const Architecture& qwen2_architecture();

}  // namespace sq
