#include "model/repack.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "base/error.h"
#include "base/mmap.h"
#include "kernels/isa.h"
#include "kernels/repack.h"
#include "model/model.h"

namespace sq {

namespace {

// Anonymous memory for the packed matrices, unmapped with the model.
struct PackedStorage {
  explicit PackedStorage(size_t bytes) : memory(bytes) {}
  std::shared_ptr<const void> original;  // the mapping the other views still point into
  AnonymousMemory memory;
};

// Gives the pages wholly inside [p, p + n) of the file mapping back to the kernel.
void release_pages(const uint8_t* p, size_t n) {
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace

bool repack_enabled() {
  const char* env = std::getenv("SQUEEZE_REPACK");
  if (env != nullptr && std::string_view(env) == "0") return false;
  const kernels::Isa isa = kernels::active_isa();
  return isa == kernels::Isa::Avx512 || isa == kernels::Isa::Avx512Vnni;
}

void repack_weights(Model& model) {
  std::vector<TensorView*> todo;
  const kernels::Isa isa = kernels::active_isa();
  std::vector<GgmlType> layout;
  auto consider = [&](TensorView& t) {
    if (t.empty() || t.ne[2] != 1 || t.ne[3] != 1) return;
    const std::optional<GgmlType> to = kernels::load_layout(t.type, t.n_rows(), t.ne[0], isa);
    if (!to) return;
    todo.push_back(&t);
    layout.push_back(*to);
  };
  for (auto& L : model.layers) {
    for (TensorView* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down}) consider(*t);
  }
  // A tied output matrix is also the token embedding: packed once, and the lookup then reads the
  // packed rows (dequantize_row knows the layout), so the mapped original can go too. Generation
  // reads the whole of it for every token: for Qwen2.5-0.5B it is 28 % of the weights, and the
  // file layout's kernel computes 896-element rows at less than half the packed one's speed.
  consider(model.output);
  if (todo.empty()) return;

  size_t total = 0;
  std::vector<size_t> offset;
  for (const TensorView* t : todo) {
    offset.push_back(total);
    total += (t->n_bytes() + 63) / 64 * 64;
  }
  auto storage = std::make_shared<PackedStorage>(total);
  storage->original = model.storage;
  if (storage->memory.data() == nullptr) {
    fail<IoError>("{}: cannot allocate {} MiB to repack the weights: {} (SQUEEZE_REPACK=0 runs from the "
                  "file mapping instead)", model.path, total >> 20, std::strerror(errno));
  }
  uint8_t* base = storage->memory.data();

  // Rows are independent: each matrix is shared out over a few threads by rows, and its mapped
  // pages are released as soon as it is packed, so that resident memory peaks at the model plus
  // one matrix, not twice the model.
  const unsigned n_threads = std::max(1u, std::min(4u, std::thread::hardware_concurrency()));
  for (size_t i = 0; i < todo.size(); ++i) {
    const TensorView& t = *todo[i];
    const GgmlType packed = layout[i];
    const int64_t group = kernels::interleaved_rows(packed);  // rows packed together
    const int64_t groups = t.n_rows() / group;
    auto work = [&](unsigned part) {
      const int64_t g0 = groups * part / n_threads, g1 = groups * (part + 1) / n_threads;
      for (int64_t g = g0; g < g1; ++g) {
        uint8_t* dst = base + offset[i] + static_cast<size_t>(g * group) * t.row_size();
        if (group > 1) {
          kernels::pack_rows_r16(packed, t.row(g * group), t.row_size(), group, dst, t.ne[0]);
        } else {
          kernels::pack_row(packed, t.row(g), dst, t.ne[0]);
        }
      }
    };
    std::vector<std::thread> threads;
    for (unsigned p = 1; p < n_threads; ++p) threads.emplace_back(work, p);
    work(0);
    for (auto& th : threads) th.join();
    release_pages(t.data, t.n_bytes());
  }

  for (size_t i = 0; i < todo.size(); ++i) {
    TensorView& t = *todo[i];
    t.type = layout[i];
    t.data = base + offset[i];
    model.repacked.tensors += 1;
    model.repacked.bytes += t.n_bytes();
  }
  if (model.output_tied) model.tok_embd = model.output;
  model.storage = storage;
}

}  // namespace sq
