// Choosing the kernel table once per process (isa.h).
#include "kernels/isa.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>

#include "base/cpu_features.h"
#include "base/error.h"

namespace sq::kernels {

namespace {

constexpr Isa kAllIsas[] = {Isa::Ref, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni};

std::optional<Isa> isa_from_name(std::string_view name) {
  for (Isa isa : kAllIsas) {
    if (isa_name(isa) == name) return isa;
  }
  return std::nullopt;
}

std::string supported_list() {
  std::string out;
  for (Isa isa : supported_isas()) {
    if (!out.empty()) out += ", ";
    out += isa_name(isa);
  }
  return out;
}

Isa choose_isa() {
  const char* env = std::getenv("SQUEEZE_ISA");
  if (env == nullptr || *env == '\0') return supported_isas().back();
  const std::optional<Isa> isa = isa_from_name(env);
  if (!isa) {
    fail<InvalidArgument>(
        "SQUEEZE_ISA='{}' is not an instruction set squeeze knows; expected one of ref, avx2, "
        "avx512, avx512vnni (this CPU supports: {})",
        env, supported_list());
  }
  if (!isa_supported(*isa)) {
    fail<InvalidArgument>("SQUEEZE_ISA='{}' names an instruction set this CPU lacks; it supports: {}",
                          env, supported_list());
  }
  return *isa;
}

std::atomic<const KernelTable*> g_active{nullptr};
std::mutex g_init_mutex;

}  // namespace

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::Ref:
      return "ref";
    case Isa::Avx2:
      return "avx2";
    case Isa::Avx512:
      return "avx512";
    case Isa::Avx512Vnni:
      return "avx512vnni";
  }
  return "unknown";
}

bool isa_supported(Isa isa) {
  const CpuFeatures& f = cpu_features();
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  const bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  switch (isa) {
    case Isa::Ref:
      return true;
    case Isa::Avx2:
      return avx2;
    case Isa::Avx512:
      return avx512;
    case Isa::Avx512Vnni:
      return avx512 && f.avx512vnni;
  }
  return false;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAllIsas) {
    if (isa_supported(isa)) out.push_back(isa);
  }
  return out;
}

const KernelTable& table(Isa isa) {
  switch (isa) {
    case Isa::Ref:
      return kRefTable;
    case Isa::Avx2:
      return kAvx2Table;
    case Isa::Avx512:
      return kAvx512Table;
    case Isa::Avx512Vnni:
      return kAvx512VnniTable;
  }
  return kRefTable;
}

void init_isa() {
  std::lock_guard<std::mutex> lock(g_init_mutex);
  g_active.store(&table(choose_isa()), std::memory_order_release);
}

const KernelTable& active_table() {
  const KernelTable* t = g_active.load(std::memory_order_acquire);
  if (t != nullptr) return *t;
  try {
    init_isa();
  } catch (const Error& e) {
    std::fprintf(stderr, "squeeze: %s\n", e.what());
    std::exit(1);
  }
  return *g_active.load(std::memory_order_acquire);
}

Isa active_isa() { return active_table().isa; }

}  // namespace sq::kernels
