// The kernels compiled for avx2 (flags from CMakeLists.txt); the code is quant_simd.inc.
#define SQ_SIMD_TABLE kAvx2Table
#define SQ_SIMD_ISA Isa::Avx2
#include "kernels/quant_simd.inc"
