// The cost of structured output per generated token: JsonConstraint::apply() over a real
// 32,000-token SentencePiece vocabulary (llama-2-tiny-random.gguf from the shared folder) in the
// states that matter. Inside a string nearly every token is allowed, so the trie walk visits most
// of the vocabulary: that is the worst case. At a key or a value start most subtrees are cut at
// their first byte.
//
//   build/<dir>/squeeze_bench --benchmark_filter=JsonConstraint
//
// The shared folder is $SQUEEZE_SHARED, else ../shared, else /work/shared.
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include "engine/json_constraint.h"
#include "engine/vocab_loader.h"
#include "model/gguf.h"
#include "tokenizer/tokenizer.h"

namespace {

const sq::Tokenizer* vocab() {
  static std::unique_ptr<sq::Tokenizer> tok = [] {
    std::vector<std::string> dirs;
    if (const char* env = std::getenv("SQUEEZE_SHARED"); env != nullptr && *env != '\0') {
      dirs.emplace_back(env);
    }
    dirs.emplace_back("../shared");
    dirs.emplace_back("/work/shared");
    for (const std::string& d : dirs) {
      const std::string p = d + "/models/extras/llama-2-tiny-random.gguf";
      if (std::filesystem::exists(p)) {
        sq::GgufFile file = sq::GgufFile::open(p);
        return sq::load_tokenizer(file);
      }
    }
    return std::unique_ptr<sq::Tokenizer>();
  }();
  return tok.get();
}

const char* kSchema = R"({"type":"object","properties":{
  "name":{"type":"string"},
  "age":{"type":"integer","minimum":0,"maximum":150},
  "tags":{"type":"array","items":{"type":"string","maxLength":16},"maxItems":8},
  "address":{"type":"object","properties":{"city":{"type":"string"},"zip":{"type":["string","null"]}},
             "required":["city","zip"]}},
  "required":["name","age","tags","address"]})";

// Runs apply() in the state reached after `prefix` (tokenised as a continuation).
void run(benchmark::State& state, const nlohmann::json& schema, const std::string& prefix) {
  const sq::Tokenizer* tok = vocab();
  if (tok == nullptr) {
    state.SkipWithError("needs models/extras/llama-2-tiny-random.gguf (set SQUEEZE_SHARED)");
    return;
  }
  auto factory = sq::make_json_constraint_factory(*tok, schema);
  auto c = factory();
  for (int32_t id : tok->encode_continuation(prefix)) c->accept(id);
  std::vector<float> logits(static_cast<size_t>(tok->n_vocab()), 0.0f);
  size_t allowed = 0;
  for (auto _ : state) {
    std::fill(logits.begin(), logits.end(), 0.0f);
    c->apply(logits);
    benchmark::DoNotOptimize(logits.data());
  }
  for (float x : logits) allowed += x == 0.0f;
  state.counters["allowed"] = static_cast<double>(allowed);
  state.counters["vocab"] = tok->n_vocab();
}

void BM_JsonConstraintStart(benchmark::State& state) {
  run(state, nlohmann::json::parse(kSchema), "");
}
void BM_JsonConstraintInString(benchmark::State& state) {
  run(state, nlohmann::json::parse(kSchema),
      R"({"name":"Ada","age":36,"tags":[],"address":{"city":"San Fr)");
}
void BM_JsonConstraintKey(benchmark::State& state) {
  run(state, nlohmann::json::parse(kSchema), R"({"name":"Ada",)");
}
void BM_JsonConstraintInteger(benchmark::State& state) {
  run(state, nlohmann::json::parse(kSchema), R"({"name":"Ada","age":1)");
}
void BM_JsonConstraintAnyValue(benchmark::State& state) {
  run(state, nlohmann::json(nullptr), R"({"a":)");
}
void BM_JsonConstraintAnyString(benchmark::State& state) {
  run(state, nlohmann::json(nullptr), R"({"a":[1,{"b":"some text)");
}
void BM_JsonConstraintFactory(benchmark::State& state) {
  const sq::Tokenizer* tok = vocab();
  if (tok == nullptr) {
    state.SkipWithError("needs models/extras/llama-2-tiny-random.gguf (set SQUEEZE_SHARED)");
    return;
  }
  const nlohmann::json schema = nlohmann::json::parse(kSchema);
  for (auto _ : state) {
    auto factory = sq::make_json_constraint_factory(*tok, schema);
    benchmark::DoNotOptimize(factory);
  }
}
void BM_JsonConstraintNewChoice(benchmark::State& state) {
  const sq::Tokenizer* tok = vocab();
  if (tok == nullptr) {
    state.SkipWithError("needs models/extras/llama-2-tiny-random.gguf (set SQUEEZE_SHARED)");
    return;
  }
  auto factory = sq::make_json_constraint_factory(*tok, nlohmann::json::parse(kSchema));
  for (auto _ : state) {
    auto c = factory();
    benchmark::DoNotOptimize(c);
  }
}

BENCHMARK(BM_JsonConstraintStart)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_JsonConstraintInString)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_JsonConstraintKey)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_JsonConstraintInteger)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_JsonConstraintAnyValue)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_JsonConstraintAnyString)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_JsonConstraintFactory)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_JsonConstraintNewChoice)->Unit(benchmark::kMicrosecond);

}  // namespace
