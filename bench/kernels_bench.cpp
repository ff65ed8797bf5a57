// Micro-benchmarks of the matrix kernels, per weight type and instruction-set variant, on one
// thread:
//   Matvec/<type>/<isa>/<rows>x<cols>: the multi-row kernel over a whole matrix and one token
//     (token generation); bytes_per_second counts the weight bytes read. 256x2048, 512x896 and
//     512x1024 fit in a core's L2 cache, so they measure the kernel's arithmetic rather than the
//     memory (512x896's rows end in a short group of 12 blocks, 512x1024's in whole groups).
//   Tile/<type>/<isa>/<rows>x<cols>x<tokens>: the tiled kernel over a whole matrix and a batch
//     (prompt processing); the "GOPS" counter is 2 * rows * cols * tokens per second (one multiply
//     and one add per weight and token), in 1e9/s.
//   Quantize/<type>/<isa>/<n>: the activation quantizers; bytes_per_second counts floats read.
// Q8_0r16 and Q4_0r16 (sixteen rows interleaved) are registered under avx512vnni only, the one
// variant with kernels of their own.
// Variants the CPU lacks are not registered.
//
//   build/simd/squeeze_bench --benchmark_filter='Matvec/Q4_K' --benchmark_repetitions=3
#include <algorithm>
#include <cstdint>
#include <new>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "kernels/isa.h"
#include "kernels/quant.h"
#include "kernels/repack.h"
#include "kernels/types.h"

namespace {

using sq::GgmlType;
using sq::kernels::Isa;

std::vector<float> gaussian(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = g(rng);
  return v;
}

// Memory that starts on a cache line, as the loader's repacked matrices do, so that a row's loads
// straddle lines where the model's would and nowhere else.
template <class T>
struct LineAligned {
  using value_type = T;
  LineAligned() = default;
  template <class U>
  LineAligned(const LineAligned<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  friend bool operator==(const LineAligned&, const LineAligned&) { return true; }
};
using Weights = std::vector<uint8_t, LineAligned<uint8_t>>;

// A rows x cols weight matrix of type t from random floats (quantized one row at a time, which is
// slow for the K types, so rows repeat a small set of distinct rows).
Weights weights(GgmlType t, int64_t rows, int64_t cols) {
  const size_t rb = sq::kernels::row_bytes(t, cols);
  if (sq::kernels::interleaved_rows(t) > 1) {
    // Q8_0_R16, Q4_0_R16: rows packed sixteen at a time, as the loader packs them (rows a multiple
    // of 16).
    const Weights std_rows = weights(sq::kernels::unpacked_type(t), rows, cols);
    Weights w(std_rows.size());
    for (int64_t r = 0; r < rows; r += 16) {
      sq::kernels::pack_rows_r16(t, std_rows.data() + rb * static_cast<size_t>(r), rb, 16,
                                 w.data() + rb * static_cast<size_t>(r), cols);
    }
    return w;
  }
  constexpr int64_t kDistinct = 64;
  std::vector<uint8_t> distinct(rb * kDistinct);
  for (int64_t r = 0; r < kDistinct; ++r) {
    const auto f = gaussian(cols, static_cast<uint32_t>(r + 1));
    sq::kernels::quantize_row(t, f.data(), distinct.data() + rb * static_cast<size_t>(r), cols);
  }
  Weights w(rb * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(distinct.data() + rb * static_cast<size_t>(r % kDistinct), rb,
                w.data() + rb * static_cast<size_t>(r));
  }
  return w;
}

std::vector<uint8_t> activations(GgmlType t, int64_t tokens, int64_t cols) {
  const GgmlType vt = sq::kernels::vec_dot_type(t);
  const size_t xb = sq::kernels::row_bytes(vt, cols);
  std::vector<uint8_t> q(xb * static_cast<size_t>(tokens));
  for (int64_t i = 0; i < tokens; ++i) {
    const auto f = gaussian(cols, static_cast<uint32_t>(1000 + i));
    sq::kernels::table(Isa::Ref).quantize[sq::kernels::activation_index(vt)](
        f.data(), q.data() + xb * static_cast<size_t>(i), cols);
  }
  return q;
}

void bm_matvec(benchmark::State& state, GgmlType t, Isa isa, int64_t rows, int64_t cols) {
  const auto w = weights(t, rows, cols);
  const auto x = activations(t, 1, cols);
  std::vector<float> out(static_cast<size_t>(rows));
  const auto& k = sq::kernels::table(isa).weight[sq::kernels::weight_index(t)];
  const size_t rb = sq::kernels::row_bytes(t, cols);
  for (auto _ : state) {
    k.dot_rows(w.data(), rb, rows, x.data(), cols, out.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(w.size()));
}

void bm_tile(benchmark::State& state, GgmlType t, Isa isa, int64_t rows, int64_t cols,
             int64_t tokens) {
  const auto w = weights(t, rows, cols);
  const auto x = activations(t, tokens, cols);
  std::vector<float> out(static_cast<size_t>(rows * tokens));
  const auto& k = sq::kernels::table(isa).weight[sq::kernels::weight_index(t)];
  const size_t rb = sq::kernels::row_bytes(t, cols);
  const size_t xb = sq::kernels::row_bytes(sq::kernels::vec_dot_type(t), cols);
  // The blocking ops::matmul uses (product_rows in src/ops/ops.cpp): tokens 64 at a time; rows in
  // blocks of about 256 KiB when there is more than one token block, else all in one call.
  constexpr int64_t kTokenBlock = 64;
  const int64_t row_block =
      tokens <= kTokenBlock ? rows
                            : std::max<int64_t>(16, static_cast<int64_t>(256 * 1024 / rb) / 16 * 16);
  for (auto _ : state) {
    for (int64_t r = 0; r < rows; r += row_block) {
      for (int64_t tb = 0; tb < tokens; tb += kTokenBlock) {
        k.dot_tile(w.data() + rb * static_cast<size_t>(r), rb, std::min(row_block, rows - r),
                   x.data() + xb * static_cast<size_t>(tb), xb, std::min(kTokenBlock, tokens - tb),
                   cols, out.data() + tb * rows + r, rows);
      }
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["GOPS"] = benchmark::Counter(
      2.0 * static_cast<double>(rows * cols * tokens) * static_cast<double>(state.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
}

void bm_quantize(benchmark::State& state, GgmlType vt, Isa isa, int64_t n) {
  const auto f = gaussian(n, 7);
  std::vector<uint8_t> q(sq::kernels::row_bytes(vt, n));
  const auto fn = sq::kernels::table(isa).quantize[sq::kernels::activation_index(vt)];
  for (auto _ : state) {
    fn(f.data(), q.data(), n);
    benchmark::DoNotOptimize(q.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * n * 4);
}

int register_all() {
  const GgmlType types[] = {GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0, GgmlType::Q4_0,
                            GgmlType::Q5_K, GgmlType::F16,  GgmlType::BF16, GgmlType::F32,
                            GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q4_0_X16,
                            GgmlType::Q4_1_X16, GgmlType::Q5_0_X16, GgmlType::Q5_1_X16, GgmlType::Q8_0_X16,
                            GgmlType::Q4_K_X4,  GgmlType::Q8_0_R16, GgmlType::Q4_0_R16};
  const std::pair<int64_t, int64_t> shapes[] = {{2048, 2048}, {5632, 2048}, {2048, 5632}, {4096, 4096},
                                                {32768, 4096}, {4864, 896},  {896, 4864},  {151936, 896},
                                                {256, 2048},   {512, 896},   {512, 1024}};
  for (Isa isa : sq::kernels::supported_isas()) {
    const std::string in = std::string(sq::kernels::isa_name(isa));
    for (GgmlType t : types) {
      // The interleaved layouts have kernels of their own under avx512vnni only (the loader gives
      // them to no other variant); the others would time the reference.
      if (sq::kernels::interleaved_rows(t) > 1 && isa != Isa::Avx512Vnni) continue;
      const std::string tn = sq::type_name(t);
      for (auto [rows, cols] : shapes) {
        benchmark::RegisterBenchmark(
            ("Matvec/" + tn + "/" + in + "/" + std::to_string(rows) + "x" + std::to_string(cols)).c_str(),
            bm_matvec, t, isa, rows, cols)
            ->Unit(benchmark::kMicrosecond);
      }
      // A prompt's batch, and a server's step of eight generating sequences.
      for (int64_t tokens : {64, 8}) {
        benchmark::RegisterBenchmark(
            ("Tile/" + tn + "/" + in + "/2048x2048x" + std::to_string(tokens)).c_str(), bm_tile, t, isa,
            2048, 2048, tokens)
            ->Unit(benchmark::kMillisecond);
      }
    }
    for (GgmlType vt : {GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K, GgmlType::F16, GgmlType::BF16}) {
      benchmark::RegisterBenchmark(
          ("Quantize/" + sq::type_name(vt) + "/" + in + "/5632").c_str(), bm_quantize, vt, isa,
          int64_t{5632})
          ->Unit(benchmark::kMicrosecond);
    }
  }
  return 0;
}

[[maybe_unused]] const int kRegistered = register_all();

}  // namespace
