#!/usr/bin/env bash
# Sequential acknowledgement latency (docs/BENCHMARKS.md): the release host on
# SQLite with the watch-time-tiers campaign (so the engine evaluates every
# heartbeat as it arrives), fed one 1,000-viewer heartbeat at a time over one
# keep-alive connection, as Twitch sends them; measured beside an append +
# fdatasync of the same body in the host's data folder and GET /healthz.
# Usage: benches/ack_latency.sh [requests=300] [viewers=1000] [sqlite_synchronous=full] [database_url]
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-300} viewers=${2:-1000} sync=${3:-full} database=${4:-}
. benches/common.sh
bench_setup ack
install_plugin watch_time_tiers
[ -n "${NO_CAMPAIGN:-}" ] || cp examples/rules/campaigns/summer-boss-rush.toml "$work/rules/campaigns/"
write_config "$sync" "${database:+database_url = \"$database\"}"
start_host
${ACK_NICE:+nice -n $ACK_NICE} "$bin" ack-latency --target "$url" --viewers "$viewers" --requests "$requests" --floor-dir "$work/data" --json
echo "== host side (Prometheus summaries, seconds)"
curl -s "$url/metrics" | grep -E '^drops_(inbox_commit_seconds|vhs_read_seconds|vhs_store_seconds|engine_watch_time_seconds_total|grants_stored_total|plugin_eval_seconds)' | grep -v '_bucket' || true
