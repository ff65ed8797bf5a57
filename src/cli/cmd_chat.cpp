// squeeze chat: being written (issue 5); registered so that the command list is complete.
#include "base/error.h"
#include "cli/commands.h"

namespace sq::cli {

Runner add_chat(CLI::App& app) {
  app.add_subcommand("chat", "Chat with a model in the terminal (not available yet)");
  return [] () -> int { fail<UnsupportedError>("squeeze chat is not available in this build yet"); };
}

}  // namespace sq::cli
