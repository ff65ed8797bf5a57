#include "serve/openai.h"

#include <bit>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>

#include <fmt/format.h>

namespace sq::serve {

using nlohmann::json;
// Requests keep the client's key order (a schema's properties come out in its order); responses
// are built as plain json.
using ojson = nlohmann::ordered_json;

void bad_param(const std::string& param, const std::string& message, const std::string& code) {
  throw ApiError(400, "invalid_request_error", param, code, message);
}

json error_json(const ApiError& error) {
  json e = {{"message", error.what()}, {"type", error.type()}};
  e["param"] = error.param().empty() ? json(nullptr) : json(error.param());
  e["code"] = error.code().empty() ? json(nullptr) : json(error.code());
  return json{{"error", std::move(e)}};
}

ojson parse_body(std::string_view body) {
  ojson value;
  // Nesting is bounded while parsing: code that walks a value recursively (copies, the chat
  // template's conversion, error messages) must not meet a body of a million brackets.
  const ojson::parser_callback_t depth_check = [](int depth, ojson::parse_event_t event, ojson&) {
    if ((event == ojson::parse_event_t::object_start || event == ojson::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth) {
      throw ApiError(400, "invalid_request_error", "", "invalid_json",
                     fmt::format("the request body nests deeper than {} levels", kMaxJsonDepth));
    }
    return true;
  };
  try {
    value = ojson::parse(body.begin(), body.end(), depth_check);
  } catch (const ojson::parse_error& e) {
    // The parser's message carries the byte position, which is what a client needs to find it.
    throw ApiError(400, "invalid_request_error", "", "invalid_json",
                   fmt::format("the request body is not valid JSON: {}", e.what()));
  }
  if (!value.is_object()) {
    throw ApiError(400, "invalid_request_error", "", "invalid_json",
                   fmt::format("the request body is a JSON {}, expected an object", value.type_name()));
  }
  return value;
}

namespace {

// The field, or nullptr when it is absent or null.
const ojson* field(const ojson& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string describe(const ojson& v) {
  std::string s = v.dump(-1, ' ', false, ojson::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return fmt::format("{} ({})", s, v.type_name());
}

int64_t integer(const ojson& v, const std::string& param, int64_t lo, int64_t hi) {
  int64_t x = 0;
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) {
      bad_param(param, fmt::format("{} is {}, expected an integer in [{}, {}]", param, describe(v), lo, hi));
    }
    x = v.get<int64_t>();
  } else if (v.is_number_float() && std::isfinite(v.get<double>()) &&
             v.get<double>() == std::floor(v.get<double>()) && std::fabs(v.get<double>()) < 9e15) {
    x = static_cast<int64_t>(v.get<double>());  // 2.0 is an integer to JSON Schema too
  } else {
    bad_param(param, fmt::format("{} is {}, expected an integer in [{}, {}]", param, describe(v), lo, hi),
              "invalid_type");
  }
  if (x < lo || x > hi) {
    bad_param(param, fmt::format("{} is {}, expected an integer in [{}, {}]", param, x, lo, hi));
  }
  return x;
}

double number(const ojson& v, const std::string& param, double lo, double hi) {
  if (!v.is_number()) {
    bad_param(param, fmt::format("{} is {}, expected a number in [{}, {}]", param, describe(v), lo, hi),
              "invalid_type");
  }
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi)) {
    bad_param(param, fmt::format("{} is {}, expected a number in [{}, {}]", param, x, lo, hi));
  }
  return x;
}

bool boolean(const ojson& v, const std::string& param) {
  if (!v.is_boolean()) {
    bad_param(param, fmt::format("{} is {}, expected true or false", param, describe(v)), "invalid_type");
  }
  return v.get<bool>();
}

const std::string& string(const ojson& v, const std::string& param) {
  if (!v.is_string()) {
    bad_param(param, fmt::format("{} is {}, expected a string", param, describe(v)), "invalid_type");
  }
  return v.get_ref<const std::string&>();
}

std::vector<int32_t> token_ids(const ojson& arr, const std::string& param, const ModelLimits& limits) {
  std::vector<int32_t> ids;
  ids.reserve(arr.size());
  for (size_t i = 0; i < arr.size(); ++i) {
    const ojson& t = arr[i];
    const std::string p = fmt::format("{}[{}]", param, i);
    if (!t.is_number_integer()) {
      bad_param(p, fmt::format("{} is {}, expected a token id", p, describe(t)), "invalid_type");
    }
    ids.push_back(static_cast<int32_t>(integer(t, p, 0, limits.n_vocab - 1)));
  }
  return ids;
}

// A prompt or an embedding input: a string, an array of strings, an array of token ids, or an
// array of arrays of token ids.
std::vector<PromptInput> prompt_inputs(const ojson& v, const std::string& param, const ModelLimits& limits,
                                       size_t max_inputs) {
  std::vector<PromptInput> out;
  auto text = [&](const ojson& s, const std::string& p) {
    PromptInput in;
    in.text = string(s, p);
    out.push_back(std::move(in));
  };
  auto tokens = [&](const ojson& a, const std::string& p) {
    PromptInput in;
    in.is_tokens = true;
    in.tokens = token_ids(a, p, limits);
    out.push_back(std::move(in));
  };
  const std::string expected =
      "expected a string, an array of strings, an array of token ids or an array of arrays of token ids";
  if (v.is_string()) {
    text(v, param);
  } else if (v.is_array()) {
    if (v.empty()) bad_param(param, fmt::format("{} is an empty array, {}", param, expected));
    if (v[0].is_number()) {
      tokens(v, param);
    } else {
      if (v.size() > max_inputs) {
        bad_param(param, fmt::format("{} has {} entries, expected at most {}", param, v.size(), max_inputs));
      }
      for (size_t i = 0; i < v.size(); ++i) {
        const std::string p = fmt::format("{}[{}]", param, i);
        if (v[i].is_string()) {
          text(v[i], p);
        } else if (v[i].is_array() && !v[i].empty()) {
          tokens(v[i], p);
        } else {
          bad_param(p, fmt::format("{} is {}, {}", p, describe(v[i]), expected), "invalid_type");
        }
      }
    }
  } else {
    bad_param(param, fmt::format("{} is {}, {}", param, describe(v), expected), "invalid_type");
  }
  return out;
}

// The fields chat and completions share. `chat` selects the endpoint's own logprobs shape.
GenerationParams generation_params(const ojson& body, const ModelLimits& limits, bool chat) {
  GenerationParams p;
  SamplingParams& s = p.sampling;
  // OpenAI's defaults: no truncation, temperature 1; presence and frequency over the completion.
  s.temperature = 1.0f;
  s.top_p = 1.0f;
  s.top_k = 0;
  s.min_p = 0.0f;
  s.repeat_penalty = 1.0f;
  s.repeat_last_n = -1;

  if (const ojson* v = field(body, "model")) p.model = string(*v, "model");
  if (const ojson* v = field(body, "n")) p.n = static_cast<int32_t>(integer(*v, "n", 1, kMaxChoices));
  if (const ojson* v = field(body, "best_of")) {
    const int64_t b = integer(*v, "best_of", 1, kMaxChoices);
    if (b != p.n) bad_param("best_of", fmt::format("best_of is {}, only best_of = n ({}) is supported", b, p.n));
  }
  const int64_t max_budget = std::max<int64_t>(limits.n_ctx, 1);
  if (const ojson* v = field(body, "max_tokens")) {
    p.max_tokens = static_cast<int32_t>(integer(*v, "max_tokens", 1, max_budget));
  }
  if (const ojson* v = field(body, "max_completion_tokens")) {
    p.max_tokens = static_cast<int32_t>(integer(*v, "max_completion_tokens", 1, max_budget));
  }
  if (const ojson* v = field(body, "temperature")) {
    s.temperature = static_cast<float>(number(*v, "temperature", 0.0, 2.0));
  }
  if (const ojson* v = field(body, "top_p")) s.top_p = static_cast<float>(number(*v, "top_p", 0.0, 1.0));
  if (const ojson* v = field(body, "top_k")) {
    s.top_k = static_cast<int32_t>(integer(*v, "top_k", 0, std::numeric_limits<int32_t>::max()));
  }
  if (const ojson* v = field(body, "min_p")) s.min_p = static_cast<float>(number(*v, "min_p", 0.0, 1.0));
  if (const ojson* v = field(body, "repeat_penalty")) {
    s.repeat_penalty = static_cast<float>(number(*v, "repeat_penalty", 0.0, 100.0));
    if (s.repeat_penalty <= 0.0f) bad_param("repeat_penalty", "repeat_penalty is 0, expected a value > 0 (1 disables it)");
  }
  if (const ojson* v = field(body, "presence_penalty")) {
    s.presence_penalty = static_cast<float>(number(*v, "presence_penalty", -2.0, 2.0));
  }
  if (const ojson* v = field(body, "frequency_penalty")) {
    s.frequency_penalty = static_cast<float>(number(*v, "frequency_penalty", -2.0, 2.0));
  }
  if (const ojson* v = field(body, "seed")) {
    // Any 64-bit integer: negative seeds name the same bits as their unsigned counterpart.
    if (v->is_number_unsigned()) {
      s.seed = v->get<uint64_t>();
    } else {
      s.seed = static_cast<uint64_t>(integer(*v, "seed", std::numeric_limits<int64_t>::min(),
                                             std::numeric_limits<int64_t>::max()));
    }
    p.seeded = true;
  }
  if (const ojson* v = field(body, "logit_bias")) {
    if (!v->is_object()) {
      bad_param("logit_bias", fmt::format("logit_bias is {}, expected an object mapping token ids to biases",
                                          describe(*v)), "invalid_type");
    }
    if (v->size() > kMaxLogitBias) {
      bad_param("logit_bias", fmt::format("logit_bias has {} entries, expected at most {}", v->size(), kMaxLogitBias));
    }
    for (const auto& [key, bias] : v->items()) {
      const std::string param = "logit_bias." + key;
      int64_t id = -1;
      size_t used = 0;
      try {
        id = std::stoll(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != key.size() || key.empty() || id < 0 || id >= limits.n_vocab) {
        bad_param("logit_bias", fmt::format("logit_bias key \"{}\" is not a token id in [0, {})", key, limits.n_vocab));
      }
      s.logit_bias.emplace_back(static_cast<int32_t>(id), static_cast<float>(number(bias, param, -100.0, 100.0)));
    }
  }
  if (const ojson* v = field(body, "stop")) {
    auto add = [&](const ojson& x, const std::string& param) {
      const std::string& t = string(x, param);
      if (t.empty()) bad_param(param, fmt::format("{} is an empty string, expected a non-empty stop string", param));
      p.stop.push_back(t);
    };
    if (v->is_string()) {
      add(*v, "stop");
    } else if (v->is_array()) {
      if (v->size() > kMaxStops) {
        bad_param("stop", fmt::format("stop has {} strings, expected at most {}", v->size(), kMaxStops));
      }
      for (size_t i = 0; i < v->size(); ++i) add((*v)[i], fmt::format("stop[{}]", i));
    } else {
      bad_param("stop", fmt::format("stop is {}, expected a string or an array of strings", describe(*v)),
                "invalid_type");
    }
  }
  if (chat) {
    bool want = false;
    if (const ojson* v = field(body, "logprobs")) want = boolean(*v, "logprobs");
    if (const ojson* v = field(body, "top_logprobs")) {
      const auto k = static_cast<int32_t>(integer(*v, "top_logprobs", 0, kMaxChatTopLogprobs));
      if (!want) bad_param("top_logprobs", "top_logprobs needs logprobs set to true");
      p.logprobs = k;
    } else if (want) {
      p.logprobs = 0;
    }
  } else if (const ojson* v = field(body, "logprobs")) {
    if (v->is_boolean()) {
      bad_param("logprobs", fmt::format("logprobs is {}, expected an integer in [0, {}] (the completions "
                                        "endpoint takes the number of alternatives)",
                                        describe(*v), kMaxCompletionLogprobs), "invalid_type");
    }
    p.logprobs = static_cast<int32_t>(integer(*v, "logprobs", 0, kMaxCompletionLogprobs));
  }
  if (const ojson* v = field(body, "stream")) p.stream = boolean(*v, "stream");
  if (const ojson* v = field(body, "stream_options")) {
    if (!v->is_object()) {
      bad_param("stream_options", fmt::format("stream_options is {}, expected an object", describe(*v)),
                "invalid_type");
    }
    if (!p.stream) bad_param("stream_options", "stream_options is only allowed when stream is true");
    if (const ojson* u = field(*v, "include_usage")) p.include_usage = boolean(*u, "stream_options.include_usage");
  }
  if (const ojson* v = field(body, "response_format")) {
    if (!v->is_object()) {
      bad_param("response_format", fmt::format("response_format is {}, expected an object", describe(*v)),
                "invalid_type");
    }
    const ojson* type = field(*v, "type");
    if (type == nullptr) bad_param("response_format.type", "response_format has no type");
    const std::string& t = string(*type, "response_format.type");
    if (t == "text") {
      p.format = ResponseFormat::Text;
    } else if (t == "json_object") {
      p.format = ResponseFormat::JsonObject;
    } else if (t == "json_schema") {
      p.format = ResponseFormat::JsonSchema;
      const ojson* js = field(*v, "json_schema");
      if (js == nullptr || !js->is_object()) {
        bad_param("response_format.json_schema", "response_format of type json_schema needs a json_schema object");
      }
      if (const ojson* name = field(*js, "name")) string(*name, "response_format.json_schema.name");
      if (const ojson* schema = field(*js, "schema")) {
        if (!schema->is_object() && !schema->is_boolean()) {
          bad_param("response_format.json_schema.schema",
                    fmt::format("response_format.json_schema.schema is {}, expected a JSON Schema object",
                                describe(*schema)), "invalid_type");
        }
        p.schema = *schema;
      }
      // Without a schema any JSON object will do, as with json_object.
      if (p.schema.is_null()) p.format = ResponseFormat::JsonObject;
    } else {
      bad_param("response_format.type",
                fmt::format("response_format.type is \"{}\", expected text, json_object or json_schema", t));
    }
  }
  if (const ojson* v = field(body, "user")) p.user = string(*v, "user");
  if (const ojson* v = field(body, "tools"); v != nullptr && !(v->is_array() && v->empty())) {
    bad_param("tools", "tool calling is not supported yet", "unsupported_parameter");
  }
  if (const ojson* v = field(body, "functions"); v != nullptr && !(v->is_array() && v->empty())) {
    bad_param("functions", "function calling is not supported yet", "unsupported_parameter");
  }
  return p;
}

ojson normalise_message(const ojson& m, size_t i) {
  const std::string where = fmt::format("messages[{}]", i);
  if (!m.is_object()) {
    bad_param(where, fmt::format("{} is {}, expected an object with role and content", where, describe(m)),
              "invalid_type");
  }
  ojson out = m;
  const ojson* role = field(m, "role");
  if (role == nullptr) bad_param(where + ".role", fmt::format("{} has no role", where));
  std::string r = string(*role, where + ".role");
  if (r == "developer") r = "system";  // OpenAI's newer name; templates know only "system"
  if (r != "system" && r != "user" && r != "assistant" && r != "tool" && r != "function") {
    bad_param(where + ".role",
              fmt::format("{}.role is \"{}\", expected system, developer, user, assistant or tool", where, r));
  }
  out["role"] = r;
  const ojson* content = field(m, "content");
  if (content == nullptr) {
    if (r != "assistant") bad_param(where + ".content", fmt::format("{} ({}) has no content", where, r));
    out["content"] = "";
  } else if (content->is_string()) {
    // kept as is
  } else if (content->is_array()) {
    std::string joined;
    for (size_t k = 0; k < content->size(); ++k) {
      const ojson& part = (*content)[k];
      const std::string pw = fmt::format("{}.content[{}]", where, k);
      const ojson* type = part.is_object() ? field(part, "type") : nullptr;
      if (type == nullptr || !type->is_string()) {
        bad_param(pw, fmt::format("{} is {}, expected a content part {{\"type\": \"text\", \"text\": ...}}", pw,
                                  describe(part)), "invalid_type");
      }
      if (type->get<std::string>() != "text") {
        bad_param(pw + ".type", fmt::format("{}.type is \"{}\", only text parts are supported", pw,
                                            type->get<std::string>()), "unsupported_content");
      }
      const ojson* text = field(part, "text");
      if (text == nullptr) bad_param(pw + ".text", fmt::format("{} has no text", pw));
      if (k > 0) joined += '\n';
      joined += string(*text, pw + ".text");
    }
    out["content"] = joined;
  } else {
    bad_param(where + ".content",
              fmt::format("{}.content is {}, expected a string or an array of text parts", where, describe(*content)),
              "invalid_type");
  }
  return out;
}

}  // namespace

ChatRequest parse_chat_request(const ojson& body, const ModelLimits& limits) {
  ChatRequest r;
  r.params = generation_params(body, limits, /*chat=*/true);
  const ojson* messages = field(body, "messages");
  if (messages == nullptr) bad_param("messages", "messages is missing", "missing_required_parameter");
  if (!messages->is_array() || messages->empty()) {
    bad_param("messages", fmt::format("messages is {}, expected a non-empty array of messages", describe(*messages)),
              messages->is_array() ? "invalid_value" : "invalid_type");
  }
  r.messages = ojson::array();
  for (size_t i = 0; i < messages->size(); ++i) r.messages.push_back(normalise_message((*messages)[i], i));
  return r;
}

CompletionRequest parse_completion_request(const ojson& body, const ModelLimits& limits) {
  CompletionRequest r;
  r.params = generation_params(body, limits, /*chat=*/false);
  if (const ojson* v = field(body, "echo"); v != nullptr && boolean(*v, "echo")) {
    bad_param("echo", "echo is not supported", "unsupported_parameter");
  }
  if (const ojson* v = field(body, "suffix"); v != nullptr && !string(*v, "suffix").empty()) {
    bad_param("suffix", "suffix (fill-in-the-middle) is not supported", "unsupported_parameter");
  }
  const ojson* prompt = field(body, "prompt");
  if (prompt == nullptr) bad_param("prompt", "prompt is missing", "missing_required_parameter");
  r.prompts = prompt_inputs(*prompt, "prompt", limits, kMaxPrompts);
  if (r.prompts.size() * static_cast<size_t>(r.params.n) > kMaxPrompts) {
    bad_param("n", fmt::format("{} prompts with n = {} make {} choices, expected at most {}", r.prompts.size(),
                               r.params.n, r.prompts.size() * static_cast<size_t>(r.params.n), kMaxPrompts));
  }
  return r;
}

EmbeddingRequest parse_embedding_request(const ojson& body, const ModelLimits& limits) {
  EmbeddingRequest r;
  if (const ojson* v = field(body, "model")) r.model = string(*v, "model");
  if (const ojson* v = field(body, "user")) r.user = string(*v, "user");
  if (const ojson* v = field(body, "encoding_format")) {
    const std::string& f = string(*v, "encoding_format");
    if (f == "base64") {
      r.base64 = true;
    } else if (f != "float") {
      bad_param("encoding_format", fmt::format("encoding_format is \"{}\", expected float or base64", f));
    }
  }
  if (const ojson* v = field(body, "dimensions")) {
    integer(*v, "dimensions", 1, std::numeric_limits<int32_t>::max());
    bad_param("dimensions", "dimensions is not supported: the embedding has the model's width",
              "unsupported_parameter");
  }
  const ojson* input = field(body, "input");
  if (input == nullptr) bad_param("input", "input is missing", "missing_required_parameter");
  r.inputs = prompt_inputs(*input, "input", limits, kMaxEmbeddingInputs);
  for (size_t i = 0; i < r.inputs.size(); ++i) {
    if (!r.inputs[i].is_tokens && r.inputs[i].text.empty()) {
      bad_param(r.inputs.size() == 1 ? "input" : fmt::format("input[{}]", i), "input is an empty string");
    }
  }
  return r;
}

std::string base64_encode(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = static_cast<uint32_t>(static_cast<uint8_t>(bytes[i])) << 16 |
                       static_cast<uint32_t>(static_cast<uint8_t>(bytes[i + 1])) << 8 |
                       static_cast<uint8_t>(bytes[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint32_t>(static_cast<uint8_t>(bytes[i])) << 16;
    if (rest == 2) v |= static_cast<uint32_t>(static_cast<uint8_t>(bytes[i + 1])) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string base64_floats(std::span<const float> values) {
  std::string bytes;
  bytes.reserve(values.size() * 4);
  for (float f : values) {
    const auto u = std::bit_cast<uint32_t>(f);
    for (int b = 0; b < 4; ++b) bytes += static_cast<char>((u >> (8 * b)) & 0xff);
  }
  return base64_encode(bytes);
}

std::string dump_json(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

// --- Responses -------------------------------------------------------------------------------

namespace {

// JSON has no infinity; OpenAI reports "practically impossible" as -9999.
double logprob_value(float lp) { return std::isfinite(lp) ? static_cast<double>(lp) : -9999.0; }

json byte_array(const std::string& s) {
  json a = json::array();
  for (char c : s) a.push_back(static_cast<int>(static_cast<uint8_t>(c)));
  return a;
}

}  // namespace

json usage_json(const Usage& usage) {
  return json{{"prompt_tokens", usage.prompt_tokens},
              {"completion_tokens", usage.completion_tokens},
              {"total_tokens", usage.prompt_tokens + usage.completion_tokens},
              {"prompt_tokens_details", {{"cached_tokens", usage.cached_tokens}}}};
}

json squeeze_json(const RequestTotals& t) {
  return json{{"queue_ms", t.cost.queue_seconds * 1e3},
              {"ttft_ms", t.cost.ttft_seconds * 1e3},
              {"total_ms", t.cost.total_seconds * 1e3},
              {"generation_tps", t.cost.generation_tps},
              {"cpu_seconds", t.cost.cpu_seconds},
              {"cost", t.cost.price},
              {"price_per_cpu_hour", t.price_per_cpu_hour}};
}

json chat_logprobs_json(std::span<const SampledToken> tokens, int32_t top, const TokenBytesFn& token_bytes) {
  json content = json::array();
  for (const SampledToken& t : tokens) {
    json alts = json::array();
    for (size_t k = 0; k < t.top.size() && static_cast<int32_t>(k) < top; ++k) {
      const std::string b = token_bytes(t.top[k].token);
      alts.push_back({{"token", b}, {"logprob", logprob_value(t.top[k].logprob)}, {"bytes", byte_array(b)}});
    }
    content.push_back({{"token", t.bytes},
                       {"logprob", logprob_value(t.logprob)},
                       {"bytes", byte_array(t.bytes)},
                       {"top_logprobs", std::move(alts)}});
  }
  return json{{"content", std::move(content)}, {"refusal", nullptr}};
}

json completion_logprobs_json(std::span<const SampledToken> tokens, int32_t top, size_t offset0,
                              const TokenBytesFn& token_bytes) {
  json toks = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  size_t offset = offset0;
  for (const SampledToken& t : tokens) {
    toks.push_back(t.bytes);
    lps.push_back(logprob_value(t.logprob));
    // OpenAI's dict holds the k best and always the sampled token.
    json alts = json::object();
    for (size_t k = 0; k < t.top.size() && static_cast<int32_t>(k) < top; ++k) {
      alts[token_bytes(t.top[k].token)] = logprob_value(t.top[k].logprob);
    }
    alts[t.bytes] = logprob_value(t.logprob);
    tops.push_back(std::move(alts));
    offsets.push_back(offset);
    offset += t.bytes.size();
  }
  return json{{"tokens", std::move(toks)},
              {"token_logprobs", std::move(lps)},
              {"top_logprobs", std::move(tops)},
              {"text_offset", std::move(offsets)}};
}

namespace {

json finish_value(const std::string& reason) { return reason.empty() ? json(nullptr) : json(reason); }

}  // namespace

json chat_completion_json(const ResponseIds& ids, std::span<const ChoiceResult> choices,
                          const RequestTotals& totals, int32_t logprobs, const TokenBytesFn& token_bytes) {
  json cs = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    cs.push_back({{"index", i},
                  {"message", {{"role", "assistant"}, {"content", c.text}, {"refusal", nullptr}}},
                  {"logprobs", logprobs >= 0 ? chat_logprobs_json(c.tokens, logprobs, token_bytes) : json(nullptr)},
                  {"finish_reason", finish_value(c.finish_reason)}});
  }
  return json{{"id", ids.id},
              {"object", "chat.completion"},
              {"created", ids.created},
              {"model", ids.model},
              {"system_fingerprint", nullptr},
              {"choices", std::move(cs)},
              {"usage", usage_json(totals.usage)},
              {"squeeze", squeeze_json(totals)}};
}

json text_completion_json(const ResponseIds& ids, std::span<const ChoiceResult> choices,
                          std::span<const size_t> prompt_bytes, int32_t n_per_prompt,
                          const RequestTotals& totals, int32_t logprobs, const TokenBytesFn& token_bytes) {
  json cs = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    const size_t prompt = i / static_cast<size_t>(std::max(n_per_prompt, 1));
    const size_t offset0 = prompt < prompt_bytes.size() ? prompt_bytes[prompt] : 0;
    cs.push_back({{"index", i},
                  {"text", c.text},
                  {"logprobs", logprobs >= 0 ? completion_logprobs_json(c.tokens, logprobs, offset0, token_bytes)
                                             : json(nullptr)},
                  {"finish_reason", finish_value(c.finish_reason)}});
  }
  return json{{"id", ids.id},
              {"object", "text_completion"},
              {"created", ids.created},
              {"model", ids.model},
              {"system_fingerprint", nullptr},
              {"choices", std::move(cs)},
              {"usage", usage_json(totals.usage)},
              {"squeeze", squeeze_json(totals)}};
}

json embeddings_json(const std::string& model, std::span<const std::vector<float>> vectors, bool base64,
                     int32_t prompt_tokens) {
  json data = json::array();
  for (size_t i = 0; i < vectors.size(); ++i) {
    json e = {{"object", "embedding"}, {"index", i}};
    if (base64) {
      e["embedding"] = base64_floats(vectors[i]);
    } else {
      e["embedding"] = vectors[i];
    }
    data.push_back(std::move(e));
  }
  return json{{"object", "list"},
              {"data", std::move(data)},
              {"model", model},
              {"usage", {{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}}}};
}

std::string new_id(std::string_view prefix) {
  thread_local std::mt19937_64 rng(std::random_device{}() ^
                                   static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  return fmt::format("{}{:016x}{:08x}", prefix, rng(), static_cast<uint32_t>(rng()));
}

}  // namespace sq::serve
