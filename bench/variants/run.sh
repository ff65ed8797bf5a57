#!/bin/bash
# Builds bench/variants/variant_ab with each given copy of src/kernels/quant_simd.inc as one
# variant (0, 1, ... in the order given), against an existing release build's libsqueeze_core.a,
# then runs it with the remaining arguments (see variant_ab.cpp).
#   bench/variants/run.sh BUILD_DIR OUT_DIR A.inc B.inc ... -- q8 2 5 40 dram 0:4864x896 1:4864x896
# Example: compare the committed kernel with an edited copy:
#   git show HEAD:src/kernels/quant_simd.inc > /tmp/a.inc; cp src/kernels/quant_simd.inc /tmp/b.inc
#   bench/variants/run.sh build/release /tmp/ab /tmp/a.inc /tmp/b.inc -- q8 1 300 30 hot 0:512x896 1:512x896
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$1" && pwd); out=$2; shift 2
mkdir -p "$out"
flags=(-std=c++20 -O3 -DNDEBUG -ffp-contract=off -I "$root/src" -mavx2 -mfma -mf16c -mavx512f -mavx512bw
       -mavx512vl -mavx512dq -mavx512vnni -Wno-maybe-uninitialized)
vars=""; objs=(); i=0
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  inc=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
  cat > "$out/variant$i.cpp" <<EOT
#include "kernels/isa.h"
namespace sq::kernels { extern const KernelTable kVariant$i; }
#define SQ_SIMD_TABLE kVariant$i
#define SQ_SIMD_ISA Isa::Avx512Vnni
#include "$inc"
EOT
  g++ "${flags[@]}" -c "$out/variant$i.cpp" -o "$out/variant$i.o" &
  vars="$vars SQ_VARIANT($i)"; objs+=("$out/variant$i.o"); i=$((i + 1)); shift
done
[ $# -gt 0 ] && shift
[ $i -gt 0 ] || { echo "no variants given" >&2; exit 2; }
g++ "${flags[@]}" "-DSQ_VARIANTS=$vars" -c "$root/bench/variants/variant_ab.cpp" -o "$out/variant_ab.o"
wait
g++ -o "$out/variant_ab" "$out/variant_ab.o" "${objs[@]}" "$build/libsqueeze_core.a" -lfmt -lpthread
exec "$out/variant_ab" "$@"
