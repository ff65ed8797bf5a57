// The kernels compiled for avx512 (flags from CMakeLists.txt); the code is quant_simd.inc.
#define SQ_SIMD_TABLE kAvx512Table
#define SQ_SIMD_ISA Isa::Avx512
#include "kernels/quant_simd.inc"
