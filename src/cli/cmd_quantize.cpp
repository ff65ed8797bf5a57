// squeeze quantize: converts an F32/F16/BF16 GGUF model to a block type or to one of llama.cpp's
// mixes, choosing each tensor's type as llama-quantize does (see model/quantize.h), streamed from
// the mapped input to the output file.
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include <fmt/core.h>

#include "base/error.h"
#include "base/thread_pool.h"
#include "cli/commands.h"
#include "model/quantize.h"

namespace sq::cli {

namespace {

struct QuantizeFlags {
  std::string in;
  std::string out;
  std::string type;
  bool allow_requantize = false;
  int32_t threads = 0;
};


int quantize(const QuantizeFlags& f) {
  std::optional<QuantTarget> target = quant_target_from_name(f.type);
  if (!target) {
    fail<InvalidArgument>("unknown type '{}'; expected one of: {}", f.type, quant_target_names());
  }
  ThreadPool pool(f.threads > 0 ? f.threads : default_thread_count());
  QuantizeOptions options;
  options.allow_requantize = f.allow_requantize;
  options.pool = &pool;
  options.progress = progress_printer("quantize");
  const auto start = std::chrono::steady_clock::now();
  QuantizeSummary s;
  try {
    s = quantize_model_file(f.in, f.out, *target, options);
  } catch (...) {
    // The error line must not land after a half-drawn progress line.
    if (::isatty(STDERR_FILENO) == 1) fmt::print(stderr, "\r\033[K");
    throw;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print(stderr, "squeeze: wrote {} ({}: {} of {} tensors converted, {:.1f} MiB of tensors -> {:.1f} MiB) "
             "in {:.1f} s\n", f.out, target->name, s.n_converted, s.n_tensors,
             static_cast<double>(s.in_bytes) / (1 << 20), static_cast<double>(s.out_bytes) / (1 << 20), secs);
  return 0;
}

}  // namespace

Runner add_quantize(CLI::App& app) {
  auto f = std::make_shared<QuantizeFlags>();
  CLI::App* cmd = app.add_subcommand("quantize", "Convert an F32/F16/BF16 GGUF model to a quantized type");
  cmd->add_option("input", f->in, "Input GGUF model (F32, F16 or BF16 weights)")->required();
  cmd->add_option("output", f->out, "Output GGUF file")->required();
  cmd->add_option("type", f->type, "Target: " + quant_target_names())->required();
  cmd->add_flag("--allow-requantize", f->allow_requantize,
                "Accept already-quantized input tensors (converted through their dequantized values)");
  cmd->add_option("-t,--threads", f->threads, "Threads (default: physical cores)");
  return [f] { return quantize(*f); };
}

}  // namespace sq::cli
