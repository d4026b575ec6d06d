#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine:
# - redis-server, redis-tools and memcached, which integration tests start
#   on loopback (and stop) themselves;
# - the stock clients the compatibility tests run through the sidecar:
#   redis-cli and redis-benchmark (redis-tools), redis-py, pymemcache and
#   memcslap (libmemcached-tools);
# - prometheus (with promtool), which the dashboards test starts on loopback
#   to scrape a test group and evaluate every panel query and alert rule;
# - procps (kill) and iproute2 (ip netns) for the fabric tests;
# - gdb, whose thread backtraces of a sidecar a fault test prints when it
#   times out;
# - the build tools of mu's `rdma` feature: ibverbs-sys builds rdma-core's
#   headers with cmake and runs bindgen (libclang); the binary links
#   libibverbs. The Soft-RoCE guest itself (qemu, a kernel, rdma tools) is
#   installed by scripts/rdma-vm on first use.
# Idempotent: nothing is fetched when everything is present.
set -euo pipefail

packages=(redis-server redis-tools memcached procps iproute2 gdb
          python3-redis python3-pymemcache libmemcached-tools prometheus
          cmake pkg-config python3 clang libclang-dev libnl-3-dev libnl-route-3-dev libibverbs-dev)
missing=0
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing=1
done
[ "$missing" = 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: packages are missing; run as root, or: sudo apt-get install -y ${packages[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends redis-server redis-tools memcached procps iproute2 gdb \
  python3-redis python3-pymemcache libmemcached-tools prometheus \
  cmake pkg-config python3 clang libclang-dev libnl-3-dev libnl-route-3-dev libibverbs-dev
# Debian starts the packaged services; the tests start their own servers on
# free ports, so the system-wide ones are stopped to keep the machine quiet.
for svc in redis-server memcached prometheus; do
  if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" 2>/dev/null || true; fi
done
