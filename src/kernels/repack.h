// Load-time weight layouts, which the 512-bit kernels read without shuffling.
//
// "x16": a matrix of Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0 blocks is regrouped, row by row: each row's
// blocks go in groups of sixteen (the last group of a row holds the remaining c < 16 blocks), and
// a group of c blocks stores
//   - the c fp16 scales, in block order (2c bytes);
//   - for Q4_1 and Q5_1, the c fp16 mins, in block order (2c bytes);
//   - for Q5_0 and Q5_1, each block's 32 high bits, rearranged (bit 8k + u: element 4u + k's, bit
//     8k + 4 + u: element 16 + 4u + k's, u, k = 0..3) so that one shift and mask of the word gives
//     the high bits of a plane's nibbles (4c bytes);
//   - then the quants in "planes": plane u holds bytes 4u..4u+3 of each block's quant bytes, block
//     after block (4c bytes per plane; 4 planes for the 4- and 5-bit types' 16 quant bytes, 8 for
//     Q8_0's 32).
// Q8_0's quant bytes are stored offset by 128 (as unsigned bytes, x ^ 0x80), the operand dpbusd
// takes. With this layout a 64-byte load is one plane of sixteen blocks, and the int32 lanes of a
// dpbusd over the eight planes (against activations prepared the same way) are the sixteen blocks'
// sums, with no transposition.
//
// "Q4_Kx4": a row of Q4_K blocks goes in groups of four (the last holds the remaining c < 4), and a
// group of c blocks stores
//   - each block's first 16 bytes (d, dmin and the 12 bytes of packed scales and mins), in block
//     order (16c bytes);
//   - then eight planes of 16c bytes: plane m holds, for block i and 32-byte chunk k = 0..3 of its
//     128 quant bytes, the chunk's bytes 4m..4m+3 at 16i + 4k.
// A chunk's low nibbles are one 32-element sub-block and its high nibbles the next, so in a whole
// group's eight 64-byte planes, int32 lane 4i + k sees only the sub-blocks 2k and 2k + 1 of block
// i: dpbusd over the planes accumulates each sub-block's sum in its own lane, again with no
// transposition (Q4_K's file layout needs one per block).
//
// "Q5_Kx4": Q5_K as Q4_Kx4, with the blocks' fifth bits between the heads and the planes: two
// regions of 16c bytes, the first for planes 0-3 and the second for planes 4-7, whose byte at
// 16i + 4k + j holds, in bit m % 4, the fifth bit of plane m's low nibble at that place (bit 2k of
// the block's qh[4m + j]) and in bit 4 + m % 4 that of its high nibble (bit 2k + 1). So a plane's
// fifth bits are one shift and mask of a region's vector away.
//
// A group takes exactly the bytes of the blocks it replaces, so rows keep their size and row r
// still starts at r * row_bytes: row splits, strides and sizes are those of the file. The integer
// sums and the float steps are those of quant.h, so the results are bit-identical to the unpacked
// type's.
#pragma once

#include <cstdint>
#include <optional>

#include "kernels/types.h"

namespace sq::kernels {

inline constexpr int64_t kPackGroup = 16;  // the most blocks in a group (x16)

// Blocks per group of a packed layout: 16, or 4 for Q4_Kx4 and Q5_Kx4.
constexpr int64_t pack_group_blocks(GgmlType packed) {
  return packed == GgmlType::Q4_K_X4 || packed == GgmlType::Q5_K_X4 ? 4 : kPackGroup;
}

// The packed layout of a weight type (Q4_0 -> Q4_0_X16, Q4_1 -> Q4_1_X16, Q5_0 -> Q5_0_X16,
// Q5_1 -> Q5_1_X16, Q8_0 -> Q8_0_X16, Q4_K -> Q4_K_X4, Q5_K -> Q5_K_X4), or nullopt.
std::optional<GgmlType> packed_type(GgmlType t);
// The file type a packed layout regroups (Q4_0_X16 -> Q4_0); other types are returned unchanged.
GgmlType unpacked_type(GgmlType t);
bool is_packed_type(GgmlType t);

// Converts one row of n elements (a multiple of the block size) between the standard blocks of
// unpacked_type(packed) and the packed layout. The buffers are row_bytes(packed, n) long and must
// not overlap.
void pack_row(GgmlType packed, const void* src, void* dst, int64_t n);
void unpack_row(GgmlType packed, const void* src, void* dst, int64_t n);

// Group g of a packed row of nb blocks, as min(G, nb - G g) standard blocks written to `blocks`
// (G = pack_group_blocks(packed); room for G blocks of the unpacked type).
void unpack_group(GgmlType packed, const void* row, int64_t nb, int64_t g, void* blocks);
// The inverse: the standard blocks G g.. of a row of nb blocks, written as group g of the packed
// row.
void pack_group(GgmlType packed, const void* blocks, int64_t nb, int64_t g, void* row);

}  // namespace sq::kernels
