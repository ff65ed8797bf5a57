#include "model/gguf.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "base/error.h"
#include "model/gguf_encode.h"

namespace sq {

namespace {

constexpr int kMaxArrayDepth = 8;
constexpr uint32_t kMaxDims = 4;

static_assert(std::endian::native == std::endian::little, "squeeze reads little-endian GGUF files");

bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }
bool checked_add(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_add_overflow(a, b, out); }

// Smallest number of bytes one value of type t can occupy; used to bound array counts by the bytes
// that remain before anything is allocated.
uint64_t min_encoded_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8:
    case GgufType::INT8:
    case GgufType::BOOL:
      return 1;
    case GgufType::UINT16:
    case GgufType::INT16:
      return 2;
    case GgufType::UINT32:
    case GgufType::INT32:
    case GgufType::FLOAT32:
      return 4;
    case GgufType::UINT64:
    case GgufType::INT64:
    case GgufType::FLOAT64:
    case GgufType::STRING:
      return 8;
    case GgufType::ARRAY:
      return 12;
  }
  return 1;
}

// A key or tensor name as it appears in a message: at most 80 characters, control bytes escaped,
// so that a hostile file cannot flood the terminal.
std::string shown(std::string_view name) {
  std::string out;
  for (size_t k = 0; k < name.size() && k < 80; ++k) {
    const auto c = static_cast<unsigned char>(name[k]);
    if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (name.size() > 80) out += fmt::format("... ({} bytes)", name.size());
  return out;
}

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::FLOAT64); }

// A cursor over untrusted bytes: every read checks what remains and names what it was reading.
class Reader {
 public:
  Reader(std::span<const uint8_t> bytes, const std::string& name) : bytes_(bytes), name_(name) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }

  void need(uint64_t n, std::string_view what) const {
    if (n > remaining()) {
      fail<FormatError>("{}: truncated file: reading {} at offset {} needs {} bytes, {} remain",
                        name_, what, pos_, n, remaining());
    }
  }

  template <typename T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  // `what` and `key` only build the message of an error: nothing is formatted on success, so that
  // long keys with many elements stay linear.
  std::string read_string(std::string_view what, std::string_view key = {}) {
    uint64_t len = read<uint64_t>(what);
    if (len > remaining()) {
      fail<FormatError>("{}: {}{}{} has length {} at offset {}, but only {} bytes remain in the file",
                        name_, what, key.empty() ? "" : " of ", shown(key), len, pos_ - 8, remaining());
    }
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), static_cast<size_t>(len));
    pos_ += len;
    return s;
  }

  const std::string& name() const { return name_; }
  const uint8_t* here() const { return bytes_.data() + pos_; }
  void skip(uint64_t n) { pos_ += n; }

 private:
  std::span<const uint8_t> bytes_;
  const std::string& name_;
  uint64_t pos_ = 0;
};

GgufValue read_value(Reader& r, GgufType type, const std::string& key, int depth) {
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufType::UINT8: v.u = r.read<uint8_t>(key); break;
    case GgufType::INT8: v.i = r.read<int8_t>(key); break;
    case GgufType::UINT16: v.u = r.read<uint16_t>(key); break;
    case GgufType::INT16: v.i = r.read<int16_t>(key); break;
    case GgufType::UINT32: v.u = r.read<uint32_t>(key); break;
    case GgufType::INT32: v.i = r.read<int32_t>(key); break;
    case GgufType::UINT64: v.u = r.read<uint64_t>(key); break;
    case GgufType::INT64: v.i = r.read<int64_t>(key); break;
    case GgufType::FLOAT32: v.f = r.read<float>(key); break;
    case GgufType::FLOAT64: v.f = r.read<double>(key); break;
    case GgufType::BOOL: {
      uint8_t b = r.read<uint8_t>(key);
      if (b > 1) {
        fail<FormatError>("{}: metadata '{}' is a bool with value {}; expected 0 or 1", r.name(), shown(key), b);
      }
      v.u = b;
      break;
    }
    case GgufType::STRING: v.str = r.read_string("string value", key); break;
    case GgufType::ARRAY: {
      if (depth >= kMaxArrayDepth) {
        fail<FormatError>("{}: metadata '{}' nests arrays deeper than {} levels", r.name(), shown(key),
                          kMaxArrayDepth);
      }
      uint32_t et = r.read<uint32_t>(key);
      if (!valid_type(et)) {
        fail<FormatError>("{}: metadata '{}' is an array of unknown value type {}; expected 0..12",
                          r.name(), shown(key), et);
      }
      v.elem_type = static_cast<GgufType>(et);
      uint64_t count = r.read<uint64_t>(key);
      uint64_t min_bytes = 0;
      if (!checked_mul(count, min_encoded_size(v.elem_type), &min_bytes) || min_bytes > r.remaining()) {
        fail<FormatError>(
            "{}: metadata '{}' claims an array of {} {} elements, more than the {} bytes left in the "
            "file can hold",
            r.name(), shown(key), count, gguf_type_name(v.elem_type), r.remaining());
      }
      if (const size_t es = gguf_scalar_size(v.elem_type); es != 0) {
        // Numbers are kept as the file stores them (min_bytes is exactly their size).
        v.packed.assign(r.here(), r.here() + min_bytes);
        r.skip(min_bytes);
        if (v.elem_type == GgufType::BOOL) {
          for (uint8_t b : v.packed) {
            if (b > 1) {
              fail<FormatError>("{}: metadata '{}' is an array of bool holding {}; expected 0 or 1",
                                r.name(), shown(key), b);
            }
          }
        }
        break;
      }
      v.array.reserve(static_cast<size_t>(count));
      for (uint64_t k = 0; k < count; ++k) {
        v.array.push_back(read_value(r, v.elem_type, key, depth + 1));
      }
      break;
    }
  }
  return v;
}

}  // namespace

size_t gguf_scalar_size(GgufType t) {
  switch (t) {
    case GgufType::STRING:
    case GgufType::ARRAY:
      return 0;
    default:
      return static_cast<size_t>(min_encoded_size(t));
  }
}

std::string_view gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::UINT8: return "uint8";
    case GgufType::INT8: return "int8";
    case GgufType::UINT16: return "uint16";
    case GgufType::INT16: return "int16";
    case GgufType::UINT32: return "uint32";
    case GgufType::INT32: return "int32";
    case GgufType::FLOAT32: return "float32";
    case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "string";
    case GgufType::ARRAY: return "array";
    case GgufType::UINT64: return "uint64";
    case GgufType::INT64: return "int64";
    case GgufType::FLOAT64: return "float64";
  }
  return "unknown";
}

// ---- GgufValue ----------------------------------------------------------------------------------

bool GgufValue::is_int() const {
  switch (type) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::UINT16: case GgufType::INT16:
    case GgufType::UINT32: case GgufType::INT32: case GgufType::UINT64: case GgufType::INT64:
      return true;
    default:
      return false;
  }
}

size_t GgufValue::array_size() const {
  if (type != GgufType::ARRAY) return 0;
  if (!array.empty()) return array.size();
  const size_t es = gguf_scalar_size(elem_type);
  return es == 0 ? 0 : packed.size() / es;
}

GgufValue GgufValue::element(size_t k) const {
  if (!array.empty()) return array[k];
  GgufValue v;
  v.type = elem_type;
  const uint8_t* p = packed.data() + k * gguf_scalar_size(elem_type);
  auto load = [p](auto zero) {
    decltype(zero) x;
    std::memcpy(&x, p, sizeof(x));
    return x;
  };
  switch (elem_type) {
    case GgufType::UINT8: v.u = load(uint8_t{}); break;
    case GgufType::INT8: v.i = load(int8_t{}); break;
    case GgufType::UINT16: v.u = load(uint16_t{}); break;
    case GgufType::INT16: v.i = load(int16_t{}); break;
    case GgufType::UINT32: v.u = load(uint32_t{}); break;
    case GgufType::INT32: v.i = load(int32_t{}); break;
    case GgufType::UINT64: v.u = load(uint64_t{}); break;
    case GgufType::INT64: v.i = load(int64_t{}); break;
    case GgufType::FLOAT32: v.f = load(float{}); break;
    case GgufType::FLOAT64: v.f = load(double{}); break;
    case GgufType::BOOL: v.u = load(uint8_t{}) ? 1 : 0; break;
    default: break;
  }
  return v;
}

bool GgufValue::is_float() const { return type == GgufType::FLOAT32 || type == GgufType::FLOAT64; }
bool GgufValue::is_number() const { return is_int() || is_float(); }

int64_t GgufValue::as_int(std::string_view key) const {
  switch (type) {
    case GgufType::UINT8: case GgufType::UINT16: case GgufType::UINT32: case GgufType::UINT64:
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        fail<FormatError>("metadata '{}' = {} is out of range", shown(key), u);
      }
      return static_cast<int64_t>(u);
    case GgufType::INT8: case GgufType::INT16: case GgufType::INT32: case GgufType::INT64:
      return i;
    default:
      fail<FormatError>("metadata '{}' has type {}; expected an integer", shown(key), gguf_type_name(type));
  }
}

double GgufValue::as_float(std::string_view key) const {
  if (is_float()) return f;
  if (is_int()) return static_cast<double>(as_int(key));
  fail<FormatError>("metadata '{}' has type {}; expected a number", shown(key), gguf_type_name(type));
}

bool GgufValue::as_bool(std::string_view key) const {
  if (type == GgufType::BOOL) return u != 0;
  fail<FormatError>("metadata '{}' has type {}; expected bool", shown(key), gguf_type_name(type));
}

const std::string& GgufValue::as_string(std::string_view key) const {
  if (type == GgufType::STRING) return str;
  fail<FormatError>("metadata '{}' has type {}; expected string", shown(key), gguf_type_name(type));
}

std::vector<std::string> GgufValue::as_strings(std::string_view key) const {
  if (type != GgufType::ARRAY || elem_type != GgufType::STRING) {
    fail<FormatError>("metadata '{}' has type {}; expected an array of strings", shown(key), summary());
  }
  std::vector<std::string> out;
  out.reserve(array.size());
  for (const auto& e : array) out.push_back(e.str);
  return out;
}

std::vector<float> GgufValue::as_floats(std::string_view key) const {
  GgufValue probe;
  probe.type = elem_type;
  if (type != GgufType::ARRAY || !probe.is_number()) {
    fail<FormatError>("metadata '{}' has type {}; expected an array of numbers", shown(key), summary());
  }
  const size_t n = array_size();
  std::vector<float> out;
  out.reserve(n);
  if (elem_type == GgufType::FLOAT32 && array.empty()) {
    out.resize(n);
    std::memcpy(out.data(), packed.data(), n * sizeof(float));
    return out;
  }
  for (size_t k = 0; k < n; ++k) out.push_back(static_cast<float>(element(k).as_float(key)));
  return out;
}

std::vector<int64_t> GgufValue::as_ints(std::string_view key) const {
  GgufValue probe;
  probe.type = elem_type;
  if (type != GgufType::ARRAY || !probe.is_int()) {
    fail<FormatError>("metadata '{}' has type {}; expected an array of integers", shown(key), summary());
  }
  const size_t n = array_size();
  std::vector<int64_t> out;
  out.reserve(n);
  for (size_t k = 0; k < n; ++k) out.push_back(element(k).as_int(key));
  return out;
}

std::string GgufValue::summary() const {
  switch (type) {
    case GgufType::UINT8: case GgufType::UINT16: case GgufType::UINT32: case GgufType::UINT64:
      return std::to_string(u);
    case GgufType::INT8: case GgufType::INT16: case GgufType::INT32: case GgufType::INT64:
      return std::to_string(i);
    case GgufType::FLOAT32: case GgufType::FLOAT64:
      return fmt::format("{}", f);
    case GgufType::BOOL:
      return u ? "true" : "false";
    case GgufType::STRING: {
      std::string s = str.size() > 60 ? str.substr(0, 57) + "..." : str;
      for (char& c : s) {
        if (c == '\n' || c == '\r' || c == '\t') c = ' ';
      }
      return "\"" + s + "\"";
    }
    case GgufType::ARRAY:
      return fmt::format("[array of {} {}]", array_size(), gguf_type_name(elem_type));
  }
  return "?";
}

GgufValue GgufValue::of_u32(uint32_t v) { GgufValue r; r.type = GgufType::UINT32; r.u = v; return r; }
GgufValue GgufValue::of_i32(int32_t v) { GgufValue r; r.type = GgufType::INT32; r.i = v; return r; }
GgufValue GgufValue::of_u64(uint64_t v) { GgufValue r; r.type = GgufType::UINT64; r.u = v; return r; }
GgufValue GgufValue::of_f32(float v) { GgufValue r; r.type = GgufType::FLOAT32; r.f = v; return r; }
GgufValue GgufValue::of_bool(bool v) { GgufValue r; r.type = GgufType::BOOL; r.u = v ? 1 : 0; return r; }
GgufValue GgufValue::of_string(std::string v) {
  GgufValue r;
  r.type = GgufType::STRING;
  r.str = std::move(v);
  return r;
}
GgufValue GgufValue::of_strings(const std::vector<std::string>& v) {
  GgufValue r;
  r.type = GgufType::ARRAY;
  r.elem_type = GgufType::STRING;
  r.array.reserve(v.size());
  for (const auto& s : v) r.array.push_back(of_string(s));
  return r;
}
GgufValue GgufValue::of_f32s(const std::vector<float>& v) {
  GgufValue r;
  r.type = GgufType::ARRAY;
  r.elem_type = GgufType::FLOAT32;
  r.packed.resize(v.size() * sizeof(float));
  if (!v.empty()) std::memcpy(r.packed.data(), v.data(), r.packed.size());
  return r;
}
GgufValue GgufValue::of_i32s(const std::vector<int32_t>& v) {
  GgufValue r;
  r.type = GgufType::ARRAY;
  r.elem_type = GgufType::INT32;
  r.packed.resize(v.size() * sizeof(int32_t));
  if (!v.empty()) std::memcpy(r.packed.data(), v.data(), r.packed.size());
  return r;
}

uint64_t GgufTensorInfo::rows() const {
  uint64_t r = 1;
  for (size_t d = 1; d < ne.size(); ++d) r *= ne[d];
  return r;
}

// ---- GgufFile -----------------------------------------------------------------------------------

GgufFile GgufFile::open(const std::string& path) {
  GgufFile f;
  f.map_ = std::make_shared<MappedFile>(path);
  f.bytes_ = f.map_->bytes();
  f.name_ = path;
  f.parse_all();
  return f;
}

GgufFile GgufFile::parse(std::span<const uint8_t> bytes, std::string name) {
  GgufFile f;
  f.bytes_ = bytes;
  f.name_ = std::move(name);
  f.parse_all();
  return f;
}

void GgufFile::parse_all() {
  Reader r(bytes_, name_);
  if (bytes_.size() < 4) {
    fail<FormatError>("{}: not a GGUF file: {} bytes, too short for the 'GGUF' magic", name_,
                      bytes_.size());
  }
  uint32_t magic = r.read<uint32_t>("magic");
  if (magic != gguf_encode::kMagic) {
    std::string seen;
    for (int k = 0; k < 4; ++k) {
      char c = static_cast<char>(bytes_[k]);
      seen += (c >= 32 && c < 127) ? std::string(1, c) : fmt::format("\\x{:02x}", bytes_[k]);
    }
    fail<FormatError>("{}: not a GGUF file: starts with '{}', expected 'GGUF'", name_, seen);
  }
  version_ = r.read<uint32_t>("version");
  if (version_ != 2 && version_ != 3) {
    fail<FormatError>("{}: unsupported GGUF version {}; squeeze reads versions 2 and 3", name_,
                      version_);
  }
  uint64_t n_tensors = r.read<uint64_t>("tensor count");
  uint64_t n_kv = r.read<uint64_t>("metadata count");
  // A metadata entry takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at least
  // 8 + 4 + 8 + 4 + 8. Bound the counts by the file before reserving anything.
  if (n_kv > r.remaining() / 13) {
    fail<FormatError>("{}: header claims {} metadata entries, more than a file of {} bytes can hold",
                      name_, n_kv, bytes_.size());
  }
  if (n_tensors > r.remaining() / 32) {
    fail<FormatError>("{}: header claims {} tensors, more than a file of {} bytes can hold", name_,
                      n_tensors, bytes_.size());
  }

  metadata_.reserve(static_cast<size_t>(n_kv));
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = r.read_string(fmt::format("key of metadata entry {}", k));
    uint32_t t = r.read<uint32_t>(fmt::format("type of metadata '{}'", key));
    if (!valid_type(t)) {
      fail<FormatError>("{}: metadata '{}' has unknown value type {}; expected 0..12", name_, shown(key), t);
    }
    GgufValue v = read_value(r, static_cast<GgufType>(t), key, 0);
    if (metadata_index_.count(key) != 0) {
      fail<FormatError>("{}: duplicate metadata key '{}'", name_, shown(key));
    }
    metadata_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(std::move(key), std::move(v));
  }

  if (const GgufValue* a = find("general.alignment")) {
    if (!a->is_int()) {
      fail<FormatError>("{}: general.alignment has type {}; expected uint32", name_,
                        gguf_type_name(a->type));
    }
    int64_t al = a->as_int("general.alignment");
    if (al <= 0 || al > (1 << 30) || (al & (al - 1)) != 0) {
      fail<FormatError>("{}: general.alignment is {}; expected a power of two", name_, al);
    }
    alignment_ = static_cast<uint64_t>(al);
  }

  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo ti;
    ti.name = r.read_string(fmt::format("name of tensor {}", k));
    uint32_t n_dims = r.read<uint32_t>(fmt::format("dimension count of tensor '{}'", ti.name));
    if (n_dims == 0 || n_dims > kMaxDims) {
      fail<FormatError>("{}: tensor '{}' has {} dimensions; expected 1 to {}", name_, shown(ti.name), n_dims,
                        kMaxDims);
    }
    uint64_t n_el = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = r.read<uint64_t>(fmt::format("shape of tensor '{}'", ti.name));
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          !checked_mul(n_el, ne, &n_el)) {
        fail<FormatError>("{}: tensor '{}' has a shape whose element count overflows (dimension {} = {})",
                          name_, shown(ti.name), d, ne);
      }
      ti.ne.push_back(ne);
    }
    ti.n_elements = n_el;
    ti.type_id = r.read<uint32_t>(fmt::format("type of tensor '{}'", ti.name));
    ti.offset = r.read<uint64_t>(fmt::format("offset of tensor '{}'", ti.name));
    if (auto info = type_info(ti.type_id); info && !type_internal(ti.type_id)) {
      if (ti.ne[0] % info->block_elems != 0) {
        fail<FormatError>("{}: tensor '{}' of type {} has rows of {} elements; expected a multiple of "
                          "the block size {}",
                          name_, shown(ti.name), info->name, ti.ne[0], info->block_elems);
      }
      if (!checked_mul(n_el / info->block_elems, info->block_bytes, &ti.n_bytes)) {
        fail<FormatError>("{}: tensor '{}' size overflows", name_, shown(ti.name));
      }
    }
    if (ti.offset % alignment_ != 0) {
      fail<FormatError>("{}: tensor '{}' has data offset {}, not a multiple of the alignment {}", name_,
                        shown(ti.name), ti.offset, alignment_);
    }
    if (tensor_index_.count(ti.name) != 0) {
      fail<FormatError>("{}: duplicate tensor name '{}'", name_, shown(ti.name));
    }
    tensor_index_.emplace(ti.name, tensors_.size());
    tensors_.push_back(std::move(ti));
  }

  // The data section starts at the next multiple of the alignment after the tensor infos.
  uint64_t pos = r.pos();
  uint64_t data = (pos + alignment_ - 1) / alignment_ * alignment_;
  if (tensors_.empty()) {
    data_offset_ = std::min<uint64_t>(data, bytes_.size());
    return;
  }
  if (data > bytes_.size()) {
    fail<FormatError>("{}: truncated file: the tensor data section would start at offset {}, past "
                      "the end of the file ({} bytes)",
                      name_, data, bytes_.size());
  }
  data_offset_ = data;
  const uint64_t data_size = bytes_.size() - data;
  for (auto& ti : tensors_) {
    if (!ti.type_known()) continue;  // refused by whoever needs its data, naming the type
    uint64_t end = 0;
    if (!checked_add(ti.offset, ti.n_bytes, &end) || end > data_size) {
      fail<FormatError>("{}: tensor '{}' ({} bytes at data offset {}) runs past the end of the file: "
                        "the data section holds {} bytes",
                        name_, shown(ti.name), ti.n_bytes, ti.offset, data_size);
    }
    ti.data = bytes_.data() + data + ti.offset;
  }
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = metadata_index_.find(std::string(key));
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

std::optional<int64_t> GgufFile::get_int(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  return v->as_int(key);
}
std::optional<double> GgufFile::get_float(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  return v->as_float(key);
}
std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  return v->as_string(key);
}
std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  return v->as_bool(key);
}
int64_t GgufFile::get_int(std::string_view key, int64_t fallback) const {
  return get_int(key).value_or(fallback);
}
double GgufFile::get_float(std::string_view key, double fallback) const {
  return get_float(key).value_or(fallback);
}
std::string GgufFile::get_string(std::string_view key, std::string fallback) const {
  auto v = get_string(key);
  return v ? *v : fallback;
}
bool GgufFile::get_bool(std::string_view key, bool fallback) const {
  return get_bool(key).value_or(fallback);
}
int64_t GgufFile::require_int(std::string_view key) const {
  auto v = get_int(key);
  if (!v) fail<FormatError>("{}: required metadata '{}' is missing", name_, shown(key));
  return *v;
}
std::string GgufFile::require_string(std::string_view key) const {
  auto v = get_string(key);
  if (!v) fail<FormatError>("{}: required metadata '{}' is missing", name_, shown(key));
  return *v;
}

const GgufTensorInfo* GgufFile::tensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

// ---- GgufWriter ---------------------------------------------------------------------------------

namespace gguf_encode {

void put_value(std::vector<uint8_t>& out, const GgufValue& v) {
  switch (v.type) {
    case GgufType::UINT8: put<uint8_t>(out, static_cast<uint8_t>(v.u)); break;
    case GgufType::INT8: put<int8_t>(out, static_cast<int8_t>(v.i)); break;
    case GgufType::UINT16: put<uint16_t>(out, static_cast<uint16_t>(v.u)); break;
    case GgufType::INT16: put<int16_t>(out, static_cast<int16_t>(v.i)); break;
    case GgufType::UINT32: put<uint32_t>(out, static_cast<uint32_t>(v.u)); break;
    case GgufType::INT32: put<int32_t>(out, static_cast<int32_t>(v.i)); break;
    case GgufType::UINT64: put<uint64_t>(out, v.u); break;
    case GgufType::INT64: put<int64_t>(out, v.i); break;
    case GgufType::FLOAT32: put<float>(out, static_cast<float>(v.f)); break;
    case GgufType::FLOAT64: put<double>(out, v.f); break;
    case GgufType::BOOL: put<uint8_t>(out, v.u ? 1 : 0); break;
    case GgufType::STRING: put_string(out, v.str); break;
    case GgufType::ARRAY:
      put<uint32_t>(out, static_cast<uint32_t>(v.elem_type));
      put<uint64_t>(out, v.array_size());
      if (v.array.empty()) {
        put_bytes(out, v.packed.data(), v.packed.size());
      } else {
        for (const auto& e : v.array) put_value(out, e);
      }
      break;
  }
}

}  // namespace gguf_encode

using gguf_encode::put;
using gguf_encode::put_bytes;
using gguf_encode::put_string;
using gguf_encode::put_value;

void GgufWriter::set(std::string key, GgufValue value) {
  for (auto& kv : metadata_) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  metadata_.emplace_back(std::move(key), std::move(value));
}

void GgufWriter::add_tensor(std::string name, GgmlType type, std::vector<uint64_t> ne,
                            std::vector<uint8_t> bytes) {
  auto info = type_info(type);
  if (!info || type_internal(type)) {
    fail<InvalidArgument>("tensor '{}': type id {} cannot be stored in a file", name, static_cast<uint32_t>(type));
  }
  if (ne.empty() || ne.size() > kMaxDims) {
    fail<InvalidArgument>("tensor '{}' has {} dimensions; expected 1 to {}", name, ne.size(), kMaxDims);
  }
  uint64_t n = 1;
  for (uint64_t d : ne) {
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || !checked_mul(n, d, &n)) {
      fail<InvalidArgument>("tensor '{}': the element count of its shape overflows", name);
    }
  }
  if (ne[0] % info->block_elems != 0) {
    fail<InvalidArgument>("tensor '{}': rows of {} elements are not a multiple of the {} block size {}",
                          name, ne[0], info->name, info->block_elems);
  }
  uint64_t expect = n / info->block_elems * info->block_bytes;
  if (bytes.size() != expect) {
    fail<InvalidArgument>("tensor '{}': {} bytes given; shape and type {} need {}", name, bytes.size(),
                          info->name, expect);
  }
  for (const auto& t : tensors_) {
    if (t.name == name) fail<InvalidArgument>("duplicate tensor name '{}'", name);
  }
  tensors_.push_back({std::move(name), type, std::move(ne), std::move(bytes)});
}

void GgufWriter::add_tensor_f32(std::string name, std::vector<uint64_t> ne,
                                std::span<const float> values) {
  std::vector<uint8_t> bytes(values.size() * sizeof(float));
  std::memcpy(bytes.data(), values.data(), bytes.size());
  add_tensor(std::move(name), GgmlType::F32, std::move(ne), std::move(bytes));
}

std::vector<uint8_t> GgufWriter::to_bytes() const {
  uint64_t alignment = 32;
  for (const auto& kv : metadata_) {
    if (kv.first != "general.alignment") continue;
    const int64_t a = kv.second.is_int() ? kv.second.as_int(kv.first) : 0;
    if (a <= 0 || a > (1 << 30) || (a & (a - 1)) != 0 || kv.second.type != GgufType::UINT32) {
      fail<InvalidArgument>("general.alignment is {}; expected a uint32 power of two", kv.second.summary());
    }
    alignment = static_cast<uint64_t>(a);
  }
  std::vector<uint8_t> out;
  put<uint32_t>(out, gguf_encode::kMagic);
  put<uint32_t>(out, 3);
  put<uint64_t>(out, tensors_.size());
  put<uint64_t>(out, metadata_.size());
  for (const auto& [key, value] : metadata_) {
    put_string(out, key);
    put<uint32_t>(out, static_cast<uint32_t>(value.type));
    put_value(out, value);
  }
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const auto& t : tensors_) {
    put_string(out, t.name);
    put<uint32_t>(out, static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) put<uint64_t>(out, d);
    put<uint32_t>(out, static_cast<uint32_t>(t.type));
    put<uint64_t>(out, offset);
    offsets.push_back(offset);
    offset += (t.bytes.size() + alignment - 1) / alignment * alignment;
  }
  out.resize((out.size() + alignment - 1) / alignment * alignment, 0);
  const uint64_t data = out.size();
  for (size_t k = 0; k < tensors_.size(); ++k) {
    out.resize(data + offsets[k], 0);
    put_bytes(out, tensors_[k].bytes.data(), tensors_[k].bytes.size());
  }
  return out;
}

void GgufWriter::write(const std::string& path) const {
  std::vector<uint8_t> bytes = to_bytes();
  write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace sq
