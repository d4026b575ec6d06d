#!/usr/bin/env bash
# A/B of two mu-sidecar binaries on this machine, in one run: rounds
# alternate A and B, each on a fresh group of three redis-servers and
# sidecars (scripts/bench-lib.sh's start_group), measured against the
# leader's sidecar with redis-benchmark:
#
#   SET and GET -c 1 (p50), then N_WARM warm-up SETs, then
#   SET and GET -c 50 -P 16 (requests per second).
#
# The summary gives each figure's median over the rounds and B's median
# as a ratio to A's. Shared cores: client, sidecars and servers are
# placed by the kernel, so the ratio, not the figure, is what carries over.
#
# Usage: scripts/bench-ab.sh A_BINARY B_BINARY
#   (RUNS=5 FABRIC=shm N_LAT=20000 N_TPUT=500000 N_WARM=100000)
# Raw CSV and logs land in $OUT (default target-bench-ab/).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 2 ]; then
  echo "usage: $(basename "$0") A_BINARY B_BINARY" >&2
  exit 2
fi
BIN_A=$(realpath "$1")
BIN_B=$(realpath "$2")
RUNS=${RUNS:-5}
FABRIC=${FABRIC:-shm}
N_LAT=${N_LAT:-20000}
N_TPUT=${N_TPUT:-500000}
N_WARM=${N_WARM:-100000}
OUT=${OUT:-target-bench-ab}

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
need_group_tools
mkdir -p "$OUT"
RAW=$OUT/raw.csv
echo "run,build,test,value" >"$RAW"

# bench RUN BUILD TEST FIELD redis-benchmark-args...: one figure (FIELD is
# the CSV column: 2 for rps, 5 for p50) into the raw file.
bench() {
  local run=$1 build=$2 test=$3 field=$4 value
  shift 4
  value=$(redis-benchmark -p "$PORT" --csv "$@" | tail -1 | cut -d, -f"$field" | tr -d '"')
  echo "$run,$build,$test,$value" >>"$RAW"
  echo "  $build $test $value"
}

for run in $(seq "$RUNS"); do
  for build in A B; do
    if [ "$build" = A ]; then SIDECAR=$BIN_A; else SIDECAR=$BIN_B; fi
    start_group "$FABRIC"
    PORT=$(leader_port)
    echo "round $run, $build ($SIDECAR), leader on $PORT"
    bench "$run" "$build" set_c1_p50_ms 5 -t set -n "$N_LAT" -c 1
    bench "$run" "$build" get_c1_p50_ms 5 -t get -n "$N_LAT" -c 1
    redis-benchmark -p "$PORT" -q -t set -n "$N_WARM" -c 50 -P 16 >/dev/null
    bench "$run" "$build" set_pipelined_rps 2 -t set -n "$N_TPUT" -c 50 -P 16
    bench "$run" "$build" get_pipelined_rps 2 -t get -n "$N_TPUT" -c 50 -P 16
    stop_group
  done
done

python3 - "$RAW" <<'EOF' | tee "$OUT/summary.txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
tests = list(dict.fromkeys(r["test"] for r in rows))
print(f"{'test':20} {'A rounds':40} {'B rounds':40} {'A med':>10} {'B med':>10} {'B/A':>6}")
for t in tests:
    vals = {b: [float(r["value"]) for r in rows if r["test"] == t and r["build"] == b] for b in "AB"}
    med = {b: statistics.median(v) for b, v in vals.items()}
    fmt = lambda v: " ".join(f"{x:g}" for x in v)
    print(f"{t:20} {fmt(vals['A']):40} {fmt(vals['B']):40} {med['A']:10g} {med['B']:10g} {med['B'] / med['A']:6.2f}")
EOF
