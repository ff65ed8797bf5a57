// The block layouts checked against tensors that llama.cpp quantized (fixtures/parity): every
// quantized tensor dequantizes to within its type's error of the same tensor in the f32 file, and
// squeeze's reference quantizers, run on the f32 tensor, reproduce llama.cpp's bytes exactly.
#include <cmath>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/quant.h"
#include "model/gguf.h"
#include "support.h"

namespace sq::kernels {
namespace {

struct FileCase {
  const char* stem;
  const char* suffix;
};

void PrintTo(const FileCase& c, std::ostream* os) { *os << c.stem << "." << c.suffix; }

std::string case_name(const testing::TestParamInfo<FileCase>& info) {
  std::string s = std::string(info.param.stem) + "_" + info.param.suffix;
  for (char& c : s) {
    if (c == '-') c = '_';
  }
  return s;
}

// Relative RMS error of llama.cpp's quantization of these random weights (measured: F16 0.021 %,
// BF16 0.17 %, Q8_0 0.54 %, Q6_K 1.78 %, Q4_K 7.17 %, Q4_0 8.67 %), with a small margin.
double error_bound(GgmlType t) {
  switch (t) {
    case GgmlType::F16: return 0.0003;
    case GgmlType::BF16: return 0.002;
    case GgmlType::Q8_0: return 0.006;
    case GgmlType::Q6_K: return 0.019;
    case GgmlType::Q4_K: return 0.075;
    case GgmlType::Q4_0: return 0.09;
    default: return 0.0;
  }
}

class RealFilesTest : public testing::TestWithParam<FileCase> {};

TEST_P(RealFilesTest, DequantizeAndRequantizeMatchLlamaCpp) {
  const FileCase c = GetParam();
  const std::string f32_rel = std::string("fixtures/parity/") + c.stem + ".f32.gguf";
  const std::string quant_rel = std::string("fixtures/parity/") + c.stem + "." + c.suffix + ".gguf";
  SQ_REQUIRE_SHARED(f32_path, f32_rel);
  SQ_REQUIRE_SHARED(quant_path, quant_rel);
  const GgufFile reference = GgufFile::open(f32_path);
  const GgufFile quantized = GgufFile::open(quant_path);

  int checked = 0;
  for (const GgufTensorInfo& t : quantized.tensors()) {
    if (t.type() == GgmlType::F32) continue;  // norms and biases stay f32
    SCOPED_TRACE(t.name + " " + type_name(t.type_id));
    ASSERT_TRUE(type_supported(t.type()));
    const GgufTensorInfo* ref = reference.tensor(t.name);
    ASSERT_NE(ref, nullptr);
    ASSERT_EQ(ref->type(), GgmlType::F32);
    ASSERT_EQ(ref->ne, t.ne);

    const auto n = static_cast<int64_t>(t.ne[0]);
    const auto rows = static_cast<int64_t>(t.rows());
    const size_t stride = row_bytes(t.type(), n);
    ASSERT_EQ(stride * static_cast<size_t>(rows), t.n_bytes);
    std::vector<float> want(static_cast<size_t>(n * rows));
    std::memcpy(want.data(), ref->data, want.size() * sizeof(float));

    // Their bytes, our dequantizer.
    std::vector<float> got(want.size());
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row(t.type(), t.data + r * stride, got.data() + r * n, n);
    }
    double err = 0, norm = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      err += (static_cast<double>(want[i]) - got[i]) * (static_cast<double>(want[i]) - got[i]);
      norm += static_cast<double>(want[i]) * want[i];
    }
    EXPECT_LE(std::sqrt(err / norm), error_bound(t.type()));

    // Our quantizer on their f32 weights gives their bytes, block for block.
    std::vector<uint8_t> ours(t.n_bytes);
    for (int64_t r = 0; r < rows; ++r) {
      quantize_row(t.type(), want.data() + r * n, ours.data() + r * stride, n);
    }
    const size_t block_bytes = type_info(t.type())->block_bytes;
    size_t differing = 0;
    for (size_t b = 0; b < ours.size() / block_bytes; ++b) {
      if (std::memcmp(ours.data() + b * block_bytes, t.data + b * block_bytes, block_bytes) != 0) {
        ++differing;
      }
    }
    EXPECT_EQ(differing, 0u) << "of " << ours.size() / block_bytes << " blocks";

    // The dot product on a real row agrees with the dequantized row in double.
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) x[i] = std::sin(0.37f * static_cast<float>(i));
    const int64_t r = rows / 2;
    double exact = 0, magnitude = 0;
    for (int64_t i = 0; i < n; ++i) {
      exact += static_cast<double>(got[r * n + i]) * x[i];
      magnitude += std::fabs(static_cast<double>(got[r * n + i]) * x[i]);
    }
    EXPECT_NEAR(dot_row(t.type(), t.data + r * stride, x.data(), n), exact, 1e-6 * magnitude);
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Parity, RealFilesTest,
    testing::Values(FileCase{"llama-gqa", "f16"}, FileCase{"llama-gqa", "bf16"},
                    FileCase{"llama-gqa", "q8_0"}, FileCase{"llama-gqa", "q6_k"},
                    FileCase{"llama-gqa", "q4_k_m"}, FileCase{"llama-gqa", "q4_0"},
                    FileCase{"qwen2-tied", "f16"}, FileCase{"qwen2-tied", "bf16"},
                    FileCase{"qwen2-tied", "q8_0"}, FileCase{"qwen2-tied", "q6_k"},
                    FileCase{"qwen2-tied", "q4_k_m"}, FileCase{"qwen2-tied", "q4_0"},
                    FileCase{"llama-moe", "f16"}, FileCase{"llama-moe", "bf16"},
                    FileCase{"llama-moe", "q8_0"}, FileCase{"llama-moe", "q6_k"},
                    FileCase{"llama-moe", "q4_k_m"}, FileCase{"llama-moe", "q4_0"}),
    case_name);

}  // namespace
}  // namespace sq::kernels
