// squeeze serve: being written (issue 5); registered so that the command list is complete.
#include "base/error.h"
#include "cli/commands.h"

namespace sq::cli {

Runner add_serve(CLI::App& app) {
  app.add_subcommand("serve", "Serve a model behind an OpenAI-compatible HTTP API (not available yet)");
  return [] () -> int { fail<UnsupportedError>("squeeze serve is not available in this build yet"); };
}

}  // namespace sq::cli
