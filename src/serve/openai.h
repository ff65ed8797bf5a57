// The OpenAI wire format: request bodies parsed and validated into typed requests, and the JSON
// objects of the responses (chat.completion, text_completion, their streamed chunks, embeddings,
// errors). Nothing here does I/O or touches the engine, so that every rule is unit-tested alone.
//
// Parameters follow OpenAI's defaults (temperature 1, top_p 1, no top-k or min-p), not the CLI's
// (which are llama.cpp's). A JSON null counts as an absent field, as OpenAI's API treats it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "engine/sampler.h"
#include "serve/scheduler.h"

namespace sq::serve {

// An error the client receives as {"error": {"message", "type", "param", "code"}} with an HTTP
// status. `param` names the request field at fault ("" when none: JSON null on the wire).
class ApiError : public Error {
 public:
  ApiError(int status, std::string type, std::string param, std::string code, const std::string& message)
      : Error(message), status_(status), type_(std::move(type)), param_(std::move(param)),
        code_(std::move(code)) {}
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string type_, param_, code_;
};

// 400 invalid_request_error naming `param`.
[[noreturn]] void bad_param(const std::string& param, const std::string& message,
                            const std::string& code = "invalid_value");

// The error object OpenAI's clients parse.
nlohmann::json error_json(const ApiError& error);

// The body as JSON, which must be an object. Throws ApiError 400 for malformed JSON (with the
// parser's position), invalid UTF-8, nesting deeper than kMaxJsonDepth, or a value that is not an
// object.
nlohmann::ordered_json parse_body(std::string_view body);

// What the parser needs to know about the model to check a request before any work.
struct ModelLimits {
  int32_t n_vocab = 0;  // logit_bias ids and prompt token ids must be below it
  int32_t n_ctx = 0;    // per-sequence context
};

enum class ResponseFormat { Text, JsonObject, JsonSchema };

// The fields chat and completions share.
struct GenerationParams {
  std::string model;          // "" when absent
  int32_t n = 1;
  int32_t max_tokens = -1;    // -1: until the context is full
  SamplingParams sampling;    // OpenAI's defaults
  bool seeded = false;        // `seed` was given; otherwise the server draws one
  std::vector<std::string> stop;
  int32_t logprobs = -1;      // -1: none; k >= 0: each token's logprob and its k best alternatives
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  ResponseFormat format = ResponseFormat::Text;
  nlohmann::ordered_json schema;  // JsonSchema: the schema, keys in the client's order (null for json_object)
  std::string user;
};

// Limits of the parser (OpenAI's own where it has one).
inline constexpr int32_t kMaxChoices = 16;
inline constexpr int32_t kMaxStops = 16;
inline constexpr int32_t kMaxChatTopLogprobs = 20;
inline constexpr int32_t kMaxCompletionLogprobs = 20;
inline constexpr size_t kMaxPrompts = 64;
inline constexpr size_t kMaxEmbeddingInputs = 2048;
inline constexpr size_t kMaxLogitBias = 1024;
inline constexpr int kMaxJsonDepth = 64;  // arrays and objects inside each other in a request body

struct ChatRequest {
  GenerationParams params;
  // The conversation with every content normalised to a string (text parts joined by "\n"), ready
  // for the chat template.
  nlohmann::ordered_json messages;
};

// One prompt: text to tokenize, or token ids given by the client.
struct PromptInput {
  bool is_tokens = false;
  std::string text;
  std::vector<int32_t> tokens;
};

struct CompletionRequest {
  GenerationParams params;
  std::vector<PromptInput> prompts;  // at least one
};

struct EmbeddingRequest {
  std::string model;
  std::vector<PromptInput> inputs;  // at least one, none empty
  bool base64 = false;              // encoding_format "base64"
  std::string user;
};

// Each throws ApiError 400 naming the parameter that is wrong (type, range, unknown value).
ChatRequest parse_chat_request(const nlohmann::ordered_json& body, const ModelLimits& limits);
CompletionRequest parse_completion_request(const nlohmann::ordered_json& body, const ModelLimits& limits);
EmbeddingRequest parse_embedding_request(const nlohmann::ordered_json& body, const ModelLimits& limits);

// Standard base64 (RFC 4648, with padding).
std::string base64_encode(std::string_view bytes);
// The floats as little-endian IEEE-754 float32, base64-encoded: what encoding_format "base64"
// returns and what the official clients decode into a Float32Array.
std::string base64_floats(std::span<const float> values);

// JSON text that is always valid UTF-8: token bytes can split a character, and a stream decoder
// passes malformed bytes through, so invalid sequences become U+FFFD here rather than throwing.
std::string dump_json(const nlohmann::json& value);

// --- Responses -------------------------------------------------------------------------------

// What one choice produced so far.
struct ChoiceResult {
  std::string text;
  std::string finish_reason;  // "" while running
  std::vector<SampledToken> tokens;
};

// Figures of a finished request, summed over the scheduler requests behind it.
struct RequestTotals {
  Usage usage;
  Cost cost;
  double price_per_cpu_hour = 0;
};

// How a token id's bytes are found for top-logprob alternatives.
using TokenBytesFn = std::function<std::string(int32_t)>;

nlohmann::json usage_json(const Usage& usage);
// squeeze's own figures beside usage: ttft_ms, generation_tps, cpu_seconds, cost, ...
nlohmann::json squeeze_json(const RequestTotals& totals);

// chat: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}
nlohmann::json chat_logprobs_json(std::span<const SampledToken> tokens, int32_t top,
                                  const TokenBytesFn& token_bytes);
// completions: {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}, offsets in
// bytes from the start of the prompt text (OpenAI counts from the prompt's start even without echo).
nlohmann::json completion_logprobs_json(std::span<const SampledToken> tokens, int32_t top,
                                        size_t offset0, const TokenBytesFn& token_bytes);

struct ResponseIds {
  std::string id;       // chatcmpl-... / cmpl-...
  int64_t created = 0;  // unix seconds
  std::string model;
};

nlohmann::json chat_completion_json(const ResponseIds& ids, std::span<const ChoiceResult> choices,
                                    const RequestTotals& totals, int32_t logprobs,
                                    const TokenBytesFn& token_bytes);
nlohmann::json text_completion_json(const ResponseIds& ids, std::span<const ChoiceResult> choices,
                                    std::span<const size_t> prompt_bytes, int32_t n_per_prompt,
                                    const RequestTotals& totals, int32_t logprobs,
                                    const TokenBytesFn& token_bytes);
nlohmann::json embeddings_json(const std::string& model, std::span<const std::vector<float>> vectors,
                               bool base64, int32_t prompt_tokens);

// A new id: prefix + 24 random hex digits.
std::string new_id(std::string_view prefix);

}  // namespace sq::serve
