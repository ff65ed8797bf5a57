// squeeze: one binary, one subcommand per task. Errors a user can meet print one line and exit
// non-zero (DESIGN.md, invariant 6).
#include <cstdio>
#include <exception>
#include <new>

#include <fmt/core.h>

#include "base/error.h"
#include "cli/commands.h"
#include "kernels/isa.h"

int main(int argc, char** argv) {
  CLI::App app{"squeeze: run, measure and serve open-weight language models on a CPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "squeeze 0.1.0");

  std::vector<std::pair<CLI::App*, sq::cli::Runner>> commands;
  auto add = [&](sq::cli::Runner (*adder)(CLI::App&)) {
    sq::cli::Runner r = adder(app);
    commands.emplace_back(app.get_subcommands({}).back(), std::move(r));
  };
  add(&sq::cli::add_run);
  add(&sq::cli::add_info);
  add(&sq::cli::add_tokenize);
  add(&sq::cli::add_detokenize);
  add(&sq::cli::add_logits);
  add(&sq::cli::add_synth);
  add(&sq::cli::add_quantize);
  add(&sq::cli::add_bench);
  add(&sq::cli::add_zip);
  add(&sq::cli::add_unzip);
  add(&sq::cli::add_eval);
  add(&sq::cli::add_template);
  add(&sq::cli::add_serve);
  add(&sq::cli::add_chat);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    // SQUEEZE_ISA is checked before any work, so that a bad value is one clear line.
    sq::kernels::init_isa();
    for (auto& [cmd, run] : commands) {
      if (cmd->parsed()) return run();
    }
  } catch (const sq::Error& e) {
    std::fflush(stdout);
    fmt::print(stderr, "squeeze: error: {}\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    fmt::print(stderr, "squeeze: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "squeeze: internal error: {}\n", e.what());
    return 70;
  }
  return 1;
}
