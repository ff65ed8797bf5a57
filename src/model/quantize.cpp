#include "model/quantize.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "base/error.h"
#include "base/thread_pool.h"
#include "kernels/quant.h"
#include "model/gguf.h"
#include "model/gguf_stream.h"

namespace sq {

namespace {

// Elements converted per piece: bounds the memory a tensor of any size takes while it is written.
constexpr int64_t kChunkElems = int64_t{8} << 20;

struct NamedTarget {
  std::string_view name;
  GgmlType base;
  FileType file_type;
  bool k_mix;
};

constexpr std::array kTargets = {
    NamedTarget{"F32", GgmlType::F32, FileType::ALL_F32, false},
    NamedTarget{"F16", GgmlType::F16, FileType::MOSTLY_F16, false},
    NamedTarget{"BF16", GgmlType::BF16, FileType::MOSTLY_BF16, false},
    NamedTarget{"Q8_0", GgmlType::Q8_0, FileType::MOSTLY_Q8_0, false},
    NamedTarget{"Q4_0", GgmlType::Q4_0, FileType::MOSTLY_Q4_0, false},
    NamedTarget{"Q4_1", GgmlType::Q4_1, FileType::MOSTLY_Q4_1, false},
    NamedTarget{"Q5_0", GgmlType::Q5_0, FileType::MOSTLY_Q5_0, false},
    NamedTarget{"Q5_1", GgmlType::Q5_1, FileType::MOSTLY_Q5_1, false},
    NamedTarget{"Q4_K", GgmlType::Q4_K, FileType::MOSTLY_Q4_K_M, false},
    NamedTarget{"Q5_K", GgmlType::Q5_K, FileType::MOSTLY_Q5_K_M, false},
    NamedTarget{"Q6_K", GgmlType::Q6_K, FileType::MOSTLY_Q6_K, false},
    NamedTarget{"Q4_K_M", GgmlType::Q4_K, FileType::MOSTLY_Q4_K_M, true},
    NamedTarget{"Q5_K_M", GgmlType::Q5_K, FileType::MOSTLY_Q5_K_M, true},
};

QuantTarget to_target(const NamedTarget& t) {
  return QuantTarget{std::string(t.name), t.base, t.file_type, t.k_mix};
}

bool contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }
bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

bool is_block_type(GgmlType t) {
  auto info = type_info(t);
  return info && info->block_elems > 1;
}

// The block number in "blk.N.rest", or -1 (as llama.cpp's sscanf("blk.%d.") leaves it).
int block_index(std::string_view name) {
  if (name.substr(0, 4) != "blk.") return -1;
  size_t i = 4;
  bool negative = false;
  if (i < name.size() && (name[i] == '-' || name[i] == '+')) negative = name[i++] == '-';
  if (i >= name.size() || !std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  int64_t v = 0;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) {
    v = std::min<int64_t>(v * 10 + (name[i] - '0'), int64_t{1} << 31);
    ++i;
  }
  return static_cast<int>(negative ? -v : v);
}

bool use_more_bits(int i_layer, int n_layers) {
  return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

uint64_t block_elems(GgmlType t) { return type_info(t)->block_elems; }

// The per-tensor rules of quantize.h for a block-type target, with llama.cpp's running counters.
class TypeChooser {
 public:
  TypeChooser(const QuantModelInfo& model, const QuantTarget& target, int n_attention_wv, bool has_output)
      : model_(model), target_(target), n_attention_wv_(n_attention_wv), has_output_(has_output) {
    is_70b_ = model.n_layer == 80 && (model.arch == "qwen2" || model.n_head != model.n_head_kv);
  }

  GgmlType choose(const QuantTensor& t) {
    const std::string& name = t.name;
    const bool q4_k_m = target_.k_mix && target_.base == GgmlType::Q4_K;
    const bool q5_k_m = target_.k_mix && target_.base == GgmlType::Q5_K;
    const bool falcon = model_.arch == "falcon";
    GgmlType type = target_.base;
    if (name == "output.weight" || (!has_output_ && name == "token_embd.weight")) {
      if (falcon || t.ne[0] % block_elems(type) != 0) {
        type = GgmlType::Q8_0;
      } else if (type != GgmlType::Q8_0) {
        type = GgmlType::Q6_K;
      }
    } else if (name == "token_embd.weight" || name == "per_layer_token_embd.weight") {
      // the base type
    } else if (contains(name, "attn_v.weight")) {
      if (target_.k_mix && use_more_bits(i_attention_wv_, n_attention_wv_)) type = GgmlType::Q6_K;
      if (is_70b_ && (type == GgmlType::Q3_K || type == GgmlType::Q4_K)) type = GgmlType::Q5_K;
      if (model_.n_expert == 8) type = GgmlType::Q8_0;
      ++i_attention_wv_;
    } else if (contains(name, "attn_k.weight")) {
      if (model_.n_expert == 8) type = GgmlType::Q8_0;
    } else if (contains(name, "attn_q.weight")) {
      // the base type
    } else if (contains(name, "ffn_down")) {
      const int i_layer = layer_of(name, i_ffn_down_);
      const int n_layer = model_.n_layer;
      if (q4_k_m && falcon) {
        type = i_layer < n_layer / 16        ? GgmlType::Q6_K
               : use_more_bits(i_layer, n_layer) ? GgmlType::Q5_K
                                                 : GgmlType::Q4_K;
      } else if (target_.k_mix && use_more_bits(i_layer, n_layer)) {
        type = GgmlType::Q6_K;
      }
      ++i_ffn_down_;
    } else if (contains(name, "attn_output.weight")) {
      if (!falcon && model_.n_expert == 8 && q4_k_m) type = GgmlType::Q5_K;
    } else if (contains(name, "attn_qkv.weight")) {
      if (q4_k_m) type = GgmlType::Q5_K;
      if (q5_k_m) type = GgmlType::Q6_K;
    }
    if (t.ne[0] % block_elems(type) != 0) {
      switch (type) {
        case GgmlType::Q4_K: type = GgmlType::Q5_0; break;
        case GgmlType::Q5_K: type = GgmlType::Q5_1; break;
        case GgmlType::Q6_K: type = GgmlType::Q8_0; break;
        default:
          fail<InvalidArgument>("tensor '{}': rows of {} elements are not a multiple of the {}-element "
                                "blocks of {}, and no fallback type fits them",
                                name, t.ne[0], block_elems(type), type_name(type));
      }
      if (t.ne[0] % block_elems(type) != 0) type = GgmlType::F16;
    }
    return type;
  }

 private:
  // Mixture-of-experts models take the layer from the name (experts need not be consecutive);
  // others count the tensors seen.
  int layer_of(const std::string& name, int counter) const {
    if (std::max(1, model_.n_expert) <= 1) return counter;
    const int layer = block_index(name);
    if (layer < 0 || layer >= model_.n_layer) {
      fail<FormatError>("tensor '{}': cannot tell its layer (expected blk.N. with N below {})", name,
                        model_.n_layer);
    }
    return layer;
  }

  QuantModelInfo model_;
  QuantTarget target_;
  int n_attention_wv_;
  bool has_output_;
  bool is_70b_ = false;
  int i_attention_wv_ = 0;
  int i_ffn_down_ = 0;
};

// The input rows of a tensor, as floats.
void rows_to_f32(const GgufTensorInfo& t, int64_t row0, int64_t rows, std::vector<float>& out) {
  const auto n = static_cast<int64_t>(t.ne[0]);
  const size_t rb = kernels::row_bytes(t.type(), n);
  out.resize(static_cast<size_t>(rows * n));
  for (int64_t r = 0; r < rows; ++r) {
    kernels::dequantize_row(t.type(), t.data + static_cast<size_t>(row0 + r) * rb,
                            out.data() + static_cast<size_t>(r * n), n);
  }
}

QuantModelInfo model_info(const GgufFile& file) {
  QuantModelInfo m;
  m.arch = file.get_string("general.architecture", "");
  const std::string p = m.arch + ".";
  auto get = [&](const std::string& key) -> int32_t {
    const GgufValue* v = file.find(key);
    if (v == nullptr || !v->is_int()) return 0;
    return static_cast<int32_t>(std::clamp<int64_t>(v->as_int(key), 0, 1 << 30));
  };
  m.n_layer = get(p + "block_count");
  m.n_head = get(p + "attention.head_count");
  m.n_head_kv = file.has(p + "attention.head_count_kv") ? get(p + "attention.head_count_kv") : m.n_head;
  m.n_expert = get(p + "expert_count");
  if (m.n_layer == 0) {
    for (const auto& t : file.tensors()) m.n_layer = std::max(m.n_layer, block_index(t.name) + 1);
  }
  return m;
}

}  // namespace

std::optional<QuantTarget> quant_target_from_name(std::string_view name) {
  std::string upper(name);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const auto& t : kTargets) {
    if (t.name == upper) return to_target(t);
  }
  return std::nullopt;
}

std::string quant_target_names() {
  std::string out;
  for (const auto& t : kTargets) {
    if (!out.empty()) out += ", ";
    out += t.name;
  }
  return out;
}

std::optional<QuantTarget> quant_target_for_type(GgmlType type) {
  for (const auto& t : kTargets) {
    if (t.base == type && !t.k_mix) return to_target(t);
  }
  return std::nullopt;
}

bool quantizable_tensor(std::string_view name, size_t n_dims) {
  if (!ends_with(name, "weight") || n_dims < 2) return false;
  // Small 2-D tensors of other architectures that llama.cpp leaves alone as well.
  static constexpr std::string_view kKept[] = {
      "_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj",
      "ssm_conv1d.weight", "shortconv.conv.weight", "time_mix_first.weight", "time_mix_w0.weight",
      "time_mix_w1.weight", "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight",
      "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight",
      "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
      "time_mix_lerp_fused.weight", "attn_rel_b.weight"};
  for (std::string_view k : kKept) {
    if (contains(name, k)) return false;
  }
  return name != "position_embd.weight" && name != "token_types.weight";
}

bool llama_tensor_order(const std::string& a, const std::string& b) {
  const int la = block_index(a), lb = block_index(b);
  if (la != lb) return la < lb;
  return a < b;
}

std::vector<std::optional<GgmlType>> plan_tensor_types(const std::vector<QuantTensor>& tensors,
                                                       const QuantModelInfo& model,
                                                       const QuantTarget& target) {
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return llama_tensor_order(tensors[a].name, tensors[b].name);
  });
  int n_attention_wv = 0;
  bool has_output = false;
  for (const auto& t : tensors) {
    if (contains(t.name, "attn_v.weight") || contains(t.name, "attn_qkv.weight") ||
        contains(t.name, "attn_kv_b.weight")) {
      ++n_attention_wv;
    } else if (t.name == "output.weight") {
      has_output = true;
    }
  }
  TypeChooser chooser(model, target, n_attention_wv, has_output);
  std::vector<std::optional<GgmlType>> out(tensors.size());
  for (size_t k : order) {
    const QuantTensor& t = tensors[k];
    if (!quantizable_tensor(t.name, t.ne.size())) continue;
    out[k] = is_block_type(target.base) ? chooser.choose(t) : target.base;
  }
  return out;
}

void quantize_rows(GgmlType type, const float* src, uint8_t* dst, int64_t n_per_row, int64_t rows,
                   ThreadPool* pool) {
  const size_t rb = kernels::row_bytes(type, n_per_row);
  auto work = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      kernels::quantize_row(type, src + r * n_per_row, dst + static_cast<size_t>(r) * rb, n_per_row);
    }
  };
  if (pool == nullptr || pool->size() <= 1 || rows < 2) {
    work(0, rows);
  } else {
    pool->parallel_for(rows, work);
  }
}

QuantizeSummary quantize_model_file(const std::string& in_path, const std::string& out_path,
                                    const QuantTarget& target, const QuantizeOptions& options) {
  if (std::filesystem::is_directory(in_path)) {
    fail<IoError>("'{}' is a directory; expected a GGUF model file", in_path);
  }
  if (!std::filesystem::exists(in_path)) fail<IoError>("model file '{}' does not exist", in_path);
  GgufFile in = GgufFile::open(in_path);
  const QuantModelInfo model = model_info(in);

  // Plan everything, and refuse what cannot be done, before anything is written.
  std::vector<QuantTensor> shapes;
  shapes.reserve(in.tensors().size());
  for (const auto& t : in.tensors()) shapes.push_back({t.name, t.ne});
  const auto planned = plan_tensor_types(shapes, model, target);

  struct Job {
    const GgufTensorInfo* in;
    GgmlType out_type;
    bool convert;
  };
  std::vector<Job> jobs;
  for (size_t k = 0; k < in.tensors().size(); ++k) {
    const GgufTensorInfo& t = in.tensors()[k];
    if (!t.type_known()) {
      fail<UnsupportedError>("{}: tensor '{}' has type id {}, which squeeze does not know", in_path,
                             t.name, t.type_id);
    }
    const bool convert = planned[k].has_value() && *planned[k] != t.type();
    if (convert) {
      if (is_block_type(t.type()) && !options.allow_requantize) {
        fail<UnsupportedError>("{}: tensor '{}' is already quantized ({}); quantize reads F32, F16 or BF16 "
                               "models (pass --allow-requantize to convert through dequantized values, "
                               "at a loss of quality)",
                               in_path, t.name, type_name(t.type()));
      }
      if (!type_supported(t.type())) {
        fail<UnsupportedError>("{}: tensor '{}' has type {}, which squeeze cannot convert", in_path, t.name,
                               type_name(t.type()));
      }
      if (!type_supported(*planned[k])) {
        fail<UnsupportedError>("tensor '{}': squeeze cannot write type {}", t.name, type_name(*planned[k]));
      }
    }
    jobs.push_back({&t, convert ? *planned[k] : t.type(), convert});
  }
  std::stable_sort(jobs.begin(), jobs.end(),
                   [](const Job& a, const Job& b) { return llama_tensor_order(a.in->name, b.in->name); });

  GgufMetadata metadata;
  for (const auto& [key, value] : in.metadata()) {
    if (key == "general.quantization_version" || key == "general.file_type" || key == "split.no" ||
        key == "split.count" || key == "split.tensors.count") {
      continue;
    }
    metadata.emplace_back(key, value);
  }
  metadata.emplace_back("general.quantization_version", GgufValue::of_u32(2));
  metadata.emplace_back("general.file_type", GgufValue::of_u32(static_cast<uint32_t>(target.file_type)));

  std::vector<GgufTensorSpec> specs;
  specs.reserve(jobs.size());
  for (const auto& j : jobs) specs.push_back({j.in->name, j.out_type, j.in->ne});
  GgufStreamWriter out(out_path, metadata, std::move(specs));

  QuantizeSummary summary;
  summary.n_tensors = jobs.size();
  const uint64_t total = out.file_size();
  uint64_t done = out.file_size() - [&] {
    uint64_t data = 0;
    for (const auto& l : out.tensors()) data += l.n_bytes;
    return data;
  }();
  std::vector<float> f32;
  std::vector<uint8_t> bytes;
  for (const Job& j : jobs) {
    const GgufTensorInfo& t = *j.in;
    summary.in_bytes += t.n_bytes;
    if (options.progress) options.progress(done, total, t.name);
    if (!j.convert) {
      out.write(t.data, t.n_bytes);
      done += t.n_bytes;
      continue;
    }
    ++summary.n_converted;
    const auto n = static_cast<int64_t>(t.ne[0]);
    const auto rows = static_cast<int64_t>(t.rows());
    const int64_t chunk_rows = std::max<int64_t>(1, kChunkElems / std::max<int64_t>(n, 1));
    const size_t out_rb = kernels::row_bytes(j.out_type, n);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk_rows) {
      const int64_t cnt = std::min(chunk_rows, rows - r0);
      const float* src;
      if (t.type() == GgmlType::F32) {
        src = reinterpret_cast<const float*>(t.data) + r0 * n;
      } else {
        rows_to_f32(t, r0, cnt, f32);
        src = f32.data();
      }
      bytes.resize(out_rb * static_cast<size_t>(cnt));
      quantize_rows(j.out_type, src, bytes.data(), n, cnt, options.pool);
      out.write(bytes.data(), bytes.size());
      done += bytes.size();
      if (options.progress) options.progress(done, total, t.name);
    }
  }
  out.commit();
  if (options.progress) options.progress(total, total, "");
  summary.out_bytes = total;
  return summary;
}

}  // namespace sq
