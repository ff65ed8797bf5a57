// Speed measurements in llama-bench's terms, taken with the model layer directly (no tokenizer
// needed, so synthetic "no_vocab" files work):
//   pp<P>: a batch of P random token ids from position 0, one forward pass, logits of the last
//          position only; tokens/s = P / seconds.
//   tg<N>: N random token ids from position 0, one forward pass each; tokens/s = N / seconds.
// Each is repeated and reported as mean ± sample standard deviation of the per-repetition
// tokens/s, after one untimed warm-up. Alongside: the bytes of weights a generated token reads,
// the bandwidth that implies, the machine's measured read bandwidth (base/membw.h) in the same run,
// and the int8 multiply-add peak of the kernels' own instructions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/membw.h"
#include "ops/ops.h"

namespace sq {

class Model;
class ThreadPool;

struct PeakOptions {
  // The tile timed beside the peak:
  int64_t row_elems = 4096;  // elements per Q8_0 row; rows x row bytes stay in L2 per thread
  // Weight rows, and as many tokens: the token block of ops::matmul, so that the per-call work of
  // the tiled kernel (preparing each token's activations) weighs as it does in prompt processing.
  int32_t rows = 64;
  // Both measurements:
  double pass_seconds = 0.2;
  int32_t passes = 3;
};

// GOPS: 2 x int8 multiply-adds per second, 1e9, all threads together; best of the passes.
struct PeakResult {
  double peak_gops = 0;  // the kernels' multiply-add instructions alone (kernels::Int8PeakFn)
  std::vector<double> pass_gops;
  std::string instructions;  // which ones, e.g. "vpdpbusd, 512-bit"
  double tile_gops = 0;  // the Q8_0 tiled product on cache-resident data, for comparison
  std::vector<double> tile_pass_gops;
  std::string tile_kernel;
  int threads = 0;
  std::string isa;
};

struct ModelBenchOptions {
  int32_t n_prompt = 512;    // pp tokens; 0 skips pp
  int32_t n_gen = 128;       // tg tokens; 0 skips tg
  int32_t repetitions = 5;   // timed repetitions of each test
  uint64_t seed = 1234;      // of the random token ids
  bool measure_membw = true; // also measure the memory bandwidth, in the same run
  MemBwOptions membw;
  bool measure_peak = true;  // also measure the int8 multiply-add peak, in the same run (with pp)
  bool profile = false;      // time each one-token product and attention of the timed tg runs (ops::ProductProfile)
};

// Throws InvalidArgument naming the flag (-p, -n, -r), the value seen and the range expected.
void check_bench_options(const ModelBenchOptions& options);

struct SpeedStats {
  int32_t n_tokens = 0;
  double mean_tps = 0;
  double sd_tps = 0;                // sample standard deviation; 0 for one repetition
  std::vector<double> samples_tps;  // one per repetition, in order
  // Of the timed runs' balanced parallel regions, the share the pool ran on the calling thread
  // alone because its workers had been slower than that thread (base/thread_pool.h): near 0 when
  // the CPUs are the run's own, large when other work holds one of them.
  double alone_share = 0;
};

struct ModelBenchResult {
  std::string model;        // general.name, else the file's stem
  std::string path;
  std::string weight_type;  // the type holding most of the matrix bytes ("Q8_0")
  uint64_t file_size = 0;
  uint64_t n_params = 0;
  int threads = 0;
  std::string isa;
  int32_t repetitions = 0;
  std::optional<SpeedStats> pp;  // absent when -p 0
  std::optional<SpeedStats> tg;  // absent when -n 0
  uint64_t weight_bytes_per_token = 0;
  uint64_t prompt_macs_per_token = 0;  // multiply-adds of the matrix products a prompt token needs
  int32_t repacked_tensors = 0;        // matrices copied into the kernels' packed layouts at load
  uint64_t repacked_bytes = 0;         // their anonymous memory (the mapped originals released)
  std::optional<MemBwResult> membw;
  std::optional<PeakResult> peak;
  // With options.profile: the one-token products and attention of the timed tg runs, and those
  // runs' whole time (the rest of it is norms, RoPE, SwiGLU, the activations' rounding and the
  // waits between regions).
  std::vector<ops::ProductTime> profile;
  double profile_tg_seconds = 0;

  // bytes/token x tg tokens/s, in 1e9 bytes/s; 0 without tg.
  double implied_gbps() const;
  // implied_gbps / measured read bandwidth; 0 without tg or membw.
  double membw_fraction() const;
  // 2 x prompt_macs_per_token x pp tokens/s, in 1e9 operations/s; 0 without pp.
  double pp_gops() const;
  // pp_gops / measured int8 multiply-add peak; 0 without pp or peak.
  double peak_fraction() const;
};

// The bytes of weights one generated token reads: every matrix, norm and bias of the forward
// pass, one row of the token embedding, the output matrix (the whole embedding when tied), and of
// each stacked expert tensor the fraction n_expert_used / n_expert that a token routes to.
uint64_t weight_bytes_per_token(const Model& model);

// Multiply-adds of the matrix products one prompt token goes through (every layer's matrices, the
// used fraction of the experts; not the output matrix, which a prompt runs for its last token only).
uint64_t prompt_macs_per_token(const Model& model);

// Runs the warm-up and the repetitions (pp and tg alternate within each repetition) on `pool`.
ModelBenchResult bench_model(const Model& model, ThreadPool& pool, const ModelBenchOptions& options);

// On every thread of the pool: the int8 multiply-add rate of the active kernels' own instructions
// on registers (kernels::KernelTable::int8_peak: the arithmetic ceiling prompt processing is held
// to), then, for comparison, the rate of their Q8_0 x Q8_0 tiled dot product (kernels::dot_tile_q,
// the kernel of prompt processing: `rows` weight rows times `rows` tokens; in the packed layout
// when the loader repacks, model/repack.h) on cache-resident data.
PeakResult measure_dot_peak(ThreadPool& pool, const PeakOptions& options = {});

// The instruction set the kernels run with: "ref", "avx2", "avx512", "avx512vnni".
std::string kernels_isa_name();

// {"model", "threads", "pp": {"n_tokens", "mean_tps", "sd_tps", "samples_tps", "alone_share"} or null,
//  "tg": {...} or null, "weight_bytes_per_token", "path", "weight_type", "n_params", "file_size",
//  "isa", "repetitions", "implied_gbps", "membw_gbps" or null, "membw_fraction" or null}
nlohmann::json to_json(const ModelBenchResult& r);
// {"read_gbps", "threads", "median_gbps", "pass_gbps", "buffer_bytes", "method"}
nlohmann::json to_json(const MemBwResult& r);
// {"peak_gops", "threads", "isa", "pass_gops", "instructions", "tile_gops", "tile_pass_gops",
//  "tile_kernel"}
nlohmann::json to_json(const PeakResult& r);

}  // namespace sq
