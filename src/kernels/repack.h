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
//
// "Q8_0_R16" and "Q4_0_R16" interleave rows instead: a matrix of Q8_0 (Q4_0) rows of nb blocks goes
// in groups of sixteen rows, and a group stores, for each pair of blocks b = 2p, 2p + 1:
//   - block 2p's sixteen fp16 scales (row i's at 2i), then block 2p + 1's (64 bytes);
//   - block 2p's quants in planes of 64 bytes: plane u holds bytes 4u..4u+3 of row i's quant bytes
//     at 4i (eight planes for Q8_0, stored offset by 128 as in Q8_0x16; four for Q4_0, whose low
//     nibbles are elements 4u..4u+3 and high nibbles 16 + 4u..); then block 2p + 1's.
// When nb is odd the last block stands alone: its 32 bytes of scales, then its planes. So a 64-byte
// load is one plane of one block of all sixteen rows, and dpbusd against the activation block's
// word broadcast to every lane leaves each row's sum in its own lane: no fold per row, no short
// groups, and every plane of an even count on a cache line of its own. A group takes the bytes of
// its sixteen rows, so group g starts where row 16g would: the kernels take w at a row that is a
// multiple of 16 with the file's row stride, over whole groups (a call's last rows may end inside
// one, whose storage must still be there). Rows are not addressable one by one: unpack_row_r16
// gives one back as standard blocks.
#pragma once

#include <cstdint>
#include <optional>

#include "kernels/isa.h"
#include "kernels/types.h"

namespace sq::kernels {

inline constexpr int64_t kPackGroup = 16;  // the most blocks in a group (x16)

// Blocks per group of a packed layout: 16, or 4 for Q4_Kx4 and Q5_Kx4.
constexpr int64_t pack_group_blocks(GgmlType packed) {
  return packed == GgmlType::Q4_K_X4 || packed == GgmlType::Q5_K_X4 ? 4 : kPackGroup;
}

// The packed layout of a weight type (Q4_0 -> Q4_0_X16, Q4_1 -> Q4_1_X16, Q5_0 -> Q5_0_X16,
// Q5_1 -> Q5_1_X16, Q8_0 -> Q8_0_X16, Q4_K -> Q4_K_X4, Q5_K -> Q5_K_X4), or nullopt: the layouts
// whose rows stand alone, which pack_row and unpack_row convert.
std::optional<GgmlType> packed_type(GgmlType t);
// The layout the loader gives a matrix of file type t with `rows` rows of `cols` elements for the
// kernels of `isa`: under avx512vnni, when rows is a multiple of 16 (so that the parts of a grouped
// product, and the threads' ranges of rows, start at a group), Q8_0_R16 for Q8_0 and Q4_0_R16 for
// Q4_0 rows of at most kQ4R16MaxCols elements; otherwise packed_type(t) under avx512 and
// avx512vnni, and nullopt (the file's own) for the other variants.
std::optional<GgmlType> load_layout(GgmlType t, int64_t rows, int64_t cols, Isa isa);

// Q4_0's rows up to this length take Q4_0_R16: Qwen2.5-0.5B's rows of 896 elements ran prompts
// 1.27-1.31x faster and generated as fast as in Q4_0x16, but TinyLlama-1.1B's of 2 048 and 5 632
// generated 0.85-0.94x and ran prompts 0.94-0.98x (docs/benchmarks.md, run W).
inline constexpr int64_t kQ4R16MaxCols = 1024;

// Rows per group of a layout: 16 for Q4_0_R16 and Q8_0_R16, 1 for the others (whose rows stand
// alone).
constexpr int64_t interleaved_rows(GgmlType t) {
  return t == GgmlType::Q8_0_R16 || t == GgmlType::Q4_0_R16 ? 16 : 1;
}

// Packs `rows` <= 16 standard rows of n elements of unpacked_type(r16) (row r at src + r * stride)
// into one group of the interleaved layout r16, 16 * row_bytes(r16, n) bytes at dst; the rows past
// `rows` get zero scales and quants.
void pack_rows_r16(GgmlType r16, const void* src, size_t stride, int64_t rows, void* dst, int64_t n);
// Row `lane` (0..15) of the group at `group`, as a standard row of n elements.
void unpack_row_r16(GgmlType r16, const void* group, int64_t lane, void* dst, int64_t n);
// Block b of row `lane` of a group of rows of nb blocks, as a standard block.
void unpack_block_r16(GgmlType r16, const void* group, int64_t nb, int64_t lane, int64_t b, void* block);

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
