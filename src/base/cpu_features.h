// What the CPU this process runs on can execute, read once from cpuid. An instruction-set extension
// counts only when the operating system also saves the registers it uses (xgetbv): a CPU with
// AVX-512 under a kernel that does not preserve the zmm state cannot use it.
#pragma once

namespace sq {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512vnni = false;
};

// Detected on first call; all false on a CPU that is not x86-64.
const CpuFeatures& cpu_features();

}  // namespace sq
