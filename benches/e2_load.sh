#!/usr/bin/env bash
# E2 load (docs/BENCHMARKS.md): many game-server connections, each at the E2
# rate (one message a second), with their channels' heartbeats alongside.
# Reports connections held, E2 messages per second, and the time from a
# message's arrival to its grants being stored (p50/p99, from /metrics).
# Usage: benches/e2_load.sh [connections=500] [seconds=60] [viewers=20] [sqlite_synchronous=normal]
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-500} seconds=${2:-60} viewers=${3:-20} sync=${4:-normal}
. benches/common.sh
bench_setup e2load
for p in watch_time_tiers boss_defeated active_play_only; do install_plugin "$p"; done
cp examples/rules/campaigns/{summer-boss-rush,boss-slayer,active-play}.toml "$work/rules/campaigns/"
write_config "$sync"
cat >> "$work/drops-host.toml" <<TOML
[e2]
allowlist = [ { client_id = "demo-client-id", game_id = "demo-game-id" } ]
[[e2.tokens]]
token = "bench-app-token"
kind = "app"
client_id = "demo-client-id"
TOML
ulimit -n 65536 2>/dev/null || true
start_host

echo "== $conns E2 connections x $seconds s at 1 message/s, $conns channels x $viewers viewers, sqlite_synchronous=$sync"
# --speed 60: one simulated minute a second, so each game server sends one delta a second.
"$bin" simulate --target "$url" --admin-token bench-token-0123456 --e2-token bench-app-token --channels "$conns" \
  --viewers "$viewers" --multi-viewers 0 --minutes "$seconds" --speed 60 --concurrency 64 --boss-every 10 \
  --verbose false > "$work/sim.log" 2>&1 &
sim=$!
peak=0
while kill -0 $sim 2>/dev/null; do
  held=$(metric drops_e2_connections | cut -d. -f1); held=${held:-0}
  [ "$held" -gt "$peak" ] && peak=$held
  sleep 1
done
wait $sim || true
grep -E "^simulate: (game servers|sent)" "$work/sim.log"
echo "connections held at once (peak of /metrics drops_e2_connections): $peak"
sleep 2
curl -s "$url/metrics" | grep -E '^drops_e2_decision_seconds\{quantile="0\.(5|99)"\}' | sed 's/^/message -> grants stored: /'
echo "E2 messages accepted: $(curl -s "$url/metrics" | awk '/^drops_e2_messages_total\{outcome="accepted"\}/ {print $2}')"
echo "grants: $(curl -s -H 'authorization: Bearer bench-token-0123456' "$url/v1/grants?limit=100000" | grep -o '"id":' | wc -l)"
echo "host peak RSS: $(( $(awk '/VmHWM/ {print $2}' /proc/$host/status) / 1024 )) MiB"
