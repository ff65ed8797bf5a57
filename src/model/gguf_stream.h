// A GGUF v3 writer that streams tensor data to disk, for files larger than memory (`squeeze synth`,
// `squeeze quantize`). Every tensor's type and shape is known up front, so the header with all the
// offsets is written first; the data then follows tensor by tensor, in pieces of any size, and only
// the piece being written is in memory.
//
// The file appears under its name only when commit() succeeds: the bytes go to `PATH.tmp.<pid>`,
// which is flushed to disk and renamed over PATH at the end, and removed if anything fails or the
// writer is destroyed first (DESIGN.md, invariant 7).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kernels/types.h"
#include "model/gguf.h"

namespace sq {

struct GgufTensorSpec {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<uint64_t> ne;  // ne[0] innermost
};

// A tensor's place in the file: its data starts `offset` bytes after the data section.
struct GgufTensorLayout {
  GgufTensorSpec spec;
  uint64_t n_bytes = 0;
  uint64_t offset = 0;
};

using GgufMetadata = std::vector<std::pair<std::string, GgufValue>>;

class GgufStreamWriter {
 public:
  // Checks every tensor (known type, 1 to 4 dimensions, rows a multiple of the block size, unique
  // names; InvalidArgument otherwise), creates the temporary file and writes the header. Alignment
  // is general.alignment when the metadata sets it, else 32. Throws IoError when the file cannot be
  // created or written.
  GgufStreamWriter(std::string path, const GgufMetadata& metadata, std::vector<GgufTensorSpec> tensors);
  ~GgufStreamWriter();
  GgufStreamWriter(const GgufStreamWriter&) = delete;
  GgufStreamWriter& operator=(const GgufStreamWriter&) = delete;

  const std::vector<GgufTensorLayout>& tensors() const { return layout_; }
  // Bytes of the whole file once every tensor is written.
  uint64_t file_size() const { return data_start_ + data_size_; }

  // Appends `n` bytes to the data of the tensors, in file order: a piece may end inside a tensor,
  // and padding between tensors is added here. Writing past the last tensor is an InvalidArgument.
  void write(const void* data, size_t n);
  // Index of the tensor the next byte belongs to (tensors().size() once all are written).
  size_t current_tensor() const { return current_; }

  // Checks that every tensor is complete, flushes the file to disk and renames it to its path.
  void commit();
  // Removes the temporary file; later calls do nothing. The destructor calls it unless committed.
  void abandon() noexcept;

  const std::string& path() const { return path_; }

 private:
  void put(const void* data, size_t n);
  void flush_buffer();

  std::string path_;
  std::string tmp_path_;
  int fd_ = -1;
  bool committed_ = false;
  std::vector<GgufTensorLayout> layout_;
  uint64_t alignment_ = 32;
  uint64_t data_start_ = 0;  // file offset of the data section
  uint64_t data_size_ = 0;   // bytes of the data section (last tensor unpadded)
  size_t current_ = 0;       // tensor being written
  uint64_t in_tensor_ = 0;   // bytes of the current tensor already written
  std::vector<uint8_t> buffer_;
};

// The bytes of a GGUF v3 header (metadata and tensor infos, padded to `alignment`) for tensors
// placed as `layout` says; what GgufWriter writes before the data.
std::vector<uint8_t> gguf_header_bytes(const GgufMetadata& metadata,
                                       const std::vector<GgufTensorLayout>& layout, uint64_t alignment);

}  // namespace sq
