#include "kernels/types.h"

#include <array>
#include <cctype>
#include <string>

namespace sq {

namespace {

struct Entry {
  uint32_t id;
  TypeInfo info;
};

// Block geometry as published by the GGML project (ggml.c type_traits).
constexpr std::array kTypes = {
    Entry{0, {"F32", 1, 4}},         Entry{1, {"F16", 1, 2}},
    Entry{2, {"Q4_0", 32, 18}},      Entry{3, {"Q4_1", 32, 20}},
    Entry{6, {"Q5_0", 32, 22}},      Entry{7, {"Q5_1", 32, 24}},
    Entry{8, {"Q8_0", 32, 34}},      Entry{9, {"Q8_1", 32, 36}},
    Entry{10, {"Q2_K", 256, 84}},    Entry{11, {"Q3_K", 256, 110}},
    Entry{12, {"Q4_K", 256, 144}},   Entry{13, {"Q5_K", 256, 176}},
    Entry{14, {"Q6_K", 256, 210}},   Entry{15, {"Q8_K", 256, 292}},
    Entry{16, {"IQ2_XXS", 256, 66}}, Entry{17, {"IQ2_XS", 256, 74}},
    Entry{18, {"IQ3_XXS", 256, 98}}, Entry{19, {"IQ1_S", 256, 50}},
    Entry{20, {"IQ4_NL", 32, 18}},   Entry{21, {"IQ3_S", 256, 110}},
    Entry{22, {"IQ2_S", 256, 82}},   Entry{23, {"IQ4_XS", 256, 136}},
    Entry{24, {"I8", 1, 1}},         Entry{25, {"I16", 1, 2}},
    Entry{26, {"I32", 1, 4}},        Entry{27, {"I64", 1, 8}},
    Entry{28, {"F64", 1, 8}},        Entry{29, {"IQ1_M", 256, 56}},
    Entry{30, {"BF16", 1, 2}},       Entry{34, {"TQ1_0", 256, 54}},
    Entry{35, {"TQ2_0", 256, 66}},   Entry{39, {"MXFP4", 32, 17}},
    Entry{0x10002, {"Q4_0x16", 32, 18}}, Entry{0x10003, {"Q4_1x16", 32, 20}},
    Entry{0x10006, {"Q5_0x16", 32, 22}}, Entry{0x10007, {"Q5_1x16", 32, 24}},
    Entry{0x10008, {"Q8_0x16", 32, 34}}, Entry{0x1000C, {"Q4_Kx4", 256, 144}},
    Entry{0x1000D, {"Q5_Kx4", 256, 176}}, Entry{0x10102, {"Q4_0r16", 32, 18}},
    Entry{0x10108, {"Q8_0r16", 32, 34}},
};

}  // namespace

std::optional<TypeInfo> type_info(uint32_t id) {
  for (const auto& e : kTypes) {
    if (e.id == id) return e.info;
  }
  return std::nullopt;
}

std::string type_name(uint32_t id) {
  if (auto info = type_info(id)) return std::string(info->name);
  return "type " + std::to_string(id);
}

bool type_supported(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
    case GgmlType::Q4_0_X16:
    case GgmlType::Q4_1_X16:
    case GgmlType::Q5_0_X16:
    case GgmlType::Q5_1_X16:
    case GgmlType::Q8_0_X16:
    case GgmlType::Q4_K_X4:
    case GgmlType::Q5_K_X4:
    case GgmlType::Q4_0_R16:
    case GgmlType::Q8_0_R16:
      return true;
    default:
      return false;
  }
}

std::optional<GgmlType> type_from_name(std::string_view name) {
  for (const auto& e : kTypes) {
    if (type_internal(e.id) || e.info.name.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < name.size(); ++i) {
      if (std::toupper(static_cast<unsigned char>(name[i])) != e.info.name[i]) {
        same = false;
        break;
      }
    }
    if (same) return static_cast<GgmlType>(e.id);
  }
  return std::nullopt;
}

}  // namespace sq
