// Token generation without the model around it: the one-token kernel streaming the weights of a
// whole TinyLlama-1.1B-shaped stack of layers (22 x {q, k, v, o, gate, up, down}, about 1 GiB in
// Q8_0) from memory, split over the pool's threads the way ops::matmul splits them, one parallel
// region per matrix. Beside it, the STREAM-like read of bench --membw on the same pool, so that
// the kernel's streaming rate can be read as a fraction of the machine's in the same run (this is
// how the one-token kernels were found to stream faster one row at a time than in row tiles):
//   StreamMatvec/<type>/<threads>   bytes_per_second = weight bytes streamed
//   StreamTile/<type>/<threads>     the tiled kernel against the 8 tokens of a server's step of
//                                   eight generating sequences; "GOPS" counts 2 * weights * 8
//   StreamRead/<threads>            the plain read loop over a 1 GiB buffer
//
//   build/simd/squeeze_bench --benchmark_filter='Stream' --benchmark_repetitions=3
#include <algorithm>
#include <cstdint>
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

// One TinyLlama-1.1B layer's shapes (rows x cols).
constexpr std::pair<int64_t, int64_t> kShapes[] = {{2048, 2048}, {256, 2048}, {256, 2048}, {2048, 2048},
                                                   {5632, 2048}, {5632, 2048}, {2048, 5632}};
constexpr int kLayers = 22;

size_t stack_bytes(GgmlType t) {
  size_t total = 0;
  for (auto [rows, cols] : kShapes) total += sq::kernels::row_bytes(t, cols) * static_cast<size_t>(rows);
  return total * kLayers;
}

// kLayers layers of kShapes, laid out one after the other in arena.
std::vector<Matrix> layer_stack(GgmlType t, uint8_t* arena) {
  std::mt19937 rng(1);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<Matrix> stack;
  for (int layer = 0; layer < kLayers; ++layer) {
    for (auto [rows, cols] : kShapes) {
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
  }
  return stack;
}

// The stack streamed against `tokens` tokens: one token runs the one-token kernel (dot_rows_q), more
// the tiled kernel (dot_tile_q), one parallel region per matrix.
void bm_stream(benchmark::State& state, GgmlType t, int64_t tokens) {
  const int threads = static_cast<int>(state.range(0));
  // One mapping with huge pages advised, as the repacked model's.
  const sq::AnonymousMemory arena(stack_bytes(t));
  if (arena.data() == nullptr) {
    state.SkipWithError("cannot allocate the layer stack");
    return;
  }
  const auto stack = layer_stack(t, arena.data());
  const GgmlType vt = sq::kernels::vec_dot_type(t);
  std::mt19937 rng(2);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> xf(5632);
  const size_t s2048 = sq::kernels::row_bytes(vt, 2048), s5632 = sq::kernels::row_bytes(vt, 5632);
  std::vector<uint8_t> x2048(s2048 * static_cast<size_t>(tokens)), x5632(s5632 * static_cast<size_t>(tokens));
  for (int64_t i = 0; i < tokens; ++i) {
    for (auto& v : xf) v = g(rng);
    sq::kernels::quantize_activation(vt, xf.data(), x2048.data() + s2048 * static_cast<size_t>(i), 2048);
    sq::kernels::quantize_activation(vt, xf.data(), x5632.data() + s5632 * static_cast<size_t>(i), 5632);
  }
  std::vector<float> out(static_cast<size_t>(5632 * tokens));
  int64_t weights = 0;
  for (const Matrix& m : stack) weights += m.rows * m.cols;
  sq::ThreadPool pool(threads);
  for (auto _ : state) {
    for (const Matrix& m : stack) {
      const bool narrow = m.cols == 2048;
      const uint8_t* x = narrow ? x2048.data() : x5632.data();
      auto rows = [&](int64_t r0, int64_t r1) {
        const uint8_t* w = m.data + m.row_bytes * static_cast<size_t>(r0);
        if (tokens == 1) {
          sq::kernels::dot_rows_q(t, w, m.row_bytes, r1 - r0, x, m.cols, out.data() + r0);
        } else {
          sq::kernels::dot_tile_q(t, w, m.row_bytes, r1 - r0, x, narrow ? s2048 : s5632, tokens, m.cols,
                                  out.data() + r0, m.rows);
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
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(stack_bytes(t)));
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
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q8_0_X16, GgmlType::Q4_0_X16, GgmlType::Q4_K}) {
    benchmark::RegisterBenchmark(("StreamMatvec/" + sq::type_name(t)).c_str(), bm_stream, t, int64_t{1})
        ->Arg(1)
        ->Arg(2)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  for (GgmlType t : {GgmlType::Q4_0_X16, GgmlType::Q8_0_X16, GgmlType::Q6_K}) {
    benchmark::RegisterBenchmark(("StreamTile/" + sq::type_name(t)).c_str(), bm_stream, t, int64_t{8})
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
