// The per-type traits table, the activation formats and the dispatching entry points of quant.h.
// The traits point at the reference kernels; quantize_activation and the dot products with
// quantized activations go through the kernel table chosen at start-up (isa.h), whose entries match
// the reference bit for bit (DESIGN.md, invariant 3).
#include "kernels/quant.h"

#include <array>
#include <cassert>

#include "kernels/blocks.h"
#include "kernels/isa.h"
#include "kernels/quant_ref.h"

namespace sq::kernels {

namespace {

#define SQ_REF_TRAITS(Type, name, elems, bytes, VecDotType)                                    \
  TypeTraits {                                                                                 \
    GgmlType::Type, elems, bytes, dequantize_row_##name##_ref, quantize_row_##name##_ref,      \
        dot_row_##name##_ref, dot_row_q_##name##_ref, GgmlType::VecDotType                     \
  }

const std::array kTraits = {
    SQ_REF_TRAITS(F32, f32, 1, 4, F32),
    SQ_REF_TRAITS(F16, f16, 1, 2, F16),
    SQ_REF_TRAITS(BF16, bf16, 1, 2, BF16),
    SQ_REF_TRAITS(Q4_0, q4_0, BlockQ4_0::kElems, sizeof(BlockQ4_0), Q8_0),
    SQ_REF_TRAITS(Q4_1, q4_1, BlockQ4_1::kElems, sizeof(BlockQ4_1), Q8_1),
    SQ_REF_TRAITS(Q5_0, q5_0, BlockQ5_0::kElems, sizeof(BlockQ5_0), Q8_0),
    SQ_REF_TRAITS(Q5_1, q5_1, BlockQ5_1::kElems, sizeof(BlockQ5_1), Q8_1),
    SQ_REF_TRAITS(Q8_0, q8_0, BlockQ8_0::kElems, sizeof(BlockQ8_0), Q8_0),
    SQ_REF_TRAITS(Q4_K, q4_k, BlockQ4_K::kElems, sizeof(BlockQ4_K), Q8_K),
    SQ_REF_TRAITS(Q5_K, q5_k, BlockQ5_K::kElems, sizeof(BlockQ5_K), Q8_K),
    SQ_REF_TRAITS(Q6_K, q6_k, BlockQ6_K::kElems, sizeof(BlockQ6_K), Q8_K),
    SQ_REF_TRAITS(Q4_0_X16, q4_0x16, BlockQ4_0::kElems, sizeof(BlockQ4_0), Q8_0),
    SQ_REF_TRAITS(Q4_1_X16, q4_1x16, BlockQ4_1::kElems, sizeof(BlockQ4_1), Q8_1),
    SQ_REF_TRAITS(Q5_0_X16, q5_0x16, BlockQ5_0::kElems, sizeof(BlockQ5_0), Q8_0),
    SQ_REF_TRAITS(Q5_1_X16, q5_1x16, BlockQ5_1::kElems, sizeof(BlockQ5_1), Q8_1),
    SQ_REF_TRAITS(Q8_0_X16, q8_0x16, BlockQ8_0::kElems, sizeof(BlockQ8_0), Q8_0),
    SQ_REF_TRAITS(Q4_K_X4, q4_kx4, BlockQ4_K::kElems, sizeof(BlockQ4_K), Q8_K),
    SQ_REF_TRAITS(Q5_K_X4, q5_kx4, BlockQ5_K::kElems, sizeof(BlockQ5_K), Q8_K),
    // Rows of Q8_0_R16 and Q4_0_R16 are interleaved sixteen at a time: there are no one-row
    // conversions or dot products (kernels/repack.h unpacks a row; dot_rows_q and dot_tile_q take
    // whole groups).
    TypeTraits{GgmlType::Q8_0_R16, BlockQ8_0::kElems, sizeof(BlockQ8_0), nullptr, nullptr, nullptr, nullptr,
               GgmlType::Q8_0},
    TypeTraits{GgmlType::Q4_0_R16, BlockQ4_0::kElems, sizeof(BlockQ4_0), nullptr, nullptr, nullptr, nullptr,
               GgmlType::Q8_0},
};

#undef SQ_REF_TRAITS

// The activation formats, with the converters quantize_activation dispatches to.
struct ActivationFormat {
  GgmlType type;
  QuantizeRowFn quantize;
  DequantizeRowFn dequantize;
};

const std::array kActivationFormats = {
    ActivationFormat{GgmlType::F32, quantize_row_f32_ref, dequantize_row_f32_ref},
    ActivationFormat{GgmlType::F16, quantize_row_f16_ref, dequantize_row_f16_ref},
    ActivationFormat{GgmlType::BF16, quantize_row_bf16_ref, dequantize_row_bf16_ref},
    ActivationFormat{GgmlType::Q8_0, quantize_row_q8_0_ref, dequantize_row_q8_0_ref},
    ActivationFormat{GgmlType::Q8_1, quantize_row_q8_1_ref, dequantize_row_q8_1_ref},
    ActivationFormat{GgmlType::Q8_K, quantize_row_q8_k_ref, dequantize_row_q8_k_ref},
};

const ActivationFormat* activation_format(GgmlType t) {
  for (const auto& f : kActivationFormats) {
    if (f.type == t) return &f;
  }
  return nullptr;
}

const ActivationFormat& activation_format_or_die(GgmlType t) {
  const ActivationFormat* f = activation_format(t);
  assert(f != nullptr && "not an activation format");
  return *f;
}

const TypeTraits& traits_or_die(GgmlType t) {
  const TypeTraits* traits = type_traits(t);
  assert(traits != nullptr && "unsupported tensor type reached a kernel; the op must validate");
  return *traits;
}

}  // namespace

const TypeTraits* type_traits(GgmlType t) {
  for (const auto& traits : kTraits) {
    if (traits.type == t) return &traits;
  }
  return nullptr;
}

size_t row_bytes(GgmlType type, int64_t n) {
  const auto info = type_info(type);
  assert(info.has_value());
  assert(n >= 0 && n % info->block_elems == 0);
  return static_cast<size_t>(n / info->block_elems) * info->block_bytes;
}

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
  assert(traits_or_die(type).to_float != nullptr && "a layout of interleaved rows has no rows to convert");
  traits_or_die(type).to_float(src, dst, n);
}

void quantize_row(GgmlType type, const float* src, void* dst, int64_t n) {
  traits_or_die(type).from_float(src, dst, n);
}

float dot_row(GgmlType type, const void* row, const float* x, int64_t n) {
  return traits_or_die(type).dot(row, x, n);
}

GgmlType vec_dot_type(GgmlType weight_type) { return traits_or_die(weight_type).vec_dot_type; }

bool activation_type_supported(GgmlType t) { return activation_format(t) != nullptr; }

void quantize_activation(GgmlType vec_type, const float* x, void* out, int64_t n) {
  const int index = activation_index(vec_type);
  assert(index >= 0 && "not an activation format");
  active_table().quantize[index](x, out, n);
}

void dequantize_activation(GgmlType vec_type, const void* qx, float* out, int64_t n) {
  activation_format_or_die(vec_type).dequantize(qx, out, n);
}

namespace {

const WeightKernels& weight_kernels(GgmlType weight_type) {
  const int index = weight_index(weight_type);
  assert(index >= 0 && "unsupported tensor type reached a kernel; the op must validate");
  return active_table().weight[index];
}

}  // namespace

float dot_row_q(GgmlType weight_type, const void* row, const void* qx, int64_t n) {
  return weight_kernels(weight_type).dot_q(row, qx, n);
}

void dot_rows_q(GgmlType weight_type, const void* w, size_t w_stride, int64_t rows, const void* qx,
                int64_t n, float* out) {
  weight_kernels(weight_type).dot_rows(w, w_stride, rows, qx, n, out);
}

void dot_tile_q(GgmlType weight_type, const void* w, size_t w_stride, int64_t rows, const void* qx,
                size_t x_stride, int64_t tokens, int64_t n, float* out, int64_t out_stride) {
  weight_kernels(weight_type).dot_tile(w, w_stride, rows, qx, x_stride, tokens, n, out, out_stride);
}

void matvec_rows(GgmlType type, const void* w, const float* x, float* out, int64_t n, int64_t r0,
                 int64_t r1) {
  const TypeTraits& traits = traits_or_die(type);
  assert(n % traits.block_elems == 0);
  const size_t stride = static_cast<size_t>(n / traits.block_elems) * traits.block_bytes;
  const auto* base = static_cast<const uint8_t*>(w);
  for (int64_t r = r0; r < r1; ++r) {
    out[r] = traits.dot(base + static_cast<size_t>(r) * stride, x, n);
  }
}

}  // namespace sq::kernels
