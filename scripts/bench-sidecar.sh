#!/usr/bin/env bash
# Compares mu-sidecar with direct redis-server, nutcracker (twemproxy, a
# proxy without replication) and Redis native replication made synchronous
# with WAIT, on this machine, in one run:
#
#   latency:    redis-benchmark -c 1          (SET, GET: rps, p50, p99)
#   throughput: redis-benchmark -c 50 -P 16   (SET, GET), twice:
#     c50P16  every process on every core, as the kernel places them;
#     node    one node per core: the client, the proxy (or the leader's
#             sidecar, or the Redis master) and the server behind it on
#             CPU 0, the replicas with their sidecars on CPU 1, as on
#             machines of their own. Every setup's front node then has the
#             same one core, which a one-machine group otherwise shares
#             with two more replicas.
#   SET+WAIT:   proxy/examples/redis_load.rs with the same two shapes,
#               `WAIT 2 0` after each batch (redis-benchmark sends one
#               command only); it also runs plain SET against direct redis
#               in the same round, as its own baseline.
#
# Each setup is started, measured and stopped in turn (idle sidecars poll
# and would take CPU from the others), RUNS rounds over all setups; the
# summary gives, per row, the median over the rounds of each figure and of
# its ratio to direct redis of the same round.
#
# Usage: scripts/bench-sidecar.sh   (RUNS=3 N_LAT=20000 N_TPUT=200000 N_WARM=50000)
# Raw CSV, logs and the summary land in $OUT (default target-bench-sidecar/).
# SIDECAR_FLAGS adds flags to every sidecar (e.g. "--heartbeat-us 5000").
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
N_LAT=${N_LAT:-20000}
N_TPUT=${N_TPUT:-200000}
N_WARM=${N_WARM:-50000}
OUT=${OUT:-target-bench-sidecar}
TARGET=${CARGO_TARGET_DIR:-target}

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
need_group_tools
need nutcracker nutcracker
need taskset util-linux
if [ "$(nproc)" -lt 2 ]; then
  echo "$(basename "$0"): the node shape needs 2 CPUs, this machine has $(nproc)" >&2
  exit 1
fi

cargo build --release -p mu-sidecar --bin mu-sidecar --example redis_load
SIDECAR=$TARGET/release/mu-sidecar
LOAD=$TARGET/release/examples/redis_load
mkdir -p "$OUT"
RAW=$OUT/raw.csv
echo "run,setup,shape,test,rps,p50_ms,p99_ms" >"$RAW"
FAILURES=$OUT/failures.txt
: >"$FAILURES"

# record RUN SETUP SHAPE < redis-benchmark CSV (lines before its header,
# such as nutcracker's missing CONFIG warning, are skipped)
record() {
  python3 -c '
import csv, sys
run, setup, shape = sys.argv[1:4]
lines = sys.stdin.read().splitlines()
header = next(i for i, l in enumerate(lines) if l.startswith("\"test\""))
for row in csv.DictReader(lines[header:]):
    print(",".join([run, setup, shape, row["test"], row["rps"],
                    row["p50_latency_ms"], row["p99_latency_ms"]]))
' "$@" | tee -a "$RAW"
}

# measure RUN SETUP SHAPE COMMAND...: records COMMAND's CSV; a run that
# fails (redis-benchmark stops at the first error reply) is listed in
# $OUT/failures.txt with its last output line and left out of the medians.
measure() {
  local run=$1 setup=$2 shape=$3 csv
  shift 3
  if csv=$("$@" 2>&1); then
    record "$run" "$setup" "$shape" <<<"$csv"
  else
    echo "round $run, $setup, $shape: $(tail -n 1 <<<"$csv")" | tee -a "$FAILURES"
  fi
}

# bench RUN SETUP PORT SHAPE: redis-benchmark SET and GET in one shape,
# c1 or c50P16. Each setup runs all its `-c 1` measurements first: for a
# second or two after a pipelined burst the kernel places a proxy's thread
# on the client's or the server's core (few migrations), and `-c 1` p50
# rises by about 30% on this 2-core VM until the load history decays. The
# pipelined shape runs after a warm-up that is not recorded, the same for
# every setup: a fresh sidecar group runs its first ~20,000 pipelined
# writes at about half its later rate (page zeroing as its memory grows
# dominated that profile).
bench() {
  local run=$1 setup=$2 port=$3 shape=$4 on=()
  # The node shape's client runs on the front node's core.
  [ "$shape" = node ] && on=(taskset -c 0)
  if [ "$shape" = c1 ]; then
    measure "$run" "$setup" c1 redis-benchmark -h 127.0.0.1 -p "$port" -t set,get \
      -n "$N_LAT" -c 1 --csv
  else
    "${on[@]}" redis-benchmark -h 127.0.0.1 -p "$port" -t set,get -n "$N_WARM" -c 50 -P 16 \
      -q >/dev/null
    measure "$run" "$setup" "$shape" "${on[@]}" redis-benchmark -h 127.0.0.1 -p "$port" \
      -t set,get -n "$N_TPUT" -c 50 -P 16 --csv
  fi
}

# load RUN SETUP PORT SHAPE NAME [redis_load args]: redis_load in one shape.
load() {
  local run=$1 setup=$2 port=$3 shape=$4 name=$5 on=()
  shift 5
  [ "$shape" = node ] && on=(taskset -c 0)
  if [ "$shape" = c1 ]; then
    measure "$run" "$setup" c1 "$LOAD" --port "$port" --name "$name" --requests "$N_LAT" \
      --clients 1 "$@"
  else
    measure "$run" "$setup" "$shape" "${on[@]}" "$LOAD" --port "$port" --name "$name" \
      --requests "$N_TPUT" --clients 50 --pipeline 16 "$@"
  fi
}

direct() {
  local run=$1 port
  port=$(free_port)
  start_redis "$port"
  bench "$run" direct "$port" c1
  load "$run" direct "$port" c1 SET-redis_load
  bench "$run" direct "$port" c50P16
  load "$run" direct "$port" c50P16 SET-redis_load
  pin 0 "$LAST_PID"
  bench "$run" direct "$port" node
  load "$run" direct "$port" node SET-redis_load
  stop_all
}

twemproxy() {
  local run=$1 port proxy server
  port=$(free_port)
  proxy=$(free_port)
  start_redis "$port"
  server=$LAST_PID
  start_nutcracker "$proxy" "$port"
  bench "$run" nutcracker "$proxy" c1
  bench "$run" nutcracker "$proxy" c50P16
  pin 0 "$server" "$LAST_PID"
  bench "$run" nutcracker "$proxy" node
  stop_all
}

replicas_online() {
  [ "$(redis-cli -p "$1" info replication | grep -c 'state=online')" = 2 ]
}

native_replication() {
  local run=$1 master master_pid replica_pids=()
  master=$(free_port)
  start_redis "$master"
  master_pid=$LAST_PID
  for _ in 1 2; do
    start_redis "$(free_port)" --replicaof 127.0.0.1 "$master"
    replica_pids+=("$LAST_PID")
  done
  until_ok "two replicas online" replicas_online "$master"
  bench "$run" redis-replication "$master" c1
  load "$run" redis-replication "$master" c1 SET+WAIT --wait 2
  bench "$run" redis-replication "$master" c50P16
  load "$run" redis-replication "$master" c50P16 SET+WAIT --wait 2
  pin 0 "$master_pid"
  pin 1 "${replica_pids[@]}"
  bench "$run" redis-replication "$master" node
  load "$run" redis-replication "$master" node SET+WAIT --wait 2
  stop_all
}

sidecars() {
  local run=$1 fabric=$2 lead i
  start_group "$fabric"
  bench "$run" "mu-sidecar-$fabric" "$(leader_port)" c1
  bench "$run" "mu-sidecar-$fabric" "$(leader_port)" c50P16
  lead=$(leader_index)
  for i in 0 1 2; do
    if [ "$i" = "$lead" ]; then
      pin 0 "${SIDECAR_PID[$i]}" "${BACKEND_PID[$i]}"
    else
      pin 1 "${SIDECAR_PID[$i]}" "${BACKEND_PID[$i]}"
    fi
  done
  bench "$run" "mu-sidecar-$fabric" "$(leader_port)" node
  stop_group
}

for run in $(seq "$RUNS"); do
  echo "== round $run of $RUNS"
  direct "$run"
  twemproxy "$run"
  native_replication "$run"
  sidecars "$run" shm
  sidecars "$run" tcp
done

python3 - "$RAW" "$FAILURES" <<'EOF' | tee "$OUT/summary.md"
import csv, statistics, sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1])))
base = {}
proxy = {}
for r in rows:
    if r["setup"] == "direct":
        base[(r["run"], r["shape"], r["test"])] = r
    if r["setup"] == "nutcracker":
        proxy[(r["run"], r["shape"], r["test"])] = r
by = defaultdict(list)
for r in rows:
    # SET+WAIT and redis_load's own SET compare with direct SET.
    test = "SET" if r["test"].startswith("SET") else r["test"]
    key = (r["run"], r["shape"], test)
    by[(r["setup"], r["shape"], r["test"])].append((r, base[key], proxy.get(key)))
med = statistics.median
print("| setup | shape | test | rps | ×direct | ×nutcracker | p50 ms | ×direct | p99 ms | ×direct | rounds |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for (setup, shape, test), rs in by.items():
    cols = []
    for f in ["rps", "p50_ms", "p99_ms"]:
        cols.append(f"{med(float(r[f]) for r, _, _ in rs):.{0 if f == 'rps' else 3}f}")
        cols.append(f"{med(float(r[f]) / float(b[f]) for r, b, _ in rs):.2f}")
        if f == "rps":
            vs = [float(r[f]) / float(n[f]) for r, _, n in rs if n]
            cols.append(f"{med(vs):.2f}" if vs else "–")
    print(f"| {setup} | {shape} | {test} | " + " | ".join(cols) + f" | {len(rs)} |")
failures = open(sys.argv[2]).read().strip()
if failures:
    print("\nFailed runs (left out above):\n" + failures)
EOF
