// Load-time repacking of the weight matrices into the kernels' packed layouts (kernels/repack.h).
//
// DESIGN.md's invariant 1 maps weights rather than copying them; issue 3 allows one exception, taken
// here: where the active kernels read a packed layout faster (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K and
// Q5_K under the 512-bit variants: no shuffles to regroup blocks, see kernels/repack.h), each matrix the
// forward pass multiplies by is copied once, at load, into that layout in anonymous memory, and the
// pages of the mapped original are released (madvise DONTNEED: the mapping stays valid and reads
// the file again if anything touches it). The packed rows have the file's size and strides and give
// the same bits, so nothing downstream changes but the views' type and address. `info` and `bench`
// report the memory this takes; SQUEEZE_REPACK=0 keeps the mapped layout (to compare).
#pragma once

#include <cstdint>

namespace sq {

class Model;

struct RepackSummary {
  int32_t tensors = 0;  // matrices repacked
  uint64_t bytes = 0;   // their bytes, now in anonymous memory instead of the mapping
};

// Whether load_model repacks: the active kernels have packed layouts and SQUEEZE_REPACK is not "0".
bool repack_enabled();

// Repacks `model`'s matrices (every layer's attention and feed-forward matrices, and the output
// matrix, tied to the token embedding or not) whose type has a packed layout. Updates the views (a
// tied embedding's too), keeps the new buffer alive through model.storage, and records the summary
// in the model.
void repack_weights(Model& model);

}  // namespace sq
