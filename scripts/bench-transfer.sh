#!/usr/bin/env bash
# State transfer: how long a node takes to load a copy of a peer's Redis
# data, and what the transfer costs the group's writes.
#
# A 3-node group (tcp fabric) is loaded with SIZE_MB of data through the
# sidecars (VALUE-byte values, 100-key MSETs). Then, twice:
#   1. node 3's redis-server is killed and restarted empty; the sidecar
#      loads a copy from a peer: the time and bytes come from its metrics
#      (mu_sidecar_transfer_last_seconds, _transfer_bytes_total);
#   2. the same, with redis-benchmark writing (SET, one client) through the
#      leader's sidecar for about as long as the first transfer took;
# and the same redis-benchmark run with no transfer gives the baseline
# p50/p99 (all in this run, so the ratios compare like with like).
#
# Usage: scripts/bench-transfer.sh     (SIZE_MB=1024 VALUE=1024)
# Raw output and the summary land in $OUT (default target-bench-transfer/).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MB=${SIZE_MB:-1024}
VALUE=${VALUE:-1024}
OUT=${OUT:-target-bench-transfer}
TARGET=${CARGO_TARGET_DIR:-target}
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
need_group_tools

cargo build --release -p mu-sidecar --bin mu-sidecar
SIDECAR=$TARGET/release/mu-sidecar
mkdir -p "$OUT"
KEYS=$((SIZE_MB * 1024 * 1024 / VALUE))

metric() { # metric NODE NAME [LABEL=VALUE...]: the first matching sample
  local node=$1 name=$2 lines
  shift 2
  lines=$(curl -sf "http://${HTTP[$node]}/metrics" | grep "^mu_sidecar_$name")
  for f in "$@"; do lines=$(grep -F -- "$f" <<<"$lines"); done
  awk '{print $2}' <<<"$lines" | head -n 1
}
applied() { curl -sf "http://${HTTP[$1]}/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["backend_applied_index"])'; }
all_applied() {
  local a b c
  a=$(applied 0) && b=$(applied 1) && c=$(applied 2) && [ "$a" = "$b" ] && [ "$b" = "$c" ]
}
transfers_ok() { metric 2 transfers_total 'side="receiver"' 'outcome="ok"'; }
redis_down() { ! redis_up "$1"; }
transfers_ok_moved() { [ "$(transfers_ok)" != "$1" ]; }

start_group tcp
LEADER=$(leader_port)
echo "== loading $KEYS keys of $VALUE bytes ($SIZE_MB MiB) through the leader's sidecar"
t0=$(date +%s.%N)
python3 - "$KEYS" "$VALUE" <<'PY' | redis-cli -p "$LEADER" --pipe >"$OUT/load.txt"
import os, sys
keys, size = int(sys.argv[1]), int(sys.argv[2])
# Values are slices of one random block: as incompressible as real data
# (DUMP compresses), without generating every byte.
block = os.urandom(1 << 20)
out = sys.stdout.buffer
for start in range(0, keys, 100):
    n = min(100, keys - start)
    parts = [b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * n)]
    for k in range(start, start + n):
        key = b"key:%d" % k
        at = (k * 7919) % ((1 << 20) - size)
        value = block[at:at + size]
        parts.append(b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, size, value))
    out.write(b"".join(parts))
PY
UNTIL_S=600 until_ok "every node to apply the load" all_applied
t1=$(date +%s.%N)
echo "loaded in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s; $(tail -n 1 "$OUT/load.txt")"
redis-cli -p "${BACKEND[2]}" info memory | grep '^used_memory_human' | tee "$OUT/memory.txt"

refill_node3() {
  local before
  before=$(transfers_ok)
  kill -9 "${BACKEND_PID[2]}"
  wait "${BACKEND_PID[2]}" 2>/dev/null || true
  until_ok "node 3's redis-server to be gone" redis_down "${BACKEND[2]}"
  start_redis "${BACKEND[2]}"
  BACKEND_PID[2]=$LAST_PID
  UNTIL_S=1800 until_ok "node 3's transfer" transfers_ok_moved "$before"
}

bench_set() { # bench_set REQUESTS LABEL
  redis-benchmark -h 127.0.0.1 -p "$LEADER" -t set -c 1 -d 100 -r 100000 -n "$1" --csv \
    >"$OUT/bench-$2.csv"
}

echo "== transfer into node 3, no client load"
b0=$(metric 2 transfer_bytes_total 'side="receiver"')
refill_node3
secs=$(metric 2 transfer_last_seconds)
b1=$(metric 2 transfer_bytes_total 'side="receiver"')
echo "transfer: $secs s, $((${b1%.*} - ${b0%.*})) bytes" | tee "$OUT/transfer-idle.txt"

echo "== baseline: SET, one client, no transfer"
bench_set 20000 baseline
rps=$(python3 -c 'import csv,sys; print(next(csv.DictReader(open(sys.argv[1])))["rps"])' "$OUT/bench-baseline.csv")
n=$(python3 -c "print(max(2000, int(float('$rps') * float('$secs'))))")

echo "== transfer into node 3 while SET runs ($n requests)"
bench_set "$n" during-baseline
bench_set "$n" during &
bench=$!
refill_node3
wait "$bench"
secs2=$(metric 2 transfer_last_seconds)
echo "transfer under load: $secs2 s" | tee "$OUT/transfer-loaded.txt"

python3 - "$OUT" "$SIZE_MB" "$VALUE" "$secs" "$secs2" "$((${b1%.*} - ${b0%.*}))" <<'PY' | tee "$OUT/summary.md"
import csv, sys
out, size_mb, value, idle, loaded, nbytes = sys.argv[1:7]
row = lambda name: next(csv.DictReader(open(f"{out}/bench-{name}.csv")))
base, during = row("during-baseline"), row("during")
idle, loaded, nbytes = float(idle), float(loaded), int(nbytes)
print(f"| data | transfer (no load) | MiB/s | transfer (under SET load) |")
print(f"|---|---|---|---|")
print(f"| {size_mb} MiB, {value} B values | {idle:.1f} s | {nbytes / idle / 2**20:.0f} | {loaded:.1f} s |")
print()
print("| SET, 1 client, through the leader | rps | p50 ms | p99 ms |")
print("|---|---|---|---|")
for name, r in [("no transfer", base), ("during the transfer", during)]:
    print(f"| {name} | {float(r['rps']):.0f} | {r['p50_latency_ms']} | {r['p99_latency_ms']} |")
ratio = lambda f: float(during[f]) / float(base[f])
print(f"| ratio | {ratio('rps'):.2f} | {ratio('p50_latency_ms'):.2f} | {ratio('p99_latency_ms'):.2f} |")
PY
