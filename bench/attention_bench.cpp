// Attention of one generated token over an F16 KV cache (ops::attention with the kernels the CPU
// or SQUEEZE_ISA selects), the step between the q/k/v and the output products of every layer:
//   AttentionDecode/<model>/<positions>/<threads>
// with the head shapes of Qwen2.5-0.5B (14 query heads over 2 key/value heads of 64) and
// TinyLlama-1.1B (32 over 4, of 64). The cache holds the positions' rows, random; the query is the
// last position's. Time per call; items_per_second counts (head, position) pairs.
//
//   build/lead/squeeze_bench --benchmark_filter=AttentionDecode --benchmark_repetitions=5
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "base/fp16.h"
#include "base/thread_pool.h"
#include "ops/ops.h"

namespace {

struct HeadShape {
  const char* name;
  sq::ops::AttentionShape shape;
};

constexpr HeadShape kShapes[] = {
    {"qwen05", {14, 2, 64}},
    {"tinyllama", {32, 4, 64}},
};

void attention_decode(benchmark::State& state, sq::ops::AttentionShape s, int32_t positions, int threads) {
  const int64_t kv_dim = static_cast<int64_t>(s.n_head_kv) * s.head_dim;
  const int64_t q_dim = static_cast<int64_t>(s.n_head) * s.head_dim;
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<uint16_t> k(static_cast<size_t>(positions * kv_dim)), v(k.size());
  for (auto& h : k) h = sq::f32_to_fp16(g(rng));
  for (auto& h : v) h = sq::f32_to_fp16(g(rng));
  std::vector<float> q(static_cast<size_t>(q_dim)), out(q.size());
  for (auto& x : q) x = g(rng);
  sq::ops::KvRows rows;
  rows.k = reinterpret_cast<const uint8_t*>(k.data());
  rows.v = reinterpret_cast<const uint8_t*>(v.data());
  rows.type = sq::ops::KvType::F16;
  rows.row_bytes = static_cast<size_t>(kv_dim) * sizeof(uint16_t);
  sq::ThreadPool pool(threads);
  for (auto _ : state) {
    sq::ops::attention(q.data(), rows, 1, positions - 1, s, out.data(), pool);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * s.n_head * positions);
}

[[maybe_unused]] const bool registered = [] {
  for (const HeadShape& h : kShapes) {
    for (int32_t positions : {128, 512, 2048}) {
      for (int threads : {1, 2}) {
        const std::string name = std::string("AttentionDecode/") + h.name + "/" +
                                 std::to_string(positions) + "/" + std::to_string(threads);
        benchmark::RegisterBenchmark(name.c_str(), attention_decode, h.shape, positions, threads)
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
      }
    }
  }
  return true;
}();

}  // namespace
