// Tensor element types with GGML's numbering and block geometry. The table covers every type a
// GGUF file may name, so that the reader can bounds-check any tensor; `type_supported` says which
// ones squeeze computes with.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sq {

enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
  // squeeze's own load-time layouts (kernels/repack.h), never read from or written to a file: the
  // blocks of the named type regrouped sixteen (Q4_K, Q5_K: four) at a time for the 512-bit kernels,
  // and Q4_0 and Q8_0 with sixteen rows interleaved (Q4_0_R16, Q8_0_R16, for VNNI).
  Q4_0_X16 = 0x10002,
  Q4_1_X16 = 0x10003,
  Q5_0_X16 = 0x10006,
  Q5_1_X16 = 0x10007,
  Q8_0_X16 = 0x10008,
  Q4_K_X4 = 0x1000C,
  Q5_K_X4 = 0x1000D,
  Q4_0_R16 = 0x10102,
  Q8_0_R16 = 0x10108,
};

// The first id of squeeze's internal layouts; ids from a file at or above it are refused.
inline constexpr uint32_t kFirstInternalType = 0x10000;
inline constexpr bool type_internal(uint32_t id) { return id >= kFirstInternalType; }
inline constexpr bool type_internal(GgmlType t) { return type_internal(static_cast<uint32_t>(t)); }

struct TypeInfo {
  std::string_view name;
  uint32_t block_elems;  // elements per block
  uint32_t block_bytes;  // bytes per block
};

// Geometry of a known type id, or nullopt for an id GGML does not define. Internal layouts have
// their unpacked type's geometry (block size and bytes per block).
std::optional<TypeInfo> type_info(uint32_t id);
inline std::optional<TypeInfo> type_info(GgmlType t) { return type_info(static_cast<uint32_t>(t)); }

// "Q4_K", or "type 77" for an unknown id.
std::string type_name(uint32_t id);
inline std::string type_name(GgmlType t) { return type_name(static_cast<uint32_t>(t)); }

// Whether squeeze can dequantize and multiply with this type.
bool type_supported(GgmlType t);

// Parses a type name as printed by type_name ("q4_k" and "Q4_K" both work).
std::optional<GgmlType> type_from_name(std::string_view name);

}  // namespace sq
