// The machine's memory read bandwidth, measured the way STREAM does: every thread sums its own
// contiguous part of a buffer much larger than the caches, and the best of several passes counts.
// Token generation reads every weight once per token, so this is the ceiling on generation speed
// (tokens/s <= bandwidth / bytes of weights per token); `squeeze bench` reports generation as a
// fraction of it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sq {

class ThreadPool;

struct MemBwOptions {
  size_t buffer_bytes = size_t{1} << 30;  // 1 GiB: far beyond any L3 this runs on
  int passes = 5;                          // timed passes after one untimed warm-up pass
};

struct MemBwResult {
  double read_gbps = 0;    // best pass, 1e9 bytes per second
  double median_gbps = 0;  // median pass, for the spread
  std::vector<double> pass_gbps;
  size_t buffer_bytes = 0;
  int threads = 0;
  std::string method;  // "avx2" or "scalar": the read loop that ran
};

// Reads a freshly allocated buffer of options.buffer_bytes (rounded down to 4 KiB per thread, at
// least 4 KiB per thread) with pool.size() threads. Throws InvalidArgument for a bad option and
// IoError when the buffer cannot be allocated.
MemBwResult measure_memory_bandwidth(ThreadPool& pool, const MemBwOptions& options = {});

}  // namespace sq
