// squeeze template: being written (issue 5); registered so that the command list is complete.
#include "base/error.h"
#include "cli/commands.h"

namespace sq::cli {

Runner add_template(CLI::App& app) {
  app.add_subcommand("template", "Render a chat template over a conversation (not available yet)");
  return [] () -> int { fail<UnsupportedError>("squeeze template is not available in this build yet"); };
}

}  // namespace sq::cli
