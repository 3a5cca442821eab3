#!/usr/bin/env bash
# Several hosts on one PostgreSQL database (docs/BENCHMARKS.md, section 9):
# the same `drops-host simulate` load against one host and against three on
# one database: acknowledged heartbeats per second, p50/p99 acknowledgement
# latency, and viewer-minutes per second with grants decided (from the first
# report sent until every engine partition has evaluated the whole inbox);
# then a plugin uploaded to one host until it serves on all three.
# Usage: benches/cluster.sh [channels=100] [viewers=1000] [minutes=40] [campaigns=6] [concurrency=12]
# PostgreSQL: DROPS_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
channels=${1:-100} viewers=${2:-1000} minutes=${3:-40} campaigns=${4:-6} concurrency=${5:-12}
admin_url=${DROPS_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
partitions=6
. benches/common.sh
bench_setup cluster
install_plugin watch_time_tiers
# Several campaigns, so the engine partitions have work to share.
for i in $(seq 1 "$campaigns"); do
  sed "0,/^id = .*/s//id = \"bench-campaign-$i\"/" examples/rules/campaigns/summer-boss-rush.toml \
    > "$work/rules/campaigns/bench-$i.toml"
done
pids=()
databases=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for db in "${databases[@]}"; do psql "$admin_url" -qAt -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
sql() { psql "${admin_url%/*}/$1" -qAt -c "$2"; }
# CPU seconds (user + system) used so far by the given processes.
cpu_of() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "scale=1; $t / $(getconf CLK_TCK)" | bc; }

# Starts host $2 of run $1 on database $3; appends its URL to $urls.
start_cluster_host() {
  local dir="$work/run$1/host$2"
  mkdir -p "$dir/data"
  cp -r "$work/rules" "$dir/rules"
  cat > "$dir/drops-host.toml" <<TOML
listen = "127.0.0.1:0"
data_dir = "$dir/data"
rules_dir = "$dir/rules"
database_url = "${admin_url%/*}/$3"
[admin]
token = "bench-token-0123456"
[engine]
checkpoint_interval_secs = 1
[cluster]
enabled = true
host_id = "bench-$2"
engine_partitions = $partitions
publish_rules = $([ "$2" = 1 ] && echo true || echo false)
TOML
  "$bin" serve --config "$dir/drops-host.toml" > "$dir/stdout" 2> "$dir/host.log" &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q listening "$dir/stdout" && break; sleep 0.1; done
  urls+=("$(sed -n 's/drops-host listening on //p' "$dir/stdout")")
}

for hosts in ${HOSTS:-1 3}; do
  db="drops_bench_$(date +%s%N)"
  databases+=("$db")
  psql "$admin_url" -qAt -c "CREATE DATABASE $db" >/dev/null
  urls=()
  for h in $(seq 1 "$hosts"); do start_cluster_host "$hosts" "$h" "$db"; done
  # Let the hosts share out the partitions (one handover per host per lease tick).
  for _ in $(seq 1 300); do
    [ "$(sql "$db" "SELECT count(*) = $hosts AND sum(n) = $partitions AND max(n) <= ($partitions + $hosts - 1) / $hosts FROM (SELECT holder, count(*) AS n FROM leases WHERE name LIKE 'engine/%' AND holder IS NOT NULL GROUP BY holder) h")" = t ] && break
    sleep 0.1
  done
  if [ "$(sql "$db" "SELECT count(*) FROM leases WHERE name LIKE 'engine/%' AND holder IS NOT NULL")" != "$partitions" ]; then
    echo "partitions not all held:"; sql "$db" "SELECT name, holder, epoch FROM leases ORDER BY name"
    grep -h cluster "$work/run$hosts"/host*/host.log | tail -20
    exit 1
  fi
  [ "$(curl -s -H 'authorization: Bearer bench-token-0123456' "${urls[0]}/v1/campaigns" | grep -o '"revision"' | wc -l)" = "$campaigns" ] || { echo "campaigns did not load"; exit 1; }
  echo "== $hosts host(s), $partitions engine partitions, $campaigns campaigns: $channels channels x $viewers viewers x $minutes minutes, $concurrency in flight"
  sql "$db" "SELECT holder, count(*) FROM leases WHERE name LIKE 'engine/%' GROUP BY holder ORDER BY holder" | sed 's/^/  partitions held: /'
  target=$(IFS=,; echo "${urls[*]}")
  run_pids=("${pids[@]: -$hosts}")
  pg_pids=($(pgrep -x postgres || true))
  hosts_cpu_before=$(cpu_of "${run_pids[@]}") pg_cpu_before=$(cpu_of "${pg_pids[@]}")
  start=$(date +%s.%N)
  "$bin" simulate --target "$target" --channels "$channels" --viewers "$viewers" --multi-viewers 0 \
    --minutes "$minutes" --speed 1000000 --concurrency "$concurrency" --verbose false | grep '^simulate: sent'
  acked=$(date +%s.%N)
  until [ "$(sql "$db" "SELECT (SELECT count(*) FROM engine_checkpoint) = $partitions AND (SELECT min(inbox_seq) FROM engine_checkpoint) >= (SELECT max(seq) FROM inbox)")" = t ]; do
    sleep 0.05
  done
  done_at=$(date +%s.%N)
  viewer_minutes=$((channels * viewers * minutes))
  grants=$(sql "$db" "SELECT count(*) FROM grants")
  pg_pids=($(pgrep -x postgres || true))
  echo "CPU used meanwhile: drops-host $(echo "$(cpu_of "${run_pids[@]}") - $hosts_cpu_before" | bc) s (per host: $(for p in "${run_pids[@]}"; do echo -n "$(cpu_of "$p") "; done)s since start), PostgreSQL $(echo "$(cpu_of "${pg_pids[@]}") - $pg_cpu_before" | bc) s (processes alive at the end), in $(echo "$done_at - $start" | bc) s of wall time on $(nproc) cores"
  echo "evaluated by every partition $(echo "$done_at - $acked" | bc) s after the last acknowledgement; $(echo "$viewer_minutes / ($done_at - $start)" | bc) viewer-minutes/s decided end to end ($viewer_minutes viewer-minutes x $campaigns campaigns, $grants grants)"
done

echo "== plugin uploaded to host 2 of 3 until it serves on all three (5 uploads)"
orig="$work/rules/plugins/watch-time-tiers.wasm"
for i in 1 2 3 4 5; do
  plugin_version "$orig" "$work/next.wasm" "$i"
  start=$(date +%s%N)
  curl -s -o /dev/null -X PUT -H 'authorization: Bearer bench-token-0123456' --data-binary @"$work/next.wasm" "${urls[1]}/v1/plugins/watch-time-tiers"
  line="upload $i: answered $(( ($(date +%s%N) - start) / 1000000 )) ms"
  for u in "${urls[@]}"; do
    until curl -s -H 'authorization: Bearer bench-token-0123456' "$u/v1/campaigns" | grep -q "$want"; do sleep 0.002; done
    line="$line; $u serving at $(( ($(date +%s%N) - start) / 1000000 )) ms"
  done
  echo "$line"
done
