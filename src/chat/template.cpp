// ChatTemplate: a parsed template plus the variables transformers gives one (messages,
// add_generation_prompt, bos_token, eos_token, tools), and the built-in formats.
#include "chat/template.h"

#include <cstdio>

#include "base/error.h"
#include "chat/jinja.h"

namespace sq {

struct ChatTemplate::Program {
  std::shared_ptr<const jinja::Program> program;
};

namespace {

// Message content may be a string or, as the OpenAI API allows, a list of parts of which the
// text ones count. Shared by the built-in formats.
constexpr const char* kTextMacro =
    "{%- macro text(c) -%}"
    "{%- if c is string -%}{{- c -}}"
    "{%- elif c is iterable -%}{%- for p in c -%}{%- if p is mapping and p.type == 'text' -%}"
    "{{- p.text -}}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}";

struct Builtin {
  const char* name;
  const char* body;
};

// The formats as their model families document them, written as Jinja and rendered by the same
// interpreter as a model's own template.
constexpr Builtin kBuiltins[] = {
    {"chatml",
     "{%- for m in messages -%}"
     "{{- '<|im_start|>' + m.role + '\\n' + text(m.content) + '<|im_end|>\\n' -}}"
     "{%- endfor -%}"
     "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"},
    {"llama2",
     "{%- if messages and messages[0].role == 'system' -%}"
     "{%- set system = text(messages[0].content) -%}{%- set rest = messages[1:] -%}"
     "{%- else -%}{%- set system = '' -%}{%- set rest = messages -%}{%- endif -%}"
     "{%- for m in rest -%}"
     "{%- if m.role == 'user' -%}"
     "{{- bos_token + '[INST] ' -}}"
     "{%- if loop.first and system -%}{{- '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' -}}{%- endif -%}"
     "{{- (text(m.content) | trim) + ' [/INST]' -}}"
     "{%- elif m.role == 'assistant' -%}"
     "{{- ' ' + (text(m.content) | trim) + ' ' + eos_token -}}"
     "{%- endif -%}"
     "{%- endfor -%}"},
    {"llama3",
     "{{- bos_token -}}"
     "{%- for m in messages -%}"
     "{{- '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' + (text(m.content) | trim) + "
     "'<|eot_id|>' -}}"
     "{%- endfor -%}"
     "{%- if add_generation_prompt -%}"
     "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"},
    {"mistral",
     "{{- bos_token -}}"
     "{%- set ns = namespace(system='') -%}"
     "{%- for m in messages -%}"
     "{%- if m.role == 'system' -%}{%- set ns.system = text(m.content) + '\\n\\n' -%}"
     "{%- elif m.role == 'user' -%}"
     "{{- '[INST] ' + ns.system + text(m.content) + ' [/INST]' -}}{%- set ns.system = '' -%}"
     "{%- elif m.role == 'assistant' -%}{{- text(m.content) + eos_token -}}"
     "{%- endif -%}"
     "{%- endfor -%}"},
    {"gemma",
     "{{- bos_token -}}"
     "{%- set ns = namespace(system='') -%}"
     "{%- for m in messages -%}"
     "{%- if m.role == 'system' -%}{%- set ns.system = text(m.content) + '\\n\\n' -%}"
     "{%- else -%}"
     "{%- set role = 'model' if m.role == 'assistant' else m.role -%}"
     "{{- '<start_of_turn>' + role + '\\n' + ns.system + (text(m.content) | trim) + "
     "'<end_of_turn>\\n' -}}"
     "{%- set ns.system = '' -%}"
     "{%- endif -%}"
     "{%- endfor -%}"
     "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"},
    {"zephyr",
     "{%- for m in messages -%}"
     "{{- '<|' + m.role + '|>\\n' + text(m.content) + eos_token + '\\n' -}}"
     "{%- endfor -%}"
     "{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- endif -%}"},
};

// "YYYY-MM-DD[ HH:MM[:SS]]" (a 'T' may separate date and time).
void parse_now(const std::string& s, int out[6]) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0;
  char sep = 0;
  int n = std::sscanf(s.c_str(), "%4d-%2d-%2d%c%2d:%2d:%2d", &y, &mo, &d, &sep, &h, &mi, &se);
  const bool shape_ok = (n == 3 && s.size() == 10) || (n >= 6 && (sep == ' ' || sep == 'T'));
  if (!shape_ok || y < 1 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 ||
      mi < 0 || mi > 59 || se < 0 || se > 60) {
    fail<InvalidArgument>("date '{}' is not valid; expected YYYY-MM-DD or YYYY-MM-DD HH:MM[:SS]", s);
  }
  out[0] = y;
  out[1] = mo;
  out[2] = d;
  out[3] = h;
  out[4] = mi;
  out[5] = se;
}

}  // namespace

ChatTemplate::ChatTemplate(std::string source, std::shared_ptr<const Program> program)
    : source_(std::move(source)), program_(std::move(program)) {}
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;
ChatTemplate::~ChatTemplate() = default;

ChatTemplate ChatTemplate::parse(std::string source) {
  auto p = std::make_shared<Program>();
  p->program = jinja::parse(source);
  return ChatTemplate(std::move(source), std::move(p));
}

ChatTemplate ChatTemplate::builtin(std::string_view name) {
  for (const Builtin& b : kBuiltins) {
    if (name == b.name) return parse(std::string(kTextMacro) + b.body);
  }
  std::string known;
  for (const Builtin& b : kBuiltins) known += (known.empty() ? "" : ", ") + std::string(b.name);
  fail<InvalidArgument>("unknown built-in chat template '{}'; known: {}", name, known);
}

ChatTemplate ChatTemplate::for_model(const std::string& chat_template, bool* used_fallback) {
  const bool none = chat_template.empty();
  if (used_fallback != nullptr) *used_fallback = none;
  return none ? builtin("chatml") : parse(chat_template);
}

std::vector<std::string> ChatTemplate::builtin_names() {
  std::vector<std::string> out;
  for (const Builtin& b : kBuiltins) out.emplace_back(b.name);
  return out;
}

namespace {

template <typename Json>
void check_messages(const Json& messages) {
  if (!messages.is_array()) {
    fail<InvalidArgument>("messages must be a JSON array of {{\"role\", \"content\"}} objects, got "
                          "a JSON {}",
                          messages.type_name());
  }
  for (size_t k = 0; k < messages.size(); ++k) {
    const nlohmann::json& m = messages[k];
    if (!m.is_object()) {
      fail<InvalidArgument>("message {} is a JSON {}; expected an object with \"role\" and "
                            "\"content\"",
                            k, m.type_name());
    }
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      fail<InvalidArgument>("message {} has no \"role\" string (expected \"system\", \"user\", "
                            "\"assistant\" or \"tool\")",
                            k);
    }
  }
}

}  // namespace

void ChatTemplate::validate_messages(const nlohmann::json& messages) { check_messages(messages); }
void ChatTemplate::validate_messages(const nlohmann::ordered_json& messages) {
  check_messages(messages);
}

std::string ChatTemplate::render(const nlohmann::json& messages,
                                 const ChatRenderOptions& options) const {
  check_messages(messages);
  return render_value(jinja::from_json(messages), options);
}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages,
                                 const ChatRenderOptions& options) const {
  check_messages(messages);
  return render_value(jinja::from_json(messages), options);
}

std::string ChatTemplate::render_value(const jinja::Value& messages,
                                       const ChatRenderOptions& options) const {
  jinja::RenderInput input;
  input.globals.emplace_back("messages", messages);
  input.globals.emplace_back("add_generation_prompt",
                             jinja::Value::boolean(options.add_generation_prompt));
  input.globals.emplace_back("bos_token", jinja::Value::string(options.bos_token));
  input.globals.emplace_back("eos_token", jinja::Value::string(options.eos_token));
  input.globals.emplace_back("tools", jinja::from_json(options.tools));
  if (options.extra_context.is_object()) {
    for (auto it = options.extra_context.begin(); it != options.extra_context.end(); ++it) {
      input.globals.emplace_back(it.key(), jinja::from_json(it.value()));
    }
  } else if (!options.extra_context.is_null()) {
    fail<InvalidArgument>("extra template variables must be a JSON object, got a JSON {}",
                          options.extra_context.type_name());
  }
  if (!options.now.empty()) parse_now(options.now, input.date);
  return jinja::render(*program_->program, input);
}

}  // namespace sq
