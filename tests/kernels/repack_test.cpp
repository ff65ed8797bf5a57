// The load-time packed layouts (kernels/repack.h): packing is lossless and size-preserving, the
// packed layout puts scales and quant planes where the header says, and every kernel of a packed
// type gives the bits of its file type's kernel on the unpacked rows (the variants against ref are
// in isa_test.cpp).
#include <cstring>
#include <random>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/blocks.h"
#include "kernels/isa.h"
#include "kernels/quant.h"
#include "kernels/repack.h"

namespace sq::kernels {
namespace {

std::vector<uint8_t> quantized_row(GgmlType t, int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> f(static_cast<size_t>(n));
  for (auto& v : f) v = g(rng);
  std::vector<uint8_t> row(row_bytes(t, n));
  quantize_row(t, f.data(), row.data(), n);
  return row;
}

// Row lengths, in blocks of the file type: whole groups, and rows ending in short groups of every
// kind the kernels treat apart (x16: 1, 2, 3, 8 and 12 blocks; x4: 1, 2 and 3 blocks, and rows
// whose last eight blocks are 1-7, which the one-token kernel takes as a whole group and a short
// one).
std::vector<int64_t> row_lengths(GgmlType file_type) {
  const int64_t be = type_info(file_type)->block_elems;
  std::vector<int64_t> blocks = {1, 2, 3, 17, 28, 64, 152, 176};
  if (be == 256) blocks = {1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 19, 22};
  for (auto& b : blocks) b *= be;
  return blocks;
}

class RepackTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(RepackTest, RoundTripKeepsSizeAndBytes) {
  const GgmlType file_type = GetParam();
  const GgmlType packed = *packed_type(file_type);
  EXPECT_EQ(unpacked_type(packed), file_type);
  EXPECT_TRUE(is_packed_type(packed));
  EXPECT_FALSE(is_packed_type(file_type));
  for (int64_t n : row_lengths(file_type)) {
    EXPECT_EQ(row_bytes(packed, n), row_bytes(file_type, n));
    const auto row = quantized_row(file_type, n, static_cast<uint32_t>(n));
    std::vector<uint8_t> p(row.size(), 0xEE), back(row.size(), 0xEE);
    pack_row(packed, row.data(), p.data(), n);
    // (One Q4_0 block is its own packed group: scale, then its four 4-byte planes.)
    if (n > 32) {
      EXPECT_NE(0, std::memcmp(row.data(), p.data(), row.size())) << "n=" << n << ": packing moved nothing";
    }
    unpack_row(packed, p.data(), back.data(), n);
    ASSERT_EQ(0, std::memcmp(row.data(), back.data(), row.size())) << type_name(packed) << " n=" << n;
  }
}

// The layout itself, checked by hand on the first group and on a partial last group: the scales,
// the mins (Q4_1, Q5_1), the high-bit words (Q5_0, Q5_1), the quant planes.
TEST_P(RepackTest, LayoutIsScalesThenPlanes) {
  const GgmlType file_type = GetParam();
  // Q4_Kx4 and Q5_Kx4: Repack.Q4KLayoutIsHeadsThenPlanes, Repack.Q5KLayoutAddsFifthBitRegions
  if (file_type == GgmlType::Q4_K || file_type == GgmlType::Q5_K) return;
  const GgmlType packed = *packed_type(file_type);
  const size_t bb = row_bytes(file_type, 32);
  const bool q5 = file_type == GgmlType::Q5_0 || file_type == GgmlType::Q5_1;
  const bool min = file_type == GgmlType::Q4_1 || file_type == GgmlType::Q5_1;
  const size_t hb = min ? 4 : 2;           // offset of the high bits, in a block (after d and m)
  const size_t head = hb + (q5 ? 4 : 0);  // bytes before the quants, in a block
  const size_t qb = bb - head;
  const uint8_t flip = file_type == GgmlType::Q8_0 ? 0x80 : 0x00;
  const int64_t n = 32 * 21;  // one group of 16 and one of 5
  const auto row = quantized_row(file_type, n, 7);
  std::vector<uint8_t> p(row.size());
  pack_row(packed, row.data(), p.data(), n);
  for (int64_t b = 0; b < 21; ++b) {
    const size_t c = b < 16 ? 16 : 5;
    const size_t i = static_cast<size_t>(b % 16);
    const uint8_t* group = p.data() + (b < 16 ? 0 : 16 * bb);
    const uint8_t* block = row.data() + static_cast<size_t>(b) * bb;
    ASSERT_EQ(0, std::memcmp(group + 2 * i, block, 2)) << "scale of block " << b;
    if (min) {
      ASSERT_EQ(0, std::memcmp(group + 2 * c + 2 * i, block + 2, 2)) << "min of block " << b;
    }
    for (size_t k = 0; k < qb; ++k) {
      ASSERT_EQ(group[head * c + 4 * c * (k / 4) + 4 * i + k % 4], block[head + k] ^ flip)
          << "block " << b << " quant byte " << k;
    }
    if (q5) {
      // Element j's high bit (bit j of the block's word) at bit 8k + u (j = 4u + k < 16) or
      // 8k + 4 + u (j = 16 + 4u + k) of the group's word i.
      uint32_t qh = 0, spread = 0;
      std::memcpy(&qh, block + hb, 4);
      std::memcpy(&spread, group + hb * c + 4 * i, 4);
      for (int j = 0; j < 32; ++j) {
        const int u = (j % 16) / 4, k = j % 4;
        const int at = 8 * k + (j < 16 ? 0 : 4) + u;
        ASSERT_EQ((qh >> j) & 1u, (spread >> at) & 1u) << "block " << b << " element " << j;
      }
    }
  }
}

TEST_P(RepackTest, KernelsMatchTheFileType) {
  const GgmlType file_type = GetParam();
  const GgmlType packed = *packed_type(file_type);
  EXPECT_EQ(vec_dot_type(packed), vec_dot_type(file_type));
  const GgmlType vt = vec_dot_type(file_type);
  for (Isa isa : supported_isas()) {
    const WeightKernels& kf = table(isa).weight[weight_index(file_type)];
    const WeightKernels& kp = table(isa).weight[weight_index(packed)];
    for (int64_t n : row_lengths(file_type)) {
      const int64_t rows = 37, tokens = 11;
      const size_t rb = row_bytes(file_type, n);
      std::vector<uint8_t> w, wp(rb * rows);
      for (int64_t r = 0; r < rows; ++r) {
        const auto row = quantized_row(file_type, n, static_cast<uint32_t>(n * 10 + r));
        w.insert(w.end(), row.begin(), row.end());
        pack_row(packed, row.data(), wp.data() + rb * r, n);
      }
      std::vector<float> fx(static_cast<size_t>(n) * tokens);
      std::mt19937 rng(static_cast<uint32_t>(n));
      std::normal_distribution<float> g(0.0f, 2.0f);
      for (auto& v : fx) v = g(rng);
      const size_t xb = row_bytes(vt, n);
      std::vector<uint8_t> qx(xb * tokens);
      for (int64_t t = 0; t < tokens; ++t) quantize_activation(vt, fx.data() + n * t, qx.data() + xb * t, n);

      std::vector<float> a(rows * tokens), b(rows * tokens, -1.0f);
      kf.dot_tile(w.data(), rb, rows, qx.data(), xb, tokens, n, a.data(), rows);
      kp.dot_tile(wp.data(), rb, rows, qx.data(), xb, tokens, n, b.data(), rows);
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << isa_name(isa) << " n=" << n;
      kp.dot_rows(wp.data(), rb, rows, qx.data(), n, b.data());
      ASSERT_EQ(0, std::memcmp(a.data(), b.data(), rows * sizeof(float))) << isa_name(isa) << " n=" << n;
      // Fewer rows, from the first or the second: the one-token kernel may read a call's rows in
      // two halves alternately, with one row left over when the count is odd, and folds them
      // sixteen at a time.
      for (int64_t start : {0, 1}) {
        for (int64_t count : {1, 2, 3, 8, 16, 17, 32, 33, 36}) {
          std::vector<float> c(static_cast<size_t>(count), -1.0f);
          kp.dot_rows(wp.data() + rb * start, rb, count, qx.data(), n, c.data());
          ASSERT_EQ(0, std::memcmp(a.data() + start, c.data(), c.size() * sizeof(float)))
              << isa_name(isa) << " n=" << n << " rows " << start << ".." << start + count;
        }
      }

      std::vector<float> da(static_cast<size_t>(n)), dp(static_cast<size_t>(n));
      dequantize_row(file_type, w.data(), da.data(), n);
      dequantize_row(packed, wp.data(), dp.data(), n);
      ASSERT_EQ(0, std::memcmp(da.data(), dp.data(), da.size() * sizeof(float))) << "n=" << n;
      const float e1 = dot_row(file_type, w.data(), fx.data(), n);
      const float e2 = dot_row(packed, wp.data(), fx.data(), n);
      ASSERT_EQ(0, std::memcmp(&e1, &e2, sizeof e1)) << "n=" << n;
    }
  }
}

// The one-token kernel reads a row's short last group with loads that run on past the row, into
// the next rows of the call; nothing past the call's last row may be read. Each call's rows end
// right before a page that cannot be read, so a read past them ends the test with SIGSEGV.
TEST_P(RepackTest, OneTokenKernelReadsNothingPastItsRows) {
  const GgmlType file_type = GetParam();
  const GgmlType packed = *packed_type(file_type);
  const GgmlType vt = vec_dot_type(file_type);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  for (int64_t n : row_lengths(file_type)) {
    const size_t rb = row_bytes(file_type, n);
    const int64_t rows = 40;
    const size_t span = (rb * rows + page - 1) / page * page;
    void* map = mmap(nullptr, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(map, MAP_FAILED);
    auto* base = static_cast<uint8_t*>(map);
    ASSERT_EQ(0, mprotect(base + span, page, PROT_NONE));
    uint8_t* wp = base + span - rb * rows;  // the last row ends at the unreadable page
    std::vector<uint8_t> w(rb * rows);
    for (int64_t r = 0; r < rows; ++r) {
      const auto row = quantized_row(file_type, n, static_cast<uint32_t>(n * 7 + r));
      std::memcpy(w.data() + rb * r, row.data(), rb);
      pack_row(packed, row.data(), wp + rb * r, n);
    }
    std::vector<float> fx(static_cast<size_t>(n));
    std::mt19937 rng(static_cast<uint32_t>(n + 1));
    std::normal_distribution<float> g(0.0f, 1.0f);
    for (auto& v : fx) v = g(rng);
    std::vector<uint8_t> qx(row_bytes(vt, n));
    quantize_activation(vt, fx.data(), qx.data(), n);
    for (Isa isa : supported_isas()) {
      std::vector<float> want(rows);
      table(isa).weight[weight_index(file_type)].dot_rows(w.data(), rb, rows, qx.data(), n, want.data());
      // Calls of several lengths, each ending at the page.
      for (int64_t count : {int64_t{1}, int64_t{2}, int64_t{5}, int64_t{17}, rows}) {
        std::vector<float> got(static_cast<size_t>(count), -1.0f);
        table(isa).weight[weight_index(packed)].dot_rows(wp + rb * (rows - count), rb, count, qx.data(), n,
                                                         got.data());
        ASSERT_EQ(0, std::memcmp(want.data() + rows - count, got.data(), got.size() * sizeof(float)))
            << type_name(packed) << " " << isa_name(isa) << " n=" << n << " count=" << count;
      }
    }
    munmap(map, span + page);
  }
}

// Packs a row of nb blocks of a K type into its x4 layout and calls check(b, c, i, group, block) for
// each block b (c: blocks in its group, i: its place there), after checking that its 16-byte head
// (d, dmin, scales and mins) is the group's i-th.
template <class Check>
void check_x4_blocks(GgmlType file_type, int64_t nb, uint32_t seed, Check check) {
  const int64_t n = 256 * nb;
  const size_t bb = type_info(file_type)->block_bytes;
  const auto row = quantized_row(file_type, n, seed);
  std::vector<uint8_t> p(row.size());
  pack_row(*packed_type(file_type), row.data(), p.data(), n);
  for (int64_t b = 0; b < nb; ++b) {
    const size_t c = static_cast<size_t>(nb - b / 4 * 4 < 4 ? nb - b / 4 * 4 : 4);
    const size_t i = static_cast<size_t>(b % 4);
    const uint8_t* group = p.data() + static_cast<size_t>(b / 4) * 4 * bb;
    const uint8_t* block = row.data() + static_cast<size_t>(b) * bb;
    ASSERT_EQ(0, std::memcmp(group + 16 * i, block, 16)) << "head of block " << b;
    check(b, c, i, group, block);
  }
}

// Q4_Kx4 by hand, on a row of two whole groups and one of three blocks: each block's first 16
// bytes in block order, then plane m with chunk k's bytes 4m..4m+3 of block i at 16i + 4k.
TEST(Repack, Q4KLayoutIsHeadsThenPlanes) {
  check_x4_blocks(GgmlType::Q4_K, 11, 5, [](int64_t b, size_t c, size_t i, const uint8_t* group,
                                            const uint8_t* block) {
    for (size_t q = 0; q < 128; ++q) {
      const size_t k = q / 32, m = (q % 32) / 4;
      ASSERT_EQ(group[16 * c + 16 * c * m + 16 * i + 4 * k + q % 4], block[16 + q])
          << "block " << b << " quant byte " << q;
    }
  });
}

// Q5_Kx4 by hand, on a row of one whole group and one of three blocks: the heads, the two regions
// of fifth bits (byte 16i + 4k + j of region x: bit u is bit 2k of qh[4(4x + u) + j], bit 4 + u is
// bit 2k + 1), then the planes as Q4_Kx4's.
TEST(Repack, Q5KLayoutAddsFifthBitRegions) {
  check_x4_blocks(GgmlType::Q5_K, 7, 11, [](int64_t b, size_t c, size_t i, const uint8_t* group,
                                            const uint8_t* block) {
    for (size_t x = 0; x < 2; ++x) {
      for (size_t k = 0; k < 4; ++k) {
        for (size_t j = 0; j < 4; ++j) {
          const uint8_t spread = group[16 * c + 16 * c * x + 16 * i + 4 * k + j];
          for (size_t u = 0; u < 4; ++u) {
            const uint8_t qh = block[16 + 4 * (4 * x + u) + j];
            ASSERT_EQ((qh >> (2 * k)) & 1, (spread >> u) & 1) << "block " << b << " x " << x << " k " << k;
            ASSERT_EQ((qh >> (2 * k + 1)) & 1, (spread >> (4 + u)) & 1) << "block " << b << " x " << x;
          }
        }
      }
    }
    for (size_t q = 0; q < 128; ++q) {
      const size_t k = q / 32, m = (q % 32) / 4;
      ASSERT_EQ(group[48 * c + 16 * c * m + 16 * i + 4 * k + q % 4], block[48 + q])
          << "block " << b << " quant byte " << q;
    }
  });
}

// Q8_0_R16 and Q4_0_R16 against the layout kernels/repack.h describes, byte by byte (written out
// here, not through the unpacker), for an even and an odd block count (a lone last block), with
// the rows past a short group zero; and every row unpacked back as it was.
TEST(Repack, R16KeepsSixteenRowsInLanes) {
  for (GgmlType r16 : {GgmlType::Q8_0_R16, GgmlType::Q4_0_R16}) {
    const bool q8 = r16 == GgmlType::Q8_0_R16;
    const size_t bb = q8 ? 34 : 18, qb = bb - 2;
    for (int64_t nb : {4, 5}) {
      const int64_t n = 32 * nb, rows = 13;
      const size_t rb = row_bytes(r16, n);
      ASSERT_EQ(rb, bb * static_cast<size_t>(nb));
      std::vector<uint8_t> src(rb * rows);
      std::mt19937 rng(static_cast<uint32_t>(nb));
      for (auto& v : src) v = static_cast<uint8_t>(rng());
      std::vector<uint8_t> group(16 * rb, 0xCD);
      pack_rows_r16(r16, src.data(), rb, rows, group.data(), n);
      const size_t pair = 64 + 32 * qb;
      for (int64_t b = 0; b < nb; ++b) {
        const size_t at = static_cast<size_t>(b / 2) * pair;
        const size_t scales = at + 32 * static_cast<size_t>(b % 2);
        const size_t planes = nb % 2 == 1 && b == nb - 1 ? at + 32 : at + 64 + 16 * qb * static_cast<size_t>(b % 2);
        for (int64_t i = 0; i < 16; ++i) {
          const uint8_t* blk = src.data() + rb * static_cast<size_t>(i) + bb * static_cast<size_t>(b);
          for (size_t h = 0; h < 2; ++h) {
            ASSERT_EQ(group[scales + 2 * static_cast<size_t>(i) + h], i < rows ? blk[h] : 0)
                << type_name(r16) << " block " << b << " row " << i;
          }
          for (size_t q = 0; q < qb; ++q) {
            const uint8_t flip = q8 ? 0x80 : 0;
            const uint8_t want = i < rows ? static_cast<uint8_t>(blk[2 + q] ^ flip) : flip;
            ASSERT_EQ(group[planes + 64 * (q / 4) + 4 * static_cast<size_t>(i) + q % 4], want)
                << type_name(r16) << " block " << b << " row " << i << " quant " << q;
          }
        }
      }
      for (int64_t i = 0; i < rows; ++i) {
        std::vector<uint8_t> back(rb);
        unpack_row_r16(r16, group.data(), i, back.data(), n);
        ASSERT_EQ(0, std::memcmp(back.data(), src.data() + rb * static_cast<size_t>(i), rb)) << "row " << i;
      }
    }
  }
  EXPECT_EQ(interleaved_rows(GgmlType::Q8_0_R16), 16);
  EXPECT_EQ(interleaved_rows(GgmlType::Q4_0_R16), 16);
  EXPECT_EQ(interleaved_rows(GgmlType::Q8_0_X16), 1);
  EXPECT_EQ(load_layout(GgmlType::Q8_0, 32, 4096, Isa::Avx512Vnni), GgmlType::Q8_0_R16);
  EXPECT_EQ(load_layout(GgmlType::Q4_0, 32, 896, Isa::Avx512Vnni), GgmlType::Q4_0_R16);
  EXPECT_EQ(load_layout(GgmlType::Q4_0, 32, kQ4R16MaxCols + 32, Isa::Avx512Vnni), GgmlType::Q4_0_X16);
  EXPECT_EQ(load_layout(GgmlType::Q8_0, 40, 896, Isa::Avx512Vnni), GgmlType::Q8_0_X16);
  EXPECT_EQ(load_layout(GgmlType::Q4_0, 40, 896, Isa::Avx512Vnni), GgmlType::Q4_0_X16);
  EXPECT_EQ(load_layout(GgmlType::Q8_0, 32, 896, Isa::Avx512), GgmlType::Q8_0_X16);
  EXPECT_EQ(load_layout(GgmlType::Q5_0, 32, 896, Isa::Avx512Vnni), GgmlType::Q5_0_X16);
  EXPECT_FALSE(load_layout(GgmlType::Q8_0, 32, 896, Isa::Avx2).has_value());
  EXPECT_FALSE(type_from_name("Q8_0r16").has_value());
  EXPECT_FALSE(type_from_name("Q4_0r16").has_value());
}

TEST(Repack, InternalTypesStayOutOfFiles) {
  EXPECT_TRUE(type_internal(GgmlType::Q4_0_X16));
  EXPECT_FALSE(type_internal(GgmlType::Q4_0));
  EXPECT_FALSE(type_from_name("Q4_0x16").has_value());
  EXPECT_EQ(type_name(GgmlType::Q8_0_X16), "Q8_0x16");
  EXPECT_TRUE(type_internal(GgmlType::Q4_K_X4));
  EXPECT_FALSE(type_from_name("Q4_Kx4").has_value());
  EXPECT_EQ(type_name(GgmlType::Q4_K_X4), "Q4_Kx4");
  EXPECT_EQ(type_name(GgmlType::Q5_K_X4), "Q5_Kx4");
}

INSTANTIATE_TEST_SUITE_P(Types, RepackTest,
                         ::testing::Values(GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                                           GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K),
                         [](const auto& info) { return type_name(info.param); });

}  // namespace
}  // namespace sq::kernels
