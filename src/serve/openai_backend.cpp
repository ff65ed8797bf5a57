#include "serve/openai_backend.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "base/error.h"
#include "engine/json_constraint.h"

namespace sq::serve {

ChatTemplate select_chat_template(const Engine& engine, const std::string& name,
                                  const std::function<void(const std::string&)>& warning) {
  if (!name.empty()) return ChatTemplate::builtin(name);
  const std::string& source = engine.chat_template();
  if (source.empty()) {
    if (warning) warning(fmt::format("{} has no tokenizer.chat_template; using the built-in chatml format",
                                     engine.model().path));
    return ChatTemplate::builtin("chatml");
  }
  try {
    return ChatTemplate::parse(source);
  } catch (const Error& e) {
    // A model whose template squeeze cannot parse still serves, in a format it may not know well:
    // say so loudly rather than refuse to start.
    if (warning) {
      warning(fmt::format("the chat template of {} does not parse ({}); using the built-in chatml format "
                          "(choose one with --chat-template)",
                          engine.model().path, e.what()));
    }
    return ChatTemplate::builtin("chatml");
  }
}

std::vector<int32_t> tokenize_rendered_chat(const Engine& engine, const std::string& rendered) {
  const Tokenizer& tok = engine.require_tokenizer();
  const std::string bos = engine.bos_text();
  const bool has_bos = !bos.empty() && rendered.rfind(bos, 0) == 0;
  return tok.encode(rendered, tok.add_bos_default() && !has_bos, /*parse_special=*/true);
}

EngineBackend::EngineBackend(std::unique_ptr<Engine> engine, const EngineBackendOptions& options,
                             const std::function<void(const std::string&)>& warning)
    : engine_(std::move(engine)) {
  const Tokenizer& tok = engine_->require_tokenizer();
  template_.emplace(select_chat_template(*engine_, options.chat_template, warning));
  bos_text_ = engine_->bos_text();
  eos_text_ = engine_->eos_text();
  scheduler_ = std::make_unique<Scheduler>(*engine_, options.scheduler);

  const std::string& path = engine_->model().path;
  info_.id = options.model_id.empty() ? std::filesystem::path(path).stem().string() : options.model_id;
  struct stat st {};
  info_.created = ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_mtime) : 0;
  info_.n_ctx = scheduler_->n_ctx();
  info_.n_vocab = tok.n_vocab();
  info_.n_embd = engine_->model().config.n_embd;
  info_.price_per_cpu_hour = options.scheduler.price_per_cpu_hour;
  // A character without a token (and no byte fallback) becomes one unknown token: up to 4 bytes.
  size_t longest = 4;
  for (int32_t id = 0; id < tok.n_vocab(); ++id) {
    longest = std::max({longest, tok.token_bytes(id, /*render_special=*/true).size(), tok.token_text(id).size()});
  }
  info_.max_token_bytes = static_cast<int32_t>(std::min<size_t>(longest, 1 << 20));
}

EngineBackend::~EngineBackend() {
  // The scheduler's loop reads the engine: it goes first.
  scheduler_.reset();
}

std::vector<int32_t> EngineBackend::tokenize_chat(const nlohmann::ordered_json& messages) const {
  ChatRenderOptions o;
  o.add_generation_prompt = true;
  o.bos_token = bos_text_;
  o.eos_token = eos_text_;
  return tokenize_rendered_chat(*engine_, template_->render(messages, o));
}

std::vector<int32_t> EngineBackend::tokenize_text(std::string_view text) const {
  const Tokenizer& tok = engine_->require_tokenizer();
  // Client text is text: "<|im_start|>" in a completion prompt is not a control token.
  return tok.encode(text, tok.add_bos_default(), /*parse_special=*/false);
}

std::string EngineBackend::token_bytes(int32_t token) const {
  return engine_->require_tokenizer().token_bytes(token);
}

std::function<std::unique_ptr<TokenConstraint>()> EngineBackend::json_constraint(
    const nlohmann::ordered_json& schema) const {
  return make_json_constraint_factory(engine_->require_tokenizer(), schema);
}

std::shared_ptr<RequestHandle> EngineBackend::submit(GenerateRequest request) {
  return scheduler_->submit(std::move(request));
}

std::shared_ptr<RequestHandle> EngineBackend::submit_embedding(std::vector<int32_t> tokens) {
  return scheduler_->submit_embedding(std::move(tokens));
}

SchedulerMetrics EngineBackend::metrics() const { return scheduler_->metrics(); }

void EngineBackend::shutdown(bool finish) { scheduler_->shutdown(finish); }

}  // namespace sq::serve
