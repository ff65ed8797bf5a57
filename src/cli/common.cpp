#include <cstdio>
#include <unistd.h>

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

bool stdout_is_tty() { return ::isatty(STDOUT_FILENO) == 1; }

}  // namespace sq::cli
