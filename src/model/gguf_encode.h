// Serialisation of GGUF metadata and tensor infos, shared by the in-memory writer (gguf.cpp) and
// the streaming writer (gguf_stream.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "model/gguf.h"

namespace sq::gguf_encode {

inline constexpr uint32_t kMagic = 0x46554747;  // "GGUF" as a little-endian uint32

inline void put_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
  if (n == 0) return;
  const size_t at = out.size();
  out.resize(at + n);
  std::memcpy(out.data() + at, p, n);
}

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  put_bytes(out, &v, sizeof(T));
}

inline void put_string(std::vector<uint8_t>& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  put_bytes(out, s.data(), s.size());
}

// A metadata value as GGUF stores it (without its type tag).
void put_value(std::vector<uint8_t>& out, const GgufValue& v);

}  // namespace sq::gguf_encode
