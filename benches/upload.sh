#!/usr/bin/env bash
# Builds manifests for USERS granted users and uploads them to the Twitch
# stand-in (`drops-host twitch-stand-in`, a real local HTTP server), timing it
# and reading the host's peak memory. The grants are written straight into
# the database first (python3's sqlite3), so only batching, writing and
# uploading are measured.
#
#   benches/upload.sh [USERS=20000000]
#
# Run it with two counts (say 2000000 and 20000000): the host's peak must not
# grow with the count, only the time.
set -euo pipefail
cd "$(dirname "$0")/.."
users=${1:-20000000}
. benches/common.sh
bench_setup upload
stand_in_out="$work/stand-in.out"
"$bin" twitch-stand-in > "$stand_in_out" 2>&1 &
stand_in=$!
for _ in $(seq 1 100); do grep -q listening "$stand_in_out" && break; sleep 0.1; done
twitch=$(sed -n 's/twitch stand-in listening on //p' "$stand_in_out")
write_config full
cat >> "$work/drops-host.toml" <<TOML
[manifests]
flush_interval_secs = 1
[twitch]
client_id = "bench-client"
client_secret = "bench-secret"
auth_base_url = "http://$twitch"
api_base_url = "http://$twitch"
TOML
"$bin" migrate --config "$work/drops-host.toml" >/dev/null

echo "== writing $users grants into the database"
t0=$(date +%s.%N)
python3 - "$work/data/drops-host.db" "$users" <<'PY'
import sqlite3, sys
db, n = sys.argv[1], int(sys.argv[2])
con = sqlite3.connect(db)
con.execute("PRAGMA journal_mode=WAL")
con.execute("PRAGMA synchronous=OFF")
rows = (("bench-campaign", "bench-reward", f"user-{i:09d}", "", "bench-broadcaster", "BenchGame", "bench-client",
         "watching", "rev", "hash", 1, 30, 0) for i in range(n))
con.executemany("INSERT INTO grants (campaign_id, reward_id, user_id, grant_key, broadcaster_id, game, client_id, "
                "reason, campaign_revision, plugin_hash, inbox_seq, event_minute, created_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
con.commit()
PY
t1=$(date +%s.%N)
printf 'grants written in %.1f s\n' "$(echo "$t1 - $t0" | bc)"

start_host
trap 'kill -9 $host $stand_in 2>/dev/null; wait $host 2>/dev/null || true; rm -rf "$work"' EXIT
t2=$(date +%s.%N)
while :; do
  body=$(curl -s -H "Authorization: Bearer bench-token-0123456" "$url/v1/manifests")
  total=$(echo "$body" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(sum(x["users"] for x in m if x["status"]=="uploaded"), len(m), sum(1 for x in m if x["status"]=="uploaded"))')
  set -- $total
  if [ "$1" -ge "$users" ] && [ "$2" -eq "$3" ]; then break; fi
  if ! kill -0 "$host" 2>/dev/null; then echo "host died"; cat "$work/host.log" | tail -20; exit 1; fi
  sleep 1
done
t3=$(date +%s.%N)
peak=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$host/status")
files=$(ls "$work/data/manifests" | wc -l)
largest=$(ls -l "$work/data/manifests" | awk 'NR>1 {if ($5>m) m=$5} END {print m}')
printf 'batched, written and uploaded %s users in %s files (largest %s bytes) in %.1f s; host peak RSS: %s MiB\n' \
  "$users" "$files" "$largest" "$(echo "$t3 - $t2" | bc)" "$peak"
kill -TERM "$stand_in"; wait "$stand_in" 2>/dev/null || true
tail -1 "$stand_in_out"
