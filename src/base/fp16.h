// IEEE binary16 ("half") and bfloat16 conversions, bit-exact and independent of the CPU's F16C
// unit, so that a tensor converts to the same floats on every machine (DESIGN.md, invariant 3).
//
// half -> float is exact for every one of the 65536 values. float -> half rounds to nearest, ties to
// even, produces subnormals, overflows to infinity, and keeps NaN a NaN (quieted, top payload bits
// kept, as the hardware instruction does). bfloat16 follows GGML: round to nearest even, NaN quieted.
#pragma once

#include <bit>
#include <cstdint>

namespace sq {

inline float fp16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f) {  // infinity or NaN: payload moves to the top of the float mantissa
    return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  }
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, which a float holds exactly.
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24f;
    return sign != 0 ? -magnitude : magnitude;
  }
  // Normal: rebias the exponent from 15 to 127.
  return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline uint16_t f32_to_fp16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) {  // NaN: set the quiet bit so that a payload never becomes infinity
    return static_cast<uint16_t>(sign | 0x7e00u | ((magnitude >> 13) & 0x3ffu));
  }
  if (magnitude >= 0x477ff000u) {
    // 65520 = 65504 + half an ulp and above (infinity included): the tie goes to the even
    // neighbour, which is infinity.
    return static_cast<uint16_t>(sign | 0x7c00u);
  }
  if (magnitude < 0x38800000u) {
    // Below 2^-14, the smallest normal half: the result is round(|f| * 2^24) as a subnormal
    // mantissa (0x400 when it rounds up into the smallest normal, which encodes correctly).
    if (magnitude < 0x33000000u) return sign;  // below 2^-25: rounds to zero
    const uint32_t exponent = magnitude >> 23;
    const uint32_t full = (magnitude & 0x7fffffu) | 0x800000u;  // |f| = full * 2^(exponent-150)
    const uint32_t shift = 126u - exponent;                     // 14..24
    const uint32_t rest = full & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    uint32_t q = full >> shift;
    if (rest > halfway || (rest == halfway && (q & 1u) != 0)) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  // Normal: rebias, then round the 13 dropped bits to nearest even; a carry moves into the
  // exponent, which is the right result (up to 65504, guarded above).
  const uint32_t rebiased = magnitude - 0x38000000u;
  const uint32_t rounded = (rebiased + 0xfffu + ((rebiased >> 13) & 1u)) >> 13;
  return static_cast<uint16_t>(sign | rounded);
}

inline float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {  // NaN: truncate and force the quiet bit
    return static_cast<uint16_t>((bits >> 16) | 0x40u);
  }
  return static_cast<uint16_t>((bits + (0x7fffu + ((bits >> 16) & 1u))) >> 16);
}

}  // namespace sq
