#!/usr/bin/env bash
# Host-level measurements on loopback with the release binary (docs/BENCHMARKS.md):
#   1. ingest and engine throughput under `drops-host simulate` load;
#   2. peak memory while taking one heartbeat of 10 million viewers (~200 MB);
#   3. hot reload latency: plugin file renamed into place -> new version serving.
# Usage: benches/load.sh [channels=200] [viewers=1000] [minutes=10] [sqlite_synchronous=full]
set -euo pipefail
cd "$(dirname "$0")/.."
channels=${1:-200} viewers=${2:-1000} minutes=${3:-10} sync=${4:-full}
. benches/common.sh
bench_setup load
install_plugin watch_time_tiers
cp examples/rules/campaigns/summer-boss-rush.toml "$work/rules/campaigns/"
write_config "$sync"
start_host

echo "== 1. $channels channels x $viewers viewers x $minutes minutes, 4 in flight, sqlite_synchronous=$sync"
"$bin" simulate --target "$url" --channels "$channels" --viewers "$viewers" --multi-viewers 0 \
  --minutes "$minutes" --speed 1000000 --concurrency 4 --verbose false
expected=$((channels * viewers * minutes))
start=$(date +%s.%N)
while [ "$(counted_minutes)" != "$expected" ]; do sleep 0.05; done
echo "engine: all $expected viewer-minutes counted $(echo "$(date +%s.%N) - $start" | bc) s after the last acknowledgement"

echo "== 2. one heartbeat of 10,000,000 viewers"
python3 - "$work/big.json" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    f.write('{"broadcaster":"big","viewers":10000000,"game":"GameName","id":"big-1","time":"2026-11-23T10:00:00Z","viewer_list":[')
    f.write(",".join('"%d"' % (1000000000 + i) for i in range(10_000_000)))
    f.write("]}")
PY
ls -l "$work/big.json" | awk '{printf "body: %.0f MB\n", $5/1e6}'
before=$(awk '/VmHWM/ {print $2}' /proc/$host/status)
counted=$(counted_minutes)
start=$(date +%s.%N)
curl -s -o /dev/null -w "POST: %{http_code} in %{time_total} s\n" -H 'content-type: application/json' --data-binary @"$work/big.json" "$url/vhs"
until [ "$(counted_minutes)" -ge $((counted + 10000000)) ]; do sleep 0.1; done
echo "evaluated (10,000,000 viewer-minutes counted) $(echo "$(date +%s.%N) - $start" | bc) s after the POST began"
echo "host peak RSS: before $((before / 1024)) MiB, once evaluated $(( $(awk '/VmHWM/ {print $2}' /proc/$host/status) / 1024 )) MiB"
sleep 12   # the engine's checkpoint (every 10 s) writes the 10 M changed watch-time rows
echo "host peak RSS after the checkpoint: $(( $(awk '/VmHWM/ {print $2}' /proc/$host/status) / 1024 )) MiB; now $(( $(awk '/VmRSS/ {print $2}' /proc/$host/status) / 1024 )) MiB"

echo "== 3. hot reload latency (5 swaps)"
time_swaps "$work/rules/plugins/watch-time-tiers.wasm" 5
grep -o 'rules reloaded in [0-9.]* ms' "$work/host.log" | tail -5
