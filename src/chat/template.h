// Chat templates: turning a list of messages into the prompt text a model was trained on. A model
// ships its own template as Jinja source in tokenizer.chat_template; squeeze renders it with its
// own interpreter of the Jinja subset that real templates use. A few common formats are built in
// for models without one.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace sq {

namespace jinja {
struct Value;
}

struct ChatRenderOptions {
  bool add_generation_prompt = true;
  std::string bos_token;  // what the template sees as bos_token / eos_token
  std::string eos_token;
  // JSON with the key order kept: a tool's schema is printed into the prompt in the order the
  // client wrote it, as Python's json and JavaScript keep it. (A nlohmann::json assigned here
  // converts, with its keys sorted.)
  // null: `tools` is none in the template, as transformers renders it (tools=None), so that
  // `tools is not none` and `tools | length` behave as template authors tested them.
  nlohmann::ordered_json tools;
  nlohmann::ordered_json extra_context;  // object: more variables (enable_thinking, ...), or null
  // What strftime_now() sees: "YYYY-MM-DD" or "YYYY-MM-DD HH:MM[:SS]"; empty: the local clock.
  // Tests and `squeeze template --date` fix it so that a render is reproducible.
  std::string now;
};

class ChatTemplate {
 public:
  // Parses Jinja source. Throws FormatError naming the line and column of a syntax error.
  static ChatTemplate parse(std::string source);
  // A built-in format: chatml, llama2, llama3, mistral, gemma, zephyr. Throws InvalidArgument
  // naming the known ones for any other name.
  static ChatTemplate builtin(std::string_view name);
  static std::vector<std::string> builtin_names();
  // The template a model ships (Engine::chat_template()), or chatml when it ships none; sets
  // *used_fallback so that the caller can say so in its log.
  static ChatTemplate for_model(const std::string& chat_template, bool* used_fallback = nullptr);

  // Renders `messages` (an array of {"role", "content", ...} objects). Throws InvalidArgument for
  // a raise_exception() in the template (with its message) or a runtime error in the template
  // (what failed, where).
  std::string render(const nlohmann::json& messages, const ChatRenderOptions& options) const;
  // The same with the messages' key order kept (what a parsed request body should use).
  std::string render(const nlohmann::ordered_json& messages,
                     const ChatRenderOptions& options) const;

  const std::string& source() const { return source_; }

  // Checks that `messages` is what render() takes: an array of objects, each with a string
  // "role". Throws InvalidArgument naming the first offending message.
  static void validate_messages(const nlohmann::json& messages);
  static void validate_messages(const nlohmann::ordered_json& messages);

  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;
  ~ChatTemplate();

 private:
  struct Program;
  ChatTemplate(std::string source, std::shared_ptr<const Program> program);
  std::string render_value(const jinja::Value& messages, const ChatRenderOptions& options) const;
  std::string source_;
  std::shared_ptr<const Program> program_;
};

}  // namespace sq
