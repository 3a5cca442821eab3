#!/usr/bin/env bash
# Host memory per tracked viewer (docs/BENCHMARKS.md): the release host with
# the watch-time-tiers campaign, fed CHANNELS x VIEWERS distinct viewers for
# one minute, then its resident memory once the engine has counted them all
# and checkpointed.
# Usage: benches/memory.sh [channels=1000] [viewers=1000]
set -euo pipefail
cd "$(dirname "$0")/.."
channels=${1:-1000} viewers=${2:-1000}
. benches/common.sh
bench_setup mem
install_plugin watch_time_tiers
cp examples/rules/campaigns/summer-boss-rush.toml "$work/rules/campaigns/"
write_config normal
printf '[engine]\ncheckpoint_interval_secs = 2\n' >> "$work/drops-host.toml"
start_host
idle=$(awk '/VmRSS/ {print $2}' /proc/$host/status)
"$bin" simulate --target "$url" --channels "$channels" --viewers "$viewers" --multi-viewers 0 \
  --minutes 1 --speed 1000000 --concurrency 8 --verbose false >/dev/null
expected=$((channels * viewers))
while [ "$(counted_minutes)" != "$expected" ]; do sleep 0.2; done
sleep 6   # a checkpoint (every 2 s here) has written the changed rows
rss=$(awk '/VmRSS/ {print $2}' /proc/$host/status)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$host/status)
echo "tracked viewers: $expected"
echo "resident: idle $((idle / 1024)) MiB, after $((rss / 1024)) MiB, peak $((hwm / 1024)) MiB"
echo "per million tracked viewers: $(( (rss - idle) * 1000000 / expected / 1024 )) MiB resident, $(( (hwm - idle) * 1000000 / expected / 1024 )) MiB at the peak"
