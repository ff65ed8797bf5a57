// The real Backend of the HTTP server: the continuous-batching scheduler over a loaded engine, the
// model's chat template (or a built-in one), its tokenizer, and JSON-Schema constraints for
// structured output. Also the two steps `squeeze chat` shares with it: choosing the template and
// tokenizing a rendered conversation.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "chat/template.h"
#include "engine/engine.h"
#include "serve/scheduler.h"
#include "serve/server.h"

namespace sq::serve {

// --chat-template NAME when given (a built-in format), else the model's own template, else chatml.
// `warning` receives a line to log when the model has no template (or it does not parse) and chatml
// stands in. Throws InvalidArgument for an unknown NAME.
ChatTemplate select_chat_template(const Engine& engine, const std::string& name,
                                  const std::function<void(const std::string&)>& warning);

// The tokens of a rendered conversation. Special-token text is parsed as special tokens (the
// template writes <|im_start|> and the like as text). BOS is added as the vocabulary asks, unless
// the template already wrote it (most templates start with {{ bos_token }}).
std::vector<int32_t> tokenize_rendered_chat(const Engine& engine, const std::string& rendered);

struct EngineBackendOptions {
  SchedulerOptions scheduler;
  std::string chat_template;  // a built-in name; empty: the model's own, else chatml
  std::string model_id;       // what clients call the model; empty: the file name without extension
};

class EngineBackend final : public Backend {
 public:
  // Starts the scheduler over `engine`. Throws InvalidArgument for options that do not fit the
  // model, or a model without a tokenizer.
  EngineBackend(std::unique_ptr<Engine> engine, const EngineBackendOptions& options,
                const std::function<void(const std::string&)>& warning);
  ~EngineBackend() override;

  ModelInfo model_info() const override { return info_; }
  std::vector<int32_t> tokenize_chat(const nlohmann::ordered_json& messages) const override;
  std::vector<int32_t> tokenize_text(std::string_view text) const override;
  std::string token_bytes(int32_t token) const override;
  std::function<std::unique_ptr<TokenConstraint>()> json_constraint(const nlohmann::ordered_json& schema) const override;
  std::shared_ptr<RequestHandle> submit(GenerateRequest request) override;
  std::shared_ptr<RequestHandle> submit_embedding(std::vector<int32_t> tokens) override;
  SchedulerMetrics metrics() const override;

  // As Scheduler::shutdown.
  void shutdown(bool finish);
  const Engine& engine() const { return *engine_; }

 private:
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Scheduler> scheduler_;
  std::optional<ChatTemplate> template_;
  ModelInfo info_;
  std::string bos_text_, eos_text_;
};

}  // namespace sq::serve
