// Data the kernel tests share: the types squeeze computes with, random rows, quantized rows.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/quant.h"
#include "kernels/types.h"

namespace sq::kernels::test {

inline constexpr GgmlType kComputeTypes[] = {
    GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
    GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

// n normally distributed values (mean 0, sd `scale`) from a seeded generator.
inline std::vector<float> gaussian(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// One row of `t` blocks holding x.
inline std::vector<uint8_t> quantize_weights(GgmlType t, const std::vector<float>& x) {
  const auto n = static_cast<int64_t>(x.size());
  std::vector<uint8_t> q(row_bytes(t, n));
  quantize_row(t, x.data(), q.data(), n);
  return q;
}

}  // namespace sq::kernels::test
