// Load-time weight layouts. A matrix of Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0 blocks is regrouped, row by
// row, into the layout the 512-bit kernels read without shuffling ("x16"): each row's blocks go in
// groups of sixteen (the last group of a row holds the remaining c < 16 blocks), and a group of c
// blocks stores
//   - the c fp16 scales, in block order (2c bytes);
//   - for Q4_1 and Q5_1, the c fp16 mins, in block order (2c bytes);
//   - for Q5_0 and Q5_1, each block's 32 high bits, rearranged (bit 8k + u: element 4u + k's, bit
//     8k + 4 + u: element 16 + 4u + k's, u, k = 0..3) so that one shift and mask of the word gives
//     the high bits of a plane's nibbles (4c bytes);
//   - then the quants in "planes": plane u holds bytes 4u..4u+3 of each block's quant bytes, block
//     after block (4c bytes per plane; 4 planes for the 4- and 5-bit types' 16 quant bytes, 8 for
//     Q8_0's 32).
// Q8_0's quant bytes are stored offset by 128 (as unsigned bytes, x ^ 0x80), the operand dpbusd
// takes. A group takes exactly the bytes of the blocks it replaces, so rows keep their size and
// row r still starts at r * row_bytes: row splits, strides and sizes are those of the file.
//
// With this layout a 64-byte load is one plane of sixteen blocks, and the int32 lanes of a dpbusd
// over the eight planes (against activations prepared the same way) are the sixteen blocks' sums,
// with no transposition. The integer sums and the float steps are those of quant.h, so the results
// are bit-identical to the unpacked type's.
#pragma once

#include <cstdint>
#include <optional>

#include "kernels/types.h"

namespace sq::kernels {

inline constexpr int64_t kPackGroup = 16;  // blocks per group

// The packed layout of a weight type (Q4_0 -> Q4_0_X16, Q4_1 -> Q4_1_X16, Q5_0 -> Q5_0_X16,
// Q5_1 -> Q5_1_X16, Q8_0 -> Q8_0_X16), or nullopt.
std::optional<GgmlType> packed_type(GgmlType t);
// The file type a packed layout regroups (Q4_0_X16 -> Q4_0); other types are returned unchanged.
GgmlType unpacked_type(GgmlType t);
bool is_packed_type(GgmlType t);

// Converts one row of n elements (a multiple of 32) between the standard blocks of
// unpacked_type(packed) and the packed layout. The buffers are row_bytes(packed, n) long and must
// not overlap.
void pack_row(GgmlType packed, const void* src, void* dst, int64_t n);
void unpack_row(GgmlType packed, const void* src, void* dst, int64_t n);

// Group g of a packed row of nb blocks, as min(16, nb - 16 g) standard blocks written to `blocks`
// (room for 16 blocks of the unpacked type).
void unpack_group(GgmlType packed, const void* row, int64_t nb, int64_t g, void* blocks);
// The inverse: the standard blocks 16 g.. of a row of nb blocks, written as group g of the packed
// row.
void pack_group(GgmlType packed, const void* blocks, int64_t nb, int64_t g, void* row);

}  // namespace sq::kernels
