#!/usr/bin/env bash
# The tcp and shm figures of BENCHMARKS.md in one run: the raw floors
# (mu-floor), replication latency (main-st-lat) and throughput (main-st) of a
# 3-process group, and fail-over times (mu-failover). Floors and Mu figures
# come from the same run, so their ratios hold on a noisy machine. A run
# that fails prints FAILED and the script goes on.
#
#   examples/bench-fabrics.sh [count]     # default 20000 proposals per latency run
set -uo pipefail
cd "$(dirname "$0")/.."
count=${1:-20000}
cargo build --release -p mu-examples || exit 1
bin=${CARGO_TARGET_DIR:-target}/release
dumps=$(mktemp -d)
trap 'rm -rf "$dumps"' EXIT

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
for size in 64 256 4096; do
  echo "== $size B"
  for fabric in shm tcp; do
    "$bin/mu-floor" "$fabric" "$size" --count 50000
    for idle in 500 20 0; do
      printf '%s, idle nap %s us: ' "$fabric" "$idle"
      "$bin/main-st-lat" --launch 1 "$size" 1 --count "$count" --fabric "$fabric" \
        --idle-sleep-us "$idle" --ring-mib 64 --dump-dir "$dumps" \
        || echo "FAILED"
    done
  done
done
echo "== throughput, 64 B"
for fabric in shm tcp; do
  for out in 1 16; do
    printf '%s, %s outstanding: ' "$fabric" "$out"
    "$bin/main-st" --launch 1 64 "$out" --count 50000 --fabric "$fabric" --ring-mib 64 || echo "FAILED"
  done
done
echo "== fail-over"
for fabric in shm tcp; do
  for fault in pause kill; do
    "$bin/mu-failover" --fault "$fault" --runs 50 --fabric "$fabric" | tail -1 || echo "FAILED"
  done
done
for fault in pause kill; do
  "$bin/mu-failover" --fault "$fault" --runs 50 --fabric shm --heartbeat-us 200 | tail -1 || echo "FAILED"
done
