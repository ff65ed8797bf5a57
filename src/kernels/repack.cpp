#include "kernels/repack.h"

#include <cassert>
#include <cstring>

#include "kernels/blocks.h"

namespace sq::kernels {

namespace {

struct Geometry {
  size_t block_bytes;  // 18, 20, 22, 24 or 34
  size_t quant_bytes;  // 16 or 32
  uint8_t flip;        // xor applied to the stored quant bytes
  bool min;            // Q4_1, Q5_1: an fp16 min after the scale
  bool high_bits;      // Q5_0, Q5_1: a 4-byte word of high bits before the quants
};

Geometry geometry(GgmlType packed) {
  switch (packed) {
    case GgmlType::Q4_0_X16: return {sizeof(BlockQ4_0), kQK / 2, 0, false, false};
    case GgmlType::Q4_1_X16: return {sizeof(BlockQ4_1), kQK / 2, 0, true, false};
    case GgmlType::Q5_0_X16: return {sizeof(BlockQ5_0), kQK / 2, 0, false, true};
    case GgmlType::Q5_1_X16: return {sizeof(BlockQ5_1), kQK / 2, 0, true, true};
    case GgmlType::Q8_0_X16: return {sizeof(BlockQ8_0), kQK, 0x80, false, false};
    default: break;
  }
  assert(false && "not a packed type");
  return {};
}

// Q5_0's and Q5_1's high bits (bit j: element j) rearranged for the planes: bit 8k + u holds element
// 4u + k's (the low nibble of quant byte 4u + k) and bit 8k + 4 + u element 16 + 4u + k's (its high
// nibble), u, k = 0..3. So for plane u, shifting the word left by 4 - u (or right by u) puts the
// high bits of the plane's low (or high) nibbles at bit 4 of their bytes.
uint32_t spread_high_bits(uint32_t qh) {
  uint32_t r = 0;
  for (uint32_t u = 0; u < 4; ++u) {
    for (uint32_t k = 0; k < 4; ++k) {
      r |= ((qh >> (4 * u + k)) & 1u) << (8 * k + u);
      r |= ((qh >> (16 + 4 * u + k)) & 1u) << (8 * k + 4 + u);
    }
  }
  return r;
}

uint32_t gather_high_bits(uint32_t r) {
  uint32_t qh = 0;
  for (uint32_t u = 0; u < 4; ++u) {
    for (uint32_t k = 0; k < 4; ++k) {
      qh |= ((r >> (8 * k + u)) & 1u) << (4 * u + k);
      qh |= ((r >> (8 * k + 4 + u)) & 1u) << (16 + 4 * u + k);
    }
  }
  return qh;
}

// Standard blocks -> packed group (kPack) or packed group -> standard blocks, a 4-byte word at a
// time: word u of block i's quants is word i of plane u (flipped by xor with `flip` in every byte).
// The scales come first, then the mins (Q4_1, Q5_1), then the high-bit words (spread_high_bits) as
// one more plane (Q5_0, Q5_1), then the quant planes; within a block, the same fields in the same
// order.
template <bool kPack>
void convert_group(const Geometry& geo, const uint8_t* from, uint8_t* to, int64_t count) {
  const size_t c = static_cast<size_t>(count);
  const uint32_t flip = geo.flip * 0x01010101u;
  const size_t hb = geo.min ? 4 : 2;                    // offset of the high bits, in a block
  const size_t head = hb + (geo.high_bits ? 4 : 0);     // bytes before the quants, in a block
  const size_t planes = head * c;                       // bytes before the quant planes, in a group
  // Field at `in_block` of block i, `bytes` long, whose copies in the group start at `in_group`.
  auto field = [&](size_t i, size_t in_block, size_t in_group, size_t bytes, uint32_t (*fn)(uint32_t)) {
    const size_t b = i * geo.block_bytes + in_block, p = in_group + bytes * i;
    if (fn == nullptr) {
      std::memcpy(to + (kPack ? p : b), from + (kPack ? b : p), bytes);
    } else {
      uint32_t word;
      std::memcpy(&word, from + (kPack ? b : p), 4);
      word = fn(word);
      std::memcpy(to + (kPack ? p : b), &word, 4);
    }
  };
  for (size_t i = 0; i < c; ++i) {
    const size_t block = i * geo.block_bytes;
    field(i, 0, 0, 2, nullptr);
    if (geo.min) field(i, 2, 2 * c, 2, nullptr);
    if (geo.high_bits) field(i, hb, hb * c, 4, kPack ? spread_high_bits : gather_high_bits);
    for (size_t u = 0; u < geo.quant_bytes / 4; ++u) {
      const size_t in_block = block + head + 4 * u;
      const size_t in_plane = planes + 4 * c * u + 4 * i;
      uint32_t word;
      std::memcpy(&word, from + (kPack ? in_block : in_plane), 4);
      word ^= flip;
      std::memcpy(to + (kPack ? in_plane : in_block), &word, 4);
    }
  }
}

// Q4_Kx4 and Q5_Kx4 (kQ5): standard blocks -> packed group (kPack) or back. Block i's 16-byte head
// goes to 16i; byte 4m + j of its quant chunk k (j = 0..3) to plane m, at 16i + 4k + j; Q5_K's
// fifth bits to the two regions before the planes, as kernels/repack.h says.
template <bool kQ5, bool kPack>
void convert_k4_group(const uint8_t* from, uint8_t* to, int64_t count) {
  const size_t c = static_cast<size_t>(count);
  constexpr size_t kHead = 16, kQh = kQ5 ? 32 : 0, kBlock = kQ5 ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
  const size_t planes = (kHead + kQh) * c;
  for (size_t i = 0; i < c; ++i) {
    const size_t b = i * kBlock, h = i * kHead;
    std::memcpy(to + (kPack ? h : b), from + (kPack ? b : h), kHead);
    for (size_t k = 0; k < 4; ++k) {
      for (size_t m = 0; m < 8; ++m) {
        const size_t in_block = b + kHead + kQh + 32 * k + 4 * m;
        const size_t in_plane = planes + 16 * c * m + 16 * i + 4 * k;
        std::memcpy(to + (kPack ? in_plane : in_block), from + (kPack ? in_block : in_plane), 4);
      }
    }
    if constexpr (kQ5) {
      // The block's 32 bytes of qh, four bytes (j = 0..3) at a time: qh word u of half x holds
      // the fifth bits of plane 4x + u, bits 2k and 2k + 1 of byte j for element 4j.. of chunk k's
      // low and high nibbles; the region word (x, k) holds them at bits u and 4 + u of byte j (words
      // little-endian: byte j is bits 8j..8j + 7).
      const uint8_t* qh = from + b + kHead;  // read when packing
      constexpr uint32_t kOnes = 0x01010101u;
      for (size_t x = 0; x < 2; ++x) {
        uint32_t q[4] = {};
        if (kPack) std::memcpy(q, qh + 16 * x, sizeof q);
        for (size_t k = 0; k < 4; ++k) {
          const size_t at = kHead * c + 16 * c * x + 16 * i + 4 * k;
          uint32_t region = 0;
          if (!kPack) std::memcpy(&region, from + at, 4);
          for (size_t u = 0; u < 4; ++u) {
            if (kPack) {
              region |= ((q[u] >> (2 * k)) & kOnes) << u;
              region |= ((q[u] >> (2 * k + 1)) & kOnes) << (4 + u);
            } else {
              q[u] |= ((region >> u) & kOnes) << (2 * k);
              q[u] |= ((region >> (4 + u)) & kOnes) << (2 * k + 1);
            }
          }
          if (kPack) std::memcpy(to + at, &region, 4);
        }
        if (!kPack) std::memcpy(to + b + kHead + 16 * x, q, sizeof q);
      }
    }
  }
}

int64_t group_blocks(GgmlType packed, int64_t nb, int64_t g) {
  const int64_t G = pack_group_blocks(packed);
  return nb - G * g < G ? nb - G * g : G;
}

size_t unpacked_block_bytes(GgmlType packed) { return type_info(unpacked_type(packed))->block_bytes; }

template <bool kPack>
void convert(GgmlType packed, const uint8_t* from, uint8_t* to, int64_t count) {
  if (packed == GgmlType::Q4_K_X4) {
    convert_k4_group<false, kPack>(from, to, count);
  } else if (packed == GgmlType::Q5_K_X4) {
    convert_k4_group<true, kPack>(from, to, count);
  } else {
    convert_group<kPack>(geometry(packed), from, to, count);
  }
}

}  // namespace

std::optional<GgmlType> packed_type(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return GgmlType::Q4_0_X16;
    case GgmlType::Q4_1: return GgmlType::Q4_1_X16;
    case GgmlType::Q5_0: return GgmlType::Q5_0_X16;
    case GgmlType::Q5_1: return GgmlType::Q5_1_X16;
    case GgmlType::Q8_0: return GgmlType::Q8_0_X16;
    case GgmlType::Q4_K: return GgmlType::Q4_K_X4;
    case GgmlType::Q5_K: return GgmlType::Q5_K_X4;
    default: return std::nullopt;
  }
}

std::optional<GgmlType> load_layout(GgmlType t, int64_t rows, int64_t cols, Isa isa) {
  if (isa == Isa::Avx512Vnni && rows % 16 == 0) {
    if (t == GgmlType::Q8_0) return GgmlType::Q8_0_R16;
    if (t == GgmlType::Q4_0 && cols <= kQ4R16MaxCols) return GgmlType::Q4_0_R16;
  }
  if (isa == Isa::Avx512 || isa == Isa::Avx512Vnni) return packed_type(t);
  return std::nullopt;
}

namespace {

// The geometry of an interleaved layout: its standard block's bytes, the quant bytes in it (after
// the fp16 scale) and the xor its stored quants carry.
struct R16Geometry {
  size_t block_bytes;
  size_t quant_bytes;
  uint32_t flip;
  size_t pair() const { return 64 + 2 * 16 * quant_bytes; }  // a pair of blocks of sixteen rows
  size_t scales_at(int64_t b) const { return static_cast<size_t>(b / 2) * pair() + 32 * static_cast<size_t>(b % 2); }
  size_t planes_at(int64_t nb, int64_t b) const {
    const size_t at = static_cast<size_t>(b / 2) * pair();
    if (b % 2 == 0 && b == nb - 1) return at + 32;  // the lone last block of an odd count
    return at + 64 + 16 * quant_bytes * static_cast<size_t>(b % 2);
  }
};

R16Geometry r16_geometry(GgmlType r16) {
  if (r16 == GgmlType::Q4_0_R16) return {sizeof(BlockQ4_0), kQK / 2, 0};
  assert(r16 == GgmlType::Q8_0_R16 && "not an interleaved layout");
  return {sizeof(BlockQ8_0), kQK, 0x80808080u};
}

}  // namespace

void pack_rows_r16(GgmlType r16, const void* src, size_t stride, int64_t rows, void* dst, int64_t n) {
  assert(rows >= 0 && rows <= 16 && n % kQK == 0);
  const R16Geometry geo = r16_geometry(r16);
  const int64_t nb = n / kQK;
  auto* out = static_cast<uint8_t*>(dst);
  std::memset(out, 0, 16 * static_cast<size_t>(nb) * geo.block_bytes);
  for (int64_t i = 0; i < 16; ++i) {
    // Rows past `rows` keep the zero scales and get zero quants (stored as the flip).
    const uint8_t* row = i < rows ? static_cast<const uint8_t*>(src) + static_cast<size_t>(i) * stride : nullptr;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = row != nullptr ? row + static_cast<size_t>(b) * geo.block_bytes : nullptr;
      if (blk != nullptr) std::memcpy(out + geo.scales_at(b) + 2 * static_cast<size_t>(i), blk, 2);
      uint8_t* planes = out + geo.planes_at(nb, b);
      for (size_t u = 0; u < geo.quant_bytes / 4; ++u) {
        uint32_t word = 0;
        if (blk != nullptr) std::memcpy(&word, blk + 2 + 4 * u, 4);
        word ^= geo.flip;
        std::memcpy(planes + 64 * u + 4 * static_cast<size_t>(i), &word, 4);
      }
    }
  }
}

void unpack_block_r16(GgmlType r16, const void* group, int64_t nb, int64_t lane, int64_t b, void* block) {
  assert(lane >= 0 && lane < 16 && b >= 0 && b < nb);
  const R16Geometry geo = r16_geometry(r16);
  const auto* in = static_cast<const uint8_t*>(group);
  auto* blk = static_cast<uint8_t*>(block);
  std::memcpy(blk, in + geo.scales_at(b) + 2 * static_cast<size_t>(lane), 2);
  const uint8_t* planes = in + geo.planes_at(nb, b);
  for (size_t u = 0; u < geo.quant_bytes / 4; ++u) {
    uint32_t word;
    std::memcpy(&word, planes + 64 * u + 4 * static_cast<size_t>(lane), 4);
    word ^= geo.flip;
    std::memcpy(blk + 2 + 4 * u, &word, 4);
  }
}

void unpack_row_r16(GgmlType r16, const void* group, int64_t lane, void* dst, int64_t n) {
  const int64_t nb = n / kQK;
  const size_t bb = r16_geometry(r16).block_bytes;
  for (int64_t b = 0; b < nb; ++b) {
    unpack_block_r16(r16, group, nb, lane, b, static_cast<uint8_t*>(dst) + static_cast<size_t>(b) * bb);
  }
}

GgmlType unpacked_type(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0_X16: return GgmlType::Q4_0;
    case GgmlType::Q4_1_X16: return GgmlType::Q4_1;
    case GgmlType::Q5_0_X16: return GgmlType::Q5_0;
    case GgmlType::Q5_1_X16: return GgmlType::Q5_1;
    case GgmlType::Q8_0_X16: return GgmlType::Q8_0;
    case GgmlType::Q8_0_R16: return GgmlType::Q8_0;
    case GgmlType::Q4_0_R16: return GgmlType::Q4_0;
    case GgmlType::Q4_K_X4: return GgmlType::Q4_K;
    case GgmlType::Q5_K_X4: return GgmlType::Q5_K;
    default: return t;
  }
}

bool is_packed_type(GgmlType t) { return unpacked_type(t) != t; }

void unpack_group(GgmlType packed, const void* row, int64_t nb, int64_t g, void* blocks) {
  const size_t first = static_cast<size_t>(g * pack_group_blocks(packed));
  const uint8_t* group = static_cast<const uint8_t*>(row) + first * unpacked_block_bytes(packed);
  convert<false>(packed, group, static_cast<uint8_t*>(blocks), group_blocks(packed, nb, g));
}

void pack_group(GgmlType packed, const void* blocks, int64_t nb, int64_t g, void* row) {
  const size_t first = static_cast<size_t>(g * pack_group_blocks(packed));
  uint8_t* group = static_cast<uint8_t*>(row) + first * unpacked_block_bytes(packed);
  convert<true>(packed, static_cast<const uint8_t*>(blocks), group, group_blocks(packed, nb, g));
}

void pack_row(GgmlType packed, const void* src, void* dst, int64_t n) {
  const size_t bb = unpacked_block_bytes(packed);
  const int64_t nb = n / type_info(packed)->block_elems, G = pack_group_blocks(packed);
  for (int64_t g = 0; g * G < nb; ++g) {
    pack_group(packed, static_cast<const uint8_t*>(src) + static_cast<size_t>(g * G) * bb, nb, g, dst);
  }
}

void unpack_row(GgmlType packed, const void* src, void* dst, int64_t n) {
  const size_t bb = unpacked_block_bytes(packed);
  const int64_t nb = n / type_info(packed)->block_elems, G = pack_group_blocks(packed);
  for (int64_t g = 0; g * G < nb; ++g) {
    unpack_group(packed, src, nb, g, static_cast<uint8_t*>(dst) + static_cast<size_t>(g * G) * bb);
  }
}

}  // namespace sq::kernels
