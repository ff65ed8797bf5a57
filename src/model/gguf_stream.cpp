#include "model/gguf_stream.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "base/error.h"
#include "model/gguf_encode.h"

namespace sq {

namespace {

constexpr size_t kMaxDims = 4;
constexpr size_t kBufferBytes = size_t{4} << 20;

using gguf_encode::put;
using gguf_encode::put_bytes;
using gguf_encode::put_string;
using gguf_encode::put_value;

uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

uint64_t alignment_of(const GgufMetadata& metadata) {
  for (const auto& [key, value] : metadata) {
    if (key != "general.alignment") continue;
    const int64_t a = value.is_int() ? value.as_int(key) : 0;
    if (a <= 0 || a > (1 << 30) || (a & (a - 1)) != 0 || value.type != GgufType::UINT32) {
      fail<InvalidArgument>("general.alignment is {}; expected a uint32 power of two", value.summary());
    }
    return static_cast<uint64_t>(a);
  }
  return 32;
}

uint64_t tensor_bytes(const GgufTensorSpec& t) {
  auto info = type_info(t.type);
  if (!info || type_internal(t.type)) {
    fail<InvalidArgument>("tensor '{}': type id {} cannot be stored in a file", t.name, static_cast<uint32_t>(t.type));
  }
  if (t.ne.empty() || t.ne.size() > kMaxDims) {
    fail<InvalidArgument>("tensor '{}' has {} dimensions; expected 1 to {}", t.name, t.ne.size(), kMaxDims);
  }
  uint64_t n = 1;
  for (uint64_t d : t.ne) {
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || __builtin_mul_overflow(n, d, &n)) {
      fail<InvalidArgument>("tensor '{}': the element count of its shape overflows", t.name);
    }
  }
  if (t.ne[0] % info->block_elems != 0) {
    fail<InvalidArgument>("tensor '{}': rows of {} elements are not a multiple of the {} block size {}",
                          t.name, t.ne[0], info->name, info->block_elems);
  }
  return n / info->block_elems * info->block_bytes;
}

}  // namespace

std::vector<uint8_t> gguf_header_bytes(const GgufMetadata& metadata,
                                       const std::vector<GgufTensorLayout>& layout, uint64_t alignment) {
  std::vector<uint8_t> out;
  put<uint32_t>(out, gguf_encode::kMagic);
  put<uint32_t>(out, 3);
  put<uint64_t>(out, layout.size());
  put<uint64_t>(out, metadata.size());
  for (const auto& [key, value] : metadata) {
    put_string(out, key);
    put<uint32_t>(out, static_cast<uint32_t>(value.type));
    put_value(out, value);
  }
  for (const auto& t : layout) {
    put_string(out, t.spec.name);
    put<uint32_t>(out, static_cast<uint32_t>(t.spec.ne.size()));
    for (uint64_t d : t.spec.ne) put<uint64_t>(out, d);
    put<uint32_t>(out, static_cast<uint32_t>(t.spec.type));
    put<uint64_t>(out, t.offset);
  }
  out.resize(align_up(out.size(), alignment), 0);
  return out;
}

GgufStreamWriter::GgufStreamWriter(std::string path, const GgufMetadata& metadata,
                                   std::vector<GgufTensorSpec> tensors)
    : path_(std::move(path)) {
  alignment_ = alignment_of(metadata);
  std::unordered_set<std::string> names;
  uint64_t offset = 0;
  layout_.reserve(tensors.size());
  for (auto& t : tensors) {
    if (!names.insert(t.name).second) fail<InvalidArgument>("duplicate tensor name '{}'", t.name);
    GgufTensorLayout l;
    l.n_bytes = tensor_bytes(t);
    l.offset = offset;
    l.spec = std::move(t);
    offset = align_up(offset + l.n_bytes, alignment_);
    data_size_ = l.offset + l.n_bytes;
    layout_.push_back(std::move(l));
  }
  const std::vector<uint8_t> header = gguf_header_bytes(metadata, layout_, alignment_);
  data_start_ = header.size();

  tmp_path_ = path_ + ".tmp." + std::to_string(::getpid());
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail<IoError>("cannot create '{}': {}", tmp_path_, std::strerror(errno));
  buffer_.reserve(kBufferBytes);
  try {
    put(header.data(), header.size());
    while (current_ < layout_.size() && layout_[current_].n_bytes == 0) ++current_;
  } catch (...) {
    abandon();
    throw;
  }
}

GgufStreamWriter::~GgufStreamWriter() {
  if (!committed_) abandon();
}

void GgufStreamWriter::put(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const size_t take = std::min(n, kBufferBytes - buffer_.size());
    buffer_.insert(buffer_.end(), p, p + take);
    p += take;
    n -= take;
    if (buffer_.size() == kBufferBytes) flush_buffer();
  }
}

void GgufStreamWriter::flush_buffer() {
  if (fd_ < 0) fail<IoError>("'{}' is no longer open for writing", tmp_path_);
  size_t done = 0;
  while (done < buffer_.size()) {
    const ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail<IoError>("cannot write '{}': {}", tmp_path_, std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
  buffer_.clear();
}

void GgufStreamWriter::write(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    if (current_ >= layout_.size()) {
      fail<InvalidArgument>("{}: {} bytes written past the last tensor", path_, n);
    }
    const GgufTensorLayout& t = layout_[current_];
    const uint64_t take = std::min<uint64_t>(n, t.n_bytes - in_tensor_);
    put(p, take);
    p += take;
    n -= take;
    in_tensor_ += take;
    if (in_tensor_ == t.n_bytes) {
      // Pad up to where the next tensor with data starts.
      ++current_;
      while (current_ < layout_.size() && layout_[current_].n_bytes == 0) ++current_;
      in_tensor_ = 0;
      if (current_ < layout_.size()) {
        static const uint8_t kZeros[256] = {};
        uint64_t pad = layout_[current_].offset - (t.offset + t.n_bytes);
        while (pad > 0) {
          const uint64_t k = std::min<uint64_t>(pad, sizeof(kZeros));
          put(kZeros, k);
          pad -= k;
        }
      }
    }
  }
}

void GgufStreamWriter::commit() {
  if (committed_) return;
  if (current_ < layout_.size()) {
    fail<InvalidArgument>("{}: tensor '{}' has {} of its {} bytes; the file is incomplete", path_,
                          layout_[current_].spec.name, in_tensor_, layout_[current_].n_bytes);
  }
  try {
    flush_buffer();
    if (::fsync(fd_) != 0) fail<IoError>("cannot flush '{}' to disk: {}", tmp_path_, std::strerror(errno));
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail<IoError>("cannot close '{}': {}", tmp_path_, std::strerror(errno));
    if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
      fail<IoError>("cannot rename '{}' to '{}': {}", tmp_path_, path_, std::strerror(errno));
    }
  } catch (...) {
    abandon();
    throw;
  }
  committed_ = true;
}

void GgufStreamWriter::abandon() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!tmp_path_.empty() && !committed_) {
    ::unlink(tmp_path_.c_str());
    tmp_path_.clear();
  }
  buffer_.clear();
}

}  // namespace sq
