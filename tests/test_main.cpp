#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <gtest/gtest.h>

#include "kernels/isa.h"

// Exit status CTest reads as "skipped" (SKIP_RETURN_CODE in tests/CMakeLists.txt).
constexpr int kSkipped = 77;

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Thread pools use all their threads in every parallel region, so that the tests of thread-count
  // invariance always cover a split; the pool's own tests of its fallback to the calling thread
  // construct pools with it on (base/thread_pool.h). The binaries the CLI tests run inherit this.
  setenv("SQUEEZE_POOL_FALLBACK", "0", /*overwrite=*/0);
  // The per-instruction-set runs of a suite set SQUEEZE_ISA; on a CPU without that instruction set
  // they are skipped rather than failed.
  if (const char* want = std::getenv("SQUEEZE_ISA"); want != nullptr && *want != '\0') {
    bool supported = false;
    for (sq::kernels::Isa isa : sq::kernels::supported_isas()) {
      supported = supported || sq::kernels::isa_name(isa) == std::string_view(want);
    }
    if (!supported) {
      std::printf("skipped: this CPU cannot run SQUEEZE_ISA=%s\n", want);
      return kSkipped;
    }
  }
  return RUN_ALL_TESTS();
}
