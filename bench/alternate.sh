#!/bin/bash
# Runs the Google Benchmark binaries given (squeeze_bench builds of different commits) in turn,
# ROUNDS times over, on the benchmarks FILTER selects, and prints each benchmark's GOPS counter
# per binary as median [min-max]: configurations compared in one run, alternating, as
# docs/benchmarks.md asks.
#
#   bench/alternate.sh FILTER ROUNDS BIN...
#   bench/alternate.sh 'Tile/Q8_0x16/avx512vnni/2048x2048x64' 8 /tmp/before/squeeze_bench build/release/squeeze_bench
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 FILTER ROUNDS BIN... (got $# arguments)" >&2
  exit 2
fi
filter=$1
rounds=$2
shift 2
for b in "$@"; do
  if [ ! -x "$b" ]; then
    echo "$0: $b is not an executable file" >&2
    exit 2
  fi
done
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq "$rounds"); do
  for b in "$@"; do
    "$b" --benchmark_filter="$filter" --benchmark_min_time=0.3 2>/dev/null |
      awk -v bin="$b" '{ for (i = 1; i <= NF; i++) if ($i ~ /^GOPS=/) { v = $i; sub("GOPS=", "", v); sub("/s", "", v); print bin, $1, v } }' >>"$out"
  done
done
python3 - "$out" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    binary, bench, gops = line.split()
    runs[(bench, binary)].append(float(gops))
if not runs:
    sys.exit("no benchmark printed a GOPS counter: check the filter")
for (bench, binary), v in sorted(runs.items()):
    print(f"{bench:48s} {binary:40s} median {statistics.median(v):7.1f} [{min(v):.1f}-{max(v):.1f}] n={len(v)}")
PY
