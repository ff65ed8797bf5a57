#include <array>

#include "model/arch.h"

namespace sq {

namespace {

using Getter = const Architecture& (*)();
constexpr std::array<Getter, 2> kArchitectures = {&llama_architecture, &qwen2_architecture};

}  // namespace

const Architecture* find_architecture(std::string_view name) {
  for (Getter g : kArchitectures) {
    if (g().name() == name) return &g();
  }
  return nullptr;
}

std::string architecture_names() {
  std::string out;
  for (Getter g : kArchitectures) {
    if (!out.empty()) out += ", ";
    out += g().name();
  }
  return out;
}

}  // namespace sq
