// Token generation without the model around it: the one-token kernel streaming the weights of a
// whole stack of layers from memory, split over the pool's threads the way ops::matmul splits them,
// one parallel region per matrix. Two stacks: TinyLlama-1.1B's (22 x {q, k, v, o, gate, up, down},
// rows of 2 048 and 5 632 elements, about 1 GiB in Q8_0) and Qwen2.5-0.5B's (24 layers of rows of
// 896 and 4 864 elements, which end in a short group of blocks, and its 151 936-row output
// matrix, about 0.5 GiB). Beside it, the STREAM-like read of bench --membw on the same pool, so
// that the kernel's streaming rate can be read as a fraction of the machine's in the same run (this
// is how the one-token kernels were found to stream faster one row at a time than in row tiles):
//   StreamMatvec/<type>/<model>/<threads>  bytes_per_second = weight bytes streamed
//   StreamTile/<type>/<threads>            the tiled kernel against the 8 tokens of a server's step
//                                          of eight generating sequences (TinyLlama's stack);
//                                          "GOPS" counts 2 * weights * 8
//   StreamRead/<threads>                   the plain read loop over a 1 GiB buffer
//
//   build/simd/squeeze_bench --benchmark_filter='Stream' --benchmark_repetitions=3
#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

#include "base/membw.h"
#include "base/mmap.h"
#include "base/thread_pool.h"
#include "kernels/quant.h"
#include "kernels/types.h"

namespace {

using sq::GgmlType;

struct Matrix {
  int64_t rows = 0, cols = 0;
  size_t row_bytes = 0;
  uint8_t* data = nullptr;
  size_t bytes() const { return row_bytes * static_cast<size_t>(rows); }
};

// A model's matrices (rows x cols) in the order one generated token reads them.
struct Shapes {
  const char* name;
  std::vector<std::pair<int64_t, int64_t>> layer;  // one layer's
  int layers;
  std::pair<int64_t, int64_t> output;  // {0, 0}: left out
};

// q, k, v, o, gate, up, down: each its own region here, where the model runs q, k and v in one
// and gate and up in one (ops::matmul_group).
const Shapes kTinyLlama{"tinyllama",
                        {{2048, 2048}, {256, 2048}, {256, 2048}, {2048, 2048}, {5632, 2048}, {5632, 2048}, {2048, 5632}},
                        22,
                        {0, 0}};
const Shapes kQwen{"qwen05",
                   {{896, 896}, {128, 896}, {128, 896}, {896, 896}, {4864, 896}, {4864, 896}, {896, 4864}},
                   24,
                   {151936, 896}};

std::vector<std::pair<int64_t, int64_t>> all_matrices(const Shapes& s) {
  std::vector<std::pair<int64_t, int64_t>> all;
  for (int layer = 0; layer < s.layers; ++layer) all.insert(all.end(), s.layer.begin(), s.layer.end());
  if (s.output.first > 0) all.push_back(s.output);
  return all;
}

size_t stack_bytes(GgmlType t, const Shapes& s) {
  size_t total = 0;
  for (auto [rows, cols] : all_matrices(s)) total += sq::kernels::row_bytes(t, cols) * static_cast<size_t>(rows);
  return total;
}

// The matrices of s, laid out one after the other in arena.
std::vector<Matrix> layer_stack(GgmlType t, const Shapes& s, uint8_t* arena) {
  std::mt19937 rng(1);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<Matrix> stack;
  for (auto [rows, cols] : all_matrices(s)) {
    Matrix m;
    m.rows = rows;
    m.cols = cols;
    m.row_bytes = sq::kernels::row_bytes(t, cols);
    // A few distinct random rows, copied: quantizing a gigabyte row by row would take minutes,
    // and the kernel's speed does not depend on the values.
    constexpr int64_t kDistinct = 16;
    std::vector<uint8_t> distinct(m.row_bytes * kDistinct);
    std::vector<float> f(static_cast<size_t>(cols));
    for (int64_t r = 0; r < kDistinct; ++r) {
      for (auto& x : f) x = g(rng);
      sq::kernels::quantize_row(t, f.data(), distinct.data() + m.row_bytes * static_cast<size_t>(r), cols);
    }
    m.data = arena;
    arena += m.bytes();
    for (int64_t r = 0; r < rows; ++r) {
      std::copy_n(distinct.data() + m.row_bytes * static_cast<size_t>(r % kDistinct), m.row_bytes,
                  m.data + m.row_bytes * static_cast<size_t>(r));
    }
    stack.push_back(m);
  }
  return stack;
}

// The stack streamed against `tokens` tokens: one token runs the one-token kernel (dot_rows_q), more
// the tiled kernel (dot_tile_q), one parallel region per matrix.
void bm_stream(benchmark::State& state, GgmlType t, const Shapes* shapes, int64_t tokens) {
  const int threads = static_cast<int>(state.range(0));
  // One mapping with huge pages advised, as the repacked model's.
  const sq::AnonymousMemory arena(stack_bytes(t, *shapes));
  if (arena.data() == nullptr) {
    state.SkipWithError("cannot allocate the layer stack");
    return;
  }
  const auto stack = layer_stack(t, *shapes, arena.data());
  const GgmlType vt = sq::kernels::vec_dot_type(t);
  // The quantized activations of each row length, `tokens` rows of them.
  std::mt19937 rng(2);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::map<int64_t, std::vector<uint8_t>> acts;
  int64_t max_rows = 0;
  for (const Matrix& m : stack) {
    max_rows = std::max(max_rows, m.rows);
    std::vector<uint8_t>& x = acts[m.cols];
    if (!x.empty()) continue;
    const size_t xs = sq::kernels::row_bytes(vt, m.cols);
    x.resize(xs * static_cast<size_t>(tokens));
    std::vector<float> xf(static_cast<size_t>(m.cols));
    for (int64_t i = 0; i < tokens; ++i) {
      for (auto& v : xf) v = g(rng);
      sq::kernels::quantize_activation(vt, xf.data(), x.data() + xs * static_cast<size_t>(i), m.cols);
    }
  }
  // Each matrix's activations, looked up once rather than inside the timed loop.
  std::vector<const uint8_t*> act_of;
  for (const Matrix& m : stack) act_of.push_back(acts.at(m.cols).data());
  std::vector<float> out(static_cast<size_t>(max_rows * tokens));
  int64_t weights = 0;
  for (const Matrix& m : stack) weights += m.rows * m.cols;
  sq::ThreadPool pool(threads);
  for (auto _ : state) {
    for (size_t i = 0; i < stack.size(); ++i) {
      const Matrix& m = stack[i];
      const uint8_t* x = act_of[i];
      const size_t xs = sq::kernels::row_bytes(vt, m.cols);
      auto rows = [&](int64_t r0, int64_t r1) {
        const uint8_t* w = m.data + m.row_bytes * static_cast<size_t>(r0);
        if (tokens == 1) {
          sq::kernels::dot_rows_q(t, w, m.row_bytes, r1 - r0, x, m.cols, out.data() + r0);
        } else {
          sq::kernels::dot_tile_q(t, w, m.row_bytes, r1 - r0, x, xs, tokens, m.cols, out.data() + r0, m.rows);
        }
      };
      // As ops::matmul_group: a thread that runs out takes pieces of the other's rows, 64 KiB of
      // weights for one token and 128 KiB for a batch.
      const size_t piece = tokens == 1 ? 64 * 1024 : 128 * 1024;
      pool.parallel_for_balanced(m.rows, rows, 16,
                                 std::max<int64_t>(16, static_cast<int64_t>(piece / m.row_bytes) / 16 * 16));
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(stack_bytes(t, *shapes)));
  if (tokens > 1) {
    state.counters["GOPS"] = benchmark::Counter(
        2.0 * static_cast<double>(weights * tokens) * static_cast<double>(state.iterations()) / 1e9,
        benchmark::Counter::kIsRate);
  }
}

void bm_stream_read(benchmark::State& state) {
  sq::ThreadPool pool(static_cast<int>(state.range(0)));
  sq::MemBwOptions o;
  o.passes = 1;
  double gbps = 0;
  int64_t n = 0;
  for (auto _ : state) {
    const auto r = sq::measure_memory_bandwidth(pool, o);
    state.SetIterationTime(static_cast<double>(r.buffer_bytes) / (r.read_gbps * 1e9));
    gbps += r.read_gbps;
    ++n;
  }
  state.counters["GBps"] = gbps / static_cast<double>(std::max<int64_t>(1, n));
}

int register_all() {
  // Qwen's rows (896 elements) are not a multiple of Q4_K's 256: its Q4_K_M files hold Q5_0 and
  // Q8_0 there.
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q8_0_X16, GgmlType::Q4_0_X16, GgmlType::Q4_K}) {
    for (const Shapes* s : {&kTinyLlama, &kQwen}) {
      if (t == GgmlType::Q4_K && s == &kQwen) continue;
      benchmark::RegisterBenchmark(("StreamMatvec/" + sq::type_name(t) + "/" + s->name).c_str(), bm_stream, t, s,
                                   int64_t{1})
          ->Arg(1)
          ->Arg(2)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  for (GgmlType t : {GgmlType::Q4_0_X16, GgmlType::Q8_0_X16, GgmlType::Q6_K}) {
    benchmark::RegisterBenchmark(("StreamTile/" + sq::type_name(t)).c_str(), bm_stream, t, &kTinyLlama, int64_t{8})
        ->Arg(1)
        ->Arg(2)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RegisterBenchmark("StreamRead", bm_stream_read)->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);
  return 0;
}

[[maybe_unused]] const int kRegistered = register_all();

}  // namespace
