// squeeze chat: a conversation in the terminal. Each turn renders the whole history with the
// model's chat template (or --chat-template) and generates the reply, streamed as it comes. Lines
// starting with '/' are commands: /reset, /system TEXT, /quit. When standard input is not a
// terminal it reads one user message per line until end of input, so that it can be scripted.
//
// One sequence at a time needs no scheduler: the engine's single-sequence generate() runs each
// turn over the rendered history (the prompt is processed again every turn, which a terminal chat
// on a CPU affords; the server's prefix cache is what avoids it under load).
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <random>
#include <string>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/thread_pool.h"
#include "cli/commands.h"
#include "engine/engine.h"
#include "serve/openai_backend.h"

namespace sq::cli {

namespace {

struct ChatFlags {
  ModelFlags model;
  std::string chat_template;
  std::string system;
  int32_t n_predict = 512;
  int32_t threads = 0;
  int32_t ctx = 0;
  SamplingParams sampling;  // llama.cpp's defaults, as `squeeze run`
  int64_t seed = -1;
  std::string kv_type = "f16";
};

const char* kHelp = "commands: /reset (forget the conversation), /system TEXT (set the system message and reset), "
                    "/quit";

int run(const ChatFlags& f) {
  auto engine = Engine::load({f.model.model, f.model.tokenizer});
  engine->require_tokenizer();  // a model without a vocabulary cannot chat: say so before anything
  const ChatTemplate tmpl = serve::select_chat_template(*engine, f.chat_template, [](const std::string& w) {
    fmt::print(stderr, "squeeze: warning: {}\n", w);
  });
  const bool interactive = ::isatty(STDIN_FILENO) == 1;

  GenerateOptions o;
  o.n_predict = f.n_predict;
  o.n_ctx = f.ctx > 0 ? f.ctx : default_context(engine->model());
  o.kv_type = ops::parse_kv_type(f.kv_type);
  o.n_threads = f.threads > 0 ? f.threads : default_thread_count();
  o.sampling = f.sampling;
  o.sampling.seed = f.seed >= 0 ? static_cast<uint64_t>(f.seed)
                                : static_cast<uint64_t>(std::random_device{}()) << 32 | std::random_device{}();
  o.stop_at_eog = true;
  if (o.n_predict < 1) fail<InvalidArgument>("-n is {}, expected at least 1 token per reply", o.n_predict);

  ChatRenderOptions ro;
  ro.add_generation_prompt = true;
  ro.bos_token = engine->bos_text();
  ro.eos_token = engine->eos_text();

  std::string system = f.system;
  nlohmann::json history = nlohmann::json::array();
  auto reset = [&] {
    history = nlohmann::json::array();
    if (!system.empty()) history.push_back({{"role", "system"}, {"content", system}});
  };
  reset();

  if (interactive) {
    fmt::print(stderr, "squeeze: chatting with {} (context {}); {}\n", engine->model().path, o.n_ctx, kHelp);
  }
  std::string line;
  for (;;) {
    if (interactive) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line[0] == '/') {
      if (line == "/quit" || line == "/exit") break;
      if (line == "/reset") {
        reset();
        fmt::print(stderr, "squeeze: conversation reset\n");
      } else if (line.rfind("/system", 0) == 0 && (line.size() == 7 || line[7] == ' ')) {
        system = line.size() > 8 ? line.substr(8) : std::string();
        reset();
        fmt::print(stderr, "squeeze: system message {}; conversation reset\n", system.empty() ? "cleared" : "set");
      } else {
        fmt::print(stderr, "squeeze: unknown command {}; {}\n", line, kHelp);
      }
      continue;
    }
    history.push_back({{"role", "user"}, {"content", line}});
    // Oldest turns go first when the history outgrows the context (the system message stays).
    std::vector<int32_t> prompt;
    for (;;) {
      prompt = serve::tokenize_rendered_chat(*engine, tmpl.render(history, ro));
      if (static_cast<int64_t>(prompt.size()) + o.n_predict <= o.n_ctx) break;
      const size_t first = !history.empty() && history[0]["role"] == "system" ? 1 : 0;
      if (history.size() <= first + 1) break;
      history.erase(history.begin() + static_cast<std::ptrdiff_t>(first));
    }
    if (static_cast<int64_t>(prompt.size()) + o.n_predict > o.n_ctx) {
      history.erase(history.end() - 1);
      fmt::print(stderr,
                 "squeeze: the message needs {} tokens and the reply up to {}, the context holds {}: "
                 "send something shorter or give a larger -c\n",
                 prompt.size(), o.n_predict, o.n_ctx);
      continue;
    }
    std::string reply;
    generate(*engine, prompt, o, [&](std::string_view text) {
      reply.append(text);
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    });
    std::fputc('\n', stdout);
    std::fflush(stdout);
    history.push_back({{"role", "assistant"}, {"content", reply}});
  }
  return 0;
}

}  // namespace

Runner add_chat(CLI::App& app) {
  auto f = std::make_shared<ChatFlags>();
  CLI::App* cmd = app.add_subcommand("chat", "Chat with a model in the terminal (one message per line)");
  add_model_flags(*cmd, f->model);
  cmd->add_option("--chat-template", f->chat_template,
                  "Built-in chat format instead of the model's own: chatml, llama2, llama3, mistral, gemma, zephyr");
  cmd->add_option("--system", f->system, "System message");
  cmd->add_option("-n,--n-predict", f->n_predict, "Most tokens per reply")->capture_default_str();
  cmd->add_option("-t,--threads", f->threads, "Threads (default: physical cores)");
  cmd->add_option("-c,--ctx-size", f->ctx, "Context length (default: the model's, at most 4096)");
  cmd->add_option("--temp", f->sampling.temperature, "Temperature; 0 means greedy")->capture_default_str();
  cmd->add_option("--top-k", f->sampling.top_k, "Keep the k most likely tokens; 0 disables")->capture_default_str();
  cmd->add_option("--top-p", f->sampling.top_p, "Nucleus sampling threshold; 1 disables")->capture_default_str();
  cmd->add_option("--min-p", f->sampling.min_p, "Drop tokens below min-p times the best one; 0 disables")
      ->capture_default_str();
  cmd->add_option("--repeat-penalty", f->sampling.repeat_penalty, "Penalty for repeated tokens; 1 disables")
      ->capture_default_str();
  cmd->add_option("-s,--seed", f->seed, "Random seed (default: random)");
  add_kv_type_flag(*cmd, f->kv_type);
  return [f] { return run(*f); };
}

}  // namespace sq::cli
