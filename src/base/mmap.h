// Read-only memory mapping of a whole file (DESIGN.md, invariant 1: weights are mapped, not copied).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace sq {

class MappedFile {
 public:
  MappedFile() = default;
  // Maps `path` read-only. Throws IoError when the file cannot be opened, is a directory, or cannot
  // be mapped. An empty file maps to an empty span.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Private anonymous memory, zero-filled, with transparent huge pages advised (fewer TLB misses for
// memory that is streamed, such as repacked weights, or revisited after much else was read, such as
// the KV cache), unmapped on destruction. Pages are backed when first touched. When the mapping
// fails, data() is null and errno says why; the caller words the error. Zero bytes map nothing.
class AnonymousMemory {
 public:
  AnonymousMemory() = default;
  explicit AnonymousMemory(size_t bytes);
  ~AnonymousMemory();
  AnonymousMemory(const AnonymousMemory&) = delete;
  AnonymousMemory& operator=(const AnonymousMemory&) = delete;
  AnonymousMemory(AnonymousMemory&& other) noexcept;
  AnonymousMemory& operator=(AnonymousMemory&& other) noexcept;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// AnonymousMemory of `bytes`, or IoError naming `what` and its size when it cannot be mapped.
AnonymousMemory allocate_anonymous(size_t bytes, const std::string& what);

// Reads a whole (small) file into memory. Throws IoError.
std::string read_file(const std::string& path);

// Writes `size` bytes to a new temporary file beside `path`, flushes it to disk, then renames it
// over `path`, so that a failed write leaves any previous file intact (DESIGN.md, invariant 7).
// Throws IoError; the temporary file is removed on failure.
void write_file_atomic(const std::string& path, const void* data, size_t size);

}  // namespace sq
