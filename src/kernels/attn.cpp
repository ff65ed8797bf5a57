#include "kernels/attn.h"
#include "kernels/isa.h"

namespace sq::kernels {

// The attention kernels follow the matrix kernels' choice of instruction set (SQUEEZE_ISA or the
// best the CPU has); AVX-512 VNNI adds nothing here, so it uses the AVX-512 variant.
const AttnKernels& attn_kernels() {
  static const AttnKernels* chosen = [] {
    switch (active_isa()) {
      case Isa::Avx512Vnni:
      case Isa::Avx512: return attn_kernels_avx512();
      case Isa::Avx2: return attn_kernels_avx2();
      case Isa::Ref: break;
    }
    return &attn_kernels_ref();
  }();
  return *chosen;
}

}  // namespace sq::kernels
