#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine: the stock
# redis-server and memcached that integration tests start on loopback, and
# the build tools of the `rdma` feature.
# Idempotent: packages already present are not fetched again.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v memcached >/dev/null 2>&1 || need+=(memcached)
# mu's fabric tests: kill(1) stops and resumes writer processes (SIGSTOP,
# SIGCONT); ip(8) builds the network namespaces of the tcp fabric test.
command -v kill >/dev/null 2>&1 || need+=(procps)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# Building mu's `rdma` feature: ibverbs-sys builds rdma-core's headers with
# cmake and runs bindgen (libclang); the binary links libibverbs. The
# Soft-RoCE guest itself (qemu, kernel, rdma tools) is installed by
# scripts/rdma-vm on first use.
for pkg in cmake pkg-config python3 clang libclang-dev libnl-3-dev libnl-route-3-dev libibverbs-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${need[*]}; run as root or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
  # Debian starts the packaged services; the tests start their own servers on
  # free ports, so the system-wide ones are stopped to keep the machine quiet.
  for svc in redis-server memcached; do
    if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" 2>/dev/null || true; fi
  done
fi
