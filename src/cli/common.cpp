#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/core.h>

#include "base/error.h"
#include "cli/commands.h"

namespace sq::cli {

void add_model_flags(CLI::App& cmd, ModelFlags& flags) {
  cmd.add_option("-m,--model", flags.model, "Model file: GGUF, or a llama2.c checkpoint (.bin)")
      ->required();
  cmd.add_option("--tokenizer", flags.tokenizer,
                 "llama2.c tokenizer file (default: tokenizer.bin, then tok<vocab>.bin beside the "
                 "checkpoint)");
}

void add_kv_type_flag(CLI::App& cmd, std::string& type) {
  cmd.add_option("--kv-type", type, "KV cache type: f16, f32 or q8_0")->capture_default_str();
}

// Progress on stderr: a line rewritten in place on a terminal, a line per tenth of the file
// otherwise (only for files large enough to take a while).
ProgressFn progress_printer(const char* verb) {
  const bool tty = ::isatty(STDERR_FILENO) == 1;
  auto last = std::make_shared<std::chrono::steady_clock::time_point>();
  auto last_tenth = std::make_shared<int>(0);
  return [=](uint64_t done, uint64_t total, const std::string& tensor) {
    if (total == 0) return;
    const int pct = static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total));
    if (tty) {
      const auto now = std::chrono::steady_clock::now();
      if (done < total && now - *last < std::chrono::milliseconds(200)) return;
      *last = now;
      fmt::print(stderr, "\r\033[Ksqueeze: {} {:3d}% {}", verb, pct, tensor);
      if (done >= total) fmt::print(stderr, "\r\033[K");
      std::fflush(stderr);
    } else if (total >= (uint64_t{64} << 20) && pct / 10 > *last_tenth && done < total) {
      *last_tenth = pct / 10;
      fmt::print(stderr, "squeeze: {} {}% ({})\n", verb, *last_tenth * 10, tensor);
    }
  };
}

bool stdout_is_tty() { return ::isatty(STDOUT_FILENO) == 1; }

}  // namespace sq::cli
