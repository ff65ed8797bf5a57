#include "engine/json_constraint.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/rng.h"
#include "engine/sampler.h"
#include "engine/vocab_loader.h"
#include "model/gguf.h"
#include "support.h"
#include "tokenizer/tokenizer.h"

namespace sq {
namespace {

using nlohmann::json;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

std::unique_ptr<Tokenizer> load_vocab(const std::string& path) {
  GgufFile file = GgufFile::open(path);
  return load_tokenizer(file);
}

// The schemas the random walks run over, as text (the way a request carries them).
const std::vector<std::string>& schemas() {
  static const std::vector<std::string> s = {
      // 0: flat object, required, bounds, no extras
      R"({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0,"maximum":150}},"required":["name","age"],"additionalProperties":false})",
      // 1: nested objects and a bounded array of bounded strings
      R"({"type":"object","properties":{"user":{"type":"object","properties":{"id":{"type":"integer"},"tags":{"type":"array","items":{"type":"string","maxLength":8},"minItems":1,"maxItems":3}},"required":["id","tags"]},"active":{"type":"boolean"}},"required":["user"]})",
      // 2: enums of mixed values, enum filtered by type
      R"({"type":"object","properties":{"color":{"enum":["red","green","blue",null,42,{"x":[1,2]}]},"size":{"type":"string","enum":["S","M","L",3]}},"required":["color","size"]})",
      // 3: anyOf of different kinds at top level
      R"({"anyOf":[{"type":"string","maxLength":5},{"type":"integer","minimum":-20,"maximum":-3},{"type":"array","items":{"type":"number"},"maxItems":4}]})",
      // 4: $ref recursion
      R"({"$defs":{"node":{"type":"object","properties":{"value":{"type":"integer"},"children":{"type":"array","items":{"$ref":"#/$defs/node"},"maxItems":2}},"required":["value","children"],"additionalProperties":false}},"$ref":"#/$defs/node"})",
      // 5: array length bounds, string length bounds
      R"({"type":"array","items":{"type":"string","minLength":2,"maxLength":6},"minItems":2,"maxItems":5})",
      // 6: integers vs numbers, exclusive bounds
      R"({"type":"object","properties":{"i":{"type":"integer"},"n":{"type":"number"},"b":{"type":"number","minimum":-1.5,"exclusiveMaximum":2.25},"e":{"type":"integer","exclusiveMinimum":10,"maximum":12}},"required":["i","n","b","e"]})",
      // 7: nullable by type array and by anyOf
      R"({"type":"object","properties":{"note":{"type":["string","null"]},"count":{"anyOf":[{"type":"integer"},{"type":"null"}]}},"required":["note","count"]})",
      // 8: definitions, oneOf with a discriminator
      R"({"definitions":{"circle":{"type":"object","properties":{"kind":{"const":"circle"},"r":{"type":"number","minimum":0}},"required":["kind","r"],"additionalProperties":false},"square":{"type":"object","properties":{"kind":{"const":"square"},"side":{"type":"integer","minimum":1}},"required":["kind","side"]}},"type":"object","properties":{"shapes":{"type":"array","items":{"oneOf":[{"$ref":"#/definitions/circle"},{"$ref":"#/definitions/square"}]},"maxItems":3}},"required":["shapes"]})",
      // 9: prefixItems, no further items
      R"({"type":"array","prefixItems":[{"type":"string"},{"type":"integer"},{"type":"boolean"}],"items":false,"minItems":2})",
      // 10: any object
      R"({"type":"object"})",
      // 11: free keys with typed values
      R"({"type":"object","additionalProperties":{"type":"integer","maximum":5}})",
      // 12: top-level string enum with unicode and escapes
      R"({"enum":["h\u00e9llo","\u65e5\u672c\u8a9e","a\"b\\c","\u0001x","emoji \ud83d\ude00"]})",
      // 13: top-level bounded integer (ends without a closing byte)
      R"({"type":"integer","minimum":100,"maximum":99999})",
      // 14: anything
      R"({})",
      // 15: optional properties around a required one
      R"({"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string","maxLength":3},"c":{"type":"boolean"},"d":{"type":"null"}},"required":["c"]})",
      // 16: code-point lengths
      R"({"type":"string","minLength":3,"maxLength":4})",
      // 17: recursion through anyOf (a JSON-like tree of numbers)
      R"({"$defs":{"v":{"anyOf":[{"type":"number"},{"type":"array","items":{"$ref":"#/$defs/v"},"maxItems":3}]}},"type":"object","properties":{"tree":{"$ref":"#/$defs/v"}},"required":["tree"]})",
      // 18: pydantic-style Optional with allOf of one $ref and annotations
      R"({"title":"M","type":"object","$defs":{"E":{"title":"E","enum":["a","b"],"type":"string"}},"properties":{"e":{"allOf":[{"$ref":"#/$defs/E"}],"description":"an enum"},"o":{"anyOf":[{"type":"string"},{"type":"null"}],"default":null,"title":"O"}},"required":["e"]})",
  };
  return s;
}

struct Walk {
  std::string output;
  bool finished =
      false;  // the constraint said finished() or allowed end-of-generation and we took it
  int steps = 0;
};

// Draws tokens at random among the allowed ones until the value is finished or `cap` tokens. With
// probability `close_bias` it prefers the allowed one-byte tokens that close or separate things,
// so that walks end in reasonable time; end-of-generation is taken with probability 0.3 once
// allowed. Checks every step's mask against the contract of TokenConstraint.
Walk random_walk(const Tokenizer& tok, TokenConstraint& c, uint64_t seed, int cap,
                 double close_bias) {
  Rng rng(seed);
  Walk w;
  std::vector<float> logits(static_cast<size_t>(tok.n_vocab()));
  std::vector<int32_t> allowed, closers;
  for (; w.steps < cap; ++w.steps) {
    std::fill(logits.begin(), logits.end(), 0.0f);
    c.apply(logits);
    allowed.clear();
    closers.clear();
    bool eog_allowed = false;
    for (int32_t id = 0; id < tok.n_vocab(); ++id) {
      if (logits[static_cast<size_t>(id)] == kNegInf) continue;
      if (tok.is_eog(id)) {
        eog_allowed = true;
        continue;
      }
      EXPECT_FALSE(tok.is_control(id)) << "control token " << id << " allowed";
      allowed.push_back(id);
      const std::string b = tok.token_bytes(id);
      if (b.size() == 1 && std::string("\"]},").find(b[0]) != std::string::npos)
        closers.push_back(id);
    }
    EXPECT_EQ(eog_allowed, c.complete()) << w.output;
    if (c.finished()) {
      EXPECT_TRUE(allowed.empty()) << "tokens allowed after the value closed: " << w.output;
      w.finished = true;
      return w;
    }
    if (eog_allowed && rng.next_double() < 0.3) {
      w.finished = true;
      return w;
    }
    EXPECT_FALSE(allowed.empty()) << "every token banned after: " << w.output;
    if (allowed.empty()) return w;
    const std::vector<int32_t>& pool =
        !closers.empty() && rng.next_double() < close_bias ? closers : allowed;
    const int32_t id = pool[static_cast<size_t>(rng.next_u64() % pool.size())];
    c.accept(id);
    w.output += tok.token_bytes(id);
  }
  w.finished = c.finished();
  return w;
}

// Whether `text` is a prefix of some JSON text, by nlohmann's parser (which squeeze's automaton
// does not use): it parses, or it fails only at the end of the input.
bool json_prefix(const std::string& text) {
  try {
    const json parsed = json::parse(text);
    return !parsed.is_discarded();
  } catch (const json::parse_error& e) {
    return e.byte == text.size() + 1;
  }
}

struct Case {
  json schema;  // null: json_object
  std::string output;
  std::string label;
};

// Runs the ajv validator (tests/engine/json_validate.js) once over every case. Empty when node or
// node_modules/ajv is missing.
std::vector<json> validate_with_ajv(const std::vector<Case>& cases, std::string& skip_reason) {
  const std::filesystem::path root(SQUEEZE_SOURCE_DIR);
  if (!std::filesystem::exists(root / "node_modules" / "ajv" / "dist" / "2020.js")) {
    skip_reason = "node_modules/ajv is missing (run scripts/setup.sh)";
    return {};
  }
  if (std::system("node --version > /dev/null 2>&1") != 0) {
    skip_reason = "node is not on PATH";
    return {};
  }
  test::TempDir dir;
  json batch = json::array();
  for (const Case& c : cases) batch.push_back({{"schema", c.schema}, {"output", c.output}});
  {
    std::ofstream f(dir.file("cases.json"), std::ios::binary);
    f << batch.dump();
  }
  const std::string cmd = "node " + test::quote((root / "tests/engine/json_validate.js").string()) +
                          " " + test::quote(dir.file("cases.json")) + " " +
                          test::quote(root.string()) + " > " + test::quote(dir.file("out.json"));
  if (std::system(cmd.c_str()) != 0) {
    ADD_FAILURE() << "the validator failed: " << cmd;
    return {};
  }
  std::ifstream in(dir.file("out.json"), std::ios::binary);
  json results = json::parse(in);
  return std::vector<json>(results.begin(), results.end());
}

class JsonConstraintVocab : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string a = test::shared_path("models/stories260K/stories260K.gguf");
    const std::string b = test::shared_path("models/extras/llama-2-tiny-random.gguf");
    if (a.empty() || b.empty()) {
      GTEST_SKIP() << "needs models/stories260K/stories260K.gguf and "
                      "models/extras/llama-2-tiny-random.gguf from the shared data folder";
    }
    small_ = load_vocab(a);
    large_ = load_vocab(b);
    ASSERT_TRUE(small_ && large_);
  }
  std::unique_ptr<Tokenizer> small_, large_;
};

// The main property: random walks through the allowed tokens give outputs that an independent
// parser and validator accept, for many schemas and both vocabularies; unfinished ones are valid
// JSON prefixes. Also walks driven by the real Sampler on random logits.
TEST_F(JsonConstraintVocab, RandomWalksParseAndValidate) {
  std::vector<Case> cases;
  int unfinished = 0;
  for (size_t si = 0; si < schemas().size(); ++si) {
    const nlohmann::ordered_json schema = nlohmann::ordered_json::parse(schemas()[si]);
    for (const Tokenizer* tok : {small_.get(), large_.get()}) {
      const bool large = tok == large_.get();
      auto factory = make_json_constraint_factory(*tok, schema);
      const int runs = large ? 3 : 6;
      int finished = 0;
      for (int r = 0; r < runs; ++r) {
        auto c = factory();
        const uint64_t seed = si * 1000 + static_cast<uint64_t>(r) + (large ? 500 : 0);
        Walk w = random_walk(*tok, *c, seed, 160, 0.15 + 0.1 * r);
        const std::string label = "schema " + std::to_string(si) +
                                  (large ? " llama-2-tiny" : " stories260K") + " seed " +
                                  std::to_string(seed) + ": " + w.output;
        if (w.finished) {
          ++finished;
          cases.push_back({schema, w.output, label});
        } else {
          ++unfinished;
          EXPECT_TRUE(json_prefix(w.output)) << "not a JSON prefix: " << label;
        }
      }
      EXPECT_GT(finished, 0) << "no walk finished for schema " << si;
      // Walks cut short, as max_tokens cuts a choice: what is there is a JSON prefix.
      for (int r = 0; r < 3; ++r) {
        auto c = factory();
        const uint64_t seed = si * 1000 + 700 + static_cast<uint64_t>(r) + (large ? 50 : 0);
        Walk w = random_walk(*tok, *c, seed, 3 + 4 * r, 0.0);
        if (!w.finished) {
          ++unfinished;
          EXPECT_TRUE(json_prefix(w.output))
              << "not a JSON prefix: schema " << si << ": " << w.output;
        }
      }
    }
  }
  // Sampler + constraint: random logits each step, the constraint bans, the sampler draws.
  for (size_t si : {0u, 1u, 4u, 6u, 8u, 12u}) {
    const nlohmann::ordered_json schema = nlohmann::ordered_json::parse(schemas()[si]);
    auto factory = make_json_constraint_factory(*small_, schema);
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      SamplingParams p;
      p.temperature = 1.0f;
      p.top_k = 40;
      p.top_p = 0.95f;
      p.min_p = 0.0f;
      p.seed = seed;
      Sampler sampler(p, small_->n_vocab());
      Rng rng(seed * 77 + si);
      auto c = factory();
      std::string out;
      bool done = false;
      for (int step = 0; step < 300 && !done; ++step) {
        std::vector<float> logits(static_cast<size_t>(small_->n_vocab()));
        for (float& x : logits) x = static_cast<float>(rng.next_double() * 6.0 - 3.0);
        // Closing bytes a little likelier, as a trained model makes them, so that values end.
        for (const char* closer : {"\"", "}", "]", ","}) {
          const int32_t id = small_->byte_token(static_cast<uint8_t>(closer[0]));
          if (id >= 0) logits[static_cast<size_t>(id)] += 2.0f;
        }
        c->apply(logits);
        const int32_t id = sampler.sample(logits);
        ASSERT_NE(logits[static_cast<size_t>(id)], kNegInf) << "the sampler drew a banned token";
        if (small_->is_eog(id)) {
          EXPECT_TRUE(c->complete());
          done = true;
          break;
        }
        c->accept(id);
        sampler.accept(id);
        out += small_->token_bytes(id);
        done = c->finished();
      }
      if (done) {
        cases.push_back({schema, out, "sampler schema " + std::to_string(si) + ": " + out});
      } else {
        EXPECT_TRUE(json_prefix(out)) << out;
      }
    }
  }
  // json_object.
  for (const Tokenizer* tok : {small_.get(), large_.get()}) {
    auto factory = make_json_constraint_factory(*tok, json(nullptr));
    for (uint64_t seed = 0; seed < 4; ++seed) {
      auto c = factory();
      Walk w = random_walk(*tok, *c, 9000 + seed, 160, 0.3);
      if (w.finished) {
        EXPECT_EQ(w.output.find_first_not_of(' '), w.output.find('{')) << w.output;
        cases.push_back({json(nullptr), w.output, "json_object: " + w.output});
      } else {
        EXPECT_TRUE(json_prefix(w.output)) << w.output;
      }
    }
  }
  ASSERT_GT(cases.size(), 100u);
  EXPECT_GT(unfinished, 50);
  for (const Case& c : cases) {
    try {
      const json parsed = json::parse(c.output);
      EXPECT_FALSE(parsed.is_discarded());
    } catch (const json::exception& e) {
      ADD_FAILURE() << "nlohmann cannot parse " << c.label << ": " << e.what();
    }
  }
  std::string skip;
  const std::vector<json> results = validate_with_ajv(cases, skip);
  if (!skip.empty()) GTEST_SKIP() << "ajv validation skipped: " << skip;
  ASSERT_EQ(results.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_TRUE(results[i]["parsed"].get<bool>()) << cases[i].label << " " << results[i]["error"];
    EXPECT_TRUE(results[i]["valid"].get<bool>()) << cases[i].label << " " << results[i]["error"];
  }
  std::printf("%zu outputs validated by ajv, %d unfinished walks checked as JSON prefixes\n",
              cases.size(), unfinished);
}

// The validator must be able to say no: outputs that break the schemas fail under ajv.
TEST(JsonConstraint, ValidatorRejectsWrongOutputs) {
  std::vector<Case> cases = {
      {json::parse(schemas()[0]), R"({"name":"a","age":151})", "age above maximum"},
      {json::parse(schemas()[0]), R"({"name":"a"})", "missing required"},
      {json::parse(schemas()[5]), R"(["ab"])", "too few items"},
      {json(nullptr), R"([1])", "json_object gets an array"},
      {json::parse(schemas()[0]), R"({"name":"a","age":1)", "unterminated"},
  };
  std::string skip;
  const std::vector<json> results = validate_with_ajv(cases, skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  ASSERT_EQ(results.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_FALSE(results[i]["valid"].get<bool>()) << cases[i].label;
  }
}

void expect_invalid(const std::string& schema, const std::string& needle) {
  try {
    (void)check_json_prefix(json::parse(schema), "");
    ADD_FAILURE() << "accepted: " << schema;
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << needle;
  }
}

TEST(JsonConstraint, UnsupportedAndInvalidSchemasNameThePath) {
  expect_invalid(R"({"type":"object","properties":{"age":{"type":"decimal"}}})",
                 "schema.properties.age.type: 'decimal' is not a JSON Schema type");
  expect_invalid(
      R"({"type":"object","properties":{"code":{"type":"string","pattern":"^[A-Z]+$"}}})",
      "schema.properties.code.pattern");
  expect_invalid(R"({"type":"string","format":"date-time"})", "schema.format");
  expect_invalid(R"({"not":{"type":"string"}})", "schema.not: the keyword 'not' is not supported");
  expect_invalid(R"({"type":"array","items":{"type":"integer","multipleOf":3}})",
                 "schema.items.multipleOf");
  expect_invalid(R"({"$ref":"#/$defs/missing"})", "schema.$ref: '#/$defs/missing' does not exist");
  expect_invalid(R"({"$ref":"http://example.com/s.json"})", "schema.$ref");
  expect_invalid(R"({"type":"string","minLength":5,"maxLength":2})",
                 "minLength 5 is above maxLength 2");
  expect_invalid(R"({"type":"string","minLength":-1})",
                 "schema.minLength: expected a non-negative integer");
  expect_invalid(R"({"type":"integer","minimum":3,"maximum":2})",
                 "no integer lies within the bounds");
  expect_invalid(R"({"type":"integer","minimum":0.2,"maximum":0.8})",
                 "no integer lies within the bounds");
  expect_invalid(R"({"enum":[]})", "schema.enum: expected a non-empty array");
  expect_invalid(R"({"type":"string","enum":[1,2]})", "no value of enum/const satisfies");
  expect_invalid(R"({"oneOf":[{"type":"number"},{"type":"integer"}]})",
                 "schema.oneOf: alternatives 0 and 1 may both match");
  expect_invalid(R"({"type":"array","prefixItems":[{"type":"string"}],"items":false,"minItems":2})",
                 "minItems 2 is above the most items allowed (1)");
  expect_invalid(
      R"({"type":"object","properties":{"a":{"type":"string"}},"required":["b"],"additionalProperties":false})",
      "schema.required.0: 'b' is required but is not in properties");
  expect_invalid(
      R"({"$defs":{"n":{"type":"object","properties":{"next":{"$ref":"#/$defs/n"}},"required":["next"]}},"$ref":"#/$defs/n"})",
      "no finite JSON value satisfies it");
  expect_invalid(
      R"({"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/a"},{"type":"null"}]}},"$ref":"#/$defs/a"})",
      "contains itself");
  expect_invalid(R"({"allOf":[{"type":"string"},{"maxLength":3}]})",
                 "schema.allOf: only an allOf of exactly one");
  expect_invalid(R"({"type":"object","properties":{"a":false}})",
                 "schema.properties.a: the schema false");
  expect_invalid(R"({"type":"object","anyOf":[{"required":["a"]}]})",
                 "schema.type: 'type' beside 'anyOf'");
  expect_invalid(R"(["string"])", "schema: a schema must be an object or a boolean");
  std::string deep = R"({"type":"string"})";
  for (int i = 0; i < 2000; ++i) deep = R"({"type":"array","items":)" + deep + "}";
  expect_invalid(deep, "nested more than 128 levels deep");
  json wide = {{"anyOf", json::array()}};
  for (int i = 0; i < 10; ++i) {
    json inner = {{"anyOf", json::array()}};
    for (int k = 0; k < 10; ++k) inner["anyOf"].push_back({{"const", i * 10 + k}});
    wide["anyOf"].push_back(inner);
  }
  expect_invalid(wide.dump(), "more than 64 alternatives");
  json many = {{"type", "object"}, {"properties", json::object()}};
  for (int i = 0; i < 200; ++i) {
    many["properties"][std::to_string(i) + std::string(1000, 'k')] = {{"type", "null"}};
  }
  expect_invalid(many.dump(), "tables of allowed property names would exceed 4 MiB");
  many["required"] = json::array();
  for (const auto& [name, sub] : many["properties"].items()) many["required"].push_back(name);
  EXPECT_NO_THROW((void)check_json_prefix(many, "{"));  // all required: one key per start
}

JsonPrefixCheck check(const std::string& schema, const std::string& text) {
  return check_json_prefix(schema == "null" ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json::parse(schema),
                           text);
}

void expect_complete(const std::string& schema, const std::string& text) {
  JsonPrefixCheck r = check(schema, text);
  EXPECT_TRUE(r.valid_prefix && r.complete)
      << schema << " should accept " << text << " (accepted " << r.accepted << " bytes)";
}
void expect_prefix(const std::string& schema, const std::string& text) {
  JsonPrefixCheck r = check(schema, text);
  EXPECT_TRUE(r.valid_prefix && !r.complete)
      << schema << " should see an incomplete prefix in " << text << " (accepted " << r.accepted
      << " bytes, complete " << r.complete << ")";
}
void expect_refused(const std::string& schema, const std::string& text, size_t at) {
  JsonPrefixCheck r = check(schema, text);
  EXPECT_FALSE(r.valid_prefix) << schema << " should refuse " << text;
  EXPECT_EQ(r.accepted, at) << schema << " on " << text;
}

TEST(JsonConstraint, WhitespaceIsBounded) {
  expect_complete("null", R"({"a": 1, "b": [1, 2]})");
  expect_complete("null", R"( {"a":1})");
  expect_refused("null", R"(  {"a":1})", 1);
  expect_refused("null", R"({ "a":1})", 1);
  expect_refused("null", R"({"a" :1})", 4);
  expect_refused("null", R"({"a":  1})", 6);
  expect_refused("null", "{\"a\":\n1}", 5);
  expect_refused("null", R"({"a":1} )", 7);
  expect_refused("null", R"([1])", 0);  // json_object: the top level is an object
}

// Nesting stops at a limit, where what is open can still be completed.
TEST(JsonConstraint, NestingIsBoundedAndStaysCompletable) {
  std::string deep;
  for (int i = 0; i < 300; ++i) deep += R"({"a":)";
  const JsonPrefixCheck r = check("null", deep);
  ASSERT_FALSE(r.valid_prefix);
  EXPECT_GT(r.accepted, 100u * 5);
  const size_t levels = r.accepted / 5;
  std::string closed = deep.substr(0, levels * 5) + "\"x\"" + std::string(levels, '}');
  expect_complete("null", closed);
  std::string arrays = "[" + std::string(200, '[');
  const JsonPrefixCheck a = check(R"({"type":"array"})", arrays);
  ASSERT_FALSE(a.valid_prefix);
  expect_complete(R"({"type":"array"})", arrays.substr(0, a.accepted) + "1" +
                                              std::string(a.accepted, ']'));
}

TEST(JsonConstraint, StringsEscapesAndUtf8) {
  const std::string s = R"({"type":"string"})";
  expect_complete(s, "\"caf\xC3\xA9 \xE6\x97\xA5 \xF0\x9F\x98\x80\"");
  expect_prefix(s, "\"caf\xC3");      // a character split across tokens
  expect_refused(s, "\"a\x01\"", 2);  // raw control character
  expect_refused(s, "\"a\nb\"", 2);
  expect_complete(s, R"("tab\t quote\" back\\ slash\/ \u00e9 \uD83D\uDE00")");
  expect_refused(s, R"("\x")", 2);
  expect_refused(s, R"("\uDC00")", 4);   // lone low surrogate
  expect_refused(s, R"("\uD800x")", 7);  // high surrogate not followed by a low one
  expect_refused(s, R"("\uD800\u0041")", 10);
  expect_refused(s, "\"\xC0\x80\"", 1);          // overlong
  expect_refused(s, "\"\xE0\x80\x80\"", 2);      // overlong three-byte form
  expect_refused(s, "\"\xED\xA0\x80\"", 2);      // UTF-16 surrogate in UTF-8
  expect_refused(s, "\"\xF4\x90\x80\x80\"", 2);  // above U+10FFFF
  expect_refused(s, "\"\xC3\"", 2);              // truncated character
  // Lengths count code points; an escape is one, a surrogate pair one.
  const std::string len = R"({"type":"string","minLength":2,"maxLength":3})";
  expect_complete(len, "\"\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\"");
  expect_refused(len, "\"\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE8", 10);
  expect_complete(len, R"("\uD83D\uDE00\n")");
  expect_refused(len, R"("a")", 2);
}

TEST(JsonConstraint, NumbersAreBounded) {
  const std::string n = R"({"type":"number"})";
  expect_complete(n, "-0");
  expect_complete(n, "12.5");
  expect_prefix(n, "12.");
  expect_prefix(n, "-");
  expect_refused(n, "01", 1);
  expect_refused(n, "1e5", 1);  // no exponents: bounded and always finite
  expect_refused(n, "+1", 0);
  expect_complete(n, "123456789012345");
  expect_refused(n, "1234567890123456", 15);
  expect_refused(R"({"type":"integer"})", "1.5", 1);
  const std::string e = R"({"type":"integer","exclusiveMinimum":10,"maximum":12})";
  expect_prefix(e, "1");
  expect_refused(e, "10", 1);
  expect_complete(e, "11");
  expect_complete(e, "12");
  expect_refused(e, "13", 1);
  expect_refused(e, "2", 0);
  expect_refused(e, "-", 0);
  const std::string b = R"({"type":"number","minimum":-1.5,"exclusiveMaximum":2.25})";
  expect_complete(b, "-1.5");
  expect_refused(b, "-1.6", 3);
  expect_refused(b, "-2", 1);
  expect_complete(b, "2.2499");
  expect_refused(b, "2.25", 3);  // 2.25 is excluded and every longer completion is above it
  expect_complete(b, "0.1");
}

TEST(JsonConstraint, ObjectsEmitDeclaredPropertiesInOrder) {
  // Properties in the order "properties" lists them (not sorted, not the order of "required");
  // optional ones may be skipped, required ones may not.
  const std::string order =
      R"({"type":"object","properties":{"reasoning":{"type":"string"},"answer":{"type":"integer"},"note":{"type":"string"}},"required":["answer","reasoning"]})";
  expect_complete(order, R"({"reasoning":"x","answer":1})");
  expect_complete(order, R"({"reasoning":"x","answer":1,"note":""})");
  expect_refused(order, R"({"answer":1)", 2);
  expect_refused(order, R"({"reasoning":"x","note")", 18);
  const std::string s = schemas()[15];  // a, b, c, d; only c required
  expect_complete(s, R"({"c":true})");
  expect_complete(s, R"({"a":1,"b":"xy","c":false,"d":null})");
  expect_complete(s, R"({"b":"x", "c":true})");
  expect_refused(s, R"({"c":true,"b":"x"})", 11);
  expect_refused(s, R"({"b":"x","a":1})", 10);
  expect_refused(s, R"({})", 1);
  expect_refused(s, R"({"a":1})", 6);
  expect_refused(s, R"({"e":1})", 2);
  expect_refused(s, R"({"b":"abcd")", 9);
}

TEST(JsonConstraint, ArraysEnumsAnyOfAndRefs) {
  const std::string arr = schemas()[5];
  expect_complete(arr, R"(["ab","cd"])");
  expect_complete(arr, R"(["ab", "cd", "ef"])");
  expect_refused(arr, R"(["ab"])", 5);
  expect_refused(arr, R"([])", 1);
  expect_refused(arr, R"(["ab","cd","ef","gh","ij",)", 25);
  const std::string en = schemas()[2];
  expect_complete(en, R"({"color":{"x":[1,2]},"size":"M"})");
  expect_complete(en, R"({"color":42,"size":"S"})");
  expect_refused(en, R"({"color":43)", 10);
  expect_refused(en, R"({"color":null,"size":3)", 21);  // 3 is not a string
  const std::string any = schemas()[3];
  expect_complete(any, R"("abc")");
  expect_complete(any, "-20");
  expect_refused(any, "-21", 2);
  expect_complete(any, "[1.5, -2]");
  const std::string tree = schemas()[4];
  expect_complete(tree, R"({"value":1,"children":[{"value":2,"children":[]}]})");
  expect_refused(tree, R"({"value":1,"children":[{"children")", 25);
  const std::string tuple = schemas()[9];
  expect_complete(tuple, R"(["a",1])");
  expect_complete(tuple, R"(["a",1,true])");
  expect_refused(tuple, R"(["a",1,true,)", 11);
  expect_refused(tuple, R"(["a"])", 4);
  const std::string shapes = schemas()[8];
  expect_complete(shapes, R"({"shapes":[{"kind":"circle","r":0.5},{"kind":"square","side":2}]})");
  expect_refused(shapes, R"({"shapes":[{"kind":"square","side":0)", 35);
}

// The trie walk (and its shortcut for plain text inside strings) bans exactly the tokens whose
// bytes the automaton refuses when fed the output plus the token byte by byte.
TEST_F(JsonConstraintVocab, MaskEqualsTheByteLevelAutomaton) {
  const std::vector<std::pair<size_t, std::string>> states = {
      {0, ""},
      {0, R"({"name":"x","age":1)"},
      {0, R"({"name":"Jo)"},
      {1, R"({"user":{"id":3,"tags":["abcdef)"},
      {5, R"(["ab", "c)"},
      {6, R"({"i":1,"n":2,"b":-1.)"},
      {12, "\"h\xC3"},
      {7, R"({"note":"a\u00)"},
      {16, "\"\xE6\x97\xA5\xE6\x9C\xAC"},
      {10, R"({"k": [1, {"x": "free text )"},
      {4, R"({"value":1,"children":[{"value":-)"},
  };
  for (const Tokenizer* tok : {small_.get(), large_.get()}) {
    for (const auto& [si, prefix] : states) {
      const nlohmann::ordered_json schema = nlohmann::ordered_json::parse(schemas()[si]);
      SCOPED_TRACE("schema " + std::to_string(si) + " after " + prefix);
      auto c = make_json_constraint_factory(*tok, schema)();
      for (int32_t id : tok->encode_continuation(prefix)) c->accept(id);
      std::vector<float> logits(static_cast<size_t>(tok->n_vocab()), 0.0f);
      c->apply(logits);
      std::vector<std::string> texts;
      std::vector<int32_t> ids;
      for (int32_t id = 0; id < tok->n_vocab(); ++id) {
        if (tok->is_control(id) || tok->is_eog(id) || tok->token_type(id) == TokenType::Unknown ||
            tok->token_type(id) == TokenType::Unused ||
            tok->token_type(id) == TokenType::UserDefined || tok->token_bytes(id).empty()) {
          EXPECT_EQ(logits[static_cast<size_t>(id)] == kNegInf, !tok->is_eog(id) || !c->complete())
              << id;
          continue;
        }
        ids.push_back(id);
        texts.push_back(prefix + tok->token_bytes(id));
      }
      const std::vector<JsonPrefixCheck> checks = check_json_prefixes(schema, texts);
      size_t allowed = 0;
      for (size_t k = 0; k < ids.size(); ++k) {
        const bool banned = logits[static_cast<size_t>(ids[k])] == kNegInf;
        allowed += !banned;
        EXPECT_EQ(banned, !checks[k].valid_prefix)
            << "schema " << si << " after " << prefix << " token " << ids[k] << " '"
            << tok->token_bytes(ids[k]) << "'";
      }
      EXPECT_GT(allowed, 0u) << prefix;
    }
  }
}

// Tokens: control tokens never, end-of-generation only when complete, and nothing but
// end-of-generation after the value closed.
TEST_F(JsonConstraintVocab, MasksFollowTheContract) {
  auto factory = make_json_constraint_factory(*large_, json::parse(R"({"type":"integer"})"));
  auto c = factory();
  std::vector<float> logits(static_cast<size_t>(large_->n_vocab()), 0.0f);
  c->apply(logits);
  EXPECT_FALSE(c->complete());
  for (int32_t id = 0; id < large_->n_vocab(); ++id) {
    if (large_->is_control(id) || large_->is_eog(id)) {
      EXPECT_EQ(logits[static_cast<size_t>(id)], kNegInf) << id;
    }
  }
  const int32_t seven = large_->byte_token('7');
  ASSERT_GE(seven, 0);
  EXPECT_NE(logits[static_cast<size_t>(seven)], kNegInf);
  const int32_t quote = large_->byte_token('"');
  EXPECT_EQ(logits[static_cast<size_t>(quote)], kNegInf);
  c->accept(seven);
  EXPECT_TRUE(c->complete());
  EXPECT_FALSE(c->finished());  // "7" may become "78"
  std::fill(logits.begin(), logits.end(), 0.0f);
  c->apply(logits);
  EXPECT_NE(logits[static_cast<size_t>(large_->eos())], kNegInf);
  EXPECT_THROW(c->accept(quote), InvalidArgument);
  EXPECT_TRUE(c->complete());  // a refused token leaves the state as it was

  auto obj = make_json_constraint_factory(*large_, json(nullptr))();
  for (unsigned char ch : std::string("{}")) obj->accept(large_->byte_token(ch));
  EXPECT_TRUE(obj->finished());
  std::fill(logits.begin(), logits.end(), 0.0f);
  obj->apply(logits);
  for (int32_t id = 0; id < large_->n_vocab(); ++id) {
    EXPECT_EQ(logits[static_cast<size_t>(id)] != kNegInf, large_->is_eog(id)) << id;
  }
}

}  // namespace
}  // namespace sq
