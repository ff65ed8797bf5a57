// squeeze info: what a model file holds. Works on any GGUF file, including vocabulary-only ones and
// architectures squeeze cannot run (it then says why the weights would not load).
#include <map>

#include <fmt/core.h>

#include "base/error.h"
#include "cli/commands.h"
#include "engine/engine.h"
#include "engine/vocab_loader.h"
#include "kernels/isa.h"
#include "model/blocks.h"
#include "model/gguf.h"

namespace sq::cli {

namespace {

struct InfoFlags {
  ModelFlags model;
  bool metadata = false;
};

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} {}", b, units[u]) : fmt::format("{:.2f} {}", b, units[u]);
}

std::string human_count(double n) {
  if (n >= 1e9) return fmt::format("{:.2f} B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f} M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.2f} K", n / 1e3);
  return fmt::format("{:.0f}", n);
}

void print_types(const std::vector<TensorView>& tensors) {
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_type;  // name -> (elements, bytes)
  uint64_t total_bytes = 0;
  for (const auto& t : tensors) {
    auto& e = by_type[type_name(t.type)];
    e.first += static_cast<uint64_t>(t.n_elements());
    e.second += t.n_bytes();
    total_bytes += t.n_bytes();
  }
  fmt::print("tensor types:\n");
  for (const auto& [name, e] : by_type) {
    fmt::print("  {:<7} {:>12} weights  {:>11}  {:5.1f} % of tensor bytes\n", name, e.first,
               human_bytes(static_cast<double>(e.second)),
               total_bytes ? 100.0 * static_cast<double>(e.second) / static_cast<double>(total_bytes) : 0.0);
  }
}

void print_tokenizer(const Tokenizer* tok) {
  if (tok == nullptr) {
    fmt::print("tokenizer:      none (no_vocab)\n");
    return;
  }
  fmt::print("tokenizer:      {}{}, {} tokens, BOS {} EOS {}\n", tok->kind(),
             tok->pre().empty() ? "" : ", pre-tokenizer " + tok->pre(), tok->n_vocab(), tok->bos(),
             tok->eos());
  fmt::print("chat template:  {}\n", tok->chat_template().empty() ? "no" : "yes");
}

int info(const InfoFlags& f) {
  const std::string& path = f.model.model;
  if (!is_gguf_file(path)) {
    auto engine = Engine::load({path, f.model.tokenizer});
    const Model& m = engine->model();
    const ModelConfig& c = m.config;
    fmt::print("file:           {} ({}, {})\n", m.path, m.format, human_bytes(static_cast<double>(m.file_size)));
    fmt::print("architecture:   {}\n", c.arch);
    fmt::print("parameters:     {} ({})\n", human_count(static_cast<double>(m.n_params())), m.n_params());
    fmt::print("context length: {}\n", c.n_ctx_train);
    fmt::print("shape:          {} layers, embedding {}, {} heads ({} key/value), head size {}, "
               "feed-forward {}, vocabulary {}\n",
               c.n_layer, c.n_embd, c.n_head, c.n_head_kv, c.head_dim, c.n_ff, c.n_vocab);
    print_types(m.tensors);
    fmt::print("tokenizer file: {}\n", engine->tokenizer_source());
    print_tokenizer(engine->tokenizer());
    return 0;
  }
  GgufFile file = GgufFile::open(path);
  fmt::print("file:           {} (GGUF v{}, {}, {} tensors, {} metadata keys)\n", path, file.version(),
             human_bytes(static_cast<double>(file.file_size())), file.tensors().size(),
             file.metadata().size());
  fmt::print("name:           {}\n", file.get_string("general.name", "(none)"));
  const std::string arch = file.get_string("general.architecture", "(none)");
  fmt::print("architecture:   {}\n", arch);
  uint64_t n_params = 0;
  for (const auto& t : file.tensors()) n_params += t.n_elements;
  fmt::print("parameters:     {} ({})\n", human_count(static_cast<double>(n_params)), n_params);
  if (auto ctx = file.get_int(arch + ".context_length")) fmt::print("context length: {}\n", *ctx);
  // Weights: load them when there are any, to report the shape or why they cannot run.
  if (!file.tensors().empty()) {
    try {
      auto model = load_model(path);
      const ModelConfig& c = model->config;
      fmt::print("shape:          {} layers, embedding {}, {} heads ({} key/value), head size {}, "
                 "feed-forward {}, vocabulary {}{}\n",
                 c.n_layer, c.n_embd, c.n_head, c.n_head_kv, c.head_dim, c.n_ff, c.n_vocab,
                 c.n_expert ? fmt::format(", {} experts ({} used per token)", c.n_expert, c.n_expert_used)
                            : "");
      fmt::print("output:         {}\n", model->output_tied ? "tied to the token embedding" : "own matrix");
      if (model->repacked.tensors > 0) {
        fmt::print("repacked:       {} matrices, {} in anonymous memory, in the {} kernels' packed "
                   "layouts (mapped originals released; SQUEEZE_REPACK=0 keeps them)\n",
                   model->repacked.tensors, human_bytes(static_cast<double>(model->repacked.bytes)),
                   kernels::isa_name(kernels::active_isa()));
      } else {
        fmt::print("repacked:       none (weights read from the file mapping)\n");
      }
    } catch (const Error& e) {
      fmt::print("weights:        cannot be run: {}\n", e.what());
    }
    std::vector<TensorView> views;
    for (const auto& t : file.tensors()) views.push_back(tensor_view(t));
    print_types(views);
  }
  try {
    auto tok = load_tokenizer(file);
    print_tokenizer(tok.get());
  } catch (const Error& e) {
    fmt::print("tokenizer:      cannot be used: {}\n", e.what());
  }
  if (f.metadata) {
    fmt::print("metadata:\n");
    for (const auto& [key, value] : file.metadata()) {
      fmt::print("  {:<44} {}\n", key, value.summary());
    }
  }
  return 0;
}

}  // namespace

Runner add_info(CLI::App& app) {
  auto f = std::make_shared<InfoFlags>();
  CLI::App* cmd = app.add_subcommand("info", "Describe a model file: architecture, size, types, tokenizer");
  add_model_flags(*cmd, f->model);
  cmd->add_flag("--metadata", f->metadata, "Also list every metadata key (GGUF)");
  return [f] { return info(*f); };
}

}  // namespace sq::cli
