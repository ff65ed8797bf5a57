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

int64_t group_blocks(int64_t nb, int64_t g) { return nb - kPackGroup * g < kPackGroup ? nb - kPackGroup * g : kPackGroup; }

}  // namespace

std::optional<GgmlType> packed_type(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0: return GgmlType::Q4_0_X16;
    case GgmlType::Q4_1: return GgmlType::Q4_1_X16;
    case GgmlType::Q5_0: return GgmlType::Q5_0_X16;
    case GgmlType::Q5_1: return GgmlType::Q5_1_X16;
    case GgmlType::Q8_0: return GgmlType::Q8_0_X16;
    default: return std::nullopt;
  }
}

GgmlType unpacked_type(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0_X16: return GgmlType::Q4_0;
    case GgmlType::Q4_1_X16: return GgmlType::Q4_1;
    case GgmlType::Q5_0_X16: return GgmlType::Q5_0;
    case GgmlType::Q5_1_X16: return GgmlType::Q5_1;
    case GgmlType::Q8_0_X16: return GgmlType::Q8_0;
    default: return t;
  }
}

bool is_packed_type(GgmlType t) { return unpacked_type(t) != t; }

void unpack_group(GgmlType packed, const void* row, int64_t nb, int64_t g, void* blocks) {
  const Geometry geo = geometry(packed);
  const uint8_t* group = static_cast<const uint8_t*>(row) + static_cast<size_t>(g * kPackGroup) * geo.block_bytes;
  convert_group<false>(geo, group, static_cast<uint8_t*>(blocks), group_blocks(nb, g));
}

void pack_group(GgmlType packed, const void* blocks, int64_t nb, int64_t g, void* row) {
  const Geometry geo = geometry(packed);
  uint8_t* group = static_cast<uint8_t*>(row) + static_cast<size_t>(g * kPackGroup) * geo.block_bytes;
  convert_group<true>(geo, static_cast<const uint8_t*>(blocks), group, group_blocks(nb, g));
}

void pack_row(GgmlType packed, const void* src, void* dst, int64_t n) {
  const Geometry geo = geometry(packed);
  const int64_t nb = n / kQK;
  for (int64_t g = 0; g * kPackGroup < nb; ++g) {
    pack_group(packed, static_cast<const uint8_t*>(src) + static_cast<size_t>(g * kPackGroup) * geo.block_bytes,
               nb, g, dst);
  }
}

void unpack_row(GgmlType packed, const void* src, void* dst, int64_t n) {
  const Geometry geo = geometry(packed);
  const int64_t nb = n / kQK;
  for (int64_t g = 0; g * kPackGroup < nb; ++g) {
    unpack_group(packed, src, nb, g, static_cast<uint8_t*>(dst) + static_cast<size_t>(g * kPackGroup) * geo.block_bytes);
  }
}

}  // namespace sq::kernels
