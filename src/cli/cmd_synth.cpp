// squeeze synth: a GGUF model with random weights and the exact shapes and hyper-parameters of a
// real one, for benchmarks without downloads. Streamed to disk, so memory stays small whatever the
// model's size.
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include <fmt/core.h>

#include "base/error.h"
#include "base/thread_pool.h"
#include "cli/commands.h"
#include "model/quantize.h"
#include "model/synth.h"

namespace sq::cli {

namespace {

struct SynthFlags {
  std::string preset;
  std::string type = "F32";
  std::string out;
  uint64_t seed = 1;
  int32_t n_layer = 0;
  int32_t n_vocab = 0;
  int32_t threads = 0;
};

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}


int synth(const SynthFlags& f) {
  std::optional<SynthSpec> spec = synth_preset(f.preset);
  if (!spec) {
    fail<InvalidArgument>("unknown preset '{}'; expected one of: {}", f.preset, join(synth_preset_names()));
  }
  std::optional<QuantTarget> target = quant_target_from_name(f.type);
  if (!target) {
    fail<InvalidArgument>("unknown type '{}'; expected one of: {}", f.type, quant_target_names());
  }
  if (f.n_layer < 0 || f.n_vocab < 0) fail<InvalidArgument>("--n-layer and --n-vocab must be positive");
  if (f.n_layer > 0) spec->n_layer = f.n_layer;
  if (f.n_vocab > 0) spec->n_vocab = f.n_vocab;
  spec->target = target;
  spec->seed = f.seed;
  ThreadPool pool(f.threads > 0 ? f.threads : default_thread_count());
  const auto start = std::chrono::steady_clock::now();
  uint64_t bytes = 0;
  try {
    bytes = synth_write(*spec, f.out, &pool, progress_printer("synth"));
  } catch (...) {
    // The error line must not land after a half-drawn progress line.
    if (::isatty(STDERR_FILENO) == 1) fmt::print(stderr, "\r\033[K");
    throw;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print(stderr, "squeeze: wrote {} ({} {}, {} layers, {:.1f} MiB) in {:.1f} s\n", f.out, f.preset,
             target->name, spec->n_layer, static_cast<double>(bytes) / (1 << 20), secs);
  return 0;
}

}  // namespace

Runner add_synth(CLI::App& app) {
  auto f = std::make_shared<SynthFlags>();
  CLI::App* cmd = app.add_subcommand("synth", "Write a GGUF model with random weights and a real model's shapes");
  cmd->add_option("--preset", f->preset, "Model shape: " + join(synth_preset_names()))->required();
  cmd->add_option("--type", f->type, "Weight type: " + quant_target_names())->capture_default_str();
  cmd->add_option("-o,--output", f->out, "Output GGUF file")->required();
  cmd->add_option("--seed", f->seed, "Seed of the random weights")->capture_default_str();
  cmd->add_option("--n-layer", f->n_layer, "Override the number of layers (for small test files)");
  cmd->add_option("--n-vocab", f->n_vocab, "Override the vocabulary size (for small test files)");
  cmd->add_option("-t,--threads", f->threads, "Threads quantizing (default: physical cores)");
  return [f] { return synth(*f); };
}

}  // namespace sq::cli
