// Logits parity with a reference engine (llama.cpp) on the fixtures in shared/fixtures/parity:
// three small models (GQA llama, mixture of experts, tied and biased qwen2) in seven tensor types.
// Tolerances are the ones the fixture README states.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <vector>

#include "base/mmap.h"
#include "base/thread_pool.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "support.h"

namespace sq {
namespace {

std::vector<int32_t> read_ids(const std::string& path) {
  std::string b = read_file(path);
  std::vector<int32_t> ids(b.size() / 4);
  std::memcpy(ids.data(), b.data(), ids.size() * 4);
  return ids;
}

std::vector<float> read_floats(const std::string& path) {
  std::string b = read_file(path);
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), v.size() * 4);
  return v;
}

// log-softmax in double.
std::vector<double> log_softmax(const float* x, int n) {
  double mx = -INFINITY;
  for (int i = 0; i < n; ++i) mx = std::max(mx, static_cast<double>(x[i]));
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(x[i] - mx);
  std::vector<double> out(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out[static_cast<size_t>(i)] = x[i] - mx - std::log(sum);
  return out;
}

struct Stats {
  double median_kl, mean_kl;
  double top1;         // positions where the argmaxes agree, ties in the reference counted as agreeing
  double top1_strict;  // positions where the argmaxes are the same token
};

Stats compare(const std::vector<float>& ref, const std::vector<float>& got, int n_vocab) {
  const size_t n = ref.size() / static_cast<size_t>(n_vocab);
  std::vector<double> kls;
  int agree = 0, strict = 0;
  for (size_t t = 0; t < n; ++t) {
    const float* r = ref.data() + t * n_vocab;
    const float* g = got.data() + t * n_vocab;
    auto lr = log_softmax(r, n_vocab), lg = log_softmax(g, n_vocab);
    double kl = 0;
    for (int i = 0; i < n_vocab; ++i) kl += std::exp(lr[i]) * (lr[i] - lg[i]);
    kls.push_back(kl);
    const auto ar = std::max_element(r, r + n_vocab) - r;
    const auto ag = std::max_element(g, g + n_vocab) - g;
    // The reference rounds activations to F16 or 8 bits before its products, so two logits closer
    // than F16's resolution (2^-11 relative) are tied in its own arithmetic: either argmax is right.
    const double resolution = std::ldexp(std::abs(static_cast<double>(r[ar])), -11);
    if (ar == ag) ++strict;
    if (ar == ag || static_cast<double>(r[ar]) - r[ag] <= resolution) ++agree;
  }
  std::vector<double> sorted = kls;
  std::sort(sorted.begin(), sorted.end());
  double mean = 0;
  for (double k : kls) mean += k;
  return {sorted[sorted.size() / 2], mean / static_cast<double>(kls.size()),
          static_cast<double>(agree) / static_cast<double>(n),
          static_cast<double>(strict) / static_cast<double>(n)};
}

struct Case {
  std::string stem, type;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.stem << "." << c.type; }

class ParityTest : public ::testing::TestWithParam<Case> {};

TEST_P(ParityTest, LogitsMatchReference) {
  const Case& c = GetParam();
  const std::string base = "fixtures/parity/" + c.stem + "." + c.type;
  SQ_REQUIRE_SHARED(model_path, base + ".gguf");
  auto model = load_model(model_path);
  ThreadPool pool(2);
  const bool exact_type = c.type == "f32" || c.type == "f16";
  for (int n : {64, 200}) {
    SQ_REQUIRE_SHARED(tokens_path, "fixtures/parity/tokens-" + std::to_string(n) + ".bin");
    SQ_REQUIRE_SHARED(ref_path, base + ".logits-" + std::to_string(n) + ".bin");
    auto ids = read_ids(tokens_path);
    auto ref = read_floats(ref_path);
    const int V = model->config.n_vocab;
    ASSERT_EQ(ref.size(), ids.size() * static_cast<size_t>(V));
    KvCache kv(model->config, static_cast<int32_t>(ids.size()));
    std::vector<float> got(ref.size());
    model->forward(ids, 0, kv, pool, got, true);
    Stats s = compare(ref, got, V);
    const double median_bound = exact_type ? 1e-5 : 2e-3;
    const double mean_bound = exact_type ? 1e-5 : 1e-2;
    const double top1_bound = exact_type ? 0.99 : 0.90;
    EXPECT_LE(s.median_kl, median_bound) << base << " n=" << n;
    EXPECT_LE(s.mean_kl, mean_bound) << base << " n=" << n;
    EXPECT_GE(s.top1, top1_bound) << base << " n=" << n;
    std::printf("  %s n=%d: median KL %.3g, mean KL %.3g, top-1 %.3f (strict %.3f)\n", base.c_str(), n,
                s.median_kl, s.mean_kl, s.top1, s.top1_strict);
  }
}

std::vector<Case> all_cases() {
  std::vector<Case> out;
  for (const char* stem : {"llama-gqa", "llama-moe", "qwen2-tied"}) {
    for (const char* type : {"f32", "f16", "bf16", "q8_0", "q6_k", "q4_k_m", "q4_0"}) {
      out.push_back({stem, type});
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ParityTest, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           std::string name = info.param.stem + "_" + info.param.type;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace sq
