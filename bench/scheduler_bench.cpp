// Aggregate generation throughput of the continuous-batching scheduler with 1, 4, 8 and 16
// concurrent streams: each iteration submits that many greedy requests (a 16-token prompt each,
// 64 generated tokens, end-of-generation ignored) and waits for all of them. Batching reads the
// weights once per step for every stream, so the aggregate tokens/s should grow with the streams
// until the matrix products stop being limited by memory bandwidth.
//
//   squeeze synth --preset qwen2.5-0.5b --type Q4_0 -o /tmp/q.gguf
//   export SQUEEZE_BENCH_MODEL=/tmp/q.gguf SQUEEZE_BENCH_THREADS=2
//   build/release/squeeze_bench --benchmark_filter=SchedulerStreams --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true
//
// tok_s is generated tokens per second of wall time, prompts included (they are short).
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "engine/engine.h"
#include "serve/scheduler.h"

namespace {

constexpr int32_t kPrompt = 16;
constexpr int32_t kGenerate = 64;

const sq::Engine* bench_engine() {
  static std::unique_ptr<sq::Engine> engine = []() -> std::unique_ptr<sq::Engine> {
    const char* env = std::getenv("SQUEEZE_BENCH_MODEL");
    const std::string path = env != nullptr ? env : "/tmp/q.gguf";
    if (!std::filesystem::exists(path)) return nullptr;
    return sq::Engine::load({path, ""});
  }();
  return engine.get();
}

void SchedulerStreams(benchmark::State& state) {
  const sq::Engine* engine = bench_engine();
  if (engine == nullptr) {
    state.SkipWithError("no model: set SQUEEZE_BENCH_MODEL (see the comment at the top)");
    return;
  }
  const auto streams = static_cast<int32_t>(state.range(0));
  sq::serve::SchedulerOptions options;
  options.n_ctx = 512;
  options.parallel = streams;
  options.queue_size = streams;
  const char* threads = std::getenv("SQUEEZE_BENCH_THREADS");
  options.n_threads = threads != nullptr ? std::atoi(threads) : 0;
  sq::serve::Scheduler scheduler(*engine, options);
  const int32_t n_vocab = engine->model().config.n_vocab;

  int64_t generated = 0;
  uint64_t round = 0;
  for (auto _ : state) {
    std::vector<std::shared_ptr<sq::serve::RequestHandle>> handles;
    for (int32_t s = 0; s < streams; ++s) {
      sq::serve::GenerateRequest r;
      // Different prompts in every round and stream: no prefix is shared.
      for (int32_t t = 0; t < kPrompt; ++t) {
        r.prompt.push_back(static_cast<int32_t>((round * 7919 + static_cast<uint64_t>(s) * 104729 +
                                                 static_cast<uint64_t>(t) * 31) %
                                                static_cast<uint64_t>(n_vocab)));
      }
      r.max_tokens = kGenerate;
      r.stop_at_eog = false;
      r.sampling.temperature = 0;
      handles.push_back(scheduler.submit(std::move(r)));
    }
    ++round;
    for (auto& h : handles) {
      sq::serve::Event e;
      while (h->next(e, std::chrono::seconds(600))) {
        if (e.kind == sq::serve::Event::Kind::Done) {
          generated += e.usage.completion_tokens;
          break;
        }
        if (e.kind == sq::serve::Event::Kind::Error) {
          state.SkipWithError(e.message.c_str());
          return;
        }
      }
    }
  }
  state.counters["tok_s"] = benchmark::Counter(static_cast<double>(generated),
                                               benchmark::Counter::kIsRate);
  state.counters["streams"] = streams;
}

BENCHMARK(SchedulerStreams)->Arg(1)->Arg(4)->Arg(8)->Arg(16)->UseRealTime()->Unit(benchmark::kMillisecond)->Iterations(2);

}  // namespace
