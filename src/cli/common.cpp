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

bool stdout_is_tty() { return ::isatty(STDOUT_FILENO) == 1; }

}  // namespace sq::cli
