// libFuzzer driver for the GGUF reader (DESIGN.md, invariant 5; STYLE.md 9). Not part of the CMake
// build: libFuzzer needs clang. From the repository root:
//
//   mkdir -p build/fuzz && clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined \
//     -fno-sanitize-recover=all -Isrc tests/fuzz/gguf_fuzz.cpp src/model/gguf.cpp \
//     src/kernels/types.cpp src/base/mmap.cpp -lfmt -o build/fuzz/gguf_fuzz
//   mkdir -p build/fuzz/corpus && cp ../shared/models/stories260K/stories260K.gguf build/fuzz/corpus/
//   build/fuzz/gguf_fuzz -max_len=65536 -rss_limit_mb=2048 -timeout=5 build/fuzz/corpus
//
// Seeds: any small GGUF files (the writer's output from tests/model/gguf_test.cpp, the shared
// fixtures). A crash, a sanitizer report, a timeout or an allocation over -rss_limit_mb is a bug; a
// sq::Error is the expected answer to bad bytes. To replay a saved input without libFuzzer, build
// with g++ and -DSQ_FUZZ_MAIN, then pass the files as arguments.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "model/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An exact-size heap copy, so that ASan reports any read past the end.
  std::vector<uint8_t> bytes(data, data + size);
  try {
    sq::GgufFile f = sq::GgufFile::parse(bytes, "fuzz.gguf");
    // Use what parsed, as a caller would: every view must lie inside the input.
    uint64_t sum = 0;
    for (const auto& t : f.tensors()) {
      if (t.data == nullptr || t.n_bytes == 0) continue;
      if (t.data < bytes.data() || t.data + t.n_bytes > bytes.data() + bytes.size()) __builtin_trap();
      sum += t.data[0] + t.data[t.n_bytes - 1];
    }
    for (const auto& [key, value] : f.metadata()) {
      sum += value.summary().size();
      try {
        sum += static_cast<uint64_t>(value.as_int(key));
      } catch (const sq::Error&) {
      }
    }
    static volatile uint64_t sink;
    sink = sum;
  } catch (const sq::Error&) {
    // The expected outcome for damaged input.
  }
  return 0;
}

#ifdef SQ_FUZZ_MAIN
#include <fstream>
#include <iterator>

int main(int argc, char** argv) {
  for (int k = 1; k < argc; ++k) {
    std::ifstream in(argv[k], std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
    std::printf("%s: ok\n", argv[k]);
  }
  return 0;
}
#endif
