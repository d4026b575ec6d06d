#!/usr/bin/env bash
# Renders dashboards/prometheus-graph.png: a local 3-node group (redis over
# tcp) under redis-benchmark traffic with one leader change (the leader
# sidecar stopped for 3 s), scraped by Prometheus with dashboards/prometheus,
# and Prometheus' graph page of the dashboard's key queries rendered by
# headless Chromium. Grafana is not in Debian's archive, so the Grafana
# dashboard itself is not rendered here.
#
# Run by hand (not in CI), after:
#   cargo build --release -p mu-sidecar -p mu-examples
#   sudo apt-get install -y prometheus chromium redis-tools
set -euo pipefail
cd "$(dirname "$0")/.."
# MU_BIN_DIR: where local-cluster and mu-sidecar are (default: the release build).
bin="${MU_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}"
out="$PWD/dashboards/prometheus-graph.png"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The group; its sidecars are children of local-cluster.
# Its stdin stays open (it runs until end of input or Ctrl-C).
mkfifo "$work/stdin"
"$bin/local-cluster" --fabric tcp <"$work/stdin" >"$work/cluster.out" 2>&1 &
cluster=$!
exec 3>"$work/stdin"
pids+=("$cluster")
for _ in $(seq 600); do grep -q "Press Ctrl-C" "$work/cluster.out" && break; sleep 0.1; done
grep -q "Press Ctrl-C" "$work/cluster.out" || { cat "$work/cluster.out"; exit 1; }
mapfile -t https < <(grep -o 'http http://[0-9.:]*' "$work/cluster.out" | sed 's|http http://||')
client=$(grep -o 'node 1: clients [0-9.:]*' "$work/cluster.out" | sed 's|.* ||')
echo "group: ${https[*]}; clients at $client"

# Prometheus with the shipped configuration, targets and intervals adapted.
mkdir -p "$work/targets"
cp dashboards/prometheus/alerts.yml "$work/"
sed -e 's/scrape_interval: 5s/scrape_interval: 1s/' -e 's/scrape_timeout: 4s/scrape_timeout: 900ms/' \
    -e 's/evaluation_interval: 5s/evaluation_interval: 1s/' \
    -e "s|\"127.0.0.1:9001\", \"127.0.0.1:9002\", \"127.0.0.1:9003\"|\"${https[0]}\", \"${https[1]}\", \"${https[2]}\"|" \
    dashboards/prometheus/prometheus.yml >"$work/prometheus.yml"
prom=127.0.0.1:19090
(cd "$work" && exec prometheus --config.file=prometheus.yml --storage.tsdb.path=data \
  --web.listen-address=$prom --log.level=warn >prometheus.log 2>&1) &
pids+=("$!")

# Traffic for 60 s; the leader sidecar stops for 3 s after 25 s.
# redis-benchmark gives up on an error reply (TRYAGAIN during the change):
# it starts again.
(while :; do
  redis-benchmark -h "${client%:*}" -p "${client#*:}" -t set,get -c 4 -n 200000 -q >/dev/null 2>&1 || sleep 0.2
done) &
bench=$!
pids+=("$bench")
sleep 25
for h in "${https[@]}"; do
  if curl -s "http://$h/status" | grep -q '"role":"leader"'; then
    port=${h#*:}
    for p in $(pgrep -P "$cluster"); do
      if tr '\0' ' ' </proc/"$p"/cmdline | grep -q -- "--http 127.0.0.1:$port"; then
        echo "stopping the leader sidecar (http $h, pid $p) for 3 s"
        kill -STOP "$p"; sleep 3; kill -CONT "$p"
      fi
    done
  fi
done
sleep 35
# The loop is held so that it starts no new run, its run ends, then it ends.
kill -STOP "$bench"
pkill -P "$bench" redis-benchmark || true
kill "$bench"; kill -CONT "$bench"

# The graph page: one graph per key query, the last two minutes.
enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
queries=(
  'sum by (group, node) (mu_sidecar_role{role="leader"}) * 2 + on (group, node) sum by (group, node) (mu_sidecar_role{role="candidate"})'
  'rate(mu_sidecar_commit_index[5s])'
  'histogram_quantile(0.99, sum by (group, node, le) (rate(mu_sidecar_replication_latency_seconds_bucket[5s])))'
  'sum by (group, class, outcome) (rate(mu_sidecar_requests_total[5s]))'
  'mu_sidecar_apply_lag_entries'
)
url="http://$prom/graph?"
i=0
for q in "${queries[@]}"; do
  url+="g$i.expr=$(enc "$q")&g$i.tab=0&g$i.range_input=2m&g$i.stacked=0&g$i.show_exemplars=0&"
  i=$((i + 1))
done
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,3400 \
  --virtual-time-budget=15000 --screenshot="$out" "$url"
echo "wrote $out"
