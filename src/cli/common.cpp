#include <cstdio>
#include <filesystem>
#include <fstream>
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

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail<IoError>("cannot create '{}' (is the directory writable?)", tmp);
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    out.flush();
    if (!out) {
      out.close();
      std::filesystem::remove(tmp);
      fail<IoError>("cannot write {} bytes to '{}' (disk full?)", size, tmp);
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp);
    fail<IoError>("cannot rename '{}' to '{}': {}", tmp, path, ec.message());
  }
}

bool stdout_is_tty() { return ::isatty(STDOUT_FILENO) == 1; }

}  // namespace sq::cli
