#!/usr/bin/env bash
# EXPERIMENTS.md over the rdma fabric: MAIN-ST, MAIN-ST-LAT and the REDIS
# experiment (three redis-servers behind three mu-sidecars, the three load
# generators, the SIGUSR1 dump, SET on node 1 and GET on nodes 2 and 3),
# with the three replicas on one machine, one RDMA device each.
#
# In the Soft-RoCE guest (three rxe devices joined by a bridge), from the
# repository root:
#
#   cargo build --release -p mu-sidecar -p mu-examples --features mu-sidecar/rdma,mu-examples/rdma
#   RDMA_VM_NODES=3 RDMA_VM_ENV=MU_HEARTBEAT_US MU_HEARTBEAT_US=20000 \
#     scripts/rdma-vm examples/experiments-rdma.sh
#
# On a host with three devices: DEVS="mlx5_0 mlx5_1 mlx5_2" IPS="<ip of
# each device's netdev>" GID=1 examples/experiments-rdma.sh. Knobs: BIN
# (default target/release), COUNT (MAIN-ST commands, 5000), REQ (requests
# per load run, 2000), OUT (default ./rdma-experiments, where every output
# file goes), and any mu flag as its environment variable (MU_HEARTBEAT_US:
# the guest's virtual CPUs are too slow for the default 1 ms heartbeat).
# The servers and sidecars use fixed loopback ports 6381-6383, 7371-7373,
# 9391-9393 and 7201-7203.
set -u
BIN=$(realpath "${BIN:-target/release}")
DEVS=(${DEVS:-${RDMA_VM_DEVS:?DEVS: three RDMA devices}})
IPS=(${IPS:-${RDMA_VM_IPS:?IPS: the address of each device}})
GID=${GID:-${RDMA_VM_GID_INDEX:-1}}
COUNT=${COUNT:-5000}
REQ=${REQ:-2000}
OUT=${OUT:-$PWD/rdma-experiments}
rm -rf "$OUT" && mkdir -p "$OUT" && cd "$OUT" || exit 1
echo "devices ${DEVS[*]}, addresses ${IPS[*]}, GID index $GID, MU_HEARTBEAT_US=${MU_HEARTBEAT_US:-default}"
peers() { echo "${IPS[0]}:$1,${IPS[1]}:$1,${IPS[2]}:$1"; }
rdma() { echo "--fabric rdma --rdma-device ${DEVS[$1 - 1]} --rdma-gid-index $GID"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
run() {
  echo "\$ $*" | sed "s#$BIN/##"
  "$@"
  echo "[exit $?; load $(load)]"
}

for tool in main-st main-st-lat; do
  echo "\$ $tool <i> 64 1 --fabric rdma --rdma-device <device i> --rdma-gid-index $GID --peers $(peers 7100) --count $COUNT   # i = 1, 2, 3"
  for i in 1 2 3; do
    # shellcheck disable=SC2046
    "$BIN/$tool" $i 64 1 $(rdma $i) --peers "$(peers 7100)" --count "$COUNT" \
      > $tool-$i.out 2>&1 &
  done
  wait
  cat $tool-1.out $tool-2.out $tool-3.out
done
[ -f dump-st-64-1.txt ] && run "$BIN/mu-load" stats dump-st-64-1.txt

ready() {
  exec 3<>/dev/tcp/127.0.0.1/$1 || return 1
  printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3
  head -1 <&3 | grep -q " 200"
  local r=$?
  exec 3>&-
  return $r
}
for i in 1 2 3; do
  redis-server --port 638$i --bind 127.0.0.1 --save '' --appendonly no --daemonize yes > /dev/null
done
echo "\$ mu-sidecar --id <i> --nodes 3 --backend 127.0.0.1:638<i> --listen 127.0.0.1:737<i> --http 127.0.0.1:939<i> --fabric rdma --rdma-device <device i> --rdma-gid-index $GID --peers $(peers 7110) --forward-peers 127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203 --dump-dir $OUT"
for i in 1 2 3; do
  # shellcheck disable=SC2046
  "$BIN/mu-sidecar" --id $i --nodes 3 --backend 127.0.0.1:638$i --listen 127.0.0.1:737$i \
    --http 127.0.0.1:939$i $(rdma $i) --peers "$(peers 7110)" \
    --forward-peers 127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203 --dump-dir "$OUT" \
    > sidecar-$i.log 2>&1 &
  echo $! > sidecar-$i.pid
done
for i in 1 2 3; do
  for _ in $(seq 1 1200); do ready 939$i 2> /dev/null && break; sleep 0.05; done
  ready 939$i 2> /dev/null || { echo "node $i is not ready:"; cat sidecar-$i.log; }
done
dump() {
  rm -f dump-1.txt
  echo "\$ kill -USR1 <pid of sidecar 1>"
  kill -USR1 "$(cat sidecar-1.pid)"
  for _ in $(seq 1 500); do [ -f dump-1.txt ] && break; sleep 0.02; done
  run "$BIN/mu-load" stats dump-1.txt
}
dump > /dev/null # starts the next dump from zero
run "$BIN/redis-puts-only" 8 30 127.0.0.1 7371 --requests "$REQ" --out puts-only.txt
dump
run "$BIN/redis-gets-only" 8 30 127.0.0.1 7371 --requests "$REQ" --keys 1000 --out gets-only.txt
run "$BIN/redis-puts-gets" 8 30 127.0.0.1 7371 --requests "$REQ" --keys 1000 --out puts-gets.txt
echo "(unreplicated: the same client against node 1's redis-server)"
run "$BIN/redis-puts-only" 8 30 127.0.0.1 6381 --requests "$REQ" --out direct.txt
run redis-cli -p 7371 SET hello world
run redis-cli -p 7372 GET hello
run redis-cli -p 7373 GET hello
for i in 1 2 3; do
  kill "$(cat sidecar-$i.pid)"
  redis-cli -p 638$i shutdown nosave > /dev/null 2>&1
done
wait
