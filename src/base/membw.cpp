#include "base/membw.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>

#include "base/error.h"
#include "base/mmap.h"
#include "base/thread_pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace sq {

namespace {

// Both loops keep several independent accumulators so that the adds never limit the loads; bytes
// is a multiple of 128.
#if defined(__x86_64__)
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint8_t* p, size_t bytes) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < bytes; i += 128) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}
#endif

uint64_t sum_scalar(const uint8_t* p, size_t bytes) {
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  const size_t n = bytes / sizeof(uint64_t);
  uint64_t a[8] = {};
  for (size_t i = 0; i < n; i += 8) {
    for (int j = 0; j < 8; ++j) a[j] += w[i + static_cast<size_t>(j)];
  }
  uint64_t s = 0;
  for (uint64_t v : a) s += v;
  return s;
}

// Where the sums go, so that the reads cannot be optimised away.
std::atomic<uint64_t> g_sink{0};

bool have_avx2() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx2");
#else
  return false;
#endif
}

}  // namespace

MemBwResult measure_memory_bandwidth(ThreadPool& pool, const MemBwOptions& options) {
  if (options.passes < 1 || options.passes > 1000) {
    fail<InvalidArgument>("membw: {} passes; expected 1 to 1000", options.passes);
  }
  const int threads = pool.size();
  constexpr size_t kUnit = 4096;
  size_t per_thread = options.buffer_bytes / static_cast<size_t>(threads) / kUnit * kUnit;
  per_thread = std::max(per_thread, kUnit);
  const size_t total = per_thread * static_cast<size_t>(threads);
  // Huge pages, where the kernel allows them, keep TLB misses out of the measurement.
  const AnonymousMemory buffer(total);
  if (buffer.data() == nullptr) {
    fail<IoError>("membw: cannot allocate a buffer of {} MiB; try a smaller one", total >> 20);
  }

  const bool avx2 = have_avx2();
  auto read_part = [&](int64_t t) {
    const uint8_t* p = buffer.data() + static_cast<size_t>(t) * per_thread;
#if defined(__x86_64__)
    if (avx2) return sum_avx2(p, per_thread);
#endif
    return sum_scalar(p, per_thread);
  };

  // Each thread writes its own part first, so that its pages sit near it (first touch).
  pool.parallel_for(threads, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      std::memset(buffer.data() + static_cast<size_t>(t) * per_thread, static_cast<int>(t + 1),
                  per_thread);
    }
  });

  auto pass = [&] {
    pool.parallel_for(threads, [&](int64_t b, int64_t e) {
      uint64_t s = 0;
      for (int64_t t = b; t < e; ++t) s += read_part(t);
      g_sink.fetch_add(s, std::memory_order_relaxed);
    });
  };

  using Clock = std::chrono::steady_clock;
  MemBwResult r;
  r.buffer_bytes = total;
  r.threads = threads;
  r.method = avx2 ? "avx2" : "scalar";
  pass();  // warm-up: page-table walks, frequency ramp
  for (int i = 0; i < options.passes; ++i) {
    const auto t0 = Clock::now();
    pass();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    r.pass_gbps.push_back(static_cast<double>(total) / std::max(s, 1e-9) / 1e9);
  }
  std::vector<double> sorted = r.pass_gbps;
  std::sort(sorted.begin(), sorted.end());
  r.read_gbps = sorted.back();
  const size_t m = sorted.size();
  r.median_gbps = m % 2 == 1 ? sorted[m / 2] : (sorted[m / 2 - 1] + sorted[m / 2]) / 2;
  return r;
}

}  // namespace sq
