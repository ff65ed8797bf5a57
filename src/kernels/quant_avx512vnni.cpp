// The kernels compiled for avx512vnni (flags from CMakeLists.txt); the code is quant_simd.inc.
#define SQ_SIMD_TABLE kAvx512VnniTable
#define SQ_SIMD_ISA Isa::Avx512Vnni
#include "kernels/quant_simd.inc"
