#!/usr/bin/env bash
# The first tier of the record channel (issue 24; docs/BENCHMARKS.md): one
# heartbeat of VIEWERS viewers to the release host whose watch-time-tiers
# campaign grants at 1 minute, so every viewer earns a grant at once. While
# it is evaluated, stored and batched, `drops-host ack-latency` sends other
# channels' 1,000-viewer heartbeats one at a time and reports their
# acknowledgement latency. Prints the time until every grant is stored and
# until every grant is in a written manifest, the largest manifest file,
# and the host's peak memory.
# Usage: benches/first_tier.sh [viewers=10000000] [sqlite_synchronous=full] [other_channel_requests=20000]
set -euo pipefail
cd "$(dirname "$0")/.."
viewers=${1:-10000000} sync=${2:-full} requests=${3:-20000}
. benches/common.sh
bench_setup first-tier
install_plugin watch_time_tiers
sed -e 's/minutes = 10,/minutes = 1,/' examples/rules/campaigns/summer-boss-rush.toml > "$work/rules/campaigns/first.toml"
grep -q 'minutes = 1,' "$work/rules/campaigns/first.toml"
write_config "$sync"
start_host

python3 - "$work/big.json" "$viewers" <<'PY'
import sys
n = int(sys.argv[2])
with open(sys.argv[1], "w") as f:
    f.write('{"broadcaster":"record","viewers":%d,"game":"GameName","id":"first-1","time":"2026-11-23T10:00:00Z","viewer_list":[' % n)
    f.write(",".join('"%d"' % (1000000000 + i) for i in range(n)))
    f.write("]}")
PY
echo "== one heartbeat of $viewers viewers, each earning a grant (body $(( $(stat -c %s "$work/big.json") / 1000000 )) MB)"
total() { local v; v=$(curl -s "$url/metrics" | awk -v m="$1" 'index($1, m) == 1 && ($1 == m || index($1, m "{") == 1) {s += $2} END {printf "%d", s}'); echo "${v:-0}"; }
start=$(date +%s.%N)
curl -s -o /dev/null -w "POST: %{http_code} acknowledged in %{time_total} s\n" -H 'content-type: application/json' --data-binary @"$work/big.json" "$url/vhs"
# Other channels keep reporting meanwhile: their acknowledgement latency.
"$bin" ack-latency --target "$url" --viewers 1000 --requests "$requests" --floor-dir "$work/data" --json > "$work/ack.json" 2> "$work/ack.err" &
acker=$!
# Grants of the record channel itself (the other channels earn theirs too).
record_grants() { sqlite3 "$work/data/drops-host.db" "SELECT COUNT(*) FROM grants WHERE broadcaster_id = 'record'" 2>/dev/null || echo 0; }
until [ "$(total drops_grants_total)" -ge "$viewers" ] && [ "$(record_grants)" -ge "$viewers" ]; do sleep 1; done
stored=$(date +%s.%N)
echo "every grant stored $(echo "$stored - $start" | bc) s after the POST began"
record_unbatched() { sqlite3 "$work/data/drops-host.db" "SELECT COUNT(*) FROM grants WHERE broadcaster_id = 'record' AND manifest_id IS NULL" 2>/dev/null || echo 1; }
until [ "$(total drops_manifest_users_total)" -ge "$viewers" ] && [ "$(record_unbatched)" = 0 ]; do sleep 1; done
manifested=$(date +%s.%N)
echo "every grant in a written manifest $(echo "$manifested - $start" | bc) s after the POST began (goal < 60)"
echo "manifests: $(find "$work/data/manifests" -type f | wc -l) files, largest $(( $(find "$work/data/manifests" -type f -printf '%s\n' | sort -n | tail -1) / 1000000 )) MB (limit 100)"
echo "host peak RSS: $(( $(awk '/VmHWM/ {print $2}' /proc/$host/status) / 1024 )) MiB (goal < 1024)"
wait "$acker" || { echo "ack-latency failed:"; cat "$work/ack.err"; }
python3 - "$work/ack.json" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])  # after its text summary
a, f = r["ack"], r["fsync_floor"]
print("other channels' acknowledgements meanwhile: p50 %.2f ms, p99 %.2f ms, max %.2f ms (goal p99 < 50; append+fdatasync floor p99 %.2f ms)"
      % (a["p50"], a["p99"], a["max"], f["p99"]))
PY
stored_rows=$(sqlite3 "$work/data/drops-host.db" "SELECT COUNT(*), COUNT(DISTINCT user_id) FROM grants" 2>/dev/null || echo "?")
echo "grants rows, distinct users: $stored_rows"
