#!/usr/bin/env bash
# Where the CPU goes under pipelined SET (redis-benchmark -t set -c 50
# -P 16), for direct redis-server, nutcracker (twemproxy) in front of it,
# and mu-sidecar groups on the shm and tcp fabrics: the throughput, and
# the CPU time (user + system, all threads, from /proc/PID/stat) each
# process used during the run divided by the requests served.
#
# When every process shares the same cores, as on a one-machine test
# group, throughput is bounded by the total CPU per request; this shows
# what each setup spends it on. Each setup is started, warmed up with
# 100,000 requests, measured and stopped in turn, RUNS rounds; the summary
# gives medians over the rounds.
#
# Usage: scripts/bench-cpu.sh            (RUNS=3 N=1000000)
# Raw CSV, logs and the summary land in $OUT (default target-bench-sidecar/cpu).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
N=${N:-1000000}
OUT=${OUT:-target-bench-sidecar/cpu}
TARGET=${CARGO_TARGET_DIR:-target}

# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
need_group_tools
need nutcracker nutcracker

cargo build --release -p mu-sidecar --bin mu-sidecar
SIDECAR=$TARGET/release/mu-sidecar
mkdir -p "$OUT"
RAW=$OUT/cpu.csv
echo "run,setup,rps,role,us_per_request" >"$RAW"
HZ=$(getconf CLK_TCK)

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# measure RUN SETUP PORT ROLE=PID...: one pipelined SET run against PORT;
# records the CPU per request of each role (a role may name several pids,
# whose times add up) and of the benchmark client.
measure() {
  local run=$1 setup=$2 port=$3 spec role pid rps us
  shift 3
  redis-benchmark -h 127.0.0.1 -p "$port" -t set -n 100000 -c 50 -P 16 -q >/dev/null
  declare -A before=()
  for spec in "$@"; do
    pid=${spec#*=}
    before[$pid]=$(ticks "$pid")
  done
  local TIMEFORMAT='%U %S'
  # (nutcracker makes redis-benchmark warn on stderr: kept apart)
  { time redis-benchmark -h 127.0.0.1 -p "$port" -t set -n "$N" -c 50 -P 16 --csv \
    >"$OUT/last.csv" 2>"$OUT/last.err"; } 2>"$OUT/client-time"
  rps=$(tail -n 1 "$OUT/last.csv" | cut -d, -f2 | tr -d '"')
  declare -A used=()
  for spec in "$@"; do
    role=${spec%%=*}
    pid=${spec#*=}
    used[$role]=$((${used[$role]:-0} + $(ticks "$pid") - ${before[$pid]}))
  done
  for role in "${!used[@]}"; do
    us=$(python3 -c "print(f'{${used[$role]} / $HZ * 1e6 / $N:.3f}')")
    echo "$run,$setup,$rps,$role,$us" | tee -a "$RAW"
  done
  us=$(awk -v n="$N" '{ printf "%.3f", ($1 + $2) * 1e6 / n }' "$OUT/client-time")
  echo "$run,$setup,$rps,client,$us" | tee -a "$RAW"
}

direct() {
  local port
  port=$(free_port)
  start_redis "$port"
  measure "$1" direct "$port" "servers=$LAST_PID"
  stop_all
}

twemproxy() {
  local port proxy server
  port=$(free_port)
  proxy=$(free_port)
  start_redis "$port"
  server=$LAST_PID
  start_nutcracker "$proxy" "$port"
  measure "$1" nutcracker "$proxy" "servers=$server" "proxy=$LAST_PID"
  stop_all
}

sidecars() {
  local run=$1 fabric=$2 port i specs
  start_group "$fabric"
  port=$(leader_port)
  specs=()
  for i in 0 1 2; do
    specs+=("servers=${BACKEND_PID[$i]}")
    if [ "${LISTEN[$i]##*:}" = "$port" ]; then
      specs+=("proxy=${SIDECAR_PID[$i]}")
    else
      specs+=("followers=${SIDECAR_PID[$i]}")
    fi
  done
  measure "$run" "mu-sidecar-$fabric" "$port" "${specs[@]}"
  stop_group
}

for run in $(seq "$RUNS"); do
  echo "== round $run of $RUNS"
  direct "$run"
  twemproxy "$run"
  sidecars "$run" shm
  sidecars "$run" tcp
done

python3 - "$RAW" <<'EOF' | tee "$OUT/summary.md"
import csv, statistics, sys
from collections import defaultdict

rows = list(csv.DictReader(open(sys.argv[1])))
roles = ["servers", "proxy", "followers", "client"]
rps = defaultdict(dict)
us = defaultdict(lambda: defaultdict(dict))
for r in rows:
    rps[r["setup"]][r["run"]] = float(r["rps"])
    us[r["setup"]][r["run"]][r["role"]] = float(r["us_per_request"])
med = statistics.median
print("CPU µs per request, by process (servers: every redis-server; proxy: "
      "nutcracker or the leader's sidecar; followers: both other sidecars)\n")
print("| setup | rps | ×nutcracker | " + " | ".join(roles) + " | total |")
print("|---|---|---|" + "---|" * (len(roles) + 1))
base = rps.get("nutcracker", {})
for setup, runs in rps.items():
    ratio = [runs[r] / base[r] for r in runs if r in base]
    cells = [med(us[setup][r].get(role, 0.0) for r in runs) for role in roles]
    total = med(sum(us[setup][r].values()) for r in runs)
    print(f"| {setup} | {med(runs.values()):.0f} | {med(ratio):.2f} | "
          + " | ".join(f"{c:.2f}" for c in cells) + f" | {total:.2f} |")
EOF
