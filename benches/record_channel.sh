#!/usr/bin/env bash
# The record channel, sustained (issue 24; docs/BENCHMARKS.md): one channel
# of VIEWERS viewers reporting MINUTES consecutive minutes to the release
# host with the watch-time-tiers plugin at 30/60/120-minute tiers (so every
# minute counts for every viewer and no grant is due yet), default
# durability (sqlite_synchronous = full, checkpoint every 10 s). Then the
# checkpoint and restart with that many tracked viewers: kill -9, start
# again, time until the engine evaluates a new heartbeat.
# Prints each minute's acknowledgement, the time until every minute is
# counted and until a checkpoint covers the last one, per minute, the host's
# peak memory, the checkpoint's figures and the restart's.
# Usage: benches/record_channel.sh [viewers=9300000] [minutes=10]
set -euo pipefail
cd "$(dirname "$0")/.."
viewers=${1:-9300000} minutes=${2:-10}
. benches/common.sh
bench_setup record
install_plugin watch_time_tiers
sed -e 's/minutes = 10,/minutes = 30,/' -e 's/minutes = 20,/minutes = 60,/' -e 's/minutes = 30, reward = "reward-gold/minutes = 120, reward = "reward-gold/' \
  examples/rules/campaigns/summer-boss-rush.toml > "$work/rules/campaigns/record.toml"
grep -q 'minutes = 120' "$work/rules/campaigns/record.toml"
write_config full
export RUST_LOG=info,drops_host::engine::checkpoint=debug
start_host

# One viewer list, shared by every minute's body.
python3 - "$work/viewers.part" "$viewers" <<'PY'
import sys
n = int(sys.argv[2])
with open(sys.argv[1], "w") as f:
    f.write(",".join('"%d"' % (1000000000 + i) for i in range(n)))
PY
body() { # minute -> $work/body.json
  printf '{"broadcaster":"record","viewers":%d,"game":"GameName","id":"record-%d","time":"2026-11-23T10:%02d:00Z","viewer_list":[' \
    "$viewers" "$1" "$1" > "$work/body.json"
  cat "$work/viewers.part" >> "$work/body.json"
  printf ']}' >> "$work/body.json"
}
echo "== the record channel: $viewers viewers x $minutes minutes (body $(( $(stat -c %s "$work/viewers.part") / 1000000 )) MB)"
start=$(date +%s.%N)
for m in $(seq 1 "$minutes"); do
  body "$m"
  curl -s -o /dev/null -w "minute $m: POST $m %{http_code} acknowledged in %{time_total} s\n" \
    -H 'content-type: application/json' --data-binary @"$work/body.json" "$url/vhs"
done
posted=$(date +%s.%N)
expected=$((viewers * minutes))
until [ "$(counted_minutes)" -ge "$expected" ]; do sleep 0.1; done
evaluated=$(date +%s.%N)
labelled() { curl -s "$url/metrics" | awk -v m="$1" 'index($1, m "{") == 1 {print $2}' | head -1 | cut -d. -f1; }
last_seq=$(labelled drops_engine_inbox_seq)
until [ -n "$last_seq" ] && [ "$(labelled drops_engine_checkpoint_seq)" = "$last_seq" ]; do sleep 0.1; done
checkpointed=$(date +%s.%N)
echo "all $expected viewer-minutes counted $(echo "$evaluated - $start" | bc) s after the first POST (posting took $(echo "$posted - $start" | bc) s)"
echo "a checkpoint covered the last minute $(echo "$checkpointed - $start" | bc) s after the first POST: $(echo "scale=2; ($checkpointed - $start) / $minutes" | bc) s per minute of traffic (goal <= 6)"
echo "host peak RSS: $(( $(awk '/VmHWM/ {print $2}' /proc/$host/status) / 1024 )) MiB (goal < 1024)"
curl -s "$url/metrics" | awk '/^drops_engine_checkpoint_(seconds|pause_seconds)_(sum|count)|^drops_engine_checkpoint_bytes_total/ {print "  " $1 " " $2}'
grep -o 'checkpoint saved.*' "$work/host.log" | tail -3 || true
echo "database: $(du -sh "$work/data" | cut -f1)"

echo "== restart after kill -9 with $viewers tracked viewers"
kill -9 "$host"; wait "$host" 2>/dev/null || true
restart=$(date +%s.%N)
"$bin" serve --config "$work/drops-host.toml" > "$work/stdout" 2> "$work/host.log" &
host=$!
for _ in $(seq 1 600); do grep -q listening "$work/stdout" && break; sleep 0.05; done
url=$(sed -n 's/drops-host listening on //p' "$work/stdout")
curl -s -o /dev/null -H 'content-type: application/json' \
  --data-binary "{\"broadcaster\":\"record\",\"viewers\":1,\"game\":\"GameName\",\"id\":\"after-restart\",\"time\":\"2026-11-23T11:30:00Z\",\"viewer_list\":[\"1000000000\"]}" "$url/vhs"
until [ "$(counted_minutes)" -ge 1 ]; do sleep 0.05; done
echo "evaluating again $(echo "$(date +%s.%N) - $restart" | bc) s after the restart began (goal < 10)"
grep -o '"message":"engine resumed from checkpoint".*' "$work/host.log" | head -1 || grep 'engine resumed' "$work/host.log" | head -1
echo "host peak RSS after the restart: $(( $(awk '/VmHWM/ {print $2}' /proc/$host/status) / 1024 )) MiB"
