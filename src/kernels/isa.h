// Instruction-set variants of the kernels and the choice among them.
//
// Each variant is one translation unit compiled with its own flags (quant_avx2.cpp,
// quant_avx512.cpp, quant_avx512vnni.cpp; the reference is quant_ref.cpp) and exports a table of
// function pointers. One table is chosen once per process: the best the CPU supports, or the one
// named by the environment variable SQUEEZE_ISA=ref|avx2|avx512|avx512vnni. Every entry of every
// table computes exactly the bits of the reference (quant.h gives the order of operations), so the
// choice changes speed only (DESIGN.md, invariant 3); tests hold each variant against `ref`.
//
// Nothing here is ISA-specific code: the tables are constant data, so this header is safe to include
// from any translation unit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "kernels/quant.h"
#include "kernels/types.h"

namespace sq::kernels {

enum class Isa { Ref, Avx2, Avx512, Avx512Vnni };

// The version of the deterministic path: the order of operations of every kernel the forward pass
// runs (quant.h, attn.h, the ops' own exp/sin/cos). Archives written by `squeeze zip` record it and
// refuse to decode under another version, since another order would give other probabilities.
// Bump it with any change that alters a single output bit of any kernel.
inline constexpr uint32_t kDeterministicPathVersion = 1;

// out[r] = dot_row_q(row r, qx) for r in [0, rows); row r starts at w + r * w_stride.
using DotRowsFn = void (*)(const void* w, size_t w_stride, int64_t rows, const void* qx, int64_t n,
                           float* out);
// out[t * out_stride + r] = dot_row_q(row r, token t) for r in [0, rows), t in [0, tokens); token t's
// activations (in the weight type's vec_dot_type) start at qx + t * x_stride. A tile of weight rows
// times a tile of tokens at a time, so each weight block loaded serves several tokens; each output
// still follows dot_row_q's order exactly.
using DotTileFn = void (*)(const void* w, size_t w_stride, int64_t rows, const void* qx,
                           size_t x_stride, int64_t tokens, int64_t n, float* out,
                           int64_t out_stride);

// The kernels of one weight type. For Q8_0_R16 and Q4_0_R16 (kernels/repack.h), whose rows are interleaved
// sixteen at a time, w is the start of a group (a row that is a multiple of 16), row r of the call
// lies in group r / 16, 16 * w_stride bytes apart, and there is no dot_q.
struct WeightKernels {
  DotRowQFn dot_q = nullptr;      // one row, one token
  DotRowsFn dot_rows = nullptr;   // several rows, one token (generation)
  DotTileFn dot_tile = nullptr;   // several rows, several tokens (prompt processing)
};

// The int8 multiply-add peak of a variant (bench --peak): `rounds` rounds of the variant's own
// multiply-add instructions (vpdpbusd under VNNI; vpmaddubsw, vpmaddwd and vpaddd otherwise;
// scalar code for ref) on operands held in registers, in enough independent chains to keep every
// unit busy. Every byte operand is 1, so each multiply-add adds 1: *checksum receives the sum of
// the accumulators (mod 2^32), which equals the count returned (mod 2^32). Returns the number of
// multiply-adds done.
using Int8PeakFn = int64_t (*)(int64_t rounds, uint32_t* checksum);

// Dense indices of the weight types and activation formats in a table.
inline constexpr GgmlType kTableWeightTypes[] = {
    GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
    GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
    GgmlType::Q4_0_X16, GgmlType::Q4_1_X16, GgmlType::Q5_0_X16, GgmlType::Q5_1_X16, GgmlType::Q8_0_X16,
    GgmlType::Q4_K_X4, GgmlType::Q5_K_X4, GgmlType::Q8_0_R16, GgmlType::Q4_0_R16};
inline constexpr GgmlType kTableActivationTypes[] = {GgmlType::F32,  GgmlType::F16,
                                                     GgmlType::BF16, GgmlType::Q8_0,
                                                     GgmlType::Q8_1, GgmlType::Q8_K};
inline constexpr int kNumTableWeightTypes = 20;
inline constexpr int kNumTableActivationTypes = 6;

constexpr int weight_index(GgmlType t) {
  for (int i = 0; i < kNumTableWeightTypes; ++i) {
    if (kTableWeightTypes[i] == t) return i;
  }
  return -1;
}

constexpr int activation_index(GgmlType t) {
  for (int i = 0; i < kNumTableActivationTypes; ++i) {
    if (kTableActivationTypes[i] == t) return i;
  }
  return -1;
}

struct KernelTable {
  Isa isa = Isa::Ref;
  QuantizeRowFn quantize[kNumTableActivationTypes] = {};  // by activation_index
  WeightKernels weight[kNumTableWeightTypes] = {};        // by weight_index
  Int8PeakFn int8_peak = nullptr;
};

// Chooses the active table from SQUEEZE_ISA, or the best the CPU supports when it is unset or
// empty. Throws InvalidArgument naming the value seen and the values this CPU supports when the
// value is unknown or names an instruction set this CPU lacks. The command line calls it at start;
// the kernels call it on first use otherwise, and then an error is printed to stderr and the
// process exits with status 1.
void init_isa();

// The variant in use (initialising it on first call).
Isa active_isa();
const KernelTable& active_table();

// "ref", "avx2", "avx512", "avx512vnni".
std::string_view isa_name(Isa isa);
// The variants this CPU can run, ref first, best last.
std::vector<Isa> supported_isas();
bool isa_supported(Isa isa);

// A variant's table, for tests and benchmarks that compare variants; running one the CPU does not
// support is an illegal instruction.
const KernelTable& table(Isa isa);

// The tables each variant's translation unit exports (constant data, built at compile time).
extern const KernelTable kRefTable;
extern const KernelTable kAvx2Table;
extern const KernelTable kAvx512Table;
extern const KernelTable kAvx512VnniTable;

}  // namespace sq::kernels
