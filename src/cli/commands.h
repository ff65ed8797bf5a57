// The subcommands of the squeeze binary. Each registers its flags on the CLI11 app and returns the
// function that runs it; the same flag means the same thing in every command.
#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "model/quantize.h"

namespace sq::cli {

using Runner = std::function<int()>;

Runner add_run(CLI::App& app);
Runner add_info(CLI::App& app);
Runner add_tokenize(CLI::App& app);
Runner add_detokenize(CLI::App& app);
Runner add_logits(CLI::App& app);
Runner add_synth(CLI::App& app);
Runner add_quantize(CLI::App& app);
Runner add_bench(CLI::App& app);
Runner add_zip(CLI::App& app);
Runner add_unzip(CLI::App& app);
Runner add_eval(CLI::App& app);
Runner add_template(CLI::App& app);
Runner add_serve(CLI::App& app);
Runner add_chat(CLI::App& app);

// Flags shared by the commands that load a model.
struct ModelFlags {
  std::string model;
  std::string tokenizer;
};
void add_model_flags(CLI::App& cmd, ModelFlags& flags);

// --kv-type f16|f32|q8_0, parsed into `type`.
void add_kv_type_flag(CLI::App& cmd, std::string& type);

// Progress of a long write on stderr: a line rewritten in place on a terminal, a line per tenth
// otherwise. `verb` names the work ("synth", "quantize").
ProgressFn progress_printer(const char* verb);

// True when standard output is a terminal.
bool stdout_is_tty();

}  // namespace sq::cli
