// load_model: GGUF files through the architecture registry, llama2.c checkpoints by hand. Both end
// as views into one mapping of the file.
#include <cstring>
#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "base/mmap.h"
#include "model/arch.h"
#include "model/blocks.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/repack.h"

namespace sq {

namespace {

std::unique_ptr<Model> load_gguf(const std::string& path) {
  auto file = std::make_shared<GgufFile>(GgufFile::open(path));
  std::string arch_name = file->get_string("general.architecture", "");
  if (arch_name.empty()) {
    fail<FormatError>("{}: metadata 'general.architecture' is missing; cannot tell how to run the "
                      "weights", path);
  }
  const Architecture* arch = find_architecture(arch_name);
  if (arch == nullptr) {
    fail<UnsupportedError>("{}: architecture '{}' is not supported (supported: {})", path, arch_name,
                           architecture_names());
  }
  auto model = std::make_unique<Model>();
  model->arch = arch;
  model->path = path;
  model->format = "GGUF v" + std::to_string(file->version());
  model->file_size = file->file_size();
  model->name = file->get_string("general.name", std::filesystem::path(path).stem().string());
  arch->load(*file, *model);
  for (const auto& ti : file->tensors()) model->tensors.push_back(tensor_view(ti));
  model->storage = file;
  model->gguf = file;
  return model;
}

// llama2.c's run.c checkpoint: seven int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
// vocab_size, seq_len; a negative vocab_size means the classifier is stored separately), then f32
// weights in a fixed order.
std::unique_ptr<Model> load_llama2c(const std::string& path) {
  auto map = std::make_shared<MappedFile>(path);
  constexpr size_t kHeader = 7 * sizeof(int32_t);
  if (map->size() < kHeader) {
    fail<FormatError>("{}: not a model: {} bytes is neither a GGUF file nor a llama2.c checkpoint "
                      "(which starts with a 28-byte header)",
                      path, map->size());
  }
  int32_t h[7];
  std::memcpy(h, map->data(), kHeader);
  const int32_t dim = h[0], hidden = h[1], n_layers = h[2], n_heads = h[3], n_kv = h[4];
  const bool shared_classifier = h[5] > 0;
  const int64_t vocab = h[5] < 0 ? -static_cast<int64_t>(h[5]) : h[5];
  const int32_t seq_len = h[6];
  auto bad = [&](const char* field, int64_t v) {
    fail<FormatError>("{}: not a GGUF file, and not a valid llama2.c checkpoint: header field {} is "
                      "{} (header: dim={} hidden_dim={} n_layers={} n_heads={} n_kv_heads={} "
                      "vocab_size={} seq_len={})",
                      path, field, v, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
  };
  if (dim <= 0 || dim > (1 << 16)) bad("dim", dim);
  if (hidden <= 0 || hidden > (1 << 18)) bad("hidden_dim", hidden);
  if (n_layers <= 0 || n_layers > 1024) bad("n_layers", n_layers);
  if (n_heads <= 0 || dim % n_heads != 0) bad("n_heads", n_heads);
  if (n_kv <= 0 || n_heads % n_kv != 0) bad("n_kv_heads", n_kv);
  if (vocab <= 0 || vocab > (1 << 22)) bad("vocab_size", h[5]);
  if (seq_len <= 0 || seq_len > (1 << 24)) bad("seq_len", seq_len);
  const int64_t head = dim / n_heads;
  if (head % 2 != 0) bad("head size", head);
  const int64_t kv_dim = head * n_kv;
  const int64_t D = dim, F = hidden, L = n_layers;

  auto model = std::make_unique<Model>();
  ModelConfig& c = model->config;
  c.arch = "llama";
  c.n_vocab = static_cast<int32_t>(vocab);
  c.n_embd = dim;
  c.n_layer = n_layers;
  c.n_head = n_heads;
  c.n_head_kv = n_kv;
  c.head_dim = static_cast<int32_t>(head);
  c.n_ff = hidden;
  c.n_ctx_train = seq_len;
  c.n_rot = static_cast<int32_t>(head);
  c.norm_eps = 1e-5f;
  c.rope_freq_base = 10000.0f;
  c.rope_style = RopeStyle::Adjacent;
  c.validate(path);

  // Walk the weights in file order, checking each against the file size before making a view.
  const uint8_t* base = map->data();
  uint64_t offset = kHeader;
  auto take = [&](const std::string& name, std::initializer_list<int64_t> shape) {
    TensorView v;
    v.name = name;
    v.type = GgmlType::F32;
    v.n_dims = 0;
    uint64_t count = 1;
    for (int64_t d : shape) {
      v.ne[static_cast<size_t>(v.n_dims++)] = d;
      count *= static_cast<uint64_t>(d);
    }
    const uint64_t bytes = count * sizeof(float);
    if (offset + bytes > map->size()) {
      fail<FormatError>("{}: llama2.c checkpoint is truncated: '{}' needs {} bytes at offset {}, the "
                        "file has {} bytes (header: dim={} hidden_dim={} n_layers={} vocab={})",
                        path, name, bytes, offset, map->size(), dim, hidden, n_layers, h[5]);
    }
    v.data = base + offset;
    offset += bytes;
    return v;
  };
  // Per-layer tensors are stored stacked over layers; views slice them.
  auto stacked = [&](const std::string& suffix, int64_t in, int64_t out) {
    TensorView all = take("all." + suffix, {in, out * L});
    std::vector<TensorView> per(static_cast<size_t>(L));
    for (int64_t l = 0; l < L; ++l) {
      TensorView& v = per[static_cast<size_t>(l)];
      v.name = "blk." + std::to_string(l) + "." + suffix;
      v.type = GgmlType::F32;
      v.n_dims = out == 1 ? 1 : 2;
      v.ne = {in, out, 1, 1};
      v.data = all.data + static_cast<size_t>(l * in * out) * sizeof(float);
    }
    return per;
  };
  model->tok_embd = take("token_embd.weight", {D, vocab});
  auto att_norm = stacked("attn_norm.weight", D, 1);
  auto wq = stacked("attn_q.weight", D, D);
  auto wk = stacked("attn_k.weight", D, kv_dim);
  auto wv = stacked("attn_v.weight", D, kv_dim);
  auto wo = stacked("attn_output.weight", D, D);
  auto ffn_norm = stacked("ffn_norm.weight", D, 1);
  auto w1 = stacked("ffn_gate.weight", D, F);
  auto w2 = stacked("ffn_down.weight", F, D);
  auto w3 = stacked("ffn_up.weight", D, F);
  model->output_norm = take("output_norm.weight", {D});
  take("freq_cis_real", {head / 2, seq_len});  // precomputed RoPE tables, unused: squeeze computes them
  take("freq_cis_imag", {head / 2, seq_len});
  if (shared_classifier) {
    model->output = model->tok_embd;
    model->output_tied = true;
  } else {
    model->output = take("output.weight", {D, vocab});
  }
  if (offset != map->size()) {
    fail<FormatError>("{}: llama2.c checkpoint has {} bytes; its header (dim={} hidden_dim={} "
                      "n_layers={} n_heads={} n_kv_heads={} vocab_size={} seq_len={}) needs {}",
                      path, map->size(), h[0], h[1], h[2], h[3], h[4], h[5], h[6], offset);
  }
  model->layers.resize(static_cast<size_t>(L));
  for (size_t l = 0; l < static_cast<size_t>(L); ++l) {
    LayerWeights& lw = model->layers[l];
    lw.attn_norm = att_norm[l];
    lw.wq = wq[l];
    lw.wk = wk[l];
    lw.wv = wv[l];
    lw.wo = wo[l];
    lw.ffn_norm = ffn_norm[l];
    lw.ffn_gate = w1[l];
    lw.ffn_down = w2[l];
    lw.ffn_up = w3[l];
    for (const TensorView* t : {&lw.attn_norm, &lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.ffn_norm,
                                &lw.ffn_gate, &lw.ffn_up, &lw.ffn_down}) {
      model->tensors.push_back(*t);
    }
  }
  model->tensors.insert(model->tensors.begin(), model->tok_embd);
  model->tensors.push_back(model->output_norm);
  if (!shared_classifier) model->tensors.push_back(model->output);
  model->arch = &llama_architecture();
  model->path = path;
  model->name = std::filesystem::path(path).stem().string();
  model->format = "llama2.c";
  model->file_size = map->size();
  model->storage = map;
  return model;
}

}  // namespace

bool is_gguf_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

std::unique_ptr<Model> load_model(const std::string& path) {
  if (std::filesystem::is_directory(path)) {
    fail<IoError>("'{}' is a directory; expected a model file (.gguf or llama2.c .bin)", path);
  }
  if (!std::filesystem::exists(path)) {
    fail<IoError>("model file '{}' does not exist", path);
  }
  auto model = is_gguf_file(path) ? load_gguf(path) : load_llama2c(path);
  if (repack_enabled()) repack_weights(*model);
  return model;
}

}  // namespace sq
