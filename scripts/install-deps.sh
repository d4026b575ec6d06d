#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine: the stock
# redis-server and memcached that integration tests start on loopback.
# Idempotent: packages already present are not fetched again.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v memcached >/dev/null 2>&1 || need+=(memcached)

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
