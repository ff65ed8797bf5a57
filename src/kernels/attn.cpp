#include <cstdlib>
#include <string_view>

#include "base/cpu_features.h"
#include "kernels/attn.h"

namespace sq::kernels {

const AttnKernels& attn_kernels() {
  static const AttnKernels* chosen = [] {
    const CpuFeatures& f = cpu_features();
    const bool avx2 = f.avx2 && f.fma && f.f16c;
    const bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
    std::string_view want;
    if (const char* env = std::getenv("SQUEEZE_ISA")) want = env;
    if (want == "ref") return &attn_kernels_ref();
    if (want == "avx2" && avx2) return attn_kernels_avx2();
    if ((want.empty() || want == "avx512" || want == "avx512vnni") && avx512) return attn_kernels_avx512();
    if ((want.empty() || want == "avx512" || want == "avx512vnni") && avx2) return attn_kernels_avx2();
    return &attn_kernels_ref();
  }();
  return *chosen;
}

}  // namespace sq::kernels
