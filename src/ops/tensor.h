// A non-owning view of one weight tensor: its type, shape and bytes (in a file mapping or in a
// buffer somebody else owns).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "kernels/types.h"

namespace sq {

struct TensorView {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::array<int64_t, 4> ne{1, 1, 1, 1};  // ne[0] innermost: a row holds ne[0] elements
  int n_dims = 0;
  const uint8_t* data = nullptr;

  bool empty() const { return data == nullptr; }
  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t n_rows() const { return ne[1] * ne[2] * ne[3]; }
  size_t row_size() const;  // bytes of one row of ne[0] elements
  size_t n_bytes() const { return row_size() * static_cast<size_t>(n_rows()); }
  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_size(); }
  // The 2-D slice `i` along ne[2] (one expert of a stacked expert tensor).
  TensorView slice(int64_t i) const;
};

}  // namespace sq
