// squeeze template: renders a chat template over a conversation and prints the prompt exactly as
// a model would see it, for checking templates. The template comes from a model's
// tokenizer.chat_template (read from the GGUF metadata, weights untouched), a file, or a built-in
// format.
#include <cstdio>
#include <optional>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/mmap.h"
#include "chat/template.h"
#include "cli/commands.h"
#include "engine/engine.h"
#include "engine/vocab_loader.h"
#include "model/gguf.h"

namespace sq::cli {

namespace {

struct TemplateFlags {
  ModelFlags model;
  std::string template_file;
  std::string builtin;
  std::string messages_file;
  bool no_generation_prompt = false;
  std::vector<std::string> vars;
  std::string date;
};

struct Source {
  std::string text;  // Jinja source; empty: use chatml
  std::string bos, eos;
  std::string origin;
};

std::string token_text_or_empty(const VocabData& d, int32_t id) {
  if (id < 0 || static_cast<size_t>(id) >= d.tokens.size()) return {};
  return d.tokens[static_cast<size_t>(id)];
}

Source model_source(const ModelFlags& flags) {
  Source s;
  s.origin = flags.model;
  if (is_gguf_file(flags.model)) {
    // Only the metadata: the tokenizer section carries the template and the special tokens.
    GgufFile file = GgufFile::open(flags.model);
    VocabData d = vocab_from_gguf(file);
    s.text = d.chat_template;
    s.bos = token_text_or_empty(d, d.bos);
    s.eos = token_text_or_empty(d, d.eos);
    return s;
  }
  auto engine = Engine::load({flags.model, flags.tokenizer});
  s.text = engine->chat_template();
  s.bos = engine->bos_text();
  s.eos = engine->eos_text();
  return s;
}

int run_template(const TemplateFlags& f) {
  const int given = !f.model.model.empty() + !f.template_file.empty() + !f.builtin.empty();
  if (given != 1) {
    fail<InvalidArgument>("give exactly one of -m MODEL, --template FILE or --builtin NAME "
                          "(got {})",
                          given);
  }
  Source src;
  std::optional<ChatTemplate> tmpl;
  if (!f.model.model.empty()) {
    src = model_source(f.model);
    if (src.text.empty()) {
      std::fprintf(stderr,
                   "squeeze: warning: %s has no tokenizer.chat_template; using the built-in "
                   "chatml format\n",
                   f.model.model.c_str());
      tmpl.emplace(ChatTemplate::for_model(src.text));
    }
  } else if (!f.template_file.empty()) {
    src.text = read_file(f.template_file);
    src.origin = f.template_file;
  } else {
    tmpl.emplace(ChatTemplate::builtin(f.builtin));
  }
  if (!tmpl) {
    try {
      tmpl.emplace(ChatTemplate::parse(src.text));
    } catch (const FormatError& e) {
      throw FormatError(src.origin + ": " + e.what());
    }
  }

  const std::string text = read_file(f.messages_file);
  // Key order kept: templates print tool schemas and arguments as the file writes them.
  nlohmann::ordered_json messages;
  try {
    messages = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    fail<InvalidArgument>("{}: not valid JSON ({})", f.messages_file, e.what());
  }
  // {"messages": [...], "tools": [...]} as an API request body is accepted too.
  ChatRenderOptions options;
  if (messages.is_object() && messages.contains("messages")) {
    if (messages.contains("tools")) options.tools = messages["tools"];
    messages = nlohmann::ordered_json(messages["messages"]);
  }
  try {
    ChatTemplate::validate_messages(messages);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(f.messages_file + ": " + e.what());
  }
  options.add_generation_prompt = !f.no_generation_prompt;
  options.bos_token = src.bos;
  options.eos_token = src.eos;
  options.now = f.date;
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  for (const std::string& v : f.vars) {
    const size_t eq = v.find('=');
    if (eq == std::string::npos || eq == 0) {
      fail<InvalidArgument>("--var '{}' is not NAME=VALUE", v);
    }
    const std::string name = v.substr(0, eq);
    const std::string value = v.substr(eq + 1);
    // A JSON value (true, 3, [..], "..") is taken as such; anything else is a string.
    nlohmann::ordered_json parsed = nlohmann::ordered_json::parse(value, nullptr, false);
    const nlohmann::ordered_json j = parsed.is_discarded() ? nlohmann::ordered_json(value) : parsed;
    if (name == "bos_token" && j.is_string()) {
      options.bos_token = j.get<std::string>();
    } else if (name == "eos_token" && j.is_string()) {
      options.eos_token = j.get<std::string>();
    } else if (name == "add_generation_prompt" && j.is_boolean()) {
      options.add_generation_prompt = j.get<bool>();
    } else if (name == "tools") {
      options.tools = j;
    } else {
      extra[name] = j;
    }
  }
  if (!extra.empty()) options.extra_context = extra;
  const std::string prompt = tmpl->render(messages, options);
  std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  return 0;
}

}  // namespace

Runner add_template(CLI::App& app) {
  auto f = std::make_shared<TemplateFlags>();
  CLI::App* cmd = app.add_subcommand(
      "template", "Render a chat template over a conversation and print the prompt exactly");
  add_model_flags(*cmd, f->model);
  cmd->get_option("--model")->required(false)->description(
      "Model whose tokenizer.chat_template to render (GGUF: metadata only)");
  cmd->add_option("--template", f->template_file, "Jinja template file");
  cmd->add_option("--builtin", f->builtin,
                  "Built-in format: chatml, llama2, llama3, mistral, gemma, zephyr");
  cmd->add_option("--messages", f->messages_file,
                  "JSON file: an array of {\"role\", \"content\"} messages (or a request body "
                  "with \"messages\" and \"tools\")")
      ->required();
  cmd->add_flag("--no-generation-prompt", f->no_generation_prompt,
                "Do not open an assistant turn at the end (add_generation_prompt = false)");
  cmd->add_option("--var", f->vars,
                  "Template variable NAME=VALUE (VALUE as JSON when it parses, else a string); "
                  "e.g. bos_token=<s>, enable_thinking=false");
  cmd->add_option("--date", f->date,
                  "What strftime_now() sees: YYYY-MM-DD or \"YYYY-MM-DD HH:MM\" (default: now)");
  return [f] { return run_template(*f); };
}

}  // namespace sq::cli
