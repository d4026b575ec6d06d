# Shared by the benchmark scripts: process bookkeeping, free ports, waits,
# redis-server and mu-sidecar groups. Source it after setting OUT (the
# directory for logs) and, for sidecar groups, SIDECAR (the binary).
# BACKEND_VIA=unix puts each redis-server on a Unix socket as well, which
# sidecars and nutcracker then reach it through (default: tcp).
# shellcheck shell=bash

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "$(basename "$0"): $1 is missing: apt-get install -y $2" >&2
    exit 1
  }
}

# need_group_tools: what redis-servers, sidecar groups and redis-benchmark
# runs need.
need_group_tools() {
  need redis-server redis-server
  need redis-benchmark redis-tools
  need redis-cli redis-tools
  need curl curl
  need python3 python3
}

PIDS=()
stop_all() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}

# free_port: a loopback port free now and not handed out before by this
# script (ports picked before their servers bind must not repeat; the list
# is a file because $(free_port) runs in a subshell).
TAKEN_PORTS=$(mktemp "${TMPDIR:-/tmp}/bench-ports.XXXXXX")
trap 'stop_all; rm -f "$TAKEN_PORTS"; rm -rf "${SHM_DIR:-/nonexistent}"' EXIT
free_port() {
  local p
  while :; do
    p=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    grep -qx "$p" "$TAKEN_PORTS" && continue
    echo "$p" >>"$TAKEN_PORTS"
    echo "$p"
    return
  done
}

# until_ok DESCRIPTION COMMAND...: polls COMMAND every 10 ms for up to
# ${UNTIL_S:-30} s.
until_ok() {
  local what=$1 i
  shift
  for i in $(seq $((${UNTIL_S:-30} * 100))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.01
  done
  echo "$(basename "$0"): timed out waiting for $what" >&2
  exit 1
}

# redis_socket PORT: the Unix socket of the redis-server on PORT.
redis_socket() { echo "$OUT/redis-$1/redis.sock"; }

# backend_addr PORT: how a proxy reaches the redis-server on PORT
# (BACKEND_VIA).
backend_addr() {
  case "${BACKEND_VIA:-tcp}" in
    tcp) echo "127.0.0.1:$1" ;;
    unix) echo "unix:$(redis_socket "$1")" ;;
    *) echo "$(basename "$0"): BACKEND_VIA is tcp or unix, not $BACKEND_VIA" >&2; exit 1 ;;
  esac
}

# pin CPU PID...: every thread of each PID runs on CPU only from now on.
pin() {
  local cpu=$1 pid
  shift
  for pid in "$@"; do taskset -a -p -c "$cpu" "$pid" >/dev/null; done
}

# leader_index: 0, 1 or 2, the group's leader (from LISTEN and leader_port).
leader_index() {
  local port i
  port=$(leader_port) || return 1
  for i in 0 1 2; do
    [ "${LISTEN[$i]##*:}" = "$port" ] && { echo "$i"; return 0; }
  done
  return 1
}

redis_up() { [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ]; }

# start_redis PORT [extra redis-server args]; its pid is $LAST_PID.
start_redis() {
  local port=$1
  shift
  # Its own directory: a replica's full sync writes an RDB file there.
  mkdir -p "$OUT/redis-$port"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$OUT/redis-$port" --unixsocket "$(redis_socket "$port")" \
    "$@" >>"$OUT/redis-$port.log" 2>&1 &
  LAST_PID=$!
  PIDS+=($!)
  until_ok "redis-server on $port" redis_up "$port"
}

leader_port() {
  local i
  for i in 0 1 2; do
    if curl -sf "http://${HTTP[$i]}/status" | grep -q '"role":"leader"'; then
      echo "${LISTEN[$i]##*:}"
      return 0
    fi
  done
  return 1
}

# stop_group: stops every process and removes the group's shm objects.
stop_group() {
  stop_all
  rm -rf "$SHM_DIR"
}

# start_group FABRIC: three redis-servers and sidecars; sets LISTEN, HTTP,
# BACKEND (ports), BACKEND_PID, SIDECAR_PID and SHM_DIR, and waits until
# all are ready.
start_group() {
  local fabric=$1 i peers fwd
  peers=()
  fwd=()
  LISTEN=()
  HTTP=()
  BACKEND=()
  BACKEND_PID=()
  SIDECAR_PID=()
  for i in 0 1 2; do
    peers+=("127.0.0.1:$(free_port)")
    fwd+=("127.0.0.1:$(free_port)")
    LISTEN+=("127.0.0.1:$(free_port)")
    HTTP+=("127.0.0.1:$(free_port)")
  done
  SHM_DIR=$(mktemp -d /dev/shm/bench-sidecar.XXXXXX)
  for i in 0 1 2; do
    BACKEND+=("$(free_port)")
    start_redis "${BACKEND[$i]}"
    BACKEND_PID+=("$LAST_PID")
    "$SIDECAR" --id $((i + 1)) --nodes 3 --backend-kind redis --backend "$(backend_addr "${BACKEND[$i]}")" \
      --listen "${LISTEN[$i]}" --http "${HTTP[$i]}" --fabric "$fabric" \
      --peers "$(IFS=,; echo "${peers[*]}")" --forward-peers "$(IFS=,; echo "${fwd[*]}")" \
      --group "bench$$" --shm-dir "$SHM_DIR" ${SIDECAR_FLAGS:-} >"$OUT/sidecar-$fabric-$((i + 1)).log" 2>&1 &
    PIDS+=($!)
    SIDECAR_PID+=($!)
  done
  for i in 0 1 2; do until_ok "sidecar $((i + 1)) ready" curl -sf "http://${HTTP[$i]}/readyz"; done
  until_ok "a leader" leader_port
}

# start_nutcracker PORT BACKEND_PORT: nutcracker (twemproxy) on PORT in
# front of the redis-server on BACKEND_PORT; its pid is $LAST_PID.
start_nutcracker() {
  local port=$1 backend server
  backend=$(backend_addr "$2")
  # nutcracker names a Unix socket by its path alone.
  server=${backend#unix:}
  cat >"$OUT/nutcracker-$port.yml" <<EOF
bench:
  listen: 127.0.0.1:$port
  redis: true
  hash: fnv1a_64
  distribution: ketama
  servers:
    - $server:1
EOF
  nutcracker -c "$OUT/nutcracker-$port.yml" -s "$(free_port)" -a 127.0.0.1 \
    -o "$OUT/nutcracker-$port.log" -p "$OUT/nutcracker-$port.pid" &
  LAST_PID=$!
  PIDS+=($!)
  until_ok "nutcracker on $port" redis_up "$port"
}
