// GGUF v2/v3 reader over a memory mapping, and a writer.
//
// The reader trusts nothing in the file: every count, length, offset and size is checked against
// the bytes that remain and for overflow before it is used, so that a damaged or hostile file gives
// a FormatError naming the field, never a crash, a hang or a huge allocation. Tensors are views
// into the mapping (DESIGN.md, invariant 1).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/mmap.h"
#include "kernels/types.h"

namespace sq {

enum class GgufType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};

std::string_view gguf_type_name(GgufType t);

// One metadata value. Scalars keep their declared type; the number is held in the widest field of
// its kind. Arrays hold their element type and elements (arrays may nest). The reader stores arrays
// of numbers and bools packed, as the file stores them (`packed`), so that metadata never takes
// much more memory than the file; arrays of strings and of arrays are in `array`. A value built by
// hand may use either form for numbers; array_size() and element() read both.
struct GgufValue {
  GgufType type = GgufType::UINT8;
  uint64_t u = 0;  // UINT8..UINT64, BOOL (0 or 1)
  int64_t i = 0;   // INT8..INT64
  double f = 0;    // FLOAT32, FLOAT64
  std::string str;
  GgufType elem_type = GgufType::UINT8;  // ARRAY only
  std::vector<GgufValue> array;          // ARRAY of strings or arrays (or numbers, built by hand)
  std::vector<uint8_t> packed;           // ARRAY of numbers or bools, little-endian as in the file

  size_t array_size() const;
  // Element k of an array (k < array_size()), as a scalar or nested value.
  GgufValue element(size_t k) const;

  bool is_int() const;     // any integer type
  bool is_float() const;   // FLOAT32 or FLOAT64
  bool is_number() const;  // integer or float

  // Checked conversions: throw FormatError (naming `key`) when the type or range does not fit.
  int64_t as_int(std::string_view key) const;
  double as_float(std::string_view key) const;  // integers are accepted too
  bool as_bool(std::string_view key) const;
  const std::string& as_string(std::string_view key) const;
  // An array of strings / numbers, checked element by element.
  std::vector<std::string> as_strings(std::string_view key) const;
  std::vector<float> as_floats(std::string_view key) const;
  std::vector<int64_t> as_ints(std::string_view key) const;

  // A short human form for `squeeze info`: numbers, strings (truncated), "[array of N T]".
  std::string summary() const;

  static GgufValue of_u32(uint32_t v);
  static GgufValue of_i32(int32_t v);
  static GgufValue of_u64(uint64_t v);
  static GgufValue of_f32(float v);
  static GgufValue of_bool(bool v);
  static GgufValue of_string(std::string v);
  static GgufValue of_strings(const std::vector<std::string>& v);
  static GgufValue of_f32s(const std::vector<float>& v);
  static GgufValue of_i32s(const std::vector<int32_t>& v);
};

// Bytes one element of a numeric or bool type takes in a file; 0 for STRING and ARRAY.
size_t gguf_scalar_size(GgufType t);

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // dimensions, ne[0] innermost (a row of a matrix is ne[0] elements)
  uint32_t type_id = 0;      // raw GGML type id; see type()
  uint64_t offset = 0;       // from the start of the data section, as stored
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;        // 0 when the type id is unknown (size cannot be computed)
  const uint8_t* data = nullptr;  // into the mapping; nullptr when the type id is unknown

  GgmlType type() const { return static_cast<GgmlType>(type_id); }
  bool type_known() const { return !type_internal(type_id) && type_info(type_id).has_value(); }
  uint64_t rows() const;  // product of ne[1..]
};

class GgufFile {
 public:
  // Maps and parses a file. Throws IoError / FormatError.
  static GgufFile open(const std::string& path);
  // Parses bytes that the caller keeps alive (tests, fuzzing). `name` appears in messages.
  static GgufFile parse(std::span<const uint8_t> bytes, std::string name);

  GgufFile(GgufFile&&) noexcept = default;
  GgufFile& operator=(GgufFile&&) noexcept = default;

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  const std::string& name() const { return name_; }
  uint64_t file_size() const { return bytes_.size(); }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const GgufValue* find(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }
  // Typed look-ups: the value when present, `fallback` when absent, FormatError on a wrong type.
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  int64_t get_int(std::string_view key, int64_t fallback) const;
  double get_float(std::string_view key, double fallback) const;
  std::string get_string(std::string_view key, std::string fallback) const;
  bool get_bool(std::string_view key, bool fallback) const;
  // Throws FormatError naming the key when absent.
  int64_t require_int(std::string_view key) const;
  std::string require_string(std::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* tensor(std::string_view name) const;

 private:
  GgufFile() = default;
  void parse_all();

  std::shared_ptr<MappedFile> map_;  // null when parsing caller-owned bytes
  std::span<const uint8_t> bytes_;
  std::string name_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::unordered_map<std::string, size_t> metadata_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

// Builds a GGUF v3 file: metadata in insertion order, then tensor infos, then the aligned data.
class GgufWriter {
 public:
  void set(std::string key, GgufValue value);  // replaces a key already set
  // Adds a tensor whose bytes are already in GGML's layout for `type`; `ne[0]` innermost. Throws
  // InvalidArgument when the byte count does not match the shape and type.
  void add_tensor(std::string name, GgmlType type, std::vector<uint64_t> ne,
                  std::vector<uint8_t> bytes);
  void add_tensor_f32(std::string name, std::vector<uint64_t> ne, std::span<const float> values);

  std::vector<uint8_t> to_bytes() const;
  // Writes to a temporary file beside `path`, then renames it (DESIGN.md, invariant 7).
  void write(const std::string& path) const;

 private:
  struct PendingTensor {
    std::string name;
    GgmlType type;
    std::vector<uint64_t> ne;
    std::vector<uint8_t> bytes;
  };
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace sq
