#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine:
# - redis-server, redis-tools and memcached, which integration tests start
#   on loopback (and stop) themselves;
# - the stock clients the compatibility tests run through the sidecar:
#   redis-cli and redis-benchmark (redis-tools), redis-py, pymemcache and
#   memcslap (libmemcached-tools); and, as Debian's redis-py speaks RESP2
#   only, redis-py 5 from the Python registry in a virtualenv of the
#   checkout's own (target/test-python), for the RESP3 client test;
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
          python3-redis python3-pymemcache python3-venv libmemcached-tools prometheus
          cmake pkg-config python3 clang libclang-dev libnl-3-dev libnl-route-3-dev libibverbs-dev)
missing=0
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing=1
done
apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: packages are missing; run as root, or: sudo apt-get install -y ${packages[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # The same list as `packages` above.
  apt-get install -y -q --no-install-recommends redis-server redis-tools memcached procps iproute2 gdb \
    python3-redis python3-pymemcache python3-venv libmemcached-tools prometheus \
    cmake pkg-config python3 clang libclang-dev libnl-3-dev libnl-route-3-dev libibverbs-dev
  # Debian starts the packaged services; the tests start their own servers on
  # free ports, so the system-wide ones are stopped to keep the machine quiet.
  for svc in redis-server memcached prometheus; do
    if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" 2>/dev/null || true; fi
  done
}
[ "$missing" = 0 ] || apt_install

# redis-py with RESP3, pinned, beside the checkout (not system-wide).
venv="$(cd "$(dirname "$0")/.." && pwd)/target/test-python"
want_redis_py=5.2.1
if ! "$venv/bin/python3" -c "import redis, sys; sys.exit(redis.__version__ != '$want_redis_py')" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "redis==$want_redis_py"
fi
