// Interleaved A/B of one-token kernel variants: each variant is a copy of
// src/kernels/quant_simd.inc compiled into this program with the avx512vnni flags (run.sh builds
// it), so variants of the same code run in one process, round after round in a shuffled order,
// on the same buffers. Separate processes on a shared machine differ by more than most kernel
// changes (docs/benchmarks.md, run T); within one process the ratios hold.
//
//   variant_ab TYPE THREADS CALLS ROUNDS hot|dram SPEC...
//     TYPE: q8 q4 q5 q41 q51 (the packed layouts Q8_0x16 ... Q5_1x16), q4k q5k q6k, q4kx4 q5kx4 (Q4_Kx4, Q5_Kx4)
//     CALLS: calls per variant and round, timed together
//     hot: one matrix, read again and again (in the caches if it fits); dram: enough copies of it
//       (512 MiB, in transparent huge pages as the loader's repacked matrices) that each call
//       reads memory
//     SPEC: V:ROWSxCOLS[:PAD] with V the variant (0, 1, ... in run.sh's order), or "plain" for a
//       read of the same bytes with 512-bit loads, "dp" for one dpbusd per 64 bytes of them, "mis"
//       for dp with every load 32 bytes off a line (each straddles two), "shift" for the same
//       bytes as mis from aligned loads joined by valignq; PAD 1 pads the row stride to a
//       multiple of 64 bytes; a suffix @TYPE runs the spec on that type instead (its rows are the
//       same values: 0:256x2048@q4k beside 0:256x2048@q4kx4 compares the two layouts)
// Prints per spec: the median time per call, min-max, GB/s, and the median over rounds of its
// GB/s over the first spec's in the same round (min-max). Variants of one shape must agree bit for
// bit ("same"; "DIFF" otherwise).
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <immintrin.h>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/isa.h"
#include "kernels/quant.h"
#include "kernels/types.h"

namespace sq::kernels {
#define SQ_VARIANT(n) extern const KernelTable kVariant##n;
SQ_VARIANTS
#undef SQ_VARIANT
}  // namespace sq::kernels

namespace {

using namespace sq;
using namespace sq::kernels;

const KernelTable* const kTables[] = {
#define SQ_VARIANT(n) &kVariant##n,
    SQ_VARIANTS
#undef SQ_VARIANT
};
constexpr int kPlain = -1, kDp = -2, kMis = -3, kShift = -4;

struct Spec {
  std::string text;
  GgmlType t{};
  int v = 0;
  int64_t rows = 0, cols = 0;
  size_t rb = 0, mat = 0;
  int64_t copies = 1, next = 0;
  uint8_t* base = nullptr;
  std::vector<uint8_t> x;
  std::vector<float> out;
  std::vector<double> ns;
};

// The sum of the bytes as int32 (plain) or against a fixed vector with dpbusd (dp).
float read_bytes(const uint8_t* p, size_t n, bool dp) {
  alignas(64) static thread_local uint8_t y[64] = {1};
  __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
  for (size_t o = 0; o + 128 <= n; o += 128) {
    const __m512i u = _mm512_loadu_si512(p + o), v = _mm512_loadu_si512(p + o + 64);
    if (dp) {
      a0 = _mm512_dpbusd_epi32(a0, u, _mm512_load_si512(y));
      a1 = _mm512_dpbusd_epi32(a1, v, _mm512_load_si512(y));
    } else {
      a0 = _mm512_add_epi32(a0, u);
      a1 = _mm512_add_epi32(a1, v);
    }
  }
  return static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1)));
}

// dp over the bytes from p + 32 (p on a line): unaligned 64-byte loads, or (shift) aligned loads
// whose halves are joined with valignq.
float read_offset(const uint8_t* p, size_t n, bool shift) {
  alignas(64) static thread_local uint8_t y[64] = {1};
  __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
  const uint8_t* base = reinterpret_cast<const uint8_t*>(reinterpret_cast<uintptr_t>(p) & ~uintptr_t{63});
  __m512i prev = _mm512_load_si512(base);
  for (size_t o = 0; o + 192 <= n; o += 128) {
    __m512i u, v;
    if (shift) {
      const __m512i l1 = _mm512_load_si512(base + o + 64), l2 = _mm512_load_si512(base + o + 128);
      u = _mm512_alignr_epi64(l1, prev, 4);
      v = _mm512_alignr_epi64(l2, l1, 4);
      prev = l2;
    } else {
      u = _mm512_loadu_si512(base + o + 32);
      v = _mm512_loadu_si512(base + o + 96);
    }
    a0 = _mm512_dpbusd_epi32(a0, u, _mm512_load_si512(y));
    a1 = _mm512_dpbusd_epi32(a1, v, _mm512_load_si512(y));
  }
  return static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1)));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: %s TYPE THREADS CALLS ROUNDS hot|dram SPEC...\n", argv[0]);
    return 2;
  }
  auto type_of = [](const std::string& tn, GgmlType& t) {
    const std::pair<const char*, GgmlType> names[] = {
        {"q8", GgmlType::Q8_0_X16}, {"q4", GgmlType::Q4_0_X16}, {"q5", GgmlType::Q5_0_X16},
        {"q41", GgmlType::Q4_1_X16}, {"q51", GgmlType::Q5_1_X16}, {"q4k", GgmlType::Q4_K},
        {"q5k", GgmlType::Q5_K}, {"q6k", GgmlType::Q6_K}, {"q4kx4", GgmlType::Q4_K_X4},
        {"q5kx4", GgmlType::Q5_K_X4}};
    for (const auto& [name, type] : names) {
      if (tn == name) return t = type, true;
    }
    std::fprintf(stderr, "unknown type '%s' (q8 q4 q5 q41 q51 q4k q5k q6k q4kx4 q5kx4)\n", tn.c_str());
    return false;
  };
  GgmlType type{};
  if (!type_of(argv[1], type)) return 2;
  const int threads = std::atoi(argv[2]), calls = std::atoi(argv[3]), rounds = std::atoi(argv[4]);
  const bool dram = std::string(argv[5]) == "dram";
  const int n_variants = static_cast<int>(sizeof kTables / sizeof kTables[0]);
  std::vector<Spec> specs;
  for (int a = 6; a < argc; ++a) {
    Spec s;
    s.text = argv[a];
    char v[16] = {};
    int pad = 0;
    s.t = type;
    std::string text = argv[a];
    if (const size_t at = text.find('@'); at != std::string::npos) {
      if (!type_of(text.substr(at + 1), s.t)) return 2;
      text.resize(at);
    }
    if (std::sscanf(text.c_str(), "%15[^:]:%ldx%ld:%d", v, &s.rows, &s.cols, &pad) < 3) {
      std::fprintf(stderr, "bad spec '%s' (expected V:ROWSxCOLS[:PAD])\n", argv[a]);
      return 2;
    }
    const std::string vs = v;
    if (vs == "plain" || vs == "dp" || vs == "mis" || vs == "shift") {
      s.v = vs == "plain" ? kPlain : vs == "dp" ? kDp : vs == "mis" ? kMis : kShift;
    } else if (!vs.empty() && vs.find_first_not_of("0123456789") == std::string::npos) {
      s.v = std::atoi(vs.c_str());
    } else {
      std::fprintf(stderr, "spec '%s': '%s' is neither a variant number nor plain, dp, mis or shift\n",
                   argv[a], v);
      return 2;
    }
    if (s.v >= n_variants) {
      std::fprintf(stderr, "spec '%s': only %d variants\n", argv[a], n_variants);
      return 2;
    }
    s.rb = row_bytes(s.t, s.cols);
    if (pad) s.rb = (s.rb + 63) / 64 * 64;
    s.mat = s.rb * static_cast<size_t>(s.rows);
    s.copies = dram ? (int64_t{512} << 20) / static_cast<int64_t>(s.mat) + 1 : 1;
    constexpr size_t kHuge = size_t{2} << 20;
    const size_t bytes = (s.mat * static_cast<size_t>(s.copies) + 64 + kHuge - 1) / kHuge * kHuge;
    s.base = static_cast<uint8_t*>(::operator new(bytes, std::align_val_t(kHuge)));
    madvise(s.base, bytes, MADV_HUGEPAGE);
    // 64 distinct rows per shape (the same for every spec of the shape), repeated.
    std::mt19937 rng(static_cast<uint32_t>(s.rows * 7919 + s.cols));
    std::normal_distribution<float> g(0.0f, 1.0f);
    std::vector<float> f(static_cast<size_t>(s.cols));
    std::vector<uint8_t> distinct(s.rb * 64);
    for (int r = 0; r < 64; ++r) {
      for (auto& e : f) e = g(rng);
      quantize_row(s.t, f.data(), distinct.data() + s.rb * r, s.cols);
    }
    for (int64_t c = 0; c < s.copies; ++c) {
      for (int64_t r = 0; r < s.rows; ++r) {
        std::memcpy(s.base + s.mat * c + s.rb * r, distinct.data() + s.rb * (r % 64), s.rb);
      }
    }
    const GgmlType vt = vec_dot_type(s.t);
    s.x.resize(row_bytes(vt, s.cols));
    for (auto& e : f) e = g(rng);
    table(Isa::Ref).quantize[activation_index(vt)](f.data(), s.x.data(), s.cols);
    s.out.resize(static_cast<size_t>(s.rows));
    specs.push_back(std::move(s));
  }

  // Workers spin on a generation counter (no sleeping: the region's cost stays small and fixed).
  std::atomic<int> generation{0}, done{0};
  std::atomic<bool> stop{false};
  Spec* cur = nullptr;
  const uint8_t* w = nullptr;
  auto part = [&](int i) {
    const int64_t a = cur->rows * i / threads, b = cur->rows * (i + 1) / threads;
    const uint8_t* wa = w + cur->rb * static_cast<size_t>(a);
    if (cur->v == kMis || cur->v == kShift) {
      cur->out[static_cast<size_t>(a)] = read_offset(wa, cur->rb * static_cast<size_t>(b - a), cur->v == kShift);
    } else if (cur->v < 0) {
      cur->out[static_cast<size_t>(a)] = read_bytes(wa, cur->rb * static_cast<size_t>(b - a), cur->v == kDp);
    } else {
      kTables[cur->v]->weight[weight_index(cur->t)].dot_rows(wa, cur->rb, b - a, cur->x.data(), cur->cols,
                                                        cur->out.data() + a);
    }
  };
  std::vector<std::thread> workers;
  for (int i = 1; i < threads; ++i) {
    workers.emplace_back([&, i] {
      int seen = 0;
      while (true) {
        int now;
        while ((now = generation.load(std::memory_order_acquire)) == seen) {
          if (stop.load(std::memory_order_relaxed)) return;
        }
        seen = now;
        part(i);
        done.fetch_add(1, std::memory_order_release);
      }
    });
  }
  auto call = [&] {
    w = cur->base + cur->mat * static_cast<size_t>(cur->next++ % cur->copies);
    if (threads == 1) return part(0);
    done.store(0, std::memory_order_relaxed);
    generation.fetch_add(1, std::memory_order_release);
    part(0);
    while (done.load(std::memory_order_acquire) != threads - 1) {
    }
  };
  std::vector<size_t> order(specs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::mt19937 shuffle(42);
  for (int round = 0; round < rounds; ++round) {
    std::shuffle(order.begin(), order.end(), shuffle);
    for (size_t i : order) {
      cur = &specs[i];
      call();
      const auto t0 = std::chrono::steady_clock::now();
      for (int c = 0; c < calls; ++c) call();
      const auto t1 = std::chrono::steady_clock::now();
      cur->ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / calls);
    }
  }
  stop = true;
  for (auto& th : workers) th.join();

  for (const Spec& s : specs) {
    const char* agree = "";
    for (const Spec& o : specs) {
      if (&o != &s && o.v >= 0 && s.v >= 0 && o.rows == s.rows && o.cols == s.cols) {
        agree = std::memcmp(o.out.data(), s.out.data(), s.out.size() * sizeof(float)) == 0 ? "same" : "DIFF";
        break;
      }
    }
    std::vector<double> ns = s.ns, ratio;
    std::sort(ns.begin(), ns.end());
    for (int r = 0; r < rounds; ++r) {
      ratio.push_back((static_cast<double>(s.mat) / s.ns[static_cast<size_t>(r)]) /
                      (static_cast<double>(specs[0].mat) / specs[0].ns[static_cast<size_t>(r)]));
    }
    std::sort(ratio.begin(), ratio.end());
    std::printf("%-20s %4s %10.2f us [%.2f-%.2f] %6.1f GB/s  x%.3f [%.3f-%.3f]\n", s.text.c_str(), agree,
                ns[ns.size() / 2] / 1e3, ns.front() / 1e3, ns.back() / 1e3,
                static_cast<double>(s.mat) / ns[ns.size() / 2], ratio[ratio.size() / 2], ratio.front(),
                ratio.back());
  }
  return 0;
}
