#!/bin/bash
# Generation speed with and without the thread pool's fallback to one thread (base/thread_pool.h),
# first on a quiet machine, then with a busy loop pinned on the last CPU (other work holding a
# CPU). For each model and state, ROUNDS rounds of: SQUEEZE_POOL_FALLBACK=1 with THREADS threads,
# SQUEEZE_POOL_FALLBACK=0 with THREADS threads, and one thread. One line per bench run: tg t/s
# (mean ± sd of 3), the share of parallel regions run alone, and tg's fraction of the bandwidth
# measured in the same run.
#
#   bench/busy_cpu.sh SQUEEZE ROUNDS THREADS MODEL...
#   bench/busy_cpu.sh build/release/squeeze 2 2 qwen2.5-0.5b.Q8_0.gguf tinyllama-1.1b.Q8_0.gguf
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 SQUEEZE ROUNDS THREADS MODEL... (got $# arguments)" >&2
  exit 2
fi
bin=$1 rounds=$2 threads=$3
shift 3
if [ ! -x "$bin" ]; then
  echo "$0: $bin is not an executable file" >&2
  exit 2
fi
last_cpu=$(($(nproc) - 1))
hog=
stop_hog() { if [ -n "$hog" ]; then kill "$hog" 2>/dev/null || true; wait "$hog" 2>/dev/null || true; hog=; fi; }
trap stop_hog EXIT
line() {
  python3 -c 'import json, sys
d = json.load(sys.stdin); t = d["tg"]
print("tg %.1f ± %.1f t/s, alone %.1f %%, %.1f %% of %.1f GB/s" % (t["mean_tps"], t["sd_tps"],
      100 * t["alone_share"], 100 * d["membw_fraction"], d["membw_gbps"]))'
}
for model in "$@"; do
  for state in quiet busy; do
    if [ $state = busy ]; then
      taskset -c "$last_cpu" sh -c 'while :; do :; done' &
      hog=$!
      sleep 0.3
    fi
    for ((r = 1; r <= rounds; r++)); do
      for cfg in on off one; do
        case $cfg in on) env=1 t=$threads ;; off) env=0 t=$threads ;; one) env=1 t=1 ;; esac
        result=$(SQUEEZE_POOL_FALLBACK=$env "$bin" bench -m "$model" -p 0 -n 128 -t "$t" -r 3 --json | line)
        echo "$(date -u +%H:%M:%S) $(basename "$model") $state fallback=$cfg: $result"
      done
    done
    stop_hog
  done
done
