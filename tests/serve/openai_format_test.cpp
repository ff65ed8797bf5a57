// The wire-format helpers alone, against published references: RFC 4648's base64 test vectors,
// IEEE-754 bit patterns, and OpenAI's documented error and parameter rules.
#include <cmath>
#include <limits>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "serve/openai.h"

namespace sq::serve {
namespace {

using nlohmann::json;

TEST(OpenaiFormat, Base64MatchesRfc4648Vectors) {
  // RFC 4648, section 10.
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("f"), "Zg==");
  EXPECT_EQ(base64_encode("fo"), "Zm8=");
  EXPECT_EQ(base64_encode("foo"), "Zm9v");
  EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
  EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_encode(std::string("\xff\xfe\x00", 3)), "//4A");
}

TEST(OpenaiFormat, Base64FloatsAreLittleEndianFloat32) {
  // 1.0f is 0x3F800000, -2.0f is 0xC0000000: bytes 00 00 80 3F, 00 00 00 C0.
  const float v[] = {1.0f, -2.0f};
  EXPECT_EQ(base64_floats(v), base64_encode(std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8)));
  EXPECT_EQ(base64_floats(std::span<const float>(v, 1)), "AACAPw==");
}

TEST(OpenaiFormat, ErrorObjectShape) {
  const json e = error_json(ApiError(400, "invalid_request_error", "temperature", "invalid_value", "too hot"));
  EXPECT_EQ(e, json::parse(R"({"error": {"message": "too hot", "type": "invalid_request_error",
                                          "param": "temperature", "code": "invalid_value"}})"));
  const json n = error_json(ApiError(500, "server_error", "", "", "boom"));
  EXPECT_TRUE(n["error"]["param"].is_null());
  EXPECT_TRUE(n["error"]["code"].is_null());
}

TEST(OpenaiFormat, DumpReplacesInvalidUtf8) {
  const std::string s = dump_json(json{{"t", std::string("a\xe4\xbd")}});
  EXPECT_EQ(s, "{\"t\":\"a\xef\xbf\xbd\"}");  // one U+FFFD for the truncated character
}

TEST(OpenaiFormat, ParseBodyRules) {
  EXPECT_NO_THROW(parse_body("{}"));
  for (const char* bad : {"", "[]", "\"x\"", "{", "{\"a\": 1,}", "{\"a\": \"\xff\"}"}) {
    try {
      parse_body(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      EXPECT_EQ(e.type(), "invalid_request_error");
    }
  }
  // Nesting up to the limit is fine; one more level is not.
  const auto nested = [](int depth) {
    return "{\"a\": " + std::string(static_cast<size_t>(depth - 1), '[') + std::string(static_cast<size_t>(depth - 1), ']') + "}";
  };
  EXPECT_NO_THROW(parse_body(nested(kMaxJsonDepth)));
  EXPECT_THROW(parse_body(nested(kMaxJsonDepth + 1)), ApiError);
}

TEST(OpenaiFormat, OpenAiDefaultsAndNulls) {
  const ModelLimits limits{100, 64};
  const ChatRequest r = parse_chat_request(
      json::parse(R"({"messages": [{"role": "developer", "content": "be brief"}, {"role": "assistant", "content": null},
                                   {"role": "user", "content": "hi"}],
                      "temperature": null, "seed": -1})"),
      limits);
  EXPECT_FLOAT_EQ(r.params.sampling.temperature, 1.0f);
  EXPECT_FLOAT_EQ(r.params.sampling.top_p, 1.0f);
  EXPECT_EQ(r.params.sampling.top_k, 0);
  EXPECT_FLOAT_EQ(r.params.sampling.min_p, 0.0f);
  EXPECT_EQ(r.params.sampling.repeat_last_n, -1);
  EXPECT_EQ(r.params.max_tokens, -1);
  EXPECT_EQ(r.params.n, 1);
  EXPECT_EQ(r.params.logprobs, -1);
  EXPECT_TRUE(r.params.seeded);
  EXPECT_EQ(r.params.sampling.seed, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(r.messages[0]["role"], "system");
  EXPECT_EQ(r.messages[1]["content"], "");
  // Chat logprobs: true alone means no alternatives.
  const ChatRequest l = parse_chat_request(
      json::parse(R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true})"), limits);
  EXPECT_EQ(l.params.logprobs, 0);
}

TEST(OpenaiFormat, CompletionAndEmbeddingInputs) {
  const ModelLimits limits{100, 64};
  const CompletionRequest c = parse_completion_request(json::parse(R"({"prompt": [[1, 2], [3]], "n": 2})"), limits);
  ASSERT_EQ(c.prompts.size(), 2u);
  EXPECT_TRUE(c.prompts[0].is_tokens);
  EXPECT_EQ(c.prompts[1].tokens, std::vector<int32_t>{3});
  try {
    parse_completion_request(json::parse(R"({"prompt": ["a", 5]})"), limits);
    ADD_FAILURE();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.param(), "prompt[1]");
  }
  const EmbeddingRequest e = parse_embedding_request(json::parse(R"({"input": "x", "encoding_format": "base64"})"), limits);
  EXPECT_TRUE(e.base64);
  EXPECT_EQ(e.inputs.size(), 1u);
}

}  // namespace
}  // namespace sq::serve
